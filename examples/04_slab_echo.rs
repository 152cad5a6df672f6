//! # Step 4: many clients in a `Slab`, WRITABLE only while output is pending, and backpressure
//!
//! What it teaches: where connections live, how to wait for room to write, and what to do
//! when a client sends faster than it reads.
//! What changed since step 3: clients stay connected. Each one lives in a `slab::Slab`, and
//! its slab key *is* its `Token`, so an event leads straight to its client. The server echoes
//! what it reads. Output that the socket cannot take yet waits in a buffer, and only then do
//! we ask for WRITABLE events. The buffer is bounded: while it is full we stop reading, so a
//! client that never reads what we send is, in the end, not read from either
//! (*backpressure*). And a client that half-closes (sends its FIN) still gets all its echo.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 04_slab_echo           # listens on 127.0.0.1:9004
//! $ nc 127.0.0.1 9004                          # type lines; they come back
//! $ nc 127.0.0.1 9004                          # a second client, served at the same time
//! $ printf 'hello\n' | nc -N 127.0.0.1 9004    # -N: send FIN at the end of input; still echoed
//! ```
//!
//! Poke it: a client that sends as fast as it can and never reads.
//!
//! ```text
//! $ python3 -c 'import socket,time; s=socket.create_connection(("127.0.0.1",9004)); s.settimeout(2); n=0
//! while True:
//!   try: n+=s.send(b"x"*65536)
//!   except socket.timeout: print("blocked after", n>>20, "MiB"); time.sleep(60)'
//! $ ps -o rss= -C 04_slab_echo                 # stays small: a few MiB
//! ```
//!
//! The client's `send` blocks after a few MiB: the kernel buffers on the way are full,
//! because the server stopped reading once its own 64 KiB were waiting.
//!
//! Break it: set `MAX_PENDING` to `usize::MAX`. The client above never blocks (stop it with
//! Ctrl-C), and the server's memory grows by every byte it sends: hundreds of MiB.
//!
//! Next: `05_state_machine` names the states this code has only implicitly.

use std::io::{self, ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

/// The listener's token. Slab keys start at 0, so pick one they will never reach.
const SERVER: Token = Token(usize::MAX - 1);

/// Most bytes a client may have waiting to be echoed. At this mark we stop reading from it.
const MAX_PENDING: usize = 64 * 1024;

struct Client {
    stream: TcpStream,
    /// Bytes read but not yet echoed back; never more than `MAX_PENDING`.
    pending: Vec<u8>,
    /// The client has sent its FIN: echo what is pending, then close.
    read_closed: bool,
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
                    read_closed: false,
                    interest: Interest::READABLE,
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads what there is room for, writes what it can. Returns false when the client is done.
fn serve(client: &mut Client, registry: &Registry, token: Token) -> bool {
    loop {
        // Read until WouldBlock (edge-triggered readiness is reported once per change), but
        // only while there is room: that is where backpressure happens.
        let mut read_blocked = false;
        while !client.read_closed && client.pending.len() < MAX_PENDING {
            let mut chunk = [0u8; 4096];
            let room = (MAX_PENDING - client.pending.len()).min(chunk.len());
            match client.stream.read(&mut chunk[..room]) {
                // EOF: the client will send no more, but it may still read. Keep what is
                // pending and echo it before closing.
                Ok(0) => client.read_closed = true,
                Ok(n) => client.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    read_blocked = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        // Write until done or WouldBlock.
        let mut write_blocked = false;
        while !client.pending.is_empty() {
            match client.stream.write(&client.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    client.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    write_blocked = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if client.read_closed && client.pending.is_empty() {
            return false; // all echoed: done
        }
        // Both sides must wait for the kernel. (If neither is blocked, the buffer was full
        // and is empty now: there is room to read again, and no event would tell us so.)
        if read_blocked || write_blocked {
            break;
        }
    }
    // Ask for WRITABLE only while output waits: a socket is writable almost all the time.
    // (With level-triggered polling, as plain poll(2) does, a permanent WRITABLE would spin
    // the CPU; mio is edge-triggered, but the rule stands: register what you wait for.)
    // Ask for READABLE only while there is room. When the buffer is full we ask for
    // WRITABLE alone and read nothing: this is backpressure. Unread bytes stay in the
    // kernel, its receive window closes, and the client's own writes block.
    let room = !client.read_closed && client.pending.len() < MAX_PENDING;
    let wanted = if client.pending.is_empty() {
        Interest::READABLE
    } else if room {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::WRITABLE
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
