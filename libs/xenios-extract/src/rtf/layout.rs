//! The running text of an RTF document gathered into paragraphs and table rows, and written as
//! blocks once each is complete. A Word 97–2003 document's text ([`crate::doc`]) has the same
//! shape (paragraph marks, cell and row marks, fields) and is gathered here too.

use crate::blocks::{collapse_lines, Blocks};
use crate::limits::{table_too_large, MAX_TABLE_CELLS};
use crate::ExtractError;

/// What an ended paragraph is, as its properties say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Plain,
    /// Level 1–6.
    Heading(usize),
    /// An item of the list `list` (its `\ls` number), `depth` levels in (0 = outermost).
    ListItem {
        list: i32,
        depth: usize,
    },
}

/// Where a link's text began: in which paragraph, and where in its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Anchor {
    paragraph: u64,
    at: usize,
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: String,
    /// Cells and rows gathered, against `MAX_TABLE_CELLS`.
    gathered: usize,
    /// Characters held in `rows`, `row` and `cell`.
    chars: usize,
}

impl Table {
    fn has_pending_row(&self) -> bool {
        !self.row.is_empty() || !self.cell.trim().is_empty()
    }
}

pub(crate) struct Layout {
    blocks: Blocks,
    markdown: bool,
    /// `max_output_chars`: no paragraph or table may hold more before it is written.
    max_chars: usize,
    paragraph: String,
    paragraph_chars: usize,
    /// Paragraphs ended so far: the number of the one being gathered.
    paragraphs: u64,
    /// The text of the paragraph's `\listtext` (or `\pntext`): its bullet or number.
    marker: Option<String>,
    table: Option<Table>,
    /// The list of the last item written, so that a different list starts apart from it.
    last_list: Option<i32>,
    first_heading: Option<String>,
}

impl Layout {
    pub(crate) fn new(blocks: Blocks, markdown: bool, max_chars: usize) -> Self {
        Layout {
            blocks,
            markdown,
            max_chars,
            paragraph: String::new(),
            paragraph_chars: 0,
            paragraphs: 0,
            marker: None,
            table: None,
            last_list: None,
            first_heading: None,
        }
    }

    pub(crate) fn push_text(&mut self, text: &str) -> Result<(), ExtractError> {
        self.paragraph.push_str(text);
        self.hold(text.chars().count())
    }

    /// Counts `chars` more against what may be held before it is written.
    fn hold(&mut self, chars: usize) -> Result<(), ExtractError> {
        self.paragraph_chars = self.paragraph_chars.saturating_add(chars);
        let table_chars = self.table.as_ref().map_or(0, |t| t.chars);
        if self.paragraph_chars.saturating_add(table_chars) > self.max_chars {
            return Err(ExtractError::too_large(format!(
                "the extracted text exceeds {} characters",
                self.max_chars
            )));
        }
        Ok(())
    }

    /// Records the bullet or number a list paragraph shows, as its `\listtext` holds it.
    pub(crate) fn set_marker(&mut self, marker: String) {
        self.marker = Some(marker);
    }

    pub(crate) fn anchor(&self) -> Anchor {
        Anchor {
            paragraph: self.paragraphs,
            at: self.paragraph.len(),
        }
    }

    /// Makes the text from `anchor` on a Markdown link to `url`, if that text is still in the
    /// paragraph being gathered and is not blank.
    pub(crate) fn link(&mut self, anchor: Anchor, url: &str) -> Result<(), ExtractError> {
        if !self.markdown || anchor.paragraph != self.paragraphs {
            return Ok(());
        }
        let Some(text) = self.paragraph.get(anchor.at..) else {
            return Ok(());
        };
        if text.trim().is_empty() {
            return Ok(());
        }
        // Spaces inside the brackets would not render as part of the link.
        let trailing = text.len() - text.trim_end().len();
        let leading = text.len() - text.trim_start().len();
        let end = self.paragraph.len() - trailing;
        let close = format!("]({url})");
        self.paragraph.insert_str(end, &close);
        self.paragraph.insert(anchor.at + leading, '[');
        self.hold(close.chars().count() + 1)
    }

    /// Ends the paragraph being gathered: written as `role` says, or, `in_table`, added to the
    /// table cell being gathered.
    pub(crate) fn end_paragraph(&mut self, role: Role, in_table: bool) -> Result<(), ExtractError> {
        let text = std::mem::take(&mut self.paragraph);
        let chars = std::mem::take(&mut self.paragraph_chars);
        let marker = self.marker.take();
        self.paragraphs += 1;
        if in_table {
            let table = self.table.get_or_insert_with(Table::default);
            let text = text.trim();
            if !text.is_empty() {
                if !table.cell.is_empty() {
                    table.cell.push('\n');
                }
                table.cell.push_str(text);
                table.chars = table.chars.saturating_add(chars);
            }
            return Ok(());
        }
        self.end_table()?;
        match role {
            Role::Heading(level) => self.heading(level, &text),
            Role::ListItem { list, depth } => self.list_item(list, depth, marker, &text),
            // A paragraph that shows a bullet is a list item even without a list.
            Role::Plain if marker.is_some() => self.list_item(0, 0, marker, &text),
            Role::Plain => {
                if !text.trim().is_empty() {
                    self.last_list = None;
                }
                self.blocks.paragraph(&text)
            }
        }
    }

    fn heading(&mut self, level: usize, text: &str) -> Result<(), ExtractError> {
        let text = collapse_lines(text);
        if text.is_empty() {
            return Ok(());
        }
        if self.first_heading.is_none() {
            self.first_heading = Some(text.clone());
        }
        self.last_list = None;
        self.blocks.end_list();
        self.blocks.heading(level, &text)
    }

    fn list_item(
        &mut self,
        list: i32,
        depth: usize,
        marker: Option<String>,
        text: &str,
    ) -> Result<(), ExtractError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        if self.last_list.is_some_and(|last| last != list) {
            self.blocks.end_list();
        }
        self.last_list = Some(list);
        let marker = marker
            .as_deref()
            .and_then(number)
            .unwrap_or_else(|| "-".to_owned());
        self.blocks.list_item(depth, &marker, text)
    }

    /// Ends a table cell (`\cell`): the paragraph before it is the cell's last.
    pub(crate) fn end_cell(&mut self) -> Result<(), ExtractError> {
        self.end_paragraph(Role::Plain, true)?;
        let table = self.table.get_or_insert_with(Table::default);
        table.gathered = table.gathered.saturating_add(1);
        if table.gathered > MAX_TABLE_CELLS {
            return Err(table_too_large());
        }
        let cell = std::mem::take(&mut table.cell);
        table.row.push(cell);
        Ok(())
    }

    /// Ends a table row (`\row`).
    pub(crate) fn end_row(&mut self) -> Result<(), ExtractError> {
        let Some(table) = &mut self.table else {
            return Ok(());
        };
        // Text after the row's last cell mark belongs to no cell; it is kept as one more.
        if !table.cell.trim().is_empty() {
            let cell = std::mem::take(&mut table.cell);
            table.row.push(cell);
        }
        table.gathered = table.gathered.saturating_add(1);
        if table.gathered > MAX_TABLE_CELLS {
            return Err(table_too_large());
        }
        let row = std::mem::take(&mut table.row);
        table.rows.push(row);
        Ok(())
    }

    /// Writes the table being gathered, if any, with a row left unended as its last.
    fn end_table(&mut self) -> Result<(), ExtractError> {
        if self.table.as_ref().is_some_and(Table::has_pending_row) {
            self.end_row()?;
        }
        let Some(table) = self.table.take() else {
            return Ok(());
        };
        self.last_list = None;
        self.blocks.end_list();
        self.blocks.table(&table.rows)
    }

    /// Writes what is left: a last paragraph without its paragraph mark (Word writes none),
    /// and an open table. Returns the text and the first heading.
    pub(crate) fn finish(
        mut self,
        role: Role,
        in_table: bool,
    ) -> Result<(String, Option<String>), ExtractError> {
        if !self.paragraph.trim().is_empty() {
            self.end_paragraph(role, in_table)?;
        }
        self.end_table()?;
        Ok((self.blocks.into_string(), self.first_heading))
    }
}

/// The Markdown marker of a numbered item whose list text is a number (`3.`, `3)`, `1.2.`,
/// its last number counting); `None` for bullets and letters.
fn number(list_text: &str) -> Option<String> {
    let text = list_text.trim().trim_end_matches(['.', ')']);
    let last = text.rsplit('.').next()?;
    let valid = !last.is_empty() && last.len() <= 9 && last.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| format!("{last}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_text_numbers_become_markdown_numbers() {
        assert_eq!(number("1.\t").as_deref(), Some("1."));
        assert_eq!(number("12)").as_deref(), Some("12."));
        assert_eq!(number("2.3.").as_deref(), Some("3."));
        assert_eq!(number("\u{b7}\t"), None);
        assert_eq!(number("a."), None);
        assert_eq!(number(""), None);
    }
}
