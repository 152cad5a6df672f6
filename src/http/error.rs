//! Everything that can go wrong with a request, as one enum, and the one `match` that turns it
//! into a status code.
//!
//! Errors are values here: the parser and the file mapper return an [`HttpError`], and the
//! connection answers it with [`HttpError::status`]. Nothing on the request path panics.

use std::fmt;

/// Why a request gets an error response instead of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The request line or a header is not valid HTTP/1.1 syntax (RFC 9112 section 2.2).
    BadSyntax,
    /// HTTP/1.1 request without exactly one `Host` header (RFC 9112 section 3.2).
    BadHost,
    /// Conflicting or invalid `Content-Length` / `Transfer-Encoding` (RFC 9112 section 6.3).
    BadFraming,
    /// The target is not a usable path: not origin-form, NUL, encoded slash, above the root.
    BadPath,
    /// A header that may appear once (`Range`, a conditional) appears twice.
    DuplicateHeader,
    /// A request line longer than the limit.
    UriTooLong,
    /// A request head over `--max-header-bytes`, or too many header lines.
    HeadersTooLarge,
    /// A request body over `--max-body-bytes`.
    BodyTooLarge,
    /// The head did not arrive within `--header-timeout`.
    Timeout,
    /// A method this server knows but does not allow on files (POST, PUT, ...).
    MethodNotAllowed,
    /// A method this server does not know (methods are case-sensitive: `get` is unknown).
    NotImplemented,
    /// A `Transfer-Encoding` this server cannot decode: anything but `chunked` alone.
    UnsupportedTransferCoding,
    /// An `Expect` other than `100-continue` (RFC 9110 section 10.1.1).
    ExpectationFailed,
    /// An HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// No file at that path (also used for hidden files, so they cannot be probed).
    NotFound,
    /// The file exists but cannot be read by the server.
    Forbidden,
    /// The server failed while answering (an I/O error on the file, say).
    Internal,
}

impl HttpError {
    /// The status code and reason phrase that answer this error.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HttpError::BadSyntax
            | HttpError::BadHost
            | HttpError::BadFraming
            | HttpError::BadPath
            | HttpError::DuplicateHeader => (400, "Bad Request"),
            HttpError::Forbidden => (403, "Forbidden"),
            HttpError::NotFound => (404, "Not Found"),
            HttpError::MethodNotAllowed => (405, "Method Not Allowed"),
            HttpError::Timeout => (408, "Request Timeout"),
            HttpError::BodyTooLarge => (413, "Content Too Large"),
            HttpError::UriTooLong => (414, "URI Too Long"),
            HttpError::ExpectationFailed => (417, "Expectation Failed"),
            HttpError::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            HttpError::Internal => (500, "Internal Server Error"),
            HttpError::NotImplemented | HttpError::UnsupportedTransferCoding => {
                (501, "Not Implemented")
            }
            HttpError::VersionNotSupported => (505, "HTTP Version Not Supported"),
        }
    }

    /// Whether the connection must close after this answer. After a malformed request we
    /// cannot trust where the next one starts, so we stop reading (RFC 9112 section 9.6), and
    /// a client that sends bad requests gets no second try on the same connection. A missing
    /// file is an ordinary answer to a well-formed request: keep-alive goes on, as in nginx.
    pub fn closes_connection(self) -> bool {
        !matches!(self, HttpError::NotFound | HttpError::Forbidden)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, reason) = self.status();
        write!(f, "{code} {reason}")
    }
}

impl std::error::Error for HttpError {}
