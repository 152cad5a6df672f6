//! Hardening II, the wire side: what a client can do to the server's memory and sockets by
//! pipelining without reading, half-closing, or aborting a download, checked on the real
//! binary or a real socket.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// The size of the cached file the pipeliners ask for: under the cache's 1 MiB entry limit.
const ONE_MB: usize = 1_000_000;

/// Waits until `pid`'s RSS has not changed for a second (10 s at most) and returns it.
fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut same) = (rss_kib(pid), 0);
    while same < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = rss_kib(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

#[test]
fn non_reading_pipeliners_cost_bounded_memory() {
    let dir = fixture();
    let content: Vec<u8> = (0..ONE_MB as u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("root/one.bin"), &content).expect("write");
    let (mut child, addr, _stderr) = spawn_binary(dir.path(), &["--access-log", "off"]);
    let pid = child.id();
    let request = "GET /one.bin HTTP/1.1\r\nHost: t\r\n\r\n";

    // Warm up: the file goes into the cache, allocator pools settle.
    let mut warm = TcpStream::connect(&addr).expect("connect");
    send(&mut warm, request);
    assert_eq!(read_response(&mut warm, false).body, content);
    drop(warm);
    let before = settled_rss(pid);

    // 200 clients pipeline 8 requests for the cached megabyte each, and never read.
    const CLIENTS: u64 = 200;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = TcpStream::connect(&addr).expect("connect");
        send(&mut s, &request.repeat(8));
        clients.push(s);
    }
    let after = settled_rss(pid);
    let per_client = after.saturating_sub(before) / CLIENTS;
    eprintln!("RSS {before} KiB -> {after} KiB with {CLIENTS} pipeliners: {per_client} KiB each");
    // Copying the body into each connection's queue cost about 1 MiB per client.
    assert!(
        per_client < 200,
        "{per_client} KiB per non-reading pipeliner"
    );

    // The responses are intact, once a client does read them.
    let s = &mut clients[0];
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for _ in 0..8 {
        let r = read_response(s, false);
        assert_eq!(r.status, 200);
        assert!(r.body == content, "a pipelined body differs from the file");
    }

    sigterm(&child);
    drop(clients);
    let _ = child.wait();
}

/// Sends `bytes` and the FIN together: MSG_MORE holds the bytes back, and the shutdown
/// sends them with the FIN, so the server sees both in one event.
fn send_with_fin(s: &TcpStream, bytes: &[u8]) {
    use rustix::net::SendFlags;
    let sent = rustix::net::send(s, bytes, SendFlags::MORE).expect("send");
    assert_eq!(sent, bytes.len());
    s.shutdown(Shutdown::Write).expect("shutdown");
}

#[test]
fn request_and_fin_together_are_answered_and_closed_at_once() {
    let server = TestServer::start_with(|c| c.keep_alive_timeout = 60);
    for requests in [1, 3] {
        let mut s = server.connect();
        let one = "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n";
        send_with_fin(&s, one.repeat(requests).as_bytes());
        for _ in 0..requests {
            assert_eq!(read_response(&mut s, false).body_text(), INDEX);
        }
        // Closed now, not after the 60 s keep-alive timeout (CLOSE-WAIT until then).
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let read = s.read(&mut byte);
        assert!(
            matches!(read, Ok(0)),
            "{requests} request(s) + FIN: expected EOF within 2 s, got {read:?} after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn half_closed_client_still_gets_a_large_download() {
    // The FIN says the client sends nothing more; it still reads. The whole body comes.
    let server = TestServer::start_with(|c| c.keep_alive_timeout = 60);
    let mut s = server.connect();
    send_with_fin(&s, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_response(&mut s, false);
    assert!(r.body == big_content(), "download cut short or corrupted");
    assert!(is_closed(&mut s));
}

#[test]
fn client_aborting_a_download_is_not_a_warning() {
    let dir = fixture();
    let (child, addr, stderr) =
        spawn_binary(dir.path(), &["--access-log", "off", "--log-level", "debug"]);
    for _ in 0..3 {
        // A small receive buffer, so the server is still sending when the client resets.
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let target: std::net::SocketAddr = addr.parse().expect("address");
        socket.connect(&target.into()).expect("connect");
        let mut s: TcpStream = socket.into();
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        let mut some = vec![0u8; 64 * 1024];
        s.read_exact(&mut some).expect("the download starts");
        // Abort with a reset (SO_LINGER 0), as a browser's cancel may.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    // The server goes on serving.
    assert_eq!(get_at(&addr, "/index.html").body_text(), INDEX);

    sigterm(&child);
    let mut child = child;
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let log = stderr.join().expect("stderr");
    assert!(
        log.contains("client went away"),
        "the aborts were not seen as such:\n{log}"
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        warnings.is_empty(),
        "client aborts logged as problems: {warnings:#?}"
    );
}
