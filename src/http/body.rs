//! Request bodies, read and thrown away, or collected for a handler.
//!
//! A static server has no use for a body, but it must still read it: the next pipelined
//! request starts right after the body, and a server that guesses wrong about where that is
//! can be made to see a request the proxy in front never saw (request smuggling). So the body
//! is skipped by exactly its framed length (RFC 9112 section 6): a Content-Length counts
//! bytes; a chunked body is walked chunk by chunk (section 7.1).
//!
//! The chunked walk is strict on purpose. Every line must end in CRLF; a bare LF or a bare
//! CR is an error, not a line ending. A size line is `1*HEXDIG` (with an overflow check),
//! optionally followed by extensions written exactly as the grammar says (`;name`,
//! `;name=token`, `;name="quoted"`). Trailer lines must be header fields (`name: value`),
//! under the same byte and count limits as a head. Anything else is [`HttpError::BadFraming`]
//! (400) and the connection closes. Leniency here is what smuggling needs: if a proxy in
//! front ends a line where we do not, or takes for a trailer what we take for a request, the
//! two of us disagree on where the next request starts. nginx, for example, ends a size line
//! at a bare LF; a parser that reads on past it sees different bytes than nginx did.
//!
//! A handler that takes a body ([`crate::handler::Handler::accepts_body`]) gets the same
//! walk with the data copied out ([`Discard::advance_into`]): the framing is checked just as
//! strictly whether the bytes are kept or not.

use crate::http::error::HttpError;
use crate::http::request::{BodyLength, MAX_HEADERS};

/// Longest chunk-size line (size and extensions, without CRLF) we wait for.
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
    /// After the last chunk: reading trailer fields until an empty line.
    Trailers {
        /// Bytes of trailer lines so far (limited like a head, by `--max-header-bytes`).
        bytes: usize,
        /// Trailer fields so far (limited like a head's header count).
        fields: usize,
    },
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
        self.walk(buf, max_body, max_trailers, None)
    }

    /// Like [`Discard::advance`], but the body's data (without the chunked framing) is
    /// appended to `data`, for a handler that takes the body. `max_body` is the handler's
    /// limit; a Content-Length over it must be refused before, from the head.
    pub fn advance_into(
        &mut self,
        buf: &[u8],
        max_body: u64,
        max_trailers: usize,
        data: &mut Vec<u8>,
    ) -> Result<usize, HttpError> {
        self.walk(buf, max_body, max_trailers, Some(data))
    }

    /// The walk behind both: bytes used, with the data bytes copied to `data` if given.
    fn walk(
        &mut self,
        buf: &[u8],
        max_body: u64,
        max_trailers: usize,
        mut data: Option<&mut Vec<u8>>,
    ) -> Result<usize, HttpError> {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            match *self {
                Discard::Done => return Ok(used),
                Discard::Length(left) => {
                    let take = left.min(rest.len() as u64);
                    if let Some(data) = data.as_deref_mut() {
                        data.extend_from_slice(&rest[..take as usize]);
                    }
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
                    if let (Chunked::Data(_), Some(data)) = (chunk, data.as_deref_mut()) {
                        // In chunk data, every byte used is a byte of the body.
                        data.extend_from_slice(&rest[..n]);
                    }
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
        // chunk-size [ chunk-ext ] CRLF, or the last chunk: 1*"0" [ chunk-ext ] CRLF.
        Chunked::Size => {
            let Some(line) = crlf_line(rest, MAX_CHUNK_SIZE_LINE, HttpError::BadFraming)? else {
                return Ok((0, None));
            };
            let size = chunk_size_line(line)?;
            let used = line.len() + 2;
            if size == 0 {
                let trailers = Chunked::Trailers {
                    bytes: 0,
                    fields: 0,
                };
                return Ok((used, Some(Discard::Chunked(trailers, seen))));
            }
            let seen = seen.saturating_add(size);
            if seen > max_body {
                return Err(HttpError::BodyTooLarge);
            }
            (used, Some(Discard::Chunked(Chunked::Data(size), seen)))
        }
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
        // trailer-section = *( field-line CRLF ), then the CRLF that ends the message.
        Chunked::Trailers { bytes, fields } => {
            let room = max_trailers.saturating_sub(bytes);
            let Some(line) = crlf_line(rest, room, HttpError::HeadersTooLarge)? else {
                return Ok((0, None));
            };
            if line.is_empty() {
                return Ok((2, Some(Discard::Done)));
            }
            field_line(line)?;
            if fields + 1 > MAX_HEADERS {
                return Err(HttpError::HeadersTooLarge);
            }
            let next = Chunked::Trailers {
                bytes: bytes + line.len() + 2,
                fields: fields + 1,
            };
            (line.len() + 2, Some(Discard::Chunked(next, seen)))
        }
    })
}

/// The line at the start of `rest`, without its CRLF: `Ok(None)` if it has not all arrived
/// yet, `too_long` if it is longer than `max` bytes. The first LF ends the line, and it must
/// have a CR before it; a CR anywhere else is an error too (RFC 9112 section 2.2 lets a
/// recipient accept a bare LF; we do not, because the proxy in front may not).
fn crlf_line(rest: &[u8], max: usize, too_long: HttpError) -> Result<Option<&[u8]>, HttpError> {
    let window = &rest[..rest.len().min(max.saturating_add(2))];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if rest.len() > max.saturating_add(1) {
            Err(too_long)
        } else {
            Ok(None)
        };
    };
    let line = match lf.checked_sub(1).map(|cr| (cr, rest[cr])) {
        Some((cr, b'\r')) => &rest[..cr],
        _ => return Err(HttpError::BadFraming), // a bare LF
    };
    if line.contains(&b'\r') {
        return Err(HttpError::BadFraming); // a bare CR
    }
    if line.len() > max {
        return Err(too_long);
    }
    Ok(Some(line))
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 section 7.1): the size, if the whole line is valid.
fn chunk_size_line(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::BadFraming); // a size line must start with a size
    }
    let mut size: u64 = 0;
    for &d in &line[..digits] {
        let value = u64::from(match d {
            b'0'..=b'9' => d - b'0',
            _ => (d | 0x20) - b'a' + 10,
        });
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(value))
            .ok_or(HttpError::BadFraming)?;
    }
    chunk_extensions(&line[digits..])?;
    Ok(size)
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`, where a
/// name is a token and a value a token or a quoted-string. Extensions mean nothing to us;
/// they are checked so that the line means the same to us as to any strict parser.
fn chunk_extensions(mut s: &[u8]) -> Result<(), HttpError> {
    while !s.is_empty() {
        s = skip_whitespace(s)
            .strip_prefix(b";")
            .ok_or(HttpError::BadFraming)?;
        s = skip_whitespace(s);
        s = skip_token(s)?;
        let after_name = skip_whitespace(s);
        if let Some(value) = after_name.strip_prefix(b"=") {
            let value = skip_whitespace(value);
            s = match value.first() {
                Some(b'"') => skip_quoted_string(&value[1..])?,
                _ => skip_token(value)?,
            };
        }
    }
    Ok(())
}

/// `field-line = field-name ":" OWS field-value OWS` (RFC 9112 section 5), for a trailer.
fn field_line(line: &[u8]) -> Result<(), HttpError> {
    let value = skip_token(line)?
        .strip_prefix(b":")
        .ok_or(HttpError::BadFraming)?;
    // Visible characters, spaces, tabs and obs-text; CR and LF are already ruled out.
    if value.iter().all(|&b| b == b'\t' || b >= b' ') && !value.contains(&0x7f) {
        Ok(())
    } else {
        Err(HttpError::BadFraming)
    }
}

/// BWS: optional spaces and tabs.
fn skip_whitespace(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// Skips a token (RFC 9110 section 5.6.2): at least one tchar.
fn skip_token(s: &[u8]) -> Result<&[u8], HttpError> {
    let n = s.iter().take_while(|&&b| is_tchar(b)).count();
    if n == 0 {
        return Err(HttpError::BadFraming);
    }
    Ok(&s[n..])
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Skips the rest of a quoted-string (RFC 9110 section 5.6.4) whose opening quote is gone.
fn skip_quoted_string(s: &[u8]) -> Result<&[u8], HttpError> {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return Ok(&s[i + 1..]),
            // quoted-pair: a backslash and one HTAB, SP, VCHAR or obs-text.
            b'\\' => match s.get(i + 1) {
                Some(&q) if q == b'\t' || (q >= b' ' && q != 0x7f) => i += 2,
                _ => return Err(HttpError::BadFraming),
            },
            // qdtext: HTAB, SP, VCHAR except the quote and backslash, and obs-text.
            b'\t' | b' '..=0x7e | 0x80..=0xff => i += 1,
            _ => return Err(HttpError::BadFraming),
        }
    }
    Err(HttpError::BadFraming) // no closing quote on the line
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
            (b"a\r\n0123456789\r\n000\r\n\r\n", chunked, Ok(22)),
            (b"00000000000000000001\r\nx\r\n0\r\n\r\n", chunked, Ok(30)),
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

    /// RFC 9112 section 7.1, strictly: what a lenient parser would accept and a proxy in
    /// front might read differently. Each body is followed by a request that must never be
    /// reached by a malformed one.
    #[test]
    fn strict_chunk_table() {
        use HttpError::*;
        let cases: &[(&[u8], Result<(), HttpError>)] = &[
            // Extensions as the grammar writes them.
            (b"5;a\r\nhello\r\n0\r\n\r\n", Ok(())),
            (b"5;a=b;c=\"d e\"\r\nhello\r\n0\r\n\r\n", Ok(())),
            (b"5 ; a = b\r\nhello\r\n0\r\n\r\n", Ok(())),
            (b"5;a=\"q\\\"x\"\r\nhello\r\n0\r\n\r\n", Ok(())),
            (b"0;last\r\n\r\n", Ok(())),
            // Trailer fields.
            (b"0\r\nA: 1\r\nB:\r\n\r\n", Ok(())),
            // Bare LF, anywhere a CRLF belongs.
            (b"5\nhello\r\n0\r\n\r\n", Err(BadFraming)),
            (b"5;a\nGET / HTTP/1.1\r\n", Err(BadFraming)),
            (b"5\r\nhello\n0\r\n\r\n", Err(BadFraming)),
            (b"0\n\r\n", Err(BadFraming)),
            (b"0\r\n\n", Err(BadFraming)),
            (b"0\r\nX: y\nGET / HTTP/1.1\r\n\r\n", Err(BadFraming)),
            // Bare CR.
            (b"5\rhello\r\n", Err(BadFraming)),
            (b"0\r\nX: a\rb\r\n\r\n", Err(BadFraming)),
            // A size line with no digits is not a last chunk.
            (b"\r\n\r\n", Err(BadFraming)),
            (b";ext\r\n\r\n", Err(BadFraming)),
            (b" 5\r\nhello\r\n0\r\n\r\n", Err(BadFraming)),
            (b"-5\r\n", Err(BadFraming)),
            (b"+5\r\n", Err(BadFraming)),
            (b"0x5\r\nhello\r\n", Err(BadFraming)),
            // Extensions that are not `;token[=token|quoted-string]`.
            (b"5 \r\nhello\r\n0\r\n\r\n", Err(BadFraming)),
            (b"5;\r\nhello\r\n", Err(BadFraming)),
            (b"5;a=\r\nhello\r\n", Err(BadFraming)),
            (b"5;a b\r\nhello\r\n", Err(BadFraming)),
            (b"5;a=\"open\r\nhello\r\n", Err(BadFraming)),
            (b"5;a=b c\r\nhello\r\n", Err(BadFraming)),
            (b"5;\x01\r\nhello\r\n", Err(BadFraming)),
            // Overflow, with and without leading zeros.
            (b"10000000000000000\r\n", Err(BadFraming)),
            // Trailers that are not fields.
            (b"0\r\nGET / HTTP/1.1\r\n\r\n", Err(BadFraming)),
            (b"0\r\n: novalue\r\n\r\n", Err(BadFraming)),
            (b"0\r\nX : y\r\n\r\n", Err(BadFraming)),
            (b"0\r\nX: y\r\n folded\r\n\r\n", Err(BadFraming)),
            (b"0\r\nX: \x00\r\n\r\n", Err(BadFraming)),
        ];
        for (body, want) in cases {
            let mut with_next = body.to_vec();
            with_next.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            // A valid body is used up to its last byte, and not one byte further.
            let want = want.map(|()| body.len());
            assert_eq!(
                skip(&with_next, BodyLength::Chunked),
                want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// Trailers are held to the head's limits: bytes (`--max-header-bytes`) and count.
    #[test]
    fn trailer_limits() {
        let mut too_many = b"0\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            too_many.extend_from_slice(b"X: y\r\n");
        }
        too_many.extend_from_slice(b"\r\n");
        let mut d = Discard::new(BodyLength::Chunked);
        assert_eq!(
            d.advance(&too_many, 1000, 16 * 1024),
            Err(HttpError::HeadersTooLarge)
        );
        let long = format!("0\r\nX: {}\r\n\r\n", "v".repeat(200));
        let mut d = Discard::new(BodyLength::Chunked);
        assert_eq!(
            d.advance(long.as_bytes(), 1000, 100),
            Err(HttpError::HeadersTooLarge)
        );
        // Still arriving, and already over the limit: no need to wait for its end.
        let mut d = Discard::new(BodyLength::Chunked);
        assert_eq!(
            d.advance(&long.as_bytes()[..150], 1000, 100),
            Err(HttpError::HeadersTooLarge)
        );
        // A size line that never ends.
        let mut d = Discard::new(BodyLength::Chunked);
        let endless = [b'0'; 2000];
        assert_eq!(d.advance(&endless, 1000, 100), Err(HttpError::BadFraming));
    }

    /// Collected bytes are the data alone, whole or a byte at a time, and the limit holds.
    #[test]
    fn collects_the_data() {
        let cases: &[(&[u8], BodyLength, &[u8])] = &[
            (b"helloGET", BodyLength::Length(5), b"hello"),
            (
                b"5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\nGET",
                BodyLength::Chunked,
                b"hello!",
            ),
        ];
        for &(body, framing, want) in cases {
            let mut whole = Vec::new();
            let mut d = Discard::new(framing);
            d.advance_into(body, 1000, 100, &mut whole).expect("valid");
            assert!(d.is_done());
            assert_eq!(whole, want);
            let mut bytewise = Vec::new();
            let mut d = Discard::new(framing);
            let mut pending = Vec::new();
            for &b in body {
                pending.push(b);
                let n = d
                    .advance_into(&pending, 1000, 100, &mut bytewise)
                    .expect("valid");
                pending.drain(..n);
            }
            assert_eq!(bytewise, want);
        }
        let mut d = Discard::new(BodyLength::Chunked);
        let over = d.advance_into(b"3\r\nabc\r\n", 2, 100, &mut Vec::new());
        assert_eq!(over, Err(HttpError::BodyTooLarge));
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
