//! # Step 3: `mio::Poll` and the listener's token
//!
//! What it teaches: readiness. Instead of asking every socket in turn, register the sockets
//! with a `Poll` and sleep in `poll()` until the kernel (epoll, on Linux) says one of them is
//! ready. Each registration carries a `Token`, and the events name the token.
//! What changed since step 2: the busy loop is gone. This step only accepts: it greets each
//! client and hangs up. Reading comes in step 4.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 03_poll_accept         # listens on 127.0.0.1:9003
//! $ nc 127.0.0.1 9003                          # prints a greeting; top shows 0% CPU
//! ```
//!
//! mio registers edge-triggered: an event says "this became ready", once. So when the
//! listener is readable we accept in a loop until WouldBlock. Accepting one connection per
//! event would strand the others that arrived together, because no new edge comes for them.
//!
//! Poke it: open 50 connections at once, then see how many were greeted.
//!
//! ```text
//! $ python3 -c 'import socket,time; cs=[socket.create_connection(("127.0.0.1",9003)) for _ in range(50)]
//! time.sleep(1); n=0
//! for c in cs:
//!   c.setblocking(False)
//!   try: n+=len(c.recv(64))>0
//!   except BlockingIOError: pass
//! print(n, "of 50 greeted")'
//! ```
//!
//! Break it: add `break;` after the `write_all` in the `Ok` arm (one accept per event). The
//! command above now says that only a few of 50 were greeted (2 here; a second run may say
//! 0, with the first run's connections still queued): the others wait in the kernel's
//! accept queue until some later connection raises a new edge.
//!
//! Next: `04_slab_echo` keeps the clients connected.

use std::io::{self, ErrorKind, Write};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

/// The listener's token. Named, so events are easy to tell apart.
const SERVER: Token = Token(0);

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9003".to_string());
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(128);
    let addr = addr
        .parse()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
    let mut listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    poll.registry()
        .register(&mut listener, SERVER, Interest::READABLE)?;

    let mut accepted = 0u64;
    loop {
        // Sleep until at least one registered source is ready. No timeout: no busy loop.
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue; // a signal woke us; just poll again
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() != SERVER {
                continue; // nothing else is registered in this step
            }
            // Drain the accept queue: edge-triggered means this event will not repeat.
            loop {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        accepted += 1;
                        println!("accepted {peer} (#{accepted})");
                        // A fresh socket has an empty send buffer, so this small write
                        // succeeds at once. Then the stream is dropped, which closes it.
                        let _ = stream.write_all(b"hello from 03_poll_accept\n");
                    }
                    // "Would block" here means "no more connections waiting".
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!("accept error: {e}");
                        break;
                    }
                }
            }
        }
    }
}
