//! `limit-probe`: the floor that benches/peers.sh measures the real servers against.
//!
//! It answers every request head (anything ending in CRLF CRLF) with one fixed response
//! whose body is the bytes of a file read once at startup. It does no parsing, no file I/O
//! and no logging per request, so its CPU time per request is close to the least any
//! HTTP/1.1 server can spend on one core here: the system calls and the TCP stack.
//! It is a measuring stick, not a server: it trusts its client completely.
//!
//! Usage: `limit-probe 127.0.0.1:PORT BODY_FILE`

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, ErrorKind, Read, Write};
use std::process::ExitCode;

const LISTENER: Token = Token(usize::MAX);

/// One client connection: the bytes of a head not yet complete, and the output not yet sent.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    out: Vec<u8>,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(body_path)) = (args.next(), args.next()) else {
        eprintln!("usage: limit-probe 127.0.0.1:PORT BODY_FILE");
        return ExitCode::from(2);
    };
    match run(&addr, &body_path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("limit-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(addr: &str, body_path: &str) -> io::Result<()> {
    let body = std::fs::read(body_path)?;
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);

    let addr = addr
        .parse()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;

    // Token n is conns[n]; closed slots are reused through `free`.
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns, &mut free)?;
                continue;
            }
            let n = event.token().0;
            let Some(Some(conn)) = conns.get_mut(n) else {
                continue;
            };
            if !serve(conn, &mut buf, &response) {
                // Dropping the stream closes it, and a closed fd leaves epoll by itself.
                conns[n] = None;
                free.push(n);
            }
        }
    }
}

/// Accepts until the backlog is empty (mio is edge-triggered).
fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) -> io::Result<()> {
    loop {
        let (mut stream, _) = match listener.accept() {
            Ok(pair) => pair,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            // A client that gave up before we accepted it, or fds ran out: skip it.
            Err(_) => return Ok(()),
        };
        // Responses go out whole, so Nagle could only delay them; a client that is already
        // gone fails here and is dropped.
        if stream.set_nodelay(true).is_err() {
            continue;
        }
        let n = free.pop().unwrap_or(conns.len());
        // Both interests once, for the connection's life: no reregister calls later.
        poll.registry().register(
            &mut stream,
            Token(n),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let conn = Conn {
            stream,
            pending: Vec::new(),
            out: Vec::new(),
        };
        if n == conns.len() {
            conns.push(Some(conn));
        } else {
            conns[n] = Some(conn);
        }
    }
}

/// Reads what is there, queues one response per complete head, writes what the socket takes.
/// Returns false when the connection is finished.
fn serve(conn: &mut Conn, buf: &mut [u8], response: &[u8]) -> bool {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(got) => {
                conn.pending.extend_from_slice(&buf[..got]);
                let mut start = 0;
                while let Some(end) = find_head_end(&conn.pending[start..]) {
                    conn.out.extend_from_slice(response);
                    start += end;
                }
                conn.pending.drain(..start);
                // A short read means the socket buffer is empty now; any later data raises a
                // new edge, so we save the read that would only say WouldBlock.
                if got < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(sent) => {
                conn.out.drain(..sent);
            }
            // The rest goes when the WRITABLE edge comes.
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

/// The length of the first request head in `bytes` (up to and including CRLF CRLF).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}
