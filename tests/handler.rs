//! The library's handler API: a custom reply, falling through to files, HEAD, bad headers.

mod common;

use common::*;
use readyserve::handler::Reply;
use readyserve::request::Request;

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
