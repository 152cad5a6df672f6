//! # Step 4: many clients in a `Slab`, and WRITABLE only while output is pending
//!
//! What it teaches: where connections live, and how to wait for room to write.
//! What changed since step 3: clients stay connected. Each one lives in a `slab::Slab`, and
//! its slab key *is* its `Token`, so an event leads straight to its client. The server echoes
//! what it reads. Output that the socket cannot take yet waits in a buffer, and only then do
//! we ask for WRITABLE events: a socket is writable almost all the time, so asking for them
//! always would wake us for nothing.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 04_slab_echo           # listens on 127.0.0.1:9004
//! $ nc 127.0.0.1 9004                          # type lines; they come back
//! $ nc 127.0.0.1 9004                          # a second client, served at the same time
//! ```
//!
//! Next: `05_state_machine` names the states this code has only implicitly.

use std::io::{self, ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

/// The listener's token. Slab keys start at 0, so pick one they will never reach.
const SERVER: Token = Token(usize::MAX - 1);

struct Client {
    stream: TcpStream,
    /// Bytes read but not yet echoed back.
    pending: Vec<u8>,
    /// The interest currently registered, to reregister only on change.
    interest: Interest,
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9004".to_string());
    let addr = addr
        .parse()
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(128);
    let mut listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    poll.registry()
        .register(&mut listener, SERVER, Interest::READABLE)?;
    let mut clients: Slab<Client> = Slab::new();

    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut finished = Vec::new();
        for event in events.iter() {
            match event.token() {
                SERVER => accept_all(&listener, poll.registry(), &mut clients)?,
                Token(key) => {
                    // The event may be stale: the client may be gone already. Ignore it.
                    let Some(client) = clients.get_mut(key) else {
                        continue;
                    };
                    if !serve(client, poll.registry(), Token(key)) {
                        finished.push(key);
                    }
                }
            }
        }
        // Free slots after the events: an event later in this batch may still name them.
        for key in finished {
            let mut client = clients.remove(key);
            let _ = poll.registry().deregister(&mut client.stream);
            println!("client {key} closed");
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    registry: &Registry,
    clients: &mut Slab<Client>,
) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let entry = clients.vacant_entry();
                let token = Token(entry.key());
                registry.register(&mut stream, token, Interest::READABLE)?;
                println!("client {} is {peer}", token.0);
                entry.insert(Client {
                    stream,
                    pending: Vec::new(),
                    interest: Interest::READABLE,
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads what is there, writes what it can. Returns false when the client is done.
fn serve(client: &mut Client, registry: &Registry, token: Token) -> bool {
    // Read until WouldBlock: edge-triggered readiness is reported once per change.
    let mut chunk = [0u8; 4096];
    loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => return false, // EOF
            Ok(n) => client.pending.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    // Write until done or WouldBlock.
    while !client.pending.is_empty() {
        match client.stream.write(&client.pending) {
            Ok(0) => return false,
            Ok(n) => {
                client.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    // Ask for WRITABLE only while output waits; reregister only if that changed.
    let wanted = if client.pending.is_empty() {
        Interest::READABLE
    } else {
        Interest::READABLE | Interest::WRITABLE
    };
    if wanted != client.interest {
        if registry
            .reregister(&mut client.stream, token, wanted)
            .is_err()
        {
            return false;
        }
        client.interest = wanted;
    }
    true
}
