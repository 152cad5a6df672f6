//! Smoke tests for the examples: start each server example on port 0, talk to it the way
//! its header says to poke it, check what it teaches, stop it. Each example runs as its own
//! process on its own port, so the tests can run in parallel.
//! (`cargo test` builds the examples before running the tests; `cargo test --test examples`
//! alone does not, so run `cargo build --examples` first, or the tests run stale binaries.)

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// target/<profile>/examples/NAME, found from this test binary's own path.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    profile_dir.join("examples").join(name)
}

/// Kills the example when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// The example's peak resident memory (VmHWM), in bytes.
    fn peak_memory(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("/proc/PID/status");
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .expect("VmHWM");
        kib * 1024
    }
}

/// Starts an example on port 0 and returns it with the address it printed.
fn start(name: &str) -> (Running, String) {
    start_with(name, &[], Stdio::null())
}

/// As [`start`], with more arguments after the address and stderr as given.
fn start_with(name: &str, args: &[&str], stderr: Stdio) -> (Running, String) {
    let mut child = Command::new(example(name))
        .arg("127.0.0.1:0")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("a 'listening on' line").expect("read");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Running(child), addr)
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Sends one GET with `Connection: close` and returns the whole response.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// Writes `pattern` over and over (as one endless stream) until a write has been blocked for
/// a second, or `cap` bytes are out. Returns the bytes written.
fn write_until_blocked(s: &mut TcpStream, pattern: &[u8], cap: usize) -> usize {
    s.set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut sent = 0;
    while sent < cap {
        let at = sent % pattern.len();
        match s.write(&pattern[at..]) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    sent
}

/// More than the kernel buffers on a loopback connection can hold, both ways: a client that
/// writes this much without reading was read from all along.
fn beyond_kernel_buffers() -> usize {
    let max = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse::<usize>().ok())
            .unwrap_or(64 << 20)
    };
    let (rmem, wmem) = (
        max("/proc/sys/net/ipv4/tcp_rmem"),
        max("/proc/sys/net/ipv4/tcp_wmem"),
    );
    2 * (rmem + wmem) + (8 << 20)
}

#[test]
fn step_01_blocking_answers() {
    let (_ex, addr) = start("01_blocking");
    assert!(http_get(&addr, "/").ends_with("Hello, world\n"));
}

#[test]
fn step_02_nonblocking_spin_answers() {
    let (_ex, addr) = start("02_nonblocking_spin");
    assert!(http_get(&addr, "/").ends_with("Hello, world\n"));
}

#[test]
fn step_03_poll_accept_greets() {
    let (_ex, addr) = start("03_poll_accept");
    let mut out = String::new();
    connect(&addr).read_to_string(&mut out).expect("read");
    assert_eq!(out, "hello from 03_poll_accept\n");
}

#[test]
fn step_04_slab_echo_echoes() {
    let (_ex, addr) = start("04_slab_echo");
    let mut s = connect(&addr);
    s.write_all(b"ping\n").expect("send");
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"ping\n");
}

#[test]
fn step_04_slab_echo_echoes_before_closing_on_half_close() {
    // printf 'hello\n' | nc -N: the data and the FIN arrive together.
    let (_ex, addr) = start("04_slab_echo");
    let mut s = connect(&addr);
    s.write_all(b"hello\n").expect("send");
    s.shutdown(Shutdown::Write).expect("FIN");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert_eq!(out, "hello\n");
}

#[test]
fn step_04_slab_echo_stops_reading_when_its_buffer_is_full() {
    let (ex, addr) = start("04_slab_echo");
    let mut s = connect(&addr);
    let pattern: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let cap = beyond_kernel_buffers();
    // Send, never read: the server must stop reading, so our writes must block.
    let sent = write_until_blocked(&mut s, &pattern, cap);
    assert!(
        sent < cap,
        "sent {sent} bytes without blocking: no backpressure"
    );
    let peak = ex.peak_memory();
    // Now read: everything comes back, in order, and nothing is lost.
    s.shutdown(Shutdown::Write).expect("FIN");
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("read");
    assert_eq!(back.len(), sent);
    assert!(
        back.iter()
            .enumerate()
            .all(|(i, &b)| b == pattern[i % pattern.len()])
    );
    eprintln!("04: blocked after {sent} bytes; server peak memory {peak} bytes");
}

#[test]
fn step_05_state_machine_answers_and_says_goodbye() {
    let (_ex, addr) = start("05_state_machine");
    let mut s = connect(&addr);
    s.write_all(b"hello\nquit\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert_eq!(out, "HELLO\nBYE\n");
}

#[test]
fn step_06_httparse_partial_reaches_complete() {
    let out = Command::new(example("06_httparse_partial"))
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("Partial"), "{text}");
    assert!(text.contains("Complete(43)"), "{text}");
    assert!(text.contains("GET /next HTTP/1.1"), "{text}");
}

#[test]
fn step_07_hello_http_keep_alive_and_pipelining() {
    let (_ex, addr) = start("07_hello_http");
    let mut s = connect(&addr);
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert_eq!(out.matches("Hello, world!\n").count(), 2, "{out}");
}

#[test]
fn step_08_deadlines_close_silent_half_and_idle_connections() {
    let (_ex, addr) = start("08_deadlines");
    let mut silent = connect(&addr);
    let mut half = connect(&addr);
    half.write_all(b"GET / HTTP/1.1\r\n").expect("send");
    let mut idle = connect(&addr);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    // Each read ends only when the server closes (the read timeout is 10 s, twice the longest
    // of the example's timeouts): keep-alive, no `Connection: close` anywhere.
    let mut out = String::new();
    silent.read_to_string(&mut out).expect("silent: closed");
    assert_eq!(out, "", "a silent connection is closed without a word");
    let mut out = String::new();
    half.read_to_string(&mut out).expect("half a head: closed");
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    let mut out = String::new();
    idle.read_to_string(&mut out).expect("idle: closed");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
}

/// `GET /big` from 09_backpressure: a 1 MiB body.
const BIG: usize = 1024 * 1024;

#[test]
fn step_09_backpressure_bounds_memory_when_a_client_does_not_read() {
    let (ex, addr) = start("09_backpressure");
    let mut s = connect(&addr);
    let requests = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let cap = beyond_kernel_buffers();
    let sent = write_until_blocked(&mut s, &requests, cap);
    assert!(
        sent < cap,
        "sent {sent} bytes without blocking: no backpressure"
    );
    // A 4 KiB read holds 130 requests for /big: 130 MiB if all were answered at once.
    let peak = ex.peak_memory();
    eprintln!("09: blocked after {sent} bytes of requests; server peak memory {peak} bytes");
    assert!(peak < 48 << 20, "server peak memory {peak} bytes");
    // And it still answers, in order: the first response arrives whole.
    let head_len =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1048576\r\n\r\n".len();
    let mut first = vec![0u8; head_len + BIG];
    s.read_exact(&mut first).expect("first response");
    assert!(first.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[test]
fn step_09_backpressure_answers_a_second_client_during_a_flood() {
    let (_ex, addr) = start("09_backpressure");
    let flood = connect(&addr);
    let stop = Arc::new(AtomicBool::new(false));
    // The flooder pipelines requests without end, and reads every answer.
    let writer = {
        let mut flood = flood.try_clone().expect("clone");
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let batch = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
            while !stop.load(Ordering::Relaxed) && flood.write_all(&batch).is_ok() {}
        })
    };
    let (answered, flowing) = std::sync::mpsc::channel();
    let reader = {
        let mut flood = flood.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0;
            while let Ok(n @ 1..) = flood.read(&mut buf) {
                total += n;
                if total > 1 << 20 {
                    let _ = answered.send(());
                }
            }
        })
    };
    flowing.recv().expect("the flood is being answered");
    // While it floods, a second client is answered all the same (read timeout 10 s).
    let mut s = connect(&addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("answered during the flood");
    let still_flooding = !writer.is_finished();
    stop.store(true, Ordering::Relaxed);
    let _ = flood.shutdown(Shutdown::Both);
    let _ = writer.join();
    let _ = reader.join();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        still_flooding,
        "the flood ended before the second client was answered"
    );
}

#[test]
fn step_09_backpressure_closes_gracefully_after_a_last_request_and_junk() {
    let (_ex, addr) = start("09_backpressure");
    let mut s = connect(&addr);
    let mut bytes = b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec();
    // 32 KB: more than the server's 4 KiB reads take in with the request (so it is still
    // unread when the response is out), less than it reads and drops while lingering (64 KiB).
    bytes.extend_from_slice(&b"junk".repeat(8000));
    s.write_all(&bytes).expect("send");
    // Let the server write what fits and close before we read: if it closed with the junk
    // unread, its RST would cut the response short.
    std::thread::sleep(Duration::from_millis(500));
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the whole response, then FIN (not RST)");
    let text = String::from_utf8_lossy(&out[..out.len().min(200)]).to_string();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(
        out.ends_with(&[b'.'; 64]),
        "body cut short: {} bytes",
        out.len()
    );
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert_eq!(out.len() - head_end, BIG);
}

#[test]
fn step_10_embedded_handler_and_files() {
    let (_ex, addr) = start("10_embedded");
    let status = http_get(&addr, "/status");
    assert!(status.starts_with("HTTP/1.1 200 OK\r\n"), "{status}");
    assert!(
        status.contains("Content-Type: application/json\r\n"),
        "{status}"
    );
    assert!(status.contains("\"uptime_seconds\":"), "{status}");
    let index = http_get(&addr, "/");
    assert!(index.contains("<h1>readyserve</h1>"), "{index}");
}

/// The welcome page's reading list is the README's: the same files, in the same order, and
/// each one exists.
#[test]
fn the_welcome_pages_reading_list_matches_the_readmes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    let page = std::fs::read_to_string(format!("{root}/public/index.html")).expect("page");
    // The README's list: the numbered items under "## Reading the code", each item's first
    // `src/...`.
    let section = readme
        .split("## Reading the code")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("section");
    let from_readme: Vec<String> = section
        .lines()
        .filter(|l| {
            l.split_once(". ")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        })
        .filter_map(|l| Some(l.split('`').find(|w| w.starts_with("src/"))?.to_string()))
        .collect();
    let list = page
        .split("<h2>How to read the code</h2>")
        .nth(1)
        .and_then(|s| s.split("<ol>").nth(1))
        .and_then(|s| s.split("</ol>").next())
        .expect("the page's list");
    let from_page: Vec<String> = list
        .split("<li>")
        .skip(1)
        .filter_map(|item| {
            let code = item.split("<code>").nth(1)?.split("</code>").next()?;
            Some(code.to_string())
        })
        .collect();
    assert_eq!(from_readme.len(), 7, "{from_readme:?}");
    assert_eq!(from_page, from_readme);
    for path in &from_readme {
        assert!(
            std::path::Path::new(root).join(path).exists(),
            "{path} is named but does not exist"
        );
    }
}

/// Sends `request` on a fresh connection and returns the whole response (the request
/// must say `Connection: close`).
fn exchange(addr: &str, request: &str) -> String {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn put_setpoint(addr: &str, body: &str) -> String {
    exchange(
        addr,
        &format!(
            "PUT /api/setpoint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// With `--trace` the device example logs every step to stderr, and here nobody reads its
/// stderr. Its logger is guarded: once the pipe is full, lines are dropped (and counted)
/// instead of stopping the loop. Unguarded, it stopped answering after about 50 requests.
#[test]
fn step_11_device_keeps_answering_when_its_trace_log_is_not_read() {
    let (_ex, addr) = start_with("11_device", &["--trace"], Stdio::piped());
    for i in 0..3000 {
        let response = http_get(&addr, "/");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "request {i}: {response:.60}"
        );
    }
}

#[test]
fn step_11_device_setpoint_takes_a_body_with_limits() {
    let (_ex, addr) = start("11_device");
    assert!(put_setpoint(&addr, "21.5").starts_with("HTTP/1.1 204 "));
    let value = http_get(&addr, "/api/setpoint");
    assert!(value.starts_with("HTTP/1.1 200 OK\r\n"), "{value}");
    assert!(value.ends_with("\r\n\r\n21.5\n"), "{value}");
    assert!(put_setpoint(&addr, "warm").starts_with("HTTP/1.1 400 "));
    assert!(put_setpoint(&addr, &"9".repeat(65)).starts_with("HTTP/1.1 413 "));
    // Neither changed it.
    assert!(http_get(&addr, "/api/setpoint").ends_with("\r\n\r\n21.5\n"));
    // The static files are there too.
    assert!(http_get(&addr, "/").contains("<h1>readyserve</h1>"));
}

#[test]
fn step_11_device_reading_is_deferred_and_blocks_no_one() {
    let (_ex, addr) = start("11_device");
    // Five readings queue up on the one sensor thread: the last is about 500 ms away.
    let mut readings: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = connect(&addr);
            s.write_all(b"GET /api/reading HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("send");
            s
        })
        .collect();
    // Meanwhile another request is answered whole...
    let other = http_get(&addr, "/api/setpoint");
    assert!(other.starts_with("HTTP/1.1 200 OK\r\n"), "{other}");
    // ...while the last reading has not been answered yet: it did not wait for them.
    let last = readings.last_mut().expect("five");
    last.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let early = last.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the reading was answered before the other request: {early:?}"
    );
    last.set_nonblocking(false).expect("blocking");
    for mut s in readings {
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("\"celsius\":"), "{out}");
    }
}

#[test]
fn step_11_device_events_stream_and_panic_is_500() {
    let (_ex, addr) = start("11_device");
    let mut s = connect(&addr);
    s.write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    // Read until two events have arrived (the read timeout is 10 s; they come every 200 ms).
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while String::from_utf8_lossy(&seen).matches("data: ").count() < 2 {
        let n = s.read(&mut buf).expect("events");
        assert!(n > 0, "the stream ended");
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("Content-Type: text/event-stream\r\n"),
        "{text}"
    );
    assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
    assert!(text.contains("data: {\"tick\":"), "{text}");
    drop(s);
    let panic = http_get(&addr, "/api/panic");
    assert!(panic.starts_with("HTTP/1.1 500 "), "{panic}");
    // And the device goes on.
    assert!(http_get(&addr, "/api/setpoint").starts_with("HTTP/1.1 200 OK\r\n"));
}
