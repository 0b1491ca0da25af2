//! CSV (and semicolon-, tab- or pipe-separated values): a Markdown table whose header is
//! the first record, or tab-separated lines of text.

use serde_json::Value;

use crate::blocks::Blocks;
use crate::limits::Ctx;
use crate::sniff::csv_delimiter;
use crate::text::decode;
use crate::{DocumentFormat, ExtractError, Extracted};

const SAMPLE: usize = 64 * 1024;

pub(crate) fn extract(bytes: &[u8], cx: &mut Ctx) -> Result<Extracted, ExtractError> {
    let text = decode(bytes, None);
    let mut sample_end = text.len().min(SAMPLE);
    while !text.is_char_boundary(sample_end) {
        sample_end -= 1;
    }
    let delimiter = csv_delimiter(&text[..sample_end], sample_end < text.len()).unwrap_or(b',');
    let reader = || {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(text.as_bytes())
    };

    // Two passes: the first sizes the table, so the second can stream it without
    // holding every record.
    let mut width = 0usize;
    let mut records = 0u64;
    let mut record = csv::StringRecord::new();
    let mut first = reader();
    while read(&mut first, &mut record)? {
        cx.clock.tick()?;
        width = width.max(record.len());
        records += 1;
    }

    let mut blocks = Blocks::new(cx.out(), cx.markdown());
    let mut table = blocks.begin_table(width);
    let mut second = reader();
    while read(&mut second, &mut record)? {
        cx.clock.tick()?;
        let cells: Vec<&str> = record.iter().collect();
        table.row(&mut blocks, &cells)?;
    }

    let mut extracted = Extracted::new(blocks.into_string(), cx.opts.output, DocumentFormat::Csv);
    extracted
        .metadata
        .insert("rows".into(), Value::from(records));
    extracted
        .metadata
        .insert("columns".into(), Value::from(width));
    extracted.metadata.insert(
        "delimiter".into(),
        Value::String(char::from(delimiter).to_string()),
    );
    Ok(extracted)
}

fn read(
    reader: &mut csv::Reader<&[u8]>,
    record: &mut csv::StringRecord,
) -> Result<bool, ExtractError> {
    reader
        .read_record(record)
        .map_err(|e| ExtractError::corrupt(format!("unreadable CSV: {e}")))
}
