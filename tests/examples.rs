//! Smoke tests for the examples: start each server example, make one request, stop it.
//! (`cargo test` builds the examples before running the tests.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// Starts an example on port 0 and returns it with the address it printed.
fn start(name: &str) -> (Running, String) {
    let mut child = Command::new(example(name))
        .arg("127.0.0.1:0")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
fn step_08_embedded_handler_and_files() {
    let (_ex, addr) = start("08_embedded");
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
