#![no_main]

//! The DOCX body walker: the input is `word/document.xml` of an otherwise valid package,
//! which random bytes alone would rarely reach through the zip layer.

mod common;

use libfuzzer_sys::fuzz_target;
use xenios_extract::DocumentFormat;

const RELS: &[u8] = br#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;
const DOC_RELS: &[u8] = br#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/numbering" Target="numbering.xml"/><Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink" Target="https://example.com" TargetMode="External"/></Relationships>"#;
const STYLES: &[u8] = br#"<w:styles xmlns:w="w"><w:style w:styleId="H1"><w:name w:val="heading 1"/><w:basedOn w:val="H2"/></w:style><w:style w:styleId="H2"><w:basedOn w:val="H1"/><w:pPr><w:numPr><w:numId w:val="1"/></w:numPr></w:pPr></w:style></w:styles>"#;
const NUMBERING: &[u8] = br#"<w:numbering xmlns:w="w"><w:abstractNum w:abstractNumId="0"><w:lvl w:ilvl="0"><w:start w:val="0"/><w:numFmt w:val="decimal"/></w:lvl></w:abstractNum><w:num w:numId="1"><w:abstractNumId w:val="0"/></w:num></w:numbering>"#;

fuzz_target!(|data: &[u8]| {
    common::extract_package(
        DocumentFormat::Docx,
        &[
            ("[Content_Types].xml", &b"<Types/>"[..]),
            ("_rels/.rels", RELS),
            ("word/_rels/document.xml.rels", DOC_RELS),
            ("word/styles.xml", STYLES),
            ("word/numbering.xml", NUMBERING),
            ("word/document.xml", data),
        ],
    );
});
