//! The library's handler API: a custom reply, falling through to files, HEAD, bad headers,
//! headers only the server may set, and a handler that panics.

mod common;

use common::*;
use readyserve::handler::Reply;
use readyserve::http::request::Request;

fn start() -> TestServer {
    TestServer::start_full(
        |_| {},
        |server| {
            let mut count = 0u32;
            server.set_handler(move |req: &Request<'_>| {
                count += 1;
                match req.target {
                    "/status" => Some(Reply::json(200, format!("{{\"count\":{count}}}"))),
                    "/teapot" => Some(
                        Reply::text(418, "short and stout")
                            .with_header("X-Ok", "yes")
                            .with_header("X-Evil", "a\r\nSet-Cookie: pwned=1"),
                    ),
                    "/empty" => Some(Reply::text(204, "")),
                    "/framing" => Some(
                        Reply::text(200, "framed by us")
                            .with_header("Content-Length", "999")
                            .with_header("transfer-encoding", "chunked")
                            .with_header("CONNECTION", "close")
                            .with_header("Date", "Thu, 01 Jan 1970 00:00:00 GMT")
                            .with_header("Server", "not-readyserve")
                            .with_header("X-Fine", "1"),
                    ),
                    "/panic" => panic!("handler bug on purpose"),
                    _ => None,
                }
            });
        },
    )
}

#[test]
fn handler_replies_and_falls_through() {
    let server = start();
    let r = server.get("/status");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.body_text(), "{\"count\":1}");
    assert!(r.header("Date").is_some() && r.header("Server").is_some());
    // Not the handler's: the static files answer.
    assert_eq!(server.get("/index.html").body_text(), INDEX);
    assert_eq!(server.get("/status").body_text(), "{\"count\":3}");
}

#[test]
fn handler_headers_cannot_split_the_response() {
    let server = start();
    let r = server.get("/teapot");
    assert_eq!(r.status, 418);
    assert_eq!(r.header("X-Ok"), Some("yes"));
    assert_eq!(r.header("X-Evil"), None);
    assert_eq!(r.header("Set-Cookie"), None);
    assert_eq!(r.body_text(), "short and stout");
}

#[test]
fn handler_reply_to_head_has_no_body_and_204_no_length() {
    let server = start();
    let mut s = server.connect();
    send(
        &mut s,
        "HEAD /status HTTP/1.1\r\nHost: t\r\n\r\nGET /empty HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let head = read_response(&mut s, true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("11"));
    let empty = read_response(&mut s, false);
    assert_eq!(empty.status, 204);
    assert_eq!(empty.header("Content-Length"), None);
    assert!(is_open(&mut s));
}

/// Every header line called `name`, case-insensitively.
fn all<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn handler_cannot_set_the_framing_headers() {
    let server = start();
    let mut s = server.connect();
    // Pipelined: if the handler's Content-Length or chunked coding went out, the second
    // response would be read from the wrong place.
    send(
        &mut s,
        "GET /framing HTTP/1.1\r\nHost: t\r\n\r\nGET /index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    assert_eq!(all(&r, "Content-Length"), ["12"], "{}", r.head);
    assert!(all(&r, "Transfer-Encoding").is_empty(), "{}", r.head);
    assert!(all(&r, "Connection").is_empty(), "{}", r.head);
    assert_eq!(all(&r, "Date").len(), 1, "{}", r.head);
    assert_ne!(r.header("Date"), Some("Thu, 01 Jan 1970 00:00:00 GMT"));
    assert_eq!(all(&r, "Server").len(), 1, "{}", r.head);
    assert!(
        r.header("Server")
            .is_some_and(|v| v.starts_with("readyserve/"))
    );
    assert_eq!(r.header("X-Fine"), Some("1"));
    assert_eq!(r.body_text(), "framed by us");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    assert!(is_open(&mut s));
}

#[test]
fn handler_panic_is_a_500_and_the_server_goes_on() {
    let server = start();
    let r = server.get("/panic");
    assert_eq!(r.status, 500);
    // The loop survived: files and the handler itself still answer.
    assert_eq!(server.get("/index.html").body_text(), INDEX);
    let mut s = server.connect();
    send(&mut s, "GET /panic HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).status, 500);
    assert_eq!(server.get("/status").status, 200);
    server.stop().expect("the server stops cleanly");
}
