//! PPTX: the slides in the order `ppt/presentation.xml` lists them, each a section headed by
//! its number (as PowerPoint numbers it, hidden slides counted) and title, then its text frames (bullets by level in body placeholders), its
//! tables, and its speaker notes. Hidden slides are left out; footers, dates and slide
//! numbers too. Each part is walked once with quick-xml.

use quick_xml::events::{BytesStart, Event};
use serde_json::Value;

use crate::blocks::{collapse_lines, Blocks};
use crate::limits::{table_too_large, Clock, Ctx, MAX_TABLE_CELLS};
use crate::ooxml::{attr, next, push_text, xml_reader, Package};
use crate::{DocumentFormat, ExtractError, Extracted};

/// Slides listed more than this are not a presentation anyone shows.
const MAX_SLIDES: usize = 10_000;

pub(crate) fn extract(bytes: &[u8], cx: &mut Ctx) -> Result<Extracted, ExtractError> {
    let mut pkg = Package::open(bytes, cx.opts)?;
    let main = pkg.main_part("ppt/presentation.xml", &mut cx.clock)?;
    let xml = pkg
        .read_text(&main, &cx.clock)?
        .ok_or_else(|| ExtractError::corrupt(format!("the package lacks its main part {main}")))?;
    let listed = slide_list(&xml, &main, &mut cx.clock)?;
    let rels = pkg.relationships(&main, &mut cx.clock)?;
    let (core_title, author) = pkg.title_and_author("docProps/core.xml", &mut cx.clock)?;

    let mut blocks = Blocks::new(cx.out(), cx.markdown());
    let (mut shown, mut hidden) = (0u32, 0u32);
    let mut first_title = None;
    for (position, id) in listed.iter().enumerate() {
        let Some(part) = rels
            .get(id)
            .filter(|r| !r.external && r.kind.ends_with("/slide"))
            .map(|r| r.target.clone())
        else {
            continue;
        };
        let Some(slide_xml) = pkg.read_text(&part, &cx.clock)? else {
            continue;
        };
        let slide = Slide::parse(&slide_xml, &part, &mut cx.clock)?;
        if slide.hidden {
            hidden += 1;
            continue;
        }
        shown += 1;
        let notes = notes_of(&mut pkg, &part, &mut cx.clock)?;
        let title = slide.title();
        if first_title.is_none() {
            first_title.clone_from(&title);
        }
        let number = position + 1;
        let heading = match &title {
            Some(title) => format!("Slide {number}: {title}"),
            None => format!("Slide {number}"),
        };
        blocks.heading(2, &heading)?;
        write_items(&mut blocks, &slide.items, true)?;
        if notes.items.iter().any(Item::has_text) {
            blocks.heading(3, "Notes")?;
            write_items(&mut blocks, &notes.items, false)?;
        }
        cx.clock.check()?;
    }

    let mut extracted = Extracted::new(blocks.into_string(), cx.opts.output, DocumentFormat::Pptx);
    extracted.pages = Some(shown);
    extracted.title = core_title.or(first_title);
    extracted
        .metadata
        .insert("slides".into(), Value::from(shown));
    if hidden > 0 {
        extracted
            .metadata
            .insert("hidden_slides".into(), Value::from(hidden));
    }
    extracted.set_author(author);
    Ok(extracted)
}

/// The relationship ids of `<p:sldIdLst>`, in presentation order.
fn slide_list(xml: &str, part: &str, clock: &mut Clock) -> Result<Vec<String>, ExtractError> {
    let mut reader = xml_reader(xml);
    let mut ids = Vec::new();
    loop {
        clock.tick()?;
        match next(&mut reader, part)? {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == "sldId" => {
                if ids.len() == MAX_SLIDES {
                    return Err(ExtractError::too_large(format!(
                        "the presentation lists more than {MAX_SLIDES} slides"
                    )));
                }
                if let Some(id) = attr(&e, "id").and(relationship_id(&e)) {
                    ids.push(id);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(ids)
}

/// `r:id`: the attribute named `id` in the relationships namespace (the slide's own `id` has
/// no prefix).
fn relationship_id(e: &BytesStart) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() != "id" && a.key.local_name().as_ref() == "id")
        .map(|a| a.value.into_owned())
}

/// The speaker notes of the slide `part`: its notes slide's body placeholder.
fn notes_of(pkg: &mut Package, part: &str, clock: &mut Clock) -> Result<Slide, ExtractError> {
    let rels = pkg.relationships(part, clock)?;
    let Some(notes) = rels
        .values()
        .find(|r| !r.external && r.kind.ends_with("/notesSlide"))
        .map(|r| r.target.clone())
    else {
        return Ok(Slide::default());
    };
    let Some(xml) = pkg.read_text(&notes, clock)? else {
        return Ok(Slide::default());
    };
    let mut slide = Slide::parse(&xml, &notes, clock)?;
    // The notes page also holds the slide's image and its number; only the body is notes.
    slide
        .items
        .retain(|item| matches!(item, Item::Text { placeholder: Some(p), .. } if p == "body"));
    Ok(slide)
}

#[derive(Debug, Default)]
struct Slide {
    hidden: bool,
    items: Vec<Item>,
}

#[derive(Debug)]
enum Item {
    /// A shape's text: its placeholder type (`title`, `body`, …; `obj` for an untyped
    /// placeholder) if it is one.
    Text {
        placeholder: Option<String>,
        paragraphs: Vec<Paragraph>,
    },
    Table(Vec<Vec<String>>),
}

#[derive(Debug, Default)]
struct Paragraph {
    text: String,
    level: usize,
    bullet: Bullet,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Bullet {
    /// As the shape has it: bulleted in a body placeholder, plain elsewhere.
    #[default]
    Inherited,
    None,
    Char,
    Numbered,
}

impl Item {
    fn has_text(&self) -> bool {
        match self {
            Item::Text { paragraphs, .. } => paragraphs.iter().any(|p| !p.text.trim().is_empty()),
            Item::Table(rows) => rows.iter().flatten().any(|c| !c.trim().is_empty()),
        }
    }
}

impl Slide {
    fn title(&self) -> Option<String> {
        self.items.iter().find_map(|item| match item {
            Item::Text {
                placeholder: Some(p),
                paragraphs,
            } if is_title(p) => {
                let text = paragraphs
                    .iter()
                    .map(|p| p.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                let text = collapse_lines(&text);
                (!text.is_empty()).then_some(text)
            }
            _ => None,
        })
    }

    fn parse(xml: &str, part: &str, clock: &mut Clock) -> Result<Slide, ExtractError> {
        let mut reader = xml_reader(xml);
        let mut slide = Slide::default();
        let mut shape: Option<(Option<String>, Vec<Paragraph>)> = None;
        let mut table: Option<Vec<Vec<String>>> = None;
        let mut cells = 0usize;
        let mut paragraph: Option<Paragraph> = None;
        let mut in_text = false;
        loop {
            clock.tick()?;
            let event = next(&mut reader, part)?;
            match &event {
                Event::Start(e) | Event::Empty(e) => {
                    let empty = matches!(event, Event::Empty(_));
                    match e.local_name().as_ref() {
                        "sld" => slide.hidden = attr(e, "show").is_some_and(|v| v == "0"),
                        "sp" if !empty => shape = Some((None, Vec::new())),
                        "ph" => {
                            if let Some((placeholder, _)) = &mut shape {
                                *placeholder =
                                    Some(attr(e, "type").unwrap_or_else(|| "obj".into()));
                            }
                        }
                        "tbl" if !empty => table = Some(Vec::new()),
                        "tr" => {
                            if let Some(rows) = &mut table {
                                rows.push(Vec::new());
                            }
                        }
                        "tc" => {
                            if let Some(row) = table.as_mut().and_then(|rows| rows.last_mut()) {
                                cells += 1;
                                if cells > MAX_TABLE_CELLS {
                                    return Err(table_too_large());
                                }
                                row.push(String::new());
                            }
                        }
                        "p" if !empty => paragraph = Some(Paragraph::default()),
                        "pPr" => {
                            if let Some(p) = &mut paragraph {
                                p.level = attr(e, "lvl")
                                    .and_then(|l| l.parse().ok())
                                    .unwrap_or(0)
                                    .min(8);
                            }
                        }
                        "buNone" => set_bullet(&mut paragraph, Bullet::None),
                        "buChar" | "buBlip" => set_bullet(&mut paragraph, Bullet::Char),
                        "buAutoNum" => set_bullet(&mut paragraph, Bullet::Numbered),
                        "br" => {
                            if let Some(p) = &mut paragraph {
                                p.text.push('\n');
                            }
                        }
                        "t" if !empty => in_text = true,
                        _ => {}
                    }
                }
                Event::End(e) => match e.local_name().as_ref() {
                    "t" => in_text = false,
                    "p" => {
                        let Some(p) = paragraph.take() else { continue };
                        // A table cell's paragraphs are its lines; a shape's are its own.
                        if let Some(cell) = table
                            .as_mut()
                            .and_then(|rows| rows.last_mut())
                            .and_then(|row| row.last_mut())
                        {
                            if !cell.is_empty() {
                                cell.push('\n');
                            }
                            cell.push_str(&p.text);
                        } else if let Some((_, paragraphs)) = &mut shape {
                            paragraphs.push(p);
                        }
                    }
                    "sp" => {
                        if let Some((placeholder, paragraphs)) = shape.take() {
                            if !placeholder.as_deref().is_some_and(is_furniture) {
                                slide.items.push(Item::Text {
                                    placeholder,
                                    paragraphs,
                                });
                            }
                        }
                    }
                    "tbl" => {
                        if let Some(rows) = table.take() {
                            slide.items.push(Item::Table(rows));
                        }
                    }
                    _ => {}
                },
                Event::Eof => break,
                ev => {
                    if in_text {
                        if let Some(p) = &mut paragraph {
                            push_text(&mut p.text, ev);
                        }
                    }
                }
            }
        }
        Ok(slide)
    }
}

fn set_bullet(paragraph: &mut Option<Paragraph>, bullet: Bullet) {
    if let Some(p) = paragraph {
        p.bullet = bullet;
    }
}

fn is_title(placeholder: &str) -> bool {
    matches!(placeholder, "title" | "ctrTitle")
}

/// Placeholders that repeat on every slide rather than say anything of it.
fn is_furniture(placeholder: &str) -> bool {
    matches!(placeholder, "dt" | "ftr" | "hdr" | "sldNum")
}

/// A slide's items after its heading; `bodies_are_lists` (slides, not notes) writes the
/// paragraphs of body placeholders as bullets unless they say otherwise.
fn write_items(
    blocks: &mut Blocks,
    items: &[Item],
    bodies_are_lists: bool,
) -> Result<(), ExtractError> {
    for item in items {
        match item {
            Item::Text {
                placeholder,
                paragraphs,
            } => {
                let placeholder = placeholder.as_deref();
                if placeholder.is_some_and(is_title) {
                    continue;
                }
                let body = bodies_are_lists && matches!(placeholder, Some("body" | "obj"));
                let mut numbers = [0usize; 9];
                for p in paragraphs {
                    let text = p.text.trim();
                    let listed = match p.bullet {
                        Bullet::Inherited => body,
                        Bullet::None => false,
                        Bullet::Char | Bullet::Numbered => true,
                    };
                    if text.is_empty() {
                        continue;
                    }
                    if !listed {
                        blocks.end_list();
                        blocks.paragraph(text)?;
                        continue;
                    }
                    // A numbered item counts among its level's items since a shallower one.
                    numbers[p.level] += 1;
                    numbers[p.level + 1..].iter_mut().for_each(|n| *n = 0);
                    let marker = if p.bullet == Bullet::Numbered {
                        format!("{}.", numbers[p.level])
                    } else {
                        "-".to_owned()
                    };
                    blocks.list_item(p.level, &marker, text)?;
                }
                blocks.end_list();
            }
            Item::Table(rows) => blocks.table(rows)?,
        }
    }
    Ok(())
}
