//! DOCX: `word/document.xml` walked once with quick-xml; headings from paragraph styles
//! (and outline levels), lists from `numbering.xml`, tables, bold and italic runs, and
//! external hyperlinks.

use std::collections::HashMap;

use quick_xml::events::{BytesStart, Event};

use crate::blocks::{collapse_lines, Blocks};
use crate::limits::{table_too_large, Clock, Ctx, MAX_TABLE_CELLS};
use crate::ooxml::{attr, next, push_text, toggle, xml_reader, Package};
use crate::{DocumentFormat, ExtractError, Extracted};

/// Tables in tables, and links in links, followed this deep: each level copies the text
/// of those inside it, so unbounded nesting would make the work quadratic.
const MAX_NESTING: usize = 8;

pub(crate) fn extract(bytes: &[u8], cx: &mut Ctx) -> Result<Extracted, ExtractError> {
    let mut pkg = Package::open(bytes, cx.opts)?;
    let main = pkg.main_part("word/document.xml", &mut cx.clock)?;
    let rels = pkg.relationships(&main, &mut cx.clock)?;
    let part_of = |suffix: &str| {
        rels.values()
            .find(|r| r.kind.ends_with(suffix) && !r.external)
            .map(|r| r.target.clone())
    };
    let styles = match part_of("/styles") {
        Some(part) => Styles::parse(&mut pkg, &part, &mut cx.clock)?,
        None => Styles::default(),
    };
    let numbering = match part_of("/numbering") {
        Some(part) => Numbering::parse(&mut pkg, &part, &mut cx.clock)?,
        None => Numbering::default(),
    };
    let links: HashMap<String, String> = rels
        .iter()
        .filter(|(_, r)| r.external && r.kind.ends_with("/hyperlink"))
        .map(|(id, r)| (id.clone(), r.target.clone()))
        .collect();
    let (core_title, author) = pkg.title_and_author("docProps/core.xml", &mut cx.clock)?;
    let xml = pkg
        .read_text(&main, &cx.clock)?
        .ok_or_else(|| ExtractError::corrupt(format!("the package lacks its main part {main}")))?;

    let mut walker = Walker {
        blocks: Blocks::new(cx.out(), cx.markdown()),
        markdown: cx.markdown(),
        styles: &styles,
        numbering: &numbering,
        links: &links,
        counters: HashMap::new(),
        list: None,
        first_heading: None,
        paragraph: None,
        nested_paragraphs: 0,
        run: RunProps::default(),
        in_run_props: false,
        in_text: false,
        tables: Vec::new(),
        ignored_tables: 0,
        hyperlinks: Vec::new(),
        ignored_links: 0,
    };
    walker.walk(&xml, &main, &mut cx.clock)?;

    let first_heading = walker.first_heading.take();
    let mut extracted = Extracted::new(
        walker.blocks.into_string(),
        cx.opts.output,
        DocumentFormat::Docx,
    );
    extracted.title = core_title.or(first_heading);
    extracted.set_author(author);
    Ok(extracted)
}

#[derive(Default)]
struct Style {
    heading: Option<usize>,
    num: Option<(String, usize)>,
    based_on: Option<String>,
}

/// Paragraph styles by id, for heading levels and style-borne list numbering.
#[derive(Default)]
struct Styles(HashMap<String, Style>);

impl Styles {
    fn parse(pkg: &mut Package, part: &str, clock: &mut Clock) -> Result<Self, ExtractError> {
        let mut styles = HashMap::new();
        let Some(xml) = pkg.read_text(part, clock)? else {
            return Ok(Styles(styles));
        };
        let mut reader = xml_reader(&xml);
        let mut current: Option<(String, Style)> = None;
        let (mut ilvl, mut num_id) = (0usize, None::<String>);
        loop {
            clock.tick()?;
            let event = next(&mut reader, part)?;
            match &event {
                Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                    "style" => {
                        current = attr(e, "styleId").map(|id| (id, Style::default()));
                        if matches!(event, Event::Empty(_)) {
                            current = None;
                        }
                    }
                    "name" => {
                        if let (Some((_, style)), Some(name)) = (&mut current, attr(e, "val")) {
                            style.heading = style.heading.or(heading_from_name(&name));
                        }
                    }
                    "basedOn" => {
                        if let Some((_, style)) = &mut current {
                            style.based_on = attr(e, "val");
                        }
                    }
                    "outlineLvl" => {
                        if let Some((_, style)) = &mut current {
                            style.heading = style.heading.or(outline_level(e));
                        }
                    }
                    "ilvl" => ilvl = attr(e, "val").and_then(|v| v.parse().ok()).unwrap_or(0),
                    "numId" => num_id = attr(e, "val"),
                    "numPr" => (ilvl, num_id) = (0, None),
                    _ => {}
                },
                Event::End(e) => match e.local_name().as_ref() {
                    "numPr" => {
                        if let (Some((_, style)), Some(id)) = (&mut current, num_id.take()) {
                            style.num = Some((id, ilvl));
                        }
                    }
                    "style" => {
                        if let Some((id, style)) = current.take() {
                            styles.insert(id, style);
                        }
                    }
                    _ => {}
                },
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(Styles(styles))
    }

    /// Follows `basedOn` (a bounded number of steps: the chain may loop) until `get`
    /// finds something.
    fn lookup<T>(&self, id: &str, get: impl Fn(&Style) -> Option<T>) -> Option<T> {
        let mut id = id;
        for _ in 0..16 {
            let style = self.0.get(id)?;
            if let Some(found) = get(style) {
                return Some(found);
            }
            id = style.based_on.as_deref()?;
        }
        None
    }
}

/// The heading level a style's name says: `Title` 1, `heading 1`–`heading 9` (capped at 6).
/// RTF stylesheets name their styles the same way.
pub(crate) fn heading_from_name(name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    if name == "title" {
        return Some(1);
    }
    let level: usize = name.strip_prefix("heading")?.trim().parse().ok()?;
    (1..=9).contains(&level).then_some(level.min(6))
}

fn outline_level(e: &BytesStart) -> Option<usize> {
    let level: usize = attr(e, "val")?.parse().ok()?;
    (level < 9).then_some((level + 1).min(6))
}

struct Level {
    bullet: bool,
    none: bool,
    start: u32,
}

/// List definitions: `numId` → abstract definition → format of each level.
#[derive(Default)]
struct Numbering {
    nums: HashMap<String, String>,
    levels: HashMap<(String, usize), Level>,
}

impl Numbering {
    fn parse(pkg: &mut Package, part: &str, clock: &mut Clock) -> Result<Self, ExtractError> {
        let mut numbering = Numbering::default();
        let Some(xml) = pkg.read_text(part, clock)? else {
            return Ok(numbering);
        };
        let mut reader = xml_reader(&xml);
        let mut abstract_id: Option<String> = None;
        let mut level: Option<(usize, Level)> = None;
        let mut num_id: Option<String> = None;
        loop {
            clock.tick()?;
            match next(&mut reader, part)? {
                Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                    "abstractNum" => abstract_id = attr(&e, "abstractNumId"),
                    "lvl" => {
                        let ilvl = attr(&e, "ilvl").and_then(|v| v.parse().ok()).unwrap_or(0);
                        level = Some((
                            ilvl,
                            Level {
                                bullet: false,
                                none: false,
                                start: 1,
                            },
                        ));
                    }
                    "numFmt" => {
                        if let Some((_, lvl)) = &mut level {
                            let fmt = attr(&e, "val").unwrap_or_default();
                            lvl.bullet = fmt == "bullet";
                            lvl.none = fmt == "none";
                        }
                    }
                    "start" => {
                        if let Some((_, lvl)) = &mut level {
                            lvl.start = attr(&e, "val").and_then(|v| v.parse().ok()).unwrap_or(1);
                        }
                    }
                    "num" => num_id = attr(&e, "numId"),
                    "abstractNumId" => {
                        if let (Some(num), Some(abs)) = (num_id.take(), attr(&e, "val")) {
                            numbering.nums.insert(num, abs);
                        }
                    }
                    _ => {}
                },
                Event::End(e) => match e.local_name().as_ref() {
                    "lvl" => {
                        if let (Some(abs), Some((ilvl, lvl))) = (&abstract_id, level.take()) {
                            numbering.levels.insert((abs.clone(), ilvl), lvl);
                        }
                    }
                    // Level overrides inside <w:num> must not land in the last definition.
                    "abstractNum" => abstract_id = None,
                    _ => {}
                },
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(numbering)
    }

    fn level(&self, num_id: &str, ilvl: usize) -> Option<&Level> {
        let abs = self.nums.get(num_id)?;
        self.levels.get(&(abs.clone(), ilvl))
    }
}

#[derive(Default, Clone, Copy)]
struct RunProps {
    bold: bool,
    italic: bool,
    /// `w:vanish`: hidden text, which Word neither shows nor prints.
    hidden: bool,
}

enum Seg {
    Text(String, RunProps),
    /// Markup that is not run text (link brackets), never wrapped in emphasis.
    Raw(String),
}

#[derive(Default)]
struct Paragraph {
    segs: Vec<Seg>,
    style: Option<String>,
    num_id: Option<String>,
    ilvl: usize,
    outline: Option<usize>,
    in_props: bool,
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: String,
    span: usize,
    /// Cells and rows gathered, against `MAX_TABLE_CELLS`.
    gathered: usize,
}

struct Walker<'a> {
    blocks: Blocks,
    markdown: bool,
    styles: &'a Styles,
    numbering: &'a Numbering,
    links: &'a HashMap<String, String>,
    counters: HashMap<(String, usize), u32>,
    /// The list (`numId`) the last list item belonged to.
    list: Option<String>,
    first_heading: Option<String>,
    paragraph: Option<Paragraph>,
    /// Paragraphs inside the current one (text boxes) merge into it.
    nested_paragraphs: usize,
    run: RunProps,
    in_run_props: bool,
    in_text: bool,
    tables: Vec<Table>,
    /// Tables nested deeper than [`MAX_NESTING`], read as paragraphs of the cell around.
    ignored_tables: usize,
    /// Open hyperlinks: the segment index where each began and its URL, if external.
    hyperlinks: Vec<(usize, Option<String>)>,
    ignored_links: usize,
}

impl Walker<'_> {
    fn walk(&mut self, xml: &str, part: &str, clock: &mut Clock) -> Result<(), ExtractError> {
        let mut reader = xml_reader(xml);
        // Depth of an element whose whole subtree is ignored, and the current depth.
        let mut skip_from: Option<usize> = None;
        let mut depth = 0usize;
        loop {
            clock.tick()?;
            let event = next(&mut reader, part)?;
            match &event {
                Event::Start(e) => {
                    depth += 1;
                    if skip_from.is_none() {
                        // A Fallback repeats its Choice; the others hold removed text or
                        // formatting that no longer applies.
                        let skipped = ["Fallback", "moveFrom", "del", "pPrChange", "rPrChange"];
                        if skipped.contains(&e.local_name().as_ref()) {
                            skip_from = Some(depth);
                        } else {
                            self.start(e, false)?;
                        }
                    }
                }
                Event::Empty(e) => {
                    if skip_from.is_none() {
                        self.start(e, true)?;
                    }
                }
                Event::End(e) => {
                    if skip_from == Some(depth) {
                        skip_from = None;
                    } else if skip_from.is_none() {
                        self.end(e.local_name().as_ref())?;
                    }
                    depth = depth.saturating_sub(1);
                }
                Event::Eof => break,
                ev => {
                    if skip_from.is_none() && self.in_text {
                        if let Some(Paragraph { segs, .. }) = &mut self.paragraph {
                            let mut text = String::new();
                            push_text(&mut text, ev);
                            push_seg(segs, Seg::Text(text, self.run));
                        }
                    }
                }
            }
        }
        // A truncated document still yields what it had.
        if self.paragraph.is_some() {
            self.end_paragraph()?;
        }
        while !self.tables.is_empty() {
            self.end_table()?;
        }
        Ok(())
    }

    fn start(&mut self, e: &BytesStart, empty: bool) -> Result<(), ExtractError> {
        let name = e.local_name();
        let name = name.as_ref();
        if let Some(p) = &mut self.paragraph {
            if p.in_props {
                match name {
                    "pStyle" => p.style = attr(e, "val"),
                    "numId" => p.num_id = attr(e, "val"),
                    "ilvl" => p.ilvl = attr(e, "val").and_then(|v| v.parse().ok()).unwrap_or(0),
                    "outlineLvl" => p.outline = outline_level(e),
                    _ => {}
                }
                return Ok(());
            }
            if self.in_run_props {
                match name {
                    "b" => self.run.bold = toggle(e),
                    "i" => self.run.italic = toggle(e),
                    "vanish" => self.run.hidden = toggle(e),
                    _ => {}
                }
                return Ok(());
            }
        }
        match name {
            "p" if !empty => {
                if self.paragraph.is_some() {
                    self.nested_paragraphs += 1;
                    self.push_raw_text("\n");
                } else {
                    self.paragraph = Some(Paragraph::default());
                }
            }
            "pPr" if !empty && self.nested_paragraphs == 0 => {
                if let Some(p) = &mut self.paragraph {
                    p.in_props = true;
                }
            }
            "r" => self.run = RunProps::default(),
            "rPr" if !empty => self.in_run_props = true,
            "t" if !empty => self.in_text = true,
            "tab" => self.push_raw_text("\t"),
            "br" | "cr" => self.push_raw_text("\n"),
            "noBreakHyphen" => self.push_raw_text("-"),
            "hyperlink" if !empty && self.hyperlinks.len() >= MAX_NESTING => {
                self.ignored_links += 1
            }
            "hyperlink" if !empty => {
                if let Some(p) = &mut self.paragraph {
                    let url = attr(e, "id").and_then(|id| self.links.get(&id).cloned());
                    // An empty mark keeps the link's runs from merging into earlier text.
                    p.segs.push(Seg::Raw(String::new()));
                    self.hyperlinks.push((p.segs.len() - 1, url));
                }
            }
            "tbl" if !empty => {
                if self.tables.len() < MAX_NESTING {
                    self.tables.push(Table::default());
                } else {
                    self.ignored_tables += 1;
                }
            }
            _ if self.ignored_tables > 0 => {}
            "tr" if !empty => {
                if let Some(t) = self.tables.last_mut() {
                    t.row.clear();
                }
            }
            "tc" if !empty => {
                if let Some(t) = self.tables.last_mut() {
                    t.cell.clear();
                    t.span = 1;
                }
            }
            "gridSpan" => {
                if let Some(t) = self.tables.last_mut() {
                    t.span = attr(e, "val")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1)
                        .clamp(1, 64);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self, name: &str) -> Result<(), ExtractError> {
        match name {
            "pPr" => {
                if let Some(p) = &mut self.paragraph {
                    p.in_props = false;
                }
            }
            "rPr" => self.in_run_props = false,
            "t" => self.in_text = false,
            "p" => {
                if self.nested_paragraphs > 0 {
                    self.nested_paragraphs -= 1;
                } else if self.paragraph.is_some() {
                    self.end_paragraph()?;
                }
            }
            "hyperlink" if self.ignored_links > 0 => self.ignored_links -= 1,
            "hyperlink" => {
                if let (Some((at, Some(url))), Some(p)) =
                    (self.hyperlinks.pop(), &mut self.paragraph)
                {
                    let has_text = p.segs.iter().skip(at + 1).any(|s| match s {
                        Seg::Text(t, _) => !t.trim().is_empty(),
                        Seg::Raw(_) => false,
                    });
                    if self.markdown && has_text {
                        p.segs[at] = Seg::Raw("[".into());
                        p.segs.push(Seg::Raw(format!("]({url})")));
                    }
                }
            }
            "tbl" if self.ignored_tables > 0 => self.ignored_tables -= 1,
            "tc" | "tr" if self.ignored_tables > 0 => {}
            "tc" => {
                if let Some(t) = self.tables.last_mut() {
                    t.gathered = t.gathered.saturating_add(t.span.max(1));
                    if t.gathered > MAX_TABLE_CELLS {
                        return Err(table_too_large());
                    }
                    let cell = std::mem::take(&mut t.cell);
                    t.row.push(cell.trim().to_owned());
                    for _ in 1..t.span {
                        t.row.push(String::new());
                    }
                }
            }
            "tr" => {
                if let Some(t) = self.tables.last_mut() {
                    t.gathered = t.gathered.saturating_add(1);
                    if t.gathered > MAX_TABLE_CELLS {
                        return Err(table_too_large());
                    }
                    let row = std::mem::take(&mut t.row);
                    t.rows.push(row);
                }
            }
            "tbl" => self.end_table()?,
            _ => {}
        }
        Ok(())
    }

    fn push_raw_text(&mut self, s: &str) {
        if let Some(p) = &mut self.paragraph {
            if !p.in_props {
                push_seg(&mut p.segs, Seg::Text(s.to_owned(), self.run));
            }
        }
    }

    fn end_paragraph(&mut self) -> Result<(), ExtractError> {
        let Some(p) = self.paragraph.take() else {
            return Ok(());
        };
        self.nested_paragraphs = 0;
        self.in_text = false;
        self.in_run_props = false;
        self.hyperlinks.clear();
        self.ignored_links = 0;

        if let Some(table) = self.tables.last_mut() {
            let text = render(&p.segs, false);
            let text = text.trim();
            if !text.is_empty() {
                if !table.cell.is_empty() {
                    table.cell.push('\n');
                }
                table.cell.push_str(text);
            }
            return Ok(());
        }

        let style = p.style.as_deref();
        let heading = p
            .outline
            .or_else(|| style.and_then(|s| self.styles.lookup(s, |st| st.heading)));
        if let Some(level) = heading {
            let text = collapse_lines(&render(&p.segs, false));
            if self.first_heading.is_none() && !text.is_empty() {
                self.first_heading = Some(text.clone());
            }
            return self.blocks.heading(level, &text);
        }

        let num = match p.num_id {
            Some(id) => Some((id, p.ilvl)),
            None => style.and_then(|s| self.styles.lookup(s, |st| st.num.clone())),
        };
        let text = render(&p.segs, self.markdown);
        match num.filter(|(id, _)| id != "0") {
            Some((id, ilvl)) => {
                let level = self.numbering.level(&id, ilvl);
                if level.is_some_and(|l| l.none) {
                    return self.blocks.paragraph(&text);
                }
                let marker = match level {
                    Some(l) if !l.bullet => {
                        let n = self
                            .counters
                            .entry((id.clone(), ilvl))
                            .or_insert(l.start.saturating_sub(1));
                        *n = n.saturating_add(1);
                        format!("{n}.")
                    }
                    _ => "-".to_owned(),
                };
                // A new item restarts the numbering of the levels below it.
                self.counters
                    .retain(|(num, lvl), _| *num != id || *lvl <= ilvl);
                if self.list.as_deref().is_some_and(|prev| prev != id) {
                    self.blocks.end_list();
                }
                self.list = Some(id);
                self.blocks.list_item(ilvl, &marker, &text)
            }
            None => self.blocks.paragraph(&text),
        }
    }

    fn end_table(&mut self) -> Result<(), ExtractError> {
        let Some(mut table) = self.tables.pop() else {
            return Ok(());
        };
        if !table.row.is_empty() {
            let row = std::mem::take(&mut table.row);
            table.rows.push(row);
        }
        match self.tables.last_mut() {
            // A table inside a cell becomes lines of that cell.
            Some(outer) => {
                for row in &table.rows {
                    let line = row
                        .iter()
                        .filter(|c| !c.is_empty())
                        .cloned()
                        .collect::<Vec<_>>();
                    if !line.is_empty() {
                        if !outer.cell.is_empty() {
                            outer.cell.push('\n');
                        }
                        outer.cell.push_str(&line.join(" "));
                    }
                }
                Ok(())
            }
            None => self.blocks.table(&table.rows),
        }
    }
}

fn push_seg(segs: &mut Vec<Seg>, seg: Seg) {
    if matches!(&seg, Seg::Text(_, props) if props.hidden) {
        return;
    }
    if let (Some(Seg::Text(last, last_props)), Seg::Text(text, props)) = (segs.last_mut(), &seg) {
        if last_props.bold == props.bold && last_props.italic == props.italic {
            last.push_str(text);
            return;
        }
    }
    segs.push(seg);
}

/// The paragraph's text; with `emphasis`, bold and italic runs are wrapped in Markdown
/// markers, with surrounding spaces kept outside them (`** x**` would not render).
fn render(segs: &[Seg], emphasis: bool) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Raw(raw) => s.push_str(raw),
            Seg::Text(text, props) => {
                let marker = match (emphasis, props.bold, props.italic) {
                    (false, _, _) | (_, false, false) => "",
                    (_, true, true) => "***",
                    (_, true, false) => "**",
                    (_, false, true) => "*",
                };
                let core = text.trim();
                if marker.is_empty() || core.is_empty() {
                    s.push_str(text);
                } else {
                    let lead = &text[..text.len() - text.trim_start().len()];
                    let trail = &text[text.trim_end().len()..];
                    s.push_str(lead);
                    s.push_str(marker);
                    s.push_str(core);
                    s.push_str(marker);
                    s.push_str(trail);
                }
            }
        }
    }
    s
}
