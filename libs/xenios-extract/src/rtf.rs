//! RTF (Rich Text Format, as Word, WordPad, TextEdit and LibreOffice write it): the token
//! stream ([`tokens`]) read once with a stack of group states, no recursion. Paragraphs,
//! headings (by outline level or a "heading N" style), list items (their `\listtext` says
//! bullet or number, and is not copied into the text), tables (`\cell`, `\row`), hyperlink
//! fields as Markdown links, text boxes. 8-bit text is decoded through the document's code
//! page or the font's character set; `\uN` is read with its fallback skipped. Title and author
//! from `\info`. Left out: font, colour and style tables, pictures and embedded objects (but
//! not an object's `\result`), headers, footers, footnotes, annotations, hidden and deleted
//! text, field instructions, and every `\*` destination this reader does not know.

pub(crate) mod codepage;
pub(crate) mod layout;
mod tokens;

use std::collections::HashMap;

use encoding_rs::{Encoding, WINDOWS_1252};

use crate::blocks::Blocks;
use crate::docx::heading_from_name;
use crate::limits::Ctx;
use crate::{DocumentFormat, ExtractError, Extracted};
use layout::{Anchor, Layout, Role};
use tokens::{Token, Tokens};

/// Groups open at once, at most: the state of each is held until it closes.
const MAX_DEPTH: usize = 1024;
/// Characters kept of a title, an author, a style name, a field instruction or a list text.
const MAX_PROPERTY_CHARS: usize = 1000;
/// Fonts and heading styles remembered, at most.
const MAX_DEFINITIONS: usize = 4096;
/// Undecoded bytes past which they are decoded at the next ASCII byte (a double-byte code
/// page's characters must not be cut in two).
const MAX_PENDING_BYTES: usize = 64 * 1024;

/// Destinations that hold no running text: skipped with everything in them.
const SKIPPED: &[&str] = &[
    "aftncn",
    "aftnsep",
    "aftnsepc",
    "annotation",
    "atnauthor",
    "atndate",
    "atnid",
    "atnref",
    "atrfend",
    "atrfstart",
    "background",
    "bkmkend",
    "bkmkstart",
    "colorschememapping",
    "colortbl",
    "datafield",
    "datastore",
    "defchp",
    "defpap",
    "do",
    "docvar",
    "filetbl",
    "fldtype",
    "fontemb",
    "fontfile",
    "footer",
    "footerf",
    "footerl",
    "footerr",
    "footnote",
    "formfield",
    "ftncn",
    "ftnsep",
    "ftnsepc",
    "generator",
    "header",
    "headerf",
    "headerl",
    "headerr",
    "latentstyles",
    "listoverridetable",
    "listpicture",
    "listtable",
    "nesttableprops",
    "nonshppict",
    "objdata",
    "pgdsctbl",
    "pict",
    "pn",
    "pntxta",
    "pntxtb",
    "private",
    "revtbl",
    "rsidtbl",
    "shprslt",
    "tc",
    "template",
    "themedata",
    "userprops",
    "xe",
    "xmlnstbl",
];

pub(crate) fn extract(bytes: &[u8], cx: &mut Ctx) -> Result<Extracted, ExtractError> {
    let rtf = start(bytes)
        .ok_or_else(|| ExtractError::corrupt("the document does not begin with {\\rtf"))?;
    let blocks = Blocks::new(cx.out(), cx.markdown());
    let layout = Layout::new(blocks, cx.markdown(), cx.opts.max_output_chars);
    let mut reader = Reader::new(layout);
    for token in Tokens::new(rtf) {
        cx.clock.tick()?;
        // What follows the document's closing brace is not part of it.
        if reader.token(token)? == Flow::Done {
            break;
        }
    }
    let document = reader.finish()?;
    let mut extracted = Extracted::new(document.content, cx.opts.output, DocumentFormat::Rtf);
    extracted.title = document.title;
    extracted.set_author(document.author);
    Ok(extracted)
}

/// The document from its opening `{\rtf` on, when that is how `bytes` begin (after a UTF-8
/// byte-order mark and white space, which readers tolerate).
pub(crate) fn start(bytes: &[u8]) -> Option<&[u8]> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let at = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = bytes.get(at..)?;
    rest.starts_with(b"{\\rtf").then_some(rest)
}

/// What a group's text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// The document's running text.
    Body,
    /// Not text: dropped with everything inside, whatever destinations it names.
    Skip,
    FontTable,
    Stylesheet,
    /// One style of the stylesheet: its name is its text.
    Style,
    /// Document properties: dropped, but for the title and author inside.
    Info,
    Title,
    Author,
    /// A list paragraph's bullet or number.
    ListText,
    FieldInstruction,
    /// An object or shape: dropped, but for its `\result` or `\shptxt`, which are body text.
    Wrapper,
}

impl Dest {
    fn holds_text(self) -> bool {
        !matches!(
            self,
            Dest::Skip | Dest::FontTable | Dest::Stylesheet | Dest::Info | Dest::Wrapper
        )
    }
}

/// Paragraph formatting, reset by `\pard`.
#[derive(Debug, Clone, Copy, Default)]
struct ParagraphProps {
    style: i32,
    outline_level: Option<i32>,
    /// `\lsN`: the list the paragraph belongs to; 0 for none.
    list: i32,
    list_level: i32,
    in_table: bool,
}

/// The state a group starts with a copy of, and that its end restores.
#[derive(Debug, Clone, Copy)]
struct Group {
    dest: Dest,
    /// `\ucN`: fallback characters that follow each `\uN`.
    unicode_skip: usize,
    font: Option<i32>,
    hidden: bool,
    deleted: bool,
    paragraph: ParagraphProps,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            dest: Dest::Body,
            unicode_skip: 1,
            font: None,
            hidden: false,
            deleted: false,
            paragraph: ParagraphProps::default(),
        }
    }
}

#[derive(Default)]
struct StyleDef {
    number: i32,
    /// False for character, section and table styles, which make no headings.
    paragraph: bool,
    outline_level: Option<i32>,
    name: String,
}

struct Field {
    /// Groups open around the `\field` word: the field ends when fewer are.
    depth: usize,
    instruction: String,
    /// Where the field's visible text began, once its `\fldrslt` has.
    result: Option<Anchor>,
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The document's outermost group has closed.
    Done,
}

struct Document {
    content: String,
    title: Option<String>,
    author: Option<String>,
}

struct Reader {
    layout: Layout,
    current: Group,
    /// The states of the enclosing groups, innermost last.
    saved: Vec<Group>,
    /// `\*` was the last token: the control word after it names a destination that is
    /// skipped unless this reader knows it.
    starred: bool,
    /// Fallback characters of the last `\uN` still to skip.
    fallback: usize,
    high_surrogate: Option<u32>,
    /// Text bytes not yet decoded: a double-byte character may span two tokens.
    pending: Vec<u8>,
    code_page: &'static Encoding,
    default_font: Option<i32>,
    fonts: HashMap<i32, &'static Encoding>,
    /// The font the font table is describing.
    font_defined: Option<i32>,
    heading_styles: HashMap<i32, usize>,
    style: Option<StyleDef>,
    /// Open fields, innermost last.
    fields: Vec<Field>,
    list_text: String,
    title: String,
    author: String,
}

impl Reader {
    fn new(layout: Layout) -> Self {
        Reader {
            layout,
            current: Group::default(),
            saved: Vec::new(),
            starred: false,
            fallback: 0,
            high_surrogate: None,
            pending: Vec::new(),
            code_page: WINDOWS_1252,
            default_font: None,
            fonts: HashMap::new(),
            font_defined: None,
            heading_styles: HashMap::new(),
            style: None,
            fields: Vec::new(),
            list_text: String::new(),
            title: String::new(),
            author: String::new(),
        }
    }

    fn token(&mut self, token: Token) -> Result<Flow, ExtractError> {
        match token {
            Token::Text(bytes) => return self.text_bytes(bytes),
            Token::Byte(byte) => return self.text_bytes(&[byte]),
            _ => self.flush()?,
        }
        let starred = std::mem::take(&mut self.starred);
        match token {
            Token::GroupStart => {
                self.fallback = 0;
                self.open_group()?;
            }
            Token::GroupEnd => {
                self.fallback = 0;
                return self.close_group();
            }
            // A control word or symbol counts as one fallback character.
            _ if self.skip_fallback() => {}
            Token::Word(name, param) => self.word(name, param, starred)?,
            Token::Symbol(symbol) => self.symbol(symbol)?,
            _ => {}
        }
        Ok(Flow::Continue)
    }

    /// Takes one fallback character, if `\uN` left any to skip.
    fn skip_fallback(&mut self) -> bool {
        let skip = self.fallback > 0;
        self.fallback = self.fallback.saturating_sub(1);
        skip
    }

    fn text_bytes(&mut self, bytes: &[u8]) -> Result<Flow, ExtractError> {
        self.starred = false;
        let skipped = self.fallback.min(bytes.len());
        self.fallback -= skipped;
        let bytes = bytes.get(skipped..).unwrap_or_default();
        if bytes.is_empty() || !self.collects_text() {
            return Ok(Flow::Continue);
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > MAX_PENDING_BYTES && self.pending.last().is_some_and(u8::is_ascii) {
            self.flush()?;
        }
        Ok(Flow::Continue)
    }

    fn collects_text(&self) -> bool {
        let group = &self.current;
        group.dest.holds_text() && !(group.dest == Dest::Body && (group.hidden || group.deleted))
    }

    /// Decodes the pending bytes, in the encoding of the current font.
    fn flush(&mut self) -> Result<(), ExtractError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let encoding = self.encoding();
        let mut bytes = std::mem::take(&mut self.pending);
        let result = self.text(&encoding.decode_without_bom_handling(&bytes).0);
        bytes.clear();
        self.pending = bytes;
        result
    }

    fn encoding(&self) -> &'static Encoding {
        self.current
            .font
            .or(self.default_font)
            .and_then(|font| self.fonts.get(&font).copied())
            .unwrap_or(self.code_page)
    }

    fn open_group(&mut self) -> Result<(), ExtractError> {
        if self.saved.len() >= MAX_DEPTH {
            return Err(ExtractError::corrupt(format!(
                "groups nested more than {MAX_DEPTH} deep"
            )));
        }
        self.saved.push(self.current);
        if self.current.dest == Dest::Stylesheet {
            self.current.dest = Dest::Style;
            self.style = Some(StyleDef {
                paragraph: true,
                ..StyleDef::default()
            });
        }
        Ok(())
    }

    fn close_group(&mut self) -> Result<Flow, ExtractError> {
        let Some(outer) = self.saved.pop() else {
            return Ok(Flow::Done);
        };
        let inner = std::mem::replace(&mut self.current, outer);
        self.leave(inner.dest, outer.dest);
        self.close_fields()?;
        if self.saved.is_empty() {
            // The last paragraph, if it has no paragraph mark, is the outermost group's.
            self.current = inner;
            return Ok(Flow::Done);
        }
        Ok(Flow::Continue)
    }

    /// What ends with a destination's group.
    fn leave(&mut self, inner: Dest, outer: Dest) {
        match (inner, outer) {
            (Dest::Style, Dest::Stylesheet) => self.define_style(),
            (Dest::ListText, outer) if outer != Dest::ListText => {
                let text = std::mem::take(&mut self.list_text);
                self.layout.set_marker(text);
            }
            _ => {}
        }
    }

    /// Ends the fields whose group has closed: a hyperlink's text becomes a link.
    fn close_fields(&mut self) -> Result<(), ExtractError> {
        while self
            .fields
            .last()
            .is_some_and(|f| f.depth > self.saved.len())
        {
            let Some(field) = self.fields.pop() else {
                break;
            };
            if let (Some(anchor), Some(url)) = (field.result, hyperlink_target(&field.instruction))
            {
                self.layout.link(anchor, &url)?;
            }
        }
        Ok(())
    }

    fn word(&mut self, name: &str, param: Option<i32>, starred: bool) -> Result<(), ExtractError> {
        let dest = self.current.dest;
        if dest == Dest::Skip {
            return Ok(());
        }
        if let Some(next) = destination(name, dest, starred) {
            // A text box floats beside the paragraph it is anchored in: its text is not part
            // of that paragraph's sentence.
            if name == "shptxt" && next == Dest::Body {
                self.current.dest = Dest::Body;
                self.paragraph_break()?;
            }
            // LibreOffice writes `\author` twice (creator, then last editor): the first counts.
            let taken = |property: &str| !property.trim().is_empty();
            self.current.dest = match next {
                Dest::Title if taken(&self.title) => Dest::Skip,
                Dest::Author if taken(&self.author) => Dest::Skip,
                next => next,
            };
            return Ok(());
        }
        match name {
            "ansicpg" => {
                if let Some(encoding) = param.and_then(codepage::code_page) {
                    self.code_page = encoding;
                }
            }
            "mac" => self.code_page = codepage::code_page(10000).unwrap_or(WINDOWS_1252),
            "deff" => self.default_font = param,
            _ => {}
        }
        match dest {
            Dest::FontTable => self.font_word(name, param),
            Dest::Style => {
                self.style_word(name, param);
                self.text_word(name, param)?;
            }
            _ if dest.holds_text() => self.text_word(name, param)?,
            _ => {}
        }
        Ok(())
    }

    fn font_word(&mut self, name: &str, param: Option<i32>) {
        let encoding = match name {
            "f" => {
                self.font_defined = param;
                return;
            }
            "fcharset" => param.and_then(codepage::charset),
            "cpg" => param.and_then(codepage::code_page),
            _ => return,
        };
        if let (Some(font), Some(encoding)) = (self.font_defined, encoding) {
            if self.fonts.len() < MAX_DEFINITIONS || self.fonts.contains_key(&font) {
                self.fonts.insert(font, encoding);
            }
        }
    }

    fn style_word(&mut self, name: &str, param: Option<i32>) {
        let Some(style) = &mut self.style else {
            return;
        };
        match name {
            "s" => style.number = param.unwrap_or(0),
            "outlinelevel" => style.outline_level = param,
            "cs" | "ds" | "ts" | "tsrowd" => style.paragraph = false,
            _ => {}
        }
    }

    fn define_style(&mut self) {
        let Some(style) = self.style.take() else {
            return;
        };
        if !style.paragraph || self.heading_styles.len() >= MAX_DEFINITIONS {
            return;
        }
        let name = style.name.split(';').next().unwrap_or_default().trim();
        let level = style
            .outline_level
            .and_then(heading_level)
            .or_else(|| heading_from_name(name));
        if let Some(level) = level {
            self.heading_styles.insert(style.number, level);
        }
    }

    /// A control word where text is gathered: text, breaks, and character and paragraph
    /// formatting.
    fn text_word(&mut self, name: &str, param: Option<i32>) -> Result<(), ExtractError> {
        let on = param != Some(0);
        let group = &mut self.current;
        match name {
            "par" | "sect" | "page" | "column" => return self.paragraph_break(),
            "line" => return self.break_text("\n"),
            "tab" => return self.break_text("\t"),
            "cell" | "row" | "nestcell" | "nestrow" => return self.table_mark(name),
            "u" => return self.unicode(param),
            "field" | "fldrslt" => self.field_word(name),
            "pard" => group.paragraph = ParagraphProps::default(),
            "plain" => {
                group.font = None;
                group.hidden = false;
                group.deleted = false;
            }
            "uc" => group.unicode_skip = usize::try_from(param.unwrap_or(1)).unwrap_or(0),
            "f" => group.font = param,
            "v" => group.hidden = on,
            "deleted" => group.deleted = on,
            "s" => group.paragraph.style = param.unwrap_or(0),
            "outlinelevel" => group.paragraph.outline_level = param,
            "ls" => group.paragraph.list = param.unwrap_or(0),
            "ilvl" => group.paragraph.list_level = param.unwrap_or(0),
            "intbl" => group.paragraph.in_table = on,
            "itap" => group.paragraph.in_table = param.unwrap_or(1) > 0,
            _ => {
                if let Some(text) = special_character(name) {
                    return self.text(text);
                }
            }
        }
        Ok(())
    }

    fn symbol(&mut self, symbol: u8) -> Result<(), ExtractError> {
        let text = match symbol {
            b'*' => {
                self.starred = true;
                return Ok(());
            }
            b'\\' => "\\",
            b'{' => "{",
            b'}' => "}",
            b'~' => "\u{a0}",
            b'_' => "\u{2011}",
            // `\-` is an optional hyphen, shown only where a line breaks.
            _ => return Ok(()),
        };
        if self.collects_text() {
            self.text(text)?;
        }
        Ok(())
    }

    /// `\uN`: a UTF-16 code unit, negative above 32767; a pair of them for a character
    /// beyond the BMP. The `\ucN` fallback characters after it are skipped.
    fn unicode(&mut self, param: Option<i32>) -> Result<(), ExtractError> {
        let Some(value) = param else {
            return Ok(());
        };
        self.fallback = self.current.unicode_skip;
        let unit = if value < 0 { value + 0x10000 } else { value };
        let Ok(unit) = u32::try_from(unit) else {
            return Ok(());
        };
        let high = self.high_surrogate.take();
        let c = match unit {
            0xD800..=0xDBFF => {
                self.high_surrogate = Some(unit);
                return Ok(());
            }
            0xDC00..=0xDFFF => high.and_then(|high| {
                char::from_u32(0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00))
            }),
            _ => char::from_u32(unit),
        };
        match c {
            Some(c) if self.collects_text() => self.text(c.encode_utf8(&mut [0; 4])),
            _ => Ok(()),
        }
    }

    fn field_word(&mut self, name: &str) {
        if self.current.dest != Dest::Body {
            return;
        }
        let depth = self.saved.len();
        match name {
            "field" if self.fields.last().is_none_or(|f| f.depth < depth) => {
                self.fields.push(Field {
                    depth,
                    instruction: String::new(),
                    result: None,
                });
            }
            "fldrslt" => {
                let anchor = self.layout.anchor();
                if let Some(field) = self.fields.last_mut().filter(|f| f.result.is_none()) {
                    field.result = Some(anchor);
                }
            }
            _ => {}
        }
    }

    /// Text from a decoded run, `\uN` or a symbol, without the control characters no text
    /// means (tabs are kept: TextEdit writes them unescaped).
    fn text(&mut self, text: &str) -> Result<(), ExtractError> {
        self.high_surrogate = None;
        if text.chars().any(|c| c.is_control() && c != '\t') {
            let clean: String = text
                .chars()
                .filter(|&c| !c.is_control() || c == '\t')
                .collect();
            return self.route(&clean);
        }
        self.route(text)
    }

    /// Gives text to whatever the current destination gathers.
    fn route(&mut self, text: &str) -> Result<(), ExtractError> {
        let target = match self.current.dest {
            Dest::Body if self.current.hidden || self.current.deleted => return Ok(()),
            Dest::Body => return self.layout.push_text(text),
            Dest::Title => &mut self.title,
            Dest::Author => &mut self.author,
            Dest::ListText => &mut self.list_text,
            Dest::FieldInstruction => match self.fields.last_mut() {
                Some(field) => &mut field.instruction,
                None => return Ok(()),
            },
            Dest::Style => match &mut self.style {
                Some(style) => &mut style.name,
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let room = MAX_PROPERTY_CHARS.saturating_sub(target.chars().count());
        target.extend(text.chars().take(room));
        Ok(())
    }

    /// `\line` or `\tab`: themselves in the body, a space in a property.
    fn break_text(&mut self, text: &str) -> Result<(), ExtractError> {
        match self.current.dest {
            Dest::Body if self.current.hidden || self.current.deleted => Ok(()),
            Dest::Body => self.layout.push_text(text),
            _ => self.route(" "),
        }
    }

    fn paragraph_break(&mut self) -> Result<(), ExtractError> {
        if self.current.dest != Dest::Body {
            return self.route(" ");
        }
        let props = self.current.paragraph;
        self.layout.end_paragraph(self.role(props), props.in_table)
    }

    fn table_mark(&mut self, name: &str) -> Result<(), ExtractError> {
        if self.current.dest != Dest::Body {
            return self.route(" ");
        }
        match name {
            "cell" => self.layout.end_cell(),
            "row" => self.layout.end_row(),
            // A table in a cell: its cells become lines of the outer cell's text.
            _ => self.layout.end_paragraph(Role::Plain, true),
        }
    }

    fn role(&self, props: ParagraphProps) -> Role {
        let heading = props
            .outline_level
            .and_then(heading_level)
            .or_else(|| self.heading_styles.get(&props.style).copied());
        match heading {
            Some(level) => Role::Heading(level),
            None if props.list > 0 => Role::ListItem {
                list: props.list,
                depth: usize::try_from(props.list_level.clamp(0, 8)).unwrap_or(0),
            },
            None => Role::Plain,
        }
    }

    /// Ends the document, its open groups closed as if its braces were balanced.
    fn finish(mut self) -> Result<Document, ExtractError> {
        self.flush()?;
        while self.close_group()? == Flow::Continue {}
        let props = self.current.paragraph;
        let role = self.role(props);
        let (content, first_heading) = self.layout.finish(role, props.in_table)?;
        let property = |text: &str| {
            let words: Vec<&str> = text.split_whitespace().collect();
            (!words.is_empty()).then(|| words.join(" "))
        };
        Ok(Document {
            content,
            title: property(&self.title).or(first_heading),
            author: property(&self.author),
        })
    }
}

/// The destination a group becomes at control word `name`, if it names one. A starred
/// (`\*`) destination this reader does not know is skipped, as the specification asks.
fn destination(name: &str, current: Dest, starred: bool) -> Option<Dest> {
    let next = match (name, current) {
        ("fonttbl", _) => Dest::FontTable,
        ("stylesheet", _) => Dest::Stylesheet,
        ("info", _) => Dest::Info,
        ("title", Dest::Info) => Dest::Title,
        ("author", Dest::Info) => Dest::Author,
        ("listtext" | "pntext", Dest::Body) => Dest::ListText,
        ("fldinst", Dest::Body) => Dest::FieldInstruction,
        ("object" | "shpinst", Dest::Body) => Dest::Wrapper,
        ("result" | "shptxt", Dest::Wrapper) => Dest::Body,
        // The same outside the body hold nothing to read.
        ("listtext" | "pntext" | "fldinst" | "object" | "shpinst", _) => Dest::Skip,
        _ if starred || SKIPPED.contains(&name) => Dest::Skip,
        _ => return None,
    };
    Some(next)
}

/// Heading level 1–6 of outline level 0–8 (9 is body text).
fn heading_level(outline_level: i32) -> Option<usize> {
    let level = usize::try_from(outline_level).ok()?;
    (level < 9).then_some((level + 1).min(6))
}

/// The text of the control words that stand for a character.
fn special_character(name: &str) -> Option<&'static str> {
    Some(match name {
        "emdash" => "\u{2014}",
        "endash" => "\u{2013}",
        "emspace" => "\u{2003}",
        "enspace" => "\u{2002}",
        "qmspace" => "\u{2005}",
        "bullet" => "\u{2022}",
        "lquote" => "\u{2018}",
        "rquote" => "\u{2019}",
        "ldblquote" => "\u{201c}",
        "rdblquote" => "\u{201d}",
        "zwj" => "\u{200d}",
        "zwnj" => "\u{200c}",
        _ => return None,
    })
}

/// The target of a `HYPERLINK "url"` field, not of one to a bookmark (`HYPERLINK \l "name"`),
/// with what would end a Markdown link target escaped.
pub(crate) fn hyperlink_target(instruction: &str) -> Option<String> {
    let (keyword, rest) = instruction.trim().split_once(char::is_whitespace)?;
    if !keyword.eq_ignore_ascii_case("hyperlink") {
        return None;
    }
    let rest = rest.trim_start();
    let url = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None if rest.starts_with('\\') => return None,
        None => rest.split_whitespace().next()?,
    };
    let url = url.trim();
    (!url.is_empty()).then(|| {
        url.replace(' ', "%20")
            .replace('(', "%28")
            .replace(')', "%29")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExtractOptions, OutputFormat};

    fn read(rtf: &str, output: OutputFormat) -> Extracted {
        let opts = ExtractOptions {
            output,
            ..ExtractOptions::default()
        };
        extract(rtf.as_bytes(), &mut Ctx::new(&opts)).unwrap()
    }

    fn markdown(rtf: &str) -> String {
        read(rtf, OutputFormat::Markdown).content
    }

    #[test]
    fn unicode_escapes_skip_their_fallback() {
        // Negative values are above 32767; `\uc2` skips two fallback bytes, scoped to its group.
        assert_eq!(
            markdown(r"{\rtf1 \u-3913?x {\uc2\u8364\'80\'80y}\u8217\'92z}"),
            "\u{f0b7}x \u{20ac}y\u{2019}z"
        );
        // A control word counts as one fallback character; a group ends the fallback.
        assert_eq!(markdown(r"{\rtf1 a\u233\emdash b\u233{c}}"), "aébéc");
        // `\uc0`: nothing to skip.
        assert_eq!(markdown(r"{\rtf1\uc0 \u233\u8364 ok}"), "é€ok");
        // A surrogate pair, each half with its fallback.
        assert_eq!(markdown(r"{\rtf1 \u-10179?\u-8704?!}"), "\u{1f600}!");
        // A lone half is dropped.
        assert_eq!(markdown(r"{\rtf1 \u-10179?x}"), "x");
    }

    #[test]
    fn hex_bytes_follow_the_code_page_and_font_charset() {
        assert_eq!(
            markdown(r"{\rtf1\ansi caf\'e9 \'93q\'94 \'80}"),
            "café “q” €"
        );
        assert_eq!(
            markdown(r"{\rtf1\ansi\ansicpg1251 \'cf\'f0\'e8\'e2\'e5\'f2}"),
            "Привет"
        );
        assert_eq!(
            markdown(
                r"{\rtf1\ansi\deff0{\fonttbl{\f0 Arial;}{\f1\fcharset161 Greek;}}\'e1 {\f1 \'e1}}"
            ),
            "á α"
        );
        // Shift_JIS: two bytes for one character.
        assert_eq!(
            markdown(r"{\rtf1\ansi\ansicpg932 \'93\'fa\'96\'7b}"),
            "日本"
        );
        // Unknown code pages read as Windows-1252.
        assert_eq!(markdown(r"{\rtf1\ansi\ansicpg437 \'e9}"), "é");
    }

    #[test]
    fn symbols_and_special_characters() {
        assert_eq!(
            markdown(r"{\rtf1 a\\b\{c\}\~d\-e\_f\emdash g\ldblquote h\rdblquote}"),
            "a\\b{c}\u{a0}de\u{2011}f\u{2014}g\u{201c}h\u{201d}"
        );
    }

    #[test]
    fn skipped_destinations_and_hidden_text_are_left_out() {
        let rtf = r"{\rtf1{\fonttbl{\f0 Arial;}}{\colortbl;\red1\green2\blue3;}{\*\unknown secret}{\header head}{\footnote note}{\pict 0123abcd}body {\v hidden}{\deleted gone}text\bin3 {}}x}";
        assert_eq!(markdown(rtf), "body textx");
    }

    #[test]
    fn paragraphs_lines_and_tabs() {
        assert_eq!(
            markdown(r"{\rtf1 one\par two\line three\tab four\page five\sect six}"),
            "one\n\ntwo\nthree\tfour\n\nfive\n\nsix"
        );
    }

    #[test]
    fn headings_by_outline_level_and_by_style() {
        let rtf = r"{\rtf1{\stylesheet{\s0 Normal;}{\s2\sbasedon0 heading 2;}{\*\cs10 heading 1 Char;}}
\pard\outlinelevel0 Top\par\pard\s2 Styled\par\pard Body\par}";
        assert_eq!(markdown(rtf), "# Top\n\n## Styled\n\nBody");
        assert_eq!(read(rtf, OutputFormat::Text).title.as_deref(), Some("Top"));
    }

    #[test]
    fn lists_take_their_marker_from_listtext() {
        let rtf = r"{\rtf1
{\listtext\f1 \'b7\tab}\pard\ls1\ilvl0 One\par
{\listtext\f2 o\tab}\pard\ls1\ilvl1 Nested\par
{\listtext 1.\tab}\pard\ls2 First\par
{\listtext 2.\tab}\pard\ls2 Second\par
{\pntext\'b7\tab}\pard Old style\par
\pard After\par}";
        assert_eq!(
            markdown(rtf),
            "- One\n    - Nested\n\n1. First\n2. Second\n\n- Old style\n\nAfter"
        );
    }

    #[test]
    fn tables_become_rows_of_cells() {
        let rtf = r"{\rtf1\trowd\cellx100\cellx200\pard\intbl A\cell B\cell\row
\trowd\cellx100\cellx200\pard\intbl 1\par 2\cell x|y\cell\row\pard After\par}";
        assert_eq!(
            markdown(rtf),
            "| A | B |\n| --- | --- |\n| 1<br>2 | x\\|y |\n\nAfter"
        );
        assert_eq!(
            read(rtf, OutputFormat::Text).content,
            "A\tB\n1 2\tx|y\n\nAfter"
        );
        // A table the document ends in, its last row unended.
        assert_eq!(
            markdown(r"{\rtf1\trowd\pard\intbl A\cell B"),
            "| A | B |\n| --- | --- |"
        );
    }

    #[test]
    fn hyperlink_fields_keep_their_result() {
        let rtf = r#"{\rtf1 See {\field{\*\fldinst{HYPERLINK "https://example.com/a b" }}{\fldrslt{\ul the page }}} and {\field{\*\fldinst PAGE}{\fldrslt 3}}.}"#;
        assert_eq!(
            markdown(rtf),
            "See [the page](https://example.com/a%20b)  and 3."
        );
        assert_eq!(
            read(rtf, OutputFormat::Text).content,
            "See the page  and 3."
        );
        assert_eq!(hyperlink_target(r#"HYPERLINK \l "_Toc1""#), None);
        assert_eq!(
            hyperlink_target(" HYPERLINK https://x.org/ \\o tip").as_deref(),
            Some("https://x.org/")
        );
    }

    #[test]
    fn objects_and_shapes_keep_their_visible_text() {
        let rtf = r"{\rtf1 a{\object\objemb{\*\objdata 0102}{\result result}}b{\shp{\*\shpinst{\sp{\sn x}{\sv 1}}{\shptxt box}}{\shprslt old box}}}";
        assert_eq!(markdown(rtf), "aresultb\n\nbox");
    }

    #[test]
    fn title_and_author_from_info() {
        let rtf = r"{\rtf1{\info{\title Caf\'e9  notes}{\author Ana\u8217?s}{\operator Someone}{\creatim\yr2024}{\author Bea}}Body}";
        let out = read(rtf, OutputFormat::Markdown);
        assert_eq!(out.content, "Body");
        assert_eq!(out.title.as_deref(), Some("Café notes"));
        assert_eq!(out.metadata["author"], "Ana\u{2019}s");
        assert_eq!(out.metadata["source_format"], "rtf");
        assert_eq!(out.pages, None);
    }

    #[test]
    fn broken_structure_is_read_as_far_as_it_goes() {
        // Unbalanced: the end of the input closes every group.
        assert_eq!(markdown(r"{\rtf1 {\b open {\i groups"), "open groups");
        // Stray closing braces end the document; what follows is not read.
        assert_eq!(markdown(r"{\rtf1 text}} more}"), "text");
        let opts = ExtractOptions::default();
        let deep = format!("{{\\rtf1 {}x", "{".repeat(MAX_DEPTH + 1));
        let err = extract(deep.as_bytes(), &mut Ctx::new(&opts)).unwrap_err();
        assert_eq!(err.code(), "corrupt_document");
        let err = extract(b"plain text", &mut Ctx::new(&opts)).unwrap_err();
        assert_eq!(err.code(), "corrupt_document");
    }

    #[test]
    fn starts_after_a_bom_and_white_space() {
        assert_eq!(
            start(b"\xEF\xBB\xBF \r\n{\\rtf1 x}"),
            Some(&b"{\\rtf1 x}"[..])
        );
        assert_eq!(start(b"x{\\rtf1}"), None);
        assert_eq!(start(b"   "), None);
    }
}
