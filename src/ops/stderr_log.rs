//! The server's own log on stderr, written so that the loop never waits for it.
//!
//! simple_logger writes each line with `eprintln!`: a blocking write(2), which panics when
//! stderr's reader has gone (EPIPE). Under one event loop both are fatal. A stderr pipe
//! whose reader stops reading (`2>&1 | program`, a stalled journald) stops the whole server,
//! signals included; one whose reader exits (`2>&1 | head`) ends it at the next log line.
//!
//! [`Guarded`] wraps the logger. Before each line, poll(2) says whether stderr takes it
//! now: a pipe that reports POLLOUT has a free buffer, so a line of up to `PIPE_BUF` bytes
//! goes in without waiting; one whose reader is gone reports POLLERR. A line stderr would
//! not take is dropped and counted, and the count is logged before the next line that goes
//! out. A panic from the write itself (the reader went between the poll and the write) is
//! caught. A regular file always takes the line, at the cost of one poll(2) per line.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

/// A logger whose lines go to stderr only when it takes them without waiting.
pub struct Guarded<L> {
    inner: L,
    /// Lines dropped since the last one written.
    dropped: AtomicU64,
}

impl<L: log::Log> Guarded<L> {
    /// Guards `inner`, a logger that writes to stderr. On Linux, a stderr pipe is widened
    /// to 1 MiB (the unprivileged maximum, `fs.pipe-max-size`), so that a burst of lines
    /// (`--trace` under load) waits there for a reader that is merely slow, instead of
    /// being dropped.
    pub fn new(inner: L) -> Self {
        #[cfg(target_os = "linux")]
        {
            let stderr = io::stderr();
            let _ = rustix::pipe::fcntl_setpipe_size(&stderr, 1024 * 1024);
        }
        Guarded {
            inner,
            dropped: AtomicU64::new(0),
        }
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
        if !stderr_takes_a_line() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let _ = catch_unwind(AssertUnwindSafe(|| {
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
    }

    fn flush(&self) {
        let _ = catch_unwind(AssertUnwindSafe(|| self.inner.flush()));
    }
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
