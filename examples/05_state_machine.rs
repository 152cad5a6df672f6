//! # Step 5: an explicit state machine, with logged transitions
//!
//! What it teaches: naming the states. In step 4 "what is this client doing?" was spread over
//! buffers and flags. Here it is one `enum`, changed in one method that logs every change, and
//! the interest registered with mio follows from the state alone.
//! What changed since step 4: a line protocol. The server reads a line (Reading), answers it
//! in upper case (Writing), and after `quit` it says goodbye and closes (Closing).
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 05_state_machine       # listens on 127.0.0.1:9005
//! $ nc 127.0.0.1 9005                          # type: hello<Enter>, then quit<Enter>
//! $ printf 'hello\nworld\n' | nc -N 127.0.0.1 9005   # two lines in one packet: HELLO, WORLD
//! ```
//!
//! The server's terminal shows `client 0: Reading => Writing (line complete)` and so on.
//!
//! Break it: add `self.input.clear();` after the line is taken out of `input` ("one read,
//! one line"). The `printf` above now gets HELLO only. TCP carries a stream of bytes, not
//! messages: what followed the line in the same read was the next line, and it is lost.
//!
//! Next: `06_httparse_partial` looks at the parsing half on its own.

use std::io::{self, ErrorKind, Read, Write};

use log::info;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const SERVER: Token = Token(usize::MAX - 1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a complete line.
    Reading,
    /// Sending the answer.
    Writing,
    /// Sending the goodbye; closes when it is out.
    Closing,
}

struct Client {
    key: usize,
    stream: TcpStream,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    done: bool,
}

impl Client {
    /// The one place the state changes.
    fn set_state(&mut self, next: State, why: &str) {
        info!(
            "client {}: {:?} => {:?} ({why})",
            self.key, self.state, next
        );
        self.state = next;
    }

    /// What to wait for, from the state alone.
    fn interest(&self) -> Interest {
        match self.state {
            State::Reading => Interest::READABLE,
            State::Writing | State::Closing => Interest::WRITABLE,
        }
    }

    /// Runs the machine until it must wait.
    fn run(&mut self) {
        loop {
            match self.state {
                State::Reading => {
                    // Is a full line already buffered?
                    if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = self.input.drain(..=end).collect();
                        let text = String::from_utf8_lossy(&line).trim().to_string();
                        if text == "quit" {
                            self.output.extend_from_slice(b"BYE\n");
                            self.set_state(State::Closing, "quit");
                        } else {
                            self.output
                                .extend_from_slice(text.to_uppercase().as_bytes());
                            self.output.push(b'\n');
                            self.set_state(State::Writing, "line complete");
                        }
                        continue;
                    }
                    let mut chunk = [0u8; 1024];
                    match self.stream.read(&mut chunk) {
                        Ok(0) => return self.finish("peer closed"),
                        Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return self.finish("read error"),
                    }
                }
                State::Writing | State::Closing => {
                    match self.stream.write(&self.output) {
                        Ok(n) if n > 0 => {
                            self.output.drain(..n);
                        }
                        Ok(_) => return self.finish("write returned 0"),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return self.finish("write error"),
                    }
                    if self.output.is_empty() {
                        if self.state == State::Closing {
                            return self.finish("goodbye sent");
                        }
                        self.set_state(State::Reading, "answer sent");
                    }
                }
            }
        }
    }

    fn finish(&mut self, why: &str) {
        info!("client {}: {:?} => closed ({why})", self.key, self.state);
        self.done = true;
    }
}

fn main() -> io::Result<()> {
    simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Info)
        .init()
        .map_err(io::Error::other)?;
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9005".to_string());
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
            if event.token() == SERVER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = clients.vacant_entry();
                            let key = entry.key();
                            poll.registry().register(
                                &mut stream,
                                Token(key),
                                Interest::READABLE,
                            )?;
                            info!("client {key}: accepted => Reading");
                            entry.insert(Client {
                                key,
                                stream,
                                state: State::Reading,
                                input: Vec::new(),
                                output: Vec::new(),
                                done: false,
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
            let Some(client) = clients.get_mut(key) else {
                continue;
            };
            let before = client.interest();
            client.run();
            if client.done {
                finished.push(key);
            } else if client.interest() != before {
                let interest = client.interest();
                poll.registry()
                    .reregister(&mut client.stream, Token(key), interest)?;
            }
        }
        for key in finished {
            let mut client = clients.remove(key);
            let _ = poll.registry().deregister(&mut client.stream);
        }
    }
}
