//! Microbenchmark: one request through the connection state machine, from bytes in to
//! bytes out, over an in-memory transport (no sockets, no kernel). Run: `cargo bench`.
//!
//! It measures what readyserve itself spends per request (parse, cache lookup, response
//! head, buffer handling), which the wrk benchmarks cannot separate from the kernel's work.

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use readyserve::buffers::BufferPool;
use readyserve::connection::{Connection, Readiness};
use readyserve::context::{Clock, Context, Limits};
use readyserve::files::cache::FileCache;
use readyserve::files::static_files::StaticFiles;
use readyserve::http::response::DateCache;
use readyserve::listener::testing::MemSocket;
use readyserve::ops::access_log::AccessLog;

fn main() -> io::Result<()> {
    let dir = std::env::temp_dir().join(format!("readyserve-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("index.html"), vec![b'x'; 600])?;
    let files = StaticFiles::new(&dir)?;
    let limits = Limits {
        max_head: 16 * 1024,
        max_body: 1 << 20,
        header_timeout: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(30),
        proxy_protocol: false,
    };
    let date = DateCache::new();
    let mut log = AccessLog::with_writer(None);
    let mut cache = FileCache::new(1 << 20);
    let mut pool = BufferPool::new();
    let now = Instant::now();
    let request =
        b"GET /index.html HTTP/1.1\r\nHost: bench\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";

    for (name, depth) in [
        ("one request per read", 1usize),
        ("16 pipelined per read", 16),
    ] {
        let mut conn = Connection::new(
            MemSocket {
                discard_output: true,
                ..MemSocket::new()
            },
            mio::Token(0),
            None,
            now,
        );
        let batch = request.repeat(depth);
        let rounds = 400_000 / depth;
        let mut run = |rounds: usize| {
            for _ in 0..rounds {
                conn.socket_mut().input.extend(&batch);
                let clock = Clock {
                    now,
                    wall: SystemTime::now(),
                };
                let mut ctx = Context::new(
                    &limits, &files, &date, &mut log, &mut cache, &mut pool, clock,
                );
                conn.ready(
                    Readiness {
                        readable: true,
                        read_closed: false,
                    },
                    &mut ctx,
                );
            }
        };
        run(rounds / 10); // warm up: cache, buffers
        let started = Instant::now();
        run(rounds);
        let elapsed = started.elapsed();
        let per_request = elapsed.as_nanos() as f64 / (rounds * depth) as f64;
        println!(
            "{name:>24}: {per_request:7.1} ns per request ({} bytes out)",
            black_box(conn.socket().written)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
