//! Embedding: handlers that see every method and the client, take request bodies, answer
//! later from another thread, and stream, without ever blocking the loop. Raw sockets
//! against the real server on 127.0.0.1 port 0.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use readyserve::handler::{Answer, BodySender, Exchange, Handler, Reply, Responder, TrySendError};
use readyserve::http::request::Request;

/// How long a test waits for the handler to have run: long enough for a busy CI machine,
/// short enough that a broken server fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

/// The test handler. Paths:
/// - `/who`: the method as sent and the client address, any method;
/// - `/echo`: takes a body of up to 64 bytes and answers it back;
/// - `/big`: takes a body of any size (so `--max-body-bytes` is the limit);
/// - `/accepts-panics`: panics when asked whether it takes the body;
/// - `/later`: answered "later" from a thread;
/// - `/dropped`: the thread drops the responder; `/worker-panics`: the thread panics;
/// - `/never`: the responder is parked and never answers;
/// - `/held`: the responder is handed to the test (`responders`);
/// - `/events`: three SSE events from a thread, then the end;
/// - `/stream-held`: the sender is handed to the test (`senders`);
/// - `/stream-panics`: one event, then the sending thread panics;
/// - `/panic`: the handler itself panics.
struct TestHandler {
    /// Every body that reached `handle`, as text.
    bodies: Arc<Mutex<Vec<String>>>,
    parked: Vec<Responder>,
    responders: Sender<Responder>,
    senders: Sender<BodySender>,
}

impl Handler for TestHandler {
    fn accepts_body(&mut self, head: &Request<'_>) -> Option<u64> {
        match head.path() {
            "/echo" => Some(64),
            "/big" => Some(u64::MAX),
            "/accepts-panics" => panic!("accepts_body bug on purpose"),
            _ => None,
        }
    }

    fn handle(&mut self, ex: &mut Exchange<'_, '_>) -> Option<Answer> {
        let path = ex.request.path();
        if path == "/echo" || path == "/big" {
            let body = String::from_utf8_lossy(ex.body).into_owned();
            self.bodies.lock().expect("lock").push(body);
        }
        match path {
            "/who" => {
                let client = ex.client().map(|ip| ip.to_string()).unwrap_or_default();
                let text = format!("{} {client}", ex.request.method_name());
                Some(Reply::text(200, text).into())
            }
            "/echo" | "/big" => Some(Reply::new(200, "application/octet-stream", ex.body).into()),
            "/later" => {
                let responder = ex.defer();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50));
                    responder.send(Reply::text(200, "later"));
                });
                Some(Answer::Later)
            }
            "/dropped" => {
                let responder = ex.defer();
                std::thread::spawn(move || drop(responder));
                Some(Answer::Later)
            }
            "/worker-panics" => {
                let responder = ex.defer();
                std::thread::spawn(move || {
                    let _held = responder;
                    panic!("worker bug on purpose");
                });
                Some(Answer::Later)
            }
            "/never" => {
                self.parked.push(ex.defer());
                Some(Answer::Later)
            }
            "/held" => {
                let _ = self.responders.send(ex.defer());
                Some(Answer::Later)
            }
            "/events" => {
                let sender = ex.stream(4);
                std::thread::spawn(move || {
                    for i in 0..3 {
                        if sender.send(format!("data: {i}\n\n")).is_err() {
                            return;
                        }
                    }
                });
                Some(Answer::Stream(Reply::new(
                    200,
                    "text/event-stream",
                    ": hello\n\n",
                )))
            }
            "/stream-held" => {
                let _ = self.senders.send(ex.stream(4));
                Some(Answer::Stream(Reply::new(
                    200,
                    "application/octet-stream",
                    "",
                )))
            }
            "/stream-panics" => {
                let sender = ex.stream(4);
                std::thread::spawn(move || {
                    let _ = sender.send("data: one\n\n");
                    panic!("stream worker bug on purpose");
                });
                Some(Answer::Stream(Reply::new(200, "text/event-stream", "")))
            }
            "/panic" => panic!("handler bug on purpose"),
            _ => None,
        }
    }
}

/// A server with the test handler, and the test's ends of its hand-offs.
struct Fixture {
    server: TestServer,
    bodies: Arc<Mutex<Vec<String>>>,
    responders: Receiver<Responder>,
    senders: Receiver<BodySender>,
}

fn start_with(tweak: impl FnOnce(&mut readyserve::Config)) -> Fixture {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (responders_tx, responders) = mpsc::channel();
    let (senders_tx, senders) = mpsc::channel();
    let handler = TestHandler {
        bodies: Arc::clone(&bodies),
        parked: Vec::new(),
        responders: responders_tx,
        senders: senders_tx,
    };
    let server = TestServer::start_full(tweak, move |server| server.set_handler(handler));
    Fixture {
        server,
        bodies,
        responders,
        senders,
    }
}

fn start() -> Fixture {
    start_with(|_| {})
}

fn bodies(fx: &Fixture) -> Vec<String> {
    fx.bodies.lock().expect("lock").clone()
}

/// Reads a response head: the status, and the head's text.
fn read_head(s: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "head cut short ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text[9..12].parse().expect("status");
    (status, text)
}

/// Reads one CRLF-ended line.
fn read_line(s: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    line.truncate(line.len() - 2);
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// Reads a chunked body; `Err` with what arrived if the connection ends before the last
/// chunk.
fn read_chunked(s: &mut TcpStream) -> Result<Vec<u8>, Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let Some(size) = read_line(s) else {
            return Err(body);
        };
        let size = usize::from_str_radix(&size, 16).expect("a chunk size");
        if size == 0 {
            assert_eq!(read_line(s).as_deref(), Some(""), "no trailers, then CRLF");
            return Ok(body);
        }
        let mut chunk = vec![0u8; size + 2];
        if s.read_exact(&mut chunk).is_err() {
            return Err(body);
        }
        assert!(chunk.ends_with(b"\r\n"));
        body.extend_from_slice(&chunk[..size]);
    }
}

// ----- 1. every method, and the client ------------------------------------------------

#[test]
fn handlers_see_every_method_and_files_still_refuse_them() {
    let fx = start();
    let mut s = fx.server.connect();
    for method in ["DELETE", "PUT", "POST", "PATCH", "BREW"] {
        send(
            &mut s,
            &format!("{method} /who HTTP/1.1\r\nHost: t\r\n\r\n"),
        );
        let r = read_response(&mut s, false);
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.body_text(), format!("{method} 127.0.0.1"));
    }
    // Declined: the files answer as before, 405 with Allow (or 501 for an unknown method).
    let r = fx.server.get("/index.html");
    assert_eq!(r.status, 200);
    let mut s = fx.server.connect();
    send(
        &mut s,
        "PUT /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
    );
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, OPTIONS"));
    let mut s = fx.server.connect();
    send(&mut s, "BREW /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).status, 501);
}

#[test]
fn the_client_is_the_trusted_proxy_s_client() {
    let fx = start_with(|c| c.trust_proxy = vec!["127.0.0.1".parse().expect("cidr")]);
    let mut s = fx.server.connect();
    send(
        &mut s,
        "GET /who HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n",
    );
    assert_eq!(read_response(&mut s, false).body_text(), "GET 203.0.113.7");
    // Not trusted: the header proves nothing, the peer is the client.
    let fx = start();
    let mut s = fx.server.connect();
    send(
        &mut s,
        "GET /who HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n",
    );
    assert_eq!(read_response(&mut s, false).body_text(), "GET 127.0.0.1");
}

// ----- 2. bodies ----------------------------------------------------------------------

#[test]
fn bodies_reach_the_handler_with_content_length_and_chunked() {
    let fx = start();
    let mut s = fx.server.connect();
    // Pipelined: both framings, then a GET, on one connection.
    send(
        &mut s,
        "PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
         POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n\
         GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(read_response(&mut s, false).body_text(), "hello");
    assert_eq!(read_response(&mut s, false).body_text(), "abcde");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    // A body that arrives in pieces, later.
    send(
        &mut s,
        "PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nsl",
    );
    std::thread::sleep(Duration::from_millis(50));
    send(&mut s, "ow!!");
    assert_eq!(read_response(&mut s, false).body_text(), "slow!!");
    assert!(is_open(&mut s));
    assert_eq!(bodies(&fx), ["hello", "abcde", "slow!!"]);
    // A body the handler does not take is not shown to it.
    let mut s = fx.server.connect();
    send(
        &mut s,
        "POST /who HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(read_response(&mut s, false).body_text(), "POST 127.0.0.1");
    assert!(is_open(&mut s));
}

#[test]
fn bodies_over_the_handler_s_limit_are_413_and_never_reach_it() {
    let fx = start();
    let mut s = fx.server.connect();
    let big = "x".repeat(65);
    send(
        &mut s,
        &format!("PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 65\r\n\r\n{big}"),
    );
    assert_eq!(read_response(&mut s, false).status, 413);
    let mut s = fx.server.connect();
    send(
        &mut s,
        &format!(
            "PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             40\r\n{}\r\n1\r\nx\r\n0\r\n\r\n",
            "x".repeat(64)
        ),
    );
    assert_eq!(read_response(&mut s, false).status, 413);
    // Exactly at the limit is fine.
    let mut s = fx.server.connect();
    let at = "y".repeat(64);
    send(
        &mut s,
        &format!("PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 64\r\n\r\n{at}"),
    );
    assert_eq!(read_response(&mut s, false).body_text(), at);
    assert_eq!(bodies(&fx), [at]);
}

#[test]
fn bodies_over_max_body_bytes_are_413_whatever_the_handler_takes() {
    let fx = start_with(|c| c.max_body_bytes = 100);
    let mut s = fx.server.connect();
    send(
        &mut s,
        &format!(
            "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n{}",
            "x".repeat(101)
        ),
    );
    assert_eq!(read_response(&mut s, false).status, 413);
    let mut s = fx.server.connect();
    send(
        &mut s,
        &format!(
            "PUT /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n{}\r\n0\r\n\r\n",
            "x".repeat(101)
        ),
    );
    assert_eq!(read_response(&mut s, false).status, 413);
    let mut s = fx.server.connect();
    send(
        &mut s,
        &format!(
            "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{}",
            "z".repeat(100)
        ),
    );
    assert_eq!(read_response(&mut s, false).status, 200);
    assert_eq!(bodies(&fx), ["z".repeat(100)]);
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let fx = start();
    let mut s = fx.server.connect();
    send(
        &mut s,
        "PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    );
    // The body has not been sent: only the server's go-ahead can arrive now.
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 100, "{head}");
    assert_eq!(head, "HTTP/1.1 100 Continue\r\n\r\n");
    send(&mut s, "ping");
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.body_text().as_str()), (200, "ping"));
    // The body was read: the connection can go on.
    assert!(is_open(&mut s));
    send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    // Over the limit: 413 at once, and the body need never be sent.
    let mut s = fx.server.connect();
    send(
        &mut s,
        "PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 65\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(read_response(&mut s, false).status, 413);
    assert_eq!(bodies(&fx), ["ping"]);
}

// ----- 3. deferred replies ------------------------------------------------------------

#[test]
fn a_deferred_reply_comes_from_a_thread_and_does_not_hold_up_others() {
    let fx = start();
    let mut s = fx.server.connect();
    send(&mut s, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.body_text().as_str()), (200, "later"));
    assert!(is_open(&mut s));

    // The test holds the responder: until it answers, the loop serves everyone else.
    let mut held = fx.server.connect();
    send(&mut held, "GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
    let responder = fx.responders.recv_timeout(WAIT).expect("the handler ran");
    assert_eq!(fx.server.get("/index.html").body_text(), INDEX);
    assert_eq!(fx.server.get("/who").body_text(), "GET 127.0.0.1");
    responder.send(Reply::text(201, "now"));
    let r = read_response(&mut held, false);
    assert_eq!((r.status, r.body_text().as_str()), (201, "now"));
}

#[test]
fn pipelined_requests_wait_behind_a_deferred_one_in_order() {
    let fx = start();
    let mut s = fx.server.connect();
    send(
        &mut s,
        "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /held HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /who HTTP/1.1\r\nHost: t\r\n\r\n\
         PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    let responder = fx.responders.recv_timeout(WAIT).expect("the handler ran");
    // Nothing behind the pending one is answered before it.
    assert!(is_open(&mut s), "an answer overtook the deferred one");
    responder.send(Reply::text(200, "second"));
    assert_eq!(read_response(&mut s, false).body_text(), "second");
    assert_eq!(read_response(&mut s, false).body_text(), "GET 127.0.0.1");
    assert_eq!(read_response(&mut s, false).body_text(), "ok");
}

#[test]
fn a_dropped_responder_is_a_500() {
    let fx = start();
    for path in ["/dropped", "/worker-panics"] {
        let mut s = fx.server.connect();
        send(&mut s, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert_eq!(read_response(&mut s, false).status, 500, "{path}");
        // And the connection, and the server, go on.
        send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    }
}

#[test]
fn a_deferred_reply_that_never_comes_is_a_503_at_the_write_timeout() {
    let fx = start_with(|c| c.write_timeout = 1);
    let mut s = fx.server.connect();
    send(
        &mut s,
        "GET /never HTTP/1.1\r\nHost: t\r\n\r\nGET /index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(read_response(&mut s, false).status, 503);
    // The pipelined request behind it is answered after it.
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
}

#[test]
fn an_answer_for_a_client_that_left_is_harmless() {
    // One connection at a time: the next client is accepted only once the server has
    // noticed that the first one left, and then it gets the same slab key.
    let fx = start_with(|c| c.max_connections = 1);
    let mut gone = fx.server.connect();
    send(&mut gone, "GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
    let stale = fx.responders.recv_timeout(WAIT).expect("the handler ran");
    drop(gone);
    let mut next = fx.server.connect();
    send(&mut next, "GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
    // This arrives only if the first connection was closed while its reply was pending.
    let current = fx.responders.recv_timeout(WAIT).expect("the handler ran");
    stale.send(Reply::text(200, "for the client that left"));
    current.send(Reply::text(200, "for the next client"));
    assert_eq!(
        read_response(&mut next, false).body_text(),
        "for the next client"
    );
    drop(next);
    assert_eq!(fx.server.get("/index.html").body_text(), INDEX);
}

// ----- 4. streams ---------------------------------------------------------------------

#[test]
fn sse_events_arrive_chunked_and_the_stream_ends() {
    let fx = start();
    let mut s = fx.server.connect();
    send(&mut s, "GET /events HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("Content-Length"), "{head}");
    let body = read_chunked(&mut s).expect("the last chunk");
    assert_eq!(
        String::from_utf8_lossy(&body),
        ": hello\n\ndata: 0\n\ndata: 1\n\ndata: 2\n\n"
    );
    // Kept alive after the last chunk.
    send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
}

#[test]
fn on_http_1_0_a_stream_ends_with_the_connection() {
    let fx = start();
    let mut s = fx.server.connect();
    send(&mut s, "GET /events HTTP/1.0\r\n\r\n");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("read to the close");
    let (head, body) = all.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        !head.contains("Transfer-Encoding") && !head.contains("Content-Length"),
        "{head}"
    );
    assert_eq!(body, ": hello\n\ndata: 0\n\ndata: 1\n\ndata: 2\n\n");
}

#[test]
fn a_head_request_gets_the_stream_s_head_only() {
    let fx = start();
    let mut s = fx.server.connect();
    send(
        &mut s,
        "HEAD /events HTTP/1.1\r\nHost: t\r\n\r\nGET /index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let (status, head) = read_head(&mut s);
    assert_eq!(status, 200);
    // The head a GET would get: chunked, no length (not the first piece's).
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("Content-Length"), "{head}");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
}

#[test]
fn a_slow_reader_makes_try_send_full_and_memory_stays_bounded() {
    let fx = start();
    let piece = vec![b'e'; 64 * 1024];
    let before = rss_kib(std::process::id());
    let mut clients = Vec::new();
    let mut accepted_total = 0usize;
    for _ in 0..4 {
        let mut s = fx.server.connect();
        send(&mut s, "GET /stream-held HTTP/1.1\r\nHost: t\r\n\r\n");
        let sender = fx.senders.recv_timeout(WAIT).expect("the handler ran");
        // The client never reads. Up to 256 MiB is offered: without backpressure it
        // would all be taken (and held by the server).
        let mut accepted = 0usize;
        let mut full = false;
        for _ in 0..4096 {
            match sender.try_send(piece.clone()) {
                Ok(()) => accepted += piece.len(),
                Err(TrySendError::Full(_)) => {
                    // Full at once can mean "the loop has not taken the last ones yet":
                    // give it a moment, and only a second Full in a row counts.
                    std::thread::sleep(Duration::from_millis(20));
                    if let Err(TrySendError::Full(_)) = sender.try_send(piece.clone()) {
                        full = true;
                        break;
                    }
                    accepted += piece.len();
                }
                Err(TrySendError::Closed(_)) => panic!("the client is still there"),
            }
        }
        assert!(full, "try_send never said Full after {accepted} bytes");
        accepted_total += accepted;
        clients.push((s, sender));
    }
    let after = rss_kib(std::process::id());
    let grew = after.saturating_sub(before);
    eprintln!(
        "4 non-reading stream clients: {accepted_total} bytes taken before Full; RSS grew \
         {grew} KiB"
    );
    assert!(grew < 64 * 1024, "RSS grew by {grew} KiB");
    // The client goes: the sender learns it.
    let (s, sender) = clients.pop().expect("a client");
    drop(s);
    let mut closed = false;
    for _ in 0..500 {
        match sender.try_send("x") {
            Err(TrySendError::Closed(_)) => {
                closed = true;
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(closed, "the sender was not told the client left");
    // And the server still serves.
    assert_eq!(fx.server.get("/index.html").body_text(), INDEX);
}

// ----- 5. panics ----------------------------------------------------------------------

#[test]
fn panics_in_every_kind_of_handler_are_500_and_the_server_goes_on() {
    let fx = start();
    // In `handle`, answering now.
    assert_eq!(fx.server.get("/panic").status, 500);
    // In `accepts_body`, before the body is read.
    let mut s = fx.server.connect();
    send(
        &mut s,
        "PUT /accepts-panics HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(read_response(&mut s, false).status, 500);
    // In the thread that holds a responder (see also `a_dropped_responder_is_a_500`).
    assert_eq!(fx.server.get("/worker-panics").status, 500);
    // In the thread that holds a stream's sender: the head went out long ago, so the body
    // is cut off (no last chunk), for the client to see.
    let mut s = fx.server.connect();
    send(&mut s, "GET /stream-panics HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, _) = read_head(&mut s);
    assert_eq!(status, 200);
    let cut = read_chunked(&mut s).expect_err("no last chunk");
    assert_eq!(cut, b"data: one\n\n");
    assert_eq!(fx.server.get("/index.html").body_text(), INDEX);
    assert_eq!(fx.server.get("/later").body_text(), "later");
    fx.server.stop().expect("the server stops cleanly");
}

/// The handles workers hold must cross threads (a compile-time check).
#[test]
fn responders_and_senders_are_send() {
    fn send<T: Send + 'static>() {}
    send::<Responder>();
    send::<BodySender>();
}

/// A measurement, not a check: 100 clients that never read, each streamed 16 KiB pieces
/// until `try_send` says Full. Prints how much the process's RSS grew (the server runs in
/// this process). Run: `cargo test --release --test embedding -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn measure_rss_of_100_slow_stream_clients() {
    let fx = start();
    let piece = vec![b'm'; 16 * 1024];
    let before = rss_kib(std::process::id());
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut s = fx.server.connect();
        send(&mut s, "GET /stream-held HTTP/1.1\r\nHost: t\r\n\r\n");
        clients.push((s, fx.senders.recv_timeout(WAIT).expect("the handler ran")));
    }
    let connected = rss_kib(std::process::id());
    let mut taken = 0usize;
    for (_, sender) in &clients {
        let mut fulls = 0;
        while fulls < 2 {
            match sender.try_send(piece.clone()) {
                Ok(()) => {
                    taken += piece.len();
                    fulls = 0;
                }
                Err(TrySendError::Full(_)) => {
                    fulls += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TrySendError::Closed(_)) => break,
            }
        }
    }
    let after = rss_kib(std::process::id());
    eprintln!(
        "100 slow stream clients: RSS {before} KiB before, {connected} KiB connected, \
         {after} KiB once {} MiB had been taken and every queue said Full: {} KiB more per \
         client",
        taken >> 20,
        after.saturating_sub(connected) / 100
    );
}
