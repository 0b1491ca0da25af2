//! The piece table (the Clx's PlcPcd): where each run of character positions (CPs) has its
//! text in the `WordDocument` stream, as 8-bit Windows-1252 ("compressed") or as UTF-16LE.
//! A document edited in place ("fast saved") has its text in many pieces, in any stream order.

use encoding_rs::WINDOWS_1252;

use super::cfb::u32_at;
use super::fib::corrupt;
use crate::limits::Clock;
use crate::ExtractError;

const PRC: u8 = 0x01;
const PCDT: u8 = 0x02;
const PCD_BYTES: usize = 8;
const F_COMPRESSED: u32 = 0x4000_0000;
const FC_MASK: u32 = 0x3FFF_FFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Piece {
    /// Characters in this piece.
    chars: u32,
    /// Where its first character lies in the `WordDocument` stream.
    offset: u32,
    compressed: bool,
}

/// The pieces that hold the first `text_chars` characters, in CP order, each checked to lie
/// within `word` (the `WordDocument` stream).
pub(super) fn main_text_pieces(
    clx: &[u8],
    word: &[u8],
    text_chars: u32,
) -> Result<Vec<Piece>, ExtractError> {
    let plc = piece_plc(clx)?;
    // (n + 1) CPs then n 8-byte piece descriptors.
    let count = plc.len().saturating_sub(4) / (4 + PCD_BYTES);
    if plc.len() != 4 + count * (4 + PCD_BYTES) {
        return Err(corrupt("its piece table has a bad length"));
    }
    let descriptors_at = 4 * (count + 1);
    let mut pieces = Vec::new();
    for i in 0..count {
        let cp = |i: usize| u32_at(plc, 4 * i).unwrap_or(0);
        let (start, end) = (cp(i), cp(i + 1));
        if end < start {
            return Err(corrupt("its piece table is out of order"));
        }
        if start >= text_chars {
            break;
        }
        let raw_fc = u32_at(plc, descriptors_at + PCD_BYTES * i + 2).unwrap_or(0);
        let compressed = raw_fc & F_COMPRESSED != 0;
        let fc = raw_fc & FC_MASK;
        let piece = Piece {
            chars: end.min(text_chars) - start,
            offset: if compressed { fc / 2 } else { fc },
            compressed,
        };
        if piece.bytes(word).is_none() {
            return Err(corrupt(
                "its text lies past the end of the WordDocument stream",
            ));
        }
        pieces.push(piece);
    }
    Ok(pieces)
}

/// The PlcPcd inside the Clx: past the property modifiers (Prc) that may come first.
fn piece_plc(clx: &[u8]) -> Result<&[u8], ExtractError> {
    let mut at = 0usize;
    // Each Prc takes at least three bytes: the loop ends within the Clx's length.
    while let Some(&kind) = clx.get(at) {
        match kind {
            PRC => {
                let size = clx
                    .get(at + 1..at + 3)
                    .and_then(|b| b.try_into().ok())
                    .map(i16::from_le_bytes)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| corrupt("its piece table is malformed"))?;
                at += 3 + size;
            }
            PCDT => {
                let size = u32_at(clx, at + 1)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| corrupt("its piece table is malformed"))?;
                return clx
                    .get(at + 5..)
                    .and_then(|rest| rest.get(..size))
                    .ok_or_else(|| corrupt("its piece table is cut short"));
            }
            _ => return Err(corrupt("its piece table is malformed")),
        }
    }
    Err(corrupt("it has no piece table"))
}

impl Piece {
    fn width(self) -> usize {
        if self.compressed {
            1
        } else {
            2
        }
    }

    fn bytes(self, word: &[u8]) -> Option<&[u8]> {
        let start = usize::try_from(self.offset).ok()?;
        let len = usize::try_from(self.chars)
            .ok()?
            .checked_mul(self.width())?;
        word.get(start..start.checked_add(len)?)
    }

    /// Calls `each` with every character of the piece and its offset in the stream (the
    /// `fc` that paragraph and character properties are looked up by). A surrogate pair is one
    /// character at its first unit's offset; a lone surrogate is dropped.
    pub(super) fn for_each_char(
        self,
        word: &[u8],
        clock: &mut Clock,
        mut each: impl FnMut(char, u32) -> Result<(), ExtractError>,
    ) -> Result<(), ExtractError> {
        let bytes = self.bytes(word).unwrap_or_default();
        if self.compressed {
            // Windows-1252 maps each byte to one character, 0x80–0x9F to the curly quotes,
            // dashes and the euro sign Word means by them.
            let text = WINDOWS_1252.decode_without_bom_handling(bytes).0;
            let mut offset = self.offset;
            for c in text.chars() {
                clock.tick()?;
                each(c, offset)?;
                offset = offset.saturating_add(1);
            }
            return Ok(());
        }
        let units = bytes
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
        let mut offset = self.offset;
        for decoded in char::decode_utf16(units) {
            clock.tick()?;
            let (c, width) = match decoded {
                Ok(c) => (Some(c), 2 * c.len_utf16() as u32),
                Err(_) => (None, 2),
            };
            if let Some(c) = c {
                each(c, offset)?;
            }
            offset = offset.saturating_add(width);
        }
        Ok(())
    }
}
