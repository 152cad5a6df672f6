//! # Step 6: parsing a request that arrives in pieces
//!
//! What it teaches: `httparse::Status::Partial` versus `Complete(n)`. TCP delivers a byte
//! stream, not messages: a request may arrive one byte at a time, or three requests may
//! arrive in one read. No sockets here, just the parser.
//! What changed since step 5: nothing on the network side. This is the parsing half of the
//! state machine, on its own.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 06_httparse_partial
//! ```
//!
//! It feeds a request into the parser one byte at a time. Every prefix is `Partial` (not an
//! error: "come back with more bytes"), until the empty line that ends the head, when it
//! becomes `Complete(n)`. The bytes after `n` are the start of the next, pipelined, request:
//! a server must keep them.
//!
//! Break it: parse `&stream[fed - 1..fed]` (only the newest byte) instead of
//! `&stream[..fed]`. The fourth call sees a lone space and says "invalid token": httparse
//! keeps nothing between calls, so keeping the bytes until the head is complete is the
//! caller's job (the `input` buffer of step 7).
//!
//! Next: `07_hello_http` puts steps 4, 5 and 6 together.

fn main() {
    let stream = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\nGET /next HTTP/1.1\r\n";
    let mut fed = 0;
    loop {
        fed += 1;
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&stream[..fed]) {
            Ok(httparse::Status::Partial) => {
                let last = stream[fed - 1];
                println!(
                    "{fed:3} bytes: Partial   (last byte {:?})",
                    char::from(last)
                );
            }
            Ok(httparse::Status::Complete(n)) => {
                println!("{fed:3} bytes: Complete({n})");
                println!(
                    "  method={:?} path={:?} version=1.{:?} headers={}",
                    req.method.unwrap_or("?"),
                    req.path.unwrap_or("?"),
                    req.version.unwrap_or(0),
                    req.headers.len()
                );
                let leftover = &stream[n..];
                println!(
                    "  the next {} bytes belong to the next request: {:?}",
                    leftover.len(),
                    String::from_utf8_lossy(leftover)
                );
                break;
            }
            Err(e) => {
                println!("{fed:3} bytes: error {e}");
                break;
            }
        }
    }

    // An error is different from Partial: no amount of further bytes can fix it.
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    println!(
        "\"GET / HTTP/1.1\\r\\nHost : x\" gives {:?}",
        req.parse(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")
    );
}
