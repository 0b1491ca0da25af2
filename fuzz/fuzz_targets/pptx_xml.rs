#![no_main]

//! The PPTX slide walker: the input is the one slide of an otherwise valid package (listed
//! twice, with a notes slide that is the input too), which random bytes alone would rarely
//! reach through the zip layer.

mod common;

use libfuzzer_sys::fuzz_target;
use xenios_extract::DocumentFormat;

const RELS: &[u8] = br#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="ppt/presentation.xml"/></Relationships>"#;
const PRESENTATION: &[u8] = br#"<p:presentation xmlns:p="p" xmlns:r="r"><p:sldIdLst><p:sldId id="256" r:id="rId2"/><p:sldId id="257" r:id="rId2"/></p:sldIdLst></p:presentation>"#;
const PRESENTATION_RELS: &[u8] = br#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/slide" Target="slides/slide1.xml"/></Relationships>"#;
const SLIDE_RELS: &[u8] = br#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/notesSlide" Target="../notesSlides/notesSlide1.xml"/></Relationships>"#;

fuzz_target!(|data: &[u8]| {
    common::extract_package(
        DocumentFormat::Pptx,
        &[
            ("[Content_Types].xml", &b"<Types/>"[..]),
            ("_rels/.rels", RELS),
            ("ppt/presentation.xml", PRESENTATION),
            ("ppt/_rels/presentation.xml.rels", PRESENTATION_RELS),
            ("ppt/slides/_rels/slide1.xml.rels", SLIDE_RELS),
            ("ppt/slides/slide1.xml", data),
            ("ppt/notesSlides/notesSlide1.xml", data),
        ],
    );
});
