//! Text out of the documents extraction jobs receive: PDF (text layer), DOCX, DOC (Word
//! 97–2003), XLSX, PPTX, ODT, ODS, ODP, RTF, HTML, CSV, Markdown and plain text become Markdown
//! or plain text, with the format told from the bytes ([`sniff`]), never from a name or a
//! header. Images (PNG, JPEG, TIFF, BMP, WebP) are recognised too, and, like scanned PDFs,
//! answered with `ocr_required`.
//!
//! [`extract`] is synchronous and CPU-bound (run it on a blocking thread). Every input
//! is hostile until read: zip parts are held to a decompression budget and a compression
//! ratio while they inflate, PDF streams and a DOC's streams to the same budget, output to a
//! character limit, and all loops to the deadline. No input makes it panic: PDF parsing, the
//! part most exposed, runs under `catch_unwind` (which needs the default `panic = "unwind"`).
//!
//! [`DoclingClient`] sends what has no text layer (`ocr_required`) to docling-serve.

mod blocks;
mod delimited;
mod doc;
mod docling;
mod docx;
mod error;
mod html;
mod limits;
mod odf;
mod ooxml;
mod pdf;
mod pptx;
mod rtf;
mod sniff;
mod text;
mod xlsx;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use docling::DoclingClient;
pub use error::ExtractError;
pub use sniff::sniff;

/// A document format this library reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    Pdf,
    Docx,
    /// Word 97–2003 (`.doc`).
    Doc,
    Xlsx,
    Pptx,
    Odt,
    Ods,
    Odp,
    Rtf,
    Html,
    Csv,
    Markdown,
    Text,
    Png,
    Jpeg,
    Tiff,
    Bmp,
    Webp,
}

impl DocumentFormat {
    /// The name used in `metadata.source_format`: `pdf`, `docx`, `doc`, `xlsx`, `pptx`, `odt`,
    /// `ods`, `odp`, `rtf`, `html`, `csv`, `markdown`, `text`, or an image's `png`, `jpeg`,
    /// `tiff`, `bmp`, `webp`.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentFormat::Pdf => "pdf",
            DocumentFormat::Docx => "docx",
            DocumentFormat::Doc => "doc",
            DocumentFormat::Xlsx => "xlsx",
            DocumentFormat::Pptx => "pptx",
            DocumentFormat::Odt => "odt",
            DocumentFormat::Ods => "ods",
            DocumentFormat::Odp => "odp",
            DocumentFormat::Rtf => "rtf",
            DocumentFormat::Html => "html",
            DocumentFormat::Csv => "csv",
            DocumentFormat::Markdown => "markdown",
            DocumentFormat::Text => "text",
            DocumentFormat::Png => "png",
            DocumentFormat::Jpeg => "jpeg",
            DocumentFormat::Tiff => "tiff",
            DocumentFormat::Bmp => "bmp",
            DocumentFormat::Webp => "webp",
        }
    }

    /// The media type, as a files upload would record it.
    pub fn mime_type(self) -> &'static str {
        match self {
            DocumentFormat::Pdf => "application/pdf",
            DocumentFormat::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            DocumentFormat::Doc => "application/msword",
            DocumentFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            DocumentFormat::Pptx => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            DocumentFormat::Odt => "application/vnd.oasis.opendocument.text",
            DocumentFormat::Ods => "application/vnd.oasis.opendocument.spreadsheet",
            DocumentFormat::Odp => "application/vnd.oasis.opendocument.presentation",
            DocumentFormat::Rtf => "application/rtf",
            DocumentFormat::Html => "text/html",
            DocumentFormat::Csv => "text/csv",
            DocumentFormat::Markdown => "text/markdown",
            DocumentFormat::Text => "text/plain",
            DocumentFormat::Png => "image/png",
            DocumentFormat::Jpeg => "image/jpeg",
            DocumentFormat::Tiff => "image/tiff",
            DocumentFormat::Bmp => "image/bmp",
            DocumentFormat::Webp => "image/webp",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            DocumentFormat::Markdown => "md",
            DocumentFormat::Text => "txt",
            DocumentFormat::Jpeg => "jpg",
            other => other.as_str(),
        }
    }
}

impl std::fmt::Display for DocumentFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `output` of an extraction job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Markdown,
    Text,
}

/// Limits and choices for one extraction.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub output: OutputFormat,
    /// A PDF with more pages fails with `too_large` before any page is read.
    pub max_pages: u32,
    /// Decompressed bytes allowed in total across the parts of a zip package (DOCX, ODT, …)
    /// or the streams of a DOC, and for each PDF stream.
    pub max_decompressed_bytes: u64,
    /// Largest decompressed-to-compressed ratio of a zip part past its first MiB.
    pub max_compression_ratio: u32,
    /// Extracted text longer than this fails with `too_large`.
    pub max_output_chars: usize,
    /// When to give up with `timeout`.
    pub deadline: Option<Instant>,
    /// Set from another thread to end the extraction early with `stopped`; checked with the
    /// deadline.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            output: OutputFormat::Markdown,
            max_pages: 2000,
            max_decompressed_bytes: 256 * 1024 * 1024,
            max_compression_ratio: 100,
            max_output_chars: 20_000_000,
            deadline: None,
            stop: None,
        }
    }
}

/// The result of an extraction job, less `sha256` and `cached`, which the consumer adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extracted {
    pub content: String,
    /// `markdown` or `text`, as asked.
    pub format: OutputFormat,
    /// Pages of a PDF, slides of a presentation; `None` for formats without pages.
    pub pages: Option<u32>,
    pub title: Option<String>,
    /// Always `source_format`; then what the format offers cheaply: `author`, `sheets`
    /// (XLSX, ODS), `slides` and `hidden_slides` (PPTX, ODP), `rows`/`columns`/`delimiter` (CSV),
    /// `language` (HTML), `pdf_version`.
    pub metadata: Map<String, Value>,
}

impl Extracted {
    pub(crate) fn new(content: String, format: OutputFormat, source: DocumentFormat) -> Self {
        let mut metadata = Map::new();
        metadata.insert(
            "source_format".into(),
            Value::String(source.as_str().into()),
        );
        Extracted {
            content,
            format,
            pages: None,
            title: None,
            metadata,
        }
    }

    /// Records `metadata.author` when the document names one.
    pub(crate) fn set_author(&mut self, author: Option<String>) {
        if let Some(author) = author {
            self.metadata.insert("author".into(), Value::String(author));
        }
    }
}

/// Extracts the text of `bytes`, whose format is sniffed from the bytes themselves.
pub fn extract(bytes: &[u8], opts: &ExtractOptions) -> Result<Extracted, ExtractError> {
    let format = sniff(bytes).ok_or_else(|| {
        ExtractError::UnsupportedFormat(
            "not a PDF, DOCX, DOC, XLSX, PPTX, ODT, ODS, ODP, RTF, HTML, CSV, Markdown or text document, nor an image"
                .into(),
        )
    })?;
    extract_as(bytes, format, opts)
}

/// Extracts the text of `bytes` read as `format`, whatever [`sniff`] would say.
pub fn extract_as(
    bytes: &[u8],
    format: DocumentFormat,
    opts: &ExtractOptions,
) -> Result<Extracted, ExtractError> {
    let mut cx = limits::Ctx::new(opts);
    cx.clock.check()?;
    let run = || match format {
        DocumentFormat::Pdf => pdf::extract(bytes, &mut cx),
        DocumentFormat::Docx => docx::extract(bytes, &mut cx),
        DocumentFormat::Doc => doc::extract(bytes, &mut cx),
        DocumentFormat::Xlsx => xlsx::extract(bytes, &mut cx),
        DocumentFormat::Pptx => pptx::extract(bytes, &mut cx),
        DocumentFormat::Odt | DocumentFormat::Ods | DocumentFormat::Odp => {
            odf::extract(bytes, format, &mut cx)
        }
        DocumentFormat::Rtf => rtf::extract(bytes, &mut cx),
        DocumentFormat::Html => html::extract(bytes, &mut cx),
        DocumentFormat::Csv => delimited::extract(bytes, &mut cx),
        DocumentFormat::Markdown | DocumentFormat::Text => text::extract(bytes, format, &mut cx),
        // Named one by one: a new format must choose its reader, not fall in here.
        image @ (DocumentFormat::Png
        | DocumentFormat::Jpeg
        | DocumentFormat::Tiff
        | DocumentFormat::Bmp
        | DocumentFormat::Webp) => Err(ExtractError::OcrRequired(format!(
            "a {} image has no text layer",
            image.as_str().to_uppercase()
        ))),
    };
    // The extractors do not panic by design; this is the backstop the "never panic"
    // promise rests on should a dependency do so on some input.
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(ExtractError::corrupt(format!(
            "the {format} document could not be parsed"
        )))
    })
}
