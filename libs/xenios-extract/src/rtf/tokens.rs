//! RTF split into tokens: group braces, control words and symbols, hex bytes, plain text and
//! `\bin` data. No meaning is given to any of them here.

/// Digits of a control word's parameter read at most, as the RTF specification allows.
const MAX_PARAM_DIGITS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token<'a> {
    GroupStart,
    GroupEnd,
    /// `\name` or `\nameN`: its name (ASCII letters) and its parameter, if it has one.
    Word(&'a str, Option<i32>),
    /// `\` and one character that is not a letter (`\~`, `\*`, `\{`, …). A `\'` not followed
    /// by two hex digits is one too.
    Symbol(u8),
    /// `\'hh`: a byte of text in the document's code page.
    Byte(u8),
    /// Plain text bytes, up to the next `\`, brace or line end.
    Text(&'a [u8]),
    /// The data of `\binN`: bytes that are never text, whatever they look like.
    Binary(&'a [u8]),
}

pub(super) struct Tokens<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Tokens<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Tokens { bytes, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Advances past the bytes for which `keep` holds, returning them.
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        &self.bytes[start..self.at]
    }

    /// What follows a backslash.
    fn control(&mut self) -> Option<Token<'a>> {
        let next = self.peek()?;
        if next.is_ascii_alphabetic() {
            return Some(self.control_word());
        }
        self.at += 1;
        Some(match next {
            b'\'' => self.hex_byte(),
            // A backslash ending a line is a paragraph mark.
            b'\r' | b'\n' => Token::Word("par", None),
            other => Token::Symbol(other),
        })
    }

    fn control_word(&mut self) -> Token<'a> {
        let name = self.take_while(|b| b.is_ascii_alphabetic());
        // Letters only, so always UTF-8.
        let name = std::str::from_utf8(name).unwrap_or_default();
        let param = self.parameter();
        // A space after a control word delimits it and is not text.
        if self.peek() == Some(b' ') {
            self.at += 1;
        }
        if name == "bin" {
            let wanted = usize::try_from(param.unwrap_or(0)).unwrap_or(0);
            let start = self.at;
            self.at = start.saturating_add(wanted).min(self.bytes.len());
            return Token::Binary(&self.bytes[start..self.at]);
        }
        Token::Word(name, param)
    }

    /// The optional `-` and digits after a control word's name, saturated to an `i32`.
    fn parameter(&mut self) -> Option<i32> {
        let negative = self.peek() == Some(b'-')
            && self
                .bytes
                .get(self.at + 1)
                .is_some_and(|b| b.is_ascii_digit());
        if negative {
            self.at += 1;
        }
        let start = self.at;
        while self.at - start < MAX_PARAM_DIGITS && self.peek().is_some_and(|b| b.is_ascii_digit())
        {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        if digits.is_empty() {
            return None;
        }
        let magnitude = digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        let value = if negative { -magnitude } else { magnitude };
        Some(i32::try_from(value).unwrap_or(if negative { i32::MIN } else { i32::MAX }))
    }

    /// After `\'`: two hex digits make a byte.
    fn hex_byte(&mut self) -> Token<'a> {
        let digit = |at: usize| self.bytes.get(at).and_then(|&b| (b as char).to_digit(16));
        match (digit(self.at), digit(self.at + 1)) {
            (Some(high), Some(low)) => {
                self.at += 2;
                // Two hex digits are below 256.
                Token::Byte(u8::try_from(high * 16 + low).unwrap_or(b'?'))
            }
            _ => Token::Symbol(b'\''),
        }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            let byte = self.peek()?;
            match byte {
                b'{' => {
                    self.at += 1;
                    return Some(Token::GroupStart);
                }
                b'}' => {
                    self.at += 1;
                    return Some(Token::GroupEnd);
                }
                b'\\' => {
                    self.at += 1;
                    return self.control();
                }
                // Line ends in RTF are only there to keep lines short.
                b'\r' | b'\n' => self.at += 1,
                _ => {
                    let text =
                        self.take_while(|b| !matches!(b, b'{' | b'}' | b'\\' | b'\r' | b'\n'));
                    return Some(Token::Text(text));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Token::*;
    use super::*;

    fn tokens(rtf: &[u8]) -> Vec<Token<'_>> {
        Tokens::new(rtf).collect()
    }

    #[test]
    fn splits_groups_words_symbols_and_text() {
        assert_eq!(
            tokens(b"{\\rtf1\\ansi Hello\\par\r\n\\b0  world\\~\\{x\\}\\'e9}"),
            [
                GroupStart,
                Word("rtf", Some(1)),
                Word("ansi", None),
                Text(b"Hello"),
                Word("par", None),
                Word("b", Some(0)),
                Text(b" world"),
                Symbol(b'~'),
                Symbol(b'{'),
                Text(b"x"),
                Symbol(b'}'),
                Byte(0xe9),
                GroupEnd,
            ]
        );
    }

    #[test]
    fn parameters_are_signed_and_bounded() {
        assert_eq!(tokens(b"\\u-3913?"), [Word("u", Some(-3913)), Text(b"?")]);
        // A `-` not followed by a digit is text.
        assert_eq!(tokens(b"\\li-x"), [Word("li", None), Text(b"-x")]);
        // Ten digits at most: the rest is text; the value saturates.
        assert_eq!(
            tokens(b"\\fs99999999999"),
            [Word("fs", Some(i32::MAX)), Text(b"9")]
        );
        assert_eq!(tokens(b"\\fs-9999999999"), [Word("fs", Some(i32::MIN))]);
    }

    #[test]
    fn binary_data_is_taken_whole_and_bounded_by_the_input() {
        assert_eq!(tokens(b"\\bin3 {\\}x"), [Binary(b"{\\}"), Text(b"x")]);
        assert_eq!(tokens(b"\\bin99 ab"), [Binary(b"ab")]);
        assert_eq!(tokens(b"\\bin-5 ab"), [Binary(b""), Text(b"ab")]);
    }

    #[test]
    fn odd_escapes_do_not_fail() {
        assert_eq!(tokens(b"\\'zz"), [Symbol(b'\''), Text(b"zz")]);
        assert_eq!(tokens(b"\\'e"), [Symbol(b'\''), Text(b"e")]);
        assert_eq!(
            tokens(b"a\\\nb"),
            [Text(b"a"), Word("par", None), Text(b"b")]
        );
        assert_eq!(tokens(b"end\\"), [Text(b"end")]);
    }
}
