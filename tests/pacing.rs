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
