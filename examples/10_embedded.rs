//! # Step 10: readyserve as a library, with a handler of your own
//!
//! What it teaches: embedding the real server. Everything from steps 1–9 (and the limits,
//! timeouts, fairness and safe file serving that the steps left out) comes with it. You add
//! a [`Handler`](readyserve::handler::Handler): here a JSON status endpoint, as a small
//! device might offer, beside the static files of `./public`.
//! What changed since step 9: we stop writing the loop and use it.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 10_embedded            # listens on 127.0.0.1:9010
//! $ curl -s http://127.0.0.1:9010/status       # {"uptime_seconds":3,"requests":1}
//! $ curl -s http://127.0.0.1:9010/             # falls through to ./public/index.html
//! ```
//!
//! The handler runs on the loop's only thread. It must never block: while it runs, no other
//! client is served. So it reads a counter and a clock, builds a string, and returns. If the
//! status needed a slow measurement, another thread would take it and leave the result in an
//! atomic for the handler to read.
//!
//! Break it: put `std::thread::sleep(std::time::Duration::from_secs(1));` at the top of the
//! handler. Then `curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1:9010/style.css`
//! takes a second, though no handler answers it: the handler is asked first about every
//! request, on the loop's only thread, and while it sleeps nobody is served.

use std::process::ExitCode;
use std::time::Instant;

use readyserve::config::AccessLogTarget;
use readyserve::handler::Reply;
use readyserve::http::request::Request;
use readyserve::{Config, Server};

fn main() -> ExitCode {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9010".to_string());
    let listen = match listen.parse() {
        Ok(listen) => listen,
        Err(e) => {
            eprintln!("bad address: {e}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        listen,
        root: "./public".into(),
        access_log: AccessLogTarget::Off,
        ..Config::default()
    };
    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };

    let started = Instant::now();
    let mut requests: u64 = 0;
    server.set_handler(move |req: &Request<'_>| {
        requests += 1;
        // Everything but /status falls through to the static files.
        let path = req.target.split('?').next().unwrap_or("");
        if path != "/status" {
            return None;
        }
        let body = format!(
            "{{\"uptime_seconds\":{},\"requests\":{requests}}}\n",
            started.elapsed().as_secs()
        );
        Some(Reply::json(200, body).with_header("Cache-Control", "no-store"))
    });

    // SIGTERM and SIGINT drain and stop the server as they do the binary; without this,
    // SIGTERM ends the process at once.
    if let Err(e) = server.handle_signals() {
        eprintln!("cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    match server.local_addr() {
        Some(addr) => println!("listening on {addr}"),
        None => println!("listening on {}", server.url()),
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
