//! The one writer of Markdown and plain-text structure (headings, paragraphs, lists,
//! tables) that every format's extractor feeds, so all formats render alike.

use crate::limits::Out;
use crate::ExtractError;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    Nothing,
    Block,
    ListItem,
}

pub(crate) struct Blocks {
    out: Out,
    markdown: bool,
    last: Last,
}

impl Blocks {
    pub(crate) fn new(out: Out, markdown: bool) -> Self {
        Blocks {
            out,
            markdown,
            last: Last::Nothing,
        }
    }

    fn separate(&mut self, next: Last) -> Result<(), ExtractError> {
        let sep = match (self.last, next) {
            (Last::Nothing, _) => "",
            (Last::ListItem, Last::ListItem) => "\n",
            _ => "\n\n",
        };
        self.last = next;
        self.out.push_str(sep)
    }

    pub(crate) fn paragraph(&mut self, text: &str) -> Result<(), ExtractError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        self.separate(Last::Block)?;
        self.out.push_str(text)
    }

    /// `level` 1–6; plain text keeps the heading as its own paragraph.
    pub(crate) fn heading(&mut self, level: usize, text: &str) -> Result<(), ExtractError> {
        let text = collapse_lines(text.trim());
        if text.is_empty() {
            return Ok(());
        }
        self.separate(Last::Block)?;
        if self.markdown {
            self.out.push_str(&"#".repeat(level.clamp(1, 6)))?;
            self.out.push_str(" ")?;
        }
        self.out.push_str(&text)
    }

    /// A list item at nesting `depth` (0 = top) with its marker (`-`, `1.`, …). Four
    /// spaces per level nest correctly under both `- ` and `10. ` parents.
    pub(crate) fn list_item(
        &mut self,
        depth: usize,
        marker: &str,
        text: &str,
    ) -> Result<(), ExtractError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        self.separate(Last::ListItem)?;
        let indent = "    ".repeat(depth.min(8));
        self.out.push_str(&indent)?;
        // An empty marker continues the item above with another paragraph.
        self.out
            .push_str(if marker.is_empty() { "  " } else { marker })?;
        self.out.push_str(" ")?;
        let continuation = format!("\n{indent}  ");
        self.out.push_str(&text.replace('\n', &continuation))
    }

    /// Ends a list, so that a list right after it starts apart from it.
    pub(crate) fn end_list(&mut self) {
        if self.last == Last::ListItem {
            self.last = Last::Block;
        }
    }

    pub(crate) fn code_block(&mut self, text: &str) -> Result<(), ExtractError> {
        let text = text.trim_matches('\n');
        if text.trim().is_empty() {
            return Ok(());
        }
        self.separate(Last::Block)?;
        if self.markdown {
            let fence = if text.contains("```") { "~~~~" } else { "```" };
            self.out.push_str(fence)?;
            self.out.push_str("\n")?;
            self.out.push_str(text)?;
            self.out.push_str("\n")?;
            self.out.push_str(fence)
        } else {
            self.out.push_str(text)
        }
    }

    pub(crate) fn rule(&mut self) -> Result<(), ExtractError> {
        if self.markdown && self.last != Last::Nothing {
            self.separate(Last::Block)?;
            self.out.push_str("---")?;
        }
        Ok(())
    }

    /// Text that is already in the output format (Markdown passed through).
    pub(crate) fn raw(&mut self, text: &str) -> Result<(), ExtractError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        self.separate(Last::Block)?;
        self.out.push_str(text)
    }

    /// A table whose first row is its header (Markdown needs one). Rows shorter than the
    /// widest are padded; rows with no text are dropped.
    pub(crate) fn table(&mut self, rows: &[Vec<String>]) -> Result<(), ExtractError> {
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut table = self.begin_table(width);
        for row in rows {
            table.row(self, row)?;
        }
        Ok(())
    }

    /// Starts a table written row by row, for tables too large to hold in memory twice.
    /// Every row is cut or padded to `width` columns.
    pub(crate) fn begin_table(&mut self, width: usize) -> TableWriter {
        TableWriter {
            width: width.max(1),
            rows: 0,
        }
    }

    pub(crate) fn into_string(self) -> String {
        self.out.into_string()
    }
}

pub(crate) struct TableWriter {
    width: usize,
    rows: usize,
}

impl TableWriter {
    pub(crate) fn row<S: AsRef<str>>(
        &mut self,
        blocks: &mut Blocks,
        cells: &[S],
    ) -> Result<(), ExtractError> {
        if cells.iter().all(|c| c.as_ref().trim().is_empty()) {
            return Ok(());
        }
        if self.rows == 0 {
            blocks.separate(Last::Block)?;
        } else {
            blocks.out.push_str("\n")?;
        }
        let cells = &cells[..cells.len().min(self.width)];
        if blocks.markdown {
            blocks.out.push_str("|")?;
            for i in 0..self.width {
                let cell = cells.get(i).map(AsRef::as_ref).unwrap_or("");
                blocks.out.push_str(" ")?;
                blocks.out.push_str(&markdown_cell(cell))?;
                blocks.out.push_str(" |")?;
            }
            if self.rows == 0 {
                blocks.out.push_str("\n|")?;
                for _ in 0..self.width {
                    blocks.out.push_str(" --- |")?;
                }
            }
        } else {
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    blocks.out.push_str("\t")?;
                }
                blocks
                    .out
                    .push_str(&collapse_lines(cell.as_ref()).replace('\t', " "))?;
            }
        }
        self.rows += 1;
        Ok(())
    }
}

fn markdown_cell(cell: &str) -> String {
    let cell = cell.trim();
    let mut s = String::with_capacity(cell.len());
    let mut lines = cell.lines().map(str::trim).filter(|l| !l.is_empty());
    if let Some(first) = lines.next() {
        s.push_str(first);
        for line in lines {
            s.push_str("<br>");
            s.push_str(line);
        }
    }
    s.replace('|', "\\|")
}

/// Joins the lines of `text` with single spaces.
pub(crate) fn collapse_lines(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for word in text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(word);
    }
    s
}
