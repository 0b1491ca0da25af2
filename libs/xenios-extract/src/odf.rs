//! OpenDocument text, spreadsheets and presentations (ODT, ODS, ODP: LibreOffice's own
//! formats, which Google Docs, Sheets and Slides export too): `content.xml` walked once with
//! quick-xml. Headings by outline level, lists (numbered or bulleted as their list style says),
//! tables (a spreadsheet's sheets, each under its name), text frames; a presentation's slides
//! as sections (`## Slide 2: Title`, numbered as the application numbers them) with their
//! speaker notes, hidden slides and footers left out; notes, comments, tracked deletions and
//! generated indexes are left out. Title and author from `meta.xml`.

use std::collections::{HashMap, HashSet};

use quick_xml::events::{BytesStart, Event};
use serde_json::Value;

use crate::blocks::Blocks;
use crate::limits::{table_too_large, Clock, Ctx, MAX_TABLE_CELLS};
use crate::ooxml::{attr, next, push_text, xml_reader, Package};
use crate::{DocumentFormat, ExtractError, Extracted};

/// What a package's `mimetype` entry says it is (templates add `-template`).
const MEDIA_TYPES: [(&[u8], DocumentFormat); 3] = [
    (
        b"application/vnd.oasis.opendocument.text",
        DocumentFormat::Odt,
    ),
    (
        b"application/vnd.oasis.opendocument.spreadsheet",
        DocumentFormat::Ods,
    ),
    (
        b"application/vnd.oasis.opendocument.presentation",
        DocumentFormat::Odp,
    ),
];

/// A presentation's frames whose text repeats on every slide rather than belonging to one.
const SLIDE_FURNITURE: &[&str] = &["footer", "header", "date-time", "page-number"];

/// Elements whose text is not the document's running text (`title` and `desc` are a frame's
/// alternative text, and the document-title field, whose text is in `meta.xml`).
const SKIPPED: &[&str] = &[
    "annotation",
    "note",
    "tracked-changes",
    "table-of-content",
    "alphabetical-index",
    "illustration-index",
    "table-index",
    "object-index",
    "user-index",
    "bibliography",
    "sequence-decls",
    "desc",
    "title",
];

/// `text:s` spaces at one place, at most.
const MAX_SPACES: usize = 100;
/// Lists in lists, tables in tables, and paragraphs in paragraphs (a text frame's), followed
/// this deep.
const MAX_NESTING: usize = 16;

pub(crate) fn extract(
    bytes: &[u8],
    format: DocumentFormat,
    cx: &mut Ctx,
) -> Result<Extracted, ExtractError> {
    let mut pkg = Package::open(bytes, cx.opts)?;
    let mut styles = Styles::default();
    if let Some(xml) = pkg.read_text("styles.xml", &cx.clock)? {
        collect_styles(&xml, "styles.xml", &mut styles, &mut cx.clock)?;
    }
    let xml = pkg
        .read_text("content.xml", &cx.clock)?
        .ok_or_else(|| ExtractError::corrupt("the package lacks its content.xml"))?;
    collect_styles(&xml, "content.xml", &mut styles, &mut cx.clock)?;
    let (meta_title, author) = pkg.title_and_author("meta.xml", &mut cx.clock)?;

    let mut walker = Walker {
        blocks: Blocks::new(cx.out(), cx.markdown()),
        list_styles: styles.lists,
        hidden_pages: styles.hidden_pages,
        lists: Vec::new(),
        paragraphs: Vec::new(),
        tables: Vec::new(),
        skipping: 0,
        first_heading: None,
        sheets: (format == DocumentFormat::Ods).then(Vec::new),
        slides: (format == DocumentFormat::Odp).then(Slides::default),
        max_chars: cx.opts.max_output_chars,
    };
    walker.walk(&xml, &mut cx.clock)?;
    let first_heading = walker.first_heading.take();
    let sheets = walker.sheets.take();
    let slides = walker.slides.take();
    let mut extracted = Extracted::new(walker.blocks.into_string(), cx.opts.output, format);
    extracted.title = meta_title.or(first_heading);
    extracted.set_author(author);
    if let Some(sheets) = sheets {
        extracted
            .metadata
            .insert("sheets".into(), Value::Array(sheets));
    }
    if let Some(slides) = slides {
        extracted.pages = Some(u32::try_from(slides.shown).unwrap_or(u32::MAX));
        extracted
            .metadata
            .insert("slides".into(), Value::from(slides.shown));
        if slides.hidden > 0 {
            extracted
                .metadata
                .insert("hidden_slides".into(), Value::from(slides.hidden));
        }
    }
    Ok(extracted)
}

/// The format a zip's first entry names, when it is an OpenDocument `mimetype` (the package
/// format wants it first and stored, uncompressed, so that it can be read in place).
pub(crate) fn package_format(bytes: &[u8]) -> Option<DocumentFormat> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return None;
    }
    let field = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let (name_len, extra_len) = (field(26)?, field(28)?);
    if bytes.get(30..30 + name_len) != Some(b"mimetype") {
        return None;
    }
    let data = bytes.get(30 + name_len + extra_len..)?;
    MEDIA_TYPES
        .iter()
        .find(|(media_type, _)| data.starts_with(media_type))
        .map(|&(_, format)| format)
}

/// For each list style, whether each level (1 = outermost) is numbered.
type ListStyles = HashMap<String, HashMap<usize, bool>>;

#[derive(Default)]
struct Styles {
    lists: ListStyles,
    /// Drawing-page styles that hide a presentation's slide.
    hidden_pages: HashSet<String>,
}

fn collect_styles(
    xml: &str,
    part: &str,
    styles: &mut Styles,
    clock: &mut Clock,
) -> Result<(), ExtractError> {
    let mut reader = xml_reader(xml);
    let mut list: Option<String> = None;
    let mut page: Option<String> = None;
    loop {
        clock.tick()?;
        match next(&mut reader, part)? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "list-style" => list = attr(&e, "name"),
                "list-level-style-number"
                | "list-level-style-bullet"
                | "list-level-style-image" => {
                    if let (Some(style), Some(level)) = (&list, level_of(&e)) {
                        let numbered = e.local_name().as_ref() == "list-level-style-number"
                            && attr(&e, "num-format").is_some_and(|f| !f.is_empty());
                        styles
                            .lists
                            .entry(style.clone())
                            .or_default()
                            .insert(level, numbered);
                    }
                }
                "style" => {
                    page = (attr(&e, "family").as_deref() == Some("drawing-page"))
                        .then(|| attr(&e, "name"))
                        .flatten();
                }
                "drawing-page-properties" => {
                    if let Some(style) = &page {
                        if attr(&e, "visibility").as_deref() == Some("hidden") {
                            styles.hidden_pages.insert(style.clone());
                        }
                    }
                }
                // The automatic styles come before the body; nothing after them is a style.
                "body" => break,
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                "list-style" => list = None,
                "style" => page = None,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(())
}

fn level_of(e: &BytesStart) -> Option<usize> {
    attr(e, "level").and_then(|l| l.parse().ok())
}

struct List {
    style: Option<String>,
    /// Items begun at this level, for numbering.
    items: usize,
    /// Whether the current item has had its first paragraph (later ones continue it).
    marked: bool,
}

struct Paragraph {
    text: String,
    /// Characters in `text`: a few bytes of input (`<text:s text:c="100"/>`) make many.
    chars: usize,
    /// `Some(level)` for a heading.
    heading: Option<usize>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    /// Empty cells not yet written: only a cell with text after them needs them.
    pending_empty: usize,
    row_repeat: usize,
    cell: Option<(String, usize)>,
    gathered: usize,
    /// Characters of text held, repeats counted: a repeated cell is held once per repeat.
    held: usize,
}

/// Where a presentation's walk is.
#[derive(Default)]
struct Slides {
    /// Slides met, hidden ones included: the number of the current one.
    position: usize,
    shown: usize,
    hidden: usize,
    /// The current slide's heading is not written yet: it waits for the slide's title.
    heading_due: bool,
    /// The text of the title frame being read, when it can still name the slide.
    title: Option<String>,
    /// About the characters in `title` (a space between paragraphs counted for each).
    title_chars: usize,
    /// Inside the slide's speaker notes; `true` in the pair until their heading is written.
    notes: Option<bool>,
}

struct Walker {
    blocks: Blocks,
    list_styles: ListStyles,
    hidden_pages: HashSet<String>,
    lists: Vec<List>,
    /// Open paragraphs, innermost last (a text frame's paragraphs sit inside another).
    paragraphs: Vec<Paragraph>,
    tables: Vec<Table>,
    /// Depth inside a skipped element; 0 when not skipping.
    skipping: usize,
    first_heading: Option<String>,
    /// A spreadsheet's sheet names, in order; `None` for a text document.
    sheets: Option<Vec<Value>>,
    /// `None` unless the document is a presentation.
    slides: Option<Slides>,
    /// `max_output_chars`: no paragraph or table may hold more before it is written.
    max_chars: usize,
}

impl Walker {
    fn walk(&mut self, xml: &str, clock: &mut Clock) -> Result<(), ExtractError> {
        let mut reader = xml_reader(xml);
        let mut in_body = false;
        loop {
            clock.tick()?;
            let event = next(&mut reader, "content.xml")?;
            if self.skipping > 0 {
                match event {
                    Event::Start(_) => self.skipping += 1,
                    Event::End(_) => self.skipping -= 1,
                    Event::Eof => break,
                    _ => {}
                }
                continue;
            }
            match &event {
                Event::Start(e) | Event::Empty(e) => {
                    let empty = matches!(event, Event::Empty(_));
                    let name = e.local_name();
                    let name = name.as_ref();
                    if !in_body {
                        in_body = name == "body";
                        continue;
                    }
                    if SKIPPED.contains(&name) && !empty {
                        self.skipping = 1;
                        continue;
                    }
                    self.open(e, name, empty)?;
                }
                Event::End(e) if in_body => self.close(e.local_name().as_ref())?,
                Event::Eof => break,
                ev => self.append(|text| push_text(text, ev))?,
            }
        }
        Ok(())
    }

    fn open(&mut self, e: &BytesStart, name: &str, empty: bool) -> Result<(), ExtractError> {
        if let Some(slides) = &mut self.slides {
            match name {
                "page" if !empty => {
                    self.blocks.end_list();
                    slides.position += 1;
                    let hidden = attr(e, "style-name")
                        .is_some_and(|style| self.hidden_pages.contains(&style));
                    if hidden {
                        slides.hidden += 1;
                        self.skipping = 1;
                    } else {
                        slides.shown += 1;
                        slides.heading_due = true;
                    }
                    return Ok(());
                }
                "frame" if !empty => {
                    let class = attr(e, "class").unwrap_or_default();
                    if SLIDE_FURNITURE.contains(&class.as_str()) {
                        self.skipping = 1;
                    } else if class == "title" && slides.heading_due && slides.notes.is_none() {
                        slides.title = Some(String::new());
                        slides.title_chars = 0;
                    }
                    return Ok(());
                }
                "notes" if !empty => {
                    slides.notes = Some(true);
                    return Ok(());
                }
                _ => {}
            }
        }
        match name {
            "h" | "p" if !empty => {
                if self.paragraphs.len() == MAX_NESTING {
                    return Err(nested_too_deep());
                }
                let heading = (name == "h").then(|| {
                    attr(e, "outline-level")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(1usize)
                        .clamp(1, 6)
                });
                self.paragraphs.push(Paragraph {
                    text: String::new(),
                    chars: 0,
                    heading,
                });
            }
            "s" => {
                let n = attr(e, "c").and_then(|c| c.parse().ok()).unwrap_or(1usize);
                self.append(|text| text.push_str(&" ".repeat(n.min(MAX_SPACES))))?;
            }
            "tab" => self.append(|text| text.push('\t'))?,
            "line-break" => self.append(|text| text.push('\n'))?,
            "list" if !empty => {
                if self.lists.len() == MAX_NESTING {
                    return Err(nested_too_deep());
                }
                // A nested list without a style of its own follows its parent's.
                let style = attr(e, "style-name")
                    .or_else(|| self.lists.last().and_then(|l| l.style.clone()));
                // A list right after another one begins apart from it.
                if self.lists.is_empty() {
                    self.blocks.end_list();
                }
                self.lists.push(List {
                    style,
                    items: 0,
                    marked: false,
                });
            }
            "list-item" | "list-header" => {
                if let Some(list) = self.lists.last_mut() {
                    if name == "list-item" {
                        list.items += 1;
                    }
                    list.marked = name == "list-header";
                }
            }
            "table" if !empty => {
                if self.tables.len() == MAX_NESTING {
                    return Err(nested_too_deep());
                }
                if let (Some(sheets), true) = (&mut self.sheets, self.tables.is_empty()) {
                    let name =
                        attr(e, "name").unwrap_or_else(|| format!("Sheet {}", sheets.len() + 1));
                    self.blocks.heading(2, &name)?;
                    sheets.push(Value::String(name));
                }
                self.tables.push(Table::default());
            }
            "table-row" => {
                if let Some(t) = self.tables.last_mut() {
                    t.row.clear();
                    t.pending_empty = 0;
                    t.row_repeat = repeat(e, "number-rows-repeated");
                }
                if empty {
                    self.end_row()?;
                }
            }
            "table-cell" | "covered-table-cell" => {
                if let Some(t) = self.tables.last_mut() {
                    t.cell = Some((String::new(), repeat(e, "number-columns-repeated")));
                }
                if empty {
                    self.end_cell()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, name: &str) -> Result<(), ExtractError> {
        match name {
            "frame" => {
                if let Some(title) = self.slides.as_mut().and_then(|s| s.title.take()) {
                    self.slide_heading(Some(title.trim()))?;
                }
            }
            "notes" => {
                if let Some(slides) = &mut self.slides {
                    slides.notes = None;
                }
            }
            // A slide without text still has its section.
            "page" => self.slide_heading(None)?,
            "h" | "p" => self.end_paragraph()?,
            "list" => {
                self.lists.pop();
                // The end of a nested list is not the end of the list around it.
                if self.lists.is_empty() {
                    self.blocks.end_list();
                }
            }
            "table-cell" | "covered-table-cell" => self.end_cell()?,
            "table-row" => self.end_row()?,
            "table" => self.end_table()?,
            _ => {}
        }
        Ok(())
    }

    /// Adds to the open paragraph's text, within `max_chars`.
    fn append(&mut self, add: impl FnOnce(&mut String)) -> Result<(), ExtractError> {
        let Some(p) = self.paragraphs.last_mut() else {
            return Ok(());
        };
        let before = p.text.len();
        add(&mut p.text);
        p.chars += p.text[before..].chars().count();
        if p.chars > self.max_chars {
            return Err(ExtractError::too_large(format!(
                "a paragraph exceeds {} characters",
                self.max_chars
            )));
        }
        Ok(())
    }

    /// Writes the current slide's heading if it is still due: `Slide N: title`, or
    /// `Slide N` when the slide's text begins with anything but its title.
    fn slide_heading(&mut self, title: Option<&str>) -> Result<(), ExtractError> {
        let Some(slides) = self.slides.as_mut().filter(|s| s.heading_due) else {
            return Ok(());
        };
        slides.heading_due = false;
        let number = slides.position;
        self.blocks.end_list();
        match title.filter(|t| !t.is_empty()) {
            Some(title) => {
                if self.first_heading.is_none() {
                    self.first_heading = Some(title.to_owned());
                }
                self.blocks.heading(2, &format!("Slide {number}: {title}"))
            }
            None => self.blocks.heading(2, &format!("Slide {number}")),
        }
    }

    /// Before a block of a slide is written: the slide's heading, and the notes' heading
    /// before their first text.
    fn before_block(&mut self, has_text: bool) -> Result<(), ExtractError> {
        if self.slides.is_none() {
            return Ok(());
        }
        self.slide_heading(None)?;
        let Some(slides) = &mut self.slides else {
            return Ok(());
        };
        if slides.notes == Some(true) && has_text {
            slides.notes = Some(false);
            self.blocks.end_list();
            self.blocks.heading(3, "Notes")?;
        }
        Ok(())
    }

    fn end_paragraph(&mut self) -> Result<(), ExtractError> {
        let Some(p) = self.paragraphs.pop() else {
            return Ok(());
        };
        if let Some(Slides {
            title: Some(title),
            title_chars,
            ..
        }) = &mut self.slides
        {
            if !title.is_empty() && !p.text.trim().is_empty() {
                title.push(' ');
            }
            title.push_str(p.text.trim());
            // Bounded like a paragraph: a title frame may hold any number of them.
            *title_chars += p.chars + 1;
            if *title_chars > self.max_chars {
                return Err(ExtractError::too_large(format!(
                    "a slide's title exceeds {} characters",
                    self.max_chars
                )));
            }
            return Ok(());
        }
        if let Some(t) = self.tables.last_mut() {
            if let Some((cell, _)) = &mut t.cell {
                if !cell.is_empty() {
                    cell.push('\n');
                }
                cell.push_str(p.text.trim());
                return Ok(());
            }
        }
        self.before_block(!p.text.trim().is_empty())?;
        if let Some(level) = p.heading {
            if self.first_heading.is_none() && !p.text.trim().is_empty() {
                self.first_heading = Some(p.text.trim().to_owned());
            }
            self.blocks.end_list();
            return self.blocks.heading(level, &p.text);
        }
        let depth = self.lists.len();
        let Some(list) = self.lists.last_mut() else {
            return self.blocks.paragraph(&p.text);
        };
        if p.text.trim().is_empty() {
            return Ok(());
        }
        let marker = if list.marked {
            String::new()
        } else if self
            .list_styles
            .get(list.style.as_deref().unwrap_or_default())
            .and_then(|levels| levels.get(&depth))
            .copied()
            .unwrap_or(false)
        {
            format!("{}.", list.items)
        } else {
            "-".to_owned()
        };
        list.marked = true;
        self.blocks.list_item(depth - 1, &marker, &p.text)
    }

    fn end_cell(&mut self) -> Result<(), ExtractError> {
        let Some(t) = self.tables.last_mut() else {
            return Ok(());
        };
        let Some((text, repeat)) = t.cell.take() else {
            return Ok(());
        };
        if text.trim().is_empty() {
            t.pending_empty = t.pending_empty.saturating_add(repeat);
            return Ok(());
        }
        let cells = t.pending_empty.saturating_add(repeat);
        t.gathered = t.gathered.saturating_add(cells);
        if t.gathered > MAX_TABLE_CELLS {
            return Err(table_too_large());
        }
        let chars = text.chars().count().saturating_mul(repeat);
        hold(t, chars, self.max_chars)?;
        t.row
            .extend(std::iter::repeat_n(String::new(), t.pending_empty));
        t.row.extend(std::iter::repeat_n(text, repeat));
        t.pending_empty = 0;
        Ok(())
    }

    fn end_row(&mut self) -> Result<(), ExtractError> {
        let Some(t) = self.tables.last_mut() else {
            return Ok(());
        };
        let row = std::mem::take(&mut t.row);
        // Rows with no text are dropped when written; repeated empty rows (a spreadsheet's
        // thousand trailing ones) are never held.
        if row.is_empty() {
            return Ok(());
        }
        t.gathered = t
            .gathered
            .saturating_add(row.len().saturating_mul(t.row_repeat));
        if t.gathered > MAX_TABLE_CELLS {
            return Err(table_too_large());
        }
        // The row itself is held already; each repeat holds it again.
        let row_chars: usize = row.iter().map(|cell| cell.chars().count()).sum();
        hold(
            t,
            row_chars.saturating_mul(t.row_repeat - 1),
            self.max_chars,
        )?;
        for _ in 1..t.row_repeat {
            t.rows.push(row.clone());
        }
        t.rows.push(row);
        Ok(())
    }

    fn end_table(&mut self) -> Result<(), ExtractError> {
        let Some(table) = self.tables.pop() else {
            return Ok(());
        };
        // A table in a table's cell becomes that cell's text.
        if let Some((cell, _)) = self.tables.last_mut().and_then(|t| t.cell.as_mut()) {
            for row in &table.rows {
                if !cell.is_empty() {
                    cell.push('\n');
                }
                cell.push_str(&row.join(" "));
            }
            return Ok(());
        }
        let has_text = table.rows.iter().flatten().any(|c| !c.trim().is_empty());
        self.before_block(has_text)?;
        self.blocks.end_list();
        self.blocks.table(&table.rows)
    }
}

/// Counts `chars` more against what table `t` may hold before it is written.
fn hold(t: &mut Table, chars: usize, max_chars: usize) -> Result<(), ExtractError> {
    t.held = t.held.saturating_add(chars);
    if t.held > max_chars {
        return Err(ExtractError::too_large(format!(
            "a table's text exceeds {max_chars} characters"
        )));
    }
    Ok(())
}

fn repeat(e: &BytesStart, name: &str) -> usize {
    attr(e, name)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

fn nested_too_deep() -> ExtractError {
    ExtractError::too_large(format!(
        "lists or tables nested more than {MAX_NESTING} deep"
    ))
}
