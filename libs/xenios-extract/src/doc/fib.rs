//! The File Information Block at the start of the `WordDocument` stream: which table stream
//! to read, whether the document is encrypted, how many characters its main text has, and
//! where in the table stream each structure lies (the `fc`/`lcb` pairs of FibRgFcLcb97).

use std::ops::Range;

use super::cfb::{u16_at, u32_at};
use crate::ExtractError;

const W_IDENT: u16 = 0xA5EC;
/// Word 97 writes 0x00C1 (some builds 0x00C0); Word 6 and 95 less, with another FIB layout.
const FIRST_WORD_97_NFIB: u16 = 0x00C0;
/// Set for RC4 encryption and for XOR obfuscation (`fObfuscated` tells which) alike.
const F_ENCRYPTED: u16 = 0x0100;
const F_WHICH_TBL_STM: u16 = 0x0200;

/// Where a structure lies in the table stream: the index of its `fc`/`lcb` pair.
#[derive(Debug, Clone, Copy)]
pub(super) enum TableEntry {
    Stylesheet = 1,
    ParagraphBins = 13,
    CharacterBins = 12,
    Clx = 33,
    ListDefinitions = 73,
    ListOverrides = 74,
}

pub(super) struct Fib {
    flags: u16,
    /// Characters of the main document's text: footnotes, headers, comments and text boxes
    /// come after them.
    pub(super) main_text_chars: u32,
    /// The `fc`/`lcb` pairs.
    table_entries: Vec<(u32, u32)>,
}

impl Fib {
    pub(super) fn parse(word: &[u8]) -> Result<Fib, ExtractError> {
        if u16_at(word, 0) != Some(W_IDENT) {
            return Err(corrupt("its WordDocument stream does not begin with a FIB"));
        }
        let n_fib = u16_at(word, 2).unwrap_or(0);
        let flags = u16_at(word, 10).unwrap_or(0);
        // FibBase is in the clear even when the rest is encrypted: tell that first.
        if flags & F_ENCRYPTED != 0 {
            return Err(ExtractError::UnsupportedFormat(
                "the Word document is encrypted with a password".into(),
            ));
        }
        if n_fib < FIRST_WORD_97_NFIB {
            return Err(ExtractError::UnsupportedFormat(
                "a Word 6.0 or Word 95 document: only Word 97 and later documents are read".into(),
            ));
        }
        // FibBase (32 bytes), then three arrays each preceded by its count: 16-bit words,
        // 32-bit longs, then 64-bit fc/lcb pairs.
        let words = usize::from(u16_at(word, 32).ok_or_else(|| corrupt("its FIB is cut short"))?);
        let longs_at = 34 + 2 * words;
        let longs = usize::from(u16_at(word, longs_at).unwrap_or(0));
        let main_text_chars = u32_at(word, longs_at + 2 + 4 * 3)
            .filter(|_| longs > 3)
            .ok_or_else(|| corrupt("its FIB is cut short"))?;
        let pairs_at = longs_at + 2 + 4 * longs;
        let pairs = usize::from(u16_at(word, pairs_at).unwrap_or(0));
        let table_entries = word
            .get(pairs_at + 2..)
            .unwrap_or_default()
            .chunks_exact(8)
            .take(pairs)
            .map(|pair| (u32_at(pair, 0).unwrap_or(0), u32_at(pair, 4).unwrap_or(0)))
            .collect();
        Ok(Fib {
            flags,
            main_text_chars,
            table_entries,
        })
    }

    /// `1Table` or `0Table`, as `fWhichTblStm` says.
    pub(super) fn table_stream(&self) -> &'static str {
        if self.flags & F_WHICH_TBL_STM != 0 {
            "1Table"
        } else {
            "0Table"
        }
    }

    /// The bytes of the table stream `entry` names, if the FIB has it and it is not empty.
    /// `None` when it lies past the end of the stream too: the caller says whether that is
    /// fatal.
    pub(super) fn locate<'t>(&self, table: &'t [u8], entry: TableEntry) -> Option<&'t [u8]> {
        let &(fc, lcb) = self.table_entries.get(entry as usize)?;
        let range = byte_range(fc, lcb)?;
        table.get(range).filter(|bytes| !bytes.is_empty())
    }

    /// The table stream from where `entry` begins to its end, for a structure that more
    /// follows outside its `lcb` (the list definitions' levels).
    pub(super) fn locate_with_rest<'t>(
        &self,
        table: &'t [u8],
        entry: TableEntry,
    ) -> Option<&'t [u8]> {
        self.locate(table, entry)?;
        let &(fc, _) = self.table_entries.get(entry as usize)?;
        table.get(usize::try_from(fc).ok()?..)
    }
}

/// Whether `bytes` begin like a Word 97 or later FIB: its signature, a Word 97 `nFib`, and
/// the counts of 16- and 32-bit values Word 97 and every later version write (14 and 22).
pub(super) fn looks_like_fib(bytes: &[u8]) -> bool {
    u16_at(bytes, 0) == Some(W_IDENT)
        && u16_at(bytes, 2).is_some_and(|n| n >= FIRST_WORD_97_NFIB)
        && u16_at(bytes, 32) == Some(14)
        && u16_at(bytes, 62) == Some(22)
}

fn byte_range(fc: u32, lcb: u32) -> Option<Range<usize>> {
    let start = usize::try_from(fc).ok()?;
    let end = start.checked_add(usize::try_from(lcb).ok()?)?;
    Some(start..end)
}

pub(super) fn corrupt(why: &str) -> ExtractError {
    ExtractError::corrupt(format!("the Word document is damaged: {why}"))
}
