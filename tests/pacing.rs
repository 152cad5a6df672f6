//! Large bodies to clients that read slowly: the paths where a send stops short.
//!
//! A client that reads slower than the server writes fills the socket's buffer, and the
//! server's unsent bytes are bounded (TCP_NOTSENT_LOWAT), so a streamed file goes out in
//! many short sendfile(2) calls, each followed by a wait for the socket's writable edge.
//! A byte lost or repeated there, or an edge waited for that never comes, shows here as a
//! corrupted or stalled download. Nothing here is timed: the client's read timeout only
//! turns a stall into a failure instead of a hang.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{BIG_LEN, INDEX, TestServer, big_content, read_response, send};

/// Reads `len` bytes in small pieces, pausing now and then, so that the server's socket
/// is full most of the time.
fn read_slowly(stream: &mut std::net::TcpStream, len: usize) -> Vec<u8> {
    let mut body = vec![0u8; len];
    let mut at = 0;
    let mut pieces = 0u32;
    while at < len {
        let end = (at + 16 * 1024).min(len);
        let n = stream
            .read(&mut body[at..end])
            .expect("body bytes keep coming");
        assert!(n > 0, "connection closed after {at} of {len} bytes");
        at += n;
        pieces += 1;
        if pieces.is_multiple_of(32) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    body
}

/// The head of a response, up to and including its blank line.
fn read_head(stream: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("head");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("ascii head")
}

#[test]
fn slow_readers_get_large_files_byte_exact_and_the_connection_goes_on() {
    let server = TestServer::start();
    let expected = big_content();
    // Several at once, so that the server round-robins between full sockets.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut s = server.connect();
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            send(&mut s, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
            s
        })
        .collect();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let head = read_head(&mut s);
                assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
                assert!(
                    head.contains(&format!("Content-Length: {BIG_LEN}\r\n")),
                    "{head}"
                );
                let body = read_slowly(&mut s, BIG_LEN);
                (s, body)
            })
        })
        .collect();
    for t in threads {
        let (mut s, body) = t.join().expect("client thread");
        assert_eq!(body.len(), expected.len());
        let first_difference = body.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "large file corrupted");
        // The connection is still in step: the next answer starts right after the body.
        s.write_all(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    }
}

/// A client slower than the server gets a larger unsent bound (so that it wakes the server
/// once per megabyte, not once per 64 KiB), keeps it while it stays slow, and gets the usual
/// one back after a body it took without a short send. Seen in `--trace`.
#[test]
#[cfg_attr(
    any(feature = "portable-fallbacks", not(target_os = "linux")),
    ignore = "counts short sendfile(2) calls; the copying fallback makes none"
)]
fn a_slow_reader_gets_a_larger_unsent_bound_until_it_keeps_up() {
    let dir = common::fixture();
    let (mut child, addr, stderr) = common::spawn_binary(
        dir.path(),
        &["--trace", "--access-log", "off", "--log-level", "warn"],
    );
    // A small window: the server's socket fills up, whatever its bound.
    let mut s = small_window_client(&addr);
    let expected = big_content();
    // Two slow downloads, then one that fits under the larger bound at once (no short send).
    for _ in 0..2 {
        send(&mut s, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        read_head(&mut s);
        assert!(
            read_slowly(&mut s, BIG_LEN) == expected,
            "large file corrupted"
        );
    }
    send(
        &mut s,
        "GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-131071\r\n\r\n",
    );
    let response = read_response(&mut s, false);
    assert!(response.body == expected[..131_072], "range corrupted");
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    drop(s);
    common::sigterm(&child);
    child.wait().expect("wait");
    let trace = stderr.join().expect("stderr");
    let lines: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("unsent bound") || l.contains("request GET") || l.contains("Range"))
        .map(|l| l.split("token=").nth(1).unwrap_or(l))
        .collect();
    let summary: Vec<&str> = lines
        .iter()
        .map(|l| {
            if l.contains("raised to 4096 KiB") {
                "raised"
            } else if l.contains("usual unsent bound") {
                "lowered"
            } else {
                "request"
            }
        })
        .collect();
    assert_eq!(
        summary,
        [
            "request", "raised", "request", "request", "lowered", "request"
        ],
        "{}",
        lines.join("\n")
    );
}

/// `--write-timeout` is a floor on the client's pace, a megabyte per timeout (here 1 s): a
/// client that keeps reading above it is never cut, even when the socket's bound makes no
/// writable edge within a timeout; one that trickles below it (160 KB/s, which the server
/// used to keep for as long as it liked) is closed at a timeout, as nginx's `send_timeout`
/// closes it.
#[test]
fn the_write_timeout_keeps_a_steady_reader_and_cuts_a_trickle() {
    let dir = common::fixture();
    let (mut child, addr, stderr) = common::spawn_binary(
        dir.path(),
        &[
            "--write-timeout",
            "1",
            "--access-log",
            "off",
            "--log-level",
            "debug",
        ],
    );
    // Small receive buffers: the bytes wait in the server's socket, not in ours.
    let mut steady = small_window_client(&addr);
    let mut trickle = small_window_client(&addr);
    for s in [&mut steady, &mut trickle] {
        send(s, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        read_head(s);
    }
    let trickler = std::thread::spawn(move || {
        let mut piece = vec![0u8; 16 * 1024];
        for _ in 0..30 {
            match trickle.read(&mut piece) {
                Ok(n) if n > 0 => std::thread::sleep(Duration::from_millis(100)),
                _ => break,
            }
        }
    });
    // Up to 64 KiB every 20 ms: about 3 MB/s at most, three times the floor, for 2-3 s.
    let mut body = vec![0u8; BIG_LEN];
    let mut got = 0;
    while got < BIG_LEN {
        let end = (got + 64 * 1024).min(BIG_LEN);
        let n = steady
            .read(&mut body[got..end])
            .expect("body bytes keep coming");
        assert!(n > 0, "the steady reader was closed after {got} bytes");
        got += n;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(body == big_content(), "large file corrupted");
    trickler.join().expect("trickle thread");
    drop(steady);
    common::sigterm(&child);
    child.wait().expect("wait");
    let log = stderr.join().expect("stderr");
    let cut = log.lines().filter(|l| l.contains("write timeout")).count();
    assert_eq!(cut, 1, "one client (the trickle) cut:\n{}", tail(&log));
}

/// A connection to `addr` with a 64 KiB receive buffer, so that the bytes of a large
/// response wait in the server's socket rather than in ours.
fn small_window_client(addr: &str) -> std::net::TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    socket.connect(&addr.into()).expect("connect");
    let s: std::net::TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s
}

/// The last lines of a long log, for an assertion message.
fn tail(text: &str) -> String {
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
