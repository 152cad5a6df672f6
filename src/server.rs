//! The event loop: one `mio::Poll`, one thread, every connection in one `Slab`.
//!
//! Each turn of the loop:
//!
//! 1. sleeps in `poll` until something is ready, or until the nearest deadline
//!    ([`crate::timers`]), or not at all if a connection still has work from last turn;
//! 2. runs the connections that yielded last turn (the fairness queue);
//! 3. handles each event: the listener accepts, the signal pipe starts a shutdown, the
//!    waker brings a shutdown request or answers from handlers' threads (the mailbox, see
//!    [`crate::deferred`]), and a connection's token leads to its slot in the slab;
//! 4. expires deadlines, and moves a shutdown on: the drain delay (serving on while health
//!    checks fail), then the stop of accepting;
//! 5. frees the slots of finished connections, and only now (see below);
//! 6. writes out the access log.
//!
//! Readiness is edge-triggered (mio always registers that way): an event says "something
//! changed", once. So every handler works until the socket says WouldBlock, or the short-read
//! rule says the same, or the connection's fair share runs out, in which case it goes on the
//! fairness queue and runs again before the next `poll`. Nothing else would wake it up.
//!
//! Events are hints, never orders: a token may name a slot that is empty (the connection was
//! closed earlier in this turn) or a connection that has nothing to do. Both are harmless.
//! Slots are freed only at the end of a turn, because `deregister` does not remove events
//! already copied into this turn's `Events`: freeing a slot mid-turn and handing its key to a
//! new connection would deliver the old connection's event to the new one.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::buffers::BufferPool;
use crate::config::{AccessLogTarget, Config, ListenAddr, TrustedProxy};
use crate::connection::{Connection, Readiness};
use crate::context::{Clock, Context, Limits};
use crate::deferred::{BodySender, Mailbox, TrySendError};
use crate::files::cache::FileCache;
use crate::files::static_files::{Options, StaticFiles};
use crate::handler::Handler;
use crate::http::response::DateCache;
use crate::listener::{BindOptions, Listener, Stream};
use crate::ops::access_log::AccessLog;
use crate::ops::live;
use crate::ops::metrics::Metrics;
use crate::ops::proxy;
use crate::timers::Timers;

/// The listening socket's token. Connection tokens are slab keys, which stay far below these.
const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the [`Waker`] that [`ServerHandle::stop`] uses, and that handlers' threads
/// use to say that the mailbox has answers.
const WAKER: Token = Token(usize::MAX - 2);
/// The token of the signal pipe (SIGTERM, SIGINT).
const SIGNALS: Token = Token(usize::MAX - 3);
/// The token of the file cache's inotify descriptor.
const FILE_CHANGES: Token = Token(usize::MAX - 4);
/// The metrics listener's token (`--metrics-listen`).
const METRICS_LISTENER: Token = Token(usize::MAX - 5);

/// Most connections open at once on the metrics listener. They are not counted against
/// `--max-connections` (a server at its cap can still be observed), so they need a cap of
/// their own: otherwise idle scrapers could hold as many descriptors as they like.
pub const MAX_METRICS_CONNECTIONS: usize = 16;

/// How long to stop accepting after EMFILE/ENFILE, unless a connection closes sooner.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The document root is missing or unreadable.
    Root(std::path::PathBuf, io::Error),
    /// The listen address could not be bound (in use, not local, no permission).
    Bind(ListenAddr, io::Error),
    /// The access log file could not be opened.
    AccessLog(std::path::PathBuf, io::Error),
    /// The metrics listener (`--metrics-listen`) could not be bound.
    MetricsBind(SocketAddr, io::Error),
    /// Setting up the poller, waker or signal handling failed.
    Setup(io::Error),
    /// `--health-path` is not a path a request can ask for (it must start with '/').
    HealthPath(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Root(path, e) => {
                write!(f, "document root {} is not usable: {e}", path.display())
            }
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::AccessLog(path, e) => {
                write!(f, "cannot open the access log {}: {e}", path.display())
            }
            StartError::MetricsBind(addr, e) => {
                write!(
                    f,
                    "cannot listen for metrics (--metrics-listen) on {addr}: {e}"
                )
            }
            StartError::Setup(e) => write!(f, "cannot set up the event loop: {e}"),
            StartError::HealthPath(why) => write!(f, "--health-path: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Stops a running [`Server`] from another thread.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl ServerHandle {
    /// Asks the server to shut down gracefully, as SIGTERM does: serve on for
    /// `--drain-delay` with failing health checks, then stop accepting, finish in-flight
    /// responses (up to `--shutdown-grace`), and return from [`Server::run`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("could not wake the event loop: {e}");
        }
    }
}

/// One connection's slot in the slab: the connection and what the loop has told the OS
/// and the timers about it.
struct Slot {
    conn: Connection<Stream>,
    /// The interest currently registered with mio. Reregistering costs a syscall, so it is
    /// done only when the connection's wanted interest differs.
    interest: Interest,
    /// This connection's entry in the timers, if any. It may be earlier than the
    /// connection's real deadline: the entry is moved lazily, when it fires.
    timer: Option<Instant>,
    /// Queued to run again before the next `poll` (it yielded).
    queued: bool,
    /// Listed for freeing at the end of this turn.
    closing: bool,
    /// It came in on the metrics listener (counted apart from the site's connections).
    metrics: bool,
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listener: Option<Listener>,
    metrics_listener: Option<Listener>,
    config: Config,
    limits: Limits,
    files: StaticFiles,
    access_log: AccessLog,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    handler: Option<Box<dyn Handler + Send>>,
    /// Answers from handlers' threads, for the loop to deliver.
    mailbox: Arc<Mailbox>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("root", &self.files.root())
            .finish()
    }
}

impl Server {
    /// Binds the listener (or takes the inherited one), checks the root, and opens the
    /// access log. Nothing is accepted until [`Server::run`].
    pub fn bind(config: Config) -> Result<Server, StartError> {
        // The command line checks it already; a configuration built in code is checked here.
        if let Some(path) = &config.health_path {
            crate::config::parse_health_path(path).map_err(StartError::HealthPath)?;
        }
        // The listener first: an inherited one (`--listen systemd`, `fd:N`) is claimed by its
        // number, and a file opened before it could take that number if it was not inherited.
        let bind_options = BindOptions {
            reuse_port: config.reuse_port,
            unix_mode: config.unix_mode,
        };
        let mut listener = Listener::bind(&config.listen, bind_options)
            .map_err(|e| StartError::Bind(config.listen.clone(), e))?;
        let options = Options {
            serve_dotfiles: config.serve_dotfiles,
            follow_symlinks: config.follow_symlinks,
            list_directories: config.list_directories,
            max_listing_entries: config.max_listing_entries,
            cache_control: config.cache_control.clone(),
        };
        let files = StaticFiles::with_options(&config.root, options)
            .map_err(|e| StartError::Root(config.root.clone(), e))?;
        let access_log = AccessLog::open(&config.access_log, config.access_log_format).map_err(
            |e| match &config.access_log {
                AccessLogTarget::File(path) => StartError::AccessLog(path.clone(), e),
                _ => StartError::AccessLog("-".into(), e),
            },
        )?;
        let poll = Poll::new().map_err(StartError::Setup)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(StartError::Setup)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let plain = BindOptions {
                    reuse_port: false,
                    unix_mode: 0o600,
                };
                let mut metrics = Listener::bind(&ListenAddr::Tcp(addr), plain)
                    .map_err(|e| StartError::MetricsBind(addr, e))?;
                poll.registry()
                    .register(&mut metrics, METRICS_LISTENER, Interest::READABLE)
                    .map_err(StartError::Setup)?;
                Some(metrics)
            }
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Setup)?);
        let mailbox = Arc::new(Mailbox::new(Some(Arc::clone(&waker))));
        Ok(Server {
            poll,
            listener: Some(listener),
            metrics_listener,
            limits: Limits::from(&config),
            config,
            files,
            access_log,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            signals: None,
            handler: None,
            mailbox,
        })
    }

    /// The TCP address the server listens on (with the real port when bound to port 0);
    /// `None` for a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(Listener::tcp_addr)
    }

    /// Where the server listens, for people: `http://127.0.0.1:7878/` or `unix:/path`.
    pub fn url(&self) -> String {
        self.listener
            .as_ref()
            .map(Listener::describe)
            .unwrap_or_default()
    }

    /// The metrics listener's address, if `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(Listener::tcp_addr)
    }

    /// The document root, as configured (made absolute).
    pub fn root(&self) -> &std::path::Path {
        self.files.root()
    }

    /// A handle that stops the server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Installs a [`Handler`] that sees every request before the static files do. It runs on
    /// the loop thread and must never block (see [`crate::handler`]).
    pub fn set_handler(&mut self, handler: impl Handler + Send + 'static) {
        self.handler = Some(Box::new(handler));
    }

    /// Makes SIGTERM and SIGINT start a graceful shutdown (a second one stops at once), and
    /// SIGHUP reopen the access log file (after logrotate moved it away).
    /// The signals arrive through a pipe registered in the same `Poll`, so the handler does
    /// nothing but write a byte, and the loop does the rest. The binary calls this; a
    /// library user who has its own signal handling need not.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ])?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Runs the event loop until a shutdown finishes. See the module docs for one turn.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut slots: Slab<Slot> = Slab::with_capacity(1024);
        let mut schedule = Schedule::default();
        let mut date = DateCache::new();
        let mut cache = FileCache::new(self.config.cache_bytes);
        let mut pool = BufferPool::new();
        let mut metrics = self.metrics_listener.is_some().then(Metrics::new);
        if let Some(fd) = cache.watch_fd() {
            // inotify's descriptor is one more readiness source in the same Poll.
            self.poll.registry().register(
                &mut mio::unix::SourceFd(&fd),
                FILE_CHANGES,
                Interest::READABLE,
            )?;
        }
        let max_connections = self.config.max_connections as usize;
        // Accepting stops at the connection cap or on EMFILE; `accept_again` says a retry is
        // due (the listener is edge-triggered, so it will not tell us again by itself).
        let mut accept_again = false;
        let mut accept_paused_until: Option<Instant> = None;
        let mut fd_exhausted_logged = false;
        // SIGTERM (or `stop`) starts the drain delay; when it is over, the shutdown starts.
        let mut drain_until: Option<Instant> = None;
        let mut shutdown_deadline: Option<Instant> = None;
        // Connections from the metrics listener; the rest of the slab is the site's.
        let mut metrics_open = 0;
        // Turns of the loop and their events, for `--trace` and the live view (`/loop`).
        let mut turns = live::Turns::default();
        // The live view's watchers (their streams' senders), when the next snapshot is
        // due, and the snapshot's buffers (they allocate only while someone watches).
        let mut watchers: Vec<BodySender> = Vec::new();
        let mut live_next: Option<Instant> = None;
        let mut rows: Vec<live::Row> = Vec::new();
        let mut snapshot = String::new();
        // Notes taken from the mailbox, kept to reuse the memory.
        let mut notes = VecDeque::new();

        loop {
            // ---- 1. sleep until something is ready, or until the nearest deadline
            let now = Instant::now();
            let timeout = if !schedule.resume.is_empty() {
                Some(Duration::ZERO)
            } else {
                [
                    schedule.timers.poll_timeout(now),
                    accept_paused_until.map(|t| t.saturating_duration_since(now)),
                    // Wake up when the drain delay is over, even if nothing else happens.
                    drain_until
                        .filter(|_| shutdown_deadline.is_none())
                        .map(|t| t.saturating_duration_since(now)),
                    shutdown_deadline.map(|t| t.saturating_duration_since(now)),
                    live_next.map(|t| t.saturating_duration_since(now)),
                    // Access-log lines waiting for a reader that stopped reading.
                    self.access_log.retry_in(),
                ]
                .into_iter()
                .flatten()
                .min()
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let clock = Clock::read();
            let now = clock.now;
            let event_count = events.iter().count();
            turns.record(event_count);
            log::trace!("turn {}: {event_count} events", turns.count());
            date.update(clock.wall);
            if let Some(m) = metrics.as_mut() {
                m.iteration(events.iter().count());
            }
            // File changes first: no request in this turn may be answered from a cache entry
            // that an event in this same batch says is stale.
            if events.iter().any(|e| e.token() == FILE_CHANGES) {
                cache.on_watch_event();
            }
            let registry = self.poll.registry();
            let handler: Option<&mut dyn Handler> = match self.handler.as_mut() {
                Some(handler) => Some(handler.as_mut()),
                None => None,
            };
            let mut ctx = Context::new(
                &self.limits,
                &self.files,
                &date,
                &mut self.access_log,
                &mut cache,
                &mut pool,
                clock,
            )
            .with_handler(handler)
            .with_metrics(metrics.as_mut(), slots.len() - metrics_open)
            .with_proxies(&self.config.trust_proxy, self.config.real_ip_header)
            .with_health(self.config.health_path.as_deref(), drain_until.is_some())
            .with_mailbox(&self.mailbox)
            .with_watchers(&mut watchers)
            .shutting_down(shutdown_deadline.is_some());

            // ---- 2. connections that yielded last turn
            for key in std::mem::take(&mut schedule.resume) {
                if let Some(slot) = slots.get_mut(key) {
                    slot.queued = false;
                    slot.conn.resume(&mut ctx);
                    schedule.settle(registry, key, slot, &self.limits);
                }
            }

            // ---- 3. events
            let mut begin_shutdown = false;
            // The shutdown closes the listener this turn, after one last accept.
            let mut close_listener = false;
            for event in events.iter() {
                match event.token() {
                    LISTENER => accept_again = true,
                    METRICS_LISTENER => {
                        if let Some(listener) = self.metrics_listener.as_ref() {
                            accept_metrics(
                                listener,
                                registry,
                                &mut slots,
                                &mut metrics_open,
                                now,
                                &self.limits,
                                &mut schedule,
                            );
                        }
                    }
                    FILE_CHANGES => {} // handled above
                    WAKER => {
                        begin_shutdown |= self.stop.load(Ordering::SeqCst);
                        // Answers from handlers' threads: each to its connection, if that
                        // is still there (the connection checks the serial number).
                        self.mailbox.take_all(&mut notes);
                        for note in notes.drain(..) {
                            let key = note.key;
                            match slots.get_mut(key) {
                                Some(slot) if !slot.closing => {
                                    slot.conn.on_note(note, &mut ctx);
                                    schedule.settle(registry, key, slot, &self.limits);
                                }
                                _ => log::trace!("token={key} note for a closed connection"),
                            }
                        }
                    }
                    SIGNALS => {
                        if let Some(signals) = self.signals.as_mut() {
                            for signal in signals.pending() {
                                if signal == signal_hook::consts::SIGHUP {
                                    log::info!("SIGHUP: reopening the access log");
                                    ctx.access_log.reopen();
                                    continue;
                                }
                                log::info!("received signal {signal}");
                                if drain_until.is_some() {
                                    log::warn!("second signal: stopping now");
                                    // What was sent so far is logged, as when the grace
                                    // period runs out.
                                    for (_, slot) in slots.iter_mut() {
                                        slot.conn.log_cut_short(&mut ctx);
                                    }
                                    ctx.access_log.flush();
                                    return Ok(());
                                }
                                begin_shutdown = true;
                            }
                        }
                    }
                    Token(key) => match slots.get_mut(key) {
                        Some(slot) if !slot.closing => {
                            trace_event(key, event);
                            slot.conn.ready(readiness(event), &mut ctx);
                            schedule.settle(registry, key, slot, &self.limits);
                        }
                        // Spurious or stale: the slot is empty or its connection is done.
                        _ => log::trace!("token={key} event for a closed connection, ignored"),
                    },
                }
            }

            // ---- 4. deadlines
            while let Some(Token(key)) = schedule.timers.pop_expired(now) {
                let Some(slot) = slots.get_mut(key) else {
                    continue;
                };
                slot.timer = None;
                match slot.conn.deadline(&self.limits) {
                    Some(when) if when <= now => {
                        log::trace!("token={key} deadline passed");
                        slot.conn.timed_out(&mut ctx);
                    }
                    // The entry was early (the deadline moved on since); `settle` puts the
                    // real one in.
                    _ => {}
                }
                schedule.settle(registry, key, slot, &self.limits);
            }

            // ---- drain: serve on, but fail health checks, until the balancers took us out
            if begin_shutdown && drain_until.is_none() {
                let delay = self.config.drain_delay();
                drain_until = Some(now + delay);
                if !delay.is_zero() {
                    log::info!(
                        "draining: health checks answer 503, serving on for {}s",
                        delay.as_secs()
                    );
                }
            }
            let drained = drain_until.is_some_and(|t| t <= now);
            if drained && shutdown_deadline.is_none() && !self.config.drain_delay().is_zero() {
                log::info!("drain delay over");
            }

            // ---- shutdown: stop accepting, close the idle, let the rest finish
            if drained && shutdown_deadline.is_none() {
                let grace = self.config.shutdown_grace();
                shutdown_deadline = Some(now + grace);
                // Connections the kernel has already completed wait in the listener's queue,
                // and closing it would reset them: their clients connected while we were
                // accepting. So the accept step below takes them first (up to the cap), to be
                // answered with `Connection: close`, and only then is the listener closed.
                accept_again = true;
                close_listener = true;
                let mut idle = 0;
                // From here on every response says `Connection: close`.
                ctx.shutting_down = true;
                for (key, slot) in slots.iter_mut() {
                    if slot.conn.close_if_idle(&mut ctx) {
                        idle += 1;
                    }
                    schedule.settle(registry, key, slot, &self.limits);
                }
                log::info!(
                    "shutting down: closed {idle} idle connections, waiting up to {}s for {}",
                    grace.as_secs(),
                    slots.len() - idle
                );
            }

            // ---- 5. free finished connections, now that no event of this turn can name them
            let freed = !schedule.closing.is_empty();
            for key in schedule.closing.drain(..) {
                let mut slot = slots.remove(key);
                if slot.metrics {
                    metrics_open -= 1;
                }
                slot.conn.log_cut_short(&mut ctx);
                slot.conn.recycle(ctx.pool);
                if let Err(e) = registry.deregister(slot.conn.socket_mut()) {
                    log::debug!("token={key} deregister failed: {e}");
                }
                if let Some(when) = slot.timer {
                    schedule.timers.reschedule(Token(key), Some(when), None);
                }
                log::trace!("token={key} freed");
                // Dropping the socket closes it.
            }
            if freed {
                // A free slot or a free file descriptor: worth trying to accept again.
                accept_paused_until = None;
                accept_again = true;
            }
            if accept_paused_until.is_some_and(|t| t <= now) {
                accept_paused_until = None;
                accept_again = true;
            }
            if accept_again
                && accept_paused_until.is_none()
                && let Some(listener) = self.listener.as_ref()
            {
                let outcome = accept_all(
                    listener,
                    &self.config.trust_proxy,
                    registry,
                    &mut slots,
                    max_connections + metrics_open,
                    now,
                    &self.limits,
                    &mut schedule.timers,
                    ctx.metrics.as_deref_mut(),
                );
                accept_again = false;
                match outcome {
                    AcceptOutcome::Drained => fd_exhausted_logged = false,
                    AcceptOutcome::AtCap => {}
                    AcceptOutcome::OutOfFds(e) => {
                        if !fd_exhausted_logged {
                            log::error!(
                                "accept failed: {e}; pausing accepts until a connection closes"
                            );
                            fd_exhausted_logged = true;
                        }
                        accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    }
                }
            }
            if close_listener && let Some(mut listener) = self.listener.take() {
                let _ = registry.deregister(&mut listener);
                // Dropping it closes it (and removes a Unix socket file).
            }

            // ---- the live view: a snapshot for the watchers of /loop, while there are some
            if let Some(watchers) = ctx.watchers.as_deref_mut() {
                if watchers.is_empty() {
                    live_next = None;
                } else if live_next.is_none_or(|t| t <= now) {
                    rows.clear();
                    rows.extend(slots.iter().map(|(key, slot)| {
                        slot.conn.row(key, short(slot.interest), &self.limits, now)
                    }));
                    let nearest = schedule.timers.poll_timeout(now);
                    turns.snapshot(nearest, &rows, &mut snapshot);
                    let piece = format!("data: {snapshot}\n\n");
                    // A watcher whose queue is still full from earlier snapshots reads too
                    // slowly: it is dropped (its stream ends), not buffered for.
                    watchers.retain(|w| match w.try_send(piece.as_bytes()) {
                        Ok(()) => true,
                        Err(TrySendError::Full(_)) => {
                            log::debug!("live view: a watcher too slow to keep up; dropped");
                            false
                        }
                        Err(TrySendError::Closed(_)) => false,
                    });
                    live_next = Some(now + live::INTERVAL);
                }
            }

            // ---- 6. access log: one write per turn, not one per request
            ctx.access_log.flush();

            if let Some(deadline) = shutdown_deadline {
                if slots.is_empty() {
                    log::info!("shutdown complete");
                    return Ok(());
                }
                if now >= deadline {
                    log::warn!(
                        "shutdown grace period over: cutting {} connections short",
                        slots.len()
                    );
                    for (_, slot) in slots.iter_mut() {
                        slot.conn.log_cut_short(&mut ctx);
                    }
                    ctx.access_log.flush();
                    return Ok(());
                }
            }
        }
    }
}

/// What the loop keeps about its connections besides the connections themselves.
#[derive(Default)]
struct Schedule {
    /// Every connection's deadline.
    timers: Timers,
    /// Connections that used up their fair share and run again before the next `poll`.
    resume: Vec<usize>,
    /// Connections that are done, freed at the end of this turn.
    closing: Vec<usize>,
}

impl Schedule {
    /// After a connection ran: free it at the end of the turn if it is done; otherwise bring
    /// its registered interest, its timer and its place on the fairness queue up to date.
    fn settle(&mut self, registry: &Registry, key: usize, slot: &mut Slot, limits: &Limits) {
        let token = Token(key);
        if slot.conn.is_done() {
            if !slot.closing {
                slot.closing = true;
                self.closing.push(key);
            }
            return;
        }
        let wanted = slot.conn.interest();
        if wanted != slot.interest {
            log::trace!(
                "token={key} interest {}=>{}",
                short(slot.interest),
                short(wanted)
            );
            match registry.reregister(slot.conn.socket_mut(), token, wanted) {
                Ok(()) => slot.interest = wanted,
                Err(e) => {
                    log::debug!("token={key} reregister failed: {e}");
                    slot.closing = true;
                    self.closing.push(key);
                    return;
                }
            }
        }
        // Timers are moved lazily: an entry earlier than the real deadline stays, fires, and is
        // replaced then. Only a deadline that moves earlier is moved at once. So a keep-alive
        // request, which pushes the deadline later, costs no timer operation at all.
        if let Some(wanted) = slot.conn.deadline(limits) {
            match slot.timer {
                Some(entry) if entry <= wanted => {}
                old => {
                    self.timers.reschedule(token, old, Some(wanted));
                    slot.timer = Some(wanted);
                }
            }
        }
        if slot.conn.wants_resume() && !slot.queued {
            log::trace!("token={key} yields (budget)");
            slot.queued = true;
            self.resume.push(key);
        }
    }
}

/// An interest as `--trace` shows it: `R`, `W` or `RW`.
fn short(interest: Interest) -> &'static str {
    match (interest.is_readable(), interest.is_writable()) {
        (true, true) => "RW",
        (false, true) => "W",
        _ => "R",
    }
}

fn readiness(event: &Event) -> Readiness {
    Readiness {
        // Errors and hang-ups are reported as readable: the next read returns them.
        readable: event.is_readable() || event.is_read_closed() || event.is_error(),
        // The client's FIN: the connection reads on to the EOF rather than wait for an
        // edge that will not come.
        read_closed: event.is_read_closed(),
    }
}

fn trace_event(key: usize, event: &Event) {
    if log::log_enabled!(log::Level::Trace) {
        let mut what = Vec::new();
        if event.is_readable() {
            what.push("readable");
        }
        if event.is_writable() {
            what.push("writable");
        }
        if event.is_read_closed() {
            what.push("read-closed");
        }
        if event.is_write_closed() {
            what.push("write-closed");
        }
        if event.is_error() {
            what.push("error");
        }
        log::trace!("token={key} {}", what.join(" "));
    }
}

enum AcceptOutcome {
    /// Accepted until WouldBlock: nothing is waiting.
    Drained,
    /// Stopped at `--max-connections`.
    AtCap,
    /// Out of file descriptors (EMFILE/ENFILE) or kernel memory.
    OutOfFds(io::Error),
}

/// Accepts until the kernel's queue is empty (the listener is edge-triggered, too), the
/// connection cap is reached, or file descriptors run out. `slab_cap` is the most slots the
/// slab may hold: `--max-connections`, plus the metrics connections, which do not count.
#[allow(clippy::too_many_arguments)]
fn accept_all(
    listener: &Listener,
    trusted: &[TrustedProxy],
    registry: &Registry,
    slots: &mut Slab<Slot>,
    slab_cap: usize,
    now: Instant,
    limits: &Limits,
    timers: &mut Timers,
    mut metrics: Option<&mut Metrics>,
) -> AcceptOutcome {
    loop {
        if slots.len() >= slab_cap {
            log::debug!("at the connection cap; not accepting");
            return AcceptOutcome::AtCap;
        }
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return AcceptOutcome::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_out_of_resources(&e) => return AcceptOutcome::OutOfFds(e),
            Err(e) => {
                // ECONNABORTED and friends: that one client is gone; the next may be fine.
                log::debug!("accept failed: {e}");
                continue;
            }
        };
        if let Some(m) = metrics.as_deref_mut() {
            m.accepted();
        }
        if limits.proxy_protocol && !proxy::is_trusted(peer, trusted) {
            // Only a trusted proxy may say who the client is. Dropping the stream closes it.
            log::debug!("--proxy-protocol: refused {peer:?}, not in --trust-proxy");
            if let Some(m) = metrics.as_deref_mut() {
                m.proxy_refused(true);
            }
            continue;
        }
        insert_connection(stream, peer, false, registry, slots, now, limits, timers);
    }
}

/// Accepts what is waiting on the metrics listener. These few connections are not counted
/// against `--max-connections`, so that a server at its cap can still be observed; they have
/// their own cap, [`MAX_METRICS_CONNECTIONS`]. At the cap, an idle or slow one makes room
/// ([`make_room_for_metrics`]), so neither idle connections nor a slowloris can lock health
/// checks out. If the server is working for every one, the new one is accepted and closed
/// at once: the listener is edge-triggered, so leaving it in the queue would leave it
/// hanging until some other scraper connects, while a close tells the scraper to retry.
#[allow(clippy::too_many_arguments)]
fn accept_metrics(
    listener: &Listener,
    registry: &Registry,
    slots: &mut Slab<Slot>,
    metrics_open: &mut usize,
    now: Instant,
    limits: &Limits,
    schedule: &mut Schedule,
) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if *metrics_open >= MAX_METRICS_CONNECTIONS
                    && !make_room_for_metrics(registry, slots, schedule, limits)
                {
                    log::debug!(
                        "metrics: {MAX_METRICS_CONNECTIONS} connections open and busy; \
                         closed {peer:?}"
                    );
                    continue; // dropping `stream` closes it
                }
                let timers = &mut schedule.timers;
                if insert_connection(stream, peer, true, registry, slots, now, limits, timers) {
                    *metrics_open += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    log::debug!("metrics accept failed: {e}");
                }
                return;
            }
        }
    }
}

/// Makes room on a full metrics listener by closing one of its connections: the one that
/// has waited longest for nothing (idle between requests, or silent since its connect), as
/// nginx, out of connections, reuses its oldest idle ones; failing that, the one whose
/// request has been coming in longest (a slowloris: a scraper sends its request at once).
/// Connections the server is working for (an answer being written, a live stream) are
/// never closed for room. Whether it found one. The one closed is freed at the end of the
/// turn, so until then the count is over the cap by one.
fn make_room_for_metrics(
    registry: &Registry,
    slots: &mut Slab<Slot>,
    schedule: &mut Schedule,
    limits: &Limits,
) -> bool {
    let candidates = slots
        .iter()
        .filter(|(_, slot)| slot.metrics && !slot.closing);
    let Some(key) = candidates
        .filter_map(|(key, slot)| slot.conn.room_rank().map(|rank| (rank, key)))
        .min()
        .map(|(_, key)| key)
    else {
        return false;
    };
    let Some(slot) = slots.get_mut(key) else {
        return false;
    };
    slot.conn.close_for_room();
    schedule.settle(registry, key, slot, limits);
    true
}

/// Registers a new connection under a token equal to its slab key, and gives it its first
/// deadline. Returns whether it did (a failed registration drops the socket, closing it).
#[allow(clippy::too_many_arguments)]
fn insert_connection(
    mut stream: Stream,
    peer: Option<SocketAddr>,
    metrics_only: bool,
    registry: &Registry,
    slots: &mut Slab<Slot>,
    now: Instant,
    limits: &Limits,
    timers: &mut Timers,
) -> bool {
    let entry = slots.vacant_entry();
    let key = entry.key();
    if let Err(e) = registry.register(&mut stream, Token(key), Interest::READABLE) {
        log::error!("register failed: {e}");
        return false;
    }
    match peer {
        Some(peer) => log::trace!("token={key} accepted {peer}"),
        None => log::trace!("token={key} accepted a unix: client"),
    }
    let mut conn = Connection::new(stream, Token(key), peer, now);
    if metrics_only {
        conn.serve_metrics_only();
    } else if limits.proxy_protocol {
        conn.expect_proxy_header();
    }
    let deadline = conn.deadline(limits);
    if let Some(when) = deadline {
        timers.reschedule(Token(key), None, Some(when));
    }
    entry.insert(Slot {
        conn,
        interest: Interest::READABLE,
        timer: deadline,
        queued: false,
        closing: false,
        metrics: metrics_only,
    });
    true
}

fn is_out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Raises the soft limit on open files to the hard limit, so that `--max-connections`
/// is not capped by a default of 1024. Returns the new soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            log::warn!("could not raise the open-file limit: {e}");
            return limit.current;
        }
    }
    getrlimit(Resource::Nofile).current
}
