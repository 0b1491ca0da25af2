//! Real documents built at test time: OOXML packages written with the zip crate, PDFs
//! written object by object with a correct cross-reference table, and Word 97 documents of
//! a bare FIB and piece table in a compound file.
#![allow(dead_code)]

use std::io::Write;

use zip::write::SimpleFileOptions;

pub const W_NS: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";
pub const R_NS: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
const PKG_REL: &str = "http://schemas.openxmlformats.org/package/2006/relationships";

/// A zip with the given parts, deflated.
pub fn zip_parts(parts: &[(&str, &str)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, body) in parts {
        writer.start_file(*name, options).unwrap();
        writer.write_all(body.as_bytes()).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn content_types(main_part: &str, main_type: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/{main_part}" ContentType="{main_type}"/></Types>"#
    )
}

fn root_rels(main_part: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" Type="{REL}/officeDocument" Target="{main_part}"/><Relationship Id="rId2" Type="{PKG_REL}/metadata/core-properties" Target="docProps/core.xml"/></Relationships>"#
    )
}

pub fn core_xml(title: &str, creator: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title><dc:creator>{creator}</dc:creator></cp:coreProperties>"#
    )
}

pub const P_NS: &str = "http://schemas.openxmlformats.org/presentationml/2006/main";
pub const A_NS: &str = "http://schemas.openxmlformats.org/drawingml/2006/main";

/// One slide of [`pptx`]: its shapes (the inside of `p:spTree`), its speaker notes if any,
/// and whether it is hidden.
pub struct Slide<'a> {
    pub shapes: &'a str,
    pub notes: Option<&'a str>,
    pub hidden: bool,
}

/// A PPTX of `slides`, listed in this order in `ppt/presentation.xml` while their parts are
/// numbered the other way round (a reader must follow the list, not the part names).
pub fn pptx(slides: &[Slide]) -> Vec<u8> {
    let n = slides.len();
    let mut ids = String::new();
    let mut rels = String::new();
    let mut parts: Vec<(String, String)> = Vec::new();
    for (i, slide) in slides.iter().enumerate() {
        let number = n - i;
        ids.push_str(&format!(
            r#"<p:sldId id="{}" r:id="rId{}"/>"#,
            256 + i,
            i + 2
        ));
        rels.push_str(&format!(
            r#"<Relationship Id="rId{}" Type="{REL}/slide" Target="slides/slide{number}.xml"/>"#,
            i + 2
        ));
        let show = if slide.hidden { r#" show="0""# } else { "" };
        parts.push((
            format!("ppt/slides/slide{number}.xml"),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<p:sld xmlns:a="{A_NS}" xmlns:r="{R_NS}" xmlns:p="{P_NS}"{show}><p:cSld><p:spTree><p:nvGrpSpPr><p:cNvPr id="1" name=""/><p:cNvGrpSpPr/><p:nvPr/></p:nvGrpSpPr><p:grpSpPr/>{}</p:spTree></p:cSld></p:sld>"#,
                slide.shapes
            ),
        ));
        let Some(notes) = slide.notes else { continue };
        parts.push((
            format!("ppt/slides/_rels/slide{number}.xml.rels"),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" Type="{REL}/slideLayout" Target="../slideLayouts/slideLayout1.xml"/><Relationship Id="rId2" Type="{REL}/notesSlide" Target="../notesSlides/notesSlide{number}.xml"/></Relationships>"#
            ),
        ));
        parts.push((
            format!("ppt/notesSlides/notesSlide{number}.xml"),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<p:notes xmlns:a="{A_NS}" xmlns:r="{R_NS}" xmlns:p="{P_NS}"><p:cSld><p:spTree>{}{}{}</p:spTree></p:cSld></p:notes>"#,
                shape(Some(r#"type="sldImg""#), ""),
                shape(Some(r#"type="body" idx="1""#), &a_para(notes, "")),
                shape(Some(r#"type="sldNum" idx="5""#), &a_para(&number.to_string(), "")),
            ),
        ));
    }
    let presentation = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<p:presentation xmlns:a="{A_NS}" xmlns:r="{R_NS}" xmlns:p="{P_NS}"><p:sldMasterIdLst><p:sldMasterId id="2147483648" r:id="rId1"/></p:sldMasterIdLst><p:sldIdLst>{ids}</p:sldIdLst><p:sldSz cx="12192000" cy="6858000"/></p:presentation>"#
    );
    let presentation_rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" Type="{REL}/slideMaster" Target="slideMasters/slideMaster1.xml"/>{rels}</Relationships>"#
    );
    let main = "ppt/presentation.xml";
    let mut all: Vec<(&str, &str)> = Vec::new();
    let types = content_types(
        main,
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
    );
    let root = root_rels(main);
    all.push(("[Content_Types].xml", &types));
    all.push(("_rels/.rels", &root));
    all.push((main, &presentation));
    all.push(("ppt/_rels/presentation.xml.rels", &presentation_rels));
    for (name, body) in &parts {
        all.push((name, body));
    }
    zip_parts(&all)
}

/// A text shape: `placeholder` holds the attributes of its `p:ph` (none: a plain text box),
/// `paragraphs` its `a:p` elements.
pub fn shape(placeholder: Option<&str>, paragraphs: &str) -> String {
    let ph = placeholder
        .map(|attrs| format!("<p:ph {attrs}/>"))
        .unwrap_or_default();
    format!(
        r#"<p:sp><p:nvSpPr><p:cNvPr id="3" name="Shape"/><p:cNvSpPr/><p:nvPr>{ph}</p:nvPr></p:nvSpPr><p:spPr/><p:txBody><a:bodyPr/><a:lstStyle/>{paragraphs}</p:txBody></p:sp>"#
    )
}

/// A DrawingML paragraph of one run; `ppr` is its `a:pPr` (or nothing).
pub fn a_para(text: &str, ppr: &str) -> String {
    format!(r#"<a:p>{ppr}<a:r><a:rPr lang="en-US" dirty="0"/><a:t>{text}</a:t></a:r></a:p>"#)
}

/// A table in a graphic frame, one `a:tc` per cell.
pub fn a_table(rows: &[&[&str]]) -> String {
    let mut tbl = String::from("<a:tbl><a:tblPr firstRow=\"1\"/><a:tblGrid/>");
    for row in rows {
        tbl.push_str(r#"<a:tr h="370840">"#);
        for cell in *row {
            tbl.push_str(&format!(
                "<a:tc><a:txBody><a:bodyPr/><a:lstStyle/>{}</a:txBody><a:tcPr/></a:tc>",
                a_para(cell, "")
            ));
        }
        tbl.push_str("</a:tr>");
    }
    tbl.push_str("</a:tbl>");
    format!(
        r#"<p:graphicFrame><p:nvGraphicFramePr><p:cNvPr id="4" name="Table"/><p:cNvGraphicFramePr/><p:nvPr/></p:nvGraphicFramePr><p:xfrm/><a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/table">{tbl}</a:graphicData></a:graphic></p:graphicFrame>"#
    )
}

/// A DOCX whose `w:body` holds `body`, with heading styles, a bullet list (numId 1), a
/// numbered list (numId 2) and the external hyperlink `rIdLink`.
pub fn docx(body: &str) -> Vec<u8> {
    docx_padded(body, 0)
}

/// `docx(body)` with `padding` more (empty) entries.
pub fn docx_padded(body: &str, padding: usize) -> Vec<u8> {
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="{W_NS}" xmlns:r="{R_NS}" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><w:body>{body}<w:sectPr/></w:body></w:document>"#
    );
    let styles = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:styles xmlns:w="{W_NS}"><w:latentStyles><w:lsdException w:name="heading 1"/></w:latentStyles><w:style w:type="paragraph" w:styleId="Normal"><w:name w:val="Normal"/></w:style><w:style w:type="paragraph" w:styleId="Title"><w:name w:val="Title"/><w:basedOn w:val="Normal"/></w:style><w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/><w:basedOn w:val="Normal"/><w:pPr><w:outlineLvl w:val="0"/></w:pPr></w:style><w:style w:type="paragraph" w:styleId="Heading2"><w:name w:val="heading 2"/><w:basedOn w:val="Normal"/></w:style><w:style w:type="paragraph" w:styleId="MyHeading"><w:name w:val="My heading"/><w:basedOn w:val="Heading2"/></w:style><w:style w:type="paragraph" w:styleId="ListBullet"><w:name w:val="List Bullet"/><w:pPr><w:numPr><w:numId w:val="1"/></w:numPr></w:pPr></w:style></w:styles>"#
    );
    let numbering = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:numbering xmlns:w="{W_NS}"><w:abstractNum w:abstractNumId="0"><w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="bullet"/><w:lvlText w:val="•"/></w:lvl><w:lvl w:ilvl="1"><w:start w:val="1"/><w:numFmt w:val="bullet"/></w:lvl></w:abstractNum><w:abstractNum w:abstractNumId="1"><w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="decimal"/><w:lvlText w:val="%1."/></w:lvl></w:abstractNum><w:num w:numId="1"><w:abstractNumId w:val="0"/></w:num><w:num w:numId="2"><w:abstractNumId w:val="1"/><w:lvlOverride w:ilvl="0"><w:lvl w:ilvl="0"><w:numFmt w:val="bullet"/></w:lvl></w:lvlOverride></w:num></w:numbering>"#
    );
    let document_rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="{PKG_REL}"><Relationship Id="rId1" Type="{REL}/styles" Target="styles.xml"/><Relationship Id="rId2" Type="{REL}/numbering" Target="numbering.xml"/><Relationship Id="rIdLink" Type="{REL}/hyperlink" Target="https://example.com/spec" TargetMode="External"/></Relationships>"#
    );
    let content_types = content_types(
        "word/document.xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
    );
    let root_rels = root_rels("word/document.xml");
    let core = core_xml("Quarterly Report", "Ada Lovelace");
    let padding: Vec<String> = (0..padding).map(|i| format!("pad/{i:x}")).collect();
    let mut parts = vec![
        ("[Content_Types].xml", content_types.as_str()),
        ("_rels/.rels", &root_rels),
        ("word/document.xml", &document),
        ("word/_rels/document.xml.rels", &document_rels),
        ("word/styles.xml", &styles),
        ("word/numbering.xml", &numbering),
        ("docProps/core.xml", &core),
    ];
    parts.extend(padding.iter().map(|name| (name.as_str(), "")));
    zip_parts(&parts)
}

/// `<w:p>` with an optional style and list numbering, of plain runs.
pub fn para(style: Option<&str>, num: Option<(u32, u32)>, text: &str) -> String {
    let mut ppr = String::new();
    if let Some(style) = style {
        ppr.push_str(&format!(r#"<w:pStyle w:val="{style}"/>"#));
    }
    if let Some((num_id, ilvl)) = num {
        ppr.push_str(&format!(
            r#"<w:numPr><w:ilvl w:val="{ilvl}"/><w:numId w:val="{num_id}"/></w:numPr>"#
        ));
    }
    format!(
        r#"<w:p><w:pPr>{ppr}<w:rPr><w:b/></w:rPr></w:pPr>{}</w:p>"#,
        run(text, "")
    )
}

/// `<w:r>` with run properties `rpr` (e.g. `<w:b/>`).
pub fn run(text: &str, rpr: &str) -> String {
    format!(r#"<w:r><w:rPr>{rpr}</w:rPr><w:t xml:space="preserve">{text}</w:t></w:r>"#)
}

/// An XLSX with `sheets` (name, sheetData inner XML), the shared strings, and a style
/// table whose format 1 is a date.
pub fn xlsx(sheets: &[(&str, &str)], shared: &[&str]) -> Vec<u8> {
    let main_ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    let mut sheet_list = String::new();
    let mut rels = String::new();
    let mut parts: Vec<(String, String)> = Vec::new();
    for (i, (name, data)) in sheets.iter().enumerate() {
        let n = i + 1;
        sheet_list.push_str(&format!(
            r#"<sheet name="{name}" sheetId="{n}" r:id="rId{n}"/>"#
        ));
        rels.push_str(&format!(
            r#"<Relationship Id="rId{n}" Type="{REL}/worksheet" Target="worksheets/sheet{n}.xml"/>"#
        ));
        parts.push((
            format!("xl/worksheets/sheet{n}.xml"),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="{main_ns}" xmlns:r="{R_NS}"><sheetData>{data}</sheetData></worksheet>"#
            ),
        ));
    }
    rels.push_str(&format!(
        r#"<Relationship Id="rIdS" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/><Relationship Id="rIdT" Type="{REL}/styles" Target="/xl/styles.xml"/>"#
    ));
    let strings: String = shared
        .iter()
        .map(|s| {
            if let Some((a, b)) = s.split_once('|') {
                // Rich text: two runs, and a phonetic guide that is not content.
                format!("<si><r><t>{a}</t></r><r><rPr><b/></rPr><t>{b}</t></r><rPh><t>ignored</t></rPh></si>")
            } else {
                format!("<si><t>{s}</t></si>")
            }
        })
        .collect();
    let workbook = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="{main_ns}" xmlns:r="{R_NS}"><workbookPr/><sheets>{sheet_list}</sheets></workbook>"#
    );
    let styles = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="{main_ns}"><numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy\-mm\-dd"/></numFmts><cellStyleXfs count="1"><xf numFmtId="14"/></cellStyleXfs><cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="14"/><xf numFmtId="164"/></cellXfs></styleSheet>"#
    );
    let mut all: Vec<(String, String)> = vec![
        (
            "[Content_Types].xml".into(),
            content_types(
                "xl/workbook.xml",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
            ),
        ),
        ("_rels/.rels".into(), root_rels("xl/workbook.xml")),
        ("xl/workbook.xml".into(), workbook),
        (
            "xl/_rels/workbook.xml.rels".into(),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{PKG_REL}">{rels}</Relationships>"#
            ),
        ),
        (
            "xl/sharedStrings.xml".into(),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="{main_ns}">{strings}</sst>"#
            ),
        ),
        ("xl/styles.xml".into(), styles),
        (
            "docProps/core.xml".into(),
            core_xml("Sales 2024", "Grace Hopper"),
        ),
    ];
    all.extend(parts);
    let refs: Vec<(&str, &str)> = all.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    zip_parts(&refs)
}

/// What a PDF page shows.
pub enum Page {
    /// Lines of text, one `Tj` each, 16 points apart.
    Lines(Vec<String>),
    /// A raw content stream using font `/F1` (Helvetica).
    Content(String),
    /// A full-page image and no text, like a scan.
    Image,
}

/// Writes a PDF object by object, recording offsets for the cross-reference table.
pub struct PdfWriter {
    out: Vec<u8>,
    offsets: Vec<usize>,
}

impl PdfWriter {
    pub fn new() -> Self {
        PdfWriter {
            out: b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec(),
            offsets: Vec::new(),
        }
    }

    /// Reserves the next object number.
    pub fn reserve(&mut self) -> usize {
        self.offsets.push(0);
        self.offsets.len()
    }

    pub fn object(&mut self, id: usize, body: &[u8]) {
        self.offsets[id - 1] = self.out.len();
        self.out
            .extend_from_slice(format!("{id} 0 obj\n").as_bytes());
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(b"\nendobj\n");
    }

    pub fn stream(&mut self, id: usize, dict: &str, data: &[u8]) {
        let mut body = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\nendstream");
        self.object(id, &body);
    }

    pub fn finish(mut self, root: usize, info: Option<usize>) -> Vec<u8> {
        let xref = self.out.len();
        let n = self.offsets.len() + 1;
        self.out
            .extend_from_slice(format!("xref\n0 {n}\n0000000000 65535 f \n").as_bytes());
        for offset in &self.offsets {
            self.out
                .extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
        }
        let info = info.map(|i| format!(" /Info {i} 0 R")).unwrap_or_default();
        self.out.extend_from_slice(
            format!("trailer\n<< /Size {n} /Root {root} 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n")
                .as_bytes(),
        );
        self.out
    }
}

/// Escapes a PDF literal string.
pub fn pdf_string(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('(', "\\(")
        .replace(')', "\\)")
}

/// A PDF of `pages` (Letter size), text in Helvetica, with `/Title` in its Info dictionary.
pub fn pdf(pages: &[Page], title: Option<&str>) -> Vec<u8> {
    pdf_with(pages, title, |w, content| {
        let id = w.reserve();
        w.stream(id, "", content.as_bytes());
        id
    })
}

/// Like [`pdf`], with `stream` writing each page's content stream object (to compress it).
pub fn pdf_with(
    pages: &[Page],
    title: Option<&str>,
    mut stream: impl FnMut(&mut PdfWriter, &str) -> usize,
) -> Vec<u8> {
    let mut w = PdfWriter::new();
    let catalog = w.reserve();
    let pages_id = w.reserve();
    let font = w.reserve();
    w.object(
        font,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    );
    let image = w.reserve();
    w.stream(image, "/Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray /BitsPerComponent 8", &[0x80]);
    let mut kids = Vec::new();
    for page in pages {
        let content = match page {
            Page::Lines(lines) => {
                let mut c = String::from("BT /F1 12 Tf 72 720 Td 16 TL\n");
                for (i, line) in lines.iter().enumerate() {
                    if i > 0 {
                        c.push_str("T* ");
                    }
                    c.push_str(&format!("({}) Tj\n", pdf_string(line)));
                }
                c.push_str("ET");
                c
            }
            Page::Content(c) => c.clone(),
            Page::Image => "q 612 0 0 792 0 0 cm /Im1 Do Q".to_owned(),
        };
        let content_id = stream(&mut w, &content);
        let page_id = w.reserve();
        w.object(
            page_id,
            format!(
                "<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 {font} 0 R >> /XObject << /Im1 {image} 0 R >> >> /Contents {content_id} 0 R >>"
            )
            .as_bytes(),
        );
        kids.push(format!("{page_id} 0 R"));
    }
    w.object(
        pages_id,
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            kids.len()
        )
        .as_bytes(),
    );
    w.object(
        catalog,
        format!("<< /Type /Catalog /Pages {pages_id} 0 R >>").as_bytes(),
    );
    let info = title.map(|t| {
        let id = w.reserve();
        w.object(
            id,
            format!("<< /Title ({}) /Author (Test Suite) >>", pdf_string(t)).as_bytes(),
        );
        id
    });
    w.finish(catalog, info)
}

/// A raw-deflate stream of `megabytes` MiB of zeros, built from one compressed MiB
/// repeated: each copy ends on a full flush, so copies concatenate into one valid stream
/// without compressing the whole.
pub fn deflated_zeros(megabytes: usize) -> Vec<u8> {
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    let input = vec![0u8; 1 << 20];
    let mut segment = Vec::with_capacity(4096);
    compress
        .compress_vec(&input, &mut segment, flate2::FlushCompress::Full)
        .unwrap();
    assert_eq!(
        compress.total_in(),
        input.len() as u64,
        "one call compresses the MiB"
    );
    let mut out = Vec::with_capacity(segment.len() * megabytes + 2);
    for _ in 0..megabytes {
        out.extend_from_slice(&segment);
    }
    // An empty final block with fixed Huffman codes ends the stream.
    out.extend_from_slice(&[0x03, 0x00]);
    out
}

/// A zlib wrapper around a raw deflate stream (PDF's FlateDecode), with a dummy checksum
/// that decoders stop before reaching when they hit a limit.
pub fn zlib_wrap(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x9C];
    out.extend_from_slice(raw);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// A zip written by hand so an entry can carry any compressed data and declare any size:
/// `parts` are stored as they are, then `name` holds the raw deflate `data` declaring
/// `declared` bytes (and a CRC that readers stopping early never check).
pub fn zip_with_raw_entry(
    parts: &[(&str, &str)],
    name: &str,
    data: &[u8],
    declared: u32,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut count = 0u16;
    let mut add = |out: &mut Vec<u8>, name: &str, method: u16, crc: u32, data: &[u8], size: u32| {
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&sig.to_le_bytes());
            if central {
                h.extend_from_slice(&20u16.to_le_bytes());
            }
            h.extend_from_slice(&20u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&method.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0x21u16.to_le_bytes());
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            if central {
                h.extend_from_slice(&[0; 6]);
                h.extend_from_slice(&0u32.to_le_bytes());
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend_from_slice(&header(0x0403_4b50, false));
        out.extend_from_slice(data);
        central.extend_from_slice(&header(0x0201_4b50, true));
        count += 1;
    };
    for (part, body) in parts {
        let mut crc = flate2::Crc::new();
        crc.update(body.as_bytes());
        add(
            &mut out,
            part,
            0,
            crc.sum(),
            body.as_bytes(),
            body.len() as u32,
        );
    }
    add(&mut out, name, 8, 0xDEAD_BEEF, data, declared);
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A real 1×1 PNG (the smallest valid one: signature, IHDR, IDAT, IEND).
pub fn png() -> Vec<u8> {
    const HEX: &str = "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082";
    (0..HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&HEX[i..i + 2], 16).unwrap())
        .collect()
}

/// The first bytes of an image of each other kind docling-serve reads, as a camera or a
/// scanner writes them (sniffing looks no further).
pub fn image_heads() -> Vec<(&'static str, Vec<u8>)> {
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&70u32.to_le_bytes());
    bmp.extend_from_slice(&[0, 0, 0, 0]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&[0; 52]);
    let mut webp = b"RIFF".to_vec();
    webp.extend_from_slice(&26u32.to_le_bytes());
    webp.extend_from_slice(b"WEBPVP8L");
    webp.extend_from_slice(&[0; 14]);
    vec![
        ("png", png()),
        (
            "jpeg",
            [&b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00"[..], &[0; 32]].concat(),
        ),
        ("tiff", [&b"II*\x00\x08\x00\x00\x00"[..], &[0; 32]].concat()),
        ("tiff", [&b"MM\x00*\x00\x00\x00\x08"[..], &[0; 32]].concat()),
        ("bmp", bmp),
        ("webp", webp),
    ]
}

const SECTOR: usize = 512;
const END_OF_CHAIN: u32 = 0xFFFF_FFFE;
const FAT_SECTOR: u32 = 0xFFFF_FFFD;
const FREE_SECTOR: u32 = 0xFFFF_FFFF;

/// A version 3 compound file whose root holds `streams`, each padded with zeros to the
/// 4 KiB below which streams would go to the mini stream: the data sectors, then the
/// directory (a root entry and one entry per stream, chained as right siblings), then the
/// allocation table.
pub fn compound_file(streams: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut fat: Vec<u32> = Vec::new();
    let mut starts = Vec::new();
    for (_, bytes) in streams {
        let sectors = bytes.len().max(4096).div_ceil(SECTOR);
        starts.push((fat.len() as u32, bytes.len().max(4096)));
        let first = fat.len() as u32;
        fat.extend((1..sectors as u32).map(|i| first + i));
        fat.push(END_OF_CHAIN);
        data.extend_from_slice(bytes);
        data.resize(fat.len() * SECTOR, 0);
    }
    let mut directory = Vec::new();
    let entry = |name: &str, kind: u8, right: u32, child: u32, start: u32, size: usize| {
        let mut e = vec![0u8; 128];
        let units: Vec<u16> = name.encode_utf16().collect();
        for (i, unit) in units.iter().enumerate() {
            e[2 * i..2 * i + 2].copy_from_slice(&unit.to_le_bytes());
        }
        e[64..66].copy_from_slice(&(2 * units.len() as u16 + 2).to_le_bytes());
        e[66] = kind;
        e[67] = 1;
        e[68..72].copy_from_slice(&FREE_SECTOR.to_le_bytes());
        e[72..76].copy_from_slice(&right.to_le_bytes());
        e[76..80].copy_from_slice(&child.to_le_bytes());
        e[116..120].copy_from_slice(&start.to_le_bytes());
        e[120..128].copy_from_slice(&(size as u64).to_le_bytes());
        e
    };
    directory.extend(entry("Root Entry", 5, FREE_SECTOR, 1, END_OF_CHAIN, 0));
    for (i, ((name, _), &(start, size))) in streams.iter().zip(&starts).enumerate() {
        let right = if i + 1 < streams.len() {
            i as u32 + 2
        } else {
            FREE_SECTOR
        };
        directory.extend(entry(name, 2, right, FREE_SECTOR, start, size));
    }
    directory.resize(directory.len().div_ceil(SECTOR) * SECTOR, 0);
    let directory_start = fat.len() as u32;
    let directory_sectors = directory.len() / SECTOR;
    fat.extend((1..directory_sectors as u32).map(|i| directory_start + i));
    fat.push(END_OF_CHAIN);
    // The table describes its own sectors too: 128 entries a sector.
    let fat_sectors = (fat.len() + 1).div_ceil(SECTOR / 4 - 1);
    assert!(
        fat_sectors <= 109,
        "no DIFAT sectors are written: about 7 MB at most"
    );
    let fat_start = fat.len() as u32;
    fat.extend(std::iter::repeat_n(FAT_SECTOR, fat_sectors));
    fat.resize(fat_sectors * SECTOR / 4, FREE_SECTOR);

    let mut file = vec![0u8; SECTOR];
    file[..8].copy_from_slice(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]);
    file[24..26].copy_from_slice(&0x3Eu16.to_le_bytes());
    file[26..28].copy_from_slice(&3u16.to_le_bytes());
    file[28..30].copy_from_slice(&0xFFFEu16.to_le_bytes());
    file[30..32].copy_from_slice(&9u16.to_le_bytes());
    file[32..34].copy_from_slice(&6u16.to_le_bytes());
    file[44..48].copy_from_slice(&(fat_sectors as u32).to_le_bytes());
    file[48..52].copy_from_slice(&directory_start.to_le_bytes());
    file[56..60].copy_from_slice(&4096u32.to_le_bytes());
    file[60..64].copy_from_slice(&END_OF_CHAIN.to_le_bytes());
    file[68..72].copy_from_slice(&END_OF_CHAIN.to_le_bytes());
    for i in 0..109 {
        let id = if i < fat_sectors {
            fat_start + i as u32
        } else {
            FREE_SECTOR
        };
        file[76 + 4 * i..80 + 4 * i].copy_from_slice(&id.to_le_bytes());
    }
    file.extend(data);
    file.extend(directory);
    file.extend(fat.iter().flat_map(|v| v.to_le_bytes()));
    file
}

/// Where a bare Word document's FIB says the piece table is (`fcClx`) and how long it is.
pub const DOC_FC_CLX: usize = 154 + 33 * 8;
/// Where its FIB says how many characters the main text has (`ccpText`).
pub const DOC_CCP_TEXT: usize = 62 + 2 + 3 * 4;
/// Where its text begins in the `WordDocument` stream, as UTF-16.
pub const DOC_TEXT_AT: usize = 1024;

/// A Word 97 document of `text` and nothing else (no styles, no paragraph or character
/// properties, no summary): a FIB, the text as one UTF-16 piece, the piece table in
/// `0Table`. Control characters in `text` are Word's: `\r` ends a paragraph, `\x07` a cell.
pub fn word_document(text: &str) -> Vec<u8> {
    let (word, table) = word_streams(text);
    compound_file(&[("WordDocument", &word), ("0Table", &table)])
}

/// The `WordDocument` and `0Table` streams of [`word_document`], to change before they are
/// put in a compound file.
pub fn word_streams(text: &str) -> (Vec<u8>, Vec<u8>) {
    let units: Vec<u16> = text.encode_utf16().collect();
    let mut word = vec![0u8; DOC_TEXT_AT];
    word[0..2].copy_from_slice(&0xA5ECu16.to_le_bytes());
    word[2..4].copy_from_slice(&0x00C1u16.to_le_bytes());
    word[32..34].copy_from_slice(&14u16.to_le_bytes());
    word[62..64].copy_from_slice(&22u16.to_le_bytes());
    word[DOC_CCP_TEXT..DOC_CCP_TEXT + 4].copy_from_slice(&(units.len() as u32).to_le_bytes());
    word[152..154].copy_from_slice(&93u16.to_le_bytes());
    word.extend(units.iter().flat_map(|u| u.to_le_bytes()));
    let mut table = vec![0x02];
    table.extend(16u32.to_le_bytes());
    table.extend(0u32.to_le_bytes());
    table.extend((units.len() as u32).to_le_bytes());
    table.extend([0, 0]);
    table.extend((DOC_TEXT_AT as u32).to_le_bytes());
    table.extend([0, 0]);
    word[DOC_FC_CLX..DOC_FC_CLX + 4].copy_from_slice(&0u32.to_le_bytes());
    word[DOC_FC_CLX + 4..DOC_FC_CLX + 8].copy_from_slice(&(table.len() as u32).to_le_bytes());
    (word, table)
}
