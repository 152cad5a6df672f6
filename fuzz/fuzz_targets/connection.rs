//! Fuzz the connection state machine through an in-memory transport.
//!
//! The input is a script: each step's first byte picks how many of the following bytes the
//! client sends and how much room the "socket" has for output (0xfe also sends the client's
//! FIN, 0xff fires the connection's deadline). After the script, the output
//! must be a sequence of well-formed HTTP/1.1 responses, and nothing may panic.
//!
//! A handler takes the bodies of `/echo` (up to 64 bytes: it asserts that nothing longer
//! ever reaches it) and echoes them, and answers `/later` later: after each step the
//! script's responders are answered or dropped (500), and the mailbox's notes delivered.
//! Run: `cargo +nightly fuzz run connection -- -max_total_time=60`
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use readyserve::ops::access_log::AccessLog;
use readyserve::buffers::BufferPool;
use readyserve::files::cache::FileCache;
use readyserve::connection::{Connection, Readiness};
use readyserve::context::{Clock, Context, Limits};
use readyserve::listener::testing::MemSocket;
use readyserve::http::response::DateCache;
use readyserve::deferred::Mailbox;
use readyserve::handler::{Answer, Exchange, Handler, Reply, Responder};
use readyserve::http::request::Request;
use readyserve::files::static_files::{Options, StaticFiles};

fn files() -> &'static StaticFiles {
    thread_local! {
        /// One root for the whole run (it is not `Sync`: one per fuzzing thread), leaked so
        /// that contexts can borrow it for as long as they like.
        static FILES: &'static StaticFiles = Box::leak(Box::new({
            let dir = std::env::temp_dir().join(format!("readyserve-fuzz-{}", std::process::id()));
            let _ = std::fs::create_dir_all(dir.join("sub"));
            let _ = std::fs::write(dir.join("index.html"), "<p>hi</p>\n");
            let _ = std::fs::write(dir.join("sub/a.txt"), vec![b'a'; 100_000]);
            let _ = std::fs::write(dir.join("sub/a.txt.gz"), vec![b'z'; 1000]);
            let _ = std::fs::create_dir_all(dir.join("list"));
            let _ = std::fs::write(dir.join("list/<x>.txt"), "x");
            let options = Options { list_directories: true, ..Options::default() };
            StaticFiles::with_options(&dir, options).expect("fuzz root")
        }));
    }
    FILES.with(|files| *files)
}

thread_local! {
    /// One cache for the whole run, as in the server (a new one per input would open an
    /// inotify descriptor per input).
    static CACHE: std::cell::RefCell<FileCache> = std::cell::RefCell::new(FileCache::new(1 << 20));
}

/// Takes `/echo` bodies (at most `ECHO_MAX` bytes) and answers `/later` later.
#[derive(Default)]
struct FuzzHandler {
    parked: Vec<Responder>,
}

const ECHO_MAX: u64 = 64;

impl Handler for FuzzHandler {
    fn accepts_body(&mut self, head: &Request<'_>) -> Option<u64> {
        head.path().starts_with("/echo").then_some(ECHO_MAX)
    }

    fn handle(&mut self, ex: &mut Exchange<'_, '_>) -> Option<Answer> {
        let path = ex.request.path();
        if path.starts_with("/echo") {
            assert!(ex.body.len() as u64 <= ECHO_MAX, "a body over the limit reached the handler");
            return Some(Reply::new(200, "application/octet-stream", ex.body).into());
        }
        if path.starts_with("/later") {
            self.parked.push(ex.defer());
            return Some(Answer::Later);
        }
        None
    }
}

fuzz_target!(|data: &[u8]| {
    CACHE.with(|cache| run(data, &mut cache.borrow_mut()));
});

fn run(data: &[u8], cache: &mut FileCache) {
    let limits = Limits {
        max_head: 1024,
        max_body: 4096,
        header_timeout: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(30),
        // A script whose first chunk starts like a PROXY header (v1 or v2) runs the
        // connection with --proxy-protocol, so that the step before Reading is fuzzed too.
        proxy_protocol: data.get(1..).is_some_and(|d| d.starts_with(b"PROXY") || d.starts_with(b"\r\n\r\n")),
    };
    let date = DateCache::new();
    let mut log = AccessLog::with_writer(None);
    let mut pool = BufferPool::new();
    let mem = MemSocket { room: 0, ..MemSocket::new() };
    let now = Instant::now();
    let mut conn = Connection::new(mem, mio::Token(0), None, now);
    if limits.proxy_protocol {
        conn.expect_proxy_header();
    }
    let mut handler = FuzzHandler::default();
    let mailbox = std::sync::Arc::new(Mailbox::new(None));
    let mut notes = std::collections::VecDeque::new();
    let mut rest = data;
    let mut steps = 0;
    while let Some((&op, tail)) = rest.split_first() {
        steps += 1;
        let take = usize::from(op & 0x3f).min(tail.len());
        let (chunk, tail) = tail.split_at(take);
        rest = tail;
        let socket = conn.socket_mut();
        socket.input.extend(chunk);
        socket.room += usize::from(op >> 6) * 4096 + 512;
        // 0xfe: the client sends its FIN after this chunk (half-close), as `nc -N` does.
        let fin = op == 0xfe;
        if fin {
            socket.eof = true;
        }
        let at = now + Duration::from_millis(steps);
        let mut ctx = Context::new(&limits, files(), &date, &mut log, cache, &mut pool, clock(at))
            .with_handler(Some(&mut handler))
            .with_mailbox(&mailbox);
        conn.ready(Readiness { readable: true, read_closed: fin }, &mut ctx);
        while conn.wants_resume() {
            conn.resume(&mut ctx);
        }
        if op == 0xff {
            conn.timed_out(&mut ctx);
        }
        drop(ctx);
        // The "worker": answer or drop what the handler deferred, then deliver the notes.
        for responder in handler.parked.drain(..) {
            if op & 1 == 1 {
                responder.send(Reply::text(200, "later"));
            }
        }
        mailbox.take_all(&mut notes);
        let mut ctx = Context::new(&limits, files(), &date, &mut log, cache, &mut pool, clock(at))
            .with_handler(Some(&mut handler))
            .with_mailbox(&mailbox);
        for note in notes.drain(..) {
            conn.on_note(note, &mut ctx);
        }
        while conn.wants_resume() {
            conn.resume(&mut ctx);
        }
        if conn.is_done() {
            break;
        }
    }
    // Let all output drain.
    conn.socket_mut().room = usize::MAX;
    let mut ctx = Context::new(&limits, files(), &date, &mut log, cache, &mut pool, clock(now));
    conn.ready(Readiness { readable: false, read_closed: false }, &mut ctx);
    while conn.wants_resume() {
        conn.resume(&mut ctx);
    }
    check_responses(&conn.socket().output, data, conn.is_done());
}

/// The server's side of one turn, at `now`.
fn clock(now: Instant) -> Clock {
    Clock { now, wall: SystemTime::now() }
}

/// The output must be whole responses, back to back. HEAD responses have no body, so after
/// the first response the check stops if the input mentions HEAD. Only the last body may be
/// cut short, and only by a close (a write timeout, which the script can trigger).
fn check_responses(mut out: &[u8], input: &[u8], closed: bool) {
    let has_head = input.windows(4).any(|w| w == b"HEAD");
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        let n = match res.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            // A write timeout may cut even a head short, then closes.
            Ok(httparse::Status::Partial) if closed => return,
            other => panic!("malformed response head: {other:?}"),
        };
        assert_eq!(res.version, Some(1));
        let code = res.code.expect("status code");
        if code == 100 {
            // `100 Continue` before a body a handler takes: an interim head, no body.
            out = &out[n..];
            continue;
        }
        assert!((200..600).contains(&code));
        let len = res
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).expect("ascii").parse::<usize>().expect("number"));
        if code != 204 && code != 304 {
            assert!(len.is_some(), "response without Content-Length");
        }
        if has_head {
            return;
        }
        let body = len.unwrap_or(0);
        if out.len() < n + body {
            assert!(closed, "truncated body on a connection that stays open");
            return;
        }
        out = &out[n + body..];
    }
}
