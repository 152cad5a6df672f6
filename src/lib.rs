//! # readyserve
//!
//! A static-file HTTP/1.1 server on one single-threaded [`mio`] event loop, written to be
//! read. There are no threads and no async runtime: one loop asks the kernel which sockets
//! are ready, and each connection is an explicit state machine that does as much as it can
//! without blocking, then hands control back.
//!
//! ## Architecture
//!
//! [`Server`] owns a `mio::Poll`, the listening socket, and a `slab::Slab` of connections
//! whose keys are their `mio::Token`s. Each turn of the loop ([`server`]) sleeps in `poll`
//! until a socket is ready or the nearest deadline ([`timers`]) comes, then hands each event
//! to its connection. Readiness is edge-triggered: an event is reported once, so a handler
//! reads until the socket says WouldBlock (or a short read says the same), and writes until
//! its output is gone or the socket is full.
//!
//! A [`Connection`](connection::Connection) moves through four states:
//!
//! ```text
//!  accept ─▶ Reading ──bytes in──▶ Parsing ──response queued──▶ Writing ──all sent──▶ Reading
//!               ▲  Partial: read more ─┘  │ (pipelined leftovers: Parsing again)    │
//!               └─────────────── keep-alive ◀─────────────────────────────────────┘
//!  any state ── EOF / error / limit / timeout / Connection: close ──▶ Closing ──▶ slot freed
//! ```
//!
//! What it waits for comes from its state: input in Reading, room for output in Writing.
//! A client that stops reading stops being read from (backpressure), and one that pipelines
//! a thousand requests gets a fair share per turn, not the whole loop.
//!
//! ## Layout
//!
//! - [`server`]: the event loop, accepting, the fairness queue, shutdown.
//! - [`listener`]: TCP and Unix-socket listeners, and the stream type for both.
//! - [`connection`]: the per-connection state machine.
//! - [`answer`]: from a parsed request to a queued response (handler, file, error).
//! - [`http::request`]: request heads, parsed with `httparse`, and the framing rules.
//! - [`buffers`]: the buffer pool: idle connections hold no buffer.
//! - [`http::body`]: request bodies, skipped byte-exact (Content-Length and chunked).
//! - [`http::response`]: response heads and the cached `Date`.
//! - [`files::static_files`]: from a URL to an open file under the root, safely.
//! - [`files::cache`]: small files and listings in memory, invalidated by inotify, revalidated twice a second.
//! - [`http::conditional`]: ETag, Last-Modified, and 304 Not Modified.
//! - [`http::range`]: the Range header: 206 Partial Content and 416.
//! - [`http::encoding`]: choosing a precompressed `.br`/`.gz` sidecar from Accept-Encoding.
//! - [`files::listing`]: directory listings (`--list-directories`), safely escaped.
//! - [`timers`]: deadlines in an ordered set; the nearest one is `poll`'s timeout.
//! - [`ops::access_log`]: one Combined Log Format (or JSON) line per request, buffered per turn.
//! - [`ops::proxy`]: the real client address behind a trusted proxy (X-Forwarded-For).
//! - [`ops::metrics`]: Prometheus counters, served by a second listener in the same loop.
//! - [`http::error`]: [`HttpError`] and the one `match` that maps it to a status code.
//! - [`handler`]: the library API: answer some requests in code, on the loop thread.
//! - [`config`]: flags and `READYSERVE_*` environment variables.
//!
//! ## The life of a request
//!
//! One `GET /index.html` on a fresh connection, from the first readiness event to the last
//! byte written:
//!
//! 1. **Accept.** The client connects; `poll` reports the listener's token as readable.
//!    [`Server::run`] accepts until WouldBlock, sets TCP_NODELAY, registers each new socket
//!    for READABLE under a token equal to its slab key, and gives it a header deadline in
//!    [`timers::Timers`].
//! 2. **Reading.** The request's bytes arrive: an event names the connection's token, and
//!    the loop calls [`connection::Connection::ready`]. In the Reading state the connection
//!    reads into its buffer. A short read means the kernel's queue is empty, so it does not
//!    read again to hear WouldBlock.
//! 3. **Parsing.** [`http::request::parse`] hands the buffer to `httparse`. `Partial` sends the
//!    connection back to Reading; `Complete(n)` gives a [`http::request::Request`] and leaves the
//!    bytes after `n` for the next pipelined request. Any [`HttpError`] becomes an error
//!    response and a close.
//! 4. **Answering.** A [`handler::Handler`], if the library user installed one, may answer.
//!    Otherwise [`files::static_files::StaticFiles::open`] maps the target to an open file inside
//!    the root, [`http::response::begin`], [`http::response::header`] and [`http::response::end`] write the
//!    head into the output buffer, and a small file's bytes follow it (a large one is
//!    streamed later, chunk by chunk). [`ops::access_log::AccessLog::log`] records the request.
//! 5. **Writing.** The connection writes its output until it is all sent. If the socket's
//!    buffer fills up, it stays in Writing, its [`connection::Connection::interest`] becomes
//!    WRITABLE, and the loop reregisters it; the next writable edge resumes it.
//! 6. **Keep-alive.** All sent, the connection goes back to Reading with a keep-alive
//!    deadline, or, after `Connection: close` or an error, to Closing, where it shuts down
//!    its side and drains what the client still sends. When it is done, the loop frees its
//!    slot at the end of the turn.

pub mod answer;
pub mod buffers;
pub mod config;
pub mod connection;
pub mod context;
pub mod files;
pub mod handler;
pub mod http;
pub mod listener;
pub mod ops;
pub mod server;
pub mod timers;

pub use config::Config;
pub use http::error::HttpError;
pub use server::{Server, ServerHandle, StartError};
