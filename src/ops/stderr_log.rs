//! The server's own log on stderr, written so that the loop never waits for it.
//!
//! simple_logger writes each line with `eprintln!`: a blocking write(2), which panics when
//! stderr's reader has gone (EPIPE). Under one event loop both are fatal. A stderr pipe
//! whose reader stops reading (`2>&1 | program`, a stalled journald) stops the whole server,
//! signals included; one whose reader exits (`2>&1 | head`) ends it at the next log line.
//!
//! [`Guarded`] wraps the logger:
//! - on Linux, a stderr pipe or terminal is replaced (dup2) by a non-blocking description
//!   of its own, opened through `/proc/self/fd/2`, as the access log does with stdout: a
//!   write to it fails with EAGAIN instead of waiting (the description shared with other
//!   processes stays as it was). A pipe is also widened to 1 MiB, so that a burst of lines
//!   (`--trace` under load) waits there for a reader that is merely slow;
//! - before each line, poll(2) says whether stderr takes it now: a pipe that reports
//!   POLLOUT has room for `PIPE_BUF` bytes, so a line that long goes in whole; one whose
//!   reader is gone reports POLLERR. A line stderr would not take is dropped and counted,
//!   and the count is logged before the next line that goes out;
//! - a write that fails anyway (EAGAIN on a terminal, which polls writable with little
//!   room; EPIPE; ENOSPC) makes `eprintln!` panic: the panic is caught, the line counted,
//!   and stderr is left alone for a second, since each caught panic is costly.
//!
//! What it cannot help: a terminal or pipe of another user, which cannot be reopened (a
//! `sudo -u www` server in a terminal), stays blocking, and a terminal that stops being
//! read while it is nearly full can still stop the loop there.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// After a write to stderr failed, lines are dropped (counted) for this long.
const BACK_OFF: Duration = Duration::from_secs(1);

/// A logger whose lines go to stderr only when it takes them without waiting.
pub struct Guarded<L> {
    inner: L,
    /// Lines dropped since the last one written.
    dropped: AtomicU64,
    /// When the guard was made: the origin of `quiet_until`.
    made: Instant,
    /// After a failed write, no line is tried until this many milliseconds after `made`.
    quiet_until: AtomicU64,
}

impl<L: log::Log> Guarded<L> {
    /// Guards `inner`, a logger that writes to stderr (see the module's docs). On Linux,
    /// this replaces a stderr pipe or terminal with a non-blocking description of its own.
    pub fn new(inner: L) -> Self {
        #[cfg(target_os = "linux")]
        own_stderr_description();
        Guarded {
            inner,
            dropped: AtomicU64::new(0),
            made: Instant::now(),
            quiet_until: AtomicU64::new(0),
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.made.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl<L: log::Log> log::Log for Guarded<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        if self.millis() < self.quiet_until.load(Ordering::Relaxed) || !stderr_takes_a_line() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let written = catch_unwind(AssertUnwindSafe(|| {
            if dropped > 0 {
                self.inner.log(
                    &log::Record::builder()
                        .level(log::Level::Warn)
                        .target(module_path!())
                        .args(format_args!(
                            "{dropped} log lines dropped: stderr did not take them"
                        ))
                        .build(),
                );
            }
            self.inner.log(record);
        }));
        if written.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            let until = self.millis().saturating_add(BACK_OFF.as_millis() as u64);
            self.quiet_until.store(until, Ordering::Relaxed);
        }
    }

    fn flush(&self) {
        let _ = catch_unwind(AssertUnwindSafe(|| self.inner.flush()));
    }
}

/// Replaces stderr, if it is a pipe or a terminal, with a non-blocking description of its
/// own (`/proc/self/fd/2` opens the pipe or terminal itself, not a copy of the descriptor),
/// and widens a pipe to 1 MiB (the unprivileged maximum, `fs.pipe-max-size`). Left as it
/// is when that is refused (another user's pipe or terminal).
#[cfg(target_os = "linux")]
fn own_stderr_description() {
    use rustix::fs::FileType;
    let stderr = io::stderr();
    let Ok(stat) = rustix::fs::fstat(&stderr) else {
        return;
    };
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo => {
            let _ = rustix::pipe::fcntl_setpipe_size(&stderr, 1024 * 1024);
        }
        FileType::CharacterDevice => {}
        _ => return, // a regular file or a socket: as it is
    }
    if let Some(own) = own_description(2) {
        let _ = rustix::stdio::dup2_stderr(&own);
    }
}

/// A non-blocking description of its own for the pipe, FIFO or terminal that descriptor
/// `fd` (1 or 2) is: setting O_NONBLOCK on the descriptor itself would change it for every
/// process sharing it. Linux opens `/proc/self/fd/N` as the object itself, not as a copy of
/// the descriptor. It is refused (EACCES) to a user other than the pipe's or terminal's
/// owner (`sudo -u www readyserve | tee`): `None` then, and the caller writes as it can.
#[cfg(target_os = "linux")]
pub(crate) fn own_description(fd: u8) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{fd}"))
        .ok()
}

/// Elsewhere `/dev/fd/N` duplicates the descriptor, sharing its flags: `None`.
#[cfg(not(target_os = "linux"))]
pub(crate) fn own_description(_fd: u8) -> Option<std::fs::File> {
    None
}

/// Whether a write of one line to stderr would go through at once.
fn stderr_takes_a_line() -> bool {
    writable_now(io::stderr())
}

/// Whether `fd` is writable now (poll(2) with no wait) and not a pipe or socket whose
/// reader is gone. For a pipe, writable means a write of up to `PIPE_BUF` bytes does not
/// wait.
pub(crate) fn writable_now(fd: impl std::os::fd::AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&now)) {
        Ok(1) => {
            let revents = fds[0].revents();
            revents.contains(PollFlags::OUT)
                && !revents.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL)
        }
        _ => false,
    }
}
