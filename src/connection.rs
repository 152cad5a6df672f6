//! One client connection as an explicit state machine.
//!
//! ```text
//!  accept ─▶ Reading ──bytes in──▶ Parsing ──response queued──▶ Writing ──all sent──▶ Reading
//!               ▲  Partial: read more ─┘  │ (pipelined leftovers: Parsing again)    │
//!               └─────────────── keep-alive ◀─────────────────────────────────────┘
//!  Writing ── Connection: close / error response sent ──▶ Closing ── EOF / linger over ──▶ Closed
//!  any state ── EOF / I/O error / timeout ──▶ Closed ──▶ slot freed at the end of the turn
//! ```
//!
//! With `--proxy-protocol`, a connection starts one step earlier, in ProxyHeader: it reads
//! the header a TCP proxy sends before the client's first byte ([`crate::ops::proxy_protocol`]),
//! takes the client's address from it, and only then goes on to Reading (or straight to
//! Parsing, when the client's request came in the same read). A missing, malformed or
//! late header closes the connection: nothing of the client's is read before it.
//!
//! ```text
//!  accept ─▶ ProxyHeader ──header complete──▶ Reading / Parsing ─▶ …as above
//!               └── not a PROXY header / header timeout / EOF ──▶ Closed
//! ```
//!
//! The connection never blocks and never waits by itself. The event loop
//! ([`crate::server`]) calls [`Connection::ready`] when mio reports readiness; the connection
//! then runs its state machine as far as it can without blocking, and stops when the socket
//! says "would block" (or when it has used up its fair share of this turn). The loop then
//! reads four things off it: [`Connection::interest`] (what to wait for, derived from the
//! state), [`Connection::deadline`] (when to give up waiting), [`Connection::wants_resume`]
//! (it yielded with work left) and [`Connection::is_done`].
//!
//! The state changes in one place, `Connection::set_state`, which only changes it and
//! traces `A=>B (why)` (`--trace` shows them). Everything else is read off the state: the
//! interest, and, through one `waiting_for()`, both the deadline and what a timeout means.
//! One `after_output()` decides what follows a response that has gone out. Each state's
//! handler returns a `Step`: go on, wait for the socket, or yield to the other connections.
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
//! A handler may answer later, from another thread, or stream a body ([`crate::deferred`]).
//! Meanwhile the connection is in Writing with nothing to write, and the trace says that it
//! waits for the handler. It watches for input then, not for room, only to notice a client
//! that goes away (read-closed); requests pipelined behind wait unread, in order. The
//! deadline is the write timeout, and passing it answers 503. Notes from the handler's
//! thread arrive through [`Connection::on_note`].
//!
//! The connection is generic over its [`Transport`], so the same state machine runs on a
//! real socket ([`crate::listener::Stream`]) and on an in-memory one
//! (`listener::testing::MemSocket`) in the unit tests below, the fuzz target and the
//! benchmark.

use std::fmt;
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use crate::answer::{self, Call, FileBody};
use crate::buffers::{BufferPool, InBuf, MAX_SLICES, OutBuf};
use crate::context::{Context, Limits};
use crate::deferred::{Feed, Note, Pending};
use crate::http::body::Discard;
use crate::http::error::HttpError;
use crate::http::request::{self, BodyLength, Parsed, Version};
use crate::listener::{self, Transport};
use crate::ops::access_log::{Entry, Unsent};
use crate::ops::metrics::TimeoutKind;
use crate::reply::Reply;

/// Stop parsing pipelined requests while this much output is waiting (backpressure): a
/// client that sends requests but does not read answers must not make us buffer without end.
const HIGH_WATER: usize = 64 * 1024;
/// Bytes read from a large file per refill of the output buffer.
const FILE_CHUNK: usize = 64 * 1024;
/// Fairness: most requests answered per connection per turn of the loop...
const MAX_REQUESTS_PER_TURN: u32 = 32;
/// ...and most bytes read or written. Past either, the connection yields to the others.
/// Why 1 MiB, not lighttpd's 256 KiB per pass: with 8 clients of a 10 MiB file, 256 KiB
/// here and in [`SENDFILE_CHUNK`] gave 1.01× the MiB/s (alternating rounds, 2026-11-25): what
/// paces a large file is the socket's unsent bound (`listener::NOTSENT_LOWAT`), not this.
const MAX_BYTES_PER_TURN: usize = 1024 * 1024;
/// After an error response, how long and how much we keep reading before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;
/// From the start of the shutdown, how long a connection that has sent nothing yet still
/// waits for its first byte (not the whole header timeout): a request that was on its way
/// when the shutdown began arrives within a round trip. nginx closes such connections at
/// once; 10 s of header timeout held every shutdown that long.
const SHUTDOWN_FIRST_BYTE_GRACE: Duration = Duration::from_secs(1);
/// Most bytes handed to one sendfile(2) call. A call stops short anyway once the socket
/// holds its unsent bound, so this only caps one call's work; 256 KiB measured no better,
/// 4 MiB worse (README, Benchmarking).
const SENDFILE_CHUNK: usize = 1024 * 1024;
/// The least a client must take of our output per write timeout (`--write-timeout`), or
/// everything we had for it: 35 KB/s at the default 30 s. A slower client holds a slot and
/// up to 4 MiB of kernel memory ([`listener::NOTSENT_LOWAT_SLOW_READER`]) for little, and
/// a few thousand of them hold every slot. nginx's `send_timeout` sets a like floor without
/// naming it: it waits for a writable edge, which a full 4 MiB send buffer gives once about
/// a third of it has been taken. Before this floor, a client taking a single window update
/// per timeout (an outside attack read 128 KiB per 4.5 s against a 5 s timeout) was kept
/// for as long as it liked; nginx and lighttpd closed it at the timeout.
const MIN_TAKEN_PER_WRITE_TIMEOUT: u64 = 1024 * 1024;

/// The write timeout's clock: when it last started, and how much had been sent then. It
/// starts when a response starts going out and again whenever the client has taken
/// [`MIN_TAKEN_PER_WRITE_TIMEOUT`] since, or all there was to send.
#[derive(Debug, Clone, Copy)]
struct WriteClock {
    since: Instant,
    sent: u64,
}

impl WriteClock {
    fn start(now: Instant, sent: u64) -> Self {
        WriteClock { since: now, sent }
    }

    /// Output went out; `sent` is the connection's running total.
    fn took(&mut self, sent: u64, now: Instant) {
        if sent - self.sent >= MIN_TAKEN_PER_WRITE_TIMEOUT {
            *self = WriteClock::start(now, sent);
        }
    }
}

/// When a body's client counts as slower than us, so that the socket's unsent bound is
/// raised (see `listener::NOTSENT_LOWAT_SLOW_READER`) until a body shows it keeps up
/// ([`slower_than_us`]): at least this many short sendfile(2) calls in one body...
const SHORT_SENDS_FOR_SLOW_READER: u32 = 4;
/// ...at least one per this many bytes of it. Under the usual bound, an nginx front reading
/// its upstream through 8 KiB buffers stops our sends short once per 160 KiB; wrk on
/// loopback, which keeps up, 0 to 6 times per 10 MiB body (2026-12-06: of 1,252 bodies,
/// 477 had 3 or more). A count alone (3, before) took wrk for slow often enough to cost
/// a fifth of its MiB/s: the larger bound moves the transmitting onto its CPU.
const SLOW_READER_SPACING: u64 = 512 * 1024;

/// Whether the short sends of `body` so far say its client is slower than us (see
/// [`SHORT_SENDS_FOR_SLOW_READER`]).
fn falls_behind(body: &FileBody) -> bool {
    let sent = body.length - body.remaining;
    body.short_sends >= SHORT_SENDS_FOR_SLOW_READER
        && sent <= u64::from(body.short_sends) * SLOW_READER_SPACING
}

/// Whether the client of a body sent under the larger unsent bound was slower than us: its
/// window, not our sending, stopped our sends short at least once per such bound's worth
/// of the body (each refill of the bound). Measured with 10 MiB bodies: an nginx front, 3-4
/// short sends per body (it stays slower from one response to the next); wrk on loopback,
/// 1-2 in six bodies of seven.
fn slower_than_us(body: &FileBody) -> bool {
    let bound = u64::from(listener::NOTSENT_LOWAT_SLOW_READER);
    u64::from(body.short_sends) * bound >= body.length
}

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

/// Where a connection is (see the diagram in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// With `--proxy-protocol`: reading the PROXY header that comes before the client's
    /// bytes. Nothing else is read or answered until it is complete.
    ProxyHeader,
    /// Waiting for bytes from the client: the start of a request, more of one, or a body.
    Reading,
    /// Bytes are buffered: turning them into requests and queueing responses.
    Parsing,
    /// Sending queued output.
    Writing,
    /// On the way out after a closing response: our side is shut down, and we read what
    /// the client still sends for a moment, so that the close does not turn into a reset.
    Closing,
    /// Finished: the loop deregisters the socket and frees the slot at the end of the turn.
    Closed,
}

impl State {
    /// The state's name, as `--trace` and the live view show it.
    pub fn name(self) -> &'static str {
        match self {
            State::ProxyHeader => "ProxyHeader",
            State::Reading => "Reading",
            State::Parsing => "Parsing",
            State::Writing => "Writing",
            State::Closing => "Closing",
            State::Closed => "Closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one step of the state machine says about the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Go on: run the (possibly new) state's handler again.
    Continue,
    /// Nothing more to do until the socket (or a deadline) says so.
    Wait,
    /// This turn's fair share is used up while work remains: run again after the others.
    Yield,
}

/// What one read into the input buffer gave (see `Connection::read_input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filled {
    /// New bytes are in the buffer.
    Bytes,
    /// The buffer is at the head limit and cannot take more.
    Full,
    /// Nothing was read: wait, yield, or (after EOF or an error) the connection is closed.
    Nothing(Step),
}

/// What a connection is waiting for, and since when: the one source of both its deadline
/// ([`Connection::deadline`]) and what happens when that passes ([`Connection::timed_out`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The PROXY header, on a connection accepted then.
    ProxyHeader(Instant),
    /// The rest of a request head that started arriving then. Not reset by later bytes: a
    /// client trickling one byte a second is still cut off (slowloris).
    Head(Instant),
    /// The rest of a request body, with no progress since then.
    Body(Instant),
    /// The next request on a kept-alive connection, idle since then.
    NextRequest(Instant),
    /// The first request on a new connection, open since then.
    FirstRequest(Instant),
    /// Room in the socket for our output, with no progress since then.
    Room(Instant),
    /// The client's EOF while lingering, since then.
    Linger(Instant),
    /// A handler's deferred reply, since then.
    Handler(Instant),
    /// The next piece of a handler's streamed body: no deadline, the sender decides when
    /// the body ends (a client that stops reading is still cut off by the write timeout).
    Stream,
    /// Nothing: the connection is closed.
    Nothing,
}

/// What the event said about the socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    /// Bytes (or EOF, or an error) can be read.
    pub readable: bool,
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
    /// The client's address; `None` on a Unix socket.
    peer: Option<SocketAddr>,
    /// Where the connection is in the protocol. Changed only by [`Connection::set_state`].
    state: State,
    /// Received bytes not consumed yet.
    input: InBuf,
    /// The pending input is an incomplete head: no use parsing it again before more bytes
    /// arrive.
    head_incomplete: bool,
    /// The body of the current request, still being walked: skipped, or kept in `intake`.
    discard: Discard,
    /// A complete head whose body is still arriving. It is answered only once the body has
    /// all been read, so that a body that breaks the framing is answered with 400 instead of
    /// a response already on its way; meanwhile its bytes stay at the front of the input,
    /// and the body's bytes are removed from behind them as they are skipped.
    held: Option<HeldHead>,
    /// Output still to be sent; `file` follows it.
    out: OutBuf,
    file: Option<FileBody>,
    /// Bytes sent to the client since the accept: how far the output has got, which says
    /// which responses are all out.
    sent: u64,
    /// Access-log lines of responses not all sent yet.
    unsent: Unsent,
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
    /// Since when a request body has been awaited, or the connection has lingered.
    progress_at: Instant,
    /// For `--write-timeout` (see [`WriteClock`]).
    write_clock: WriteClock,
    /// At least one request was answered.
    served_any: bool,
    /// The shutdown has begun and no request byte has come yet (nothing, or only a PROXY
    /// header): it waits only [`SHUTDOWN_FIRST_BYTE_GRACE`] more, from `idle_since`.
    hurried: bool,
    /// The PROXY header named no client (UNKNOWN, LOCAL, UNSPEC, a Unix client): the peer
    /// is still the proxy itself, which is trusted, so a real-ip header would be believed,
    /// and the client could write it. For this connection no such header is believed.
    forwarded_untrusted: bool,
    /// Requests answered, and bytes read from the client (for the live view).
    requests: u64,
    received: u64,
    /// This turn's work, for fairness.
    turn_requests: u32,
    turn_bytes: usize,
    /// The socket holds `listener::NOTSENT_LOWAT_SLOW_READER`, not the usual bound: raised
    /// after short sends in one body, lowered after a body the client kept up with.
    slow_reader: bool,
    /// How the last run ended: `Yield` asks the loop to run it again this turn.
    stopped: Step,
    /// Bytes read while lingering.
    linger_read: usize,
    /// The loop's clock for the current turn.
    now: Instant,
    /// This connection came in on the metrics listener: it is answered from the counters.
    metrics_only: bool,
    /// The body of the current request, being read for the handler, which took it. Boxed,
    /// like `pending`: few connections ever have one, and every slot pays for what is inline.
    intake: Option<Box<Intake>>,
    /// What a handler will still say: a deferred reply, or the rest of a streamed body.
    pending: Pending,
    /// Every state it entered, for the unit tests' transition checks.
    #[cfg(test)]
    trail: Vec<State>,
}

impl<S: Transport> Connection<S> {
    /// A new connection, just accepted at `now`, waiting for its first request.
    pub fn new(socket: S, token: Token, peer: Option<SocketAddr>, now: Instant) -> Self {
        Connection {
            socket,
            token,
            peer,
            state: State::Reading,
            input: InBuf::new(),
            head_incomplete: false,
            discard: Discard::Done,
            held: None,
            out: OutBuf::new(),
            file: None,
            sent: 0,
            unsent: Unsent::default(),
            close_after_write: false,
            // Registration is edge-triggered, and epoll reports bytes that arrived before
            // registration as a first edge, so there is no need to try a read now.
            read_more: false,
            peer_closed: false,
            head_started: None,
            idle_since: now,
            progress_at: now,
            write_clock: WriteClock::start(now, 0),
            served_any: false,
            hurried: false,
            forwarded_untrusted: false,
            requests: 0,
            received: 0,
            turn_requests: 0,
            turn_bytes: 0,
            slow_reader: false,
            stopped: Step::Wait,
            linger_read: 0,
            now,
            metrics_only: false,
            intake: None,
            pending: Pending::default(),
            #[cfg(test)]
            trail: Vec::new(),
        }
    }

    /// Makes this a connection that must begin with a PROXY header (`--proxy-protocol`): it
    /// starts in [`State::ProxyHeader`] instead of Reading. Part of construction, before the
    /// first event.
    pub fn expect_proxy_header(&mut self) {
        self.state = State::ProxyHeader;
    }

    /// This connection as a row of the live view (`/loop`): `key` is its slot, `interest`
    /// what the loop registered for it.
    pub fn row(
        &self,
        key: usize,
        interest: &'static str,
        limits: &Limits,
        now: Instant,
    ) -> crate::ops::live::Row {
        crate::ops::live::Row {
            token: key,
            state: self.state.name(),
            interest,
            peer: self.peer,
            bytes_in: self.received,
            bytes_out: self.sent,
            requests: self.requests,
            deadline_in: self
                .deadline(limits)
                .map(|d| d.saturating_duration_since(now)),
            watcher: self.metrics_only && self.pending.is_waiting(),
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

    /// Whether the connection is finished and its slot can be freed.
    pub fn is_done(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the connection stopped because its fair share ran out while it still had
    /// work. The loop runs it again, after the others, before it next sleeps in `poll`.
    pub fn wants_resume(&self) -> bool {
        self.stopped == Step::Yield && self.state != State::Closed
    }

    /// Whether the connection is between requests with nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.state == State::Reading && self.input.is_empty() && self.discard.is_done()
    }

    /// What to ask mio to watch, derived from the state alone. Waiting for output room only
    /// while there is output, and for input otherwise, is backpressure in its simplest form:
    /// a client that does not read our answers is not read from either.
    pub fn interest(&self) -> Interest {
        match self.state {
            // Waiting for a handler's thread: reading only to notice the client leave.
            State::Writing if self.waits_for_handler() => Interest::READABLE,
            State::Writing => Interest::WRITABLE,
            State::ProxyHeader
            | State::Reading
            | State::Parsing
            | State::Closing
            | State::Closed => Interest::READABLE,
        }
    }

    /// What the connection waits for now, and since when (see [`Waiting`]).
    fn waiting_for(&self) -> Waiting {
        match self.state {
            // From the accept: a proxy sends its header at once.
            State::ProxyHeader => Waiting::ProxyHeader(self.idle_since),
            State::Writing if self.waits_for_handler() => match self.pending.deferred() {
                Some(deferred) => Waiting::Handler(deferred.since),
                None => Waiting::Stream,
            },
            State::Writing => Waiting::Room(self.write_clock.since),
            State::Closing => Waiting::Linger(self.progress_at),
            State::Closed => Waiting::Nothing,
            State::Reading | State::Parsing => {
                if let Some(started) = self.head_started {
                    Waiting::Head(started)
                } else if !self.discard.is_done() {
                    // From the start of the body (see `on_parsing`).
                    Waiting::Body(self.progress_at)
                } else if self.served_any {
                    Waiting::NextRequest(self.idle_since)
                } else {
                    Waiting::FirstRequest(self.idle_since)
                }
            }
        }
    }

    /// When this connection must next be looked at if nothing happens: the deadline of
    /// whatever it is waiting for.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        Some(match self.waiting_for() {
            Waiting::ProxyHeader(since) | Waiting::FirstRequest(since) if self.hurried => {
                since + SHUTDOWN_FIRST_BYTE_GRACE
            }
            Waiting::ProxyHeader(since) | Waiting::Head(since) | Waiting::Body(since) => {
                since + limits.header_timeout
            }
            Waiting::NextRequest(since) => since + limits.keep_alive_timeout,
            // A connection that never sends a byte gets the header timeout.
            Waiting::FirstRequest(since) => since + limits.header_timeout,
            Waiting::Room(since) => since + limits.write_timeout,
            Waiting::Linger(since) => since + LINGER_TIME,
            Waiting::Handler(since) => since + limits.write_timeout,
            Waiting::Stream | Waiting::Nothing => return None,
        })
    }

    /// Called when [`Connection::deadline`] has passed: gives up on what it waited for.
    pub fn timed_out(&mut self, ctx: &mut Context<'_>) {
        self.now = ctx.now;
        match self.waiting_for() {
            Waiting::ProxyHeader(_) | Waiting::FirstRequest(_) if self.hurried => {
                self.close("server shutting down: no request came");
            }
            Waiting::ProxyHeader(_) => {
                // No HTTP has been spoken: a 408 would be read as the client's by the proxy.
                log::debug!("token={} PROXY header timeout", self.token.0);
                count_timeout(ctx, TimeoutKind::Header);
                self.close("PROXY header timeout");
            }
            Waiting::Head(_) => {
                log::debug!("token={} header timeout", self.token.0);
                count_timeout(ctx, TimeoutKind::Header);
                self.reject(HttpError::Timeout, ctx);
                self.start_writing("header timeout");
                self.run(ctx);
            }
            Waiting::Body(_) => {
                count_timeout(ctx, TimeoutKind::Body);
                if let Some(held) = self.held.take() {
                    // Its request is still unanswered: say why it never will be.
                    log::debug!("token={} body timeout", self.token.0);
                    self.discard = Discard::Done;
                    self.reject_since(HttpError::Timeout, held.started, ctx);
                    self.input.clear();
                    self.start_writing("body timeout");
                    self.run(ctx);
                } else {
                    self.close("body timeout");
                }
            }
            Waiting::NextRequest(_) => {
                count_timeout(ctx, TimeoutKind::KeepAlive);
                self.close("idle timeout");
            }
            Waiting::FirstRequest(_) => {
                // Before its first request, a silent connection is under the header timeout.
                count_timeout(ctx, TimeoutKind::Header);
                self.close("idle timeout");
            }
            Waiting::Room(_) => {
                // The client has not taken MIN_TAKEN_PER_WRITE_TIMEOUT in a whole write
                // timeout, as far as our sends know. A client that reads, but slower than
                // half the socket's unsent bound per timeout, makes no writable edge (4 MiB
                // bound, 100 KB/s: one per 20 s), so what it took since our last send is
                // not known yet: try once, and the socket takes what it made room for.
                let since = self.write_clock.since;
                self.run(ctx);
                if self.write_clock.since != since || self.state != State::Writing {
                    return; // enough taken (the clock restarted), or all of it
                }
                count_timeout(ctx, TimeoutKind::Write);
                log::debug!(
                    "token={} write timeout: the client took {} bytes in {:?}",
                    self.token.0,
                    self.sent - self.write_clock.sent,
                    self.now - since
                );
                self.close("write timeout");
            }
            Waiting::Linger(_) => {
                self.close("linger done");
            }
            Waiting::Handler(_) => {
                log::warn!(
                    "token={} the handler did not answer within the write timeout; 503",
                    self.token.0
                );
                if let Some(deferred) = self.pending.give_up() {
                    let reply = Reply::text(503, "the handler did not answer in time\n");
                    self.finish_later(reply, deferred, ctx);
                }
                self.run(ctx);
            }
            Waiting::Stream | Waiting::Nothing => {}
        }
    }

    /// Handles a readiness event, then runs as far as possible without blocking.
    pub fn ready(&mut self, readiness: Readiness, ctx: &mut Context<'_>) {
        if readiness.readable {
            self.read_more = true;
        }
        if readiness.read_closed {
            self.peer_closed = true;
        }
        self.run(ctx);
    }

    /// Whether, and how readily, a full metrics listener may close this connection to make
    /// room for a new one (`server::make_room_for_metrics`): lower ranks first, and within
    /// a rank the one that has held its place longest. Rank 0: it waits for nothing of ours
    /// (idle between requests, or silent since its connect). Rank 1: a request is coming
    /// in, and slower than any scraper sends one (a slowloris holds a slot this way until
    /// its header timeout, then reconnects). `None`: the server is working for it (an
    /// answer being written, a live stream, a graceful close), and it is never closed for
    /// room.
    pub fn room_rank(&self) -> Option<(u8, Instant)> {
        match self.waiting_for() {
            Waiting::NextRequest(since)
            | Waiting::FirstRequest(since)
            | Waiting::ProxyHeader(since) => Some((0, since)),
            Waiting::Head(since) | Waiting::Body(since) => Some((1, since)),
            Waiting::Room(_)
            | Waiting::Linger(_)
            | Waiting::Handler(_)
            | Waiting::Stream
            | Waiting::Nothing => None,
        }
    }

    /// Closes the connection to make room for a new one (see [`Connection::room_rank`]).
    pub fn close_for_room(&mut self) {
        self.close("metrics listener full: room for a new connection");
    }

    /// No byte of a request has come yet: nothing at all, or only a PROXY header.
    fn sent_no_request_byte(&self) -> bool {
        !self.served_any
            && (self.is_idle() || (self.state == State::ProxyHeader && self.received == 0))
    }

    /// Continues after yielding (see [`Connection::wants_resume`]).
    pub fn resume(&mut self, ctx: &mut Context<'_>) {
        self.run(ctx);
    }

    /// Closes an idle keep-alive connection during shutdown. Returns whether it did.
    ///
    /// An idle keep-alive connection may have a request on its way, or already in the
    /// socket with its edge not yet handled: so it reads once first, and a request that is
    /// there is answered (with `Connection: close`), as nginx does. Only a connection that
    /// still has nothing is closed.
    ///
    /// A connection that has sent nothing yet is not closed at once: the client connected
    /// before the listener closed and its request may be on its way (or the kernel's accept
    /// queue held it until now), and closing it would fail a request the server had
    /// accepted. It reads once too; if nothing is there, it waits a second more
    /// (`SHUTDOWN_FIRST_BYTE_GRACE`) instead of its whole header timeout, then closes.
    pub fn close_if_idle(&mut self, ctx: &mut Context<'_>) -> bool {
        if !(self.is_idle() && self.served_any || self.sent_no_request_byte()) {
            return false;
        }
        if self.metrics_only && self.served_any {
            self.close("server shutting down");
            return true;
        }
        self.read_more = true;
        self.run(ctx);
        if self.sent_no_request_byte() {
            // Still nothing: a short grace, from now, rather than the header timeout.
            if self.now + SHUTDOWN_FIRST_BYTE_GRACE < self.idle_since + ctx.limits.header_timeout {
                self.idle_since = self.now;
                self.hurried = true;
            }
            false
        } else if self.is_idle() {
            self.close("server shutting down");
            true
        } else {
            self.state == State::Closed
        }
    }

    /// Runs the state machine until it has to wait for the socket, its turn is used up,
    /// or the connection is closed.
    fn run(&mut self, ctx: &mut Context<'_>) {
        let trusted = ctx.trusted;
        if self.forwarded_untrusted {
            ctx.trusted = &[];
        }
        self.run_steps(ctx);
        ctx.trusted = trusted;
    }

    /// The loop of [`Connection::run`].
    fn run_steps(&mut self, ctx: &mut Context<'_>) {
        self.now = ctx.now;
        self.turn_requests = 0;
        self.turn_bytes = 0;
        self.stopped = loop {
            let step = match self.state {
                State::ProxyHeader => self.on_proxy_header(ctx),
                State::Reading => self.on_reading(ctx),
                State::Parsing => self.on_parsing(ctx),
                State::Writing => self.on_writing(ctx),
                State::Closing => self.on_closing(),
                State::Closed => Step::Wait,
            };
            if step != Step::Continue {
                break step;
            }
        };
        if self.state == State::Closed {
            self.release_buffers(ctx.pool);
        }
    }

    /// A closed connection's buffers go back to the pool at once, not when its slot is
    /// freed at the end of the turn. When a client drops many connections at once (wrk at
    /// the end of a run, 256 of them with requests in flight), each one that closed before
    /// the turn ended held its buffers, so each next one took fresh ones: under `wrk
    /// -c256` that was the peak of the server's heap (valgrind massif: 600 KiB more).
    fn release_buffers(&mut self, pool: &mut BufferPool) {
        self.input.clear();
        self.file = None;
        self.out.clear();
        self.recycle(pool);
    }

    /// The one place the state changes. It only changes it, and traces `A=>B (why)`.
    fn set_state(&mut self, next: State, why: &'static str) {
        log::trace!(
            "token={} {} {}=>{} ({why})",
            self.token.0,
            Peer(self.peer),
            self.state,
            next
        );
        #[cfg(test)]
        self.trail.push(next);
        self.state = next;
    }

    /// Goes to Writing. The write timeout counts from here (see [`WriteClock`]).
    fn start_writing(&mut self, why: &'static str) {
        if self.state != State::Writing {
            self.write_clock = WriteClock::start(self.now, self.sent);
        }
        self.set_state(State::Writing, why);
    }

    /// Goes to Reading; with nothing pending, that is idle between requests.
    fn start_reading(&mut self, why: &'static str, pool: &mut BufferPool) {
        if self.input.is_empty() && self.discard.is_done() {
            self.become_idle(pool);
        }
        self.set_state(State::Reading, why);
    }

    /// Ends the connection now. The loop frees the slot at the end of this turn.
    fn close(&mut self, why: &'static str) -> Step {
        if self.state != State::Closed {
            self.set_state(State::Closed, why);
        }
        Step::Wait
    }

    // ----- ProxyHeader ------------------------------------------------------------------

    /// ProxyHeader: read until the PROXY header is complete, then take the client's address
    /// from it. The bytes after it are the client's, and are parsed as usual.
    fn on_proxy_header(&mut self, ctx: &mut Context<'_>) -> Step {
        use crate::ops::proxy_protocol::{self, Parsed, Source};
        match proxy_protocol::parse(self.input.pending(), ctx.limits.max_head) {
            Ok(Parsed::Complete { source, len }) => {
                self.input.consume(len);
                // The named client is the peer from now on, for the log and for whether its
                // X-Forwarded-For is believed (only if it is itself a trusted proxy).
                match source {
                    Source::Addr(addr) => self.peer = Some(addr),
                    Source::Unix => self.peer = None,
                    Source::Connection => {}
                }
                if !matches!(source, Source::Addr(_)) {
                    self.forwarded_untrusted = true;
                    ctx.trusted = &[]; // for the rest of this run too (see `run`)
                }
                log::trace!(
                    "token={} PROXY header: client {}",
                    self.token.0,
                    Peer(self.peer)
                );
                if self.input.is_empty() {
                    self.start_reading("PROXY header read", ctx.pool);
                } else {
                    self.set_state(State::Parsing, "PROXY header read; request bytes follow");
                }
                Step::Continue
            }
            Ok(Parsed::Partial) => match self.read_input(ctx) {
                Filled::Bytes => Step::Continue,
                Filled::Full => self.close("PROXY header too long"),
                Filled::Nothing(step) => step,
            },
            Err(e) => {
                log::debug!("token={} {} refused: {e}", self.token.0, Peer(self.peer));
                if let Some(metrics) = ctx.metrics.as_deref_mut() {
                    metrics.proxy_refused(false);
                }
                self.close("bad PROXY header")
            }
        }
    }

    // ----- Reading -----------------------------------------------------------------------

    /// Reading: pull bytes from the socket into the read buffer.
    fn on_reading(&mut self, ctx: &mut Context<'_>) -> Step {
        match self.read_input(ctx) {
            Filled::Bytes => {
                self.head_incomplete = false;
                self.set_state(State::Parsing, "bytes in");
                Step::Continue
            }
            Filled::Full => {
                // Cannot happen for a well-formed state: the parser rejects a head over the
                // limit before the buffer is full. Treat it as the limit it protects.
                self.fail(HttpError::HeadersTooLarge, ctx);
                Step::Continue
            }
            Filled::Nothing(step) => step,
        }
    }

    /// One read from the socket into the read buffer, for Reading and ProxyHeader.
    fn read_input(&mut self, ctx: &mut Context<'_>) -> Filled {
        if !self.read_more {
            return Filled::Nothing(Step::Wait); // until the next readable edge
        }
        if self.turn_bytes >= MAX_BYTES_PER_TURN {
            return Filled::Nothing(Step::Yield);
        }
        // One byte over the head limit must fit, or the parser could never see that a head
        // is too large.
        if !self.input.make_room(ctx.limits.max_head + 1, ctx.pool) {
            return Filled::Full;
        }
        let spare = self.input.spare();
        let room = spare.len();
        match retrying(|| self.socket.read(spare)) {
            Ok(0) => {
                // EOF. Nothing complete is left unanswered (we parse before reading again),
                // so there is nothing more to do for this client.
                if !self.input.is_empty() || !self.discard.is_done() {
                    log::debug!("token={} client closed mid-request", self.token.0);
                }
                Filled::Nothing(self.close("client closed"))
            }
            Ok(n) => {
                // A short read means the kernel's queue is now empty, and the next byte to
                // arrive will raise a new edge: skip the read that would only say WouldBlock.
                // Unless the client has sent its FIN: then that read says EOF, and no edge
                // is coming to tell us, so it must be made (or the socket would sit in
                // CLOSE-WAIT until the keep-alive timeout).
                if n < room && !self.peer_closed {
                    self.read_more = false;
                }
                log::trace!("token={} read {n} bytes", self.token.0);
                self.input.filled(n);
                self.received += n as u64;
                self.turn_bytes += n;
                Filled::Bytes
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.read_more = false;
                // Nothing came: a connection with nothing pending holds no buffer while it
                // waits. This look for input follows every wait for a writable edge, so
                // before, each connection that once filled its socket kept a read buffer
                // while idle: 4 KiB each, and under wrk -c256 the run's peak heap (1 MiB
                // of read buffers, now 0.5 MiB, valgrind massif).
                self.input.recycle(ctx.pool);
                Filled::Nothing(Step::Wait)
            }
            Err(e) => {
                log::debug!("token={} {} read error: {e}", self.token.0, Peer(self.peer));
                Filled::Nothing(self.close("read error"))
            }
        }
    }

    // ----- Parsing -----------------------------------------------------------------------

    /// Parsing: turn buffered bytes into requests and queue their responses.
    fn on_parsing(&mut self, ctx: &mut Context<'_>) -> Step {
        // A request's body comes before anything after it: skip it, byte-exact. It starts
        // behind the held head, if there is one.
        if !self.discard.is_done() {
            let skip = self.held.map_or(0, |h| h.len);
            let body = &self.input.pending()[skip..];
            let walked = match self.intake.as_mut() {
                // Kept for the handler, within its limit.
                Some(intake) => {
                    let limit = intake.limit;
                    (self.discard).advance_into(body, limit, ctx.limits.max_head, &mut intake.data)
                }
                None => (self.discard).advance(body, ctx.limits.max_body, ctx.limits.max_head),
            };
            match walked {
                Ok(n) => self.input.remove(skip, n),
                Err(e) if self.held.take().is_some() => {
                    // Not answered yet: the answer is the error (400, 413, 431).
                    self.discard = Discard::Done;
                    self.intake = None;
                    self.fail(e, ctx);
                    return Step::Continue;
                }
                Err(e) => {
                    // Answered already (`Expect: 100-continue` is answered before its body),
                    // so only the close can tell; what follows cannot be trusted either.
                    log::debug!("token={} bad request body: {e}", self.token.0);
                    self.discard = Discard::Done;
                    self.input.clear();
                    self.close_after_write = true;
                }
            }
            if !self.discard.is_done() {
                self.wait_for_input("body needs more bytes", ctx.pool);
                return Step::Continue;
            }
        }
        let has_output = !self.out.is_empty() || self.file.is_some();
        if self.close_after_write {
            // Nothing after a closing response is answered.
            self.input.clear();
            self.start_writing("closing response queued");
            return Step::Continue;
        }
        if self.pending.is_waiting() {
            // A handler still has this response in hand: what follows waits, in order.
            let why = match self.pending.deferred() {
                Some(_) => "waiting for the handler's deferred reply",
                None => "streaming the handler's body",
            };
            self.start_writing(why);
            return Step::Continue;
        }
        if self.input.is_empty() || self.head_incomplete {
            self.wait_for_input("need more bytes", ctx.pool);
            return Step::Continue;
        }
        if self.out.len() + self.unsent.held_bytes() >= HIGH_WATER || self.file.is_some() {
            // Backpressure: send what is queued before answering more. Shared bodies count
            // in full: each one keeps its cache entry alive for as long as it is queued.
            self.start_writing("output over high-water mark");
            return Step::Continue;
        }
        if self.turn_requests >= MAX_REQUESTS_PER_TURN {
            // This turn's share of requests is answered: send them before yielding, so
            // that their clients do not wait for a pass over every other connection.
            if has_output {
                self.start_writing("turn's share of requests answered");
                return Step::Continue;
            }
            return Step::Yield;
        }

        match request::parse(
            self.input.pending(),
            ctx.limits.max_head,
            ctx.limits.max_body,
        ) {
            Ok(Parsed::Partial) => {
                self.head_incomplete = true;
                self.head_started.get_or_insert(self.now);
                if has_output {
                    self.start_writing("partial head; sending queued output");
                } else {
                    self.wait_for_input("partial head", ctx.pool);
                }
            }
            Ok(Parsed::Complete(mut req, n)) => {
                let started = match self.held.take() {
                    // Its body has been read: now it is answered.
                    Some(held) => {
                        if self.intake.as_ref().is_some_and(|i| i.continued) {
                            // Read after `100 Continue`: none of it is left on the wire.
                            req.expects_continue = false;
                        }
                        held.started
                    }
                    None => {
                        log::trace!(
                            "token={} request {}",
                            self.token.0,
                            String::from_utf8_lossy(req.request_line())
                        );
                        let started = self.head_started.take().unwrap_or(self.now);
                        self.discard = Discard::new(req.body);
                        self.progress_at = self.now;
                        if req.body != BodyLength::None && !self.metrics_only {
                            // Does the handler take this body? Asked before it is read.
                            match answer::body_limit(&req, ctx) {
                                Ok(Some(limit)) => {
                                    let interim =
                                        req.expects_continue && req.version == Version::Http11;
                                    self.take_body(n, started, limit, interim, ctx.pool);
                                    return Step::Continue;
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    // 413 (or a panic's 500): the body is never read.
                                    self.discard = Discard::Done;
                                    self.fail(e, ctx);
                                    return Step::Continue;
                                }
                            }
                        }
                        if req.body != BodyLength::None && !req.expects_continue {
                            // Hold the head and read the body first. The body has as long
                            // as a head to arrive, counted from its start: a body trickled
                            // a byte at a time must not hold the connection forever either.
                            self.held = Some(HeldHead { len: n, started });
                            return Step::Continue;
                        }
                        // `Expect: 100-continue` is answered now; its body, if the client
                        // sends it anyway, is skipped after the answer.
                        started
                    }
                };
                if !self.out.has_capacity() {
                    self.out = ctx.pool.take_out();
                }
                let intake = self.intake.take();
                let continued = intake.as_ref().is_some_and(|i| i.continued);
                let mut call = Call {
                    body: intake.as_ref().map_or(&[][..], |i| &i.data),
                    peer: self.peer,
                    key: self.token.0,
                    later: None,
                };
                let outcome = if self.metrics_only {
                    Some(answer::answer_metrics(&req, &mut self.out, ctx, &mut call))
                } else {
                    answer::answer(&req, &mut self.out, &mut self.file, ctx, &mut call)
                };
                let Some(outcome) = outcome else {
                    // Answered later, from another thread: the head stays at the front of
                    // the input until then, and the check above sends us to wait.
                    if let Some(later) = call.later {
                        self.pending
                            .wait_for_reply(later, self.now, started, continued);
                    }
                    self.turn_requests += 1;
                    return Step::Continue;
                };
                let streamed = matches!(call.later, Some(crate::deferred::Later::Stream(_)));
                if let Some(crate::deferred::Later::Stream(stream)) = call.later {
                    self.pending.take_stream(stream);
                }
                let site = !self.metrics_only;
                if let Some(entry) = answer::record(ctx, self.peer, &req, &outcome, started, site) {
                    let end = self.output_end();
                    let lines = unsent_lines(&mut self.unsent, ctx.pool);
                    if streamed {
                        // Its line waits for the end of the stream (or of the connection).
                        lines.push_open(&entry, end, started);
                    } else {
                        lines.push(&entry, end, started);
                    }
                }
                self.input.consume(n);
                self.close_after_write |= outcome.close;
                self.turn_requests += 1;
                self.served_any = true;
                self.requests += 1;
            }
            Err(e) => self.fail(e, ctx),
        }
        Step::Continue
    }

    /// Queues an error response for a request that could not be parsed, and closes after it.
    fn fail(&mut self, e: HttpError, ctx: &mut Context<'_>) {
        log::debug!(
            "token={} {} bad request: {e}",
            self.token.0,
            Peer(self.peer)
        );
        let sent_before = self.out.len();
        self.reject(e, ctx);
        if let Some(metrics) = ctx.metrics.as_deref_mut() {
            metrics.rejected(e, (self.out.len() - sent_before) as u64);
        }
        self.input.clear();
        self.start_writing("error response queued");
    }

    /// Answers a request that will get nothing else with the error `e`, and gives it its
    /// access-log line: what arrived of its request line, the status and the error page's
    /// bytes. Malformed requests and timeouts (408) are logged like any other answer.
    fn reject(&mut self, e: HttpError, ctx: &mut Context<'_>) {
        // When the request started, read before queue_error forgets it.
        let started = self.head_started.unwrap_or(self.now);
        self.reject_since(e, started, ctx);
    }

    /// [`Connection::reject`] for a request that started at `started`.
    fn reject_since(&mut self, e: HttpError, started: Instant, ctx: &mut Context<'_>) {
        let body_bytes = self.queue_error(e, ctx);
        if !ctx.access_log.enabled() {
            return;
        }
        let pending = self.input.pending();
        let line_end = pending
            .iter()
            .take(1024)
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(pending.len().min(1024));
        let (referer, user_agent) = request::referer_and_user_agent(pending);
        let entry = Entry {
            peer: self.peer.map(|p| p.ip()),
            peer_is_unix: self.peer.is_none(),
            request_line: &pending[..line_end],
            status: e.status().0,
            body_bytes,
            referer,
            user_agent,
            micros: 0,
        };
        let end = self.output_end();
        unsent_lines(&mut self.unsent, ctx.pool).push(&entry, end, started);
    }

    /// Where the output queued so far ends, in bytes since the accept.
    fn output_end(&self) -> u64 {
        let file = self.file.as_ref().map_or(0, |f| f.remaining);
        self.sent + self.out.len() as u64 + file
    }

    /// Writes the access-log lines of the responses cut short by the close: with the body
    /// bytes that did go out. The loop calls it when it frees the slot.
    pub fn log_cut_short(&mut self, ctx: &mut Context<'_>) {
        if !self.unsent.is_empty() {
            self.unsent.cut_short(self.sent, ctx.wall, ctx.access_log);
        }
    }

    /// Queues the error response to a request that has no usable head (so HTTP/1.1, with a
    /// body, and closing: nothing after it can be framed).
    /// Returns the body bytes queued.
    fn queue_error(&mut self, e: HttpError, ctx: &Context<'_>) -> u64 {
        self.close_after_write = true;
        self.head_started = None;
        answer::write_error(&mut self.out, e, ctx.date)
    }

    /// Goes to wait for more input, or sends queued output first if there is some.
    fn wait_for_input(&mut self, why: &'static str, pool: &mut BufferPool) {
        if !self.out.is_empty() || self.file.is_some() {
            self.start_writing("responses queued");
        } else {
            self.start_reading(why, pool);
        }
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
        self.input.recycle(pool);
        if self.unsent.is_empty() && self.unsent.has_capacity() {
            pool.give_unsent(std::mem::take(&mut self.unsent));
        }
        if self.out.is_empty() && self.file.is_none() {
            pool.give_out(std::mem::take(&mut self.out));
        }
    }

    // ----- Writing -----------------------------------------------------------------------

    /// Writing: send queued output until it is all sent or the socket would block; then
    /// log the responses that are all out.
    fn on_writing(&mut self, ctx: &mut Context<'_>) -> Step {
        let step = self.send_output(ctx);
        if !self.unsent.is_empty() {
            self.unsent.sent(self.sent, ctx.wall, ctx.access_log);
        }
        step
    }

    /// Sends queued output until it is all sent, the socket would block, or the turn's
    /// share is used up.
    fn send_output(&mut self, ctx: &mut Context<'_>) -> Step {
        // For `--trace`: what this call sent, by writev and sendfile alike.
        let before = self.sent;
        loop {
            if !self.out.is_empty() {
                if self.turn_bytes >= MAX_BYTES_PER_TURN {
                    self.trace_wrote(before, "turn's share used");
                    return Step::Yield;
                }
                // Heads and bodies, owned and shared, in one writev(2). On the stack: the
                // steady state allocates nothing.
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.out.slices(&mut slices);
                // A file follows: say so, and the kernel packs head and file together.
                let more = self.file.is_some();
                let result = retrying(|| self.socket.send_vectored(&slices[..count], more));
                match result {
                    Ok(0) => return self.close("write returned 0"),
                    Ok(n) => {
                        self.out.advance(n);
                        self.sent += n as u64;
                        self.turn_bytes += n;
                        self.write_clock.took(self.sent, self.now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The socket's send buffer is full: the client reads slower than we
                        // write. Wait for a writable edge. While we wait we are not told about
                        // input, so look for it again afterwards.
                        self.trace_wrote(before, "WouldBlock");
                        self.read_more = true;
                        return Step::Wait;
                    }
                    Err(e) if peer_gone(&e) => {
                        // As below for sendfile: a file body copied through the buffer (no
                        // sendfile) is cut short here.
                        log::debug!(
                            "token={} {} client went away: {e}",
                            self.token.0,
                            Peer(self.peer)
                        );
                        return self.close("client went away");
                    }
                    Err(e) => {
                        log::debug!(
                            "token={} {} write error: {e}",
                            self.token.0,
                            Peer(self.peer)
                        );
                        return self.close("write error");
                    }
                }
                continue;
            }
            if self.turn_bytes >= MAX_BYTES_PER_TURN && self.file.is_some() {
                self.trace_wrote(before, "turn's share used");
                return Step::Yield;
            }
            match self.send_file_body() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.trace_wrote(before, "WouldBlock");
                    self.read_more = true;
                    return Step::Wait;
                }
                Err(e) if peer_gone(&e) => {
                    // The client closed mid-download: normal, and nothing to fix here.
                    log::debug!(
                        "token={} {} client went away during the file body: {e}",
                        self.token.0,
                        Peer(self.peer)
                    );
                    return self.close("client went away");
                }
                Err(e) => {
                    // The file itself failed (it shrank, or the disk did): a server problem.
                    log::warn!("token={} file body failed: {e}; closing", self.token.0);
                    return self.close("file body failed");
                }
            }
        }
        self.trace_wrote(before, "all sent");
        // The client has taken all there was: what comes next gets a whole timeout.
        self.write_clock = WriteClock::start(self.now, self.sent);
        if let Some(step) = self.feed_from_handler() {
            return step;
        }
        self.after_output(ctx)
    }

    /// `--trace`: the bytes sent since `before`, and why sending stopped.
    fn trace_wrote(&self, before: u64, why: &str) {
        log::trace!(
            "token={} wrote {} bytes ({why})",
            self.token.0,
            self.sent - before
        );
    }

    /// Everything queued has gone out: what next? The one place that decides between
    /// lingering before the close, closing now, answering pipelined bytes, and reading.
    fn after_output(&mut self, ctx: &mut Context<'_>) -> Step {
        if self.close_after_write {
            // Graceful close: send FIN but keep reading for a moment. Closing with unread
            // input would make the kernel send RST, and an RST can destroy the response we
            // just wrote before the client reads it.
            let _ = self.socket.shutdown_write();
            self.progress_at = self.now;
            self.read_more = true;
            self.set_state(State::Closing, "response sent; closing gracefully");
            return Step::Continue;
        }
        let nothing_pending = self.input.is_empty() && self.discard.is_done();
        if ctx.shutting_down && nothing_pending {
            return self.close("server shutting down");
        }
        if !self.input.is_empty() && !self.head_incomplete {
            self.set_state(State::Parsing, "pipelined bytes waiting");
        } else {
            self.start_reading("keep-alive", ctx.pool);
        }
        Step::Continue
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
            if self.slow_reader && !slower_than_us(body) {
                // The client keeps up again: the next body starts with the usual bound.
                log::trace!("token={} client keeps up: usual unsent bound", self.token.0);
                self.set_unsent_bound(listener::NOTSENT_LOWAT);
                self.slow_reader = false;
            }
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
                    log::trace!("token={} sendfile {n} bytes", self.token.0);
                    body.remaining -= n as u64;
                    self.sent += n as u64;
                    self.turn_bytes += n;
                    self.write_clock.took(self.sent, self.now);
                    if n == count {
                        return Ok(true);
                    }
                    // Short: the socket took all it would (its buffer, or the unsent
                    // bound, see listener::NOTSENT_LOWAT). The kernel has marked it so
                    // (SOCK_NOSPACE) and will raise a writable edge when there is room,
                    // so wait for that instead of making the call that only says
                    // WouldBlock: that call is not cheap, it looks up and pins the
                    // file's pages before the socket refuses them. Behind an nginx
                    // front, 10 MiB files: 59 of those calls per response, gone.
                    // (A file that shrank mid-call also stops short; the next call
                    // then finds its end, or the send timeout closes the connection.)
                    body.short_sends += 1;
                    if !self.slow_reader && falls_behind(body) {
                        // The client's window sets the pace, not our sending: a larger
                        // bound wakes us a sixteenth as often. Send again at once, up to it.
                        log::trace!(
                            "token={} slow reader: unsent bound raised to {} KiB",
                            self.token.0,
                            listener::NOTSENT_LOWAT_SLOW_READER / 1024
                        );
                        self.slow_reader = true;
                        self.set_unsent_bound(listener::NOTSENT_LOWAT_SLOW_READER);
                        return Ok(true);
                    }
                    return Err(io::ErrorKind::WouldBlock.into());
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

    /// Sets the socket's unsent bound; a failure costs only pacing, so it is logged.
    fn set_unsent_bound(&mut self, bytes: u32) {
        if let Err(e) = self.socket.set_unsent_bound(bytes) {
            log::debug!("token={} TCP_NOTSENT_LOWAT failed: {e}", self.token.0);
        }
    }

    // ----- Handlers: bodies they take, answers that come later --------------------------

    /// Holds the head whose body the handler takes (see `Handler::accepts_body`), and
    /// reads the body for it, up to `limit`. With `interim` (HTTP/1.1 and `Expect:
    /// 100-continue`), `100 Continue` goes out first: the client waits for it before it
    /// sends the body (RFC 9110 section 10.1.1).
    fn take_body(
        &mut self,
        head_len: usize,
        started: Instant,
        limit: u64,
        interim: bool,
        pool: &mut BufferPool,
    ) {
        self.intake = Some(Box::new(Intake {
            data: Vec::new(),
            limit,
            continued: interim,
        }));
        self.held = Some(HeldHead {
            len: head_len,
            started,
        });
        if interim {
            if !self.out.has_capacity() {
                self.out = pool.take_out();
            }
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
    }

    /// Whether the connection waits for a handler's thread with nothing to send.
    fn waits_for_handler(&self) -> bool {
        self.pending.is_waiting() && self.out.is_empty() && self.file.is_none()
    }

    /// With all output sent: what a handler still has to say. `None` when nothing is
    /// pending (the response is complete); else the step to take: write what was queued,
    /// or wait for the handler's thread.
    fn feed_from_handler(&mut self) -> Option<Step> {
        let was_waiting = self.pending.is_waiting();
        let fed = self.pending.feed(&mut self.out, HIGH_WATER);
        if was_waiting && !self.pending.is_waiting() {
            // A streamed body ended: its last chunk is queued, and its log line can know
            // where the response ends.
            let end = self.output_end();
            self.unsent.stream_ended(end);
        }
        match fed {
            Feed::Idle => None,
            Feed::More => Some(Step::Continue),
            Feed::Wait(why) => {
                if self.peer_closed {
                    // The client's FIN (or a hang-up) while the handler works: it has
                    // gone, as nginx takes it too. A late answer will find nobody.
                    return Some(self.close("client went away while the handler worked"));
                }
                log::trace!("token={} waiting for the handler: {why}", self.token.0);
                Some(Step::Wait)
            }
            Feed::Broken => Some(self.close("the handler's stream broke off")),
        }
    }

    /// A note from a handler's thread (through the loop's mailbox): a deferred reply, or
    /// a stream with pieces to take. A note for anything else is stale, and ignored.
    pub fn on_note(&mut self, note: Note, ctx: &mut Context<'_>) {
        self.now = ctx.now;
        match self.pending.on_note(note) {
            Ok(Some((reply, deferred))) => self.finish_later(reply, deferred, ctx),
            Ok(None) => {}
            Err(stale) => {
                log::trace!("token={} stale note ignored: {stale:?}", self.token.0);
                return;
            }
        }
        self.run(ctx);
    }

    /// Queues the deferred `reply` to the request whose head waits at the front of the
    /// input, logs it, and lets the pipelined requests behind it go on.
    fn finish_later(
        &mut self,
        reply: Reply,
        deferred: crate::deferred::DeferredReply,
        ctx: &mut Context<'_>,
    ) {
        let parsed = request::parse(
            self.input.pending(),
            ctx.limits.max_head,
            ctx.limits.max_body,
        );
        let Ok(Parsed::Complete(mut req, n)) = parsed else {
            // Cannot happen: the same bytes parsed when the handler was asked.
            log::error!("token={} deferred request lost its head", self.token.0);
            self.fail(HttpError::Internal, ctx);
            return;
        };
        if deferred.continued {
            req.expects_continue = false;
        }
        if !self.out.has_capacity() {
            self.out = ctx.pool.take_out();
        }
        let outcome = answer::answer_later(&req, &reply, &mut self.out, ctx);
        let trusted = ctx.trusted;
        if self.forwarded_untrusted {
            ctx.trusted = &[]; // as in `run`
        }
        if let Some(entry) = answer::record(ctx, self.peer, &req, &outcome, deferred.started, true)
        {
            let end = self.output_end();
            unsent_lines(&mut self.unsent, ctx.pool).push(&entry, end, deferred.started);
        }
        ctx.trusted = trusted;
        self.input.consume(n);
        self.close_after_write |= outcome.close;
        self.served_any = true;
        self.requests += 1;
        self.start_writing("deferred reply came");
    }

    // ----- Closing -----------------------------------------------------------------------

    /// Closing (lingering): read and drop input until EOF, the byte limit, or the timeout.
    fn on_closing(&mut self) -> Step {
        if !self.read_more {
            return Step::Wait;
        }
        let mut scratch = [0u8; 4096];
        loop {
            match retrying(|| self.socket.read(&mut scratch)) {
                Ok(0) => return self.close("client closed after response"),
                Ok(n) => {
                    self.linger_read += n;
                    if self.linger_read >= LINGER_BYTES {
                        return self.close("linger limit reached");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_more = false;
                    return Step::Wait;
                }
                Err(_) => return self.close("read error while lingering"),
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

/// The connection's queue of access-log lines waiting for their responses to go out (see
/// [`Unsent`]), with memory from the pool if it has none: the line of a response just
/// queued goes in, to be written when its last byte has gone out.
fn unsent_lines<'u>(unsent: &'u mut Unsent, pool: &mut BufferPool) -> &'u mut Unsent {
    if !unsent.has_capacity() {
        *unsent = pool.take_unsent();
    }
    unsent
}

/// A request body being read for the handler that takes it.
#[derive(Debug)]
struct Intake {
    /// The body so far (without chunked framing).
    data: Vec<u8>,
    /// The most bytes the handler takes, within `--max-body-bytes`.
    limit: u64,
    /// `100 Continue` was sent: the client sends the body only after it.
    continued: bool,
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

/// A peer address for log lines: `127.0.0.1:5000`, or `unix:` on a Unix socket.
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
    //! The state machine driven with no network, smoltcp-style: each row gives the input
    //! chunks (one readiness event each) and the socket's room, and checks the transitions,
    //! the output, the interest and whether the connection asks to be resumed.

    use super::*;
    use std::time::SystemTime;

    use crate::answer::INLINE_FILE_MAX;
    use crate::context::Clock;
    use crate::files::cache::FileCache;
    use crate::files::static_files::{Options, StaticFiles};
    use crate::http::response::DateCache;
    use crate::listener::testing::MemSocket;
    use crate::ops::access_log::AccessLog;

    /// What one turn lends a connection, owned by the test.
    struct Fixture {
        _dir: tempfile::TempDir,
        limits: Limits,
        files: StaticFiles,
        date: DateCache,
        log: AccessLog,
        cache: FileCache,
        pool: BufferPool,
        now: Instant,
    }

    impl Fixture {
        /// A root with `a.txt` (5 bytes), `big.bin` (`big` bytes) and a `dir/` of
        /// `entries` files, listed; `cache_budget` bytes of cache.
        fn new(big: usize, entries: usize, cache_budget: usize) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("a.txt"), "hello").expect("write");
            std::fs::write(dir.path().join("big.bin"), vec![b'x'; big]).expect("write");
            std::fs::create_dir(dir.path().join("dir")).expect("mkdir");
            for i in 0..entries {
                let name = format!("dir/an-entry-with-a-longish-name-{i:04}.txt");
                std::fs::write(dir.path().join(name), "").expect("write");
            }
            let options = Options {
                list_directories: true,
                ..Options::default()
            };
            let files = StaticFiles::with_options(dir.path(), options).expect("root");
            Fixture {
                _dir: dir,
                limits: Limits {
                    max_head: 8192,
                    max_body: 1 << 20,
                    header_timeout: Duration::from_secs(10),
                    keep_alive_timeout: Duration::from_secs(10),
                    write_timeout: Duration::from_secs(10),
                    proxy_protocol: false,
                },
                files,
                date: DateCache::new(),
                log: AccessLog::with_writer(None),
                cache: FileCache::new(cache_budget),
                pool: BufferPool::new(),
                now: Instant::now(),
            }
        }

        fn ctx(&mut self) -> Context<'_> {
            let clock = Clock {
                now: self.now,
                wall: SystemTime::now(),
            };
            let (limits, files, date) = (&self.limits, &self.files, &self.date);
            let (log, cache, pool) = (&mut self.log, &mut self.cache, &mut self.pool);
            Context::new(limits, files, date, log, cache, pool, clock)
        }
    }

    /// A readable edge.
    const READABLE: Readiness = Readiness {
        readable: true,
        read_closed: false,
    };

    fn connection(room: usize) -> Connection<MemSocket> {
        let socket = MemSocket {
            room,
            ..MemSocket::new()
        };
        Connection::new(socket, Token(0), None, Instant::now())
    }

    /// One row of the state-machine table: a name; the input chunks, each arriving with
    /// its own readable edge (`None` is the client's FIN); how many bytes the client will
    /// take; every transition, in order; the status lines in the output; the interest
    /// afterwards; whether it asks to be resumed.
    type Row = (
        &'static str,
        &'static [Option<&'static str>],
        usize,
        &'static str,
        &'static [&'static str],
        Interest,
        bool,
    );

    const GET: &str = "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    const ALL: usize = usize::MAX;
    const R: Interest = Interest::READABLE;
    const W: Interest = Interest::WRITABLE;

    #[rustfmt::skip]
    const ROWS: &[Row] = &[
        ("one GET, answered, back to reading", &[Some(GET)], ALL,
            "Parsing Writing Reading", &["200 OK"], R, false),
        ("a head in three pieces",
            &[Some("GET /a.txt HT"), Some("TP/1.1\r\nHost: t\r\n"), Some("\r\n")], ALL,
            "Parsing Reading Parsing Reading Parsing Writing Reading", &["200 OK"], R, false),
        ("two pipelined in one read: one write for both",
            &[Some("GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n")], ALL,
            "Parsing Writing Reading", &["200 OK", "404 Not Found"], R, false),
        ("a client that does not read: wait for room", &[Some(GET)], 0,
            "Parsing Writing", &[], W, false),
        ("room for the status line only", &[Some(GET)], 20,
            "Parsing Writing", &["200 OK"], W, false),
        ("Connection: close lingers after the answer",
            &[Some("GET /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")], ALL,
            "Parsing Writing Closing", &["200 OK"], R, false),
        ("a bad request is answered 400, then lingers",
            &[Some("GET /a.txt HTTP/1.1\r\n\r\n")], ALL,
            "Parsing Writing Closing", &["400 Bad Request"], R, false),
        ("held head: no answer before the body is all read",
            &[Some("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab")], ALL,
            "Parsing Reading", &[], R, false),
        ("held head: answered once the body is in",
            &[Some("GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab"),
              Some("cdeGET /nope HTTP/1.1\r\nHost: t\r\n\r\n")], ALL,
            "Parsing Reading Parsing Writing Reading", &["200 OK", "404 Not Found"], R, false),
        ("held head: a broken chunked body gets 400, not 200",
            &[Some("GET /a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")], ALL,
            "Parsing Writing Closing", &["400 Bad Request"], R, false),
        ("EOF before any request", &[None], ALL,
            "Closed", &[], R, false),
        ("a request and the FIN together: answered, then closed", &[Some(GET), None], ALL,
            "Parsing Writing Reading Closed", &["200 OK"], R, false),
        ("forty pipelined: a fair share answered and sent, then yield", &[Some(FORTY)], ALL,
            "Parsing Writing Parsing", &["200 OK"; 32], R, true),
    ];

    #[test]
    fn state_machine_table() {
        for &(name, chunks, room, trail, statuses, interest, resume) in ROWS {
            let mut fx = Fixture::new(10, 0, 1 << 20);
            let mut conn = connection(room);
            for chunk in chunks {
                match chunk {
                    Some(bytes) => conn.socket_mut().input.extend(bytes.as_bytes()),
                    None => conn.socket_mut().eof = true,
                }
                conn.ready(READABLE, &mut fx.ctx());
            }
            let seen: Vec<String> = conn.trail.iter().map(State::to_string).collect();
            assert_eq!(seen.join(" "), trail, "{name}: transitions");
            let out = String::from_utf8_lossy(&conn.socket().output);
            let lines: Vec<&str> = out
                .match_indices("HTTP/1.1 ")
                .map(|(at, _)| &out[at + 9..at + 9 + out[at + 9..].find("\r\n").unwrap_or(0)])
                .collect();
            assert_eq!(lines, statuses, "{name}: responses");
            assert_eq!(conn.interest(), interest, "{name}: interest");
            assert_eq!(conn.wants_resume(), resume, "{name}: resume");
        }
    }

    /// `--proxy-protocol`: the step before Reading, with the header and the request in one
    /// read or apart, and a connection that does not start with one.
    #[test]
    fn proxy_header_comes_first() {
        let header = "PROXY TCP4 192.0.2.1 127.0.0.1 5000 80\r\n";
        let together = format!("{header}{GET}");
        let rows: &[(&str, &[&str], &str, &str)] = &[
            (
                "header and request together",
                &[&together],
                "Parsing Writing Reading",
                "200 OK",
            ),
            (
                "header in two pieces, then the request",
                &["PROXY TCP4 192.0.2.1 ", "127.0.0.1 5000 80\r\n", GET],
                "Reading Parsing Writing Reading",
                "200 OK",
            ),
            ("no header", &[GET], "Closed", ""),
        ];
        for &(name, chunks, trail, status) in rows {
            let mut fx = Fixture::new(10, 0, 1 << 20);
            fx.limits.proxy_protocol = true;
            let mut conn = connection(ALL);
            conn.expect_proxy_header();
            assert_eq!(conn.interest(), Interest::READABLE);
            for chunk in chunks {
                conn.socket_mut().input.extend(chunk.as_bytes());
                conn.ready(READABLE, &mut fx.ctx());
            }
            let seen: Vec<String> = conn.trail.iter().map(State::to_string).collect();
            assert_eq!(seen.join(" "), trail, "{name}: transitions");
            let out = String::from_utf8_lossy(&conn.socket().output);
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}"))
                    || status.is_empty() && out.is_empty(),
                "{name}: {out}"
            );
            if !status.is_empty() {
                assert_eq!(conn.peer, Some("192.0.2.1:5000".parse().unwrap()), "{name}");
            }
        }
    }

    /// Eight GETs, back to back.
    macro_rules! eight_gets {
        () => {
            concat!(
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
            )
        };
    }

    /// Forty pipelined GETs in one read: more than one turn's share.
    const FORTY: &str = concat!(
        eight_gets!(),
        eight_gets!(),
        eight_gets!(),
        eight_gets!(),
        eight_gets!()
    );

    /// Fairness, per connection: a client with a thousand requests queued gets at most
    /// its share of requests per turn, and a big download at most its share of bytes; each
    /// then asks to be resumed, and is, until everything is answered.
    #[test]
    fn each_turn_is_bounded_by_the_budget() {
        let mut fx = Fixture::new(8 << 20, 0, 1 << 20);
        let mut conn = connection(usize::MAX);
        conn.socket_mut().input.extend(GET.repeat(1000).as_bytes());
        conn.ready(READABLE, &mut fx.ctx());
        let answered = |c: &Connection<MemSocket>| {
            String::from_utf8_lossy(&c.socket().output)
                .matches("HTTP/1.1 200")
                .count()
        };
        assert_eq!(
            conn.turn_requests, MAX_REQUESTS_PER_TURN,
            "answered in one turn"
        );
        assert!(conn.wants_resume(), "yielded with work left");
        let mut turns = 1;
        while conn.wants_resume() {
            conn.resume(&mut fx.ctx());
            turns += 1;
        }
        assert_eq!(answered(&conn), 1000);
        assert!(
            turns >= 1000 / MAX_REQUESTS_PER_TURN as usize,
            "{turns} turns"
        );

        let mut big = connection(usize::MAX);
        big.socket_mut()
            .input
            .extend(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        big.ready(READABLE, &mut fx.ctx());
        let first = big.socket().written;
        assert!(
            first <= MAX_BYTES_PER_TURN + FILE_CHUNK,
            "{first} bytes in one turn"
        );
        assert!(big.wants_resume());
        while big.wants_resume() {
            big.resume(&mut fx.ctx());
        }
        assert!(big.socket().written > 8 << 20);
    }

    /// The deadline and the timeout come from the same `waiting_for()`: a head that never
    /// completes gets 408 at the header deadline, and an idle keep-alive connection is
    /// closed at the keep-alive deadline.
    #[test]
    fn timeouts_follow_what_the_connection_waits_for() {
        let mut fx = Fixture::new(10, 0, 1 << 20);
        let mut conn = connection(usize::MAX);
        conn.socket_mut().input.extend(b"GET /a.txt HTTP/1.1\r\n");
        conn.ready(READABLE, &mut fx.ctx());
        assert_eq!(
            conn.deadline(&fx.limits),
            Some(fx.now + fx.limits.header_timeout)
        );
        conn.timed_out(&mut fx.ctx());
        assert!(String::from_utf8_lossy(&conn.socket().output).starts_with("HTTP/1.1 408"));
        assert_eq!(conn.state, State::Closing);

        let mut idle = connection(usize::MAX);
        idle.socket_mut().input.extend(GET.as_bytes());
        idle.ready(READABLE, &mut fx.ctx());
        assert_eq!(
            idle.deadline(&fx.limits),
            Some(fx.now + fx.limits.keep_alive_timeout)
        );
        idle.timed_out(&mut fx.ctx());
        assert!(idle.is_done());
        assert_eq!(idle.deadline(&fx.limits), None);
    }

    /// Which short sends make a body's client slower than us: a count alone took wrk on
    /// loopback for slow (3 to 6 short sends per 10 MiB body); an nginx front makes one
    /// per 160 KiB. Rows: body length, bytes sent so far, short sends, slow?
    #[test]
    fn a_client_falls_behind_by_the_rate_of_short_sends() {
        const MIB: u64 = 1 << 20;
        let rows: &[(u64, u64, u32, bool)] = &[
            (10 * MIB, 480 * 1024, 3, false), // too few to tell
            (10 * MIB, 640 * 1024, 4, true),  // an nginx front: one per 160 KiB
            (10 * MIB, 2 * MIB, 4, true),     // one per 512 KiB, just
            (10 * MIB, 6 * MIB, 4, false),    // wrk keeping up: one per 1.5 MiB
            (10 * MIB, 9 * MIB, 6, false),    // wrk's worst seen
            (MIB, MIB / 2, 8, true),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").expect("write");
        for &(length, sent, short_sends, slow) in rows {
            let body = FileBody {
                file: std::fs::File::open(&path).expect("open"),
                length,
                remaining: length - sent,
                sendfile: true,
                short_sends,
            };
            assert_eq!(falls_behind(&body), slow, "{length} {sent} {short_sends}");
        }
    }

    /// `--write-timeout` is a floor on the client's pace: at the deadline the connection goes
    /// on only if the client has taken [`MIN_TAKEN_PER_WRITE_TIMEOUT`] since the clock
    /// started, counting what the socket takes at the last try; and then it gets a whole
    /// timeout again. Each row: what the client takes at a writable edge halfway through the
    /// timeout, what it takes at the try, and whether the connection goes on.
    #[test]
    fn the_write_timeout_wants_a_megabyte_per_timeout() {
        const KIB: usize = 1024;
        let rows: &[(&str, usize, usize, bool)] = &[
            ("nothing taken", 0, 0, false),
            ("one window update at the try", 0, 128 * KIB, false),
            (
                "under the floor, over the edge and the try",
                512 * KIB,
                400 * KIB,
                false,
            ),
            (
                "the floor, over the edge and the try",
                512 * KIB,
                512 * KIB,
                true,
            ),
            ("the floor at the try alone", 0, 1024 * KIB, true),
            ("the floor at the edge, then nothing", 1024 * KIB, 0, false),
        ];
        for &(name, at_edge, at_try, goes_on) in rows {
            let mut fx = Fixture::new(8 << 20, 0, 0);
            let timeout = fx.limits.write_timeout;
            let mut conn = connection(0);
            conn.socket_mut()
                .input
                .extend(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
            conn.ready(READABLE, &mut fx.ctx());
            assert_eq!(conn.state, State::Writing, "{name}");
            let start = fx.now;
            assert_eq!(conn.deadline(&fx.limits), Some(start + timeout), "{name}");

            fx.now = start + timeout / 2;
            conn.socket_mut().room = at_edge;
            conn.ready(Readiness::default(), &mut fx.ctx());
            while conn.wants_resume() {
                conn.resume(&mut fx.ctx());
            }
            let restarted = at_edge >= 1024 * KIB;
            let expected = if restarted { fx.now } else { start } + timeout;
            assert_eq!(conn.deadline(&fx.limits), Some(expected), "{name}: edge");

            fx.now = expected;
            conn.socket_mut().room = at_try;
            conn.timed_out(&mut fx.ctx());
            while conn.wants_resume() {
                conn.resume(&mut fx.ctx());
            }
            assert_eq!(conn.state == State::Writing, goes_on, "{name}: goes on");
            if goes_on && !restarted {
                assert_eq!(conn.deadline(&fx.limits), Some(fx.now + timeout), "{name}");
            }
            assert_eq!(
                conn.socket().written,
                at_edge + at_try,
                "{name}: bytes sent"
            );
        }
    }

    /// Eight pipelined GETs for `target` from a client that does not read: the queue must
    /// stay within one response of the high-water mark, the rest wait unparsed, and once
    /// the client reads, all eight arrive whole. The root holds `big.bin` (`file_len`
    /// bytes) and `dir/` (for `/dir/`, 2,000 names: a listing of over 100 KB).
    fn pipeline_without_reading(target: &str, file_len: usize, cache_budget: usize) {
        let entries = if target == "/dir/" { 2000 } else { 0 };
        let mut fx = Fixture::new(file_len, entries, cache_budget);
        let mut ctx = fx.ctx();
        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
        let mut conn = connection(0);
        conn.socket_mut().input.extend(request.repeat(8).as_bytes());
        let all = READABLE;
        conn.ready(all, &mut ctx);
        let queued = conn.out.len();
        assert!(!conn.input.is_empty(), "{target}: all eight were answered");
        assert_eq!(conn.state, State::Writing);

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
        pipeline_without_reading("/big.bin", 200_000, 1 << 20);
    }

    #[test]
    fn small_files_read_from_disk_count_toward_the_high_water_mark() {
        // No cache: the file is read into the queue beside its head.
        pipeline_without_reading("/big.bin", INLINE_FILE_MAX as usize, 0);
    }

    #[test]
    fn listings_count_toward_the_high_water_mark() {
        pipeline_without_reading("/dir/", 10, 1 << 20);
    }
}
