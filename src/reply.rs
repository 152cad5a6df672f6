//! [`Reply`]: a complete response from a handler, answered now or later from another
//! thread (see [`crate::handler`]). It is plain data, so that both the handler API and the
//! cross-thread queue ([`crate::deferred`]) can use it without depending on each other.

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
