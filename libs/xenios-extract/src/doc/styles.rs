//! The stylesheet (STSH): for each style number (`istd`) a paragraph's properties name, its
//! built-in identity (`sti`: 1–9 are "heading 1"–"heading 9" whatever the language of their
//! names), its name, the style it is based on, and the paragraph sprms it sets (an outline
//! level, a list). Only what makes headings and list items is kept.

use super::cfb::u16_at;
use super::props::ParagraphSprms;
use crate::docx::heading_from_name;

/// Paragraph styles have kind (`stk`) 1; character, table and list styles make no headings.
const PARAGRAPH_STYLE: u16 = 1;
/// `istdBase` of a style based on none.
const NO_BASE: u16 = 0x0FFF;
/// Built-in style identifiers: the headings, and the title.
const STI_HEADINGS: std::ops::RangeInclusive<u16> = 1..=9;
const STI_TITLE: u16 = 62;
/// Styles based on styles based on …: Word allows ten levels.
const MAX_BASE_DEPTH: usize = 11;
const MAX_NAME_UNITS: usize = 255;

struct Style {
    sti: u16,
    paragraph: bool,
    base: u16,
    name: String,
    sprms: ParagraphSprms,
}

#[derive(Default)]
pub(super) struct Styles {
    /// Indexed by `istd`; `None` for empty slots.
    styles: Vec<Option<Style>>,
}

impl Styles {
    /// The styles of `stsh`; none when it is missing or unreadable, which only costs headings.
    pub(super) fn parse(stsh: Option<&[u8]>) -> Styles {
        let Some(stsh) = stsh else {
            return Styles::default();
        };
        let header_len = usize::from(u16_at(stsh, 0).unwrap_or(0));
        let Some(header) = stsh.get(2..2 + header_len) else {
            return Styles::default();
        };
        let count = usize::from(u16_at(header, 0).unwrap_or(0));
        let base_len = usize::from(u16_at(header, 2).unwrap_or(10));
        let mut styles = Vec::new();
        let mut at = 2 + header_len;
        // Each entry takes at least its two length bytes: the loop ends within the stylesheet.
        while styles.len() < count {
            let Some(len) = u16_at(stsh, at).map(usize::from) else {
                break;
            };
            let std = stsh.get(at + 2..at + 2 + len).unwrap_or_default();
            styles.push((len > 0).then(|| parse_style(std, base_len)).flatten());
            // Entries start at even offsets; the padding is not in their length.
            at += 2 + len + len % 2;
        }
        Styles { styles }
    }

    #[cfg(test)]
    pub(super) fn name(&self, istd: u16) -> Option<&str> {
        Some(&self.get(istd)?.name)
    }

    fn get(&self, istd: u16) -> Option<&Style> {
        self.styles.get(usize::from(istd))?.as_ref()
    }

    /// The heading level (1–6) of a paragraph in style `istd`: a built-in heading or title
    /// style, a style named like one, or one with an outline level.
    pub(super) fn heading_level(&self, istd: u16) -> Option<usize> {
        let style = self.get(istd).filter(|s| s.paragraph)?;
        if STI_HEADINGS.contains(&style.sti) {
            return Some(usize::from(style.sti).min(6));
        }
        if style.sti == STI_TITLE {
            return Some(1);
        }
        heading_from_name(&style.name).or_else(|| outline_heading(self.sprms(istd).outline_level))
    }

    /// The paragraph sprms style `istd` sets, with those of the styles it is based on.
    pub(super) fn sprms(&self, istd: u16) -> ParagraphSprms {
        let mut chain = Vec::new();
        let mut next = istd;
        while chain.len() < MAX_BASE_DEPTH && next != NO_BASE {
            let Some(style) = self.get(next) else {
                break;
            };
            chain.push(style.sprms);
            next = style.base;
        }
        chain
            .into_iter()
            .rev()
            .fold(ParagraphSprms::default(), |base, own| own.over(base))
    }
}

/// Heading level 1–6 of outline level 0–8 (9 is body text).
pub(super) fn outline_heading(outline_level: Option<u8>) -> Option<usize> {
    let level = usize::from(outline_level?);
    (level < 9).then_some((level + 1).min(6))
}

/// One STD: its fixed part (`base_len` bytes: identity, kind, base), its name (a 16-bit
/// count, UTF-16 characters and a terminating NUL), then for a paragraph style its
/// paragraph properties (a 16-bit length, the style number again, the sprms).
fn parse_style(std: &[u8], base_len: usize) -> Option<Style> {
    let sti = u16_at(std, 0)? & 0x0FFF;
    let kind_and_base = u16_at(std, 2)?;
    let name_len = usize::from(u16_at(std, base_len)?).min(MAX_NAME_UNITS);
    let name_at = base_len + 2;
    let units: Vec<u16> = std
        .get(name_at..name_at + 2 * name_len)?
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    let paragraph = kind_and_base & 0x000F == PARAGRAPH_STYLE;
    let properties_at = name_at + 2 * name_len + 2;
    let sprms = if paragraph {
        paragraph_sprms(std, properties_at).unwrap_or_default()
    } else {
        ParagraphSprms::default()
    };
    Some(Style {
        sti,
        paragraph,
        base: kind_and_base >> 4,
        name: String::from_utf16_lossy(&units),
        sprms,
    })
}

fn paragraph_sprms(std: &[u8], at: usize) -> Option<ParagraphSprms> {
    let len = usize::from(u16_at(std, at)?);
    let upx = std.get(at + 2..at + 2 + len)?;
    Some(ParagraphSprms::read(upx.get(2..)?))
}
