#![no_main]

//! The OpenDocument body walker: the input's first byte picks the format (ODT; ODS differs
//! only by its sheet headings; ODP walks slides, frames and notes), the rest is `content.xml`
//! of an otherwise valid package with a list style and a hidden page style in `styles.xml`.

mod common;

use libfuzzer_sys::fuzz_target;
use xenios_extract::DocumentFormat;

const STYLES: &[u8] = br#"<office:document-styles xmlns:office="o" xmlns:text="t" xmlns:style="s" xmlns:presentation="p"><office:styles><text:list-style style:name="L1"><text:list-level-style-number text:level="1" style:num-format="1"/></text:list-style><style:style style:name="H" style:family="drawing-page"><style:drawing-page-properties presentation:visibility="hidden"/></style:style></office:styles></office:document-styles>"#;
const META: &[u8] = br#"<office:document-meta xmlns:office="o" xmlns:dc="d"><office:meta><dc:title>T</dc:title></office:meta></office:document-meta>"#;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, content)) = data.split_first() else {
        return;
    };
    let (format, media_type) = match pick % 3 {
        0 => (DocumentFormat::Odt, "application/vnd.oasis.opendocument.text"),
        1 => (DocumentFormat::Ods, "application/vnd.oasis.opendocument.spreadsheet"),
        _ => (DocumentFormat::Odp, "application/vnd.oasis.opendocument.presentation"),
    };
    common::extract_package(
        format,
        &[
            ("mimetype", media_type.as_bytes()),
            ("styles.xml", STYLES),
            ("meta.xml", META),
            ("content.xml", content),
        ],
    );
});
