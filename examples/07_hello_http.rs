//! # Step 7: a complete (tiny) HTTP/1.1 server: keep-alive and pipelining
//!
//! What it teaches: steps 4, 5 and 6 together. This is readyserve's design in miniature:
//! a slab of connections, an explicit state, httparse with `Partial`/`Complete(n)`, leftover
//! bytes kept for the next pipelined request, all responses of one read batched into one
//! write, and keep-alive decided from the version and the `Connection` header.
//! As in step 5, the interest registered with mio follows from the state: READABLE while
//! Reading, WRITABLE while Writing (so, as in step 4, WRITABLE only while output is pending,
//! and no reading while it is: the simplest backpressure).
//! What changed since step 6: it is on the network again, and it speaks HTTP.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 07_hello_http          # listens on 127.0.0.1:9007
//! $ curl -v http://127.0.0.1:9007/ http://127.0.0.1:9007/again   # one connection, reused
//! $ printf 'GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n' | nc -N 127.0.0.1 9007
//! $ wrk -t1 -c64 -d5s http://127.0.0.1:9007/   # it is fast, too
//! ```
//!
//! The `printf` sends two pipelined requests in one packet; two responses come back. (`-N`
//! makes nc send its FIN when its input ends; the server then sees EOF and closes. Without
//! it, both sides wait for each other: keep-alive.)
//!
//! Break it: in `answer_all`, add `break;` after the response is queued (answer one request
//! per read). The `printf` above gets one response: the second request sits in `input`, and
//! no new bytes will come to raise an edge for it.
//!
//! What it leaves out, and the real server has: limits, timeouts, bodies, files, fairness.
//! Next: `08_deadlines` adds timeouts.

use std::io::{self, ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const SERVER: Token = Token(usize::MAX - 1);
const BODY: &[u8] = b"Hello, world!\n";
const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    Writing,
}

struct Conn {
    stream: TcpStream,
    state: State,
    /// Received, not yet parsed: the start of the next request.
    input: Vec<u8>,
    /// Responses not yet sent, several of them if requests were pipelined.
    output: Vec<u8>,
    /// Close once `output` is sent.
    close_after: bool,
}

impl Conn {
    /// What to wait for, from the state alone.
    fn interest(&self) -> Interest {
        match self.state {
            State::Reading => Interest::READABLE,
            State::Writing => Interest::WRITABLE,
        }
    }
}

/// Parses every complete request in `input` and appends a response for each. Returns false
/// if the input is not HTTP (the caller closes the connection).
fn answer_all(conn: &mut Conn) -> bool {
    let mut used = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&conn.input[used..]) {
            Ok(httparse::Status::Complete(n)) => {
                used += n;
                // HTTP/1.1 keeps the connection unless told "close"; HTTP/1.0 is the opposite.
                let conn_header = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("connection"))
                    .map(|h| h.value.to_ascii_lowercase());
                let keep_alive = match req.version {
                    Some(1) => conn_header.as_deref() != Some(b"close"),
                    _ => conn_header.as_deref() == Some(b"keep-alive"),
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                    BODY.len(),
                    if keep_alive {
                        ""
                    } else {
                        "Connection: close\r\n"
                    }
                );
                conn.output.extend_from_slice(head.as_bytes());
                if req.method != Some("HEAD") {
                    conn.output.extend_from_slice(BODY);
                }
                if !keep_alive {
                    conn.close_after = true;
                    used = conn.input.len(); // nothing after this is answered
                    break;
                }
            }
            Ok(httparse::Status::Partial) => break, // keep the bytes, read more
            Err(_) => return false,
        }
    }
    conn.input.drain(..used);
    conn.input.len() <= MAX_HEAD
}

/// Runs one connection until it must wait. Returns false when it is finished.
fn drive(conn: &mut Conn) -> bool {
    loop {
        match conn.state {
            State::Reading => {
                let mut chunk = [0u8; 4096];
                match conn.stream.read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => {
                        conn.input.extend_from_slice(&chunk[..n]);
                        if !answer_all(conn) {
                            return false;
                        }
                        if !conn.output.is_empty() {
                            conn.state = State::Writing;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            State::Writing => {
                match conn.stream.write(&conn.output) {
                    Ok(0) => return false,
                    Ok(n) => {
                        conn.output.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
                if conn.output.is_empty() {
                    if conn.close_after {
                        return false;
                    }
                    conn.state = State::Reading; // keep-alive: the next request
                }
            }
        }
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9007".to_string());
    let addr = addr
        .parse()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    poll.registry()
        .register(&mut listener, SERVER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();

    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut finished = Vec::new();
        for event in events.iter() {
            if event.token() == SERVER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let entry = conns.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE,
                            )?;
                            entry.insert(Conn {
                                stream,
                                state: State::Reading,
                                input: Vec::new(),
                                output: Vec::new(),
                                close_after: false,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = event.token().0;
            // The event may be stale: the connection may be gone already. Ignore it.
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let before = conn.interest();
            if !drive(conn) {
                finished.push(key);
            } else if conn.interest() != before {
                // Reregister only when the state asks for something else.
                let interest = conn.interest();
                if poll
                    .registry()
                    .reregister(&mut conn.stream, Token(key), interest)
                    .is_err()
                {
                    finished.push(key);
                }
            }
        }
        for key in finished {
            if conns.contains(key) {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}
