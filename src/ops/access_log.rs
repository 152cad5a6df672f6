//! The access log: one line per response, in nginx's `combined` format.
//!
//! ```text
//! 127.0.0.1 - - [24/Nov/2026:17:24:34 +0000] "GET /index.html HTTP/1.1" 200 1024 "-" "curl/8.5.0" 87
//! ```
//!
//! That is `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//! "$http_referer" "$http_user_agent"`, then the time the server spent on the request in
//! microseconds, which log tools such as goaccess skip or read as an extra field. Times are
//! UTC. Quotes, backslashes and control bytes inside the quoted fields are escaped as `\xHH`,
//! as nginx does, so a client cannot forge a log line.
//!
//! With `--access-log-format json`, each line is one JSON object with the same fields.
//!
//! Lines are collected in a buffer and written once per loop iteration ([`AccessLog::flush`]),
//! not once per request: a write(2) per request would cost more than serving a cached file.
//! On SIGHUP the file is reopened ([`AccessLog::reopen`]), the logrotate convention. A failed
//! write (a full disk) is reported once, and serving goes on.
//!
//! The loop must never wait for the log's reader. A pipe (stdout piped into a program, a
//! FIFO) or a socket (journald's stdout) whose reader stops reading fills up, and a blocking
//! write(2) would then stop the whole server, signals included. So writes that could wait
//! do not:
//! - a pipe, FIFO or terminal is written through a non-blocking file description of its
//!   own. On Linux, stdout is reopened through `/proc/self/fd/1` for that, so that the
//!   description the process shares with others stays blocking. Where that is not
//!   possible (another system; another user's pipe), it is written only when poll(2) says
//!   it is writable, `PIPE_BUF` bytes at a time;
//! - a socket is written with `MSG_DONTWAIT`;
//! - a regular file is written as it is: a disk does not stall for long.
//!
//! What the reader does not take waits in memory, up to [`BACKLOG`]; after that, lines are
//! dropped and counted (`/metrics` too), and the count is reported once the reader reads
//! again. A failed write (a full disk, a reader that exited) loses the lines until writing
//! works again, which is reported with the count; a line cut short by it is finished first,
//! so that lines never run into each other. The server's own log on stderr is guarded the
//! same way ([`crate::ops::stderr_log`]).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ops::stderr_log::{own_description, writable_now};

/// Lines the log's reader has not taken yet are kept up to this many bytes (a few thousand
/// lines); after that, new lines are dropped and counted.
pub const BACKLOG: usize = 1024 * 1024;

/// Pending lines are written at once, mid-turn, when there are this many bytes of them.
const WRITE_AT: usize = 64 * 1024;

/// While lines wait for a reader that stopped reading, the loop wakes up this often to try
/// again, even when nothing else happens.
const RETRY: Duration = Duration::from_millis(10);

/// At exit, lines still waiting get this long in all to go out.
const LAST_WAIT: Duration = Duration::from_secs(1);

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output (`-`).
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// No access log (`off`).
    Off,
}

impl std::str::FromStr for AccessLogTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "" => return Err("expected a path, '-' or 'off'".to_string()),
            "-" => AccessLogTarget::Stdout,
            "off" => AccessLogTarget::Off,
            path => AccessLogTarget::File(PathBuf::from(path)),
        })
    }
}

/// The access log's line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    /// nginx's `combined`, plus the request time in microseconds.
    Combined,
    /// One JSON object per line with the same fields.
    Json,
}

/// One finished request, as the access log sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The client address (or `None` when not an IP peer).
    pub peer: Option<IpAddr>,
    /// The peer is a Unix-socket client (logged as `unix:`).
    pub peer_is_unix: bool,
    /// The request line as received, e.g. `GET / HTTP/1.1`.
    pub request_line: &'a [u8],
    /// The status code sent.
    pub status: u16,
    /// Body bytes sent (0 for HEAD and 304).
    pub body_bytes: u64,
    /// The `Referer` header.
    pub referer: Option<&'a [u8]>,
    /// The `User-Agent` header.
    pub user_agent: Option<&'a [u8]>,
    /// Time from the start of the request to its response's last byte sent (or the close
    /// that cut it short), in microseconds.
    pub micros: u64,
}

/// One connection's access-log lines whose responses are still on their way out.
///
/// A line is written when its response has been sent, not when it was queued, so that it
/// tells what really happened: the body bytes that went out and the time it took. A client
/// that abandons a 4 MB download after 1 MB is logged with 1 MB, and one that reads slowly
/// is logged with its real duration. Each response is known by where it ends in the
/// connection's output, counted in bytes since the accept; the connection reports how many
/// it has sent ([`Unsent::sent`]) and, on close, how far it got ([`Unsent::cut_short`]).
///
/// The request's text (request line, `Referer`, `User-Agent`) must outlive the input
/// buffer it was parsed from, so it is copied here. The copies count toward the
/// connection's high-water mark ([`Unsent::held_bytes`]): a client that pipelines requests
/// and never reads cannot make us hold their text without bound. The queue is pooled with
/// the connection's other buffers, so the steady state allocates nothing.
#[derive(Debug, Default)]
pub struct Unsent {
    /// The text fields of every waiting line, back to back; cleared when none waits.
    text: Vec<u8>,
    lines: VecDeque<Waiting>,
}

/// A line waiting for its response to go out.
#[derive(Debug, Clone)]
struct Waiting {
    /// Where the response ends in the connection's output (bytes since the accept);
    /// `u64::MAX` while a streamed body is still open.
    end: u64,
    /// Where its body starts: the body is the last part of the response.
    body_start: u64,
    status: u16,
    started: Instant,
    peer: Option<IpAddr>,
    peer_is_unix: bool,
    /// `text[..]` ranges, as (start, length).
    request_line: (usize, usize),
    referer: Option<(usize, usize)>,
    user_agent: Option<(usize, usize)>,
}

impl Unsent {
    /// Whether no line waits.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes of request text held, for the connection's high-water mark.
    pub fn held_bytes(&self) -> usize {
        self.text.len()
    }

    /// Whether it holds memory, all of it free: a pool would have it.
    pub fn has_capacity(&self) -> bool {
        self.text.capacity() > 0 || self.lines.capacity() > 0
    }

    /// Whether a pool should keep it: empty, with some capacity, but not grown large by a
    /// burst of pipelined requests or a huge `User-Agent` (then it is freed instead).
    pub fn worth_keeping(&self) -> bool {
        self.is_empty()
            && self.has_capacity()
            && self.text.capacity() <= 16 * 1024
            && self.lines.capacity() <= 64
    }

    /// Keeps `entry` (its `micros` is ignored) until the connection's output has reached
    /// `end`; `started` is when its request started.
    pub fn push(&mut self, entry: &Entry<'_>, end: u64, started: Instant) {
        let mut keep = |field: &[u8]| {
            let at = self.text.len();
            self.text.extend_from_slice(field);
            (at, field.len())
        };
        let request_line = keep(entry.request_line);
        let referer = entry.referer.map(&mut keep);
        let user_agent = entry.user_agent.map(&mut keep);
        self.lines.push_back(Waiting {
            end,
            body_start: end.saturating_sub(entry.body_bytes),
            status: entry.status,
            started,
            peer: entry.peer,
            peer_is_unix: entry.peer_is_unix,
            request_line,
            referer,
            user_agent,
        });
    }

    /// Keeps `entry` for a response whose body is streamed and has no known end yet: its
    /// head ends at `head_end`. [`Unsent::stream_ended`] gives it its end.
    pub fn push_open(&mut self, entry: &Entry<'_>, head_end: u64, started: Instant) {
        self.push(entry, u64::MAX, started);
        if let Some(w) = self.lines.back_mut() {
            w.body_start = head_end;
        }
    }

    /// The open streamed body has ended at `end` (its last chunk is queued up to there).
    pub fn stream_ended(&mut self, end: u64) {
        if let Some(w) = self.lines.iter_mut().find(|w| w.end == u64::MAX) {
            w.end = end;
        }
    }

    /// The connection has sent `sent` bytes since the accept: writes the lines of the
    /// responses that are now all out. Their time is taken now, not from the loop's clock
    /// for the turn: a response sent in the turn its request arrived took more than zero.
    pub fn sent(&mut self, sent: u64, wall: SystemTime, log: &mut AccessLog) {
        if self.lines.front().is_none_or(|w| w.end > sent) {
            return;
        }
        let now = Instant::now();
        while self.lines.front().is_some_and(|w| w.end <= sent) {
            self.write_front(sent, now, wall, log);
        }
        if self.lines.is_empty() {
            self.text.clear();
        }
    }

    /// The connection closes having sent `sent` bytes: writes every waiting line with the
    /// part of its body that went out (none, for responses that never started).
    pub fn cut_short(&mut self, sent: u64, wall: SystemTime, log: &mut AccessLog) {
        let now = Instant::now();
        while !self.lines.is_empty() {
            self.write_front(sent, now, wall, log);
        }
        self.text.clear();
    }

    fn write_front(&mut self, sent: u64, now: Instant, wall: SystemTime, log: &mut AccessLog) {
        let Some(w) = self.lines.pop_front() else {
            return;
        };
        // The body is the response's tail: what went out of it is what went out past its
        // start, up to its end.
        let field = |(at, len): (usize, usize)| self.text.get(at..at + len).unwrap_or_default();
        let micros = now.saturating_duration_since(w.started).as_micros();
        let entry = Entry {
            peer: w.peer,
            peer_is_unix: w.peer_is_unix,
            request_line: field(w.request_line),
            status: w.status,
            body_bytes: sent.min(w.end).saturating_sub(w.body_start),
            referer: w.referer.map(field),
            user_agent: w.user_agent.map(field),
            micros: u64::try_from(micros).unwrap_or(u64::MAX),
        };
        log.log(&entry, wall);
    }
}

/// The access-log writer.
pub struct AccessLog {
    /// Where the lines go (`None`: nowhere). A write that would wait says `WouldBlock`.
    out: Option<Box<dyn Write + Send>>,
    /// Lines not written yet: this turn's, and those a stalled reader has not taken.
    pending: Vec<u8>,
    /// Lines dropped since the last report, because `pending` had reached [`BACKLOG`].
    dropped: u64,
    /// Lines dropped since the start, for `/metrics`.
    dropped_total: u64,
    /// The last write would have waited: the reader is not keeping up.
    stalled: bool,
    /// The last byte written was not a line's last: the rest of that line comes first.
    torn: bool,
    /// Where the lines go, for reopening.
    target: AccessLogTarget,
    format: AccessLogFormat,
    /// Scratch line, reused so that logging does not allocate.
    line: Vec<u8>,
    /// The second `time_local` was last formatted for, and the text.
    second: u64,
    time_local: String,
    /// A write failed (not a stall: a full disk, a reader that is gone); it has been
    /// reported, and the recovery will be.
    failed: bool,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("enabled", &self.out.is_some())
            .finish()
    }
}

impl AccessLog {
    /// Opens the access log named by `target`. A file is opened for appending.
    pub fn open(target: &AccessLogTarget, format: AccessLogFormat) -> io::Result<Self> {
        let out = open_target(target, false).map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => io::Error::new(
                e.kind(),
                format!("{e}: a socket, or a FIFO no process reads (for stdout, use '-')"),
            ),
            _ => e,
        })?;
        let mut log = Self::with_writer(out);
        log.target = target.clone();
        log.format = format;
        Ok(log)
    }

    /// Reopens the log file (after logrotate moved it), writing what is pending first.
    /// On failure the old file stays in use and the error is logged. A FIFO that no one
    /// reads any more is a failure too (the open does not wait for a reader).
    pub fn reopen(&mut self) {
        if !matches!(self.target, AccessLogTarget::File(_)) {
            return;
        }
        self.flush();
        match open_target(&self.target, true) {
            Ok(out) => self.out = out,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => log::error!(
                "cannot reopen the access log: it is a FIFO no process reads; keeping the old one"
            ),
            Err(e) => log::error!("cannot reopen the access log: {e}; keeping the old file"),
        }
    }

    /// An access log writing to `out` (`None` logs nothing). Useful in tests. A write to
    /// `out` that would wait must say `WouldBlock` instead.
    pub fn with_writer(out: Option<Box<dyn Write + Send>>) -> Self {
        AccessLog {
            out,
            pending: Vec::new(),
            dropped: 0,
            dropped_total: 0,
            stalled: false,
            torn: false,
            target: AccessLogTarget::Off,
            format: AccessLogFormat::Combined,
            line: Vec::with_capacity(256),
            second: u64::MAX,
            time_local: String::new(),
            failed: false,
        }
    }

    /// Whether lines are written at all. Callers skip gathering an [`Entry`] when not.
    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }

    /// Appends one line for `entry`, stamped with `now`.
    pub fn log(&mut self, entry: &Entry<'_>, now: SystemTime) {
        if self.out.is_none() {
            return;
        }
        self.update_time(now);
        match self.format {
            AccessLogFormat::Combined => self.format_combined(entry),
            AccessLogFormat::Json => self.format_json(entry),
        }
        // A line longer than the backlog still goes out, alone, to a reader that reads.
        if !self.pending.is_empty() && self.pending.len() + self.line.len() > BACKLOG {
            // The reader may have read since the last try: one more, before dropping.
            self.write_pending();
            if !self.pending.is_empty() && self.pending.len() + self.line.len() > BACKLOG {
                if self.dropped == 0 && !self.failed {
                    log::warn!(
                        "access log: its reader is not keeping up and {} KiB of lines wait; \
                         dropping lines until it reads again",
                        BACKLOG / 1024
                    );
                }
                self.dropped += 1;
                self.dropped_total += 1;
                return;
            }
        }
        self.pending.extend_from_slice(&self.line);
        if self.pending.len() >= WRITE_AT && !self.stalled {
            self.write_pending();
        }
    }

    fn format_combined(&mut self, entry: &Entry<'_>) {
        let line = &mut self.line;
        line.clear();
        match entry.peer {
            Some(ip) => {
                let _ = write!(line, "{ip}");
            }
            None if entry.peer_is_unix => line.extend_from_slice(b"unix:"),
            None => line.push(b'-'),
        }
        line.extend_from_slice(b" - - [");
        line.extend_from_slice(self.time_local.as_bytes());
        line.extend_from_slice(b"] \"");
        escape_into(line, entry.request_line);
        let _ = write!(line, "\" {} {} \"", entry.status, entry.body_bytes);
        escape_into(line, entry.referer.unwrap_or(b"-"));
        line.extend_from_slice(b"\" \"");
        escape_into(line, entry.user_agent.unwrap_or(b"-"));
        let _ = writeln!(line, "\" {}", entry.micros);
    }

    fn format_json(&mut self, entry: &Entry<'_>) {
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"remote_addr\":\"");
        match entry.peer {
            Some(ip) => {
                let _ = write!(line, "{ip}");
            }
            None if entry.peer_is_unix => line.extend_from_slice(b"unix:"),
            None => line.push(b'-'),
        }
        line.extend_from_slice(b"\",\"time_local\":\"");
        line.extend_from_slice(self.time_local.as_bytes());
        line.extend_from_slice(b"\",\"request\":\"");
        json_escape_into(line, entry.request_line);
        let _ = write!(
            line,
            "\",\"status\":{},\"body_bytes_sent\":{},\"http_referer\":\"",
            entry.status, entry.body_bytes
        );
        json_escape_into(line, entry.referer.unwrap_or(b"-"));
        line.extend_from_slice(b"\",\"http_user_agent\":\"");
        json_escape_into(line, entry.user_agent.unwrap_or(b"-"));
        let _ = writeln!(line, "\",\"request_time_us\":{}}}", entry.micros);
    }

    /// Writes pending lines out, as far as the reader takes them without waiting. The loop
    /// calls this once per iteration.
    pub fn flush(&mut self) {
        self.write_pending();
    }

    /// Lines dropped since the start because the reader did not read (for `/metrics`).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// When the loop should wake up to try again, if lines wait for a stalled reader.
    pub fn retry_in(&self) -> Option<Duration> {
        (self.out.is_some() && !self.pending.is_empty()).then_some(RETRY)
    }

    /// At exit: writes what is pending, for at most a second in all (a reader that
    /// takes a few bytes at a time must not hold the exit); reports what is lost.
    pub fn finish(&mut self) {
        let give_up = Instant::now() + LAST_WAIT;
        loop {
            self.write_pending();
            if self.out.is_none() || self.pending.is_empty() || Instant::now() >= give_up {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let lost = self.dropped + lines_in(&self.pending);
        if lost > 0 {
            log::warn!("access log: {lost} lines lost at exit (dropped before, or still waiting)");
        }
        self.pending.clear();
        self.dropped = 0;
    }

    fn write_pending(&mut self) {
        let Some(out) = self.out.as_mut() else {
            self.pending.clear();
            return;
        };
        let mut done = 0;
        let result = loop {
            if done == self.pending.len() {
                break out.flush();
            }
            match out.write(&self.pending[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if done > 0 {
            self.torn = self.pending[done - 1] != b'\n';
        }
        self.pending.drain(..done);
        match result {
            // Nothing to write says nothing about the reader or the disk.
            Ok(()) if done == 0 => {}
            Ok(()) => {
                if self.failed {
                    log::warn!(
                        "access log: written again; {} lines were lost meanwhile",
                        self.dropped
                    );
                } else if self.dropped > 0 {
                    log::warn!(
                        "access log: its reader reads again; {} lines were dropped meanwhile",
                        self.dropped
                    );
                }
                self.dropped = 0;
                self.failed = false;
                self.stalled = false;
            }
            // The reader has not read yet: everything waits (new lines are dropped once
            // the backlog is full).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stalled = true,
            Err(e) => {
                // A full disk, or a reader that is gone: the lines are lost, all but the
                // rest of a line cut short, which is kept so that the next line written
                // does not run into it.
                self.report(&e);
                let keep = match self.pending.iter().position(|&b| b == b'\n') {
                    Some(end) if self.torn => end + 1,
                    _ => 0,
                };
                let lost = lines_in(&self.pending[keep..]);
                self.pending.truncate(keep);
                self.dropped += lost;
                self.dropped_total += lost;
                self.stalled = false;
            }
        }
    }

    fn report(&mut self, e: &io::Error) {
        if !self.failed {
            log::error!("access log write failed: {e}; lines are lost until it works again");
            self.failed = true;
        }
    }

    fn update_time(&mut self, now: SystemTime) {
        let second = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if second == self.second {
            return;
        }
        self.second = second;
        let format = time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        );
        self.time_local = time::OffsetDateTime::from(now)
            .format(&format)
            .unwrap_or_else(|_| "01/Jan/1970:00:00:00 +0000".to_string());
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The number of whole lines in `bytes`.
fn lines_in(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Opens where the lines go, for writes that never wait for a reader (see the module's
/// docs). `reopening`: a FIFO with no reader is an error instead of a wait for one (at
/// start-up, the wait is what a FIFO user expects; in the running loop it would stop the
/// server).
fn open_target(
    target: &AccessLogTarget,
    reopening: bool,
) -> io::Result<Option<Box<dyn Write + Send>>> {
    use rustix::fs::FileType;
    let fd: OwnedFd = match target {
        AccessLogTarget::Off => return Ok(None),
        AccessLogTarget::Stdout => io::stdout().as_fd().try_clone_to_owned()?,
        AccessLogTarget::File(path) => {
            let mut options = OpenOptions::new();
            options.create(true).append(true);
            if reopening {
                options.custom_flags(libc::O_NONBLOCK);
            }
            options.open(path)?.into()
        }
    };
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    Ok(Some(match kind {
        FileType::RegularFile => Box::new(std::fs::File::from(fd)),
        FileType::Socket => {
            use rustix::net::{SocketType, sockopt};
            let kind = sockopt::socket_type(&fd)?;
            let datagrams = kind == SocketType::DGRAM || kind == SocketType::SEQPACKET;
            Box::new(WholeLines(DontWait { fd, datagrams }))
        }
        // Where stdout cannot be reopened (another user's pipe, another system), `Polled`.
        _ if matches!(target, AccessLogTarget::Stdout) => match own_description(1) {
            Some(file) => Box::new(WholeLines(file)),
            None => {
                log::debug!("access log: stdout is written when poll(2) says it is writable");
                Box::new(WholeLines(Polled(fd)))
            }
        },
        _ => {
            // Opened here: the description is ours alone.
            rustix::io::ioctl_fionbio(&fd, true)?;
            Box::new(WholeLines(std::fs::File::from(fd)))
        }
    }))
}

/// Writes whole lines, at most `PIPE_BUF` bytes of them at a time (a longer line alone). A
/// pipe takes a write that size whole or not at all, so a reader that stalls is never left
/// with part of a line that another writer's bytes (the server's own log, with `2>&1`)
/// would then follow.
struct WholeLines<W>(W);

impl<W: Write> Write for WholeLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let head = &buf[..buf.len().min(libc::PIPE_BUF)];
        let end = match head.iter().rposition(|&b| b == b'\n') {
            Some(last) => last + 1,
            None => buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |i| i + 1),
        };
        self.0.write(&buf[..end])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A pipe or terminal shared with other processes, written only when poll(2) says it is
/// writable, and at most `PIPE_BUF` bytes at a time: a write that small to a pipe that
/// polls writable does not wait. (A terminal polls writable with less room than that: one
/// that stops being read can still make a write wait. Only another user's terminal, which
/// cannot be reopened, is written this way.)
struct Polled(OwnedFd);

impl Write for Polled {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !writable_now(&self.0) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(libc::PIPE_BUF);
        Ok(rustix::io::write(&self.0, &buf[..n])?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket written with `MSG_DONTWAIT`: non-blocking per call, without changing the
/// socket's flags for whoever shares it (journald's stdout socket, say). On a datagram
/// socket each line is one message.
struct DontWait {
    fd: OwnedFd,
    datagrams: bool,
}

impl Write for DontWait {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = match self.datagrams {
            true => buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |i| i + 1),
            false => buf.len(),
        };
        Ok(rustix::net::send(
            &self.fd,
            &buf[..end],
            rustix::net::SendFlags::DONTWAIT,
        )?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies `bytes` into a JSON string, escaping quotes, backslashes, control bytes, and
/// bytes outside ASCII (as `\u00HH`, so that invalid UTF-8 still gives valid JSON).
fn json_escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
    }
}

/// Copies `bytes` into `out`, escaping `"`, `\` and anything not printable ASCII as `\xHH`.
fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that takes at most `room` bytes per call, then fails with `then` (or takes
    /// everything when `then` is `None`); the test can read back what it took.
    #[derive(Clone)]
    struct Scripted {
        taken: Arc<Mutex<Vec<u8>>>,
        plan: Arc<Mutex<(usize, Option<io::ErrorKind>)>>,
    }

    impl Scripted {
        fn new() -> Self {
            Scripted {
                taken: Arc::default(),
                plan: Arc::new(Mutex::new((usize::MAX, None))),
            }
        }
        fn set(&self, room: usize, then: Option<io::ErrorKind>) {
            *self.plan.lock().expect("plan") = (room, then);
        }
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.taken.lock().expect("taken")).into_owned()
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut plan = self.plan.lock().expect("plan");
            if plan.0 == 0 {
                return Err(plan.1.unwrap_or(io::ErrorKind::WouldBlock).into());
            }
            let n = buf.len().min(plan.0);
            if plan.1.is_some() {
                plan.0 -= n;
            }
            self.taken
                .lock()
                .expect("taken")
                .extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(log: &mut AccessLog, target: &str, agent: &[u8]) {
        let request_line = format!("GET {target} HTTP/1.1");
        log.log(
            &Entry {
                peer: None,
                peer_is_unix: false,
                request_line: request_line.as_bytes(),
                status: 200,
                body_bytes: 1,
                referer: None,
                user_agent: Some(agent),
                micros: 1,
            },
            UNIX_EPOCH,
        );
    }

    /// A full disk cuts a line short: the rest of that line is written first when space
    /// comes back, so the next line does not run into it; lines in between are lost and
    /// counted.
    #[test]
    fn a_line_cut_by_a_failed_write_is_finished_before_the_next() {
        let out = Scripted::new();
        let mut log = AccessLog::with_writer(Some(Box::new(out.clone())));
        line(&mut log, "/a", b"x");
        log.flush();
        out.set(20, Some(io::ErrorKind::StorageFull)); // 20 bytes, then ENOSPC
        line(&mut log, "/b", b"x");
        log.flush();
        line(&mut log, "/c", b"x");
        log.flush();
        out.set(usize::MAX, None);
        line(&mut log, "/d", b"x");
        log.flush();
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].contains("\"GET /b HTTP/1.1\""), "{text}");
        assert!(lines[2].contains("\"GET /d HTTP/1.1\""), "{text}");
        assert_eq!(log.dropped_total(), 1); // /c
    }

    /// A line longer than the whole backlog is still written to a reader that reads.
    #[test]
    fn a_line_longer_than_the_backlog_is_written() {
        let out = Scripted::new();
        let mut log = AccessLog::with_writer(Some(Box::new(out.clone())));
        line(&mut log, "/long", &vec![b'"'; BACKLOG]); // each escaped to 4 bytes
        log.flush();
        assert!(out.text().contains("GET /long"));
        assert_eq!(log.dropped_total(), 0);
    }

    /// A reader that keeps taking a few bytes at a time cannot hold the exit: `finish`
    /// gives up after a second in all. (This checks that it returns, not how fast.)
    #[test]
    fn finish_is_bounded_for_a_reader_that_trickles() {
        let out = Scripted::new();
        let mut log = AccessLog::with_writer(Some(Box::new(out.clone())));
        out.set(0, None); // stalled
        for i in 0..1000 {
            line(&mut log, &format!("/{i}"), b"x");
        }
        log.flush();
        // One byte per write: about 90 KB would take many seconds of 10 ms steps.
        let trickle = std::thread::spawn(move || {
            out.set(1, Some(io::ErrorKind::WouldBlock));
            for _ in 0..2000 {
                std::thread::sleep(Duration::from_millis(5));
                out.set(1, Some(io::ErrorKind::WouldBlock));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            log.finish();
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(8)).is_ok(),
            "finish waited for as long as the reader trickled"
        );
        drop(trickle);
    }

    /// Writes to a pipe are whole lines of at most PIPE_BUF bytes (a longer line alone), so
    /// a pipe takes each whole or not at all.
    #[test]
    fn pipe_writes_are_whole_lines() {
        let out = Scripted::new();
        let mut lines = WholeLines(out.clone());
        let mut buf = Vec::new();
        for i in 0..200 {
            buf.extend_from_slice(format!("line {i} {}\n", "x".repeat(i)).as_bytes());
        }
        let mut sizes = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let n = lines.write(&buf[at..]).expect("write");
            sizes.push(n);
            at += n;
            assert_eq!(buf[at - 1], b'\n', "a write ended inside a line");
        }
        assert!(sizes.iter().all(|&n| n <= libc::PIPE_BUF), "{sizes:?}");
        assert!(sizes.len() > 1);
        let long = format!("{}\nnext\n", "y".repeat(3 * libc::PIPE_BUF));
        assert_eq!(
            lines.write(long.as_bytes()).expect("write"),
            3 * libc::PIPE_BUF + 1
        );
        assert_eq!(
            out.text(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&buf),
                &long[..3 * libc::PIPE_BUF + 1]
            )
        );
    }

    /// A pipe shared with others (not reopened) is written only when poll(2) says it is
    /// writable, and then no more than PIPE_BUF: a full pipe says WouldBlock, it does not
    /// block.
    #[test]
    fn a_shared_pipe_says_would_block_when_full() {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let mut polled = Polled(OwnedFd::from(writer));
        let (tx, rx) = std::sync::mpsc::channel();
        // In a thread: a write that blocks would hang the test instead of failing it.
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 100_000];
            let mut total = 0;
            let full = loop {
                match polled.write(&chunk) {
                    Ok(n) => total += n,
                    Err(e) => break e,
                }
                if total > 10 << 20 {
                    break io::Error::other("the pipe never filled");
                }
            };
            let _ = tx.send((full.kind(), total));
        });
        let (kind, total) = rx
            .recv_timeout(Duration::from_secs(8))
            .expect("a write to the full pipe blocked");
        assert_eq!(kind, io::ErrorKind::WouldBlock);
        assert!(total > 0 && total <= 1 << 20, "{total}");
        drop(reader);
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_format_is_valid_and_escaped() {
        let shared = Shared::default();
        let mut log = AccessLog::with_writer(Some(Box::new(shared.clone())));
        log.format = AccessLogFormat::Json;
        let t = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        log.log(
            &Entry {
                peer: None,
                peer_is_unix: true,
                request_line: b"GET /\"\\\xff HTTP/1.1",
                status: 404,
                body_bytes: 9,
                referer: Some(b"http://r/"),
                user_agent: None,
                micros: 7,
            },
            t,
        );
        log.flush();
        let text = String::from_utf8(shared.0.lock().map(|v| v.clone()).unwrap_or_default());
        assert_eq!(
            text.ok().as_deref(),
            Some(
                "{\"remote_addr\":\"unix:\",\"time_local\":\"06/Nov/1994:08:49:37 +0000\",\"request\":\"GET /\\\"\\\\\\u00ff HTTP/1.1\",\"status\":404,\"body_bytes_sent\":9,\"http_referer\":\"http://r/\",\"http_user_agent\":\"-\",\"request_time_us\":7}\n"
            )
        );
    }

    /// Lines are written once their response is out, in order, with the body bytes that
    /// went out; a close writes the rest with what they got.
    #[test]
    fn unsent_lines_wait_for_their_bytes() {
        let sink = Shared::default();
        let mut log = AccessLog::with_writer(Some(Box::new(sink.clone())));
        // Requests that started 5 ms ago.
        let start = Instant::now() - std::time::Duration::from_millis(5);
        let entry = |line: &'static [u8], body_bytes| Entry {
            peer: None,
            peer_is_unix: true,
            request_line: line,
            status: 200,
            body_bytes,
            referer: None,
            user_agent: Some(b"ua"),
            micros: 0,
        };
        let mut unsent = Unsent::default();
        // Three responses: 100 bytes (40 of head), then 1000 (100 of head), then 50.
        unsent.push(&entry(b"GET /a HTTP/1.1", 60), 100, start);
        unsent.push(&entry(b"GET /b HTTP/1.1", 900), 1100, start);
        unsent.push(&entry(b"GET /c HTTP/1.1", 50), 1150, start);
        assert_eq!(unsent.held_bytes(), 3 * 15 + 3 * 2);
        let wall = SystemTime::now();
        unsent.sent(99, wall, &mut log);
        log.flush();
        assert!(sink.0.lock().unwrap().is_empty(), "nothing is all out yet");
        unsent.sent(600, wall, &mut log);
        unsent.cut_short(600, wall, &mut log);
        assert!(unsent.is_empty() && unsent.held_bytes() == 0);
        log.flush();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("\"GET /a HTTP/1.1\" 200 60 "), "{text}");
        let micros: u64 = lines[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(micros >= 5000, "timed when written: {micros}");
        // 600 - 100 = 500 bytes of /b went out, 100 of them its head.
        assert!(
            lines[1].contains("\"GET /b HTTP/1.1\" 200 400 \"-\" \"ua\""),
            "{text}"
        );
        assert!(lines[2].contains("\"GET /c HTTP/1.1\" 200 0 "), "{text}");
    }

    #[test]
    fn combined_format_with_escaping() {
        let shared = Shared::default();
        let mut log = AccessLog::with_writer(Some(Box::new(shared.clone())));
        let t = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        log.log(
            &Entry {
                peer: Some(IpAddr::from([127, 0, 0, 1])),
                peer_is_unix: false,
                request_line: b"GET /a\"b HTTP/1.1",
                status: 200,
                body_bytes: 1234,
                referer: None,
                user_agent: Some(b"curl/8\x01"),
                micros: 42,
            },
            t,
        );
        log.flush();
        let text = String::from_utf8(shared.0.lock().map(|v| v.clone()).unwrap_or_default());
        assert_eq!(
            text.ok().as_deref(),
            Some(
                "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a\\x22b HTTP/1.1\" 200 1234 \"-\" \"curl/8\\x01\" 42\n"
            )
        );
    }
}
