//! PDFs written at test time, read back through the text layer.

mod common;

use std::io::Write;
use std::time::Instant;

use common::{deflated_zeros, pdf, pdf_with, zlib_wrap, Page};
use xenios_extract::{extract, sniff, DocumentFormat, ExtractError, ExtractOptions, OutputFormat};

fn lines(lines: &[&str]) -> Page {
    Page::Lines(lines.iter().map(|l| l.to_string()).collect())
}

#[test]
fn text_pdf_yields_its_lines_title_and_page_count() {
    let bytes = pdf(
        &[
            lines(&["Hello World", "Second line (with parens)"]),
            lines(&["Page two text"]),
        ],
        Some("Annual Summary"),
    );
    assert_eq!(sniff(&bytes), Some(DocumentFormat::Pdf));
    let out = extract(&bytes, &ExtractOptions::default()).unwrap();
    assert_eq!(
        out.content,
        "Hello World\nSecond line (with parens)\n\nPage two text"
    );
    assert_eq!(out.pages, Some(2));
    assert_eq!(out.title.as_deref(), Some("Annual Summary"));
    assert_eq!(out.metadata["source_format"], "pdf");
    assert_eq!(out.metadata["author"], "Test Suite");
    assert_eq!(out.metadata["pdf_version"], "1.4");
}

#[test]
fn twenty_pages_give_twenty_pages_of_text() {
    let pages: Vec<Page> = (1..=20)
        .map(|n| Page::Lines(vec![format!("This is page {n} of twenty")]))
        .collect();
    let bytes = pdf(&pages, None);
    let out = extract(&bytes, &ExtractOptions::default()).unwrap();
    assert_eq!(out.pages, Some(20));
    let expected: Vec<String> = (1..=20)
        .map(|n| format!("This is page {n} of twenty"))
        .collect();
    assert_eq!(out.content, expected.join("\n\n"));
    assert_eq!(out.title, None);

    let text = ExtractOptions {
        output: OutputFormat::Text,
        ..ExtractOptions::default()
    };
    assert_eq!(extract(&bytes, &text).unwrap().content, out.content);
}

#[test]
fn word_gaps_come_from_positions_and_kerning() {
    let content = "BT /F1 12 Tf 72 700 Td [(Kerned)-300(words)] TJ 80 0 Td (moved) Tj \
                   ET BT /F1 12 Tf 72 600 Td (Tight) Tj [(ly)] TJ 0 -14 Td (next) Tj ET";
    let bytes = pdf(&[Page::Content(content.into())], None);
    let out = extract(&bytes, &ExtractOptions::default()).unwrap();
    assert_eq!(out.content, "Kerned words moved\n\nTightly\nnext");
}

#[test]
fn compressed_content_streams_are_read() {
    let pages = [lines(&["Deflated text"])];
    let bytes = pdf_with(&pages, None, |w, content| {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(content.as_bytes()).unwrap();
        let id = w.reserve();
        w.stream(id, "/Filter /FlateDecode", &z.finish().unwrap());
        id
    });
    assert_eq!(
        extract(&bytes, &ExtractOptions::default()).unwrap().content,
        "Deflated text"
    );
}

#[test]
fn scanned_pdf_needs_ocr() {
    let bytes = pdf(&[Page::Image, Page::Image, Page::Image], None);
    let err = extract(&bytes, &ExtractOptions::default()).unwrap_err();
    assert_eq!(
        err,
        ExtractError::OcrRequired("the PDF has 3 page(s) but no text layer".into())
    );
    assert_eq!(err.code(), "ocr_required");
    assert!(!err.is_retryable());

    // Mostly scans with a stamped page number: still a scan.
    let stamped = pdf(&[Page::Image, Page::Image, lines(&["3"])], None);
    assert_eq!(
        extract(&stamped, &ExtractOptions::default())
            .unwrap_err()
            .code(),
        "ocr_required"
    );

    // A page with no content at all has no text layer either.
    let blank = pdf(&[Page::Content(String::new())], None);
    assert_eq!(
        extract(&blank, &ExtractOptions::default())
            .unwrap_err()
            .code(),
        "ocr_required"
    );
}

#[test]
fn corrupt_pdfs_are_corrupt_documents() {
    let garbage = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R\nnonsense \xff\xfe\n%%EOF";
    assert_eq!(
        extract(garbage, &ExtractOptions::default())
            .unwrap_err()
            .code(),
        "corrupt_document"
    );

    let header_only = b"%PDF-1.4\n";
    assert_eq!(
        extract(header_only, &ExtractOptions::default())
            .unwrap_err()
            .code(),
        "corrupt_document"
    );

    // Every prefix of a real PDF fails cleanly or reads what it can; none panics.
    let whole = pdf(&[lines(&["Hello"]), lines(&["World"])], None);
    for cut in (0..whole.len()).step_by(7) {
        match extract(&whole[..cut], &ExtractOptions::default()) {
            Ok(out) => assert!(out.content.contains("Hello") || out.content.contains("World")),
            Err(e) => assert!(
                matches!(
                    e.code(),
                    "corrupt_document" | "unsupported_format" | "ocr_required"
                ),
                "cut at {cut}: {e}"
            ),
        }
    }
}

#[test]
fn page_limit_is_enforced_before_reading() {
    let pages: Vec<Page> = (0..20).map(|_| lines(&["x"])).collect();
    let bytes = pdf(&pages, None);
    let opts = ExtractOptions {
        max_pages: 5,
        ..ExtractOptions::default()
    };
    let err = extract(&bytes, &opts).unwrap_err();
    assert_eq!(err.code(), "too_large");
    assert!(err.to_string().contains("more than 5 pages"), "{err}");
}

#[test]
fn flate_bomb_in_a_content_stream_is_too_large() {
    let bomb = zlib_wrap(&deflated_zeros(64));
    let pages = [lines(&["never read"])];
    let bytes = pdf_with(&pages, None, |w, _| {
        let id = w.reserve();
        w.stream(id, "/Filter /FlateDecode", &bomb);
        id
    });
    let opts = ExtractOptions {
        max_decompressed_bytes: 4 << 20,
        ..ExtractOptions::default()
    };
    let started = Instant::now();
    let err = extract(&bytes, &opts).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(started.elapsed().as_secs() < 5);
}
