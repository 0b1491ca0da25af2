//! HTML to Markdown or text, from the html5ever tokenizer's stream of tags and text.
//!
//! No DOM is built: HTML tree construction (foster parenting, reconstruction of open
//! formatting elements) can grow quadratically on hostile input, while the tokenizer is
//! linear. Block boundaries flush the text gathered so far, which also closes the many
//! elements whose end tags HTML lets authors omit (`<p>`, `<li>`, `<td>`).

use std::cell::RefCell;

use encoding_rs::Encoding;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use serde_json::Value;

use crate::blocks::{collapse_lines, Blocks};
use crate::limits::{table_too_large, Ctx, MAX_TABLE_CELLS};
use crate::text::decode;
use crate::{DocumentFormat, ExtractError, Extracted};

/// Inline elements (emphasis, links) open at once that are written as markup.
const MAX_INLINE: usize = 16;

/// Input fed to the tokenizer between two looks at the clock and the output limit.
const CHUNK: usize = 64 * 1024;

pub(crate) fn extract(bytes: &[u8], cx: &mut Ctx) -> Result<Extracted, ExtractError> {
    let text = decode(bytes, declared_charset(bytes));
    let sink = Sink(RefCell::new(Converter::new(
        Blocks::new(cx.out(), cx.markdown()),
        cx.markdown(),
    )));
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let queue = BufferQueue::default();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut at = rest.len().min(CHUNK);
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        queue.push_back(StrTendril::from_slice(&rest[..at]));
        rest = &rest[at..];
        let _ = tokenizer.feed(&queue);
        cx.clock.check()?;
        if let Some(e) = tokenizer.sink.0.borrow_mut().error.take() {
            return Err(e);
        }
    }
    tokenizer.end();
    let mut converter = tokenizer.sink.0.into_inner();
    // What HTML left open at the end still counts.
    converter.end_pre();
    if converter.table.is_some() {
        converter.end_table();
    }
    converter.flush();
    if let Some(e) = converter.error.take() {
        return Err(e);
    }

    let mut extracted = Extracted::new(
        converter.blocks.into_string(),
        cx.opts.output,
        DocumentFormat::Html,
    );
    extracted.title = converter
        .title
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .or(converter.first_h1);
    extracted.set_author(converter.author);
    if let Some(lang) = converter.lang {
        extracted
            .metadata
            .insert("language".into(), Value::String(lang));
    }
    Ok(extracted)
}

/// The encoding a `<meta charset>` (or `http-equiv` content type) declares in the first
/// KiB, as browsers pre-scan for it; used only when the bytes are not UTF-8.
fn declared_charset(bytes: &[u8]) -> Option<&'static Encoding> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
    let at = head.find("charset=")? + "charset=".len();
    let label: String = head[at..]
        .trim_start_matches(['"', '\'', ' '])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    Encoding::for_label(label.as_bytes())
}

struct Sink(RefCell<Converter>);

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        self.0.borrow_mut().token(token)
    }
}

struct List {
    ordered: bool,
    next: u64,
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Option<Vec<String>>,
    cell: Option<String>,
    span: usize,
    /// Cells and rows gathered, against `MAX_TABLE_CELLS`.
    gathered: usize,
}

/// An open inline element written as Markdown markup: where its opening marker went in
/// the current text, the marker, and for links the target.
struct Inline {
    tag: String,
    at: usize,
    marker: &'static str,
    href: Option<String>,
}

struct Converter {
    blocks: Blocks,
    markdown: bool,
    /// The text of the block being gathered.
    text: String,
    /// Collapsed white space not yet written, so none ends up at a block's edges.
    space: bool,
    heading: Option<usize>,
    lists: Vec<List>,
    /// The marker of the `<li>` just opened, used by its first block of text.
    item_marker: Option<String>,
    in_item: bool,
    quote: usize,
    pre: Option<String>,
    table: Option<Table>,
    table_depth: usize,
    inline: Vec<Inline>,
    /// The element whose content is ignored, and how many of it are open.
    skip: Option<(String, usize)>,
    /// Inside a raw-text element (script, style) until its end tag.
    raw_skip: bool,
    title: Option<String>,
    in_title: bool,
    first_h1: Option<String>,
    author: Option<String>,
    lang: Option<String>,
    error: Option<ExtractError>,
}

const SKIPPED: &[&str] = &[
    "template", "svg", "math", "select", "object", "canvas", "audio", "video", "datalist",
];
const RAW_SKIPPED: &[&str] = &[
    "script", "style", "noscript", "iframe", "noembed", "noframes", "xmp", "textarea",
];
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "nav",
    "aside",
    "dl",
    "dt",
    "dd",
    "form",
    "fieldset",
    "legend",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "center",
    "body",
    "html",
    "caption",
    "option",
    "menu",
    "hgroup",
];

impl Converter {
    fn new(blocks: Blocks, markdown: bool) -> Self {
        Converter {
            blocks,
            markdown,
            text: String::new(),
            space: false,
            heading: None,
            lists: Vec::new(),
            item_marker: None,
            in_item: false,
            quote: 0,
            pre: None,
            table: None,
            table_depth: 0,
            inline: Vec::new(),
            skip: None,
            raw_skip: false,
            title: None,
            in_title: false,
            first_h1: None,
            author: None,
            lang: None,
            error: None,
        }
    }

    fn token(&mut self, token: Token) -> TokenSinkResult<()> {
        if self.error.is_some() {
            return TokenSinkResult::Continue;
        }
        match token {
            Token::TagToken(tag) => return self.tag(tag),
            Token::CharacterTokens(s) => self.characters(&s),
            Token::EOFToken => self.flush(),
            _ => {}
        }
        TokenSinkResult::Continue
    }

    fn tag(&mut self, tag: Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        let start = tag.kind == TagKind::StartTag;

        // Raw-text elements must switch the tokenizer's state even where their content is
        // ignored, or a `<` in a script would be read as markup.
        if start && !tag.self_closing {
            let raw = match name {
                "script" => Some(RawKind::ScriptData),
                "style" | "noscript" | "iframe" | "noembed" | "noframes" | "xmp" => {
                    Some(RawKind::Rawtext)
                }
                "title" | "textarea" => Some(RawKind::Rcdata),
                _ => None,
            };
            if let Some(kind) = raw {
                if name == "title" && self.skip.is_none() && self.title.is_none() {
                    self.in_title = true;
                    self.title = Some(String::new());
                } else {
                    self.raw_skip = true;
                }
                return TokenSinkResult::RawData(kind);
            }
        }
        if !start && (RAW_SKIPPED.contains(&name) || name == "title") {
            self.raw_skip = false;
            self.in_title = false;
            return TokenSinkResult::Continue;
        }

        if let Some((skipped, open)) = &mut self.skip {
            if skipped == name && !tag.self_closing {
                if start {
                    *open += 1;
                } else {
                    *open -= 1;
                    if *open == 0 {
                        self.skip = None;
                    }
                }
            }
            return TokenSinkResult::Continue;
        }
        if start && SKIPPED.contains(&name) && !tag.self_closing {
            self.skip = Some((name.to_owned(), 1));
            return TokenSinkResult::Continue;
        }

        if self.pre.is_some() {
            match (name, start) {
                ("pre", false) => self.end_pre(),
                ("br", _) => self.push_raw("\n"),
                _ => {}
            }
            return TokenSinkResult::Continue;
        }

        let attr = |key: &str| {
            tag.attrs
                .iter()
                .find(|a| &*a.name.local == key)
                .map(|a| a.value.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        match (name, start) {
            ("html", true) => self.lang = self.lang.take().or_else(|| attr("lang")),
            ("meta", true) if attr("name").is_some_and(|n| n.eq_ignore_ascii_case("author")) => {
                self.author = self.author.take().or_else(|| attr("content"));
            }
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6", _) => {
                self.flush();
                self.heading = start.then(|| usize::from(name.as_bytes()[1] - b'0'));
            }
            ("ul" | "ol", true) => {
                self.flush();
                let next = attr("start").and_then(|s| s.parse().ok()).unwrap_or(1);
                self.lists.push(List {
                    ordered: name == "ol",
                    next,
                });
            }
            ("ul" | "ol", false) => {
                self.flush();
                self.lists.pop();
                self.in_item = !self.lists.is_empty();
                if self.lists.is_empty() {
                    self.blocks.end_list();
                }
            }
            ("li", true) => {
                self.flush();
                let marker = match self.lists.last_mut() {
                    Some(list) if list.ordered => {
                        let n = list.next;
                        list.next = list.next.saturating_add(1);
                        format!("{n}.")
                    }
                    _ => "-".to_owned(),
                };
                self.item_marker = Some(marker);
                self.in_item = true;
            }
            ("li", false) => {
                self.flush();
                self.item_marker = None;
                self.in_item = false;
            }
            ("blockquote", _) => {
                self.flush();
                self.quote = if start {
                    self.quote + 1
                } else {
                    self.quote.saturating_sub(1)
                };
            }
            ("pre", true) => {
                self.flush();
                self.pre = Some(String::new());
            }
            ("hr", _) => {
                self.flush();
                self.emit(|b| b.rule());
            }
            ("br", _) => self.push_raw("\n"),
            ("table", true) => {
                self.table_depth += 1;
                if self.table_depth == 1 {
                    self.flush();
                    self.table = Some(Table::default());
                } else {
                    self.cell_break();
                }
            }
            ("table", false) if self.table_depth > 0 => {
                self.table_depth -= 1;
                if self.table_depth == 0 {
                    self.end_table();
                } else {
                    self.cell_break();
                }
            }
            ("tr", _) if self.table_depth == 1 => {
                self.end_row();
                if start {
                    if let Some(t) = &mut self.table {
                        t.row = Some(Vec::new());
                    }
                }
            }
            ("td" | "th", _) if self.table_depth == 1 => {
                self.end_cell();
                if start {
                    let span = attr("colspan").and_then(|s| s.parse().ok()).unwrap_or(1);
                    if let Some(t) = &mut self.table {
                        t.cell = Some(String::new());
                        t.span = usize::clamp(span, 1, 64);
                    }
                }
            }
            ("tr", _) => self.cell_break(),
            ("td" | "th", true) => self.push_text_space(),
            ("img", true) => {
                if let Some(alt) = attr("alt") {
                    match attr("src").filter(|s| self.markup() && !s.starts_with("data:")) {
                        Some(src) => self.push_raw(&format!("![{alt}]({src})")),
                        None => self.push_words(&alt),
                    }
                }
            }
            ("a", true) if self.markup() => {
                let href =
                    attr("href").filter(|h| !h.starts_with('#') && !h.starts_with("javascript:"));
                self.open_inline(name, "", href);
            }
            ("strong" | "b", true) if self.markup() => self.open_inline(name, "**", None),
            ("em" | "i", true) if self.markup() => self.open_inline(name, "*", None),
            ("code" | "kbd" | "samp" | "tt", true) if self.markup() => {
                self.open_inline(name, "`", None)
            }
            ("s" | "strike" | "del", true) if self.markup() => self.open_inline(name, "~~", None),
            (
                "a" | "strong" | "b" | "em" | "i" | "code" | "kbd" | "samp" | "tt" | "s" | "strike"
                | "del",
                false,
            ) => self.close_inline(name),
            _ if BLOCKS.contains(&name) => {
                if self.table.is_some() && self.in_cell() {
                    self.cell_break();
                } else {
                    self.flush();
                }
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }

    /// Inline markup is written only in Markdown, and not where it would be noise:
    /// headings and table cells.
    fn markup(&self) -> bool {
        self.markdown && self.heading.is_none() && self.table.is_none()
    }

    fn in_cell(&self) -> bool {
        self.table.as_ref().is_some_and(|t| t.cell.is_some())
    }

    /// Where text goes now: the open table cell, or the block being gathered.
    fn target(&mut self) -> &mut String {
        match &mut self.table {
            Some(Table {
                cell: Some(cell), ..
            }) => cell,
            _ => &mut self.text,
        }
    }

    fn characters(&mut self, s: &str) {
        if self.skip.is_some() || self.raw_skip {
            return;
        }
        if self.in_title {
            if let Some(title) = &mut self.title {
                title.push_str(s);
            }
            return;
        }
        if let Some(pre) = &mut self.pre {
            // The newline right after <pre> is not content.
            if pre.is_empty() {
                pre.push_str(s.strip_prefix('\n').unwrap_or(s));
            } else {
                pre.push_str(s);
            }
            return;
        }
        self.push_words(s);
    }

    /// Appends text with HTML white-space collapsing.
    fn push_words(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() && c != '\u{a0}' {
                self.space = true;
                continue;
            }
            if self.space {
                self.push_space();
            }
            self.space = false;
            self.target().push(if c == '\u{a0}' { ' ' } else { c });
        }
    }

    /// Writes a collapsed space, unless at the start of a block or after another. Right
    /// after opening markers it goes before them: `a <b> c</b>` is `a **c**`.
    fn push_space(&mut self) {
        if self.in_cell() {
            let cell = self.target();
            if !cell.is_empty() && !cell.ends_with([' ', '\n']) {
                cell.push(' ');
            }
            return;
        }
        let mut at = self.text.len();
        for e in self.inline.iter().rev() {
            if e.at + e.marker.len() != at {
                break;
            }
            at = e.at;
        }
        if at == 0 || self.text[..at].ends_with([' ', '\n']) {
            return;
        }
        self.text.insert(at, ' ');
        for e in &mut self.inline {
            if e.at >= at {
                e.at += 1;
            }
        }
    }

    fn push_text_space(&mut self) {
        self.space = true;
    }

    fn push_raw(&mut self, s: &str) {
        if let Some(pre) = &mut self.pre {
            pre.push_str(s);
            return;
        }
        if s != "\n" && self.space {
            self.push_space();
        }
        self.space = false;
        self.target().push_str(s);
    }

    fn open_inline(&mut self, tag: &str, marker: &'static str, href: Option<String>) {
        // Each block boundary re-opens every open marker, so their number is kept small
        // lest nested markup make the work quadratic; deeper ones are left as plain text.
        if self.inline.len() >= MAX_INLINE {
            return;
        }
        let at = self.text.len();
        self.text.push_str(marker);
        self.inline.push(Inline {
            tag: tag.to_owned(),
            at,
            marker,
            href,
        });
    }

    fn close_inline(&mut self, tag: &str) {
        let Some(i) = self.inline.iter().rposition(|e| e.tag == tag) else {
            return;
        };
        // Elements opened inside and left open end here too, as the tree builder would.
        while self.inline.len() > i {
            let Some(e) = self.inline.pop() else { break };
            let content_at = e.at + e.marker.len();
            if content_at > self.text.len() || !self.text.is_char_boundary(content_at) {
                continue;
            }
            if self.text[content_at..].trim().is_empty() {
                self.text.replace_range(e.at..content_at, "");
                continue;
            }
            match e.href {
                Some(href) => {
                    self.text.insert(e.at, '[');
                    self.text.push_str("](");
                    self.text.push_str(&href);
                    self.text.push(')');
                }
                None => self.text.push_str(e.marker),
            }
        }
    }

    /// Writes the gathered text as the block the context makes it.
    fn flush(&mut self) {
        // Emphasis open across a block boundary is closed here and reopened after it.
        let open: Vec<&'static str> = self.inline.iter().map(|e| e.marker).collect();
        for e in self.inline.iter().rev() {
            let content_at = e.at + e.marker.len();
            if content_at <= self.text.len() && self.text.is_char_boundary(content_at) {
                if self.text[content_at..].trim().is_empty() {
                    self.text.truncate(e.at);
                } else {
                    self.text.push_str(e.marker);
                }
            }
        }
        self.space = false;
        let text = std::mem::take(&mut self.text);
        for (e, marker) in self.inline.iter_mut().zip(&open) {
            e.at = self.text.len();
            e.href = None;
            self.text.push_str(marker);
        }
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if let Some(level) = self.heading {
            if level == 1 && self.first_h1.is_none() {
                self.first_h1 = Some(collapse_lines(text));
            }
            return self.emit(|b| b.heading(level, text));
        }
        if let Some(marker) = self.item_marker.take() {
            let depth = self.lists.len().saturating_sub(1);
            return self.emit(|b| b.list_item(depth, &marker, text));
        }
        if self.in_item {
            let depth = self.lists.len().saturating_sub(1);
            return self.emit(|b| b.list_item(depth, "", text));
        }
        if self.quote > 0 && self.markdown {
            let quoted: String = text
                .lines()
                .map(|l| format!("> {l}"))
                .collect::<Vec<_>>()
                .join("\n");
            return self.emit(|b| b.paragraph(&quoted));
        }
        self.emit(|b| b.paragraph(text));
    }

    fn emit(&mut self, write: impl FnOnce(&mut Blocks) -> Result<(), ExtractError>) {
        if let Err(e) = write(&mut self.blocks) {
            self.error.get_or_insert(e);
        }
    }

    fn end_pre(&mut self) {
        if let Some(pre) = self.pre.take() {
            self.emit(|b| b.code_block(&pre));
        }
    }

    fn cell_break(&mut self) {
        if let Some(Table {
            cell: Some(cell), ..
        }) = &mut self.table
        {
            if !cell.is_empty() && !cell.ends_with('\n') {
                cell.push('\n');
            }
            self.space = false;
        }
    }

    fn end_cell(&mut self) {
        self.space = false;
        if let Some(t) = &mut self.table {
            if let Some(cell) = t.cell.take() {
                t.gathered = t.gathered.saturating_add(t.span.max(1));
                if t.gathered > MAX_TABLE_CELLS {
                    self.error.get_or_insert_with(table_too_large);
                    return;
                }
                let row = t.row.get_or_insert_with(Vec::new);
                row.push(cell.trim().to_owned());
                row.extend(std::iter::repeat_n(String::new(), t.span - 1));
            }
        }
    }

    fn end_row(&mut self) {
        self.end_cell();
        if let Some(t) = &mut self.table {
            if let Some(row) = t.row.take() {
                t.gathered = t.gathered.saturating_add(1);
                if t.gathered > MAX_TABLE_CELLS {
                    self.error.get_or_insert_with(table_too_large);
                    return;
                }
                t.rows.push(row);
            }
        }
    }

    fn end_table(&mut self) {
        self.end_row();
        // Text in the table but outside its cells (a caption) comes first.
        self.flush();
        if let Some(table) = self.table.take() {
            self.emit(|b| b.table(&table.rows));
        }
    }
}
