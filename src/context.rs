//! What one turn of the loop lends a connection: the [`Limits`] it enforces, the turn's
//! [`Clock`], and the [`Context`] of shared settings and shared state it works with.
//!
//! It sits below both of its users, the connection (which runs the protocol) and
//! [`crate::answer`] (which builds responses), so neither has to import the other.

use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use crate::buffers::BufferPool;
use crate::config::{RealIpHeader, TrustedProxy};
use crate::deferred::{BodySender, Mailbox};
use crate::files::cache::FileCache;
use crate::files::static_files::StaticFiles;
use crate::handler::Handler;
use crate::http::response::DateCache;
use crate::ops::access_log::AccessLog;
use crate::ops::metrics::Metrics;

/// The limits a connection enforces, taken from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `--max-header-bytes`.
    pub max_head: usize,
    /// `--max-body-bytes`.
    pub max_body: u64,
    /// `--header-timeout`.
    pub header_timeout: Duration,
    /// `--keep-alive-timeout`.
    pub keep_alive_timeout: Duration,
    /// `--write-timeout`.
    pub write_timeout: Duration,
    /// `--proxy-protocol`: connections begin with a PROXY header.
    pub proxy_protocol: bool,
}

impl From<&crate::config::Config> for Limits {
    fn from(config: &crate::config::Config) -> Self {
        Limits {
            max_head: config.max_header_bytes as usize,
            max_body: config.max_body_bytes,
            header_timeout: config.header_timeout(),
            keep_alive_timeout: config.keep_alive_timeout(),
            write_timeout: config.write_timeout(),
            proxy_protocol: config.proxy_protocol,
        }
    }
}

/// The loop's clock for one turn, read once after `poll` returns: every connection that
/// runs in the turn sees the same time, and the clock is not asked again per call.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Monotonic time, for deadlines and durations.
    pub now: Instant,
    /// Wall-clock time, for the access log.
    pub wall: SystemTime,
}

impl Clock {
    /// Reads both clocks.
    pub fn read() -> Self {
        Clock {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// What one turn of the loop lends a connection: settings it only reads (limits, the root,
/// the `Date` value, the proxy rules), and the shared things it writes to (the access log,
/// the cache, the buffer pool, the counters, the handler).
///
/// Built with [`Context::new`]; the `with_*` methods add what only the server has.
pub struct Context<'a> {
    /// Limits and timeouts.
    pub limits: &'a Limits,
    /// The document root.
    pub files: &'a StaticFiles,
    /// The current `Date` header value.
    pub date: &'a DateCache,
    /// The access log.
    pub access_log: &'a mut AccessLog,
    /// The loop's clock for this turn (one `Instant::now()` per turn, not per call).
    pub now: Instant,
    /// Wall-clock time for this turn, for the access log.
    pub wall: SystemTime,
    /// The server is shutting down: finish what is in flight, start nothing new.
    pub shutting_down: bool,
    /// The library user's handler, asked before the static files.
    pub handler: Option<&'a mut dyn Handler>,
    /// Small files in memory.
    pub cache: &'a mut FileCache,
    /// Buffers that idle connections gave back.
    pub pool: &'a mut BufferPool,
    /// The counters, when `--metrics-listen` is set.
    pub metrics: Option<&'a mut Metrics>,
    /// Client connections open now (for the metrics page).
    pub open_connections: usize,
    /// `--trust-proxy`.
    pub trusted: &'a [TrustedProxy],
    /// `--real-ip-header`: the one header that names the client behind a trusted proxy.
    pub real_ip_header: RealIpHeader,
    /// `--health-path`, answered before files and handlers.
    pub health_path: Option<&'a str>,
    /// The server got SIGTERM and is in its `--drain-delay`: it still serves, but its
    /// health checks fail, so that load balancers take it out.
    pub draining: bool,
    /// Where handlers' worker threads leave answers for the loop; `None` without a loop
    /// (then a handler that answers later gets 500).
    pub mailbox: Option<&'a Arc<Mailbox>>,
    /// The senders of the `/loop/events` streams (the live view), which the loop feeds a
    /// snapshot a few times a second; `None` without a loop.
    pub watchers: Option<&'a mut Vec<BodySender>>,
}

impl<'a> Context<'a> {
    /// A context for one turn at `clock`: no handler, no counters, no trusted proxy, not
    /// shutting down.
    pub fn new(
        limits: &'a Limits,
        files: &'a StaticFiles,
        date: &'a DateCache,
        access_log: &'a mut AccessLog,
        cache: &'a mut FileCache,
        pool: &'a mut BufferPool,
        clock: Clock,
    ) -> Self {
        Context {
            limits,
            files,
            date,
            access_log,
            now: clock.now,
            wall: clock.wall,
            shutting_down: false,
            handler: None,
            cache,
            pool,
            metrics: None,
            open_connections: 0,
            trusted: &[],
            real_ip_header: RealIpHeader::XForwardedFor,
            health_path: None,
            draining: false,
            mailbox: None,
            watchers: None,
        }
    }

    /// Lets handlers answer later, through `mailbox`.
    pub fn with_mailbox(mut self, mailbox: &'a Arc<Mailbox>) -> Self {
        self.mailbox = Some(mailbox);
        self
    }

    /// Keeps the senders of new `/loop/events` streams in `watchers`.
    pub fn with_watchers(mut self, watchers: &'a mut Vec<BodySender>) -> Self {
        self.watchers = Some(watchers);
        self
    }

    /// Asks `handler` before the static files.
    pub fn with_handler(mut self, handler: Option<&'a mut dyn Handler>) -> Self {
        self.handler = handler;
        self
    }

    /// Counts into `metrics`, which report `open_connections` client connections.
    pub fn with_metrics(
        mut self,
        metrics: Option<&'a mut Metrics>,
        open_connections: usize,
    ) -> Self {
        self.metrics = metrics;
        self.open_connections = open_connections;
        self
    }

    /// Takes the client address from `header` when the peer is in `trusted`.
    pub fn with_proxies(mut self, trusted: &'a [TrustedProxy], header: RealIpHeader) -> Self {
        self.trusted = trusted;
        self.real_ip_header = header;
        self
    }

    /// Answers health checks at `path`; `draining` makes them fail (503).
    pub fn with_health(mut self, path: Option<&'a str>, draining: bool) -> Self {
        self.health_path = path;
        self.draining = draining;
        self
    }

    /// Marks the turn as one during shutdown: finish what is in flight, start nothing new.
    pub fn shutting_down(mut self, yes: bool) -> Self {
        self.shutting_down = yes;
        self
    }
}
