//! Response heads, written straight into a connection's output buffer.
//!
//! A response is built in three calls: [`begin`] writes the status line and the headers every
//! response carries (`Server`, `Date`), [`header`] adds one more, and [`end`] writes
//! `Content-Length`, `Connection` when it is needed, and the empty line. They write into the
//! owned bytes of the connection's output queue (`OutBuf`); bodies are
//! queued by the caller, copied or shared. Pipelined responses go one after another into
//! the same queue, so they leave in as few writev(2) calls as possible.
//!
//! These headers are the server's alone: a handler cannot set them.
//!
//! The `Date` header (RFC 9110 section 6.6.1) changes once a second, so [`DateCache`] formats
//! it once a second rather than once per response.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::http::request::Version;

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const DATE_LEN: usize = 29;

/// The current `Date` value, formatted at most once per second.
#[derive(Debug, Clone)]
pub struct DateCache {
    second: u64,
    value: [u8; DATE_LEN],
}

impl DateCache {
    /// A cache holding the current time.
    pub fn new() -> Self {
        let mut cache = DateCache {
            second: u64::MAX,
            value: [b' '; DATE_LEN],
        };
        cache.update(SystemTime::now());
        cache
    }

    /// Re-formats the date if `now` is in a later second than the cached one. The loop calls
    /// this once per iteration.
    pub fn update(&mut self, now: SystemTime) {
        let second = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if second != self.second {
            self.second = second;
            let formatted = httpdate::fmt_http_date(now);
            let bytes = formatted.as_bytes();
            if bytes.len() == DATE_LEN {
                self.value.copy_from_slice(bytes);
            }
        }
    }

    /// The formatted date.
    pub fn as_str(&self) -> &str {
        // Only ASCII from httpdate (or the initial spaces) is ever stored.
        std::str::from_utf8(&self.value).unwrap_or("")
    }
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache::new()
    }
}

/// Writes the status line and the `Server` and `Date` headers.
pub fn begin(out: &mut Vec<u8>, code: u16, reason: &str, date: &DateCache) {
    // Plain byte copies: this runs once per response, and `write!` formatting costs
    // several times more than the copies themselves.
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(
        concat!(
            "\r\nServer: ",
            env!("CARGO_PKG_NAME"),
            "/",
            env!("CARGO_PKG_VERSION"),
            "\r\nDate: "
        )
        .as_bytes(),
    );
    out.extend_from_slice(&date.value);
    out.extend_from_slice(b"\r\n");
}

/// Writes one header line.
pub fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes `Content-Length`, the `Connection` header if the default for `version` does not
/// already say what will happen (RFC 9112 section 9.3), and the empty line that ends the head.
///
/// `content_length` is the length of the body a GET would get, also for HEAD and 304
/// (RFC 9110 section 8.6).
pub fn end(out: &mut Vec<u8>, content_length: Option<u64>, version: Version, keep_alive: bool) {
    if let Some(len) = content_length {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match (version, keep_alive) {
        (_, false) => out.extend_from_slice(b"Connection: close\r\n"),
        (Version::Http10, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        (Version::Http11, true) => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for a status code (RFC 9110 section 15), for codes handlers may use.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The short HTML body of an error response.
pub fn error_page(code: u16, reason: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_imf_fixdate_and_cached_per_second() {
        let mut date = DateCache::new();
        let t = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        date.update(t);
        assert_eq!(date.as_str(), "Sun, 06 Nov 1994 08:49:37 GMT");
        date.update(t + std::time::Duration::from_millis(900));
        assert_eq!(date.as_str(), "Sun, 06 Nov 1994 08:49:37 GMT");
        date.update(t + std::time::Duration::from_secs(1));
        assert_eq!(date.as_str(), "Sun, 06 Nov 1994 08:49:38 GMT");
    }

    #[test]
    fn connection_header_only_where_needed() {
        let date = DateCache::new();
        let cases = [
            (Version::Http11, true, None),
            (Version::Http11, false, Some("Connection: close\r\n")),
            (Version::Http10, true, Some("Connection: keep-alive\r\n")),
            (Version::Http10, false, Some("Connection: close\r\n")),
        ];
        for (version, keep_alive, want) in cases {
            let mut out = Vec::new();
            begin(&mut out, 200, "OK", &date);
            end(&mut out, Some(3), version, keep_alive);
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 200 OK\r\nServer: readyserve/"));
            assert!(text.ends_with("\r\n\r\n"));
            assert!(text.contains("Content-Length: 3\r\n"));
            match want {
                Some(line) => assert!(text.contains(line), "{text}"),
                None => assert!(!text.contains("Connection:"), "{text}"),
            }
        }
    }
}
