//! Text decoding, and plain text and Markdown, which pass through.

use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};

use crate::blocks::collapse_lines;
use crate::limits::Ctx;
use crate::{DocumentFormat, ExtractError, Extracted};

/// Decodes text: a byte-order mark wins, then UTF-8, then the `declared` encoding (an
/// HTML `<meta charset>`), then Windows-1252, which maps every byte and is what legacy
/// "ANSI" exports usually are.
pub(crate) fn decode(bytes: &[u8], declared: Option<&'static Encoding>) -> String {
    if let Some((encoding, bom)) = Encoding::for_bom(bytes) {
        return encoding
            .decode_without_bom_handling(&bytes[bom..])
            .0
            .into_owned();
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_owned();
    }
    let encoding = declared.filter(|e| *e != UTF_8).unwrap_or(WINDOWS_1252);
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

/// Line ends made `\n`, and NULs and other C0 controls that no text format means dropped.
pub(crate) fn normalize(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    text.chars()
        .map(|c| if c == '\r' { '\n' } else { c })
        .filter(|&c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

pub(crate) fn extract(
    bytes: &[u8],
    format: DocumentFormat,
    cx: &mut Ctx,
) -> Result<Extracted, ExtractError> {
    let text = normalize(&decode(bytes, None));
    cx.clock.check()?;
    let title = match format {
        DocumentFormat::Markdown => markdown_title(&text),
        _ => None,
    };
    let mut out = cx.out();
    out.push_str(text.trim_matches('\n'))?;
    let mut extracted = Extracted::new(out.into_string(), cx.opts.output, format);
    extracted.title = title;
    Ok(extracted)
}

/// The text of the first ATX level-1 heading.
pub(crate) fn markdown_title(text: &str) -> Option<String> {
    let mut in_fence = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        } else if !in_fence {
            if let Some(title) = trimmed.strip_prefix("# ") {
                let title = collapse_lines(title.trim().trim_end_matches('#'));
                if !title.is_empty() {
                    return Some(title);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bom_utf8_and_legacy_bytes() {
        assert_eq!(decode(b"\xEF\xBB\xBFhi", None), "hi");
        assert_eq!(decode(b"\xFF\xFEh\0i\0", None), "hi");
        assert_eq!(decode("café".as_bytes(), None), "café");
        assert_eq!(decode(b"caf\xE9 \x93q\x94", None), "café “q”");
    }

    #[test]
    fn normalizes_line_ends_and_controls() {
        assert_eq!(normalize("a\r\nb\rc\0d\te"), "a\nb\ncd\te");
    }

    #[test]
    fn markdown_title_skips_code_fences() {
        let md = "```\n# not a title\n```\n\n# Real title #\n\n## Sub";
        assert_eq!(markdown_title(md).as_deref(), Some("Real title"));
        assert_eq!(markdown_title("## only h2"), None);
    }
}
