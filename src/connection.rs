//! One client connection as an explicit state machine.
//!
//! ```text
//!  accept ─▶ Reading ──bytes in──▶ Parsing ──response queued──▶ Writing ──all sent──▶ Reading
//!               ▲  Partial: read more ─┘  │ (pipelined leftovers: Parsing again)    │
//!               └─────────────── keep-alive ◀─────────────────────────────────────┘
//!  any state ── EOF / error / limit / timeout / Connection: close ──▶ Closing ──▶ slot freed
//! ```
//!
//! The connection never blocks and never waits by itself. The event loop
//! ([`crate::server`]) calls [`Connection::ready`] when mio reports readiness; the connection
//! then runs its state machine as far as it can without blocking, and stops when the socket
//! says "would block" (or when it has used up its fair share of this turn). The loop then
//! reads three things off it: [`Connection::interest`] (what to wait for, derived from the
//! state), [`Connection::deadline`] (when to give up waiting), and [`Connection::is_done`].
//!
//! The state changes in one place, `Connection::set_state`, which traces each transition
//! (`--trace` shows them).
//!
//! Output waits in an [`OutBuf`]: heads are copied in, bodies already in memory (cached
//! files, listings) are referred to rather than copied (unless they are tiny), and each
//! write is one writev(2) of all of it. Every queued byte counts toward the high-water
//! mark, shared or not: while the queue is over it, no further pipelined request is
//! answered, so a client that sends and never reads holds one response beyond the mark at
//! most, and a shared body in it costs no memory of its own.
//!
//! A client may send its last request and shut down its sending half (FIN) in one go. The
//! event then says "read-closed" ([`Readiness::read_closed`]), and the connection reads on
//! to the EOF after answering, and closes at once, instead of waiting for an edge that
//! will never come.
//!
//! The connection is generic over its [`Transport`], so the same state machine runs on a
//! real `mio::net::TcpStream` and on an in-memory stream in tests and fuzzing.

use std::fmt;
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use crate::answer::{self, FileBody};
use crate::buffers::{BufferPool, MAX_SLICES, OutBuf, READ_BUFFER};
use crate::context::{Context, Limits};
use crate::http::body::Discard;
use crate::http::error::HttpError;
use crate::http::request::{self, BodyLength, Parsed, Version};
use crate::listener::Transport;
use crate::ops::access_log::Entry;
use crate::ops::metrics::TimeoutKind;

/// The read buffer's first size. Most request heads are a few hundred bytes.
const READ_CHUNK: usize = READ_BUFFER;
/// Stop parsing pipelined requests while this much output is waiting (backpressure): a
/// client that sends requests but does not read answers must not make us buffer without end.
const HIGH_WATER: usize = 64 * 1024;
/// Bytes read from a large file per refill of the output buffer.
const FILE_CHUNK: usize = 64 * 1024;
/// Fairness: most requests answered per connection per turn of the loop...
const MAX_REQUESTS_PER_TURN: u32 = 32;
/// ...and most bytes read or written. Past either, the connection yields to the others.
const MAX_BYTES_PER_TURN: usize = 1024 * 1024;
/// After an error response, how long and how much we keep reading before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// Most bytes handed to one sendfile(2) call.
const SENDFILE_CHUNK: usize = 1024 * 1024;

/// Whether an I/O error on the socket only says that the client went away (closed, reset,
/// unreachable). That is normal, not a server problem: it is logged at debug.
fn peer_gone(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | TimedOut
            | HostUnreachable
            | NetworkUnreachable
    )
}

/// The four states of a connection (see the diagram in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for bytes from the client: the start of a request, more of one, or a body.
    Reading,
    /// Bytes are buffered: turning them into requests and queueing responses.
    Parsing,
    /// Sending queued output.
    Writing,
    /// On the way out: after an error response, lingering to read what the client still
    /// sends so that the close does not turn into a reset; or already finished.
    Closing,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Reading => "Reading",
            State::Parsing => "Parsing",
            State::Writing => "Writing",
            State::Closing => "Closing",
        })
    }
}

/// What the event said about the socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    /// Bytes (or EOF, or an error) can be read.
    pub readable: bool,
    /// Output can be written.
    pub writable: bool,
    /// The peer has shut down its sending half (or the connection hung up): after the
    /// bytes already received, a read returns EOF.
    pub read_closed: bool,
}

/// One client connection: its socket, its buffers and where it is in the protocol.
pub struct Connection<S> {
    /// The client's socket (or an in-memory stand-in).
    socket: S,
    /// This connection's slab key and mio token, for log lines.
    token: Token,
    /// The client's address, when it has one.
    peer: Option<SocketAddr>,
    /// Where the connection is in the protocol. Changed only by [`Connection::set_state`].
    state: State,
    /// Received bytes. `inbuf[in_start..in_end]` is not consumed yet; the rest is free space.
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// The unconsumed bytes are an incomplete head: no use parsing them again before more
    /// bytes arrive.
    head_incomplete: bool,
    /// The body of the current request, still being skipped.
    discard: Discard,
    /// A complete head whose body is still arriving. It is answered only once the body has
    /// all been read, so that a body that breaks the framing is answered with 400 instead of
    /// a response already on its way; meanwhile its bytes stay at the front of the input,
    /// and the body's bytes are removed from behind them as they are skipped.
    held: Option<HeldHead>,
    /// Output still to be sent; `file` follows it.
    out: OutBuf,
    file: Option<FileBody>,
    /// Close once the output is sent (an error, `Connection: close`, HTTP/1.0, shutdown).
    close_after_write: bool,
    /// The socket may hold unread bytes: no read has yet hit WouldBlock or come up short
    /// since the last readable edge. Edge-triggered readiness is only reported once, so
    /// forgetting this would leave a request unanswered.
    read_more: bool,
    /// The client has sent its FIN: the next read after the queued bytes returns EOF, and
    /// no edge will announce it, so short reads do not end reading (see `on_reading`).
    peer_closed: bool,
    /// When the current request head started arriving (for `--header-timeout`).
    head_started: Option<Instant>,
    /// When the connection last became idle (for `--keep-alive-timeout`).
    idle_since: Instant,
    /// Last progress on output, body or lingering (for `--write-timeout` and the others).
    progress_at: Instant,
    /// At least one request was answered.
    served_any: bool,
    /// This turn's work, for fairness.
    turn_requests: u32,
    turn_bytes: usize,
    /// The turn ended because of the fairness budget, not because the socket would block.
    yielded: bool,
    /// Bytes read while lingering.
    linger_read: usize,
    /// Finished: the loop deregisters and frees this connection at the end of the turn.
    done: bool,
    /// The loop's clock for the current turn.
    now: Instant,
    /// This connection came in on the metrics listener: it is answered from the counters.
    metrics_only: bool,
}

impl<S: Transport> Connection<S> {
    /// A new connection, just accepted at `now`, waiting for its first request.
    pub fn new(socket: S, token: Token, peer: Option<SocketAddr>, now: Instant) -> Self {
        Connection {
            socket,
            token,
            peer,
            state: State::Reading,
            inbuf: Vec::new(),
            in_start: 0,
            in_end: 0,
            head_incomplete: false,
            discard: Discard::Done,
            held: None,
            out: OutBuf::new(),
            file: None,
            close_after_write: false,
            // Registration is edge-triggered, and epoll reports bytes that arrived before
            // registration as a first edge, so there is no need to try a read now.
            read_more: false,
            peer_closed: false,
            head_started: None,
            idle_since: now,
            progress_at: now,
            served_any: false,
            turn_requests: 0,
            turn_bytes: 0,
            yielded: false,
            linger_read: 0,
            done: false,
            now,
            metrics_only: false,
        }
    }

    /// Makes this a metrics connection: `GET /metrics` gets the counters, anything else 404.
    pub fn serve_metrics_only(&mut self) {
        self.metrics_only = true;
    }

    /// The socket, for (de)registering it with mio.
    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// The socket, mutably, for (de)registering it with mio.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the connection is finished and its slot can be freed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the connection stopped because its fair share ran out while it still had
    /// work. The loop runs it again, after the others, before it next sleeps in `poll`.
    pub fn wants_resume(&self) -> bool {
        self.yielded && !self.done
    }

    /// Whether the connection is between requests with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.state == State::Reading
            && self.in_start == self.in_end
            && self.discard.is_done()
            && !self.done
    }

    /// What to ask mio to watch, derived from the state alone. Waiting for output room only
    /// while there is output, and for input otherwise, is backpressure in its simplest form:
    /// a client that does not read our answers is not read from either.
    pub fn interest(&self) -> Interest {
        match self.state {
            State::Writing => Interest::WRITABLE,
            State::Reading | State::Parsing | State::Closing => Interest::READABLE,
        }
    }

    /// When this connection must next be looked at if nothing happens: the deadline of
    /// whatever it is waiting for.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.done {
            return None;
        }
        Some(match self.state {
            State::Writing => self.progress_at + limits.write_timeout,
            State::Closing => self.progress_at + LINGER_TIME,
            State::Reading | State::Parsing => {
                if let Some(started) = self.head_started {
                    // From the first byte of the head, not reset by later bytes: a client
                    // trickling one byte a second is still cut off (slowloris).
                    started + limits.header_timeout
                } else if !self.discard.is_done() {
                    // From the start of the body (see `on_parsing`).
                    self.progress_at + limits.header_timeout
                } else if self.served_any {
                    self.idle_since + limits.keep_alive_timeout
                } else {
                    // A connection that never sends a byte gets the header timeout.
                    self.idle_since + limits.header_timeout
                }
            }
        })
    }

    /// Handles a readiness event, then runs as far as possible without blocking.
    pub fn ready(&mut self, readiness: Readiness, ctx: &mut Context<'_>) {
        if readiness.readable {
            self.read_more = true;
        }
        if readiness.read_closed {
            self.peer_closed = true;
        }
        if self.done {
            return;
        }
        self.run(ctx);
    }

    /// Continues after yielding (see [`Connection::wants_resume`]).
    pub fn resume(&mut self, ctx: &mut Context<'_>) {
        if !self.done {
            self.run(ctx);
        }
    }

    /// Removes `n` body bytes that start at `at` from the input: from the front, or from
    /// behind a held head.
    fn consume_body(&mut self, at: usize, n: usize) {
        if at == self.in_start {
            self.in_start += n;
        } else {
            self.inbuf.copy_within(at + n..self.in_end, at);
            self.in_end -= n;
        }
    }

    /// Called when [`Connection::deadline`] has passed.
    pub fn timed_out(&mut self, ctx: &mut Context<'_>) {
        self.now = ctx.now;
        match self.state {
            State::Reading | State::Parsing if self.head_started.is_some() => {
                log::debug!("token={} header timeout", self.token.0);
                count_timeout(ctx, TimeoutKind::Header);
                self.queue_error(HttpError::Timeout, Version::Http11, false, ctx);
                self.set_state(State::Writing, "header timeout");
                self.run(ctx);
            }
            State::Reading | State::Parsing if !self.discard.is_done() => {
                count_timeout(ctx, TimeoutKind::Body);
                if self.held.take().is_some() {
                    // Its request is still unanswered: say why it never will be.
                    log::debug!("token={} body timeout", self.token.0);
                    self.discard = Discard::Done;
                    self.queue_error(HttpError::Timeout, Version::Http11, false, ctx);
                    self.in_start = self.in_end;
                    self.set_state(State::Writing, "body timeout");
                    self.run(ctx);
                } else {
                    self.close("body timeout");
                }
            }
            State::Reading | State::Parsing => {
                // Before its first request, a silent connection is under the header timeout.
                let kind = if self.served_any {
                    TimeoutKind::KeepAlive
                } else {
                    TimeoutKind::Header
                };
                count_timeout(ctx, kind);
                self.close("idle timeout");
            }
            State::Writing => {
                count_timeout(ctx, TimeoutKind::Write);
                log::debug!(
                    "token={} write timeout: the client stopped reading",
                    self.token.0
                );
                self.close("write timeout");
            }
            State::Closing => self.close("linger done"),
        }
    }

    /// Closes an idle connection during shutdown. Returns whether it did.
    pub fn close_if_idle(&mut self) -> bool {
        if self.is_idle() {
            self.close("server shutting down");
            true
        } else {
            false
        }
    }

    /// Runs the state machine until it has to wait for the socket, its turn is used up,
    /// or the connection is done.
    fn run(&mut self, ctx: &mut Context<'_>) {
        self.now = ctx.now;
        self.turn_requests = 0;
        self.turn_bytes = 0;
        self.yielded = false;
        while !self.done {
            let go_on = match self.state {
                State::Reading => self.on_reading(ctx),
                State::Parsing => self.on_parsing(ctx),
                State::Writing => self.on_writing(ctx),
                State::Closing => self.on_closing(),
            };
            if !go_on {
                break;
            }
        }
    }

    /// The one place the state changes.
    fn set_state(&mut self, next: State, why: &'static str) {
        log::trace!(
            "token={} {} {}=>{} ({why})",
            self.token.0,
            Peer(self.peer),
            self.state,
            next
        );
        if next == State::Writing && self.state != State::Writing {
            self.progress_at = self.now;
        }
        self.state = next;
    }

    /// Ends the connection now. The loop frees the slot at the end of this turn.
    fn close(&mut self, why: &'static str) {
        if self.state != State::Closing {
            self.set_state(State::Closing, why);
        } else {
            log::trace!("token={} closed ({why})", self.token.0);
        }
        self.done = true;
    }

    // ----- Reading -----------------------------------------------------------------------

    /// Reading: pull bytes from the socket into the read buffer.
    fn on_reading(&mut self, ctx: &mut Context<'_>) -> bool {
        if !self.read_more {
            return false; // wait for the next readable edge
        }
        if self.turn_bytes >= MAX_BYTES_PER_TURN {
            self.yielded = true;
            return false;
        }
        if !self.make_room(ctx.limits.max_head, ctx.pool) {
            // Cannot happen for a well-formed state: the parser rejects a head over the
            // limit before the buffer is full. Treat it as the limit it protects.
            self.fail(HttpError::HeadersTooLarge, ctx);
            return true;
        }
        let spare = self.inbuf.len() - self.in_end;
        match retrying(|| self.socket.read(&mut self.inbuf[self.in_end..])) {
            Ok(0) => {
                // EOF. Nothing complete is left unanswered (we parse before reading again),
                // so there is nothing more to do for this client.
                if self.in_start != self.in_end || !self.discard.is_done() {
                    log::debug!("token={} client closed mid-request", self.token.0);
                }
                self.close("client closed");
                false
            }
            Ok(n) => {
                // A short read means the kernel's queue is now empty, and the next byte to
                // arrive will raise a new edge: skip the read that would only say WouldBlock.
                // Unless the client has sent its FIN: then that read says EOF, and no edge
                // is coming to tell us, so it must be made (or the socket would sit in
                // CLOSE-WAIT until the keep-alive timeout).
                if n < spare && !self.peer_closed {
                    self.read_more = false;
                }
                log::trace!("token={} read {n} bytes", self.token.0);
                self.in_end += n;
                self.turn_bytes += n;
                self.head_incomplete = false;
                self.set_state(State::Parsing, "bytes in");
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.read_more = false;
                false
            }
            Err(e) => {
                log::debug!("token={} {} read error: {e}", self.token.0, Peer(self.peer));
                self.close("read error");
                false
            }
        }
    }

    /// Makes free space at the end of the read buffer: moves unconsumed bytes to the front,
    /// and grows the buffer (doubling, up to just over the head limit) when it is full.
    fn make_room(&mut self, max_head: usize, pool: &mut BufferPool) -> bool {
        if self.inbuf.is_empty() {
            // Idle connections hold no buffer; borrow one for as long as a request lasts.
            self.inbuf = pool.take_read();
        }
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
        } else if self.in_start > 0 && self.in_end == self.inbuf.len() {
            self.inbuf.copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
        }
        if self.in_end < self.inbuf.len() {
            return true;
        }
        // One byte over the limit must fit, or the parser could never see that a head is
        // too large.
        let cap = max_head + 1;
        if self.inbuf.len() >= cap {
            return false;
        }
        let size = (self.inbuf.len() * 2).max(READ_CHUNK).min(cap);
        self.inbuf.resize(size, 0);
        true
    }

    // ----- Parsing -----------------------------------------------------------------------

    /// Parsing: turn buffered bytes into requests and queue their responses.
    fn on_parsing(&mut self, ctx: &mut Context<'_>) -> bool {
        // A request's body comes before anything after it: skip it, byte-exact. It starts
        // behind the held head, if there is one.
        if !self.discard.is_done() {
            let at = self.in_start + self.held.map_or(0, |h| h.len);
            let pending = &self.inbuf[at..self.in_end];
            match self
                .discard
                .advance(pending, ctx.limits.max_body, ctx.limits.max_head)
            {
                Ok(n) => self.consume_body(at, n),
                Err(e) if self.held.take().is_some() => {
                    // Not answered yet: the answer is the error (400, 413, 431).
                    self.discard = Discard::Done;
                    self.fail(e, ctx);
                    return true;
                }
                Err(e) => {
                    // Answered already (`Expect: 100-continue` is answered before its body),
                    // so only the close can tell; what follows cannot be trusted either.
                    log::debug!("token={} bad request body: {e}", self.token.0);
                    self.discard = Discard::Done;
                    self.in_start = self.in_end;
                    self.close_after_write = true;
                }
            }
            if !self.discard.is_done() {
                self.wait_for_input("body needs more bytes", ctx.pool);
                return true;
            }
        }
        let has_output = !self.out.is_empty() || self.file.is_some();
        if self.close_after_write {
            // Nothing after a closing response is answered.
            self.in_start = self.in_end;
            self.set_state(State::Writing, "closing response queued");
            return true;
        }
        if self.in_start == self.in_end || self.head_incomplete {
            self.wait_for_input("need more bytes", ctx.pool);
            return true;
        }
        if self.out.len() >= HIGH_WATER || self.file.is_some() {
            // Backpressure: send what is queued before answering more. Shared bodies count
            // in full: each one keeps its cache entry alive for as long as it is queued.
            self.set_state(State::Writing, "output over high-water mark");
            return true;
        }
        if self.turn_requests >= MAX_REQUESTS_PER_TURN {
            self.yielded = true;
            return false;
        }

        let pending = &self.inbuf[self.in_start..self.in_end];
        match request::parse(pending, ctx.limits.max_head, ctx.limits.max_body) {
            Ok(Parsed::Partial) => {
                self.head_incomplete = true;
                self.head_started.get_or_insert(self.now);
                if has_output {
                    self.set_state(State::Writing, "partial head; sending queued output");
                } else {
                    self.wait_for_input("partial head", ctx.pool);
                }
            }
            Ok(Parsed::Complete(req, n)) => {
                let started = match self.held.take() {
                    // Its body has been read: now it is answered.
                    Some(held) => held.started,
                    None => {
                        log::trace!(
                            "token={} request {}",
                            self.token.0,
                            String::from_utf8_lossy(req.request_line())
                        );
                        let started = self.head_started.take().unwrap_or(self.now);
                        if req.body != BodyLength::None && !req.expects_continue {
                            // Hold the head and read the body first. The body has as long
                            // as a head to arrive, counted from its start: a body trickled
                            // a byte at a time must not hold the connection forever either.
                            self.held = Some(HeldHead { len: n, started });
                            self.discard = Discard::new(req.body);
                            self.progress_at = self.now;
                            return true;
                        }
                        // `Expect: 100-continue` is answered now; its body, if the client
                        // sends it anyway, is skipped after the answer.
                        self.discard = Discard::new(req.body);
                        self.progress_at = self.now;
                        started
                    }
                };
                if !self.out.has_capacity() {
                    self.out = ctx.pool.take_out();
                }
                let outcome = if self.metrics_only {
                    answer::answer_metrics(&req, &mut self.out, ctx)
                } else {
                    answer::answer(&req, &mut self.out, &mut self.file, ctx)
                };
                // Scrapes are not traffic: they are left out of the counters.
                if let Some(metrics) = ctx.metrics.as_deref_mut().filter(|_| !self.metrics_only) {
                    let took = Instant::now().saturating_duration_since(started);
                    metrics.request(req.method, outcome.status, outcome.body_bytes, took);
                }
                if ctx.access_log.enabled() {
                    answer::log_request(ctx, self.peer, &req, &outcome, started);
                }
                self.in_start += n;
                self.close_after_write |= outcome.close;
                self.turn_requests += 1;
                self.served_any = true;
            }
            Err(e) => self.fail(e, ctx),
        }
        true
    }

    /// Queues an error response for a request that could not be parsed, and closes after it.
    fn fail(&mut self, e: HttpError, ctx: &mut Context<'_>) {
        log::debug!(
            "token={} {} bad request: {e}",
            self.token.0,
            Peer(self.peer)
        );
        if ctx.access_log.enabled() {
            let pending = &self.inbuf[self.in_start..self.in_end];
            let line_end = pending
                .iter()
                .take(1024)
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(pending.len().min(1024));
            let (code, _) = e.status();
            let entry = Entry {
                peer: self.peer.map(|p| p.ip()),
                peer_is_unix: self.peer.is_none(),
                request_line: &pending[..line_end],
                status: code,
                body_bytes: 0,
                referer: None,
                user_agent: None,
                micros: 0,
            };
            ctx.access_log.log(&entry, ctx.wall);
        }
        let sent_before = self.out.len();
        self.queue_error(e, Version::Http11, false, ctx);
        if let Some(metrics) = ctx.metrics.as_deref_mut() {
            metrics.rejected(e, (self.out.len() - sent_before) as u64);
        }
        self.in_start = self.in_end;
        self.set_state(State::Writing, "error response queued");
    }

    fn queue_error(&mut self, e: HttpError, version: Version, head_only: bool, ctx: &Context<'_>) {
        answer::write_error(&mut self.out, e, version, head_only, false, ctx.date);
        self.close_after_write = true;
        self.head_started = None;
    }

    /// Goes to wait for more input, or sends queued output first if there is some.
    fn wait_for_input(&mut self, why: &'static str, pool: &mut BufferPool) {
        if !self.out.is_empty() || self.file.is_some() {
            self.set_state(State::Writing, "responses queued");
            return;
        }
        if self.in_start == self.in_end && self.discard.is_done() {
            self.become_idle(pool);
        }
        self.set_state(State::Reading, why);
    }

    /// Between requests: restart the idle clock and give the buffers back to the pool, so
    /// that thousands of idle keep-alive connections hold no buffer at all.
    fn become_idle(&mut self, pool: &mut BufferPool) {
        self.idle_since = self.now;
        self.head_started = None;
        self.recycle(pool);
    }

    /// Gives both buffers back to the pool, if they hold nothing still needed.
    pub fn recycle(&mut self, pool: &mut BufferPool) {
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
            pool.give_read(std::mem::take(&mut self.inbuf));
        }
        if self.out.is_empty() && self.file.is_none() {
            pool.give_out(std::mem::take(&mut self.out));
        }
    }

    // ----- Writing -----------------------------------------------------------------------

    /// Writing: send queued output until it is all sent or the socket would block.
    fn on_writing(&mut self, ctx: &mut Context<'_>) -> bool {
        let mut wrote = 0;
        loop {
            if !self.out.is_empty() {
                if self.turn_bytes >= MAX_BYTES_PER_TURN {
                    self.yielded = true;
                    return false;
                }
                // Heads and bodies, owned and shared, in one writev(2). On the stack: the
                // steady state allocates nothing.
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.out.slices(&mut slices);
                // A file follows: say so, and the kernel packs head and file together.
                let more = self.file.is_some();
                let result = retrying(|| self.socket.send_vectored(&slices[..count], more));
                match result {
                    Ok(0) => {
                        self.close("write returned 0");
                        return false;
                    }
                    Ok(n) => {
                        self.out.advance(n);
                        self.turn_bytes += n;
                        wrote += n;
                        self.progress_at = self.now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The socket's send buffer is full: the client reads slower than we
                        // write. Wait for a writable edge. While we wait we are not told about
                        // input, so look for it again afterwards.
                        log::trace!("token={} wrote {wrote} bytes (WouldBlock)", self.token.0);
                        self.read_more = true;
                        return false;
                    }
                    Err(e) => {
                        log::debug!(
                            "token={} {} write error: {e}",
                            self.token.0,
                            Peer(self.peer)
                        );
                        self.close("write error");
                        return false;
                    }
                }
                continue;
            }
            if self.turn_bytes >= MAX_BYTES_PER_TURN && self.file.is_some() {
                self.yielded = true;
                return false;
            }
            match self.send_file_body() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("token={} wrote {wrote} bytes (WouldBlock)", self.token.0);
                    self.read_more = true;
                    return false;
                }
                Err(e) if peer_gone(&e) => {
                    // The client closed mid-download: normal, and nothing to fix here.
                    log::debug!(
                        "token={} {} client went away during the file body: {e}",
                        self.token.0,
                        Peer(self.peer)
                    );
                    self.close("client went away");
                    return false;
                }
                Err(e) => {
                    // The file itself failed (it shrank, or the disk did): a server problem.
                    log::warn!("token={} file body failed: {e}; closing", self.token.0);
                    self.close("file body failed");
                    return false;
                }
            }
        }
        log::trace!("token={} wrote {wrote} bytes (all sent)", self.token.0);

        if self.close_after_write {
            // Graceful close: send FIN but keep reading for a moment. Closing with unread
            // input would make the kernel send RST, and an RST can destroy the response we
            // just wrote before the client reads it.
            let _ = self.socket.shutdown_write();
            self.progress_at = self.now;
            self.read_more = true;
            self.set_state(State::Closing, "response sent; closing gracefully");
            return true;
        }
        if ctx.shutting_down && self.in_start == self.in_end && self.discard.is_done() {
            self.close("server shutting down");
            return false;
        }
        if self.in_start != self.in_end && !self.head_incomplete {
            self.set_state(State::Parsing, "pipelined bytes waiting");
        } else {
            if self.in_start == self.in_end && self.discard.is_done() {
                self.become_idle(ctx.pool);
            }
            self.set_state(State::Reading, "keep-alive");
        }
        true
    }

    /// Sends the next part of a streamed file body: with sendfile(2), the file's pages go
    /// from the page cache to the socket without a copy through this process; where that is
    /// not possible, a chunk is read into the (empty) output buffer to be written. Returns
    /// whether there is more to send.
    fn send_file_body(&mut self) -> io::Result<bool> {
        let Some(body) = self.file.as_mut() else {
            return Ok(false);
        };
        if body.remaining == 0 {
            self.file = None;
            return Ok(false);
        }
        let shrank =
            || io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent");
        if body.sendfile {
            let count = body.remaining.min(SENDFILE_CHUNK as u64) as usize;
            match retrying(|| self.socket.send_file(&mut body.file, count)) {
                Ok(0) => return Err(shrank()),
                Ok(n) => {
                    body.remaining -= n as u64;
                    self.turn_bytes += n;
                    self.progress_at = self.now;
                    return Ok(true);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Unsupported
                        || e.raw_os_error() == Some(libc::EINVAL)
                        || e.raw_os_error() == Some(libc::ENOSYS) =>
                {
                    // This transport or this file cannot do it: copy instead, from now on.
                    body.sendfile = false;
                }
                Err(e) => return Err(e),
            }
        }
        let want = body.remaining.min(FILE_CHUNK as u64);
        let got = (&mut body.file).take(want).read_to_end(self.out.owned())?;
        if got == 0 {
            return Err(shrank());
        }
        body.remaining -= got as u64;
        Ok(true)
    }

    // ----- Closing -----------------------------------------------------------------------

    /// Closing (lingering): read and drop input until EOF, the byte limit, or the timeout.
    fn on_closing(&mut self) -> bool {
        if !self.read_more {
            return false;
        }
        let mut scratch = [0u8; 4096];
        loop {
            match retrying(|| self.socket.read(&mut scratch)) {
                Ok(0) => {
                    self.close("client closed after response");
                    return false;
                }
                Ok(n) => {
                    self.linger_read += n;
                    if self.linger_read >= LINGER_BYTES {
                        self.close("linger limit reached");
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_more = false;
                    return false;
                }
                Err(_) => {
                    self.close("read error while lingering");
                    return false;
                }
            }
        }
    }
}

/// A request head held at the front of the input while its body is read.
#[derive(Debug, Clone, Copy)]
struct HeldHead {
    /// The head's length in bytes.
    len: usize,
    /// When it started arriving (for the access log's request time).
    started: Instant,
}

/// Runs an I/O call, again whenever a signal interrupts it.
fn retrying<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn count_timeout(ctx: &mut Context<'_>, kind: TimeoutKind) {
    if let Some(metrics) = ctx.metrics.as_deref_mut() {
        metrics.timeout(kind);
    }
}

/// A peer address for log lines: `127.0.0.1:5000`, or `-` when there is none.
struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("unix:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::Write;

    use crate::answer::INLINE_FILE_MAX;
    use crate::context::Clock;
    use crate::files::cache::FileCache;
    use crate::files::static_files::Options;
    use crate::files::static_files::StaticFiles;
    use crate::http::response::DateCache;
    use crate::ops::access_log::AccessLog;
    use std::time::SystemTime;

    /// An in-memory socket. `room` is how many more bytes its peer will take: 0 for a
    /// client that never reads.
    struct Mem {
        input: VecDeque<u8>,
        output: Vec<u8>,
        room: usize,
    }

    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            for (slot, byte) in buf.iter_mut().zip(self.input.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.output.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Mem {
        fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Eight pipelined GETs for `target` from a client that does not read: the queue must
    /// stay within one response of the high-water mark, the rest wait unparsed, and once
    /// the client reads, all eight arrive whole. The root holds `file.bin` (`file_len`
    /// bytes) and `dir/` (for `/dir/`, 2,000 names: a listing of over 100 KB).
    fn pipeline_without_reading(target: &str, file_len: usize, cache_budget: usize) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("file.bin"), vec![b'x'; file_len]).expect("write");
        std::fs::create_dir(dir.path().join("dir")).expect("mkdir");
        for i in 0..if target == "/dir/" { 2000 } else { 0 } {
            let name = format!("dir/an-entry-with-a-longish-name-{i:04}.txt");
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let options = Options {
            list_directories: true,
            ..Options::default()
        };
        let files = StaticFiles::with_options(dir.path(), options).expect("root");
        let limits = Limits {
            max_head: 8192,
            max_body: 1 << 20,
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        };
        let date = DateCache::new();
        let mut log = AccessLog::with_writer(None);
        let mut cache = FileCache::new(cache_budget);
        let mut pool = BufferPool::new();
        let now = Instant::now();
        let clock = Clock {
            now,
            wall: SystemTime::now(),
        };
        let mut ctx = Context::new(
            &limits, &files, &date, &mut log, &mut cache, &mut pool, clock,
        );
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
        let mem = Mem {
            input: request.repeat(8).into_bytes().into(),
            output: Vec::new(),
            room: 0,
        };
        let mut conn = Connection::new(mem, Token(0), None, now);
        let all = Readiness {
            readable: true,
            writable: true,
            read_closed: false,
        };
        conn.ready(all, &mut ctx);
        let queued = conn.out.len();
        assert!(
            conn.in_start < conn.in_end,
            "{target}: all eight were answered"
        );
        assert_eq!(conn.state(), State::Writing);

        conn.socket_mut().room = usize::MAX;
        for _ in 0..100 {
            conn.ready(all, &mut ctx);
            while conn.wants_resume() {
                conn.resume(&mut ctx);
            }
        }
        let out = &conn.socket().output;
        let text = String::from_utf8_lossy(out);
        assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 8, "{target}");
        // Every response is the same: one head and one body.
        let head_len = text.find("\r\n\r\n").expect("a head") + 4;
        let body_len: usize = text
            .split("Content-Length: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("Content-Length");
        let one = head_len + body_len;
        assert!(body_len >= HIGH_WATER, "{target}: a test of nothing");
        assert_eq!(out.len(), 8 * one, "{target}: bodies cut short");
        assert!(
            queued <= HIGH_WATER + one,
            "{target}: {queued} bytes queued for a client that does not read"
        );
    }

    #[test]
    fn shared_cached_bodies_count_toward_the_high_water_mark() {
        pipeline_without_reading("/file.bin", 200_000, 1 << 20);
    }

    #[test]
    fn small_files_read_from_disk_count_toward_the_high_water_mark() {
        // No cache: the file is read into the queue beside its head.
        pipeline_without_reading("/file.bin", INLINE_FILE_MAX as usize, 0);
    }

    #[test]
    fn listings_count_toward_the_high_water_mark() {
        pipeline_without_reading("/dir/", 10, 1 << 20);
    }
}
