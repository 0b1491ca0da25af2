//! The main document's characters, in CP order, read into paragraphs, table cells and rows,
//! headings and list items. Word's text carries its structure as characters: 0x0D ends a
//! paragraph, 0x07 a table cell or row (the paragraph properties tell which), 0x0C a page or
//! section, 0x0B breaks a line; 0x13, 0x14 and 0x15 begin a field, separate its instruction
//! from its result and end it (fields nest); 0x01 and 0x08 anchor pictures and drawings.

use super::lists::Lists;
use super::props::{Bins, ParagraphSprms};
use super::styles::{outline_heading, Styles};
use crate::rtf::hyperlink_target;
use crate::rtf::layout::{Anchor, Layout, Role};
use crate::ExtractError;

/// Fields open at once, at most; deeper ones are counted, not kept.
const MAX_FIELD_DEPTH: usize = 64;
/// Bytes kept of a field instruction: a URL and its switches.
const MAX_INSTRUCTION_BYTES: usize = 4096;

const PARAGRAPH_END: char = '\r';
const CELL_END: char = '\x07';
const PAGE_BREAK: char = '\x0C';
const LINE_BREAK: char = '\x0B';
const FIELD_BEGIN: char = '\x13';
const FIELD_SEPARATOR: char = '\x14';
const FIELD_END: char = '\x15';
const NON_BREAKING_HYPHEN: char = '\x1E';

struct Field {
    instruction: String,
    /// Where the field's visible result began, once its separator has been read.
    result: Option<Anchor>,
}

/// What a paragraph's properties make of it.
struct Paragraph {
    role: Role,
    /// The list (`ilfo`) and level of a list item.
    list: Option<(u16, u8)>,
    in_table: bool,
    /// Whether its mark, a 0x07, ends a row rather than a cell; `None` when the properties
    /// do not say (no table properties were found).
    row_end: Option<bool>,
}

pub(super) struct TextReader<'a> {
    layout: Layout,
    paragraphs: Bins<'a>,
    characters: Bins<'a>,
    styles: Styles,
    lists: Lists,
    /// Open fields, innermost last.
    fields: Vec<Field>,
    /// Open fields still in their instruction: text inside any of them is not shown.
    in_instruction: usize,
    /// Fields begun past `MAX_FIELD_DEPTH`, whose ends must not close a kept one.
    untracked_fields: usize,
    /// The paragraph being gathered has visible text.
    has_text: bool,
    /// The last paragraph ended a table cell.
    after_cell: bool,
}

impl<'a> TextReader<'a> {
    pub(super) fn new(
        layout: Layout,
        paragraphs: Bins<'a>,
        characters: Bins<'a>,
        styles: Styles,
        lists: Lists,
    ) -> Self {
        TextReader {
            layout,
            paragraphs,
            characters,
            styles,
            lists,
            fields: Vec::new(),
            in_instruction: 0,
            untracked_fields: 0,
            has_text: false,
            after_cell: false,
        }
    }

    /// Reads character `c`, found at offset `fc` of the `WordDocument` stream.
    pub(super) fn read_char(&mut self, c: char, fc: u32) -> Result<(), ExtractError> {
        match c {
            PARAGRAPH_END | PAGE_BREAK => self.end_paragraph(fc),
            CELL_END => self.end_cell_or_row(fc),
            LINE_BREAK => self.text("\n", fc),
            '\t' => self.text("\t", fc),
            FIELD_BEGIN => {
                self.begin_field();
                Ok(())
            }
            FIELD_SEPARATOR => {
                self.separate_field();
                Ok(())
            }
            FIELD_END => self.end_field(),
            NON_BREAKING_HYPHEN => self.text("-", fc),
            // Picture and drawing anchors, note references, the optional hyphen (0x1F), and
            // the C1 controls undefined bytes decode to.
            c if c.is_control() => Ok(()),
            c => self.text(c.encode_utf8(&mut [0; 4]), fc),
        }
    }

    /// Gives `text` to the field instruction being read, or to the paragraph unless a field
    /// instruction or the character properties hide it.
    fn text(&mut self, text: &str, fc: u32) -> Result<(), ExtractError> {
        if let Some(field) = self.fields.last_mut().filter(|f| f.result.is_none()) {
            if field.instruction.len() < MAX_INSTRUCTION_BYTES {
                field.instruction.push_str(text);
            }
            return Ok(());
        }
        if self.in_instruction > 0 || !self.characters.character_at(fc).shows_text() {
            return Ok(());
        }
        self.has_text |= !text.trim().is_empty();
        self.layout.push_text(text)
    }

    fn begin_field(&mut self) {
        if self.fields.len() >= MAX_FIELD_DEPTH {
            self.untracked_fields += 1;
            return;
        }
        self.fields.push(Field {
            instruction: String::new(),
            result: None,
        });
        self.in_instruction += 1;
    }

    fn separate_field(&mut self) {
        if self.untracked_fields > 0 {
            return;
        }
        let anchor = self.layout.anchor();
        if let Some(field) = self.fields.last_mut().filter(|f| f.result.is_none()) {
            field.result = Some(anchor);
            self.in_instruction -= 1;
        }
    }

    /// Ends the innermost field; a hyperlink's result becomes a link to its target.
    fn end_field(&mut self) -> Result<(), ExtractError> {
        if self.untracked_fields > 0 {
            self.untracked_fields -= 1;
            return Ok(());
        }
        let Some(field) = self.fields.pop() else {
            return Ok(());
        };
        match field.result {
            None => {
                self.in_instruction -= 1;
                Ok(())
            }
            Some(anchor) => match hyperlink_target(&field.instruction) {
                Some(url) => self.layout.link(anchor, &url),
                None => Ok(()),
            },
        }
    }

    fn end_paragraph(&mut self, fc: u32) -> Result<(), ExtractError> {
        let paragraph = self.paragraph_at(fc);
        self.has_text = false;
        self.after_cell = false;
        if let Some((list, level)) = paragraph.list {
            // Word numbers the items itself: the text has no numbers to copy.
            if let Some(marker) = self.lists.next_marker(list, level) {
                self.layout.set_marker(marker);
            }
        }
        self.layout
            .end_paragraph(paragraph.role, paragraph.in_table)
    }

    /// A 0x07 mark: the end of a cell, or of a row when the paragraph is the row's end (its
    /// properties say `fTtp`). Without table properties, an empty mark right after a cell's
    /// ends the row, as Word's row-end paragraphs are.
    fn end_cell_or_row(&mut self, fc: u32) -> Result<(), ExtractError> {
        let paragraph = self.paragraph_at(fc);
        let row_end = paragraph
            .row_end
            .unwrap_or(self.after_cell && !self.has_text);
        self.has_text = false;
        self.after_cell = !row_end;
        if row_end {
            // The row-end paragraph's own text (none, as Word writes it) is kept as a cell.
            self.layout.end_paragraph(Role::Plain, true)?;
            self.layout.end_row()
        } else {
            self.layout.end_cell()
        }
    }

    /// The paragraph whose mark is at `fc`, as its properties and its style make it.
    fn paragraph_at(&mut self, fc: u32) -> Paragraph {
        let Some(run) = self.paragraphs.paragraph_at(fc) else {
            return Paragraph {
                role: Role::Plain,
                list: None,
                in_table: false,
                row_end: None,
            };
        };
        let sprms: ParagraphSprms = run.sprms.over(self.styles.sprms(run.style));
        let heading = outline_heading(run.sprms.outline_level)
            .or_else(|| self.styles.heading_level(run.style));
        let list = sprms.list_item().filter(|_| heading.is_none());
        let role = match (heading, list) {
            (Some(level), _) => Role::Heading(level),
            (None, Some((list, depth))) => Role::ListItem {
                list: i32::from(list),
                depth: usize::from(depth),
            },
            (None, None) => Role::Plain,
        };
        let in_table = sprms.in_table();
        Paragraph {
            role,
            list,
            in_table,
            row_end: in_table.then(|| sprms.row_end.unwrap_or(false)),
        }
    }

    /// Writes what is left and returns the text and the first heading.
    pub(super) fn finish(self) -> Result<(String, Option<String>), ExtractError> {
        self.layout.finish(Role::Plain, false)
    }
}
