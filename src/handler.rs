//! Custom handlers: answering some requests in code instead of from files, now, later from
//! another thread, or as a stream.
//!
//! A [`Handler`] sees every request, whatever its method, before the static files do, and
//! either answers it or returns `None` to let the file server have it (the files answer GET,
//! HEAD and OPTIONS, and 405 to the rest). It runs on the event loop's only thread, in the
//! middle of a turn.
//!
//! # A handler must never block
//!
//! While a handler runs, no other connection is served: not accepted, not read, not written.
//! A handler that sleeps for 10 ms, waits on a lock, or reads a slow disk or network makes
//! every client of the server wait 10 ms. So a handler only computes from what it already
//! has in memory (a counter, a cached status, the request and its body) and returns. Slow
//! work goes to another thread, and the handler answers in one of three ways ([`Answer`]):
//!
//! - **Now**: a whole [`Reply`].
//! - **Later**: [`Exchange::defer`] gives a [`Responder`], a `Send` handle the handler
//!   passes to a worker thread; it returns [`Answer::Later`]. The connection waits, holding
//!   no thread, while every other connection is served. When the worker calls
//!   [`Responder::send`], the reply goes into a queue in the loop and a `mio::Waker` wakes
//!   the loop (see [`crate::deferred`]). A responder dropped without an answer (the worker
//!   gave up, or panicked) gives 500; none in time (`--write-timeout`) gives 503; a client
//!   that went away meanwhile (closed, or sent its FIN, as nginx counts it) makes the
//!   answer harmless, never misdelivered.
//! - **As a stream**: [`Exchange::stream`] gives a [`BodySender`]; the handler returns
//!   [`Answer::Stream`] with the head, which goes out at once, and a worker sends the body
//!   piece by piece (chunked on HTTP/1.1, up to the close on HTTP/1.0). Server-Sent Events
//!   (`text/event-stream`) are the main use. The queue between the sender and the loop is
//!   bounded, and the loop takes from it only while the client keeps up: a slow client
//!   makes [`BodySender::try_send`] say [`TrySendError::Full`], never the server's memory
//!   grow. While it waits for its next piece a stream has no deadline: the sender decides
//!   when it ends.
//!
//! # Request bodies
//!
//! A body is read by the loop, without blocking, before the handler is called, and only if
//! the handler asks for it: [`Handler::accepts_body`] is asked when the head has arrived,
//! before any of the body is read, and returns the most bytes it will take (capped at
//! `--max-body-bytes`). A body over that limit is answered 413, and the handler never sees
//! it. A client that sent `Expect: 100-continue` gets `100 Continue` first (RFC 9110 section
//! 10.1.1). Asking before reading, rather than routing by a table, keeps one place in
//! the handler that knows its URLs; the default says "no body", so a handler that takes
//! none writes nothing for it, and a body it did not ask for is read and thrown away.
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
//! A closure that takes the request head and returns `Option<Reply>` is a handler (for
//! requests without bodies, answered now):
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
//!
//! One that takes a body, or answers later, implements the trait:
//!
//! ```
//! use readyserve::handler::{Answer, Exchange, Handler, Reply};
//! use readyserve::http::request::{Method, Request};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn accepts_body(&mut self, head: &Request<'_>) -> Option<u64> {
//!         (head.path() == "/echo").then_some(1024) // at most 1 KiB, else 413
//!     }
//!     fn handle(&mut self, ex: &mut Exchange<'_, '_>) -> Option<Answer> {
//!         match (ex.request.method, ex.request.path()) {
//!             (Method::Post, "/echo") => Some(Reply::new(200, "text/plain", ex.body).into()),
//!             (Method::Get, "/slow") => {
//!                 let responder = ex.defer();
//!                 std::thread::spawn(move || responder.send(Reply::text(200, "done\n")));
//!                 Some(Answer::Later)
//!             }
//!             _ => None,
//!         }
//!     }
//! }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use crate::deferred::{BodySender, Responder, TrySendError};
use crate::deferred::{Later, Mailbox};
use crate::http::request::Request;
use crate::ops::proxy::{self, RealIpHeader, TrustedProxy};
pub use crate::reply::Reply;

/// Answers some requests in code. See the module docs: it must never block.
pub trait Handler {
    /// Asked when a request's head has arrived, for a request that has a body, before any
    /// of the body is read: the most body bytes this handler takes for it, or `None` if it
    /// does not take the body (the default).
    ///
    /// With `Some(limit)`, the loop reads the body (sending `100 Continue` first if the
    /// client waits for it), up to `limit` and `--max-body-bytes`, whichever is smaller; a
    /// larger one is answered 413 and [`Handler::handle`] is not called. With `None`, the
    /// body is read and thrown away (or not read at all after `Expect: 100-continue`), and
    /// `handle` sees an empty body.
    fn accepts_body(&mut self, head: &Request<'_>) -> Option<u64> {
        let _ = head;
        None
    }

    /// Answers the request in `exchange` (its head, its body, its client), or returns
    /// `None` to fall through to the static files.
    fn handle(&mut self, exchange: &mut Exchange<'_, '_>) -> Option<Answer>;
}

/// A closure from the request head to an optional reply is a handler that takes no body
/// and answers at once.
impl<F, R> Handler for F
where
    F: FnMut(&Request<'_>) -> Option<R>,
    R: Into<Answer>,
{
    fn handle(&mut self, exchange: &mut Exchange<'_, '_>) -> Option<Answer> {
        self(exchange.request).map(Into::into)
    }
}

/// How a handler answers.
#[derive(Debug)]
pub enum Answer {
    /// This reply, now.
    Reply(Reply),
    /// Later, through the [`Responder`] that [`Exchange::defer`] gave.
    Later,
    /// A head now, and a body in pieces through the [`BodySender`] that
    /// [`Exchange::stream`] gave. The reply's status, `Content-Type` and headers make the
    /// head; its body, if any, is the first piece.
    Stream(Reply),
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer::Reply(reply)
    }
}

/// One request as a handler sees it: the head, the body, who sent it, and the means to
/// answer later.
pub struct Exchange<'a, 'b> {
    /// The request head.
    pub request: &'a Request<'b>,
    /// The request body, if [`Handler::accepts_body`] took it; empty otherwise.
    pub body: &'a [u8],
    peer: Option<SocketAddr>,
    trusted: &'a [TrustedProxy],
    real_ip_header: RealIpHeader,
    /// Where workers leave answers; `None` outside a running server (unit tests).
    mailbox: Option<&'a Arc<Mailbox>>,
    /// The connection's slab key, which answers are addressed to.
    key: usize,
    /// What `defer` or `stream` set up, for the connection to wait on.
    pub(crate) later: Option<Later>,
}

impl<'a, 'b> Exchange<'a, 'b> {
    /// An exchange for `request` from `peer` (the connection's address: the access log's
    /// too), on the connection with slab key `key`.
    pub(crate) fn new(
        request: &'a Request<'b>,
        body: &'a [u8],
        peer: Option<SocketAddr>,
        trusted: &'a [TrustedProxy],
        real_ip_header: RealIpHeader,
        mailbox: Option<&'a Arc<Mailbox>>,
        key: usize,
    ) -> Self {
        Exchange {
            request,
            body,
            peer,
            trusted,
            real_ip_header,
            mailbox,
            key,
            later: None,
        }
    }

    /// The address the connection came from; `None` on a Unix socket.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client: the peer, or the address a trusted proxy names (`--trust-proxy`,
    /// `--real-ip-header`), worked out as for the access log. `None` on a Unix socket with
    /// no trusted proxy header.
    pub fn client(&self) -> Option<IpAddr> {
        let header = self.real_ip_header;
        let values = self.request.headers_named(header.name());
        proxy::client_addr(self.peer, header, values, self.trusted)
    }

    /// Answers later: returns the [`Responder`] to hand to another thread, and the handler
    /// returns [`Answer::Later`]. Until the responder answers (or is dropped, or the write
    /// timeout passes), requests pipelined behind this one wait, in order.
    pub fn defer(&mut self) -> Responder {
        let mailbox = self.mailbox_or_detached();
        let (later, responder) = Later::reply(mailbox, self.key);
        self.later = Some(later);
        responder
    }

    /// Streams the body: returns the [`BodySender`] to hand to another thread, and the
    /// handler returns [`Answer::Stream`]. At most `capacity` pieces (at least 1) wait
    /// between the sender and the loop; past that, [`BodySender::try_send`] says
    /// [`TrySendError::Full`].
    pub fn stream(&mut self, capacity: usize) -> BodySender {
        let mailbox = self.mailbox_or_detached();
        let (later, sender) = Later::stream(mailbox, self.key, capacity);
        self.later = Some(later);
        sender
    }

    /// The loop's mailbox, or one that no loop reads (outside a running server): answers
    /// put there are dropped, and the connection answers 500 instead of waiting forever.
    fn mailbox_or_detached(&self) -> Arc<Mailbox> {
        match self.mailbox {
            Some(mailbox) => Arc::clone(mailbox),
            None => Arc::new(Mailbox::new(None)),
        }
    }
}
