//! The title and author from the `\x05SummaryInformation` stream, a property set
//! ([MS-OLEPS]): a header naming the set by its FMTID and where it lies, then the set itself,
//! a table of (property id, offset) pairs and the typed values they point to. Its 8-bit
//! strings are in the code page its property 1 names.

use encoding_rs::{Encoding, UTF_16LE, WINDOWS_1252};

use super::cfb::{u16_at, u32_at};
use crate::rtf::codepage::code_page;

/// FMTID_SummaryInformation, {F29F85E0-4FF9-1068-AB91-08002B27B3D9}, as stored.
const SUMMARY_INFORMATION: [u8; 16] = [
    0xE0, 0x85, 0x9F, 0xF2, 0xF9, 0x4F, 0x68, 0x10, 0xAB, 0x91, 0x08, 0x00, 0x2B, 0x27, 0xB3, 0xD9,
];
const PID_CODEPAGE: u32 = 1;
const PID_TITLE: u32 = 2;
const PID_AUTHOR: u32 = 4;
const VT_I2: u16 = 0x0002;
const VT_LPSTR: u16 = 0x001E;
const VT_LPWSTR: u16 = 0x001F;
const CP_UTF16: u16 = 1200;
/// Properties looked at, at most: a summary has about twenty.
const MAX_PROPERTIES: usize = 256;
/// Characters kept of a title or an author.
const MAX_CHARS: usize = 1000;

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Summary {
    pub(super) title: Option<String>,
    pub(super) author: Option<String>,
}

/// The title and author `stream` records; none of either when it is malformed.
pub(super) fn read(stream: &[u8]) -> Summary {
    let Some(set) = property_set(stream) else {
        return Summary::default();
    };
    let count = u32_at(set, 4).map_or(0, |n| n as usize).min(MAX_PROPERTIES);
    let properties: Vec<(u32, &[u8])> = (0..count)
        .filter_map(|i| {
            let id = u32_at(set, 8 + 8 * i)?;
            let offset = usize::try_from(u32_at(set, 12 + 8 * i)?).ok()?;
            Some((id, set.get(offset..)?))
        })
        .collect();
    let value = |wanted: u32| properties.iter().find(|(id, _)| *id == wanted).map(|p| p.1);
    let encoding = value(PID_CODEPAGE)
        .filter(|v| u16_at(v, 0) == Some(VT_I2))
        .and_then(|v| u16_at(v, 4))
        .and_then(|page| match page {
            CP_UTF16 => Some(UTF_16LE),
            page => code_page(i32::from(page)),
        })
        .unwrap_or(WINDOWS_1252);
    Summary {
        title: value(PID_TITLE).and_then(|v| string(v, encoding)),
        author: value(PID_AUTHOR).and_then(|v| string(v, encoding)),
    }
}

/// The first property set of the stream, if it is the summary information's.
fn property_set(stream: &[u8]) -> Option<&[u8]> {
    if u16_at(stream, 0) != Some(0xFFFE) || u32_at(stream, 24)? == 0 {
        return None;
    }
    if stream.get(28..44)? != SUMMARY_INFORMATION {
        return None;
    }
    let offset = usize::try_from(u32_at(stream, 44)?).ok()?;
    stream.get(offset..)
}

/// A string value (typed, then its length and its characters), its white space collapsed.
fn string(value: &[u8], encoding: &'static Encoding) -> Option<String> {
    let len = usize::try_from(u32_at(value, 4)?).ok()?;
    let text = match u16_at(value, 0)? {
        VT_LPSTR => {
            let bytes = value.get(8..8usize.checked_add(len)?)?;
            encoding.decode_without_bom_handling(bytes).0
        }
        VT_LPWSTR => {
            let bytes = value.get(8..8usize.checked_add(len.checked_mul(2)?)?)?;
            UTF_16LE.decode_without_bom_handling(bytes).0
        }
        _ => return None,
    };
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '\0')
        .filter(|w| !w.is_empty())
        .collect();
    let joined: String = words.join(" ").chars().take(MAX_CHARS).collect();
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(properties: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0xFE, 0xFF, 0, 0, 0, 0, 0, 0];
        out.extend([0; 16]);
        out.extend(1u32.to_le_bytes());
        out.extend(SUMMARY_INFORMATION);
        out.extend(48u32.to_le_bytes());
        let table_len = 8 + 8 * properties.len();
        let mut values: Vec<u8> = Vec::new();
        let mut table = Vec::new();
        for (id, value) in properties {
            table.extend(id.to_le_bytes());
            table.extend(((table_len + values.len()) as u32).to_le_bytes());
            values.extend(value);
        }
        out.extend(((table_len + values.len()) as u32).to_le_bytes());
        out.extend((properties.len() as u32).to_le_bytes());
        out.extend(table);
        out.extend(values);
        out
    }

    fn lpstr(bytes: &[u8]) -> Vec<u8> {
        let mut value = vec![0x1E, 0, 0, 0];
        value.extend((bytes.len() as u32).to_le_bytes());
        value.extend(bytes);
        value
    }

    #[test]
    fn strings_in_the_sets_code_page() {
        let code_page = |page: u16| {
            let mut v = vec![0x02, 0, 0, 0];
            v.extend(page.to_le_bytes());
            v.extend([0, 0]);
            v
        };
        let utf8 = stream(&[
            (PID_CODEPAGE, code_page(65001)),
            (PID_TITLE, lpstr(b"Caf\xc3\xa9  notes\0")),
            (PID_AUTHOR, lpstr("Ana\u{2019}s".as_bytes())),
        ]);
        assert_eq!(
            read(&utf8),
            Summary {
                title: Some("Café notes".into()),
                author: Some("Ana\u{2019}s".into())
            }
        );
        // No code page: Windows-1252.
        let legacy = stream(&[(PID_AUTHOR, lpstr(b"Gr\xe9goire\0"))]);
        assert_eq!(read(&legacy).author.as_deref(), Some("Grégoire"));
        // Blank, cut short, or of another type: none.
        let odd = stream(&[
            (PID_TITLE, lpstr(b"  \0")),
            (PID_AUTHOR, vec![0x1E, 0, 0, 0, 0xFF, 0xFF, 0, 0, b'x']),
        ]);
        assert_eq!(read(&odd), Summary::default());
        assert_eq!(read(&utf8[..60]), Summary::default());
        assert_eq!(read(b""), Summary::default());
    }
}
