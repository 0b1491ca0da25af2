//! Word 97–2003 documents (`.doc`, [MS-DOC]): a compound file ([`cfb`]) whose
//! `WordDocument` stream begins with the FIB ([`fib`]), which says which table stream
//! (`0Table` or `1Table`) holds the piece table ([`pieces`]) that locates the text, the
//! paragraph and character properties ([`props`]) and the stylesheet ([`styles`]).
//!
//! Read: the main document's text (8-bit Windows-1252 or UTF-16 pieces, in CP order) as
//! paragraphs; headings by built-in heading style, a style named like one, or an outline
//! level; list items nested by level, numbered as their list's level says ([`lists`]) or
//! `-`; tables row by row, nested tables' cells as lines of the outer cell; fields by their
//! result, HYPERLINK fields as Markdown links; line, page and section breaks. Title and
//! author from `\x05SummaryInformation` ([`summary`]), the title falling back to the first
//! heading.
//!
//! Left out: footnotes, endnotes, headers, footers, comments and text boxes (their text comes
//! after the main text's `ccpText` characters), field instructions, pictures and embedded
//! objects, hidden text and tracked deletions, list numbers' own formats (letters and roman
//! numerals count as 1., 2., …) and start overrides, and what a piece's own property modifier
//! (`Prm`) says. Encrypted documents are refused, as are Word 6.0 and 95 ones, whose FIB is
//! laid out otherwise.

mod cfb;
mod fib;
mod lists;
mod pieces;
mod props;
mod styles;
mod summary;
mod text;

use crate::blocks::Blocks;
use crate::limits::Ctx;
use crate::rtf::layout::Layout;
use crate::{DocumentFormat, ExtractError, Extracted};
use cfb::CompoundFile;
use fib::{corrupt, Fib, TableEntry};
use lists::Lists;
use props::{Bins, Kind};
use styles::Styles;
use text::TextReader;

pub(crate) use cfb::SIGNATURE;

const WORD_DOCUMENT: &str = "WordDocument";
const SUMMARY_INFORMATION: &str = "\u{5}SummaryInformation";

pub(crate) fn extract(bytes: &[u8], cx: &mut Ctx) -> Result<Extracted, ExtractError> {
    let file = CompoundFile::open(bytes)?;
    // The streams are copied out of the file: together they are held to the decompression
    // budget, as a zip package's parts are.
    let mut budget = cx.opts.max_decompressed_bytes;
    let word = read_stream(&file, WORD_DOCUMENT, &mut budget, cx)?
        .ok_or_else(|| corrupt("it has no WordDocument stream"))?;
    let fib = Fib::parse(&word)?;
    let table = read_stream(&file, fib.table_stream(), &mut budget, cx)?
        .ok_or_else(|| corrupt("its table stream is missing"))?;
    let clx = fib
        .locate(&table, TableEntry::Clx)
        .ok_or_else(|| corrupt("its piece table is missing or outside the table stream"))?;
    let pieces = pieces::main_text_pieces(clx, &word, fib.main_text_chars)?;

    let blocks = Blocks::new(cx.out(), cx.markdown());
    let layout = Layout::new(blocks, cx.markdown(), cx.opts.max_output_chars);
    let mut reader = TextReader::new(
        layout,
        Bins::new(
            fib.locate(&table, TableEntry::ParagraphBins),
            &word,
            Kind::Paragraph,
        ),
        Bins::new(
            fib.locate(&table, TableEntry::CharacterBins),
            &word,
            Kind::Character,
        ),
        Styles::parse(fib.locate(&table, TableEntry::Stylesheet)),
        Lists::parse(
            fib.locate_with_rest(&table, TableEntry::ListDefinitions),
            fib.locate(&table, TableEntry::ListOverrides),
        ),
    );
    for piece in pieces {
        piece.for_each_char(&word, &mut cx.clock, |c, fc| reader.read_char(c, fc))?;
    }
    let (content, first_heading) = reader.finish()?;

    let summary = summary_of(&file, &mut budget, cx)?;
    let mut extracted = Extracted::new(content, cx.opts.output, DocumentFormat::Doc);
    extracted.title = summary.title.or(first_heading);
    extracted.set_author(summary.author);
    Ok(extracted)
}

/// The bytes of the root stream `name`, `None` if there is none.
fn read_stream(
    file: &CompoundFile,
    name: &str,
    budget: &mut u64,
    cx: &mut Ctx,
) -> Result<Option<Vec<u8>>, ExtractError> {
    match file.root_stream(name) {
        Some(entry) => file.read(&entry, budget, &mut cx.clock).map(Some),
        None => Ok(None),
    }
}

/// The document's title and author; none when its summary stream is missing or damaged,
/// which the text does not suffer from.
fn summary_of(
    file: &CompoundFile,
    budget: &mut u64,
    cx: &mut Ctx,
) -> Result<summary::Summary, ExtractError> {
    match read_stream(file, SUMMARY_INFORMATION, budget, cx) {
        Ok(Some(stream)) => Ok(summary::read(&stream)),
        Ok(None) | Err(ExtractError::Corrupt(_)) => Ok(summary::Summary::default()),
        Err(e) => Err(e),
    }
}

/// Whether `bytes` (a whole file, or the head of one) hold a Word document: a compound file
/// whose root storage has a `WordDocument` stream. An Excel workbook, a PowerPoint deck or an
/// Outlook message is a compound file too, and is not one.
///
/// Writers put the directory last, beyond the first 64 KiB an upload is sniffed from: when
/// the directory cannot be read to its end, a Word 97 FIB at the start of a sector that is
/// there tells instead.
pub(crate) fn is_word_document(bytes: &[u8]) -> bool {
    let Ok(file) = CompoundFile::open(bytes) else {
        return false;
    };
    if file.root_stream(WORD_DOCUMENT).is_some() {
        return true;
    }
    !file.directory_complete() && file.any_sector(fib::looks_like_fib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExtractOptions;

    const CHECKIN: &[u8] = include_bytes!("../tests/fixtures/checkin.doc");

    fn streams(bytes: &[u8]) -> (Vec<u8>, Fib, Vec<u8>) {
        let opts = ExtractOptions::default();
        let mut cx = Ctx::new(&opts);
        let file = CompoundFile::open(bytes).unwrap();
        let mut budget = u64::MAX;
        let word = read_stream(&file, WORD_DOCUMENT, &mut budget, &mut cx)
            .unwrap()
            .unwrap();
        let fib = Fib::parse(&word).unwrap();
        let table = read_stream(&file, fib.table_stream(), &mut budget, &mut cx)
            .unwrap()
            .unwrap();
        (word, fib, table)
    }

    #[test]
    fn a_libreoffice_stylesheet_reads_to_its_last_style() {
        let (_, fib, table) = streams(CHECKIN);
        let styles = Styles::parse(fib.locate(&table, TableEntry::Stylesheet));
        assert_eq!(styles.name(0), Some("Normal"));
        assert_eq!(styles.name(29), Some("Frame Contents"));
        // Built-in headings by their identity; LibreOffice's "Heading", the style its
        // headings are based on, is none.
        assert_eq!(styles.name(1), Some("Heading 1"));
        assert_eq!(styles.heading_level(1), Some(1));
        assert_eq!(styles.heading_level(2), Some(2));
        assert_eq!(styles.name(20), Some("Heading"));
        assert_eq!(styles.heading_level(20), None);
        assert_eq!(styles.heading_level(0), None);
        assert_eq!(styles.heading_level(999), None);
    }

    /// Uploads are sniffed from their first 64 KiB, and writers put the directory last: a
    /// head without it is told by the FIB at the start of the `WordDocument` stream.
    #[test]
    fn a_head_without_the_directory_is_told_by_its_fib() {
        let directory_sector = cfb::u32_at(CHECKIN, 48).unwrap() as usize;
        let head = &CHECKIN[..(directory_sector + 1) * 512];
        assert!(!CompoundFile::open(head).unwrap().directory_complete());
        assert!(is_word_document(head));
        assert!(is_word_document(CHECKIN));
        let sheet: &[u8] = include_bytes!("../tests/fixtures/sheet.xls");
        assert!(!is_word_document(sheet));
        let directory_sector = cfb::u32_at(sheet, 48).unwrap() as usize;
        assert!(!is_word_document(&sheet[..(directory_sector + 1) * 512]));
        // Read as a document, the head is damaged, not a panic.
        let opts = ExtractOptions::default();
        let err = extract(head, &mut Ctx::new(&opts)).unwrap_err();
        assert_eq!(err.code(), "corrupt_document", "{err}");
    }
}
