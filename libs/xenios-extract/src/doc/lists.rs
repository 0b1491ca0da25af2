//! Whether a list paragraph shows a bullet or a number, and which number. A paragraph names
//! its list by `ilfo`, an index into the list overrides (PlfLfo), each of which names a list
//! definition by `lsid`; a definition (an LSTF of the PlfLst) has one level or nine, each an
//! LVL saying its number format (`nfc`) and its first number. The LVLs follow the PlfLst in
//! the table stream, outside its `lcb`. Overrides of a level's start number are not read.

use std::collections::HashMap;

use super::cfb::{u16_at, u32_at};

const LSTF_BYTES: usize = 28;
const LVLF_BYTES: usize = 28;
const LFO_BYTES: usize = 16;
const F_SIMPLE_LIST: u8 = 0x01;
/// Number formats that show no number: a bullet, and nothing at all.
const NFC_BULLET: u8 = 0x17;
const NFC_NONE: u8 = 0xFF;
const LEVELS: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    numbered: bool,
    start: u32,
}

#[derive(Default)]
pub(super) struct Lists {
    /// Levels of each list definition, by `lsid`.
    definitions: HashMap<i32, Vec<Level>>,
    /// The `lsid` of each override, `ilfo` − 1.
    overrides: Vec<i32>,
    /// The numbers last shown at each level of each list, by `ilfo`; `None` where a level
    /// starts over at its next item.
    counters: HashMap<u16, [Option<u32>; LEVELS]>,
}

impl Lists {
    /// `lists` is the PlfLst and what follows it in the table stream; `overrides` the PlfLfo.
    /// Either missing or malformed leaves every list item a bullet.
    pub(super) fn parse(lists: Option<&[u8]>, overrides: Option<&[u8]>) -> Lists {
        let overrides = overrides.unwrap_or_default();
        let override_count = u32_at(overrides, 0).map_or(0, |n| n as usize);
        Lists {
            definitions: lists.map(definitions).unwrap_or_default(),
            overrides: (0..override_count)
                .map_while(|i| u32_at(overrides, 4 + LFO_BYTES * i))
                .map(|lsid| lsid as i32)
                .collect(),
            counters: HashMap::new(),
        }
    }

    /// The Markdown marker of the next item of list `ilfo` at `level`: its number with a dot,
    /// or `None` for a bullet. Deeper levels start over after it.
    pub(super) fn next_marker(&mut self, ilfo: u16, level: u8) -> Option<String> {
        let index = usize::from(level).min(LEVELS - 1);
        let lsid = self.overrides.get(usize::from(ilfo).checked_sub(1)?)?;
        let definition = self.definitions.get(lsid)?;
        let format = definition.get(index).or(definition.first())?;
        let counters = self.counters.entry(ilfo).or_insert([None; LEVELS]);
        let number = counters
            .get(index)
            .copied()
            .flatten()
            .map_or(format.start, |n| n.saturating_add(1));
        for (i, counter) in counters.iter_mut().enumerate().skip(index) {
            *counter = (i == index).then_some(number);
        }
        format.numbered.then(|| format!("{number}."))
    }
}

/// The list definitions of a PlfLst: a count, the LSTFs, then the LVLs of each in turn.
fn definitions(bytes: &[u8]) -> HashMap<i32, Vec<Level>> {
    let count = u16_at(bytes, 0).map_or(0, usize::from);
    let mut definitions = HashMap::new();
    let mut at = 2 + count * LSTF_BYTES;
    for i in 0..count {
        let Some(lstf) = bytes.get(2 + LSTF_BYTES * i..2 + LSTF_BYTES * (i + 1)) else {
            break;
        };
        let lsid = u32_at(lstf, 0).unwrap_or(0) as i32;
        let simple = lstf.get(26).is_some_and(|flags| flags & F_SIMPLE_LIST != 0);
        let mut levels = Vec::new();
        for _ in 0..if simple { 1 } else { LEVELS } {
            let Some((level, len)) = level(bytes.get(at..).unwrap_or_default()) else {
                // The rest cannot be found: each LVL is found by the length of the last.
                definitions.insert(lsid, levels);
                return definitions;
            };
            levels.push(level);
            at += len;
        }
        definitions.insert(lsid, levels);
    }
    definitions
}

/// An LVL and its length: the fixed LVLF, its paragraph and character sprms, and its number
/// text (a 16-bit count of UTF-16 units).
fn level(bytes: &[u8]) -> Option<(Level, usize)> {
    let lvlf = bytes.get(..LVLF_BYTES)?;
    let nfc = *lvlf.get(4)?;
    let sprms = usize::from(*lvlf.get(24)?) + usize::from(*lvlf.get(25)?);
    let text_units = usize::from(u16_at(bytes, LVLF_BYTES + sprms)?);
    let len = LVLF_BYTES + sprms + 2 + 2 * text_units;
    bytes.get(..len)?;
    let level = Level {
        numbered: !matches!(nfc, NFC_BULLET | NFC_NONE),
        start: u32_at(lvlf, 0)?,
    };
    Some((level, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lvl(nfc: u8, start: u32) -> Vec<u8> {
        let mut lvl = vec![0; LVLF_BYTES];
        lvl[..4].copy_from_slice(&start.to_le_bytes());
        lvl[4] = nfc;
        lvl[25] = 2; // two bytes of paragraph sprms
        lvl.extend([0xAA, 0xBB]);
        lvl.extend([2, 0, b'%', 0, 0, 0]); // number text "%\0"
        lvl
    }

    fn lstf(lsid: i32, simple: bool) -> Vec<u8> {
        let mut lstf = vec![0; LSTF_BYTES];
        lstf[..4].copy_from_slice(&lsid.to_le_bytes());
        lstf[26] = u8::from(simple);
        lstf
    }

    #[test]
    fn numbers_count_per_level_and_bullets_stay_bullets() {
        let mut plf = 2u16.to_le_bytes().to_vec();
        plf.extend(lstf(7, false));
        plf.extend(lstf(9, true));
        plf.extend(lvl(0, 1));
        plf.extend(lvl(4, 1));
        for _ in 2..LEVELS {
            plf.extend(lvl(NFC_BULLET, 1));
        }
        plf.extend(lvl(NFC_BULLET, 0));
        let mut lfo = 2u32.to_le_bytes().to_vec();
        for lsid in [7i32, 9] {
            lfo.extend(lsid.to_le_bytes());
            lfo.extend([0; LFO_BYTES - 4]);
        }
        let mut lists = Lists::parse(Some(&plf), Some(&lfo));
        assert_eq!(lists.next_marker(1, 0).as_deref(), Some("1."));
        assert_eq!(lists.next_marker(1, 1).as_deref(), Some("1."));
        assert_eq!(lists.next_marker(1, 1).as_deref(), Some("2."));
        assert_eq!(lists.next_marker(1, 2), None);
        assert_eq!(lists.next_marker(1, 0).as_deref(), Some("2."));
        // The level below starts over.
        assert_eq!(lists.next_marker(1, 1).as_deref(), Some("1."));
        assert_eq!(lists.next_marker(2, 0), None);
        // Unknown overrides, and lists cut short, are bullets.
        assert_eq!(lists.next_marker(3, 0), None);
        assert_eq!(lists.next_marker(0, 0), None);
        let mut cut = Lists::parse(Some(&plf[..2 + 2 * LSTF_BYTES + 10]), Some(&lfo));
        assert_eq!(cut.next_marker(1, 0), None);
        assert_eq!(Lists::parse(None, None).next_marker(1, 0), None);
    }
}
