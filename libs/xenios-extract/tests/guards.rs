//! Hostile and oversized input: every failure is a clear error with a stable code, fast.

mod common;

use std::time::{Duration, Instant};

use common::{
    a_para, compound_file, deflated_zeros, docx, docx_padded, noise, para, pptx, shape,
    word_document, word_streams, zip_parts, zip_with_raw_entry, Slide, DOC_CCP_TEXT, DOC_FC_CLX,
};
use xenios_extract::{
    extract, extract_as, sniff, DocumentFormat, ExtractError, ExtractOptions, Extracted,
};

const CONTENT_TYPES: &str = r#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#;

/// A DOCX whose `word/document.xml` is 300 MiB of zeros in about 300 KiB, declaring
/// `declared` bytes.
fn zip_bomb(declared: u32) -> Vec<u8> {
    zip_with_raw_entry(
        &[("[Content_Types].xml", CONTENT_TYPES)],
        "word/document.xml",
        &deflated_zeros(300),
        declared,
    )
}

#[test]
fn zip_bomb_declaring_its_size_is_refused_before_inflating() {
    let bytes = zip_bomb(300 << 20);
    assert!(
        bytes.len() < 1 << 20,
        "the bomb itself is small: {}",
        bytes.len()
    );
    assert_eq!(sniff(&bytes), Some(DocumentFormat::Docx));
    let started = Instant::now();
    let err = extract(&bytes, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("word/document.xml"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn zip_bomb_lying_about_its_size_is_stopped_while_inflating() {
    // Declares 10 MiB: under the budget, and a plausible ratio for its compressed size.
    let bytes = zip_bomb(10 << 20);
    let started = Instant::now();
    let err = extract(&bytes, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("compression ratio"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A DOCX padded with more empty entries than any document has: refused as too large from a
/// count of its central directory headers, before the zip crate indexes them.
#[test]
fn a_package_with_too_many_entries_is_refused() {
    let body = para(None, None, "padded");
    let bytes = docx_padded(&body, 50_000);
    assert_eq!(sniff(&bytes), Some(DocumentFormat::Docx));
    let err = extract(&bytes, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("more than 50000 entries"), "{err}");

    // At the limit, the package is read.
    let bytes = docx_padded(&body, 50_000 - 7);
    assert!(extract(&bytes, &ExtractOptions::default())
        .unwrap()
        .content
        .contains("padded"));
}

/// A presentation whose slide list names one slide over and over: each mention reads the
/// slide again, so the list is bounded, and so is what the reads inflate.
#[test]
fn a_slide_listed_again_and_again_is_bounded() {
    let text: String = (0..400).map(|i| a_para(&format!("line {i}"), "")).collect();
    let body = shape(Some(r#"idx="1""#), &text);
    let once = pptx(&[Slide {
        shapes: &body,
        notes: None,
        hidden: false,
    }]);
    let slide_size = extract(&once, &ExtractOptions::default())
        .unwrap()
        .content
        .len();
    assert!(slide_size > 4000, "{slide_size}");

    let repeat = |times: usize| {
        let listed: String = (0..times)
            .map(|i| format!(r#"<p:sldId id="{}" r:id="rId2"/>"#, 256 + i))
            .collect();
        let presentation = format!(
            r#"<p:presentation xmlns:p="{}" xmlns:r="{}"><p:sldIdLst>{listed}</p:sldIdLst></p:presentation>"#,
            common::P_NS,
            common::R_NS
        );
        rewrite_part(&once, "ppt/presentation.xml", &presentation)
    };
    let opts = ExtractOptions {
        max_decompressed_bytes: 1 << 20,
        ..ExtractOptions::default()
    };
    let err = extract(&repeat(5000), &opts).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    let err = extract(&repeat(10_001), &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("10000 slides"), "{err}");
    // Three mentions are three slides.
    let out = extract(&repeat(3), &opts).unwrap();
    assert_eq!(out.pages, Some(3));
}

/// An ODT table that repeats a row or a cell past any real table is refused without being
/// built; trailing empty rows and cells, however many, cost nothing.
#[test]
fn repeated_odt_table_cells_are_bounded() {
    let odt = include_bytes!("fixtures/plan.odt");
    let with_table = |rows: &str| {
        let content = format!(
            r#"<office:document-content xmlns:office="o" xmlns:text="t" xmlns:table="tb"><office:body><office:text><table:table>{rows}</table:table></office:text></office:body></office:document-content>"#
        );
        // Rewritten, its `mimetype` is deflated like every part, so it is read as an ODT
        // rather than sniffed as one.
        rewrite_part(odt, "content.xml", &content)
    };
    let cell = |text: &str, repeat: u64| {
        format!(
            r#"<table:table-cell table:number-columns-repeated="{repeat}"><text:p>{text}</text:p></table:table-cell>"#
        )
    };
    let wide = with_table(&format!(
        "<table:table-row>{}</table:table-row>",
        cell("x", 1 << 40)
    ));
    let err = extract_as(&wide, DocumentFormat::Odt, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    let tall = with_table(&format!(
        r#"<table:table-row table:number-rows-repeated="100000000">{}</table:table-row>"#,
        cell("y", 2)
    ));
    let err = extract_as(&tall, DocumentFormat::Odt, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");

    let sparse = with_table(&format!(
        r#"<table:table-row>{}{}</table:table-row><table:table-row table:number-rows-repeated="1048000"><table:table-cell table:number-columns-repeated="16384"/></table:table-row>"#,
        cell("a", 1),
        cell("", 16_000)
    ));
    // Held, they would be 17 billion cells.
    let out = extract_as(&sparse, DocumentFormat::Odt, &ExtractOptions::default()).unwrap();
    assert_eq!(out.content, "| a |\n| --- |");

    // Within the cell limit, a long text repeated is still many copies of it: refused as it is
    // gathered, before the copies are held (the output limit alone would see them only once
    // the table was written).
    let small_output = ExtractOptions {
        max_output_chars: 100_000,
        ..ExtractOptions::default()
    };
    let long = "w".repeat(1000);
    for rows in [
        format!("<table:table-row>{}</table:table-row>", cell(&long, 1000)),
        format!(
            r#"<table:table-row table:number-rows-repeated="1000">{}</table:table-row>"#,
            cell(&long, 1)
        ),
    ] {
        let err = extract_as(&with_table(&rows), DocumentFormat::Odt, &small_output).unwrap_err();
        assert_eq!(err.code(), "too_large", "{err}");
        assert!(err.to_string().contains("a table's text exceeds"), "{err}");
    }
}

/// A few bytes of ODT make many characters (`<text:s text:c="100"/>`), and text frames put
/// paragraphs in paragraphs: both are bounded while a paragraph is read.
#[test]
fn odt_paragraphs_are_bounded_while_read() {
    let odt = include_bytes!("fixtures/plan.odt");
    let with_body = |body: &str| {
        let content = format!(
            r#"<office:document-content xmlns:office="o" xmlns:text="t"><office:body><office:text>{body}</office:text></office:body></office:document-content>"#
        );
        rewrite_part(odt, "content.xml", &content)
    };
    let opts = ExtractOptions {
        max_output_chars: 10_000,
        ..ExtractOptions::default()
    };
    let spaces = format!(
        "<text:p>x{}</text:p>",
        r#"<text:s text:c="100"/>"#.repeat(200)
    );
    let err = extract_as(&with_body(&spaces), DocumentFormat::Odt, &opts).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("a paragraph exceeds"), "{err}");

    let nested = format!("{}deep{}", "<text:p>".repeat(100), "</text:p>".repeat(100));
    let err = extract_as(&with_body(&nested), DocumentFormat::Odt, &opts).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("nested more than"), "{err}");
}

/// A slide title gathers every paragraph of its frame: bounded by the output limit as it grows,
/// not once written. Hidden slides and footers hold nothing.
#[test]
fn odp_titles_are_bounded_while_read() {
    let odp = include_bytes!("fixtures/checkin.odp");
    let with_pages = |pages: &str| {
        let content = format!(
            r#"<office:document-content xmlns:office="o" xmlns:text="t" xmlns:draw="d" xmlns:presentation="p"><office:body><office:presentation>{pages}</office:presentation></office:body></office:document-content>"#
        );
        rewrite_part(odp, "content.xml", &content)
    };
    let opts = ExtractOptions {
        max_output_chars: 10_000,
        ..ExtractOptions::default()
    };
    let title = format!(
        r#"<draw:page><draw:frame presentation:class="title"><draw:text-box>{}</draw:text-box></draw:frame></draw:page>"#,
        "<text:p>0123456789</text:p>".repeat(2000)
    );
    let err = extract_as(&with_pages(&title), DocumentFormat::Odp, &opts).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("a slide's title exceeds"), "{err}");

    // The same text in a footer frame is left out whole.
    let footer = title.replace("\"title\"", "\"footer\"");
    let out = extract_as(&with_pages(&footer), DocumentFormat::Odp, &opts).unwrap();
    assert_eq!(out.content, "## Slide 1");
}

/// `package` with the part `name` replaced by `body`.
fn rewrite_part(package: &[u8], name: &str, body: &str) -> Vec<u8> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(package)).unwrap();
    let mut parts = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let entry_name = entry.name().unwrap().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        let text = if entry_name == name {
            body.to_owned()
        } else {
            text
        };
        parts.push((entry_name, text));
    }
    let borrowed: Vec<(&str, &str)> = parts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    zip_parts(&borrowed)
}

#[test]
fn zip_parts_share_one_decompression_budget() {
    let filler: String = (0..20_000)
        .map(|i| {
            format!(
                "<w:p><w:r><w:t>Paragraph {i}: lorem ipsum {}</w:t></w:r></w:p>",
                i * 7919 % 10_007
            )
        })
        .collect();
    let bytes = docx(&filler);
    let opts = ExtractOptions {
        max_decompressed_bytes: 256 * 1024,
        ..ExtractOptions::default()
    };
    let err = extract(&bytes, &opts).unwrap_err();
    assert_eq!(err.code(), "too_large");
    assert!(extract(&bytes, &ExtractOptions::default()).is_ok());
}

#[test]
fn damaged_zip_parts_are_corrupt() {
    let mut bytes = docx(&para(None, None, "Hello"));
    // Flip bytes in the middle of the archive, inside some compressed part.
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5A;
    }
    let err = extract_as(&bytes, DocumentFormat::Docx, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "corrupt_document", "{err}");

    let not_ooxml = zip_parts(&[
        ("[Content_Types].xml", CONTENT_TYPES),
        ("word/other.xml", "<x/>"),
    ]);
    assert_eq!(sniff(&not_ooxml), None);
    assert_eq!(
        extract(&not_ooxml, &ExtractOptions::default())
            .unwrap_err()
            .code(),
        "unsupported_format"
    );
    let err = extract_as(&not_ooxml, DocumentFormat::Docx, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "corrupt_document");
}

#[test]
fn random_bytes_are_an_unsupported_format() {
    for seed in 1..20 {
        let bytes = noise(4096, seed);
        let err = extract(&bytes, &ExtractOptions::default()).unwrap_err();
        assert_eq!(err.code(), "unsupported_format");
    }
    assert_eq!(
        extract(b"", &ExtractOptions::default()).unwrap_err().code(),
        "unsupported_format"
    );
}

#[test]
fn random_bytes_read_as_each_format_never_panic() {
    let formats = [
        DocumentFormat::Pdf,
        DocumentFormat::Docx,
        DocumentFormat::Doc,
        DocumentFormat::Xlsx,
        DocumentFormat::Pptx,
        DocumentFormat::Odt,
        DocumentFormat::Ods,
        DocumentFormat::Rtf,
        DocumentFormat::Html,
        DocumentFormat::Csv,
        DocumentFormat::Markdown,
        DocumentFormat::Text,
        DocumentFormat::Png,
        DocumentFormat::Webp,
    ];
    for seed in 1..50 {
        let bytes = noise(2048, seed);
        for format in formats {
            // Text formats read anything; the others must fail cleanly.
            let _ = extract_as(&bytes, format, &ExtractOptions::default());
        }
    }
}

#[test]
fn a_passed_deadline_is_a_timeout() {
    let opts = ExtractOptions {
        deadline: Some(Instant::now()),
        ..ExtractOptions::default()
    };
    let err = extract(b"plain text", &opts).unwrap_err();
    assert_eq!(err.code(), "timeout");

    // A deadline reached midway stops a long extraction.
    let csv = "a,b,c\n".repeat(2_000_000);
    let opts = ExtractOptions {
        deadline: Some(Instant::now() + Duration::from_millis(50)),
        ..ExtractOptions::default()
    };
    let started = Instant::now();
    assert_eq!(
        extract(csv.as_bytes(), &opts).unwrap_err().code(),
        "timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// An RTF is read token by token with the deadline checked as it goes: a passed one is a
/// timeout, and so is one reached in the middle of a long document.
#[test]
fn a_passed_deadline_stops_an_rtf() {
    let rtf = format!("{{\\rtf1 {}}}", "word \\b bold\\b0 \\par ".repeat(400_000));
    let opts = ExtractOptions {
        deadline: Some(Instant::now()),
        ..ExtractOptions::default()
    };
    assert_eq!(
        extract(rtf.as_bytes(), &opts).unwrap_err().code(),
        "timeout"
    );
    let opts = ExtractOptions {
        deadline: Some(Instant::now() + Duration::from_millis(20)),
        ..ExtractOptions::default()
    };
    let started = Instant::now();
    assert_eq!(
        extract(rtf.as_bytes(), &opts).unwrap_err().code(),
        "timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// RTF's text is bounded as it is gathered, in a paragraph as in a table, not only once
/// written; and a hostile document's structure costs bounded work and never panics.
#[test]
fn hostile_rtf_is_bounded() {
    let opts = ExtractOptions {
        max_output_chars: 1000,
        ..ExtractOptions::default()
    };
    let long = format!("{{\\rtf1 {}}}", "\\u8364?".repeat(2000));
    let err = extract(long.as_bytes(), &opts).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    let table = format!(
        "{{\\rtf1\\trowd {}}}",
        "\\intbl cell text\\cell\\row ".repeat(500)
    );
    let err = extract(table.as_bytes(), &opts).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    let cells = format!("{{\\rtf1\\trowd {}}}", "\\cell".repeat(1 << 21));
    let err = extract(cells.as_bytes(), &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large", "{err}");
    assert!(err.to_string().contains("cells"), "{err}");

    // Groups nested past any document's are refused, not followed down the stack.
    let deep = format!(
        "{{\\rtf1 {}deep{}}}",
        "{".repeat(100_000),
        "}".repeat(100_000)
    );
    let err = extract(deep.as_bytes(), &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "corrupt_document", "{err}");
    // Nested as deep as documents go, they are read.
    let nested = format!("{{\\rtf1 {}deep{}}}", "{\\b ".repeat(500), "}".repeat(500));
    let out = extract(nested.as_bytes(), &ExtractOptions::default()).unwrap();
    assert_eq!(out.content, "deep");

    // Braces left open are closed by the end of the input; a document cut short keeps its text.
    let cut = b"{\\rtf1{\\info{\\title Cut}}{\\b Unbalanced {\\i text";
    let out = extract(cut, &ExtractOptions::default()).unwrap();
    assert_eq!(out.content, "Unbalanced text");
    assert_eq!(out.title.as_deref(), Some("Cut"));
    // `\binN` data is skipped whatever it holds, even past the end of the input.
    let binary = b"{\\rtf1 a{\\pict\\bin6 }}}{{{}b\\bin999999 \\par x";
    let out = extract(binary, &ExtractOptions::default()).unwrap();
    assert_eq!(out.content, "ab");
    // Parameters past ten digits, stray `\'` and lone surrogates are read, not fatal.
    let odd = b"{\\rtf1\\uc99999999999 \\'zz\\u-10179 \\u99999999 ok\\}";
    assert!(extract(odd, &ExtractOptions::default()).is_ok());
    // Noise behind an RTF header reaches the reader itself.
    for seed in 1..50 {
        let mut bytes = b"{\\rtf1 ".to_vec();
        bytes.extend(noise(2048, seed));
        assert_eq!(sniff(&bytes), Some(DocumentFormat::Rtf));
        let _ = extract(&bytes, &ExtractOptions::default());
    }
}

const CHECKIN_DOC: &[u8] = include_bytes!("fixtures/checkin.doc");

/// Fails the test if the extraction panicked: `extract` turns a panic into a corrupt
/// document, which would hide it.
fn did_not_panic(result: Result<Extracted, ExtractError>) {
    if let Err(err) = result {
        assert!(!err.to_string().contains("could not be parsed"), "{err}");
    }
}

/// A .doc is read character by character with the deadline checked as it goes.
#[test]
fn a_passed_deadline_stops_a_doc() {
    let doc = word_document(&"word word word\r".repeat(200_000));
    assert_eq!(sniff(&doc), Some(DocumentFormat::Doc));
    let opts = ExtractOptions {
        deadline: Some(Instant::now()),
        ..ExtractOptions::default()
    };
    assert_eq!(extract(&doc, &opts).unwrap_err().code(), "timeout");
    let opts = ExtractOptions {
        deadline: Some(Instant::now() + Duration::from_millis(20)),
        ..ExtractOptions::default()
    };
    let started = Instant::now();
    assert_eq!(extract(&doc, &opts).unwrap_err().code(), "timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A .doc's streams are charged to the decompression budget before they are copied, and
/// its text to the output limit while it is gathered.
#[test]
fn doc_streams_and_text_are_bounded() {
    let doc = word_document(&"word \r".repeat(1000));
    let out = extract(&doc, &ExtractOptions::default()).unwrap();
    assert!(out.content.starts_with("word\n\nword"), "{}", out.content);
    let opts = ExtractOptions {
        max_output_chars: 100,
        ..ExtractOptions::default()
    };
    assert_eq!(extract(&doc, &opts).unwrap_err().code(), "too_large");
    let opts = ExtractOptions {
        max_decompressed_bytes: 4000,
        ..ExtractOptions::default()
    };
    assert_eq!(extract(&doc, &opts).unwrap_err().code(), "too_large");
    let opts = ExtractOptions {
        max_decompressed_bytes: 1000,
        ..ExtractOptions::default()
    };
    assert_eq!(extract(CHECKIN_DOC, &opts).unwrap_err().code(), "too_large");
}

/// A change to a bare Word document's `WordDocument` and `0Table` streams.
type DocChange<'a> = &'a dyn Fn(&mut Vec<u8>, &mut Vec<u8>);

/// A FIB or piece table pointing past the end of its stream, a FIB cut short, an older
/// Word's FIB, a missing table stream: errors with their codes, never panics.
#[test]
fn hostile_doc_structure_is_an_error() {
    let with = |change: DocChange| {
        let (mut word, mut table) = word_streams("Hello\r");
        change(&mut word, &mut table);
        let doc = compound_file(&[("WordDocument", &word), ("0Table", &table)]);
        extract(&doc, &ExtractOptions::default())
    };
    let set = |stream: &mut Vec<u8>, at: usize, value: u32| {
        stream[at..at + 4].copy_from_slice(&value.to_le_bytes());
    };
    assert_eq!(with(&|_, _| {}).unwrap().content, "Hello");
    let corrupt: [DocChange; 7] = [
        // fcClx, then lcbClx, past the end of the table stream.
        &|word, _| set(word, DOC_FC_CLX, 0xFFFF_0000),
        &|word, _| set(word, DOC_FC_CLX + 4, 0x7FFF_FFFF),
        // The piece's text past the end of the WordDocument stream.
        &|_, table| set(table, 15, 0x3000_0000),
        // A piece table whose length is not that of n pieces, or not a piece table.
        &|_, table| set(table, 1, 15),
        &|_, table| table[0] = 0x07,
        // A FIB cut short, and no FIB at all.
        &|word, _| word.truncate(40),
        &|word, _| word[0] = 0,
    ];
    for (i, change) in corrupt.iter().enumerate() {
        let err = with(*change).unwrap_err();
        assert_eq!(err.code(), "corrupt_document", "case {i}: {err}");
    }
    // More main-text characters than pieces: the pieces there are.
    assert_eq!(
        with(&|word, _| set(word, DOC_CCP_TEXT, u32::MAX))
            .unwrap()
            .content,
        "Hello"
    );
    // Word 6.0 and 95 documents have another FIB.
    let err = with(&|word, _| word[2] = 0x68).unwrap_err();
    assert_eq!(err.code(), "unsupported_format", "{err}");
    // fWhichTblStm names 1Table, which is not there.
    let err = with(&|word, _| word[11] |= 0x02).unwrap_err();
    assert_eq!(err.code(), "corrupt_document", "{err}");
    assert!(err.to_string().contains("table stream"), "{err}");

    // Fields nested past any document's, and ends without a beginning, stay balanced.
    let fields = format!("{}x{}after\r", "\u{13}".repeat(1000), "\u{15}".repeat(2000));
    let out = extract(&word_document(&fields), &ExtractOptions::default()).unwrap();
    assert_eq!(out.content, "after");

    // The fixture with fEncrypted set: refused as encrypted, whatever the rest says.
    let mut locked = CHECKIN_DOC.to_vec();
    let fib = (512..locked.len())
        .step_by(512)
        .find(|&at| locked[at..].starts_with(&[0xEC, 0xA5]))
        .unwrap();
    locked[fib + 11] |= 0x01;
    let err = extract(&locked, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "unsupported_format", "{err}");
    assert!(err.to_string().contains("encrypted"), "{err}");
}

/// The .doc fixture cut at every length, with each of its bytes flipped in turn, and noise
/// behind its header or a bare compound file signature: text or an error, never a panic.
#[test]
fn damaged_docs_never_panic() {
    let opts = ExtractOptions::default();
    // `extract` would sniff first: a damaged document may no longer be told as one.
    let read = |bytes: &[u8]| {
        let _ = sniff(bytes);
        did_not_panic(extract_as(bytes, DocumentFormat::Doc, &opts));
    };
    for len in (0..CHECKIN_DOC.len()).step_by(61) {
        read(&CHECKIN_DOC[..len]);
    }
    let mut damaged = CHECKIN_DOC.to_vec();
    for at in 0..damaged.len() {
        let flips: &[u8] = match at {
            _ if at % 31 == 0 => &[0xFF, 0x01, 0x80],
            _ if at % 7 == 0 => &[0xFF],
            _ => &[],
        };
        for flip in flips {
            damaged[at] ^= flip;
            read(&damaged);
            damaged[at] ^= flip;
        }
    }
    for seed in 1..50 {
        let mut bytes = CHECKIN_DOC[..512].to_vec();
        bytes.extend(noise(8192, seed));
        read(&bytes);
        let mut bytes = CHECKIN_DOC[..8].to_vec();
        bytes.extend(noise(4096, seed));
        read(&bytes);
        // The fixture with one of its sectors overwritten by noise.
        let mut bytes = CHECKIN_DOC.to_vec();
        let sector = 512 * (1 + seed as usize % (bytes.len() / 512 - 1));
        bytes[sector..sector + 512].copy_from_slice(&noise(512, seed));
        read(&bytes);
    }
}

#[test]
fn output_limit_is_too_large() {
    let opts = ExtractOptions {
        max_output_chars: 100,
        ..ExtractOptions::default()
    };
    let long = "word ".repeat(1000);
    assert_eq!(
        extract(long.as_bytes(), &opts).unwrap_err().code(),
        "too_large"
    );
    let html = format!("<html><body><p>{long}</p></body></html>");
    assert_eq!(
        extract(html.as_bytes(), &opts).unwrap_err().code(),
        "too_large"
    );
    assert!(extract(b"short", &opts).is_ok());
}

#[test]
fn a_stop_request_ends_an_extraction() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opts = ExtractOptions {
        stop: Some(stop.clone()),
        ..ExtractOptions::default()
    };
    let csv = "a,b,c\n".repeat(4_000_000);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let err = extract(csv.as_bytes(), &opts).unwrap_err();
    stopper.join().unwrap();
    assert_eq!(err.code(), "stopped");
    assert!(err.is_retryable());
}

#[test]
fn cells_naming_one_huge_shared_string_are_charged_as_they_are_read() {
    // 5000 cells, each naming the same 100 000-character string: 500 million characters
    // gathered before the output limit would have been reached.
    let huge = "a".repeat(100_000);
    let mut rows = String::new();
    for r in 1..=5000 {
        rows.push_str(&format!(
            r#"<row r="{r}"><c r="A{r}" t="s"><v>0</v></c></row>"#
        ));
    }
    let bytes = common::xlsx(&[("Bomb", &rows)], &[&huge]);
    let err = extract(&bytes, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large");
    assert!(err.to_string().contains("20000000"), "{err}");
}

#[test]
fn spanning_cells_count_as_every_cell_they_span() {
    let html = format!(
        "<html><body><table><tr>{}</tr></table></body></html>",
        "<td colspan=64>x</td>".repeat(20_000)
    );
    let err = extract(html.as_bytes(), &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large");
    assert!(err.to_string().contains("cells"), "{err}");

    let cell = r#"<w:tc><w:tcPr><w:gridSpan w:val="64"/></w:tcPr><w:p><w:r><w:t>x</w:t></w:r></w:p></w:tc>"#;
    let body = format!("<w:tbl><w:tr>{}</w:tr></w:tbl>", cell.repeat(20_000));
    // Repetitive enough to pass for a zip bomb: that guard is not what is tested here.
    let lenient = ExtractOptions {
        max_compression_ratio: 100_000,
        ..ExtractOptions::default()
    };
    let err = extract(&docx(&body), &lenient).unwrap_err();
    assert_eq!(err.code(), "too_large");
    assert!(err.to_string().contains("cells"), "{err}");

    // A table of ordinary size is unaffected.
    let html = format!(
        "<html><body><table><tr>{}</tr></table></body></html>",
        "<td colspan=4>x</td>".repeat(100)
    );
    assert!(extract(html.as_bytes(), &ExtractOptions::default()).is_ok());
}

#[test]
fn sparse_sheet_costs_output_not_memory() {
    // One cell in A and one in XFD on each of many rows: a huge grid if materialised.
    let mut rows = String::new();
    for r in 1..=5000 {
        rows.push_str(&format!(
            r#"<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>a</t></is></c><c r="XFD{r}" t="inlineStr"><is><t>z</t></is></c></row>"#
        ));
    }
    let bytes = common::xlsx(&[("Wide", &rows)], &[]);
    let started = Instant::now();
    let err = extract(&bytes, &ExtractOptions::default()).unwrap_err();
    assert_eq!(err.code(), "too_large");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn deeply_nested_markup_is_fine() {
    let html = format!(
        "{}deep{}",
        "<div><b>".repeat(50_000),
        "</b></div>".repeat(50_000)
    );
    let out = extract(html.as_bytes(), &ExtractOptions::default()).unwrap();
    assert!(out.content.contains("deep"));

    let xml_body = format!(
        "{}{}",
        "<w:sdt><w:sdtContent>".repeat(20_000),
        "</w:sdtContent></w:sdt>".repeat(20_000)
    );
    let bytes = docx(&format!("{xml_body}{}", para(None, None, "after")));
    assert!(extract(&bytes, &ExtractOptions::default())
        .unwrap()
        .content
        .contains("after"));

    let cell = |inner: &str| format!("<w:tbl><w:tr><w:tc>{inner}</w:tc></w:tr></w:tbl>");
    let mut tables = para(None, None, "innermost");
    for _ in 0..5_000 {
        tables = cell(&tables);
    }
    let out = extract(&docx(&tables), &ExtractOptions::default()).unwrap();
    assert_eq!(out.content, "| innermost |\n| --- |");
}
