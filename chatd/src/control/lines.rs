//! The control socket's framing: one request per `\n`-terminated line of at most `max` bytes.
//!
//! tokio-util's `AnyDelimiterCodec` does the same but tests every byte against its list of
//! delimiters (≈ 1,300 instructions per `send` line, callgrind); `LinesCodec` uses memchr but
//! copies each line into a `String` and turns invalid UTF-8 into an I/O error, where chatd
//! answers it like any other bad request. This is the first with the second's search.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("request line longer than {0} bytes")]
    TooLong(usize),
    /// The I/O error is in the message, not a `source()` (printed twice with the chain).
    #[error("read error: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for LineError {
    fn from(e: std::io::Error) -> Self {
        LineError::Io(e)
    }
}

pub struct Lines {
    max: usize,
    /// How far the buffer was searched already (a line arrives in pieces).
    searched: usize,
}

impl Lines {
    pub fn new(max: usize) -> Self {
        Lines { max, searched: 0 }
    }
}

impl Decoder for Lines {
    type Item = Bytes;
    type Error = LineError;

    /// The next line without its `\n`; an error once `max` bytes came without one.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        let end = buf.len().min(self.max.saturating_add(1));
        match memchr::memchr(b'\n', &buf[self.searched.min(end)..end]) {
            Some(i) => {
                let at = self.searched.min(end) + i;
                self.searched = 0;
                let mut line = buf.split_to(at + 1);
                line.truncate(at);
                Ok(Some(line.freeze()))
            }
            None if buf.len() > self.max => Err(LineError::TooLong(self.max)),
            None => {
                self.searched = end;
                Ok(None)
            }
        }
    }

    /// At end of input, what is left counts as a last line.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineError> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None if buf.is_empty() => Ok(None),
            None => {
                self.searched = 0;
                Ok(Some(buf.split().freeze()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_that_arrive_in_pieces_and_bounds_their_length() {
        let mut c = Lines::new(8);
        let mut buf = BytesMut::from(&b"ab"[..]);
        assert!(c.decode(&mut buf).expect("partial").is_none());
        buf.extend_from_slice(b"c\n\nxyz\n12345678\nrest");
        let mut got = Vec::new();
        while let Some(l) = c.decode(&mut buf).expect("line") {
            got.push(l);
        }
        assert_eq!(got, [&b"abc"[..], b"", b"xyz", b"12345678"]);
        assert_eq!(
            c.decode_eof(&mut buf).expect("eof"),
            Some(Bytes::from_static(b"rest"))
        );
        assert!(c.decode_eof(&mut buf).expect("empty").is_none());

        let mut long = BytesMut::from(&b"123456789"[..]);
        assert!(matches!(
            Lines::new(8).decode(&mut long),
            Err(LineError::TooLong(8))
        ));
        let mut long_line = BytesMut::from(&b"123456789\n"[..]);
        assert!(matches!(
            Lines::new(8).decode(&mut long_line),
            Err(LineError::TooLong(8))
        ));
    }
}
