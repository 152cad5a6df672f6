//! Request bodies, read and thrown away.
//!
//! A static server has no use for a body, but it must still read it: the next pipelined
//! request starts right after the body, and a server that guesses wrong about where that is
//! can be made to see a request the proxy in front never saw (request smuggling). So the body
//! is skipped by exactly its framed length (RFC 9112 section 6): a Content-Length counts
//! bytes; a chunked body is walked chunk by chunk (section 7.1), sizes parsed by
//! `httparse::parse_chunk_size`, and its trailer section skipped.

use crate::error::HttpError;
use crate::request::BodyLength;

/// Longest chunk-size line (with extensions) we wait for before calling it invalid.
const MAX_CHUNK_SIZE_LINE: usize = 1024;

/// Where we are in skipping a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// No body left to skip.
    Done,
    /// This many bytes of a Content-Length body are still to come.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunked, u64),
}

/// The position inside a chunked body. The `u64` beside it in [`Discard::Chunked`] counts
/// the data bytes seen so far, to enforce `--max-body-bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data: this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// After the last chunk: skipping trailer lines until an empty line.
    Trailers(usize),
}

impl Discard {
    /// The discard state for a request whose body is framed as `body`.
    pub fn new(body: BodyLength) -> Self {
        match body {
            BodyLength::None => Discard::Done,
            BodyLength::Length(n) => Discard::Length(n),
            BodyLength::Chunked => Discard::Chunked(Chunked::Size, 0),
        }
    }

    /// Whether the body has been skipped entirely.
    pub fn is_done(&self) -> bool {
        *self == Discard::Done
    }

    /// Skips as much of the body as `buf` holds and returns how many bytes were used.
    /// Returns fewer than `buf.len()` only when the body is done or more bytes are needed.
    pub fn advance(
        &mut self,
        buf: &[u8],
        max_body: u64,
        max_trailers: usize,
    ) -> Result<usize, HttpError> {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            match *self {
                Discard::Done => return Ok(used),
                Discard::Length(left) => {
                    let take = left.min(rest.len() as u64);
                    used += take as usize;
                    *self = if take == left {
                        Discard::Done
                    } else {
                        Discard::Length(left - take)
                    };
                    return Ok(used);
                }
                Discard::Chunked(chunk, seen) => {
                    let (n, next) = step_chunked(chunk, seen, rest, max_body, max_trailers)?;
                    used += n;
                    match next {
                        Some(next) => *self = next,
                        None => return Ok(used), // need more bytes
                    }
                }
            }
        }
    }
}

/// One step of the chunked walk: bytes used and the next state, or `None` for "need more".
fn step_chunked(
    chunk: Chunked,
    seen: u64,
    rest: &[u8],
    max_body: u64,
    max_trailers: usize,
) -> Result<(usize, Option<Discard>), HttpError> {
    Ok(match chunk {
        Chunked::Size => match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete((n, 0))) => {
                (n, Some(Discard::Chunked(Chunked::Trailers(0), seen)))
            }
            Ok(httparse::Status::Complete((n, size))) => {
                let seen = seen.saturating_add(size);
                if seen > max_body {
                    return Err(HttpError::BodyTooLarge);
                }
                (n, Some(Discard::Chunked(Chunked::Data(size), seen)))
            }
            Ok(httparse::Status::Partial) if rest.len() > MAX_CHUNK_SIZE_LINE => {
                return Err(HttpError::BadFraming);
            }
            Ok(httparse::Status::Partial) => (0, None),
            Err(_) => return Err(HttpError::BadFraming),
        },
        Chunked::Data(left) => {
            if rest.is_empty() {
                return Ok((0, None));
            }
            let take = left.min(rest.len() as u64);
            let next = if take == left {
                Chunked::DataEnd
            } else {
                Chunked::Data(left - take)
            };
            (take as usize, Some(Discard::Chunked(next, seen)))
        }
        Chunked::DataEnd => match rest {
            [b'\r', b'\n', ..] => (2, Some(Discard::Chunked(Chunked::Size, seen))),
            [] | [b'\r'] => (0, None),
            _ => return Err(HttpError::BadFraming),
        },
        Chunked::Trailers(total) => match rest.iter().position(|&b| b == b'\n') {
            // An empty line (CRLF) ends the trailer section and the message.
            Some(1) if rest[0] == b'\r' => (2, Some(Discard::Done)),
            Some(0) => return Err(HttpError::BadFraming),
            Some(i) if total + i < max_trailers => (
                i + 1,
                Some(Discard::Chunked(Chunked::Trailers(total + i + 1), seen)),
            ),
            Some(_) => return Err(HttpError::HeadersTooLarge),
            None if total + rest.len() > max_trailers => return Err(HttpError::HeadersTooLarge),
            None => (0, None),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` whole, then one byte at a time; both must use exactly `want` bytes.
    fn skip(body: &[u8], framing: BodyLength) -> Result<usize, HttpError> {
        let mut whole = Discard::new(framing);
        let used = whole.advance(body, 1000, 100)?;
        let mut bytewise = Discard::new(framing);
        let mut used_bytewise = 0;
        let mut pending: Vec<u8> = Vec::new();
        for &b in body {
            if bytewise.is_done() {
                break;
            }
            pending.push(b);
            let n = bytewise.advance(&pending, 1000, 100)?;
            pending.drain(..n);
            used_bytewise += n;
        }
        assert_eq!(used, used_bytewise, "whole vs bytewise for {body:?}");
        assert!(whole.is_done(), "{body:?} left {whole:?}");
        Ok(used)
    }

    #[test]
    fn body_table() {
        let chunked = BodyLength::Chunked;
        let cases: &[(&[u8], BodyLength, Result<usize, HttpError>)] = &[
            (b"hello GET", BodyLength::Length(5), Ok(5)),
            (b"0\r\n\r\nGET", chunked, Ok(5)),
            (b"5\r\nhello\r\n0\r\n\r\nGET", chunked, Ok(15)),
            (
                b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: y\r\n\r\nGET",
                chunked,
                Ok(35),
            ),
            (b"A\r\n0123456789\r\n0\r\n\r\n", chunked, Ok(20)),
            (
                b"5\r\nhelloXX0\r\n\r\n",
                chunked,
                Err(HttpError::BadFraming),
            ),
            (b"zz\r\n", chunked, Err(HttpError::BadFraming)),
            (
                b"FFFFFFFFFFFFFFFFFFFF\r\n",
                chunked,
                Err(HttpError::BadFraming),
            ),
            (b"3E9\r\n", chunked, Err(HttpError::BodyTooLarge)),
        ];
        for (body, framing, want) in cases {
            assert_eq!(
                &skip(body, *framing),
                want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn waits_for_more() {
        let mut d = Discard::new(BodyLength::Chunked);
        assert_eq!(d.advance(b"5\r\nhel", 1000, 100), Ok(6));
        assert!(!d.is_done());
        assert_eq!(d.advance(b"lo\r\n0\r\n", 1000, 100), Ok(7));
        assert_eq!(d.advance(b"\r", 1000, 100), Ok(0));
        assert_eq!(d.advance(b"\r\n", 1000, 100), Ok(2));
        assert!(d.is_done());
    }
}
