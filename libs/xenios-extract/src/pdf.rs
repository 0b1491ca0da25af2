//! PDF text layer, with lopdf for the file structure (bounded stream decompression) and
//! our own walk of each page's content: text positions decide where lines break and
//! where words are spaced, from glyph widths where the font gives them.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use lopdf::content::Content;
use lopdf::{DecompressError, Dictionary, Document, Encoding, LoadOptions, Object, ObjectId};
use serde_json::Value;

use crate::blocks::Blocks;
use crate::limits::{Clock, Ctx};
use crate::{DocumentFormat, ExtractError, Extracted};

/// Form XObjects drawn inside form XObjects: deeper nesting is not followed.
const MAX_FORM_DEPTH: usize = 8;

pub(crate) fn extract(bytes: &[u8], cx: &mut Ctx) -> Result<Extracted, ExtractError> {
    let limit = cx.max_decompressed();
    let options = LoadOptions {
        max_decompressed_size: Some(limit),
        ..LoadOptions::default()
    };
    let doc = guarded(|| Document::load_mem_with_options(bytes, options))?.map_err(load_error)?;
    cx.clock.check()?;

    let max_pages = cx.opts.max_pages as usize;
    let pages: Vec<ObjectId> = guarded(|| doc.page_iter().take(max_pages + 1).collect())?;
    if pages.len() > max_pages {
        return Err(ExtractError::too_large(format!(
            "the PDF has more than {max_pages} pages"
        )));
    }
    if pages.is_empty() {
        return Err(ExtractError::corrupt("the PDF has no pages"));
    }
    let page_count = pages.len() as u32;

    let mut blocks = Blocks::new(cx.out(), cx.markdown());
    let mut chars = 0usize;
    let (mut image_only_pages, mut unreadable_pages) = (0u32, 0u32);
    let max_page_bytes = cx.opts.max_output_chars.saturating_mul(4);
    // One reader for all pages, so fonts shared by pages are decoded once.
    let mut reader = PageReader::new(&doc, limit, max_page_bytes);
    for page in pages {
        cx.clock.check()?;
        reader.start_page();
        let result = guarded(|| reader.page(page, &mut cx.clock)).and_then(|r| r);
        match result {
            Ok(()) => {
                let text = std::mem::take(&mut reader.text);
                let n = text.chars().filter(|c| !c.is_whitespace()).count();
                if n == 0 && reader.saw_image {
                    image_only_pages += 1;
                }
                chars += n;
                blocks.raw(text.trim_matches('\n'))?;
            }
            Err(e @ (ExtractError::TooLarge(_) | ExtractError::Timeout)) => return Err(e),
            // One damaged page does not cost the others.
            Err(_) => unreadable_pages += 1,
        }
    }
    if unreadable_pages == page_count {
        return Err(ExtractError::corrupt("no page of the PDF could be read"));
    }
    if chars == 0 || image_only_pages * 2 > page_count {
        return Err(ExtractError::OcrRequired(format!(
            "the PDF has {page_count} page(s) but no text layer"
        )));
    }

    let mut extracted = Extracted::new(blocks.into_string(), cx.opts.output, DocumentFormat::Pdf);
    extracted.pages = Some(page_count);
    let info = |key: &[u8]| guarded(|| info_string(&doc, key)).ok().flatten();
    extracted.title = info(b"Title");
    extracted.set_author(info(b"Author"));
    extracted
        .metadata
        .insert("pdf_version".into(), Value::String(doc.version.clone()));
    if unreadable_pages > 0 {
        extracted
            .metadata
            .insert("unreadable_pages".into(), Value::from(unreadable_pages));
    }
    Ok(extracted)
}

/// Runs PDF-library code that may panic on hostile input.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ExtractError> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| ExtractError::corrupt("the PDF parser failed on this document"))
}

fn load_error(e: lopdf::Error) -> ExtractError {
    match e {
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { limit }) => {
            ExtractError::too_large(format!("a PDF stream decompresses past {limit} bytes"))
        }
        lopdf::Error::Decryption(_)
        | lopdf::Error::InvalidPassword
        | lopdf::Error::UnsupportedSecurityHandler(_) => {
            ExtractError::UnsupportedFormat("the PDF is encrypted with a password".into())
        }
        e => ExtractError::corrupt(format!("unreadable PDF: {e}")),
    }
}

fn page_error(e: lopdf::Error) -> ExtractError {
    match e {
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { limit }) => {
            ExtractError::too_large(format!("a PDF stream decompresses past {limit} bytes"))
        }
        e => ExtractError::corrupt(format!("unreadable page: {e}")),
    }
}

fn info_string(doc: &Document, key: &[u8]) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let info = doc.dereference(info).ok()?.1.as_dict().ok()?;
    let value = doc.dereference(info.get(key).ok()?).ok()?.1;
    let text = lopdf::decode_text_string(value).ok()?;
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// How a font turns string bytes into text and advances.
struct Font<'a> {
    encoding: Encoding<'a>,
    /// Composite (Type0) fonts use two-byte codes here; their widths come from `W`.
    two_byte: bool,
    first_char: u32,
    widths: Vec<f32>,
    cid_widths: HashMap<u32, f32>,
    default_width: f32,
}

impl Font<'_> {
    /// Advance of `code` in text space units per unit of font size.
    fn width(&self, code: u32) -> f32 {
        let w = if self.two_byte {
            self.cid_widths.get(&code).copied()
        } else {
            code.checked_sub(self.first_char)
                .and_then(|i| self.widths.get(i as usize))
                .copied()
        };
        w.filter(|w| *w > 0.0).unwrap_or(self.default_width) / 1000.0
    }
}

/// Resource dictionaries in look-up order: a form's own, then its page's.
type Scope<'a> = Vec<&'a Dictionary>;

type Matrix = [f32; 6];
const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

/// `m` translated by (tx, ty) in its own space: the text matrix after a `Td`.
fn translate(m: &Matrix, tx: f32, ty: f32) -> Matrix {
    [
        m[0],
        m[1],
        m[2],
        m[3],
        tx * m[0] + ty * m[2] + m[4],
        tx * m[1] + ty * m[3] + m[5],
    ]
}

/// Where the previous string ended, to decide the separator before the next.
struct Last {
    x_start: f32,
    x_end: f32,
    y: f32,
    size: f32,
}

struct PageReader<'a> {
    doc: &'a Document,
    limit: usize,
    max_bytes: usize,
    text: String,
    saw_image: bool,
    /// Decoded fonts by the address of their dictionary, which the document owns.
    fonts: HashMap<usize, Rc<Font<'a>>>,
    font: Option<Rc<Font<'a>>>,
    size: f32,
    leading: f32,
    char_spacing: f32,
    word_spacing: f32,
    h_scale: f32,
    tlm: Matrix,
    tm: Matrix,
    last: Option<Last>,
    forms: HashSet<ObjectId>,
}

impl<'a> PageReader<'a> {
    fn new(doc: &'a Document, limit: usize, max_bytes: usize) -> Self {
        PageReader {
            doc,
            limit,
            max_bytes,
            text: String::new(),
            saw_image: false,
            fonts: HashMap::new(),
            font: None,
            size: 0.0,
            leading: 0.0,
            char_spacing: 0.0,
            word_spacing: 0.0,
            h_scale: 1.0,
            tlm: IDENTITY,
            tm: IDENTITY,
            last: None,
            forms: HashSet::new(),
        }
    }

    fn start_page(&mut self) {
        self.text.clear();
        self.saw_image = false;
        self.font = None;
        self.size = 0.0;
        self.leading = 0.0;
        self.char_spacing = 0.0;
        self.word_spacing = 0.0;
        self.h_scale = 1.0;
        self.tlm = IDENTITY;
        self.tm = IDENTITY;
        self.last = None;
        self.forms.clear();
    }

    fn page(&mut self, page: ObjectId, clock: &mut Clock) -> Result<(), ExtractError> {
        let doc = self.doc;
        let (direct, ids) = doc.get_page_resources(page).map_err(page_error)?;
        let mut scope: Scope<'a> = direct.into_iter().collect();
        scope.extend(ids.into_iter().filter_map(|id| doc.get_dictionary(id).ok()));
        let content = doc
            .get_page_content_with_limit(page, self.limit)
            .map_err(page_error)?;
        self.run(&content, &scope, 0, clock)
    }

    fn run(
        &mut self,
        content: &[u8],
        scope: &Scope<'a>,
        depth: usize,
        clock: &mut Clock,
    ) -> Result<(), ExtractError> {
        for op in Content::decode_iter(content) {
            clock.tick()?;
            // A content stream that goes bad midway keeps what was read before.
            let Ok(op) = op else { break };
            let n = |i: usize| op.operands.get(i).and_then(number).unwrap_or(0.0);
            match op.operator.as_str() {
                "BT" => {
                    self.tlm = IDENTITY;
                    self.tm = IDENTITY;
                }
                "Tf" => {
                    self.size = n(1);
                    self.font = match op.operands.first() {
                        Some(Object::Name(name)) => self.font(scope, name)?,
                        _ => None,
                    };
                }
                "Td" => self.move_line(n(0), n(1)),
                "TD" => {
                    self.leading = -n(1);
                    self.move_line(n(0), n(1));
                }
                "T*" => self.move_line(0.0, -self.leading),
                "TL" => self.leading = n(0),
                "Tc" => self.char_spacing = n(0),
                "Tw" => self.word_spacing = n(0),
                "Tz" => self.h_scale = n(0) / 100.0,
                "Tm" => {
                    self.tlm = [n(0), n(1), n(2), n(3), n(4), n(5)];
                    self.tm = self.tlm;
                }
                "Tj" => self.show_operand(op.operands.first())?,
                "'" => {
                    self.move_line(0.0, -self.leading);
                    self.show_operand(op.operands.first())?;
                }
                "\"" => {
                    self.word_spacing = n(0);
                    self.char_spacing = n(1);
                    self.move_line(0.0, -self.leading);
                    self.show_operand(op.operands.get(2))?;
                }
                "TJ" => {
                    let Some(Object::Array(items)) = op.operands.first() else {
                        continue;
                    };
                    for item in items {
                        match item {
                            Object::String(bytes, _) => self.show(bytes)?,
                            other => {
                                // A shift of more than a fifth of an em is a word gap.
                                let shift = number(other).unwrap_or(0.0) / 1000.0;
                                self.advance(-shift * self.size * self.h_scale);
                            }
                        }
                    }
                }
                "BI" => self.saw_image = true,
                "Do" => {
                    if let Some(Object::Name(name)) = op.operands.first() {
                        self.draw(scope, name, depth, clock)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn move_line(&mut self, tx: f32, ty: f32) {
        self.tlm = translate(&self.tlm, tx, ty);
        self.tm = self.tlm;
    }

    fn advance(&mut self, tx: f32) {
        self.tm = translate(&self.tm, tx, 0.0);
    }

    fn font(
        &mut self,
        scope: &Scope<'a>,
        name: &[u8],
    ) -> Result<Option<Rc<Font<'a>>>, ExtractError> {
        let doc = self.doc;
        let Some(dict) = lookup(doc, scope, b"Font", name).and_then(|o| o.as_dict().ok()) else {
            return Ok(None);
        };
        let key = dict as *const Dictionary as usize;
        if let Some(font) = self.fonts.get(&key) {
            return Ok(Some(font.clone()));
        }
        let font = Rc::new(load_font(doc, dict, self.limit)?);
        self.fonts.insert(key, font.clone());
        Ok(Some(font))
    }

    fn show_operand(&mut self, operand: Option<&Object>) -> Result<(), ExtractError> {
        match operand {
            Some(Object::String(bytes, _)) => self.show(bytes),
            _ => Ok(()),
        }
    }

    fn show(&mut self, bytes: &[u8]) -> Result<(), ExtractError> {
        let Some(font) = self.font.clone() else {
            return Ok(());
        };
        let decoded = font.encoding.bytes_to_string(bytes).unwrap_or_default();
        let text: String = decoded
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .map(|c| if c == '\u{a0}' || c == '\t' { ' ' } else { c })
            .collect();

        let scale_y = self.tm[2].hypot(self.tm[3]);
        let size = (self.size * scale_y).abs().max(0.1);
        let (x, y) = (self.tm[4], self.tm[5]);
        if let Some(last) = &self.last {
            let line = size.max(last.size);
            let dy = (y - last.y).abs();
            if dy > line * 1.8 {
                self.separate("\n\n");
            } else if dy > line * 0.5 {
                self.separate("\n");
            } else if (x - last.x_end > size * 0.15 || x < last.x_start - size * 0.5)
                && !text.starts_with(' ')
            {
                self.separate(" ");
            }
        }
        self.text.push_str(&text);
        if self.text.len() > self.max_bytes {
            return Err(ExtractError::too_large(
                "a PDF page holds more text than the output limit",
            ));
        }

        let codes: Box<dyn Iterator<Item = u32>> = if font.two_byte {
            Box::new(
                bytes
                    .chunks(2)
                    .map(|c| c.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b))),
            )
        } else {
            Box::new(bytes.iter().map(|b| u32::from(*b)))
        };
        let mut tx = 0.0;
        for code in codes {
            let word = if !font.two_byte && code == 32 {
                self.word_spacing
            } else {
                0.0
            };
            tx += (font.width(code) * self.size + self.char_spacing + word) * self.h_scale;
        }
        self.advance(tx);
        self.last = Some(Last {
            x_start: x,
            x_end: self.tm[4],
            y,
            size,
        });
        Ok(())
    }

    /// Ends the current word (" "), line ("\n") or paragraph ("\n\n"), never doubling
    /// a separator already there.
    fn separate(&mut self, sep: &str) {
        while self.text.ends_with(' ') {
            self.text.pop();
        }
        if self.text.is_empty() || self.text.ends_with("\n\n") {
            return;
        }
        match sep {
            " " if self.text.ends_with('\n') => {}
            "\n" if self.text.ends_with('\n') => {}
            "\n\n" if self.text.ends_with('\n') => self.text.push('\n'),
            sep => self.text.push_str(sep),
        }
    }

    /// `Do`: an image marks the page as having one; a form's content is read in place,
    /// each form once per page.
    fn draw(
        &mut self,
        scope: &Scope<'a>,
        name: &[u8],
        depth: usize,
        clock: &mut Clock,
    ) -> Result<(), ExtractError> {
        let doc = self.doc;
        let id = match lookup_entry(doc, scope, b"XObject", name) {
            Some(Object::Reference(id)) => Some(*id),
            _ => None,
        };
        let Some(stream) = lookup(doc, scope, b"XObject", name).and_then(|o| o.as_stream().ok())
        else {
            return Ok(());
        };
        match stream.dict.get(b"Subtype").and_then(Object::as_name) {
            Ok(b"Image") => self.saw_image = true,
            Ok(b"Form") if depth < MAX_FORM_DEPTH => {
                if let Some(id) = id {
                    if !self.forms.insert(id) {
                        return Ok(());
                    }
                }
                let content = stream
                    .get_plain_content_with_limit(self.limit)
                    .map_err(page_error)?;
                let mut inner: Scope<'a> = Vec::new();
                if let Some(own) = stream
                    .dict
                    .get(b"Resources")
                    .ok()
                    .and_then(|r| doc.dereference(r).ok())
                    .and_then(|(_, r)| r.as_dict().ok())
                {
                    inner.push(own);
                }
                inner.extend(scope.iter().copied());
                // Text inside a form is positioned in the form's own space.
                let saved = (self.tlm, self.tm, self.last.take());
                self.separate("\n");
                self.run(&content, &inner, depth + 1, clock)?;
                self.separate("\n");
                (self.tlm, self.tm, self.last) = saved;
            }
            _ => {}
        }
        Ok(())
    }
}

fn number(o: &Object) -> Option<f32> {
    match o {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) if r.is_finite() => Some(*r),
        _ => None,
    }
}

/// The entry `name` of the resource category `category` (`Font`, `XObject`), as written.
fn lookup_entry<'a>(
    doc: &'a Document,
    scope: &Scope<'a>,
    category: &[u8],
    name: &[u8],
) -> Option<&'a Object> {
    scope.iter().find_map(|resources| {
        let dict = doc
            .dereference(resources.get(category).ok()?)
            .ok()?
            .1
            .as_dict()
            .ok()?;
        dict.get(name).ok()
    })
}

fn lookup<'a>(
    doc: &'a Document,
    scope: &Scope<'a>,
    category: &[u8],
    name: &[u8],
) -> Option<&'a Object> {
    let entry = lookup_entry(doc, scope, category, name)?;
    doc.dereference(entry).ok().map(|(_, o)| o)
}

fn load_font<'a>(
    doc: &'a Document,
    dict: &'a Dictionary,
    limit: usize,
) -> Result<Font<'a>, ExtractError> {
    let encoding = dict
        .get_font_encoding_with_limit(doc, limit)
        .map_err(page_error)?;
    let deref = |o: &'a Object| doc.dereference(o).ok().map(|(_, o)| o);
    let get = |d: &'a Dictionary, key: &[u8]| d.get(key).ok().and_then(deref);
    let two_byte = matches!(dict.get(b"Subtype").and_then(Object::as_name), Ok(b"Type0"));
    let mut font = Font {
        encoding,
        two_byte,
        first_char: 0,
        widths: Vec::new(),
        cid_widths: HashMap::new(),
        default_width: if two_byte { 1000.0 } else { 500.0 },
    };
    if two_byte {
        let descendant = get(dict, b"DescendantFonts")
            .and_then(|o| o.as_array().ok())
            .and_then(|a| a.first())
            .and_then(deref)
            .and_then(|o| o.as_dict().ok());
        if let Some(cid) = descendant {
            if let Some(dw) = get(cid, b"DW").and_then(number) {
                font.default_width = dw;
            }
            if let Some(Object::Array(w)) = get(cid, b"W") {
                font.cid_widths = cid_widths(w, &deref);
            }
        }
    } else {
        font.first_char = get(dict, b"FirstChar")
            .and_then(number)
            .unwrap_or(0.0)
            .max(0.0) as u32;
        if let Some(Object::Array(widths)) = get(dict, b"Widths") {
            font.widths = widths
                .iter()
                .take(65_536)
                .map(|w| deref(w).and_then(number).unwrap_or(0.0))
                .collect();
        }
    }
    Ok(font)
}

/// The `W` array of a CID font: `c [w1 w2 …]` or `c_first c_last w`, bounded so a
/// hostile range cannot fill memory, and its work bounded too: ranges that cover the same
/// codes again and again would otherwise keep the loop busy without growing the map.
fn cid_widths<'a>(
    w: &'a [Object],
    deref: &impl Fn(&'a Object) -> Option<&'a Object>,
) -> HashMap<u32, f32> {
    const MAX: usize = 65_536;
    const MAX_WRITES: usize = 4 * MAX;
    let mut writes = 0usize;
    let mut widths = HashMap::new();
    let mut items = w.iter().filter_map(deref).peekable();
    while let Some(first) = items.next() {
        let Some(first) = number(first).map(|f| f as u32) else {
            break;
        };
        match items.next() {
            Some(Object::Array(list)) => {
                for (i, w) in list.iter().enumerate().take(MAX) {
                    if let Some(w) = deref(w).and_then(number) {
                        widths.insert(first.saturating_add(i as u32), w);
                    }
                }
                writes = writes.saturating_add(list.len().min(MAX));
            }
            Some(last) => {
                let Some(last) = number(last).map(|l| l as u32) else {
                    break;
                };
                let Some(w) = items.next().and_then(number) else {
                    break;
                };
                for code in (first..=last).take(MAX) {
                    widths.insert(code, w);
                }
                writes = writes.saturating_add((last.saturating_sub(first) as usize + 1).min(MAX));
            }
            None => break,
        }
        if widths.len() >= MAX || writes >= MAX_WRITES {
            break;
        }
    }
    widths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_width_range_repeated_costs_bounded_work() {
        // 1 MB of `0 65534 1`: each triple covers the same 65 535 codes again.
        let w: Vec<Object> = (0..100_000)
            .flat_map(|_| {
                [
                    Object::Integer(0),
                    Object::Integer(65_534),
                    Object::Integer(1),
                ]
            })
            .collect();
        let started = std::time::Instant::now();
        let widths = cid_widths(&w, &|o| Some(o));
        assert_eq!(widths.len(), 65_535);
        assert_eq!(widths.get(&7), Some(&1.0));
        // Unbounded, this was 6.5 billion map writes: minutes, not moments.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
