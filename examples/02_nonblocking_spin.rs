//! # Step 2: non-blocking sockets, in a busy loop
//!
//! What it teaches: WouldBlock, and why it is not enough on its own.
//! What changed since step 1: the listener and every client socket are non-blocking. A call
//! that would have to wait returns `ErrorKind::WouldBlock` at once instead, so one loop can
//! look at every client in turn, and a slow client no longer stops the others.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 02_nonblocking_spin    # listens on 127.0.0.1:9002
//! $ nc 127.0.0.1 9002                          # terminal 2: connect, type nothing
//! $ curl -v http://127.0.0.1:9002/             # terminal 3: answered at once
//! $ top                                        # ...but this process uses 100% of a core
//! ```
//!
//! The loop never sleeps: it asks every socket "anything yet?" millions of times a second,
//! and almost always hears "would block". It prints how many useless turns it made each
//! second.
//!
//! Break it: delete `stream.set_nonblocking(true)?;` where a client is accepted. An accepted
//! socket does not inherit the listener's non-blocking mode, so the silent `nc` blocks the
//! whole loop in `read` again, and the curl hangs as in step 1.
//!
//! Next: `03_poll_accept` lets the kernel tell us which sockets are ready.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, world\n";

struct Client {
    stream: TcpStream,
    received: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".to_string());
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);

    let mut clients: Vec<Client> = Vec::new();
    let mut turns: u64 = 0;
    let mut last_report = Instant::now();
    loop {
        turns += 1;
        // Anyone new? Usually: WouldBlock.
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                clients.push(Client {
                    stream,
                    received: Vec::new(),
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => eprintln!("accept error: {e}"),
        }
        // Anything from anyone? Usually: WouldBlock, for every client, every turn.
        clients.retain_mut(|c| {
            let mut chunk = [0u8; 1024];
            match c.stream.read(&mut chunk) {
                Ok(0) => false,
                Ok(n) => {
                    c.received.extend_from_slice(&chunk[..n]);
                    if c.received.windows(4).any(|w| w == b"\r\n\r\n") {
                        // The response is tiny, so one write takes it all.
                        let _ = c.stream.write_all(RESPONSE);
                        return false;
                    }
                    true
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Err(_) => false,
            }
        });
        if last_report.elapsed() >= Duration::from_secs(1) {
            println!(
                "{turns} turns in the last second, {} clients",
                clients.len()
            );
            turns = 0;
            last_report = Instant::now();
        }
    }
}
