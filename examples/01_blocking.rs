//! # Step 1: a blocking server, one client at a time
//!
//! What it teaches: the problem every later step solves. `accept`, `read` and `write` block
//! the thread until the other side acts, so while one client is being served (or is just
//! sitting there, typing slowly), nobody else is.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 01_blocking            # listens on 127.0.0.1:9001
//! $ nc 127.0.0.1 9001                          # terminal 2: connect, type nothing yet
//! $ curl -v http://127.0.0.1:9001/             # terminal 3: hangs...
//! ```
//!
//! The curl in terminal 3 waits until you type a request into the `nc` in terminal 2 (or
//! just press Enter twice: a blank line ends a request). One slow client stops the whole server.
//!
//! Break it: delete the `if n == 0 { ... }` check in `serve`. Connect with `nc`, and press
//! Ctrl-C before sending anything: `read` now returns 0 (end of stream) for ever, the server
//! spins at 100% CPU in `serve`, and nobody is served again. A read of 0 bytes means "the
//! client closed", never "nothing yet".
//!
//! Next: `02_nonblocking_spin`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, world\n";

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);

    // `incoming()` blocks in accept() until a client connects.
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) = serve(stream) {
                    eprintln!("client error: {e}");
                }
            }
            Err(e) => eprintln!("accept error: {e}"),
        }
    }
    Ok(())
}

/// Reads until the end of the request head, then answers. Every `read` here blocks: while
/// this client is silent, the loop above cannot get back to `accept`.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.ends_with(b"\n\n") {
        let n = stream.read(&mut chunk)?; // blocks
        if n == 0 {
            return Ok(()); // the client went away
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stream.write_all(RESPONSE) // blocks while the client's receive window is full
}
