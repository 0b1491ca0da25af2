//! Paragraph and character properties, as far as the text needs them: table membership and
//! row ends, outline level, list and style of a paragraph; whether characters are hidden or
//! deleted (a tracked deletion). Both kinds are found the same way: a bin table (PlcBte) in
//! the table stream maps stream offsets to 512-byte FKP pages of the `WordDocument` stream,
//! and each page maps runs of offsets to a list of property modifiers (sprms).
//!
//! Everything else a sprm can say (fonts, indents, borders, …) is skipped by its size, which
//! the sprm's own number tells. A malformed page or list is read as "no properties", never
//! as an error: the text is still there.

use super::cfb::{u16_at, u32_at};

const PAGE_BYTES: usize = 512;
/// A paragraph run's BxPap: a one-byte offset and 12 reserved bytes.
const PARAGRAPH_ENTRY_BYTES: usize = 13;
/// A character run's entry: the one-byte offset alone.
const CHARACTER_ENTRY_BYTES: usize = 1;

const SPRM_P_ILVL: u16 = 0x260A;
const SPRM_P_ILFO: u16 = 0x460B;
const SPRM_P_F_IN_TABLE: u16 = 0x2416;
const SPRM_P_F_TTP: u16 = 0x2417;
const SPRM_P_OUT_LVL: u16 = 0x2640;
const SPRM_P_ITAP: u16 = 0x6649;
const SPRM_C_F_RMARK_DEL: u16 = 0x0800;
const SPRM_C_F_VANISH: u16 = 0x083C;
/// Variable-size sprms whose size is not told the usual way.
const SPRM_T_DEF_TABLE: u16 = 0xD608;
const SPRM_P_CHG_TABS: u16 = 0xC615;

/// The highest list (`ilfo`) number: above it the values mean "no list" in other ways.
const MAX_LIST: u16 = 0x07FE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Paragraph,
    Character,
}

/// The paragraph sprms this reader uses; `None` where the list does not say, so that a
/// paragraph's own list can be laid over its style's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ParagraphSprms {
    pub(super) outline_level: Option<u8>,
    /// `ilfo`: 0 for none.
    pub(super) list: Option<u16>,
    pub(super) list_level: Option<u8>,
    pub(super) in_table: Option<bool>,
    /// The paragraph that ends a table row (its mark is the row-end mark).
    pub(super) row_end: Option<bool>,
    /// `itap`: how deeply nested in tables (0 = not in one).
    pub(super) table_depth: Option<u32>,
}

impl ParagraphSprms {
    pub(super) fn read(grpprl: &[u8]) -> Self {
        let mut props = ParagraphSprms::default();
        for (sprm, operand) in Sprms(grpprl) {
            let byte = operand.first().copied();
            match sprm {
                SPRM_P_OUT_LVL => props.outline_level = byte,
                SPRM_P_ILFO => props.list = u16_at(operand, 0),
                SPRM_P_ILVL => props.list_level = byte,
                SPRM_P_F_IN_TABLE => props.in_table = byte.map(|b| b != 0),
                SPRM_P_F_TTP => props.row_end = byte.map(|b| b != 0),
                SPRM_P_ITAP => props.table_depth = u32_at(operand, 0),
                _ => {}
            }
        }
        props
    }

    /// These properties, with what they leave unsaid taken from `base`.
    pub(super) fn over(self, base: ParagraphSprms) -> ParagraphSprms {
        ParagraphSprms {
            outline_level: self.outline_level.or(base.outline_level),
            list: self.list.or(base.list),
            list_level: self.list_level.or(base.list_level),
            in_table: self.in_table.or(base.in_table),
            row_end: self.row_end.or(base.row_end),
            table_depth: self.table_depth.or(base.table_depth),
        }
    }

    pub(super) fn in_table(&self) -> bool {
        self.table_depth
            .map_or(self.in_table.unwrap_or(false), |depth| depth > 0)
    }

    /// The list the paragraph is an item of, and its level (0 = outermost).
    pub(super) fn list_item(&self) -> Option<(u16, u8)> {
        let list = self.list.filter(|&l| (1..=MAX_LIST).contains(&l))?;
        Some((list, self.list_level.unwrap_or(0).min(8)))
    }
}

/// Paragraph properties found for a paragraph mark: its style and its own sprms.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ParagraphRun {
    pub(super) style: u16,
    pub(super) sprms: ParagraphSprms,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct CharacterProps {
    pub(super) hidden: bool,
    pub(super) deleted: bool,
}

impl CharacterProps {
    fn read(grpprl: &[u8]) -> Self {
        let mut props = CharacterProps::default();
        for (sprm, operand) in Sprms(grpprl) {
            // A toggle: 1 on, 0x81 the opposite of the style's (which is off, styles hiding
            // text being rare), 0 and 0x80 off.
            let on = matches!(operand.first(), Some(0x01 | 0x81));
            match sprm {
                SPRM_C_F_VANISH => props.hidden = on,
                SPRM_C_F_RMARK_DEL => props.deleted = on,
                _ => {}
            }
        }
        props
    }

    pub(super) fn shows_text(self) -> bool {
        !self.hidden && !self.deleted
    }
}

/// One run of an FKP page: stream offsets `start..end` and their properties.
#[derive(Debug, Clone, Copy)]
struct Run<'a> {
    start: u32,
    end: u32,
    /// The paragraph's style (paragraph runs only).
    style: u16,
    grpprl: &'a [u8],
}

/// A bin table and the FKP pages it points to.
pub(super) struct Bins<'a> {
    word: &'a [u8],
    kind: Kind,
    /// `n + 1` stream offsets bounding the `n` pages.
    offsets: Vec<u32>,
    pages: Vec<u32>,
    /// The run the last lookup found: text is read in stream order, so the next character
    /// is most often in it.
    last: Option<Run<'a>>,
}

impl<'a> Bins<'a> {
    /// The bin table `plc` (none when the FIB has none) over `word`.
    pub(super) fn new(plc: Option<&[u8]>, word: &'a [u8], kind: Kind) -> Self {
        let plc = plc.unwrap_or_default();
        let count = plc.len().saturating_sub(4) / 8;
        let values: Vec<u32> = plc.chunks_exact(4).filter_map(|b| u32_at(b, 0)).collect();
        let offsets = values.get(..count + 1).unwrap_or_default().to_vec();
        let pages = values
            .get(count + 1..2 * count + 1)
            .unwrap_or_default()
            .iter()
            .map(|pn| pn & 0x003F_FFFF)
            .collect();
        Bins {
            word,
            kind,
            offsets,
            pages,
            last: None,
        }
    }

    /// The properties of the paragraph whose mark is at stream offset `fc`, if a page says.
    pub(super) fn paragraph_at(&mut self, fc: u32) -> Option<ParagraphRun> {
        debug_assert_eq!(self.kind, Kind::Paragraph);
        let run = self.run_at(fc)?;
        Some(ParagraphRun {
            style: run.style,
            sprms: ParagraphSprms::read(run.grpprl),
        })
    }

    /// The properties of the character at stream offset `fc`; none said, none set.
    pub(super) fn character_at(&mut self, fc: u32) -> CharacterProps {
        debug_assert_eq!(self.kind, Kind::Character);
        self.run_at(fc).map_or_else(CharacterProps::default, |run| {
            CharacterProps::read(run.grpprl)
        })
    }

    fn run_at(&mut self, fc: u32) -> Option<Run<'a>> {
        if let Some(run) = self.last.filter(|run| (run.start..run.end).contains(&fc)) {
            return Some(run);
        }
        let bin = self
            .offsets
            .partition_point(|&start| start <= fc)
            .checked_sub(1)?;
        let page_number = usize::try_from(*self.pages.get(bin)?).ok()?;
        let start = page_number.checked_mul(PAGE_BYTES)?;
        let page = self.word.get(start..start.checked_add(PAGE_BYTES)?)?;
        let run = self.run_in_page(page, fc)?;
        self.last = Some(run);
        Some(run)
    }

    /// The run of an FKP page that holds `fc`: the page ends with its run count, begins with
    /// the runs' `count + 1` bounding offsets, then an entry per run whose first byte is half
    /// the offset of the run's properties within the page (0: none).
    fn run_in_page(&self, page: &'a [u8], fc: u32) -> Option<Run<'a>> {
        let count = usize::from(*page.get(PAGE_BYTES - 1)?);
        let bounds: Vec<u32> = (0..=count).filter_map(|i| u32_at(page, 4 * i)).collect();
        let index = bounds
            .partition_point(|&start| start <= fc)
            .checked_sub(1)?;
        let (start, end) = (*bounds.get(index)?, *bounds.get(index + 1)?);
        let entry_bytes = match self.kind {
            Kind::Paragraph => PARAGRAPH_ENTRY_BYTES,
            Kind::Character => CHARACTER_ENTRY_BYTES,
        };
        let offset = 2 * usize::from(*page.get(4 * (count + 1) + entry_bytes * index)?);
        let (style, grpprl) = if offset == 0 {
            (0, &[][..])
        } else {
            match self.kind {
                Kind::Paragraph => paragraph_properties(page, offset)?,
                Kind::Character => (0, character_properties(page, offset)?),
            }
        };
        Some(Run {
            start,
            end,
            style,
            grpprl,
        })
    }
}

/// A PapxInFkp: a count byte (in 16-bit words, less one byte; 0 means the next byte counts
/// whole words), then the style and the sprms.
fn paragraph_properties(page: &[u8], at: usize) -> Option<(u16, &[u8])> {
    let (start, len) = match *page.get(at)? {
        0 => (at + 2, 2 * usize::from(*page.get(at + 1)?)),
        words => (at + 1, 2 * usize::from(words) - 1),
    };
    let bytes = page.get(start..start + len)?;
    Some((u16_at(bytes, 0)?, bytes.get(2..)?))
}

/// A Chpx: a count byte, then the sprms.
fn character_properties(page: &[u8], at: usize) -> Option<&[u8]> {
    let len = usize::from(*page.get(at)?);
    page.get(at + 1..at + 1 + len)
}

/// The sprms of a list (a grpprl), each with its operand; ends at the first that does not
/// fit.
pub(super) struct Sprms<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for Sprms<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let sprm = u16_at(self.0, 0)?;
        let rest = self.0.get(2..)?;
        let Some(operand) = operand_len(sprm, rest).and_then(|len| rest.get(..len)) else {
            self.0 = &[];
            return None;
        };
        self.0 = rest.get(operand.len()..).unwrap_or_default();
        Some((sprm, operand))
    }
}

/// The size of a sprm's operand, which its top three bits (`spra`) tell: fixed sizes, or a
/// leading size byte, but for the two sprms that say it otherwise.
fn operand_len(sprm: u16, rest: &[u8]) -> Option<usize> {
    Some(match sprm >> 13 {
        0 | 1 => 1,
        2 | 4 | 5 => 2,
        3 => 4,
        7 => 3,
        _ => match sprm {
            // A 16-bit size, counting itself less one byte.
            SPRM_T_DEF_TABLE => usize::from(u16_at(rest, 0)?) + 1,
            // A size of 255: tab stops deleted (four bytes each) then added (three).
            SPRM_P_CHG_TABS if rest.first() == Some(&255) => {
                let deleted = usize::from(*rest.get(1)?);
                let added = usize::from(*rest.get(2 + 4 * deleted)?);
                3 + 4 * deleted + 3 * added
            }
            _ => 1 + usize::from(*rest.first()?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sprms_are_walked_by_their_sizes() {
        let grpprl = [
            0x16, 0x24, 0x01, // sprmPFInTable 1
            0x08, 0xD6, 0x03, 0x00, 0xAA, 0xBB, // sprmTDefTable, cb 3: two more bytes
            0x49, 0x66, 0x02, 0x00, 0x00, 0x00, // sprmPItap 2
            0x0B, 0x46, 0x03, 0x00, // sprmPIlfo 3
            0x0D, 0xC6, 0x02, 0x00, 0x00, // sprmPChgTabsPapx, two bytes
            0x40, 0x26, 0x01, // sprmPOutLvl 1
        ];
        let props = ParagraphSprms::read(&grpprl);
        assert_eq!(props.in_table, Some(true));
        assert_eq!(props.table_depth, Some(2));
        assert_eq!(props.list_item(), Some((3, 0)));
        assert_eq!(props.outline_level, Some(1));
        // Cut inside an operand: what came before is kept.
        let props = ParagraphSprms::read(&grpprl[..20]);
        assert_eq!(props.list, Some(3));
        assert_eq!(props.outline_level, None);
    }

    #[test]
    fn tab_changes_of_size_255_count_their_stops() {
        // Two deleted stops (8 bytes), one added (3 bytes), then sprmPFInTable.
        let mut grpprl = vec![0x15, 0xC6, 255, 2];
        grpprl.extend([0; 8]);
        grpprl.push(1);
        grpprl.extend([0; 3]);
        grpprl.extend([0x16, 0x24, 0x01]);
        assert_eq!(ParagraphSprms::read(&grpprl).in_table, Some(true));
    }

    #[test]
    fn toggles_and_deletions() {
        let props = CharacterProps::read(&[0x3C, 0x08, 0x81, 0x00, 0x08, 0x01]);
        assert!(props.hidden && props.deleted && !props.shows_text());
        let props = CharacterProps::read(&[0x3C, 0x08, 0x80]);
        assert!(props.shows_text());
    }

    #[test]
    fn a_paragraph_page_maps_offsets_to_runs() {
        let mut page = vec![0u8; PAGE_BYTES];
        // Two runs: 100..110 without properties, 110..130 with style 7 and sprmPFTtp.
        for (i, fc) in [100u32, 110, 130].iter().enumerate() {
            page[4 * i..4 * i + 4].copy_from_slice(&fc.to_le_bytes());
        }
        page[PAGE_BYTES - 1] = 2;
        page[12 + PARAGRAPH_ENTRY_BYTES] = 200; // properties at byte 400
        page[400..406].copy_from_slice(&[3, 7, 0, 0x17, 0x24, 1]);
        let mut word = vec![0u8; PAGE_BYTES];
        word.extend(page);
        let plc: Vec<u8> = [100u32, 130, 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut bins = Bins::new(Some(&plc), &word, Kind::Paragraph);
        let run = bins.paragraph_at(105).unwrap();
        assert_eq!((run.style, run.sprms), (0, ParagraphSprms::default()));
        let run = bins.paragraph_at(129).unwrap();
        assert_eq!(run.style, 7);
        assert_eq!(run.sprms.row_end, Some(true));
        assert!(bins.paragraph_at(130).is_none());
        assert!(bins.paragraph_at(99).is_none());
    }
}
