//! Telling the format from the bytes alone: file names and declared content types are
//! whatever the uploader said.

use crate::{doc, odf, ooxml, rtf, DocumentFormat};

/// How much of a text file the heuristics look at.
const SAMPLE: usize = 64 * 1024;

/// The format of `bytes`, or `None` when it is none this library reads (including empty
/// input, binary data other than the images docling-serve reads, zip files that are not
/// DOCX, XLSX, PPTX, ODT or ODS, and compound files that are not Word documents: XLS, PPT,
/// MSG).
pub fn sniff(bytes: &[u8]) -> Option<DocumentFormat> {
    if is_pdf(bytes) {
        return Some(DocumentFormat::Pdf);
    }
    // An OpenDocument package says what it is in its first entry, readable without the zip's
    // directory (so from the head of an upload too).
    if let Some(format) = odf::package_format(bytes) {
        return Some(format);
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return sniff_zip(bytes);
    }
    if let Some(image) = sniff_image(bytes) {
        return Some(image);
    }
    if bytes.starts_with(&doc::SIGNATURE) {
        return doc::is_word_document(bytes).then_some(DocumentFormat::Doc);
    }
    // Told by its bytes, not as text: `\binN` data may hold any byte, NULs included.
    if rtf::start(bytes).is_some() {
        return Some(DocumentFormat::Rtf);
    }
    let sample = text_sample(bytes)?;
    let trimmed = sample.trim_start();
    if trimmed.is_empty() && bytes.iter().all(|b| b.is_ascii_whitespace()) && !bytes.is_empty() {
        return Some(DocumentFormat::Text);
    }
    // RTF is 8-bit text: behind a UTF-16 byte-order mark it is none any reader takes.
    if trimmed.is_empty() || trimmed.starts_with("{\\rtf") {
        return None;
    }
    if looks_like_html(trimmed) {
        Some(DocumentFormat::Html)
    } else if looks_like_markdown(&sample) {
        Some(DocumentFormat::Markdown)
    } else if csv_delimiter(&sample, bytes.len() > SAMPLE).is_some() {
        Some(DocumentFormat::Csv)
    } else {
        Some(DocumentFormat::Text)
    }
}

/// `%PDF-` at the start, or within the first KiB (readers tolerate leading junk) when the
/// file also ends like a PDF, so a text that merely mentions `%PDF-` is not taken for one.
fn is_pdf(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"%PDF-") {
        return true;
    }
    let head = &bytes[..bytes.len().min(1024)];
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    find(head, b"%PDF-").is_some() && find(tail, b"%%EOF").is_some()
}

/// The image formats docling-serve reads (PNG, JPEG, TIFF, BMP, WebP), by their signatures; a
/// BMP also by the size of its info header, as `BM` alone starts many a text.
fn sniff_image(bytes: &[u8]) -> Option<DocumentFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(DocumentFormat::Png)
    } else if bytes.starts_with(b"\xFF\xD8\xFF") {
        Some(DocumentFormat::Jpeg)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(DocumentFormat::Tiff)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(DocumentFormat::Webp)
    } else if is_bmp(bytes) {
        Some(DocumentFormat::Bmp)
    } else {
        None
    }
}

fn is_bmp(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(..18) else {
        return false;
    };
    let info_size = u32::from_le_bytes([header[14], header[15], header[16], header[17]]);
    header.starts_with(b"BM")
        && header[6..10] == [0, 0, 0, 0]
        && matches!(info_size, 12 | 40 | 52 | 56 | 64 | 108 | 124)
}

fn sniff_zip(bytes: &[u8]) -> Option<DocumentFormat> {
    // A package with too many entries to index is told by its part names, which a zip holds as
    // plain text: its reader then refuses it as too large, rather than "not a document".
    let archive = if ooxml::too_many_entries(bytes) {
        None
    } else {
        Some(ooxml::open_archive(bytes).ok()?)
    };
    let has = |name: &str| match &archive {
        Some(archive) => archive.index_for_name_raw(name.as_bytes()).is_some(),
        None => memchr::memmem::find(bytes, name.as_bytes()).is_some(),
    };
    if !has("[Content_Types].xml") {
        return None;
    }
    if has("word/document.xml") {
        Some(DocumentFormat::Docx)
    } else if has("xl/workbook.xml") {
        Some(DocumentFormat::Xlsx)
    } else if has("ppt/presentation.xml") {
        Some(DocumentFormat::Pptx)
    } else {
        None
    }
}

/// The decoded start of `bytes` if it looks like text: valid UTF-8 (a character cut at
/// the sample's end is fine), or text behind a UTF-16/UTF-8 BOM, or single-byte text
/// without NULs and with hardly any control bytes.
fn text_sample(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let head = &bytes[..bytes.len().min(SAMPLE)];
    if let Some((encoding, bom)) = encoding_rs::Encoding::for_bom(head) {
        let text = encoding.decode_without_bom_handling(&head[bom..]).0;
        return (!has_binary_controls(&text)).then(|| text.into_owned());
    }
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            // Only the last character is cut off by the sample boundary.
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()?
        }
        Err(_) => {
            if head.contains(&0) {
                return None;
            }
            let text = crate::text::decode(head, None);
            return (!has_binary_controls(&text)).then_some(text);
        }
    };
    (!has_binary_controls(valid)).then(|| valid.to_owned())
}

/// More than 1% C0 control characters other than tab, line feed, carriage return and
/// form feed, or any NUL, means binary.
fn has_binary_controls(text: &str) -> bool {
    let mut controls = 0usize;
    let mut total = 0usize;
    for c in text.chars() {
        total += 1;
        if c == '\0' {
            return true;
        }
        if (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c')) || c == '\u{FFFD}' {
            controls += 1;
        }
    }
    controls * 100 > total
}

/// The WHATWG MIME-sniffing rule for HTML: after leading whitespace, one of the tags that
/// only HTML starts with, followed by a space or `>`; or an XHTML document.
fn looks_like_html(trimmed: &str) -> bool {
    const TAGS: &[&str] = &[
        "<!doctype html",
        "<html",
        "<head",
        "<script",
        "<iframe",
        "<h1",
        "<div",
        "<font",
        "<table",
        "<a",
        "<style",
        "<title",
        "<b",
        "<body",
        "<br",
        "<p",
        "<!--",
    ];
    let head: String = trimmed
        .chars()
        .take(1024)
        .collect::<String>()
        .to_ascii_lowercase();
    for tag in TAGS {
        if let Some(rest) = head.strip_prefix(tag) {
            if rest.starts_with([' ', '>', '\t', '\n', '\r', '\x0c']) {
                return true;
            }
        }
    }
    head.starts_with("<?xml") && head.contains("<html")
}

/// Markdown if some line is an ATX heading, a code fence or a table delimiter row, or a
/// line holds an inline link.
fn looks_like_markdown(sample: &str) -> bool {
    sample.lines().take(200).any(|line| {
        let t = line.trim_start();
        let hashes = t.bytes().take_while(|&b| b == b'#').count();
        (1..=6).contains(&hashes) && t[hashes..].starts_with(' ')
            || t.starts_with("```")
            || (t.starts_with("|") && t.contains("---"))
            || (t.contains("](http") || t.contains("](/") || t.contains("](#"))
    })
}

/// The delimiter if the sample reads as a table: at least two records and two fields,
/// and every record with the same number of fields. `truncated` means the sample stops
/// mid-file, so its last record may be cut short and is not counted.
pub(crate) fn csv_delimiter(sample: &str, truncated: bool) -> Option<u8> {
    let mut best: Option<(u8, usize)> = None;
    for delimiter in [b',', b';', b'\t', b'|'] {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(sample.as_bytes());
        let mut counts: Vec<usize> = Vec::new();
        for record in reader.records().take(100) {
            let Ok(record) = record else { break };
            if record.len() == 1 && record.get(0).is_some_and(|f| f.trim().is_empty()) {
                continue;
            }
            counts.push(record.len());
        }
        if truncated && counts.len() > 2 {
            counts.pop();
        }
        let Some(&width) = counts.first() else {
            continue;
        };
        let consistent = counts.len() >= 2 && width >= 2 && counts.iter().all(|&c| c == width);
        if consistent && best.is_none_or(|(_, w)| width > w) {
            best = Some((delimiter, width));
        }
    }
    best.map(|(d, _)| d)
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_text_formats_apart() {
        assert_eq!(sniff(b"<!DOCTYPE html><p>x"), Some(DocumentFormat::Html));
        assert_eq!(sniff(b"  <html lang=en>"), Some(DocumentFormat::Html));
        assert_eq!(sniff(b"# Title\n\nBody"), Some(DocumentFormat::Markdown));
        assert_eq!(sniff(b"a,b,c\n1,2,3\n4,5,6\n"), Some(DocumentFormat::Csv));
        assert_eq!(sniff(b"a;b\n1;2\n"), Some(DocumentFormat::Csv));
        assert_eq!(
            sniff(b"Hello, world.\nThis is, I think, prose.\n"),
            Some(DocumentFormat::Text)
        );
        assert_eq!(sniff(b"just one line"), Some(DocumentFormat::Text));
        assert_eq!(
            sniff("caf\u{e9}, na\u{ef}ve".as_bytes()),
            Some(DocumentFormat::Text)
        );
        assert_eq!(sniff(b"caf\xe9 latin-1 text"), Some(DocumentFormat::Text));
    }

    #[test]
    fn refuses_binary_and_empty() {
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"\x00\x01\x02\x03binary"), None);
        assert_eq!(sniff(b"PK\x03\x04garbage"), None);
        assert_eq!(sniff(b"\x7fELF\x02\x01\x01\0\0\0"), None);
        // A compound file signature alone is no Word document.
        assert_eq!(sniff(&doc::SIGNATURE), None);
    }

    #[test]
    fn rtf_by_its_opening_brace() {
        assert_eq!(sniff(b"{\\rtf1\\ansi hello}"), Some(DocumentFormat::Rtf));
        assert_eq!(
            sniff(b"\xEF\xBB\xBF\r\n  {\\rtf1 hello}"),
            Some(DocumentFormat::Rtf)
        );
        // Binary `\bin` data does not make it binary.
        assert_eq!(
            sniff(b"{\\rtf1{\\pict\\bin4 \0\x01\x02\x03}}"),
            Some(DocumentFormat::Rtf)
        );
        assert_eq!(sniff(b"\xFF\xFE{\0\\\0r\0t\0f\0"), None);
        assert_eq!(
            sniff(b"A note about {\\rtf1 files."),
            Some(DocumentFormat::Text)
        );
    }

    #[test]
    fn images_by_their_signatures() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(DocumentFormat::Png)
        );
        assert_eq!(sniff(b"\xFF\xD8\xFF\xDB"), Some(DocumentFormat::Jpeg));
        assert_eq!(sniff(b"RIFF\x24\0\0\0WAVEfmt "), None);
        // `BM` then a file size and reserved bytes that are not zero: text.
        assert_eq!(
            sniff(b"BM notes: 1234 bytes, 40 lines"),
            Some(DocumentFormat::Text)
        );
    }

    #[test]
    fn pdf_needs_the_magic_at_the_start_or_a_pdf_tail() {
        assert_eq!(sniff(b"%PDF-1.7\n..."), Some(DocumentFormat::Pdf));
        assert_eq!(
            sniff(b"junk\n%PDF-1.4\n...\n%%EOF\n"),
            Some(DocumentFormat::Pdf)
        );
        assert_eq!(
            sniff(b"The %PDF- header starts a PDF."),
            Some(DocumentFormat::Text)
        );
    }
}
