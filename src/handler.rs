//! Custom handlers: answering some requests in code instead of from files.
//!
//! A [`Handler`] sees every request before the static files do, and either answers it with a
//! [`Reply`] or returns `None` to let the file server have it. It is small and synchronous on
//! purpose: it runs on the event loop's only thread, in the middle of a turn.
//!
//! # A handler must never block
//!
//! While a handler runs, no other connection is served: not accepted, not read, not written.
//! A handler that sleeps for 10 ms, waits on a lock, or reads a slow disk or network makes
//! every client of the server wait 10 ms. So a handler only computes from what it already
//! has in memory (a counter, a cached status, the request itself) and returns. Anything slow
//! belongs on another thread, which publishes its result where the handler can read it
//! without waiting (an atomic, say).
//!
//! # What the server keeps for itself
//!
//! The server alone frames the response: a handler's `Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Date` or `Server` header (in any case) is dropped and logged at warn, so a
//! reply can never carry two lengths or a chunked coding nobody applied. A handler that
//! panics does not take the server down: the panic is caught, logged at error, and the
//! client gets a 500. The handler is asked again for later requests, so whatever state it
//! left half-changed is its own to survive.
//!
//! ```
//! use readyserve::handler::Reply;
//! use readyserve::http::request::Request;
//!
//! let mut hits = 0u64;
//! let handler = move |req: &Request<'_>| {
//!     hits += 1;
//!     (req.target == "/hits").then(|| Reply::text(200, format!("{hits}\n")))
//! };
//! # let _ = handler;
//! ```

use crate::http::request::Request;

/// Answers some requests in code. See the module docs: it must never block.
pub trait Handler {
    /// Returns the reply for `request`, or `None` to fall through to the static files.
    fn handle(&mut self, request: &Request<'_>) -> Option<Reply>;
}

impl<F> Handler for F
where
    F: FnMut(&Request<'_>) -> Option<Reply>,
{
    fn handle(&mut self, request: &Request<'_>) -> Option<Reply> {
        self(request)
    }
}

/// A complete response from a handler. The server adds `Date`, `Server`, `Content-Length`
/// and `Connection` (a handler's own values for these, or for `Transfer-Encoding`, are
/// dropped), and drops the body for HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// Extra headers. A name or value with CR or LF in it is dropped (and logged), so a
    /// handler cannot split the response.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with the given status, content type and body.
    pub fn new(status: u16, content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A `text/plain; charset=utf-8` reply.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Reply::new(
            status,
            "text/plain; charset=utf-8",
            body.into().into_bytes(),
        )
    }

    /// An `application/json` reply. The body must already be JSON.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Reply::new(status, "application/json", body.into().into_bytes())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}
