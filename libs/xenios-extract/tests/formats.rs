//! Each format, built at test time with known text, through `extract`.

mod common;

use common::{
    a_para, a_table, docx, image_heads, para, pptx, run, shape, word_document, xlsx, Slide,
};
use serde_json::json;
use xenios_extract::{extract, extract_as, sniff, DocumentFormat, ExtractOptions, OutputFormat};

fn markdown() -> ExtractOptions {
    ExtractOptions::default()
}

fn text() -> ExtractOptions {
    ExtractOptions {
        output: OutputFormat::Text,
        ..ExtractOptions::default()
    }
}

fn report_docx() -> Vec<u8> {
    let body = [
        para(Some("Title"), None, "Quarterly Report"),
        para(Some("Heading1"), None, "Introduction"),
        format!(
            "<w:p>{}{}{}{}{}{}{}</w:p>",
            run("Revenue grew ", ""),
            run("12%", "<w:b/>"),
            run(" in ", ""),
            run("Q3", "<w:i/>"),
            // Hidden text: neither shown nor printed by Word.
            run(" (draft)", "<w:vanish/>"),
            run(".", "<w:b w:val=\"false\"/>"),
            run("", "<w:vanish w:val=\"0\"/>"),
        ),
        para(None, Some((1, 0)), "First point"),
        para(None, Some((1, 1)), "Nested point"),
        para(Some("ListBullet"), None, "Second point"),
        para(None, Some((2, 0)), "Step one"),
        para(None, Some((2, 0)), "Step two"),
        para(Some("MyHeading"), None, "Details"),
        format!(
            "<w:tbl><w:tblPr/><w:tr><w:tc>{}</w:tc><w:tc>{}</w:tc></w:tr><w:tr><w:tc>{}</w:tc><w:tc>{}</w:tc></w:tr><w:tr><w:tc>{}{}</w:tc><w:tc>{}</w:tc></w:tr></w:tbl>",
            para(None, None, "Name"),
            para(None, None, "Value"),
            para(None, None, "Alpha"),
            para(None, None, "1"),
            para(None, None, "Beta | Gamma"),
            para(None, None, "second line"),
            para(None, None, "2"),
        ),
        format!(
            r#"<w:p>{}<w:hyperlink r:id="rIdLink">{}</w:hyperlink>{}</w:p>"#,
            run("See the ", ""),
            run("spec", ""),
            run(".", ""),
        ),
        // A text box: Word writes it twice, as DrawingML and as a VML fallback.
        format!(
            "<w:p><w:r><mc:AlternateContent><mc:Choice Requires=\"wps\"><w:drawing><w:txbxContent>{}</w:txbxContent></w:drawing></mc:Choice><mc:Fallback><w:pict><w:txbxContent>{}</w:txbxContent></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>",
            para(None, None, "Box text"),
            para(None, None, "Box text"),
        ),
        format!(
            "<w:p><w:pPr><w:pPrChange w:id=\"2\"><w:pPr><w:pStyle w:val=\"Heading1\"/></w:pPr></w:pPrChange></w:pPr>{}<w:del w:id=\"1\"><w:r><w:delText>REMOVED</w:delText></w:r></w:del>{}</w:p>",
            run("Kept", ""),
            run(" &amp; tabbed<w:tab/>end", ""),
        ),
    ]
    .concat();
    docx(&body)
}

#[test]
fn docx_becomes_markdown_with_structure() {
    let bytes = report_docx();
    assert_eq!(sniff(&bytes), Some(DocumentFormat::Docx));
    let out = extract(&bytes, &markdown()).unwrap();
    let expected = "\
# Quarterly Report

# Introduction

Revenue grew **12%** in *Q3*.

- First point
    - Nested point
- Second point

1. Step one
2. Step two

## Details

| Name | Value |
| --- | --- |
| Alpha | 1 |
| Beta \\| Gamma<br>second line | 2 |

See the [spec](https://example.com/spec).

Box text

Kept & tabbed\tend";
    assert_eq!(out.content, expected);
    assert_eq!(out.format, OutputFormat::Markdown);
    assert_eq!(out.title.as_deref(), Some("Quarterly Report"));
    assert_eq!(out.pages, None);
    assert_eq!(out.metadata["source_format"], "docx");
    assert_eq!(out.metadata["author"], "Ada Lovelace");
}

#[test]
fn docx_as_text_has_no_markup() {
    let out = extract(&report_docx(), &text()).unwrap();
    assert_eq!(out.format, OutputFormat::Text);
    assert!(out
        .content
        .starts_with("Quarterly Report\n\nIntroduction\n\nRevenue grew 12% in Q3."));
    assert!(out
        .content
        .contains("Name\tValue\nAlpha\t1\nBeta | Gamma second line\t2"));
    assert!(out.content.contains("See the spec."));
    for markup in ["**", "# ", "](", "| ---"] {
        assert!(
            !out.content.contains(markup),
            "{markup} in {:?}",
            out.content
        );
    }
}

fn sales_xlsx() -> Vec<u8> {
    let sales = r#"<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c></row><row r="2"><c r="A2" t="s"><v>3</v></c><c r="B2"><v>1250.5</v></c><c r="C2" s="1"><v>45292</v></c></row><row r="3"><c r="A3" t="inlineStr"><is><t>South &amp; East</t></is></c><c r="B3"><v>0.30000000000000004</v></c><c r="C3" t="b"><v>1</v></c></row><row r="4"><c r="A4" t="s"><v>4</v></c><c r="B4" t="str"><f>B2*2</f><v>2501</v></c><c r="C4" s="2"><v>45292.5</v></c></row>"#;
    let notes = r#"<row r="1"><c r="A1" t="s"><v>5</v></c></row><row r="3"><c r="C3" t="e"><v>#DIV/0!</v></c></row>"#;
    xlsx(
        &[("Sales", sales), ("Notes", notes)],
        &["Region", "Revenue", "Date", "North", "We|st", "Note"],
    )
}

#[test]
fn xlsx_sheets_become_tables() {
    let bytes = sales_xlsx();
    assert_eq!(sniff(&bytes), Some(DocumentFormat::Xlsx));
    let out = extract(&bytes, &markdown()).unwrap();
    let expected = "\
## Sales

| Region | Revenue | Date |
| --- | --- | --- |
| North | 1250.5 | 2024-01-01 |
| South & East | 0.3 | TRUE |
| West | 2501 | 2024-01-01 12:00:00 |

## Notes

| Note |  |  |
| --- | --- | --- |
|  |  | #DIV/0! |";
    assert_eq!(out.content, expected);
    assert_eq!(out.title.as_deref(), Some("Sales 2024"));
    assert_eq!(out.metadata["sheets"], json!(["Sales", "Notes"]));
    assert_eq!(out.metadata["author"], "Grace Hopper");

    let plain = extract(&bytes, &text()).unwrap();
    assert!(plain
        .content
        .starts_with("Sales\n\nRegion\tRevenue\tDate\nNorth\t1250.5\t2024-01-01\n"));
}

fn review_deck() -> Vec<u8> {
    let title = |t: &str| shape(Some(r#"type="title""#), &a_para(t, ""));
    let opening = [
        shape(Some(r#"type="ctrTitle""#), &a_para("Quarterly review", "")),
        shape(
            Some(r#"type="subTitle" idx="1""#),
            &a_para("Team Xenios", ""),
        ),
    ]
    .concat();
    let results = [
        title("Results &amp; plans"),
        shape(
            Some(r#"idx="1""#),
            &[
                a_para("Revenue up", ""),
                a_para("EMEA 12%", r#"<a:pPr lvl="1"/>"#),
                a_para("Churn down", ""),
                a_para("Plain line", r#"<a:pPr><a:buNone/></a:pPr>"#),
            ]
            .concat(),
        ),
        shape(None, &a_para("Source: finance", "")),
        a_table(&[&["Region", "Q3"], &["EMEA", "1.2"]]),
        shape(Some(r#"type="sldNum" idx="12""#), &a_para("2", "")),
        shape(Some(r#"type="ftr" idx="11""#), &a_para("Confidential", "")),
    ]
    .concat();
    let hidden = [
        title("Backup"),
        shape(Some(r#"idx="1""#), &a_para("spare numbers", "")),
    ]
    .concat();
    let steps = shape(
        None,
        &[
            a_para(
                "First",
                r#"<a:pPr><a:buAutoNum type="arabicPeriod"/></a:pPr>"#,
            ),
            a_para(
                "Second",
                r#"<a:pPr><a:buAutoNum type="arabicPeriod"/></a:pPr>"#,
            ),
        ]
        .concat(),
    );
    pptx(&[
        Slide {
            shapes: &opening,
            notes: None,
            hidden: false,
        },
        Slide {
            shapes: &results,
            notes: Some("Mention the churn work"),
            hidden: false,
        },
        Slide {
            shapes: &hidden,
            notes: Some("not shown"),
            hidden: true,
        },
        Slide {
            shapes: &steps,
            notes: None,
            hidden: false,
        },
    ])
}

#[test]
fn pptx_slides_become_sections_in_presentation_order() {
    let bytes = review_deck();
    assert_eq!(sniff(&bytes), Some(DocumentFormat::Pptx));
    let out = extract(&bytes, &markdown()).unwrap();
    let expected = "\
## Slide 1: Quarterly review

Team Xenios

## Slide 2: Results & plans

- Revenue up
    - EMEA 12%
- Churn down

Plain line

Source: finance

| Region | Q3 |
| --- | --- |
| EMEA | 1.2 |

### Notes

Mention the churn work

## Slide 4

1. First
2. Second";
    assert_eq!(out.content, expected);
    assert_eq!(out.title.as_deref(), Some("Quarterly review"));
    assert_eq!(out.pages, Some(3));
    assert_eq!(out.metadata["source_format"], "pptx");
    assert_eq!(out.metadata["slides"], 3);
    assert_eq!(out.metadata["hidden_slides"], 1);

    let plain = extract(&bytes, &text()).unwrap();
    assert!(
        plain
            .content
            .starts_with("Slide 1: Quarterly review\n\nTeam Xenios\n\nSlide 2: Results & plans\n\n- Revenue up\n"),
        "{}",
        plain.content
    );
    assert!(
        plain.content.contains("Region\tQ3\nEMEA\t1.2"),
        "{}",
        plain.content
    );
}

/// A deck written by python-pptx (`fixtures/make_coaching_pptx.py`), not by this test code:
/// the XML of its default template is what PowerPoint writes.
#[test]
fn a_deck_written_by_python_pptx_reads_as_its_slides() {
    let bytes = include_bytes!("fixtures/coaching.pptx");
    assert_eq!(sniff(bytes), Some(DocumentFormat::Pptx));
    let out = extract(bytes, &markdown()).unwrap();
    let expected = "\
## Slide 1: Welcome

Xenios coaching, week 1

## Slide 2: Goals

- Sleep eight hours
    - No screens after 10 pm
- Walk daily

### Notes

Ask how last week went

## Slide 3: Measurements

| Metric | Value |
| --- | --- |
| Resting HR | 58 |
| HRV | 72 ms |

Measured on Monday";
    assert_eq!(out.content, expected);
    assert_eq!(out.title.as_deref(), Some("Coaching programme"));
    assert_eq!(out.metadata["author"], "Dr. Ada");
    assert_eq!(out.pages, Some(3));
}

#[test]
fn images_are_recognised_and_need_ocr() {
    for (name, bytes) in image_heads() {
        let format = sniff(&bytes).unwrap_or_else(|| panic!("{name} not recognised"));
        assert_eq!(format.as_str(), name);
        let err = extract(&bytes, &markdown()).unwrap_err();
        assert_eq!(err.code(), "ocr_required", "{name}: {err}");
        assert!(
            err.to_string().contains(&format!(
                "a {} image has no text layer",
                name.to_uppercase()
            )),
            "{err}"
        );
    }
    // `BM` alone is how many a text begins.
    let text = b"BMW service notes: brakes checked, tyres rotated.\n";
    assert_eq!(sniff(text), Some(DocumentFormat::Text));
}

/// An ODT written by odfpy (`fixtures/make_plan_odt.py`): headings, lists by their list
/// styles, a table with a repeated empty column; its footnote and comment left out.
#[test]
fn an_odt_written_by_odfpy_reads_as_markdown() {
    let bytes = include_bytes!("fixtures/plan.odt");
    assert_eq!(sniff(bytes), Some(DocumentFormat::Odt));
    // Told from its first entry alone, as from the head of an upload.
    assert_eq!(sniff(&bytes[..100]), Some(DocumentFormat::Odt));
    let out = extract(bytes, &markdown()).unwrap();
    let expected = "\
# Session plan

Weekly check-ins,  thirty minutes each.

## Habits

- Sleep by eleven
    - No screens in bed
- Walk daily

1. Baseline
2. Review

| Metric | Target |
| --- | --- |
| Steps | 8000 |

Next session:
Tuesday";
    assert_eq!(out.content, expected);
    assert_eq!(out.title.as_deref(), Some("Eight-week plan"));
    assert_eq!(out.metadata["author"], "Coach Grace");
    assert_eq!(out.metadata["source_format"], "odt");

    let plain = extract(bytes, &text()).unwrap();
    assert!(
        plain
            .content
            .starts_with("Session plan\n\nWeekly check-ins,"),
        "{}",
        plain.content
    );
    assert!(!plain.content.contains("Footnote") && !plain.content.contains("Reviewer"));
}

/// An ODS written by odfpy (`fixtures/make_scores_ods.py`): each sheet under its name, with
/// the thousand repeated empty columns and million repeated empty rows spreadsheets write.
#[test]
fn an_ods_written_by_odfpy_reads_as_its_sheets() {
    let bytes = include_bytes!("fixtures/scores.ods");
    assert_eq!(sniff(bytes), Some(DocumentFormat::Ods));
    assert_eq!(sniff(&bytes[..100]), Some(DocumentFormat::Ods));
    let out = extract(bytes, &markdown()).unwrap();
    let expected = "\
## Scores

| Client | Week 1 | Week 2 |
| --- | --- | --- |
| Ana | 12 | 15.5 |
| Ben | 9 | 11 |

## Notes

| Ana sleeps better |
| --- |";
    assert_eq!(out.content, expected);
    assert_eq!(out.title.as_deref(), Some("Client scores"));
    assert_eq!(out.metadata["sheets"], json!(["Scores", "Notes"]));
    assert_eq!(out.metadata["source_format"], "ods");
}

/// An ODP written by odfpy (`fixtures/make_checkin_odp.py`): each shown slide a section named
/// by its title and numbered as the application numbers it (the hidden third slide counts),
/// its outline as nested bullets, its speaker notes under their own heading; footers and the
/// hidden slide left out. A title that comes after the slide's other text cannot name it.
#[test]
fn an_odp_written_by_odfpy_reads_as_its_slides() {
    let bytes = include_bytes!("fixtures/checkin.odp");
    assert_eq!(sniff(bytes), Some(DocumentFormat::Odp));
    assert_eq!(sniff(&bytes[..100]), Some(DocumentFormat::Odp));
    let out = extract(bytes, &markdown()).unwrap();
    let expected = "\
## Slide 1: Quarterly check-in

Ana, spring

## Slide 2: Goals

- Sleep seven hours
    - Lights out by eleven
- Walk daily

### Notes

Ask how the walks went.

## Slide 4

| Week | Steps |
| --- | --- |
| 1 | 6000 |
| 2 | 8000 |

Progress";
    assert_eq!(out.content, expected);
    assert_eq!(out.title.as_deref(), Some("Quarterly check-in"));
    assert_eq!(out.pages, Some(3));
    assert_eq!(out.metadata["slides"], 3);
    assert_eq!(out.metadata["hidden_slides"], 1);
    assert_eq!(out.metadata["author"], "Coach Grace");
    assert_eq!(out.metadata["source_format"], "odp");
    assert!(!out.content.contains("Confidential") && !out.content.contains("Not ready"));

    let plain = extract(bytes, &text()).unwrap();
    assert!(
        plain
            .content
            .starts_with("Slide 1: Quarterly check-in\n\nAna, spring"),
        "{}",
        plain.content
    );
}

/// The check-in fixtures' running text, whichever word processor format holds it (RTF, DOC).
const CHECKIN_MARKDOWN: &str = "\
# Weekly check-in

Ana\u{2019}s caf\u{e9} visit went well: she slept 7\u{bd} hours and walked every day. She said \u{201c}better\u{201d} twice.

## Goals

- Sleep seven hours
    - Lights out by eleven
- Walk daily

1. Baseline
2. Review

## Measurements

| Metric | Target |
| --- | --- |
| Steps | 8000 |
| Sleep | 7\u{bd} h |

See the [plan online](https://example.com/plan) for details.

Next session:
Tuesday";

/// The same as plain text.
const CHECKIN_TEXT: &str = "\
Weekly check-in

Ana\u{2019}s caf\u{e9} visit went well: she slept 7\u{bd} hours and walked every day. She said \u{201c}better\u{201d} twice.

Goals

- Sleep seven hours
    - Lights out by eleven
- Walk daily

1. Baseline
2. Review

Measurements

Metric\tTarget
Steps\t8000
Sleep\t7\u{bd} h

See the plan online for details.

Next session:
Tuesday";

/// An RTF written the way Word writes one (`fixtures/checkin.rtf`): font, colour, style, list
/// and theme tables, document properties, a header, a footer with a page field, a footnote,
/// hidden text and a picture, none of which is running text; headings by outline level and by
/// style, lists whose bullets and numbers are `\listtext`, a table, a hyperlink field.
#[test]
fn an_rtf_written_like_word_reads_as_markdown() {
    let bytes = include_bytes!("fixtures/checkin.rtf");
    assert_eq!(sniff(bytes), Some(DocumentFormat::Rtf));
    assert_eq!(sniff(&bytes[..100]), Some(DocumentFormat::Rtf));
    let out = extract(bytes, &markdown()).unwrap();
    assert_eq!(out.content, CHECKIN_MARKDOWN);
    assert_eq!(out.format, OutputFormat::Markdown);
    assert_eq!(out.title.as_deref(), Some("Check-in notes"));
    assert_eq!(out.metadata["author"], "Coach Gr\u{e9}goire");
    assert_eq!(out.metadata["source_format"], "rtf");
    assert_eq!(out.pages, None);
    for hidden in [
        "Times New Roman",
        "Calibri",
        "Normal",
        "heading",
        "Confidential",
        "Page",
        "HYPERLINK",
        "MERGEFORMAT",
        "Measured with",
        "draft",
        "89504e47",
        "smiley",
        "Microsoft Word",
        "\u{b7}",
        "\t",
    ] {
        assert!(
            !out.content.contains(hidden),
            "{hidden:?} leaked into {:?}",
            out.content
        );
    }

    let plain = extract(bytes, &text()).unwrap();
    assert_eq!(plain.content, CHECKIN_TEXT);
    assert_eq!(plain.format, OutputFormat::Text);
    assert_eq!(plain.title.as_deref(), Some("Check-in notes"));
}

/// LibreOffice's own RTF export of the check-in document (`make_checkin_doc.sh`): the running
/// text of the fixture written like Word, and the text box as a paragraph of its own, not
/// glued to the sentence it is anchored in.
#[test]
fn an_rtf_written_by_libreoffice_reads_as_markdown() {
    let bytes = include_bytes!("fixtures/checkin-libreoffice.rtf");
    assert_eq!(sniff(bytes), Some(DocumentFormat::Rtf));
    let out = extract(bytes, &markdown()).unwrap();
    let expected = CHECKIN_MARKDOWN.replace("for details.\n", "for details.\n\nBoxed aside\n");
    assert_eq!(out.content, expected);
    assert_eq!(out.title.as_deref(), Some("Check-in notes"));
    assert_eq!(out.metadata["author"], "Coach Gr\u{e9}goire");
    for hidden in [
        "Confidential",
        "Measured with",
        "draft",
        "Removed words",
        "HYPERLINK",
    ] {
        assert!(!out.content.contains(hidden), "{hidden} in {}", out.content);
    }
}

/// A Word 97–2003 document as LibreOffice's Word 97 export writes it (`fixtures/checkin.doc`,
/// made by `make_checkin_doc.sh`): its text in a piece table, headings by built-in style,
/// bulleted and numbered lists, a table, a HYPERLINK field, a page break and a line break; a
/// header, a footnote, a text box, hidden text and a tracked deletion, none of which is
/// running text; the title and author in its summary information.
#[test]
fn a_doc_written_by_libreoffice_reads_as_markdown() {
    let bytes = include_bytes!("fixtures/checkin.doc");
    assert_eq!(sniff(bytes), Some(DocumentFormat::Doc));
    let out = extract(bytes, &markdown()).unwrap();
    assert_eq!(out.content, CHECKIN_MARKDOWN);
    assert_eq!(out.format, OutputFormat::Markdown);
    assert_eq!(out.title.as_deref(), Some("Check-in notes"));
    assert_eq!(out.metadata["author"], "Coach Gr\u{e9}goire");
    assert_eq!(out.metadata["source_format"], "doc");
    assert_eq!(out.pages, None);
    for hidden in [
        "HYPERLINK",
        "Confidential",
        "Measured with",
        "Boxed aside",
        "draft",
        "Removed words",
        "Heading",
        "Normal",
        "\t",
        "\u{1}",
        "\u{8}",
    ] {
        assert!(
            !out.content.contains(hidden),
            "{hidden:?} leaked into {:?}",
            out.content
        );
    }

    let plain = extract(bytes, &text()).unwrap();
    assert_eq!(plain.content, CHECKIN_TEXT);
    assert_eq!(plain.format, OutputFormat::Text);
    assert_eq!(plain.metadata["source_format"], "doc");
}

/// Word's special characters, fields nested and unbalanced, and a table told without
/// paragraph properties (an empty cell mark after a cell's ends the row), in a document of a
/// bare FIB and piece table.
#[test]
fn doc_special_characters_and_fields() {
    let text = concat!(
        "a\u{1e}b\u{1f}c\u{a0}d\u{1}\u{8}e\u{b}f\u{c}g\r",
        "See \u{13} HYPERLINK \"https://x.org/a b\" \u{14}the site\u{15}, page \u{13}PAGE\u{14}3\u{15}",
        " and \u{13}IF \u{13}DATE\u{14}today\u{15} = 1 \u{14}yes\u{15}.\u{15}\r",
        "A\u{7}B\u{7}\u{7}C\u{7}\u{7}\r",
        "End\u{13}open field\r",
    );
    let doc = word_document(text);
    assert_eq!(sniff(&doc), Some(DocumentFormat::Doc));
    let out = extract(&doc, &markdown()).unwrap();
    let expected = "\
a-bc\u{a0}de
f

g

See [the site](https://x.org/a%20b), page 3 and yes.

| A | B |
| --- | --- |
| C |  |

End";
    assert_eq!(out.content, expected);
    assert_eq!(out.title, None);
    assert_eq!(out.metadata.get("author"), None);
    assert_eq!(DocumentFormat::Doc.mime_type(), "application/msword");
    assert_eq!(DocumentFormat::Doc.extension(), "doc");
}

/// A password-protected .doc is refused as such; an Excel 97 workbook, a compound file too,
/// is not taken for a Word document.
#[test]
fn an_encrypted_doc_and_an_xls_are_refused() {
    let locked = include_bytes!("fixtures/locked.doc");
    assert_eq!(sniff(locked), Some(DocumentFormat::Doc));
    let err = extract(locked, &markdown()).unwrap_err();
    assert_eq!(err.code(), "unsupported_format");
    assert!(err.to_string().contains("encrypted"), "{err}");

    let sheet = include_bytes!("fixtures/sheet.xls");
    assert_eq!(sniff(sheet), None);
    let err = extract(sheet, &markdown()).unwrap_err();
    assert_eq!(err.code(), "unsupported_format");
    let err = extract_as(sheet, DocumentFormat::Doc, &markdown()).unwrap_err();
    assert_eq!(err.code(), "corrupt_document", "{err}");
    assert!(err.to_string().contains("WordDocument"), "{err}");
}

/// `\uN` with a negative value (above 32767) and `\ucN` fallbacks, scoped to their group,
/// through the public entry point.
#[test]
fn rtf_unicode_escapes_and_their_fallbacks() {
    let rtf = r"{\rtf1\ansi\ansicpg1252 \u-4064?x {\uc2\u8364\'80\'80 euro}\u8217\'92s \u-10179?\u-8704?}";
    assert_eq!(sniff(rtf.as_bytes()), Some(DocumentFormat::Rtf));
    let out = extract(rtf.as_bytes(), &markdown()).unwrap();
    assert_eq!(out.content, "\u{f020}x \u{20ac} euro\u{2019}s \u{1f600}");
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Test  Page</title><meta name="author" content="Jane Doe">
<style>p { color: red }</style><script>var s = "<p>not text</p>"; if (a < b) {}</script></head>
<body><noscript>Enable JavaScript</noscript>
<nav><a href="#top">Skip</a></nav>
<h1>Main   Heading</h1>
<p>Hello <b>bold</b> and <em> italic </em> with a <a href="https://example.com/x">link</a>.
<p>Second paragraph, unclosed
<ul><li>One<li>Two<ul><li>Two-A</li></ul></li></ul>
<ol start="3"><li>Three</li><li>Four</li></ol>
<table><caption>Totals</caption><tr><th>Col A</th><th>Col B</th></tr><tr><td>1</td><td>2 | 3</td></tr><tr><td colspan="2">wide</td></tr></table>
<pre>line 1
  line 2 &lt;tag&gt;</pre>
<blockquote>Quoted words</blockquote>
<p>Caf&eacute; &amp; more&nbsp;text<br>next line</p>
<svg><text>vector label</text></svg>
<template><p>template text</p></template>
</body></html>"##;

#[test]
fn html_becomes_markdown() {
    assert_eq!(sniff(PAGE.as_bytes()), Some(DocumentFormat::Html));
    let out = extract(PAGE.as_bytes(), &markdown()).unwrap();
    let expected = "\
Skip

# Main Heading

Hello **bold** and *italic* with a [link](https://example.com/x).

Second paragraph, unclosed

- One
- Two
    - Two-A

3. Three
4. Four

Totals

| Col A | Col B |
| --- | --- |
| 1 | 2 \\| 3 |
| wide |  |

```
line 1
  line 2 <tag>
```

> Quoted words

Café & more text
next line";
    assert_eq!(out.content, expected);
    assert_eq!(out.title.as_deref(), Some("Test Page"));
    assert_eq!(out.metadata["author"], "Jane Doe");
    assert_eq!(out.metadata["language"], "en");
    assert_eq!(out.metadata["source_format"], "html");
}

#[test]
fn html_as_text_drops_markup_and_hidden_content() {
    let out = extract(PAGE.as_bytes(), &text()).unwrap();
    assert!(out
        .content
        .contains("Main Heading\n\nHello bold and italic with a link."));
    assert!(out.content.contains("Col A\tCol B\n1\t2 | 3"));
    for hidden in [
        "not text",
        "color",
        "Enable JavaScript",
        "vector label",
        "template text",
    ] {
        assert!(
            !out.content.contains(hidden),
            "{hidden} leaked into {:?}",
            out.content
        );
    }
}

#[test]
fn html_in_a_legacy_charset_is_decoded() {
    let page = b"<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1251\"></head><body><p>\xcf\xf0\xe8\xe2\xe5\xf2</p></body></html>";
    let out = extract(page, &markdown()).unwrap();
    assert_eq!(out.content, "Привет");
}

#[test]
fn csv_becomes_a_table() {
    let csv = "name,age,city\nAlice,30,\"New York, NY\"\nBob,25,Paris\n";
    assert_eq!(sniff(csv.as_bytes()), Some(DocumentFormat::Csv));
    let out = extract(csv.as_bytes(), &markdown()).unwrap();
    assert_eq!(
        out.content,
        "| name | age | city |\n| --- | --- | --- |\n| Alice | 30 | New York, NY |\n| Bob | 25 | Paris |"
    );
    assert_eq!(out.metadata["rows"], 3);
    assert_eq!(out.metadata["columns"], 3);
    assert_eq!(out.metadata["delimiter"], ",");

    let plain = extract(csv.as_bytes(), &text()).unwrap();
    assert_eq!(
        plain.content,
        "name\tage\tcity\nAlice\t30\tNew York, NY\nBob\t25\tParis"
    );

    let semicolons = "a;b\n1;2,5\n3;4\n";
    let out = extract(semicolons.as_bytes(), &markdown()).unwrap();
    assert_eq!(
        out.content,
        "| a | b |\n| --- | --- |\n| 1 | 2,5 |\n| 3 | 4 |"
    );
}

#[test]
fn text_and_markdown_pass_through() {
    let md = "# Notes\r\n\r\nSome *text* here.\r\n";
    assert_eq!(sniff(md.as_bytes()), Some(DocumentFormat::Markdown));
    let out = extract(md.as_bytes(), &markdown()).unwrap();
    assert_eq!(out.content, "# Notes\n\nSome *text* here.");
    assert_eq!(out.title.as_deref(), Some("Notes"));
    assert_eq!(out.metadata["source_format"], "markdown");

    let plain = "Dear reader,\nthis is plain text.\n";
    assert_eq!(sniff(plain.as_bytes()), Some(DocumentFormat::Text));
    let out = extract(plain.as_bytes(), &text()).unwrap();
    assert_eq!(out.content, "Dear reader,\nthis is plain text.");
    assert_eq!(out.title, None);
    assert_eq!(out.metadata["source_format"], "text");

    let latin1 = b"Gr\xfc\xdfe aus K\xf6ln";
    assert_eq!(extract(latin1, &text()).unwrap().content, "Grüße aus Köln");
}

#[test]
fn result_serializes_in_the_job_result_shape() {
    let out = extract(b"# T\n\nbody", &markdown()).unwrap();
    let value = serde_json::to_value(&out).unwrap();
    assert_eq!(value["format"], "markdown");
    assert_eq!(value["title"], "T");
    assert_eq!(value["pages"], serde_json::Value::Null);
    assert_eq!(value["metadata"]["source_format"], "markdown");
}
