#![no_main]

//! The worksheet reader: the input is `xl/worksheets/sheet1.xml` of an otherwise valid
//! workbook with shared strings and a date style.

mod common;

use libfuzzer_sys::fuzz_target;
use xenios_extract::DocumentFormat;

const RELS: &[u8] = br#"<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#;
const WORKBOOK: &[u8] = br#"<workbook><workbookPr date1904="1"/><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>"#;
const BOOK_RELS: &[u8] = br#"<Relationships><Relationship Id="rId1" Type="x/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="x/sharedStrings" Target="sharedStrings.xml"/><Relationship Id="rId3" Type="x/styles" Target="styles.xml"/></Relationships>"#;
const SHARED: &[u8] = br#"<sst><si><t>a</t></si><si><r><t>b</t></r></si></sst>"#;
const STYLES: &[u8] = br#"<styleSheet><cellXfs><xf numFmtId="0"/><xf numFmtId="14"/></cellXfs></styleSheet>"#;

fuzz_target!(|data: &[u8]| {
    common::extract_package(
        DocumentFormat::Xlsx,
        &[
            ("[Content_Types].xml", &b"<Types/>"[..]),
            ("_rels/.rels", RELS),
            ("xl/workbook.xml", WORKBOOK),
            ("xl/_rels/workbook.xml.rels", BOOK_RELS),
            ("xl/sharedStrings.xml", SHARED),
            ("xl/styles.xml", STYLES),
            ("xl/worksheets/sheet1.xml", data),
        ],
    );
});
