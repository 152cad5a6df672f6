//! Request heads: from bytes on the wire to a [`Request`], with `httparse` doing the syntax.
//!
//! [`parse`] looks at the bytes a connection has buffered and answers one of three things:
//! not enough yet ([`Parsed::Partial`]: read more and try again), a complete head and how many
//! bytes it took ([`Parsed::Complete`]: bytes after that belong to the body or to the next
//! pipelined request), or an [`HttpError`]. Incomplete input is not an error. That split is
//! what lets the same code work whether a request arrives in one packet or one byte at a time.
//!
//! A [`Request`] borrows from the connection's read buffer: parsing copies nothing and
//! allocates nothing.

use std::mem::MaybeUninit;

use crate::http::error::HttpError;

/// Most header lines in one request; more is answered with 431.
pub const MAX_HEADERS: usize = 100;

/// Longest request line. A longer one is answered with 414 (RFC 9112 section 3 recommends
/// supporting at least 8000 octets).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The request methods this server tells apart (RFC 9110 section 9). Methods are
/// case-sensitive, so `get` is not `GET` (it is [`Method::Other`]).
///
/// Every method reaches a handler; the static files answer GET, HEAD and OPTIONS, the
/// other methods of RFC 9110 with 405, and any other token with 501.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Fetch a file.
    Get,
    /// Like GET, without the body.
    Head,
    /// Ask which methods are allowed.
    Options,
    /// Send data to be processed.
    Post,
    /// Replace the target's state with the body.
    Put,
    /// Remove the target.
    Delete,
    /// Change part of the target's state (RFC 5789).
    Patch,
    /// Open a tunnel.
    Connect,
    /// Echo the request back.
    Trace,
    /// Any other token: [`Request::method_name`] has its name.
    Other,
}

impl Method {
    /// The method's name as it appears on the wire; `"OTHER"` for [`Method::Other`].
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other => "OTHER",
        }
    }

    /// The method for a request-line token.
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    /// Whether the static files answer it (GET, HEAD, OPTIONS).
    pub fn is_for_files(self) -> bool {
        matches!(self, Method::Get | Method::Head | Method::Options)
    }
}

/// HTTP/1.0 or HTTP/1.1; the only versions httparse accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: closes after each response unless `Connection: keep-alive` is sent.
    Http10,
    /// HTTP/1.1: persistent unless `Connection: close` is sent.
    Http11,
}

/// How the request's body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body: no Content-Length and no Transfer-Encoding.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: ...chunked`: chunks follow, ended by a zero-size chunk.
    Chunked,
}

/// A parsed request head. Every slice borrows from the connection's read buffer.
#[derive(Debug, Clone)]
pub struct Request<'b> {
    /// The method ([`Request::method_name`] spells it as sent).
    pub method: Method,
    /// The request target exactly as sent, e.g. `/docs/a%20b.html?x=1`.
    pub target: &'b str,
    /// The protocol version.
    pub version: Version,
    /// Whether the client allows the connection to stay open after this response.
    pub keep_alive: bool,
    /// How the body, if any, is framed.
    pub body: BodyLength,
    /// `Expect: 100-continue` was sent with a body, and the body is still on the wire (the
    /// connection clears it once it has read a body for a handler after `100 Continue`).
    pub expects_continue: bool,
    /// The whole head, request line to empty line, for looking up any other header.
    pub raw_head: &'b [u8],
    /// The `Referer` header, for the access log.
    pub referer: Option<&'b [u8]>,
    /// The `User-Agent` header, for the access log.
    pub user_agent: Option<&'b [u8]>,
    /// The `If-Match` header.
    pub if_match: Option<&'b [u8]>,
    /// The `If-Unmodified-Since` header.
    pub if_unmodified_since: Option<&'b [u8]>,
    /// The `If-None-Match` header.
    pub if_none_match: Option<&'b [u8]>,
    /// The `If-Modified-Since` header.
    pub if_modified_since: Option<&'b [u8]>,
    /// The `Range` header.
    pub range: Option<&'b [u8]>,
    /// The `If-Range` header.
    pub if_range: Option<&'b [u8]>,
    /// The `Accept-Encoding` header.
    pub accept_encoding: Option<&'b [u8]>,
}

impl<'b> Request<'b> {
    /// The conditional headers, for [`crate::http::conditional::evaluate`].
    pub fn preconditions(&self) -> crate::http::conditional::Preconditions<'b> {
        crate::http::conditional::Preconditions {
            if_match: self.if_match,
            if_unmodified_since: self.if_unmodified_since,
            if_none_match: self.if_none_match,
            if_modified_since: self.if_modified_since,
        }
    }

    /// The target's path, as sent, without query or fragment: what names the file (and
    /// the cache entry).
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or(self.target)
    }

    /// The query, without its `?`, if the target has one: `a=1` for `/d?a=1`.
    pub fn query(&self) -> Option<&str> {
        let (_, rest) = self.target.split_once('?')?;
        Some(rest.split('#').next().unwrap_or(rest))
    }

    /// The request line without its CRLF, e.g. `GET /index.html HTTP/1.1`, for the log.
    pub fn request_line(&self) -> &[u8] {
        // Empty lines before the request line are allowed (RFC 9112 section 2.2), and
        // httparse skips them; so do we.
        let start = self
            .raw_head
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(self.raw_head.len());
        let line = &self.raw_head[start..];
        let end = line
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(line.len());
        &line[..end]
    }

    /// The method as sent, e.g. `PUT` or `PROPFIND`.
    pub fn method_name(&self) -> &str {
        let line = self.request_line();
        let name = line.split(|&b| b == b' ').next().unwrap_or_default();
        // httparse accepted it as a token: ASCII, so always UTF-8.
        std::str::from_utf8(name).unwrap_or("")
    }

    /// The values of every header called `name` (case-insensitive), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&[u8]> {
        let mut slots = header_slots();
        let Ok((req, _)) = parse_head(self.raw_head, &mut slots) else {
            return Vec::new();
        };
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    }

    /// The value of the first header called `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let mut slots = header_slots();
        // The head parsed once already, so it parses again; on the impossible failure the
        // answer is simply "no such header".
        let (req, _) = parse_head(self.raw_head, &mut slots).ok()?;
        first_named(req.headers, name)
    }
}

/// The value of the first of `headers` called `name` (case-insensitive), if any.
fn first_named<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// `Referer` and `User-Agent` of a head that parses but was refused (a 413, a duplicate
/// header), for its access-log line; `None` where the head does not parse.
pub fn referer_and_user_agent(head: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let mut slots = header_slots();
    let Ok((req, httparse::Status::Complete(_))) = parse_head(head, &mut slots) else {
        return (None, None);
    };
    (
        first_named(req.headers, "referer"),
        first_named(req.headers, "user-agent"),
    )
}

/// Room for the header lines of one head, left uninitialised: httparse writes only the
/// slots it fills. `[httparse::EMPTY_HEADER; MAX_HEADERS]` would write all 100 (3.2 KB) on
/// every request, and did: 12% of the time `benches/parse_respond.rs` measured per request.
fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// httparse over `buf`, with `slots` for its header lines.
fn parse_head<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<(httparse::Request<'h, 'b>, httparse::Status<usize>), httparse::Error> {
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, slots)?;
    Ok((req, status))
}

/// What [`parse`] found in the buffer.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "it lives on the stack for one call; boxing the request would allocate for every one"
)]
pub enum Parsed<'b> {
    /// The head is not complete yet: read more bytes and call [`parse`] again.
    Partial,
    /// A complete head, and the number of bytes it used. Bytes after that are the body, then
    /// the next pipelined request.
    Complete(Request<'b>, usize),
}

/// Parses the request head at the start of `buf`, enforcing the head limits.
///
/// `max_head` is `--max-header-bytes`: the most bytes the request line and all headers may
/// take together. `max_body` is `--max-body-bytes`.
pub fn parse(buf: &[u8], max_head: usize, max_body: u64) -> Result<Parsed<'_>, HttpError> {
    let mut slots = header_slots();
    let (req, n) = match parse_head(buf, &mut slots) {
        Ok((req, httparse::Status::Complete(n))) => (req, n),
        Ok((_, httparse::Status::Partial)) => {
            // Not an error: the rest has not arrived. But a client may not keep us buffering
            // forever, so check the limits on what we hold so far.
            check_partial_limits(buf, max_head)?;
            return Ok(Parsed::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(httparse::Error::Version) if looks_like_http_version(buf) => {
            return Err(HttpError::VersionNotSupported);
        }
        Err(_) => {
            // A syntax error found after the limit is still, first of all, a request too large.
            check_partial_limits(buf, max_head)?;
            return Err(HttpError::BadSyntax);
        }
    };
    let head = &buf[..n];
    // The line is part of the head: only a head that long needs the line measured.
    if n > MAX_REQUEST_LINE && request_line_len(head) > MAX_REQUEST_LINE {
        return Err(HttpError::UriTooLong);
    }
    if n > max_head {
        return Err(HttpError::HeadersTooLarge);
    }

    // httparse has checked the syntax; everything it returns is present.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::BadSyntax);
    };
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };

    let mut host_count = 0;
    let mut content_length: Option<u64> = None;
    let mut content_length_count = 0;
    let mut transfer_encoding: Option<TransferCoding> = None;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expects_continue = false;
    let mut referer = None;
    let mut user_agent = None;
    let mut if_match = None;
    let mut if_unmodified_since = None;
    let mut if_none_match = None;
    let mut if_modified_since = None;
    let mut range = None;
    let mut if_range = None;
    let mut accept_encoding = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            host_count += 1;
            if !is_valid_host(h.value) {
                return Err(HttpError::BadHost);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_length_count += 1;
            content_length = Some(parse_content_length(h.value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Several Transfer-Encoding lines form one list (RFC 9110 section 5.3).
            transfer_encoding = Some(transfer_codings(h.value, transfer_encoding)?);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(HttpError::ExpectationFailed);
            }
            expects_continue = true;
        } else if name.eq_ignore_ascii_case(b"referer") {
            referer = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            user_agent = Some(h.value);
        } else if name.eq_ignore_ascii_case(b"if-match") {
            once(&mut if_match, h.value)?;
        } else if name.eq_ignore_ascii_case(b"if-unmodified-since") {
            once(&mut if_unmodified_since, h.value)?;
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            once(&mut if_none_match, h.value)?;
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            once(&mut if_modified_since, h.value)?;
        } else if name.eq_ignore_ascii_case(b"range") {
            once(&mut range, h.value)?;
        } else if name.eq_ignore_ascii_case(b"if-range") {
            once(&mut if_range, h.value)?;
        } else if name.eq_ignore_ascii_case(b"accept-encoding") {
            accept_encoding = Some(h.value);
        }
    }

    // RFC 9112 section 6.3, the body-length rules that concern a server, in order:
    //  1. Transfer-Encoding and Content-Length together may be an attempt to smuggle a second
    //     request past a proxy: reject, and close.
    //  2. Transfer-Encoding whose final coding is chunked: the body is chunked. Any other
    //     final coding leaves the length unknown: reject. An HTTP/1.0 message with
    //     Transfer-Encoding is faulty framing. Stricter than the RFC, as nginx is: `chunked`
    //     must be the only coding (see `transfer_codings`).
    //  3. Content-Length: exactly that many bytes. Several Content-Length lines are rejected
    //     even when they agree; a list of values is rejected by `parse_content_length`.
    //  4. Neither: no body.
    let body = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => return Err(HttpError::BadFraming),
        (Some(_), None) if version == Version::Http10 => return Err(HttpError::BadFraming),
        (Some(TransferCoding::Chunked), None) => BodyLength::Chunked,
        (Some(TransferCoding::Other), None) => return Err(HttpError::UnsupportedTransferCoding),
        (Some(TransferCoding::Empty), None) => return Err(HttpError::BadFraming),
        (None, Some(_)) if content_length_count > 1 => return Err(HttpError::BadFraming),
        (None, Some(0)) => BodyLength::None,
        (None, Some(len)) => BodyLength::Length(len),
        (None, None) => BodyLength::None,
    };
    if let BodyLength::Length(len) = body
        && len > max_body
    {
        return Err(HttpError::BodyTooLarge);
    }

    // Every method is parsed: a handler may take it. Whether the files allow it is for
    // `answer` to say, once the handler has declined.
    let method = Method::from_token(method);

    // RFC 9112 section 3.2: an HTTP/1.1 request without exactly one Host is a 400.
    if (version == Version::Http11 && host_count != 1) || host_count > 1 {
        return Err(HttpError::BadHost);
    }

    // RFC 9112 section 9.3: 1.1 persists unless told to close; 1.0 closes unless told not to.
    let keep_alive = match version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep_alive && !conn_close,
    };

    Ok(Parsed::Complete(
        Request {
            method,
            target,
            version,
            keep_alive,
            body,
            expects_continue: expects_continue && body != BodyLength::None,
            raw_head: head,
            referer,
            user_agent,
            if_match,
            if_unmodified_since,
            if_none_match,
            if_modified_since,
            range,
            if_range,
            accept_encoding,
        },
        n,
    ))
}

/// Keeps the value of a header that may appear once. The conditional headers and `Range`
/// decide what is sent; when one appears twice, readers disagree (we kept the last line,
/// nginx the first, or refuses with 400), and a cache in front may have acted on the
/// other line. So a second line is a 400, as in nginx, rather than a guess. (RFC 9110
/// section 5.3 would join two `If-None-Match` lines into one list; no client sends two.)
fn once<'b>(slot: &mut Option<&'b [u8]>, value: &'b [u8]) -> Result<(), HttpError> {
    if slot.replace(value).is_some() {
        return Err(HttpError::DuplicateHeader);
    }
    Ok(())
}

/// What the Transfer-Encoding lines so far say, as far as framing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferCoding {
    /// `chunked`, once, and nothing else.
    Chunked,
    /// A coding other than `chunked` (`gzip, chunked`, say): this server cannot undo it, and
    /// handing its bytes to a handler as the body would be wrong (RFC 9112 section 6.1: 501).
    Other,
    /// No coding yet (an empty value).
    Empty,
}

/// Adds one Transfer-Encoding line to what the lines before it said (`before`). An empty
/// list element, or `chunked` twice (RFC 9112 section 6.1 forbids it), is faulty framing: a
/// proxy in front may read such a list differently, so it is refused rather than guessed.
fn transfer_codings(
    value: &[u8],
    before: Option<TransferCoding>,
) -> Result<TransferCoding, HttpError> {
    let mut codings = before.unwrap_or(TransferCoding::Empty);
    for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        codings = match (codings, coding) {
            (_, b"") => return Err(HttpError::BadFraming),
            (TransferCoding::Chunked, c) if c.eq_ignore_ascii_case(b"chunked") => {
                return Err(HttpError::BadFraming);
            }
            (TransferCoding::Empty, c) if c.eq_ignore_ascii_case(b"chunked") => {
                TransferCoding::Chunked
            }
            _ => TransferCoding::Other,
        };
    }
    Ok(codings)
}

/// Content-Length is 1*DIGIT (RFC 9110 section 8.6). Signs, spaces inside, lists and numbers
/// that overflow are all invalid framing.
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadFraming);
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Length of the request line, up to its line ending (or the whole buffer if none yet).
fn request_line_len(buf: &[u8]) -> usize {
    buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len())
}

/// Whether `value` is a `Host` field value: `uri-host [ ":" port ]` (RFC 9112 section
/// 3.2, RFC 3986 section 3.2.2). An empty host is refused too: an `http` URI may not have
/// one (RFC 9110 section 4.2.1); so is an empty label (`a..b`, `.`). Invalid values are a
/// 400: stricter than nginx, which takes `user@host` or `host?x`, and like it for spaces,
/// slashes and empty labels. The Host is not used to find files, but a handler may use it.
pub(crate) fn is_valid_host(value: &[u8]) -> bool {
    // reg-name and IPv4address: unreserved, pct-encoded, sub-delims.
    let reg_name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    let (host, port) = match value.strip_prefix(b"[") {
        // IP-literal: hex digits, colons, dots (an IPv4 tail), and IPvFuture's letters.
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            if literal.is_empty() || !literal.iter().all(|b| reg_name(b) || *b == b':') {
                return false;
            }
            (&[][..], &rest[end + 1..])
        }
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let port_ok = match port.strip_prefix(b":") {
        Some(digits) => digits.iter().all(u8::is_ascii_digit),
        None => port.is_empty(),
    };
    // An empty label (`a..b`, `..`) names no host, and nginx refuses it too.
    let host_ok = host.iter().all(reg_name)
        && !host.windows(2).any(|w| w == b"..")
        && host != b"."
        && (!host.is_empty() || value.starts_with(b"["));
    host_ok && port_ok
}

fn check_partial_limits(buf: &[u8], max_head: usize) -> Result<(), HttpError> {
    if request_line_len(buf) > MAX_REQUEST_LINE {
        Err(HttpError::UriTooLong)
    } else if buf.len() > max_head {
        Err(HttpError::HeadersTooLarge)
    } else {
        Ok(())
    }
}

/// Whether the request line is well formed, `method SP target SP HTTP/d.d` (RFC 9112
/// section 3), with a version we do not support. Only then is the answer 505; a line that is
/// malformed anywhere (two spaces, a tab, no target, garbage for a version) is a plain 400,
/// because we cannot even tell what version it claims.
fn looks_like_http_version(buf: &[u8]) -> bool {
    // Empty lines before the request line are allowed (RFC 9112 section 2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let buf = &buf[start..];
    let line = &buf[..request_line_len(buf)];
    let Some(line) = line.strip_suffix(b"\r") else {
        return false; // no CRLF yet, or a bare LF: not a well-formed line
    };
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    !method.is_empty()
        && method.iter().all(is_tchar)
        && !target.is_empty()
        && target.iter().all(|&b| b > b' ' && b != 0x7f)
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_HEAD: usize = 16 * 1024;
    const MAX_BODY: u64 = 1024 * 1024;

    /// At most `MAX_HEADERS` header lines, whatever their bytes (the README says 100).
    #[test]
    fn header_lines_are_counted() {
        let head = |lines: usize| {
            let extra: String = (1..lines).map(|i| format!("X-{i}: y\r\n")).collect();
            format!("GET / HTTP/1.1\r\nHost: a\r\n{extra}\r\n")
        };
        assert_eq!(MAX_HEADERS, 100);
        assert!(matches!(
            parse(head(100).as_bytes(), MAX_HEAD, MAX_BODY),
            Ok(Parsed::Complete(..))
        ));
        assert!(matches!(
            parse(head(101).as_bytes(), MAX_HEAD, MAX_BODY),
            Err(HttpError::HeadersTooLarge)
        ));
    }

    fn parse_ok(raw: &str) -> (Request<'_>, usize) {
        match parse(raw.as_bytes(), MAX_HEAD, MAX_BODY) {
            Ok(Parsed::Complete(req, n)) => (req, n),
            other => panic!("{raw:?} did not parse: {other:?}"),
        }
    }

    /// A table of heads and what each must give: `Ok(keep_alive)` or the error.
    #[test]
    fn request_table() {
        use HttpError::*;
        let cases: &[(&str, Result<bool, HttpError>)] = &[
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(true)),
            ("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(true)),
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Ok(true)),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                Ok(false),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
                Ok(false),
            ),
            ("GET / HTTP/1.0\r\n\r\n", Ok(false)),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Ok(true)),
            ("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", Ok(true)),
            // Headers that decide what is sent may appear once (nginx: 400 as well).
            (
                "GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\nIf-None-Match: \"y\"\r\n\r\n",
                Err(DuplicateHeader),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nrange: bytes=2-3\r\n\r\n",
                Err(DuplicateHeader),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nIf-Match: *\r\nIf-Match: *\r\n\r\n",
                Err(DuplicateHeader),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nIf-Modified-Since: x\r\nIf-Modified-Since: x\r\n\r\n",
                Err(DuplicateHeader),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nIf-Unmodified-Since: x\r\nIf-Unmodified-Since: x\r\n\r\n",
                Err(DuplicateHeader),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nIf-Range: x\r\nIf-Range: x\r\n\r\n",
                Err(DuplicateHeader),
            ),
            ("GET / HTTP/1.1\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Err(BadHost)),
            // The value must be a host and an optional port (RFC 9112 section 3.2).
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: []\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.0\r\nHost: a@b\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: \r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: ..\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: .\r\n\r\n", Err(BadHost)),
            ("GET / HTTP/1.1\r\nHost: example.com.\r\n\r\n", Ok(true)),
            ("GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", Ok(true)),
            ("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", Ok(true)),
            ("GET / HTTP/1.1\r\nHost: [v1.x]\r\n\r\n", Ok(true)),
            ("GET / HTTP/1.1\r\nHost: 127.0.0.1:\r\n\r\n", Ok(true)),
            (
                "GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n\r\n",
                Ok(true),
            ),
            ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Err(BadHost)),
            // Every method parses; `answer` decides whether the files allow it.
            ("POST / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(true)),
            ("DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(true)),
            ("get / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(true)),
            ("BREW / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(true)),
            (
                "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                Err(VersionNotSupported),
            ),
            (
                "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
                Err(VersionNotSupported),
            ),
            ("GET / FTP/1.1\r\nHost: a\r\n\r\n", Err(BadSyntax)),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Err(BadSyntax)),
            // A malformed request line is a 400 even when it ends in a version; 505 is
            // only for a well-formed line with a version we do not speak.
            (
                "GET /index.html  HTTP/1.1\r\nHost: a\r\n\r\n",
                Err(BadSyntax),
            ),
            ("GET /  HTTP/2.0\r\nHost: a\r\n\r\n", Err(BadSyntax)),
            ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Err(BadSyntax)),
            ("GET\t/ HTTP/2.0\r\nHost: a\r\n\r\n", Err(BadSyntax)),
            ("GET / x HTTP/2.0\r\nHost: a\r\n\r\n", Err(BadSyntax)),
            (" GET / HTTP/2.0\r\nHost: a\r\n\r\n", Err(BadSyntax)),
            (
                "\r\nGET / HTTP/3.0\r\nHost: a\r\n\r\n",
                Err(VersionNotSupported),
            ),
            ("GET /\r\n\r\n", Err(BadSyntax)),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Err(BadSyntax)),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
                Err(BadSyntax),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n",
                Err(BodyTooLarge),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                Err(UnsupportedTransferCoding),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Err(UnsupportedTransferCoding),
            ),
            (
                "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Err(UnsupportedTransferCoding),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(UnsupportedTransferCoding),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
                Err(BadFraming),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n",
                Err(ExpectationFailed),
            ),
        ];
        for (raw, want) in cases {
            let got = match parse(raw.as_bytes(), MAX_HEAD, MAX_BODY) {
                Ok(Parsed::Complete(req, n)) => {
                    assert_eq!(n, raw.len(), "{raw:?} consumed the wrong count");
                    Ok(req.keep_alive)
                }
                Ok(Parsed::Partial) => panic!("{raw:?} was partial"),
                Err(e) => Err(e),
            };
            assert_eq!(&got, want, "{raw:?}");
        }
    }

    #[test]
    fn body_framing() {
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(req.body, BodyLength::Length(5));
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(req.body, BodyLength::None);
        let (req, _) =
            parse_ok("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n");
        assert_eq!(req.body, BodyLength::Chunked);
        let (req, _) = parse_ok(
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(req.expects_continue);
    }

    #[test]
    fn partial_then_complete_with_leftover() {
        let raw = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n";
        let head_len = raw.len() - b"GET /b HTTP/1.1\r\n".len();
        for cut in 0..head_len {
            assert!(matches!(
                parse(&raw[..cut], MAX_HEAD, MAX_BODY),
                Ok(Parsed::Partial)
            ));
        }
        match parse(raw, MAX_HEAD, MAX_BODY) {
            Ok(Parsed::Complete(req, n)) => {
                assert_eq!(n, head_len);
                assert_eq!(req.target, "/a");
                assert_eq!(req.request_line(), b"GET /a HTTP/1.1");
            }
            other => panic!("{other:?}"),
        }
        // Leading empty lines are skipped, and not part of the request line.
        match parse(
            b"\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n",
            MAX_HEAD,
            MAX_BODY,
        ) {
            Ok(Parsed::Complete(req, _)) => assert_eq!(req.request_line(), b"GET /c HTTP/1.1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits() {
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(
            parse(long_line.as_bytes(), MAX_HEAD, MAX_BODY).err(),
            Some(HttpError::UriTooLong)
        );
        // The same, still arriving: no line ending yet.
        assert_eq!(
            parse(&long_line.as_bytes()[..8500], MAX_HEAD, MAX_BODY).err(),
            Some(HttpError::UriTooLong)
        );
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "b".repeat(17000)
        );
        assert_eq!(
            parse(big_header.as_bytes(), MAX_HEAD, MAX_BODY).err(),
            Some(HttpError::HeadersTooLarge)
        );
        assert_eq!(
            parse(&big_header.as_bytes()[..16500], MAX_HEAD, MAX_BODY).err(),
            Some(HttpError::HeadersTooLarge)
        );
        let many = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X: y\r\n".repeat(100)
        );
        assert_eq!(
            parse(many.as_bytes(), MAX_HEAD, MAX_BODY).err(),
            Some(HttpError::HeadersTooLarge)
        );
    }

    #[test]
    fn header_lookup() {
        let (req, _) =
            parse_ok("GET / HTTP/1.1\r\nHost: a\r\nX-Thing: yes\r\nUser-Agent: t/1\r\n\r\n");
        assert_eq!(req.header("x-thing"), Some(&b"yes"[..]));
        assert_eq!(req.header("missing"), None);
        assert_eq!(req.user_agent, Some(&b"t/1"[..]));
    }
}
