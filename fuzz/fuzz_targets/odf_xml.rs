#![no_main]

//! The OpenDocument body walker, as ODT (an ODS differs only by its sheet headings): the input
//! is `content.xml` of an otherwise valid package with a list style in `styles.xml`.

mod common;

use libfuzzer_sys::fuzz_target;
use xenios_extract::DocumentFormat;

const STYLES: &[u8] = br#"<office:document-styles xmlns:office="o" xmlns:text="t" xmlns:style="s"><office:styles><text:list-style style:name="L1"><text:list-level-style-number text:level="1" style:num-format="1"/></text:list-style></office:styles></office:document-styles>"#;
const META: &[u8] = br#"<office:document-meta xmlns:office="o" xmlns:dc="d"><office:meta><dc:title>T</dc:title></office:meta></office:document-meta>"#;

fuzz_target!(|data: &[u8]| {
    common::extract_package(
        DocumentFormat::Odt,
        &[
            ("mimetype", &b"application/vnd.oasis.opendocument.text"[..]),
            ("styles.xml", STYLES),
            ("meta.xml", META),
            ("content.xml", data),
        ],
    );
});
