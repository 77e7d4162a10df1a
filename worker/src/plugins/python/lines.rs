//! Lines from a plugin host's pipes, whatever a plugin writes into them:
//! bytes that are not UTF-8 are replaced (a reader that stopped at them
//! closed the pipe, and the host died of `BrokenPipeError` at its next
//! print), and a line past the cap is cut, the rest of it read and dropped
//! (a print with no newline was buffered whole in the worker).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line, without its newline.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Line {
    /// The text, at most the cap's bytes before replacing what is not UTF-8.
    pub text: String,
    /// The line's whole length in bytes, when it was cut.
    pub cut_from: Option<usize>,
}

/// Reads capped lines from `reader`.
pub(super) struct CappedLines<R> {
    reader: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> CappedLines<R> {
    /// Lines of at most `max` bytes.
    pub(super) fn new(reader: R, max: usize) -> CappedLines<R> {
        CappedLines { reader, max, buf: Vec::new() }
    }

    /// The next line; `None` at the end of the stream.
    pub(super) async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        self.buf.clear();
        let mut length = 0usize;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok((length > 0).then(|| self.line(length)));
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            let room = self.max.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            length = length.saturating_add(chunk.len());
            let consumed = newline.map_or(chunk.len(), |i| i + 1);
            self.reader.consume(consumed);
            if newline.is_some() {
                return Ok(Some(self.line(length)));
            }
        }
    }

    fn line(&self, length: usize) -> Line {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        Line { text, cut_from: (length > self.max).then_some(length) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize) -> Vec<Line> {
        let mut lines = CappedLines::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    fn line(text: &str, cut_from: Option<usize>) -> Line {
        Line { text: text.into(), cut_from }
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_are_replaced_and_reading_goes_on() {
        // "中文" in GBK, then a line of UTF-8.
        let got = all(b"\xd6\xd0\xce\xc4 gbk\nnext\n", 100).await;
        assert_eq!(got, [line("\u{fffd}\u{fffd}\u{fffd}\u{fffd} gbk", None), line("next", None)]);
    }

    #[tokio::test]
    async fn a_long_line_is_cut_and_the_rest_of_it_dropped() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\nafter\nlast without newline");
        let got = all(&input, 16).await;
        assert_eq!(got, [line(&"x".repeat(16), Some(10_000)), line("after", None), line("last without new", Some(20))]);
    }

    #[tokio::test]
    async fn empty_lines_stay_lines() {
        assert_eq!(all(b"\n\na\n", 8).await, [line("", None), line("", None), line("a", None)]);
        assert!(all(b"", 8).await.is_empty());
    }
}
