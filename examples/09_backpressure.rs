//! # Step 9: backpressure, fairness and a graceful close
//!
//! What it teaches: three ways one client can hurt the others or itself, and the fix for each.
//!
//! 1. *Backpressure.* Each response is queued in `output`. In step 7 that was bounded only by
//!    accident (one read's worth of requests); with a 1 MiB `/big` page, one 4 KiB read of
//!    pipelined requests would queue 130 MiB. So `answer_all` stops at a high-water mark
//!    (`HIGH_WATER`) and leaves the other requests in `input`, and nothing is read while
//!    output waits (interest WRITABLE only). A client that sends and never reads finds its
//!    own writes blocking, and the server's memory stays bounded.
//! 2. *Fairness.* A connection runs until WouldBlock, and a fast client may never get there:
//!    while it runs, nobody else is served. So each connection gets a budget of bytes per
//!    turn of the loop (`BUDGET`). One that used it up goes on the `ready` queue: the next
//!    `poll` then only collects what is ready, without sleeping, and the queue runs first.
//!    Edge-triggered readiness will not report its socket again, since nothing changed
//!    there: without the queue it would stall.
//! 3. *Graceful close.* Closing a socket that still has unread input makes the kernel send
//!    RST instead of FIN, and an RST can destroy the end of the response we just wrote,
//!    still on its way to the client. So after the last response we send FIN
//!    (`shutdown(Write)`), then read and drop the client's input (state `Closing`) until its
//!    own FIN, 64 KiB, or 2 s, and only then close (RFC 9112 §9.6, "Tear-down").
//!
//! What changed since step 8: `/big`, `HIGH_WATER`, `BUDGET` and `Schedule::ready`, and the
//! `Closing` state with its deadline.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 09_backpressure        # listens on 127.0.0.1:9009
//! $ curl -so /dev/null -w '%{size_download}\n' http://127.0.0.1:9009/big     # 1048576
//! ```
//!
//! Poke it, backpressure: pipeline `/big` requests and never read. The sender blocks after a
//! few MiB, and the server stays small.
//!
//! ```text
//! $ python3 -c 'import socket,time; s=socket.create_connection(("127.0.0.1",9009)); s.settimeout(2); n=0
//! while True:
//!   try: n+=s.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"*1000)
//!   except socket.timeout: print("blocked after", n>>20, "MiB of requests"); time.sleep(60)'
//! $ ps -o rss= -C 09_backpressure               # a few MiB
//! ```
//!
//! Poke it, fairness: one client floods pipelined requests (and reads the answers), and
//! curl, in another terminal, is answered at once all the same.
//!
//! ```text
//! $ python3 -c 'import socket,threading; s=socket.create_connection(("127.0.0.1",9009))
//! def drain():
//!   while s.recv(1<<20): pass
//! threading.Thread(target=drain,daemon=True).start()
//! while True: s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"*1000)'
//! $ curl -so /dev/null -w '%{time_total} s\n' http://127.0.0.1:9009/
//! ```
//!
//! Poke it, graceful close: a last request followed by bytes we will never read. All of
//! `/big` arrives all the same:
//!
//! ```text
//! $ python3 -c 'import socket,time; s=socket.create_connection(("127.0.0.1",9009))
//! s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"+b"junk"*8000); time.sleep(1); n=0
//! while (d:=s.recv(1<<16)): n+=len(d)
//! print(n, "bytes")'
//! ```
//!
//! Break it: set `BUDGET` to `usize::MAX`. Run the flood again: curl now waits until the
//! flood stops. (And to see the RST: in `drive`, return `false` where the `Closing` state
//! begins. The last command then gets part of `/big` and "Connection reset by peer".)
//!
//! What it leaves out, and the real server has: the short-read rule (a read that returns less
//! than asked for means the socket is drained: skip the read that would say WouldBlock, except
//! after the client's FIN), write and body timeouts, request bodies, files streamed from disk.
//! Where these live: `src/connection.rs` (`HIGH_WATER`, `MAX_BYTES_PER_TURN`, `on_closing`,
//! `on_reading`) and `src/server.rs` (the fairness queue).
//! Next: `10_embedded` uses the real server as a library.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
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

/// `GET /big` answers this many bytes: a response far bigger than its request.
const BIG: usize = 1024 * 1024;
/// Stop answering pipelined requests while this much output is waiting (backpressure).
const HIGH_WATER: usize = 64 * 1024;
/// Most bytes a connection may read and write in one turn of the loop (fairness).
const BUDGET: usize = 256 * 1024;
/// After the last response: how long, and how much, we read and drop before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    Writing,
    /// FIN sent; reading and dropping input until the client's FIN (graceful close).
    Closing,
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
    /// Bytes read and written in this turn of the loop, for the budget.
    turn_bytes: usize,
    /// The last run stopped because the budget ran out, not because the socket would block.
    yielded: bool,
    /// Bytes read and dropped while Closing.
    lingered: usize,
}

impl Conn {
    /// What to wait for, from the state alone.
    fn interest(&self) -> Interest {
        match self.state {
            State::Reading | State::Closing => Interest::READABLE,
            State::Writing => Interest::WRITABLE,
        }
    }

    /// When to stop waiting, from the state alone.
    fn deadline(&self) -> Instant {
        match (self.state, self.head_started) {
            (State::Reading, Some(started)) => started + HEADER_TIMEOUT,
            (State::Closing, _) => self.progress_at + LINGER_TIME,
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
        // Silent since the accept, idle between requests, not reading what we send, or done
        // lingering: there is no one to tell. Just close.
        println!("timeout: closing a silent, idle or lingering connection");
        false
    }
}

/// Parses every complete request in `input` and appends a response for each. Returns how
/// many, or `None` if the input is not HTTP (the caller closes the connection).
fn answer_all(conn: &mut Conn) -> Option<usize> {
    let mut used = 0;
    let mut answered = 0;
    loop {
        if conn.output.len() >= HIGH_WATER {
            // Backpressure: the rest waits in `input` until this output is sent.
            break;
        }
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
                let big = req.path == Some("/big");
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                    if big { BIG } else { BODY.len() },
                    if keep_alive {
                        ""
                    } else {
                        "Connection: close\r\n"
                    }
                );
                conn.output.extend_from_slice(head.as_bytes());
                if req.method == Some("HEAD") {
                    // no body
                } else if big {
                    conn.output.resize(conn.output.len() + BIG, b'.');
                } else {
                    conn.output.extend_from_slice(BODY);
                }
                if !keep_alive {
                    conn.close_after = true;
                    used = conn.input.len(); // nothing after this is answered
                    break;
                }
            }
            // Keep the bytes and read more, unless the head is already too big. (Only a head
            // that is incomplete counts: requests held back at the high-water mark do not.)
            Ok(httparse::Status::Partial) if conn.input.len() - used > MAX_HEAD => return None,
            Ok(httparse::Status::Partial) => break,
            Err(_) => return None,
        }
    }
    conn.input.drain(..used);
    Some(answered)
}

/// Answers the complete requests in `input` and picks the next state. Returns false if the
/// input is not HTTP.
fn answer(conn: &mut Conn, now: Instant) -> bool {
    match answer_all(conn) {
        None => return false,
        Some(0) => {} // the same head, still incomplete
        // A new head's clock starts with its first byte, if it has one.
        Some(_) => conn.head_started = (!conn.input.is_empty()).then_some(now),
    }
    conn.state = if conn.output.is_empty() {
        State::Reading
    } else {
        State::Writing
    };
    true
}

/// Runs one connection until it must wait, or until its budget for this turn is spent.
/// Returns false when it is finished.
fn drive(conn: &mut Conn, now: Instant) -> bool {
    conn.turn_bytes = 0;
    conn.yielded = false;
    loop {
        if conn.turn_bytes >= BUDGET {
            // Fairness: let the others have their turn. The loop runs us again before it
            // sleeps, since no new edge may come to wake us (see `Schedule::ready`).
            conn.yielded = true;
            return true;
        }
        match conn.state {
            State::Reading => {
                let mut chunk = [0u8; 4096];
                match conn.stream.read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(n) => {
                        conn.progress_at = now;
                        conn.turn_bytes += n;
                        // The first byte of a head starts its clock; later ones do not.
                        conn.head_started.get_or_insert(now);
                        conn.input.extend_from_slice(&chunk[..n]);
                        if !answer(conn, now) {
                            return false;
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
                        conn.turn_bytes += n;
                        conn.output.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
                if conn.output.is_empty() {
                    if conn.close_after {
                        // Graceful close: FIN now, but keep reading for a while (see the top).
                        let _ = conn.stream.shutdown(Shutdown::Write);
                        conn.progress_at = now;
                        conn.state = State::Closing;
                        continue;
                    }
                    // Requests held back at the high-water mark are answered now: they are
                    // in `input` already, and no edge will come for them.
                    if !answer(conn, now) {
                        return false;
                    }
                }
            }
            State::Closing => {
                let mut chunk = [0u8; 4096];
                match conn.stream.read(&mut chunk) {
                    // The client's FIN: it has everything, and closing now sends no RST.
                    Ok(0) => return false,
                    Ok(n) => {
                        conn.lingered += n;
                        if conn.lingered >= LINGER_BYTES {
                            return false; // enough: a client may send for ever
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
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
    /// Connections that used up their budget with work left, run again before the next
    /// `poll`: their sockets may still hold input or room for output, and an edge-triggered
    /// poll will not say so again.
    ready: Vec<Token>,
    /// Finished connections, freed at the end of the turn.
    finished: Vec<usize>,
}

impl Schedule {
    /// After a connection ran: brings its registered interest and its timer in step with
    /// its state and queues it if it yielded, or, if it is finished, drops its timer and
    /// marks it to be freed. The one place where any of these changes.
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
                if conn.yielded && !self.ready.contains(&token) {
                    self.ready.push(token);
                }
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
        .unwrap_or_else(|| "127.0.0.1:9009".to_string());
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
        // Sleep until an event, or until the nearest deadline: the first of the set. But not
        // at all if a connection is waiting on the ready queue.
        let timeout = if !schedule.ready.is_empty() {
            Some(Duration::ZERO)
        } else {
            schedule
                .timers
                .first()
                .map(|&(when, _)| when.saturating_duration_since(Instant::now()))
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = Instant::now();
        // The connections that yielded last turn run first: they have waited one turn.
        for token in std::mem::take(&mut schedule.ready) {
            if let Some(conn) = conns.get_mut(token.0).filter(|c| !c.done) {
                let alive = drive(conn, now);
                schedule.settle(conn, token, alive, poll.registry());
            }
        }
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
                                turn_bytes: 0,
                                yielded: false,
                                lingered: 0,
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
