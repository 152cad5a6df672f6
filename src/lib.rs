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
//! A [`Connection`](connection::Connection) moves through these states:
//!
//! ```text
//!  accept ─▶ Reading ──bytes in──▶ Parsing ──response queued──▶ Writing ──all sent──▶ Reading
//!               ▲  Partial: read more ─┘  │ (pipelined leftovers: Parsing again)    │
//!               └─────────────── keep-alive ◀─────────────────────────────────────┘
//!  Writing ── Connection: close / error response sent ──▶ Closing ── EOF / linger over ──▶ Closed
//!  any state ── EOF / I/O error / timeout ──▶ Closed ──▶ slot freed at the end of the turn
//! ```
//!
//! Behind a TCP proxy that speaks the PROXY protocol (`--proxy-protocol`), a connection
//! starts one step earlier, in ProxyHeader, and moves on to Reading only once the header
//! has named the client.
//!
//! What it waits for comes from its state: input in Reading, room for output in Writing.
//! A client that stops reading stops being read from (backpressure), and one that pipelines
//! a thousand requests gets a fair share per turn, not the whole loop. A library user's
//! [`handler`] runs on the loop thread too, so its slow work goes to a thread of its own,
//! which answers later through the loop's mailbox and `mio::Waker` ([`deferred`]);
//! meanwhile the connection waits in Writing with nothing to write. `ARCHITECTURE.md` at
//! the repository's root tells the same story in prose, with the invariants the code
//! keeps.
//!
//! ## Layout
//!
//! The main story is flat:
//!
//! - [`server`]: the event loop, accepting, the fairness queue, shutdown.
//! - [`listener`]: TCP and Unix-socket listeners (bound, or inherited from systemd or a
//!   parent process), the stream type for both, and the
//!   [`Transport`](listener::Transport) a connection runs on.
//! - [`connection`]: the per-connection state machine, and nothing else.
//! - [`context`]: what one turn of the loop lends a connection: limits, clock, shared state.
//! - [`answer`]: from a parsed request to a queued response (handler, file, listing, error),
//!   and the one keep-alive decision.
//! - [`buffers`]: the input and output buffers, and the pool that lets idle connections
//!   hold none.
//! - [`timers`]: deadlines in an ordered set; the nearest one is `poll`'s timeout.
//! - [`handler`]: the library API: answer some requests in code, on the loop thread: now,
//!   later from another thread, or as a stream; [`reply`] is what a handler answers.
//! - [`deferred`]: answers from other threads: the mailbox and waker that bring them into
//!   the loop, and the bounded queue a streamed body comes through.
//! - [`config`]: flags and `READYSERVE_*` environment variables.
//!
//! The families are folders. [`http`] is the protocol with no I/O: nothing in it touches a
//! socket or a file, and it imports nothing from outside itself.
//!
//! - [`http::request`]: request heads, parsed with `httparse`, and the framing rules.
//! - [`http::body`]: request bodies, skipped byte-exact (Content-Length and chunked).
//! - [`http::response`]: response heads and the cached `Date`.
//! - [`http::error`]: [`HttpError`] and the one `match` that maps it to a status code.
//! - [`http::conditional`]: ETag, Last-Modified, 304 Not Modified and 412 Precondition Failed.
//! - [`http::range`]: the Range header: 206 Partial Content and 416.
//! - [`http::encoding`]: choosing a precompressed `.br`/`.gz` sidecar from Accept-Encoding.
//!
//! [`files`] is the disk side:
//!
//! - [`files::static_files`]: from a URL to an open file (or directory) under the root,
//!   safely.
//! - [`files::cache`]: small files and listings in memory. inotify drops an entry as soon as
//!   its file changes; what inotify cannot see (a symlink on the path re-pointed, as atomic
//!   deploys do) is caught by resolving each entry's URL again, at most twice a second.
//! - [`files::listing`]: directory listings (`--list-directories`), safely escaped.
//!
//! [`ops`] is what operating the server needs:
//!
//! - [`ops::access_log`]: one Combined Log Format (or JSON) line per request, written when
//!   its response has been sent (with the bytes that went out), buffered per turn, and
//!   never waited for: a reader that stops reading gets lines kept, then dropped and
//!   counted, while the loop goes on.
//! - [`ops::metrics`]: Prometheus counters, served by a second listener in the same loop.
//! - [`ops::proxy`]: the real client address behind a trusted proxy (X-Forwarded-For).
//! - [`ops::proxy_protocol`]: the PROXY protocol header (v1 and v2) a TCP proxy sends first.
//! - [`ops::live`]: the live view of the loop (`/loop` on the metrics listener): the page
//!   and the snapshots that its event stream carries.
//! - [`ops::stderr_log`]: the binary's log on stderr, guarded so that a stderr that does not
//!   take a line (a stalled pipe, an unread terminal, a reader that exited) costs the line,
//!   not the loop.
//!
//! ## The life of a request
//!
//! One `GET /index.html` on a fresh connection, from the first readiness event to the last
//! byte written, goes through five files: server → connection → answer → files →
//! http/response. Everything else is a helper called from one of them.
//!
//! 1. **[`server`]: accept.** The client connects; `poll` reports the listener's token as
//!    readable. [`Server::run`] accepts until WouldBlock, registers each new socket for
//!    READABLE under a token equal to its slab key, and gives it a deadline. When the
//!    request's bytes arrive, an event names the connection's token, and the loop calls
//!    [`connection::Connection::ready`].
//! 2. **[`connection`]: Reading, Parsing.** In Reading, the connection reads into its
//!    buffer; a short read means the kernel's queue is empty, so it does not read again to
//!    hear WouldBlock. In Parsing, [`http::request::parse`] gives `Partial` (back to
//!    Reading) or `Complete(n)`: a request, with the bytes after `n` left for the next
//!    pipelined one.
//! 3. **[`answer`]: the response.** [`answer::answer`] asks the handler, if the library
//!    user installed one, then the cache, then the disk; [`answer::keep_alive`] decides
//!    whether the connection stays open after it.
//! 4. **[`files`]: the file.** [`files::static_files::StaticFiles::open`] maps the target to
//!    an open file inside the root, and [`files::cache::FileCache::insert`] keeps a small
//!    one in memory and hands it back to be served.
//! 5. **[`http::response`]: the bytes.** [`http::response::begin`], [`http::response::header`]
//!    and [`http::response::end`] write the head into the output buffer; a small body
//!    follows it (shared, not copied, when it is cached), a large one is streamed later.
//!    Back in the connection, Writing sends it all, in one writev(2) when it fits. If the
//!    socket's buffer fills up, it stays in Writing, its interest becomes WRITABLE, and the
//!    next writable edge resumes it. All sent, `after_output` goes back to Reading with a
//!    keep-alive deadline, or to Closing, where it shuts down its side and drains what the
//!    client still sends; when it is Closed, the loop frees its slot at the end of the turn.

pub mod answer;
pub mod buffers;
pub mod config;
pub mod connection;
pub mod context;
pub mod deferred;
pub mod files;
pub mod handler;
pub mod http;
pub mod listener;
pub mod ops;
pub mod reply;
pub mod server;
pub mod timers;

pub use config::Config;
pub use http::error::HttpError;
pub use server::{Server, ServerHandle, StartError};
