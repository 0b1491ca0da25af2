//! XLSX: every worksheet becomes `## Name` and a table. Shared strings, inline strings,
//! booleans, errors and numbers are read from the sheet XML directly; numbers in a date
//! format become ISO dates.

use chrono::{NaiveDate, NaiveTime, TimeDelta};
use quick_xml::events::Event;
use serde_json::Value;

use crate::blocks::Blocks;
use crate::limits::{Clock, Ctx};
use crate::ooxml::{attr, next, push_text, xml_reader, Package};
use crate::{DocumentFormat, ExtractError, Extracted};

/// Columns A..XFD: the most a worksheet can have.
const MAX_COLUMNS: u32 = 16_384;

pub(crate) fn extract(bytes: &[u8], cx: &mut Ctx) -> Result<Extracted, ExtractError> {
    let mut pkg = Package::open(bytes, cx.opts)?;
    let workbook = pkg.main_part("xl/workbook.xml", &mut cx.clock)?;
    let rels = pkg.relationships(&workbook, &mut cx.clock)?;
    let part_of = |suffix: &str| {
        rels.values()
            .find(|r| r.kind.ends_with(suffix) && !r.external)
            .map(|r| r.target.clone())
    };
    let shared = match part_of("/sharedStrings") {
        Some(part) => shared_strings(&mut pkg, &part, &mut cx.clock)?,
        None => Vec::new(),
    };
    let date_styles = match part_of("/styles") {
        Some(part) => date_styles(&mut pkg, &part, &mut cx.clock)?,
        None => Vec::new(),
    };
    let book = Workbook::parse(&mut pkg, &workbook, &mut cx.clock)?;
    let (title, author) = pkg.title_and_author("docProps/core.xml", &mut cx.clock)?;

    let mut blocks = Blocks::new(cx.out(), cx.markdown());
    let mut names = Vec::new();
    for (name, rel_id) in &book.sheets {
        let Some(rel) = rels.get(rel_id) else {
            continue;
        };
        if !rel.kind.ends_with("/worksheet") || rel.external {
            continue;
        }
        let Some(xml) = pkg.read_text(&rel.target, &cx.clock)? else {
            continue;
        };
        let sheet = Sheet {
            shared: &shared,
            date_styles: &date_styles,
            date1904: book.date1904,
        };
        let rows = sheet.rows(&xml, &rel.target, cx.opts.max_output_chars, &mut cx.clock)?;
        names.push(Value::String(name.clone()));
        blocks.heading(2, name)?;
        write_rows(&mut blocks, &rows, &mut cx.clock)?;
    }

    let mut extracted = Extracted::new(blocks.into_string(), cx.opts.output, DocumentFormat::Xlsx);
    extracted.title = title;
    extracted
        .metadata
        .insert("sheets".into(), Value::Array(names));
    extracted.set_author(author);
    Ok(extracted)
}

type Row = (u32, Vec<(u32, String)>);

/// Streams the sparse rows as a dense table from the leftmost to the rightmost used
/// column, so a sheet with one cell in A and one in XFD costs output, which is bounded,
/// rather than memory.
fn write_rows(blocks: &mut Blocks, rows: &[Row], clock: &mut Clock) -> Result<(), ExtractError> {
    let used = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(|(c, _)| *c));
    let (Some(first), Some(last)) = (used.clone().min(), used.max()) else {
        return Ok(());
    };
    let width = (last - first + 1) as usize;
    let mut table = blocks.begin_table(width);
    let mut dense: Vec<&str> = Vec::with_capacity(width.min(1024));
    for (_, cells) in rows {
        clock.tick()?;
        dense.clear();
        for (col, value) in cells {
            let at = (col - first) as usize;
            while dense.len() < at {
                dense.push("");
            }
            if dense.len() == at {
                dense.push(value);
            }
        }
        table.row(blocks, &dense)?;
    }
    Ok(())
}

struct Workbook {
    /// (name, relationship id) in workbook order.
    sheets: Vec<(String, String)>,
    date1904: bool,
}

impl Workbook {
    fn parse(pkg: &mut Package, part: &str, clock: &mut Clock) -> Result<Self, ExtractError> {
        let xml = pkg.read_text(part, clock)?.ok_or_else(|| {
            ExtractError::corrupt(format!("the package lacks its workbook {part}"))
        })?;
        let mut reader = xml_reader(&xml);
        let mut book = Workbook {
            sheets: Vec::new(),
            date1904: false,
        };
        loop {
            clock.tick()?;
            match next(&mut reader, part)? {
                Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                    "sheet" => {
                        if let (Some(name), Some(id)) = (attr(&e, "name"), attr(&e, "id")) {
                            book.sheets.push((name, id));
                        }
                    }
                    "workbookPr" => {
                        book.date1904 =
                            matches!(attr(&e, "date1904").as_deref(), Some("1" | "true"));
                    }
                    _ => {}
                },
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(book)
    }
}

fn shared_strings(
    pkg: &mut Package,
    part: &str,
    clock: &mut Clock,
) -> Result<Vec<String>, ExtractError> {
    let mut strings = Vec::new();
    let Some(xml) = pkg.read_text(part, clock)? else {
        return Ok(strings);
    };
    let mut reader = xml_reader(&xml);
    let mut current: Option<String> = None;
    let (mut in_t, mut phonetic) = (false, false);
    loop {
        clock.tick()?;
        let event = next(&mut reader, part)?;
        match &event {
            Event::Start(e) => match e.local_name().as_ref() {
                "si" => current = Some(String::new()),
                "t" => in_t = true,
                "rPh" => phonetic = true,
                _ => {}
            },
            Event::Empty(e) if e.local_name().as_ref() == "si" => strings.push(String::new()),
            Event::End(e) => match e.local_name().as_ref() {
                "si" => strings.push(current.take().unwrap_or_default()),
                "t" => in_t = false,
                "rPh" => phonetic = false,
                _ => {}
            },
            Event::Eof => break,
            ev => {
                if let (Some(s), true, false) = (&mut current, in_t, phonetic) {
                    push_text(s, ev);
                }
            }
        }
    }
    Ok(strings)
}

/// For each cell format (`cellXfs` index), whether it displays a date or time.
fn date_styles(
    pkg: &mut Package,
    part: &str,
    clock: &mut Clock,
) -> Result<Vec<bool>, ExtractError> {
    let mut styles = Vec::new();
    let Some(xml) = pkg.read_text(part, clock)? else {
        return Ok(styles);
    };
    let mut reader = xml_reader(&xml);
    let mut custom = std::collections::HashMap::new();
    let mut in_cell_xfs = false;
    loop {
        clock.tick()?;
        match next(&mut reader, part)? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                "numFmt" => {
                    if let (Some(id), Some(code)) = (attr(&e, "numFmtId"), attr(&e, "formatCode")) {
                        custom.insert(id, is_date_format(&code));
                    }
                }
                "cellXfs" => in_cell_xfs = true,
                "xf" if in_cell_xfs => {
                    let id = attr(&e, "numFmtId").unwrap_or_default();
                    let builtin = id.parse::<u32>().is_ok_and(is_builtin_date);
                    styles.push(custom.get(&id).copied().unwrap_or(builtin));
                }
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == "cellXfs" => in_cell_xfs = false,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(styles)
}

fn is_builtin_date(id: u32) -> bool {
    matches!(id, 14..=22 | 27..=36 | 45..=47 | 50..=58)
}

/// A custom format shows a date or time if, outside quoted literals, `[...]` sections
/// and escaped characters, it uses a day, month, year, hour or second token.
fn is_date_format(code: &str) -> bool {
    let (mut quoted, mut bracket, mut escaped) = (false, false, false);
    for c in code.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '"' => quoted = !quoted,
            '[' if !quoted => bracket = true,
            ']' if !quoted => bracket = false,
            '\\' | '_' | '*' if !quoted => escaped = true,
            _ if quoted || bracket => {}
            'd' | 'D' | 'm' | 'M' | 'y' | 'Y' | 'h' | 'H' | 's' | 'S' => return true,
            _ => {}
        }
    }
    false
}

struct Sheet<'a> {
    shared: &'a [String],
    date_styles: &'a [bool],
    date1904: bool,
}

#[derive(Default)]
struct Cell {
    col: Option<u32>,
    kind: String,
    style: usize,
    value: String,
}

impl Sheet<'_> {
    /// Every non-empty cell becomes output, so the text gathered is charged against
    /// `max_output_chars` as it is gathered: a few cells naming one huge shared string must
    /// not copy it in memory thousands of times before the output's own limit is reached.
    fn rows(
        &self,
        xml: &str,
        part: &str,
        max_output_chars: usize,
        clock: &mut Clock,
    ) -> Result<Vec<Row>, ExtractError> {
        let mut gathered = 0usize;
        let mut reader = xml_reader(xml);
        let mut rows: Vec<Row> = Vec::new();
        let mut row: Option<Row> = None;
        let mut next_row = 1u32;
        let mut next_col = 1u32;
        let mut cell: Option<Cell> = None;
        let (mut in_value, mut phonetic) = (false, false);
        loop {
            clock.tick()?;
            let event = next(&mut reader, part)?;
            match &event {
                Event::Start(e) | Event::Empty(e) => {
                    let empty = matches!(event, Event::Empty(_));
                    match e.local_name().as_ref() {
                        "row" => {
                            let r = attr(e, "r")
                                .and_then(|r| r.parse().ok())
                                .unwrap_or(next_row);
                            next_row = r.saturating_add(1);
                            next_col = 1;
                            row = (!empty).then(|| (r, Vec::new()));
                        }
                        "c" => {
                            let col = attr(e, "r").and_then(|r| column_of(&r)).unwrap_or(next_col);
                            next_col = col.saturating_add(1);
                            let style = attr(e, "s").and_then(|s| s.parse().ok()).unwrap_or(0);
                            let kind = attr(e, "t").unwrap_or_default();
                            cell = (!empty).then(|| Cell {
                                col: (col <= MAX_COLUMNS).then_some(col),
                                kind,
                                style,
                                value: String::new(),
                            });
                        }
                        "v" | "t" if !empty => in_value = true,
                        "rPh" if !empty => phonetic = true,
                        _ => {}
                    }
                }
                Event::End(e) => match e.local_name().as_ref() {
                    "v" | "t" => in_value = false,
                    "rPh" => phonetic = false,
                    "c" => {
                        if let (Some(c), Some((_, cells))) = (cell.take(), &mut row) {
                            if let Some(col) = c.col {
                                let value = self.value(&c);
                                if !value.trim().is_empty() {
                                    gathered = gathered.saturating_add(value.chars().count());
                                    if gathered > max_output_chars {
                                        return Err(ExtractError::too_large(format!(
                                            "the extracted text exceeds {max_output_chars} characters"
                                        )));
                                    }
                                    cells.push((col, value));
                                }
                            }
                        }
                    }
                    "row" => {
                        if let Some((r, mut cells)) = row.take() {
                            if !cells.is_empty() {
                                cells.sort_by_key(|(c, _)| *c);
                                cells.dedup_by_key(|(c, _)| *c);
                                rows.push((r, cells));
                            }
                        }
                    }
                    _ => {}
                },
                Event::Eof => break,
                ev => {
                    if let (Some(c), true, false) = (&mut cell, in_value, phonetic) {
                        push_text(&mut c.value, ev);
                    }
                }
            }
        }
        rows.sort_by_key(|(r, _)| *r);
        Ok(rows)
    }

    fn value(&self, cell: &Cell) -> String {
        let raw = cell.value.as_str();
        match cell.kind.as_str() {
            "s" => raw
                .trim()
                .parse::<usize>()
                .ok()
                .and_then(|i| self.shared.get(i))
                .cloned()
                .unwrap_or_default(),
            "b" => if raw.trim() == "1" { "TRUE" } else { "FALSE" }.to_owned(),
            "inlineStr" | "str" | "e" | "d" => raw.to_owned(),
            _ => match raw.trim().parse::<f64>() {
                Ok(v) if self.date_styles.get(cell.style).copied().unwrap_or(false) => {
                    format_date(v, self.date1904).unwrap_or_else(|| format_number(v))
                }
                Ok(v) => format_number(v),
                Err(_) => raw.to_owned(),
            },
        }
    }
}

/// `AB12` → 28.
fn column_of(reference: &str) -> Option<u32> {
    let letters = reference.bytes().take_while(u8::is_ascii_alphabetic);
    let mut col = 0u32;
    let mut any = false;
    for b in letters {
        col = col
            .checked_mul(26)?
            .checked_add(u32::from(b.to_ascii_uppercase() - b'A' + 1))?;
        any = true;
    }
    any.then_some(col)
}

/// Numbers as Excel shows them in a General cell: at most 15 significant digits, so
/// binary noise such as `0.30000000000000004` reads `0.3`.
fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-5..15).contains(&magnitude) {
        return format!("{v:e}");
    }
    let decimals = (14 - magnitude).clamp(0, 20) as usize;
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// An Excel serial date as `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS`, or `HH:MM:SS` for a
/// time of day alone.
fn format_date(serial: f64, date1904: bool) -> Option<String> {
    if !(0.0..2_958_466.0).contains(&serial) {
        return None;
    }
    let days = serial.floor();
    let seconds = ((serial - days) * 86_400.0).round() as i64;
    let epoch = if date1904 {
        NaiveDate::from_ymd_opt(1904, 1, 1)?
    } else {
        // Day 60 is Excel's phantom 1900-02-29; counting from 1899-12-30 is right from
        // 1900-03-01 on, which is every date anyone still writes.
        NaiveDate::from_ymd_opt(1899, 12, 30)?
    };
    let at = epoch
        .and_time(NaiveTime::MIN)
        .checked_add_signed(TimeDelta::try_days(days as i64)?)?
        .checked_add_signed(TimeDelta::try_seconds(seconds)?)?;
    Some(if days == 0.0 && !date1904 {
        at.format("%H:%M:%S").to_string()
    } else if at.time() == NaiveTime::MIN {
        at.format("%Y-%m-%d").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M:%S").to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns() {
        assert_eq!(column_of("A1"), Some(1));
        assert_eq!(column_of("Z9"), Some(26));
        assert_eq!(column_of("AB12"), Some(28));
        assert_eq!(column_of("XFD1048576"), Some(16_384));
        assert_eq!(column_of("12"), None);
        assert_eq!(column_of("ZZZZZZZZZZZZZZ1"), None);
    }

    #[test]
    fn numbers_read_like_excel() {
        assert_eq!(format_number(42.0), "42");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(-3.25), "-3.25");
        assert_eq!(format_number(1e20), "1e20");
    }

    #[test]
    fn dates() {
        assert_eq!(format_date(45292.0, false).as_deref(), Some("2024-01-01"));
        assert_eq!(
            format_date(45292.5, false).as_deref(),
            Some("2024-01-01 12:00:00")
        );
        assert_eq!(format_date(0.75, false).as_deref(), Some("18:00:00"));
        assert_eq!(format_date(0.0, true).as_deref(), Some("1904-01-01"));
        assert!(is_date_format("yyyy-mm-dd"));
        assert!(is_date_format("[$-409]d-mmm-yy;@"));
        assert!(!is_date_format("#,##0.00"));
        assert!(!is_date_format("0 \"days\""));
        assert!(is_builtin_date(14));
        assert!(!is_builtin_date(2));
    }
}
