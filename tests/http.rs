//! The core protocol over real sockets: exact responses, keep-alive, pipelining, a request
//! one byte at a time, HTTP/1.0, Host, directories, large files.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

#[test]
fn get_index_exact_bytes_and_headers() {
    let server = TestServer::start();
    let r = server.get("/index.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), INDEX);
    assert_eq!(
        r.header("Content-Length"),
        Some(INDEX.len().to_string().as_str())
    );
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert!(
        r.header("Server")
            .is_some_and(|s| s.starts_with("readyserve/"))
    );
    let date = r.header("Date").expect("Date header");
    assert!(
        httpdate::parse_http_date(date).is_ok(),
        "Date {date:?} is not IMF-fixdate"
    );
    assert!(r.header("Last-Modified").is_some());
    assert_eq!(
        r.header("Connection"),
        None,
        "HTTP/1.1 keep-alive needs no Connection header"
    );
    // The root serves the same index.
    assert_eq!(server.get("/").body_text(), INDEX);
}

#[test]
fn head_has_the_same_headers_and_no_body() {
    let server = TestServer::start();
    let get = server.get("/style.css");
    let mut s = server.connect();
    send(&mut s, "HEAD /style.css HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = read_response(&mut s, true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), get.header("Content-Length"));
    assert_eq!(head.header("Content-Type"), Some("text/css; charset=utf-8"));
    // No body follows: the next response on the same connection starts right away.
    send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
}

#[test]
fn hundred_requests_on_one_connection() {
    let server = TestServer::start();
    let mut s = server.connect();
    for i in 0..100 {
        let target = if i % 2 == 0 {
            "/index.html"
        } else {
            "/style.css"
        };
        send(&mut s, &format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"));
        let r = read_response(&mut s, false);
        assert_eq!(r.status, 200, "request {i}");
    }
    assert!(is_open(&mut s));
}

#[test]
fn fifty_pipelined_requests_in_one_write_answered_in_order() {
    let server = TestServer::start();
    let mut s = server.connect();
    let targets = [
        "/index.html",
        "/style.css",
        "/a%20b.txt",
        "/missing",
        "/sub/inner.txt",
    ];
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&format!(
            "GET {} HTTP/1.1\r\nHost: t\r\n\r\n",
            targets[i % targets.len()]
        ));
    }
    send(&mut s, &batch);
    for i in 0..50 {
        let r = read_response(&mut s, false);
        let want: (u16, &str) = match targets[i % targets.len()] {
            "/index.html" => (200, INDEX),
            "/style.css" => (200, "body { color: red }\n"),
            "/a%20b.txt" => (200, "spaced\n"),
            "/missing" => (404, ""),
            _ => (200, "inner\n"),
        };
        assert_eq!(r.status, want.0, "response {i}");
        if want.0 == 200 {
            assert_eq!(r.body_text(), want.1, "response {i}");
        }
    }
    assert!(is_open(&mut s));
}

#[test]
fn request_one_byte_per_write() {
    let server = TestServer::start();
    let mut s = server.connect();
    for b in b"GET /index.html HTTP/1.1\r\nHost: t\r\nUser-Agent: slow\r\n\r\n" {
        s.write_all(&[*b]).expect("write");
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), INDEX);
}

/// Whether the connection stays open after a response (RFC 9112 section 9.3), one row per
/// case: what the client sends (`times` over, on one connection), the status and
/// `Connection` header it gets each time, and whether the connection is open afterwards.
#[test]
fn keep_alive_table() {
    struct Row {
        name: &'static str,
        send: &'static str,
        times: usize,
        status: u16,
        connection: Option<&'static str>,
        open_after: bool,
    }
    let rows = [
        Row {
            name: "HTTP/1.0 closes by default",
            send: "GET /index.html HTTP/1.0\r\n\r\n",
            times: 1,
            status: 200,
            connection: Some("close"),
            open_after: false,
        },
        Row {
            name: "HTTP/1.0 with keep-alive stays open",
            send: "GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            times: 3,
            status: 200,
            connection: Some("keep-alive"),
            open_after: true,
        },
        Row {
            // The second, pipelined request must not be answered.
            name: "Connection: close is honoured",
            send: "GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\
                   GET /style.css HTTP/1.1\r\nHost: t\r\n\r\n",
            times: 1,
            status: 200,
            connection: Some("close"),
            open_after: false,
        },
        Row {
            name: "a missing Host is 400 and closes",
            send: "GET /index.html HTTP/1.1\r\n\r\n",
            times: 1,
            status: 400,
            connection: Some("close"),
            open_after: false,
        },
        Row {
            name: "HTTP/1.1 keeps the connection, with no header to say so",
            send: "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n",
            times: 3,
            status: 200,
            connection: None,
            open_after: true,
        },
    ];
    let server = TestServer::start();
    for row in &rows {
        let mut s = server.connect();
        for _ in 0..row.times {
            send(&mut s, row.send);
            let r = read_response(&mut s, false);
            assert_eq!(r.status, row.status, "{}", row.name);
            assert_eq!(r.header("Connection"), row.connection, "{}", row.name);
            if r.status == 400 {
                assert!(r.body_text().contains("400 Bad Request"), "{}", row.name);
                assert_eq!(
                    r.header("Content-Type"),
                    Some("text/html; charset=utf-8"),
                    "{}",
                    row.name
                );
            }
        }
        if row.open_after {
            assert!(is_open(&mut s), "{}: closed", row.name);
        } else {
            assert!(is_closed(&mut s), "{}: still open", row.name);
        }
    }
}

#[test]
fn directory_redirects_and_index() {
    let server = TestServer::start();
    let r = server.get("/sub");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/sub/"));
    // The query is the client's: kept, as nginx keeps it.
    let r = server.get("/sub?x=1&y=%2F");
    assert_eq!(r.header("Location"), Some("/sub/?x=1&y=%2F"));
    let r = server.get("/sub/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), "sub index\n");
    // A directory without index.html is not listed.
    assert_eq!(server.get("/noindex/").status, 404);
    // A file named as a directory does not exist.
    assert_eq!(server.get("/index.html/").status, 404);
}

#[test]
fn missing_file_is_404_and_keeps_the_connection() {
    let server = TestServer::start();
    let mut s = server.connect();
    send(&mut s, "GET /nope.html HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 404);
    assert!(r.body_text().contains("404 Not Found"));
    send(&mut s, "GET /index.html?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
}

#[test]
fn percent_encoded_names_and_query_strings() {
    let server = TestServer::start();
    let r = server.get("/a%20b.txt?download=1&x=%2e%2e");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), "spaced\n");
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(server.get("/empty.txt").header("Content-Length"), Some("0"));
}

#[test]
fn eight_mib_file_arrives_intact() {
    let server = TestServer::start();
    let mut s = server.connect();
    send(&mut s, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.body.len(), BIG_LEN);
    assert!(r.body == big_content(), "large file corrupted");
    // The connection is reusable after a streamed body.
    send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
}

#[test]
fn big_file_then_pipelined_small_one_in_order() {
    let server = TestServer::start();
    let mut s = server.connect();
    send(
        &mut s,
        "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let big = read_response(&mut s, false);
    assert!(big.body == big_content());
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
}

#[test]
fn options_answers_allow() {
    let server = TestServer::start();
    let mut s = server.connect();
    send(&mut s, "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(r.header("Content-Length"), None);
}

#[test]
fn many_clients_at_once() {
    let server = TestServer::start();
    let mut conns: Vec<_> = (0..200).map(|_| server.connect()).collect();
    for s in conns.iter_mut() {
        send(s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    for s in conns.iter_mut() {
        assert_eq!(read_response(s, false).body_text(), INDEX);
    }
}

#[test]
fn stop_returns_ok() {
    let server = TestServer::start();
    assert_eq!(server.get("/").status, 200);
    server.stop().expect("clean stop");
}

#[test]
fn client_half_close_still_gets_its_answer() {
    let server = TestServer::start();
    let mut s = server.connect();
    send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let r = read_response(&mut s, false);
    assert_eq!(r.body_text(), INDEX);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
}
