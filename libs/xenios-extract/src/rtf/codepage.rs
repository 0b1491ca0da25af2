//! The encodings of RTF's 8-bit text: the document's code page (`\ansicpgN`) and a font's
//! character set (`\fcharsetN`). Those encoding_rs does not know (the DOS code pages 437 and
//! 850, Johab) are read as Windows-1252, which maps every byte: some letters come out wrong,
//! but the text is never refused.

use encoding_rs::Encoding;

/// The encoding of a Windows code page number, if it is one encoding_rs knows.
pub(crate) fn code_page(number: i32) -> Option<&'static Encoding> {
    let label = match number {
        874 | 1250..=1258 => format!("windows-{number}"),
        866 => "ibm866".to_owned(),
        932 => "shift_jis".to_owned(),
        936 => "gbk".to_owned(),
        949 => "euc-kr".to_owned(),
        950 => "big5".to_owned(),
        10000 => "macintosh".to_owned(),
        10007 => "x-mac-cyrillic".to_owned(),
        20866 => "koi8-r".to_owned(),
        21866 => "koi8-u".to_owned(),
        28591..=28606 => format!("iso-8859-{}", number - 28590),
        65001 => "utf-8".to_owned(),
        _ => return None,
    };
    Encoding::for_label(label.as_bytes())
}

/// The encoding of a font's `\fcharsetN`. `None` for the ANSI and default character sets,
/// which mean the document's code page, and for Symbol, which has no Unicode mapping to use.
pub(super) fn charset(number: i32) -> Option<&'static Encoding> {
    let page = match number {
        77 => 10000,
        128 => 932,
        129 => 949,
        134 => 936,
        136 => 950,
        161 => 1253,
        162 => 1254,
        163 => 1258,
        177 => 1255,
        178 => 1256,
        186 => 1257,
        204 => 1251,
        222 => 874,
        238 => 1250,
        _ => return None,
    };
    code_page(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_pages_and_charsets() {
        assert_eq!(code_page(1251).map(Encoding::name), Some("windows-1251"));
        assert_eq!(code_page(932).map(Encoding::name), Some("Shift_JIS"));
        assert_eq!(code_page(28595).map(Encoding::name), Some("ISO-8859-5"));
        assert_eq!(code_page(437), None);
        assert_eq!(charset(204).map(Encoding::name), Some("windows-1251"));
        assert_eq!(charset(0), None);
        assert_eq!(charset(2), None);
    }
}
