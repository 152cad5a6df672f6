//! `--proxy-protocol`: every connection starts with a PROXY header (v1 text or v2 binary)
//! from a trusted peer, and its source address is the client's from then on. The matrix of
//! header kinds, the ways a header is refused, and what the client address is used for
//! (the access log, and the trust decision for X-Forwarded-For).
//!
//! Real HAProxy (`send-proxy-v2`, `check-send-proxy`) and `curl --haproxy-protocol` are in
//! tests/external.rs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use readyserve::config::{AccessLogTarget, ListenAddr};

const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_tcp4(src: [u8; 4], sport: u16, tlvs: &[u8]) -> Vec<u8> {
    let mut body = src.to_vec();
    body.extend_from_slice(&[127, 0, 0, 1]);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&80u16.to_be_bytes());
    body.extend_from_slice(tlvs);
    v2(1, 0x11, &body)
}

fn v2_tcp6(src: &str) -> Vec<u8> {
    let ip: std::net::Ipv6Addr = src.parse().expect("v6");
    let mut body = ip.octets().to_vec();
    body.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&[0x12, 0x34, 0, 80]);
    v2(1, 0x21, &body)
}

/// A server with `--proxy-protocol`, trusting `trusted`, logging to a file.
fn server(trusted: &str, tweak: impl FnOnce(&mut readyserve::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.proxy_protocol = true;
        c.trust_proxy = trusted
            .split(',')
            .map(|t| t.parse().expect("trusted"))
            .collect();
        tweak(c);
    })
}

fn with_log(c: &mut readyserve::Config, dir: &std::path::Path) {
    c.access_log = AccessLogTarget::File(dir.join("access.log"));
}

/// Sends `bytes` in pieces of `piece` bytes (a pause between them, so that each is its own
/// segment) and returns everything the server sent back until it closed.
fn exchange(stream: &mut TcpStream, bytes: &[u8], piece: usize) -> Vec<u8> {
    for part in bytes.chunks(piece.max(1)) {
        stream.write_all(part).expect("send");
        if piece < bytes.len() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// The access log's lines, once the server has stopped (and flushed it).
fn log_lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("access.log"))
        .expect("access log")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_header_kind_names_the_client_in_the_access_log() {
    let log_dir = tempfile::tempdir().expect("dir");
    let srv = server("127.0.0.1", |c| with_log(c, log_dir.path()));
    let tlvs = [0x04, 0, 2, 0, 0, 0x05, 0, 3, b'a', b'b', b'c']; // NOOP, UNIQUE_ID
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "v1 TCP4",
            b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 80\r\n".to_vec(),
            "192.0.2.1",
        ),
        (
            "v1 TCP6",
            b"PROXY TCP6 2001:db8::1 ::1 5000 80\r\n".to_vec(),
            "2001:db8::1",
        ),
        (
            "v1 UNKNOWN",
            b"PROXY UNKNOWN x y z\r\n".to_vec(),
            "127.0.0.1",
        ),
        ("v2 TCP4", v2_tcp4([192, 0, 2, 2], 40000, &[]), "192.0.2.2"),
        (
            "v2 TCP4 + TLVs",
            v2_tcp4([192, 0, 2, 3], 1, &tlvs),
            "192.0.2.3",
        ),
        ("v2 TCP6", v2_tcp6("2001:db8::2"), "2001:db8::2"),
        ("v2 LOCAL", v2(0, 0x11, &[9; 12]), "127.0.0.1"),
        ("v2 UNSPEC", v2(1, 0x00, &[]), "127.0.0.1"),
    ];
    // Each header with its request in one segment, then a byte at a time: the header and
    // the request may arrive split anywhere.
    for piece in [usize::MAX, 1] {
        for (name, header, _) in &cases {
            let mut s = srv.connect();
            let bytes = [header.as_slice(), GET].concat();
            let out = exchange(&mut s, &bytes, piece);
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n"),
                "{name}, piece {piece}: {text}"
            );
        }
    }
    srv.stop().expect("stop");
    let lines = log_lines(log_dir.path());
    assert_eq!(lines.len(), 2 * cases.len(), "{lines:#?}");
    for (i, line) in lines.iter().enumerate() {
        let (name, _, client) = &cases[i % cases.len()];
        assert!(
            line.starts_with(&format!("{client} - - [")),
            "{name}: {line}"
        );
    }
}

#[test]
fn without_a_valid_header_nothing_is_answered_and_the_connection_closes() {
    let srv = server("127.0.0.1", |c| c.header_timeout = 1);
    let mut bad_version = v2_tcp4([1, 2, 3, 4], 1, &[]);
    bad_version[12] = 0x31;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("plain HTTP", GET.to_vec()),
        (
            "v1 with LF only",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n".to_vec(),
        ),
        (
            "v1 bad address",
            b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n".to_vec(),
        ),
        (
            "v1 too long",
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat(),
        ),
        ("v2 version 3", bad_version),
        ("v2 UDP", v2(1, 0x12, &[0; 12])),
        ("v2 TLV overrun", v2_tcp4([1, 2, 3, 4], 1, &[0x04, 0, 9])),
        ("v2 over --max-header-bytes", v2(1, 0x00, &vec![0; 20_000])),
    ];
    for (name, header) in cases {
        let mut s = srv.connect();
        let out = exchange(&mut s, &[header.as_slice(), GET].concat(), usize::MAX);
        assert!(out.is_empty(), "{name}: {}", String::from_utf8_lossy(&out));
    }
    // Truncated: half a header, then silence. The header timeout closes it, without a 408:
    // no HTTP has been spoken, and the proxy would take a 408 for its client's.
    let started = Instant::now();
    let mut s = srv.connect();
    let header = v2_tcp4([1, 2, 3, 4], 1, &[]);
    s.write_all(&header[..20]).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "closed by the header timeout"
    );
    // The server is fine afterwards.
    let mut s = srv.connect();
    let out = exchange(
        &mut s,
        &[v2(0, 0, &[]).as_slice(), GET].concat(),
        usize::MAX,
    );
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    srv.stop().expect("stop");
}

#[test]
fn a_peer_outside_trust_proxy_is_refused_even_with_a_good_header() {
    let srv = server("10.0.0.0/8", |_| {});
    let mut s = srv.connect();
    let bytes = [
        b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 80\r\n".as_slice(),
        GET,
    ]
    .concat();
    let out = exchange(&mut s, &bytes, usize::MAX);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    srv.stop().expect("stop");
}

/// Under `--proxy-protocol` the PROXY header's client is the peer for the trust decision:
/// its X-Forwarded-For is believed only if it is itself a trusted proxy (a chain). A header
/// that names no client (`UNKNOWN`, `LOCAL`) leaves the proxy's own, trusted, address as
/// the peer; then no X-Forwarded-For is believed, or any client could name itself.
#[test]
fn x_forwarded_for_is_believed_only_from_a_trusted_client_the_header_names() {
    let log_dir = tempfile::tempdir().expect("dir");
    let srv = server("127.0.0.0/8", |c| with_log(c, log_dir.path()));
    let headers: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 127.0.0.9 127.0.0.1 5000 80\r\n".to_vec(),
        b"PROXY TCP4 192.0.2.50 127.0.0.1 5000 80\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2(0, 0x00, &[]),
    ];
    for header in &headers {
        let mut s = srv.connect();
        let request = b"GET /index.html HTTP/1.1\r\nHost: t\r\n\
                        X-Forwarded-For: 198.51.100.7\r\nConnection: close\r\n\r\n";
        let out = exchange(&mut s, &[header.as_slice(), request].concat(), usize::MAX);
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    srv.stop().expect("stop");
    let lines = log_lines(log_dir.path());
    let clients: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        clients,
        ["198.51.100.7", "192.0.2.50", "127.0.0.1", "127.0.0.1"],
        "{lines:#?}"
    );
}

#[test]
fn a_unix_socket_listener_takes_the_header_from_a_trusted_unix_peer() {
    let dir = tempfile::tempdir().expect("dir");
    let sock = dir.path().join("rs.sock");
    let log = dir.path().join("access.log");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root");
    std::fs::write(root.join("index.html"), "hi\n").expect("index");
    let config = readyserve::Config {
        listen: ListenAddr::Unix(sock.clone()),
        root,
        access_log: AccessLogTarget::File(log.clone()),
        proxy_protocol: true,
        trust_proxy: vec!["unix".parse().expect("unix")],
        ..readyserve::Config::default()
    };
    let server = readyserve::Server::bind(config).expect("bind");
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&[v2_tcp4([203, 0, 113, 5], 7, &[]).as_slice(), GET].concat())
        .expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    assert!(
        out.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    handle.stop();
    thread.join().expect("join").expect("run");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.starts_with("203.0.113.5 - - ["), "{text}");
}

#[test]
fn refusals_are_counted_in_the_metrics() {
    let dir = fixture();
    let config = readyserve::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        root: dir.path().join("root"),
        access_log: AccessLogTarget::Off,
        proxy_protocol: true,
        trust_proxy: vec!["127.0.0.1".parse().expect("trusted")],
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..readyserve::Config::default()
    };
    let server = readyserve::Server::bind(config).expect("bind");
    let addr = server.local_addr().expect("addr");
    let metrics = server.metrics_addr().expect("metrics");
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        assert!(exchange(&mut s, GET, usize::MAX).is_empty());
    }
    // 127.0.0.2 is not trusted: refused at accept.
    let local = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&local.into()).expect("bind 127.0.0.2");
    socket.connect(&addr.into()).expect("connect");
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert!(exchange(&mut s, b"PROXY UNKNOWN\r\n", usize::MAX).is_empty());
    let page = get_at(&metrics.to_string(), "/metrics").body_text();
    assert!(
        page.contains("readyserve_proxy_protocol_refused_total{reason=\"untrusted_peer\"} 1\n")
            && page
                .contains("readyserve_proxy_protocol_refused_total{reason=\"invalid_header\"} 3\n"),
        "{page}"
    );
    handle.stop();
    thread.join().expect("join").expect("run");
}

/// A connection that sent its PROXY header and nothing more has sent no request either: at
/// a shutdown it gets the same 1 s as a silent one, not its whole header timeout (it held
/// the shutdown for it, behind HAProxy). Header timeout and grace 60 s here.
#[test]
fn a_proxy_header_and_then_silence_does_not_hold_the_shutdown() {
    let server = server("127.0.0.1", |c| {
        c.header_timeout = 60;
        c.shutdown_grace = 60;
    });
    let mut silent = server.connect();
    silent
        .write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 1111 80\r\n")
        .expect("send");
    // Accepted and its header read: a request on another connection is answered after.
    let mut probe = server.connect();
    probe
        .write_all(b"PROXY TCP4 192.0.2.8 127.0.0.1 1112 80\r\nGET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut probe, false).status, 200);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.stop().is_ok());
    });
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(20)),
        Ok(true),
        "the shutdown waited on the connection that sent only its PROXY header"
    );
    assert!(is_closed(&mut silent));
}
