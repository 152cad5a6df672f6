//! # Step 8: deadlines: a header timeout and an idle timeout, from one set of timers
//!
//! What it teaches: how a loop that sleeps in `poll` notices that *nothing* happened. A
//! client that connects and stays silent, or sends half a request head, or keeps a connection
//! open and never sends the next request, would hold its slot (and its memory) for ever. So
//! every connection has one deadline, derived from its state like its interest, and all the
//! deadlines sit in one ordered set of `(when, token)`. The nearest one is the set's first
//! element, and the time until then is `poll`'s timeout: the loop sleeps exactly until the
//! next thing can expire, and looks at no connection that cannot.
//! What changed since step 7: the `timers`, the `deadline` of each state, `timed_out`, and
//! one method, `Schedule::settle`, that brings a connection's registered interest and its
//! timer in step with its state after it ran. The timeouts are short here, so that you can
//! watch them.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 08_deadlines           # listens on 127.0.0.1:9008
//! $ nc 127.0.0.1 9008                          # type nothing: closed after 2 s
//! $ (printf 'GET / HTTP/1.1\r\n'; sleep 9) | nc -N 127.0.0.1 9008   # half a head: 408 after 2 s
//! $ (printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'; sleep 9) | nc -N 127.0.0.1 9008
//! ```
//!
//! The last one is answered at once, and the idle connection is closed 5 s later. (The
//! `sleep` keeps nc's input open; `-N` sends our FIN when it ends.)
//!
//! Poke it: trickle a head one byte a second (the "slowloris" attack). The header clock
//! starts at the first byte and later bytes do not reset it, so the client is cut off anyway:
//!
//! ```text
//! $ (for c in G E T ' ' / ' ' H T T P; do printf "$c"; sleep 1; done) | nc -N 127.0.0.1 9008
//! ```
//!
//! Break it: pass `None` instead of `timeout` to `poll.poll`. The silent `nc` above is never
//! closed (until some other client happens to wake the loop).
//!
//! What it leaves out: the real server also times out request bodies, its timeouts are flags
//! (`--header-timeout`, `--keep-alive-timeout`, `--write-timeout`), and it closes gracefully
//! (step 9); see `src/timers.rs` and `Connection::deadline` in `src/connection.rs`.
//! Next: `09_backpressure`.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

const SERVER: Token = Token(usize::MAX - 1);
const BODY: &[u8] = b"Hello, world!\n";
const MAX_HEAD: usize = 8 * 1024;
/// RFC 9110 §15.5.9: "the server did not receive a complete request message within the time
/// that it was prepared to wait".
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// A request head must be complete this long after its first byte, and a new connection must
/// send one this long after the accept. Later bytes do not extend it: otherwise a client
/// trickling a byte at a time could hold the connection for ever. (Real servers: 10–60 s.)
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection that moves no byte for this long is closed: between requests (RFC 9112 §9.5:
/// servers do not keep inactive connections for ever), or when the client stops reading.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Finished: the slot is freed at the end of this turn, and events naming it are ignored.
    done: bool,
    /// When the head being received began (or the connection was accepted). `None` between
    /// requests.
    head_started: Option<Instant>,
    /// When a byte last moved in either direction.
    progress_at: Instant,
    /// The interest registered with mio.
    registered: Interest,
    /// The deadline this connection has in the timers, so that it can be found and moved.
    deadline: Option<Instant>,
}

impl Conn {
    /// What to wait for, from the state alone.
    fn interest(&self) -> Interest {
        match self.state {
            State::Reading => Interest::READABLE,
            State::Writing => Interest::WRITABLE,
        }
    }

    /// When to stop waiting, from the state alone.
    fn deadline(&self) -> Instant {
        match (self.state, self.head_started) {
            (State::Reading, Some(started)) => started + HEADER_TIMEOUT,
            // Idle between requests, or waiting for the client to read our response.
            _ => self.progress_at + IDLE_TIMEOUT,
        }
    }

    /// The deadline has passed. Returns false when the connection is finished.
    fn timed_out(&mut self, now: Instant) -> bool {
        if self.state == State::Reading && !self.input.is_empty() {
            // Half a head: tell the client why it gets no answer, then close.
            println!("header timeout: 408, then close");
            self.output.extend_from_slice(REQUEST_TIMEOUT);
            self.close_after = true;
            self.state = State::Writing;
            return drive(self, now);
        }
        // Silent since the accept, idle between requests, or not reading what we send:
        // there is no one to tell. Just close.
        println!("timeout: closing a silent or idle connection");
        false
    }
}

/// Parses every complete request in `input` and appends a response for each. Returns how
/// many, or `None` if the input is not HTTP (the caller closes the connection).
fn answer_all(conn: &mut Conn) -> Option<usize> {
    let mut used = 0;
    let mut answered = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&conn.input[used..]) {
            Ok(httparse::Status::Complete(n)) => {
                used += n;
                answered += 1;
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
            Err(_) => return None,
        }
    }
    conn.input.drain(..used);
    (conn.input.len() <= MAX_HEAD).then_some(answered)
}

/// Runs one connection until it must wait. Returns false when it is finished.
fn drive(conn: &mut Conn, now: Instant) -> bool {
    loop {
        match conn.state {
            State::Reading => {
                let mut chunk = [0u8; 4096];
                match conn.stream.read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => {
                        conn.progress_at = now;
                        // The first byte of a head starts its clock; later ones do not.
                        conn.head_started.get_or_insert(now);
                        conn.input.extend_from_slice(&chunk[..n]);
                        match answer_all(conn) {
                            None => return false,
                            Some(0) => {} // the same head, still incomplete
                            // A new head's clock starts with its first byte, if it has one.
                            Some(_) => conn.head_started = (!conn.input.is_empty()).then_some(now),
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
                        conn.progress_at = now;
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

/// What the loop keeps about its connections, besides the connections themselves.
#[derive(Default)]
struct Schedule {
    /// Every pending deadline, ordered by time: inserting, removing and finding the nearest
    /// one cost O(log n), and no connection is looked at until its time has come.
    timers: BTreeSet<(Instant, Token)>,
    /// Finished connections, freed at the end of the turn.
    finished: Vec<usize>,
}

impl Schedule {
    /// After a connection ran: brings its registered interest and its timer in step with
    /// its state, or, if it is finished, drops its timer and marks it to be freed. The one
    /// place where either changes.
    fn settle(&mut self, conn: &mut Conn, token: Token, alive: bool, registry: &Registry) {
        if alive {
            let interest = conn.interest();
            if interest == conn.registered
                || registry
                    .reregister(&mut conn.stream, token, interest)
                    .is_ok()
            {
                conn.registered = interest;
                let next = conn.deadline();
                self.move_timer(conn, token, Some(next));
                return;
            }
        }
        self.move_timer(conn, token, None);
        conn.done = true;
        self.finished.push(token.0);
    }

    /// Moves a connection's entry in the timers (from `None`, to `None`, or both `Some`).
    fn move_timer(&mut self, conn: &mut Conn, token: Token, next: Option<Instant>) {
        if conn.deadline == next {
            return;
        }
        if let Some(old) = conn.deadline {
            self.timers.remove(&(old, token));
        }
        if let Some(new) = next {
            self.timers.insert((new, token));
        }
        conn.deadline = next;
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9008".to_string());
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
    let mut schedule = Schedule::default();

    loop {
        // Sleep until an event, or until the nearest deadline: the first of the set.
        let timeout = schedule
            .timers
            .first()
            .map(|&(when, _)| when.saturating_duration_since(Instant::now()));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = Instant::now();
        for event in events.iter() {
            if event.token() == SERVER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let entry = conns.vacant_entry();
                            let token = Token(entry.key());
                            poll.registry()
                                .register(&mut stream, token, Interest::READABLE)?;
                            let conn = entry.insert(Conn {
                                stream,
                                state: State::Reading,
                                input: Vec::new(),
                                output: Vec::new(),
                                close_after: false,
                                done: false,
                                // A new connection owes us a request: the header clock runs.
                                head_started: Some(now),
                                progress_at: now,
                                registered: Interest::READABLE,
                                deadline: None,
                            });
                            schedule.settle(conn, token, true, poll.registry());
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let token = event.token();
            // The event may be stale: the connection may be gone, or finished. Ignore it.
            let Some(conn) = conns.get_mut(token.0).filter(|c| !c.done) else {
                continue;
            };
            let alive = drive(conn, now);
            schedule.settle(conn, token, alive, poll.registry());
        }
        // Expire deadlines: the set is ordered, so stop at the first one still ahead.
        while let Some(&(when, token)) = schedule.timers.first() {
            if when > now {
                break;
            }
            schedule.timers.pop_first();
            let Some(conn) = conns.get_mut(token.0) else {
                continue;
            };
            conn.deadline = None; // just removed from the set
            let alive = conn.timed_out(now);
            schedule.settle(conn, token, alive, poll.registry());
        }
        // Free slots after the events: an event later in this batch may still name them.
        for key in schedule.finished.drain(..) {
            let mut conn = conns.remove(key);
            let _ = poll.registry().deregister(&mut conn.stream);
        }
    }
}
