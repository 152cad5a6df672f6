//! Counters for Prometheus, served by a second listener in the same loop
//! (`--metrics-listen`).
//!
//! Everything is a plain integer updated on the loop thread: no atomics, no locks. The
//! `/metrics` page is rendered from them on request, in the Prometheus text exposition
//! format. When metrics are off, nothing here is touched at all.

use std::fmt::Write as _;
use std::time::Duration;

use crate::http::error::HttpError;
use crate::http::request::Method;

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0,
];

/// Why a connection timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The request head did not arrive in time.
    Header,
    /// A request body stalled.
    Body,
    /// Idle between requests.
    KeepAlive,
    /// The client stopped reading.
    Write,
}

impl TimeoutKind {
    const ALL: [TimeoutKind; 4] = [
        TimeoutKind::Header,
        TimeoutKind::Body,
        TimeoutKind::KeepAlive,
        TimeoutKind::Write,
    ];

    fn label(self) -> &'static str {
        match self {
            TimeoutKind::Header => "header",
            TimeoutKind::Body => "body",
            TimeoutKind::KeepAlive => "keep_alive",
            TimeoutKind::Write => "write",
        }
    }
}

/// Every rejection reason, in a fixed order, with its label.
const REASONS: [(HttpError, &str); 13] = [
    (HttpError::BadSyntax, "bad_syntax"),
    (HttpError::BadHost, "bad_host"),
    (HttpError::BadFraming, "bad_framing"),
    (HttpError::BadPath, "bad_path"),
    (HttpError::UriTooLong, "uri_too_long"),
    (HttpError::HeadersTooLarge, "headers_too_large"),
    (HttpError::BodyTooLarge, "body_too_large"),
    (HttpError::Timeout, "timeout"),
    (HttpError::MethodNotAllowed, "method_not_allowed"),
    (HttpError::NotImplemented, "not_implemented"),
    (
        HttpError::UnsupportedTransferCoding,
        "unsupported_transfer_coding",
    ),
    (HttpError::VersionNotSupported, "version_not_supported"),
    (HttpError::ExpectationFailed, "expectation_failed"),
];

/// The counters.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Requests by method (GET, HEAD, OPTIONS, any other) and status class (1xx..5xx).
    requests: [[u64; 5]; 4],
    response_bytes: u64,
    accepted: u64,
    timeouts: [u64; 4],
    rejected: [u64; REASONS.len()],
    duration_buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    iterations: u64,
    events: u64,
    /// Health checks answered 200, and answered 503 (draining).
    health_checks: [u64; 2],
    /// Connections refused under `--proxy-protocol`: [untrusted peer, invalid header].
    proxy_refused: [u64; 2],
}

impl Metrics {
    /// All zero.
    pub fn new() -> Self {
        Metrics::default()
    }

    /// One answered request.
    pub fn request(&mut self, method: Method, status: u16, body_bytes: u64, took: Duration) {
        let m = match method {
            Method::Get => 0,
            Method::Head => 1,
            Method::Options => 2,
            // Only handlers take the others; one row for all keeps the page short.
            _ => 3,
        };
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[m][class] += 1;
        self.response_bytes += body_bytes;
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.duration_buckets[i] += 1;
        }
        self.duration_sum += secs;
        self.duration_count += 1;
    }

    /// A request rejected before it could be answered normally.
    pub fn rejected(&mut self, e: HttpError, body_bytes: u64) {
        if let Some(i) = REASONS.iter().position(|(r, _)| *r == e) {
            self.rejected[i] += 1;
        }
        self.response_bytes += body_bytes;
    }

    /// A connection timed out.
    pub fn timeout(&mut self, kind: TimeoutKind) {
        if let Some(i) = TimeoutKind::ALL.iter().position(|k| *k == kind) {
            self.timeouts[i] += 1;
        }
    }

    /// A health check was answered with `status` (200, or 503 while draining). Health
    /// checks are not counted as requests.
    pub fn health_check(&mut self, status: u16) {
        self.health_checks[usize::from(status != 200)] += 1;
    }

    /// A connection was refused under `--proxy-protocol`: its peer is not trusted
    /// (`untrusted`), or its PROXY header was not valid.
    pub fn proxy_refused(&mut self, untrusted: bool) {
        self.proxy_refused[usize::from(!untrusted)] += 1;
    }

    /// A connection was accepted.
    pub fn accepted(&mut self) {
        self.accepted += 1;
    }

    /// One turn of the loop that handled `events` events.
    pub fn iteration(&mut self, events: usize) {
        self.iterations += 1;
        self.events += events as u64;
    }

    /// The Prometheus text exposition (format version 0.0.4).
    pub fn render(&self, open_connections: usize, access_log_dropped: u64) -> String {
        let mut out = String::with_capacity(4096);
        let methods = ["GET", "HEAD", "OPTIONS", "OTHER"];
        family(
            &mut out,
            "readyserve_requests_total",
            "counter",
            "Requests answered, by method and status class.",
        );
        for (m, method) in methods.iter().enumerate() {
            for class in 0..5 {
                let _ = writeln!(
                    out,
                    "readyserve_requests_total{{method=\"{method}\",class=\"{}xx\"}} {}",
                    class + 1,
                    self.requests[m][class]
                );
            }
        }
        family(
            &mut out,
            "readyserve_response_body_bytes_total",
            "counter",
            "Response body bytes sent.",
        );
        let _ = writeln!(
            out,
            "readyserve_response_body_bytes_total {}",
            self.response_bytes
        );
        family(
            &mut out,
            "readyserve_open_connections",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(out, "readyserve_open_connections {open_connections}");
        family(
            &mut out,
            "readyserve_accepted_connections_total",
            "counter",
            "Client connections accepted.",
        );
        let _ = writeln!(
            out,
            "readyserve_accepted_connections_total {}",
            self.accepted
        );
        family(
            &mut out,
            "readyserve_timeouts_total",
            "counter",
            "Connections closed by a timeout, by kind.",
        );
        for (i, kind) in TimeoutKind::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "readyserve_timeouts_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.timeouts[i]
            );
        }
        family(
            &mut out,
            "readyserve_proxy_protocol_refused_total",
            "counter",
            "Connections refused under --proxy-protocol: peer not trusted, or header invalid.",
        );
        for (i, reason) in ["untrusted_peer", "invalid_header"].iter().enumerate() {
            let _ = writeln!(
                out,
                "readyserve_proxy_protocol_refused_total{{reason=\"{reason}\"}} {}",
                self.proxy_refused[i]
            );
        }
        family(
            &mut out,
            "readyserve_rejected_requests_total",
            "counter",
            "Requests rejected as invalid or over a limit, by reason.",
        );
        for (i, (_, reason)) in REASONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "readyserve_rejected_requests_total{{reason=\"{reason}\"}} {}",
                self.rejected[i]
            );
        }
        family(
            &mut out,
            "readyserve_request_duration_seconds",
            "histogram",
            "Time from a complete request head to its queued response.",
        );
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.duration_buckets[i];
            let _ = writeln!(
                out,
                "readyserve_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "readyserve_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.duration_count
        );
        let _ = writeln!(
            out,
            "readyserve_request_duration_seconds_sum {}",
            self.duration_sum
        );
        let _ = writeln!(
            out,
            "readyserve_request_duration_seconds_count {}",
            self.duration_count
        );
        family(
            &mut out,
            "readyserve_health_checks_total",
            "counter",
            "Health checks answered (--health-path, /healthz here), by status; not in requests.",
        );
        for (i, status) in ["200", "503"].iter().enumerate() {
            let _ = writeln!(
                out,
                "readyserve_health_checks_total{{status=\"{status}\"}} {}",
                self.health_checks[i]
            );
        }
        family(
            &mut out,
            "readyserve_loop_iterations_total",
            "counter",
            "Turns of the event loop.",
        );
        let _ = writeln!(out, "readyserve_loop_iterations_total {}", self.iterations);
        family(
            &mut out,
            "readyserve_loop_events_total",
            "counter",
            "Readiness events handled; divided by iterations, the events per turn.",
        );
        let _ = writeln!(out, "readyserve_loop_events_total {}", self.events);
        family(
            &mut out,
            "readyserve_access_log_dropped_lines_total",
            "counter",
            "Access-log lines lost: the log's reader stopped reading (1 MiB waited), or a write failed.",
        );
        let _ = writeln!(
            out,
            "readyserve_access_log_dropped_lines_total {access_log_dropped}"
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_move_and_render() {
        let mut m = Metrics::new();
        m.accepted();
        m.request(Method::Get, 200, 100, Duration::from_micros(80));
        m.request(Method::Head, 404, 0, Duration::from_millis(2));
        m.rejected(HttpError::UriTooLong, 50);
        m.timeout(TimeoutKind::Header);
        m.iteration(3);
        m.health_check(200);
        m.health_check(503);
        m.health_check(503);
        let text = m.render(7, 4);
        for line in [
            "readyserve_requests_total{method=\"GET\",class=\"2xx\"} 1",
            "readyserve_requests_total{method=\"HEAD\",class=\"4xx\"} 1",
            "readyserve_response_body_bytes_total 150",
            "readyserve_open_connections 7",
            "readyserve_access_log_dropped_lines_total 4",
            "readyserve_accepted_connections_total 1",
            "readyserve_timeouts_total{kind=\"header\"} 1",
            "readyserve_rejected_requests_total{reason=\"uri_too_long\"} 1",
            "readyserve_request_duration_seconds_bucket{le=\"0.0001\"} 1",
            "readyserve_request_duration_seconds_bucket{le=\"0.0025\"} 2",
            "readyserve_request_duration_seconds_count 2",
            "readyserve_loop_events_total 3",
            "readyserve_health_checks_total{status=\"200\"} 1",
            "readyserve_health_checks_total{status=\"503\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
