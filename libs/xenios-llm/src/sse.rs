//! Server-sent events read incrementally from a response body, with bounded memory.
//!
//! Lines end in `\n` or `\r\n` (what every LLM provider sends); a lone `\r` is not a line end.
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SseError {
    #[error("a stream line is longer than {0} bytes")]
    LineTooLong(usize),
    #[error("the stream is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the stream is not UTF-8")]
    NotUtf8,
    #[error("the stream broke: {0}")]
    Transport(#[from] reqwest::Error),
}

/// The event-stream grammar over pushed bytes: `feed` a chunk, then take events until `None`.
#[derive(Debug)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    event: Option<String>,
    data: String,
    has_data: bool,
    max_line: usize,
}

impl SseParser {
    pub fn new(max_line: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            start: 0,
            event: None,
            data: String::new(),
            has_data: false,
            max_line,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        while let Some(len) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[self.start..self.start + len];
            self.start += len + 1;
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.len() > self.max_line {
                return Err(SseError::LineTooLong(self.max_line));
            }
            let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    return Ok(Some(SseEvent {
                        event: self.event.take(),
                        data: std::mem::take(&mut self.data),
                    }));
                }
                self.event = None;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "" => {} // a comment (`: keep-alive`)
                "event" => self.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                    if self.data.len() > self.max_line {
                        return Err(SseError::LineTooLong(self.max_line));
                    }
                }
                _ => {} // id, retry: nothing to resume here
            }
        }
        if self.buf.len() - self.start > self.max_line {
            return Err(SseError::LineTooLong(self.max_line));
        }
        Ok(None)
    }
}

/// Events pulled from a body stream as they complete.
pub(crate) struct SseReader<S> {
    body: S,
    parser: SseParser,
    read: usize,
    max_total: usize,
    /// The body returned its end: it is not polled again.
    ended: bool,
}

impl<S> SseReader<S>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
{
    pub fn new(body: S, max_line: usize, max_total: usize) -> Self {
        SseReader {
            body,
            parser: SseParser::new(max_line),
            read: 0,
            max_total,
            ended: false,
        }
    }

    /// Reads what is left of the body, at most for `within`, and drops it. Only a body read to
    /// its end lets the client keep its connection for another request.
    pub async fn finish(mut self, within: Duration) {
        if self.ended {
            return;
        }
        let rest = async {
            while let Some(Ok(chunk)) = self.body.next().await {
                self.read += chunk.len();
                if self.read > self.max_total {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(within, rest).await;
    }

    /// The next event; `None` when the body ended (an unfinished event is dropped).
    pub async fn next(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if let Some(event) = self.parser.next_event()? {
                return Ok(Some(event));
            }
            match self.body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    self.read += chunk.len();
                    if self.read > self.max_total {
                        return Err(SseError::TooLarge(self.max_total));
                    }
                    self.parser.feed(&chunk);
                }
                None => {
                    self.ended = true;
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]], max_line: usize) -> Result<Vec<SseEvent>, SseError> {
        let mut p = SseParser::new(max_line);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c);
            while let Some(e) = p.next_event()? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let text = "event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: caf\u{e9}\r\ndata:two\r\n\r\ndata: [DONE]\n\n";
        let whole = events(&[text.as_bytes()], 1024).unwrap();
        assert_eq!(
            whole,
            vec![
                ev(Some("message_start"), "{\"a\":1}"),
                ev(None, "caf\u{e9}\ntwo"),
                ev(None, "[DONE]"),
            ]
        );
        // Every split point, including inside the two-byte é and between \r and \n.
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            assert_eq!(
                events(&[&bytes[..i], &bytes[i..]], 1024).unwrap(),
                whole,
                "split {i}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(events(&singles, 1024).unwrap(), whole);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        assert_eq!(
            events(&[b"event: ping\n\ndata: x\n\n"], 64).unwrap(),
            vec![ev(None, "x")]
        );
    }

    #[test]
    fn long_lines_are_refused_even_before_they_end() {
        assert!(matches!(
            events(&[&[b'a'; 100]], 64),
            Err(SseError::LineTooLong(64))
        ));
        assert!(matches!(
            events(&[b"data: 0123456789\ndata: 0123456789\n"], 16),
            Err(SseError::LineTooLong(16))
        ));
        assert!(matches!(
            events(&[b"data: \xff\n\n"], 64),
            Err(SseError::NotUtf8)
        ));
    }

    /// A body that fails the test if it is polled again after returning its end (a stream
    /// need not be fused).
    struct EndsOnce(Option<Bytes>, bool);

    impl Stream for EndsOnce {
        type Item = reqwest::Result<Bytes>;

        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            assert!(!self.1, "the body was polled after its end");
            let next = self.0.take();
            self.1 = next.is_none();
            std::task::Poll::Ready(next.map(Ok))
        }
    }

    #[tokio::test]
    async fn finishing_a_body_that_ended_reads_nothing_more() {
        let mut reader = SseReader::new(EndsOnce(Some(Bytes::from("data: x\n\n")), false), 64, 64);
        assert_eq!(reader.next().await.unwrap(), Some(ev(None, "x")));
        assert_eq!(reader.next().await.unwrap(), None);
        reader.finish(Duration::from_secs(1)).await;
    }
}
