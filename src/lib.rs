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
//! - [`connection`]: the per-connection state machine.
//! - [`request`]: request heads, parsed with `httparse`, and the framing rules.
//! - [`body`]: request bodies, skipped byte-exact (Content-Length and chunked).
//! - [`response`]: response heads and the cached `Date`.
//! - [`static_files`]: from a URL to an open file under the root, safely.
//! - [`timers`]: deadlines in an ordered set; the nearest one is `poll`'s timeout.
//! - [`access_log`]: one Combined Log Format line per request, buffered per turn.
//! - [`error`]: [`HttpError`] and the one `match` that maps it to a status code.
//! - [`handler`]: the library API: answer some requests in code, on the loop thread.
//! - [`config`]: flags and `READYSERVE_*` environment variables.
//!
//! ## The life of a request
//!
//! 1. The client connects. The listener's token is ready; [`server`] accepts until
//!    WouldBlock, registers each socket for READABLE, and puts it in the slab.
//! 2. The request's bytes arrive: an event for the connection's token.
//!    [`Connection::ready`](connection::Connection::ready) reads them into the read buffer
//!    (Reading), then [`request::parse`] turns them into a [`request::Request`] (Parsing).
//!    If the head is incomplete, the connection goes back to Reading and waits.
//! 3. [`static_files::StaticFiles::open`] maps the target to a file inside the root, and the
//!    response head ([`response`]) and body go into the output buffer.
//! 4. Writing: the output is written until it is gone. If the socket fills up, the
//!    connection asks for WRITABLE and waits; otherwise it goes straight back to Reading
//!    for the next request on the same connection (keep-alive).

pub mod access_log;
pub mod body;
pub mod config;
pub mod connection;
pub mod error;
pub mod handler;
pub mod request;
pub mod response;
pub mod server;
pub mod static_files;
pub mod timers;

pub use config::Config;
pub use error::HttpError;
pub use server::{Server, ServerHandle, StartError};
