//! # Step 11: a small device: input, slow work on a worker, and a live stream
//!
//! What it teaches: how an embedded server does slow work without ever blocking its loop.
//! A thermostat's web interface, beside the static files of `./public`:
//!
//! - `PUT /api/setpoint` with a number as the body: 204. Not a number: 400. A body over
//!   64 bytes: 413, and the handler never sees it.
//! - `GET /api/setpoint`: 200 and the value.
//! - `GET /api/reading`: a (simulated) sensor read that takes about 100 ms, answered later
//!   by a worker thread. Meanwhile every other request is answered at once.
//! - `GET /api/events`: Server-Sent Events, one `data:` line every 200 ms, from a worker.
//! - `GET /api/panic`: a handler bug. The answer is 500, and the device goes on.
//!
//! What changed since step 10: the handler takes a body, answers later, and streams.
//!
//! Run it:
//!
//! ```text
//! $ cargo run --example 11_device                       # listens on 127.0.0.1:9011
//! $ curl -s -X PUT -d 21.5 http://127.0.0.1:9011/api/setpoint -w '%{http_code}\n'   # 204
//! $ curl -s http://127.0.0.1:9011/api/setpoint         # 21.5
//! $ curl -s http://127.0.0.1:9011/api/reading          # {"celsius":20.1,"setpoint":21.5}
//! $ curl -sN http://127.0.0.1:9011/api/events          # ": connected", then data: {"tick":N} every 200 ms
//! ```
//!
//! With `-- 127.0.0.1:9011 --trace`, the state machine prints its transitions: a reading's
//! connection goes `Parsing=>Writing (waiting for the handler's deferred reply)`, says
//! `waiting for the handler`, and moves on at `deferred reply came`.
//!
//! Break it: in the `/api/reading` arm, do the slow part on the loop instead: replace the
//! arm's body with `std::thread::sleep(Duration::from_millis(100));` and
//! `Reply::text(200, "20.1\n").into()`. Then fire twenty readings and time a page:
//! `for i in $(seq 20); do curl -s -o /dev/null http://127.0.0.1:9011/api/reading & done;
//! curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1:9011/style.css` waits up to
//! two seconds behind the readings, where the real example answers it in a millisecond.
//!
//! ## The readiness lessons in it
//!
//! **Why the worker exists.** The loop has one thread, and the handler runs on it. If the
//! handler read the sensor itself, the 100 ms of the read would be 100 ms in which no
//! other client is accepted, read or written. So the handler only calls
//! [`Exchange::defer`], hands the [`Responder`] it gets to the sensor thread through a
//! channel, and returns [`Answer::Later`]: a few microseconds. The connection waits (in
//! Writing with nothing to write; `--trace` says "waiting for the handler") holding no
//! thread at all, and the loop goes on with everyone else.
//!
//! **How the Waker wakes the loop.** The loop sleeps in `poll`, and a thread cannot hand it
//! anything directly. [`Responder::send`] puts the reply into a queue (the mailbox) and
//! calls `mio::Waker::wake`, which makes the loop's `Poll` report the waker's token. The
//! loop takes the reply from the queue, finds the connection by its token (and a serial
//! number, in case the client has gone and someone else has the slot), and writes it.
//! The setpoint goes the other way in an atomic: the worker never touches the loop's
//! memory, and the loop never waits for the worker.
//!
//! **Where the backpressure is.** Each event stream has a bounded queue (8 events)
//! between its sender and the loop, and the loop takes from it only while the
//! connection's output is below its high-water mark. A client that reads slowly fills its
//! socket, then the loop stops taking, then the queue fills, and [`BodySender::try_send`]
//! says `Full`. The ticker thread then skips that client for this tick (a newer reading
//! follows anyway) instead of waiting: one slow client costs a bounded amount of memory,
//! and never slows the ticks for the others. `Closed` means the client has gone: it is
//! dropped from the list.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use readyserve::config::AccessLogTarget;
use readyserve::handler::{Answer, BodySender, Exchange, Handler, Reply, Responder, TrySendError};
use readyserve::http::request::{Method, Request};
use readyserve::{Config, Server};

/// The most bytes a setpoint body may have; more is answered 413 by the server.
const MAX_SETPOINT_BODY: u64 = 64;
/// Events waiting per stream client, at most.
const EVENT_QUEUE: usize = 8;

/// The device's handler. It lives on the loop thread; the workers get only channels and
/// the atomic.
struct Device {
    /// The setpoint in °C, as `f64` bits, shared with the sensor worker.
    setpoint: Arc<AtomicU64>,
    /// Readings to take: the sensor worker answers each one.
    sensor: Sender<Responder>,
    /// New event-stream clients, for the ticker.
    subscribers: Sender<BodySender>,
}

impl Handler for Device {
    fn accepts_body(&mut self, head: &Request<'_>) -> Option<u64> {
        // Asked before any of the body is read: only a setpoint PUT has one worth reading.
        (head.method == Method::Put && head.path() == "/api/setpoint").then_some(MAX_SETPOINT_BODY)
    }

    fn handle(&mut self, ex: &mut Exchange<'_, '_>) -> Option<Answer> {
        let answer = match (ex.request.method, ex.request.path()) {
            (Method::Put, "/api/setpoint") => {
                let value = std::str::from_utf8(ex.body)
                    .ok()
                    .and_then(|text| text.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite());
                match value {
                    Some(v) => {
                        self.setpoint.store(v.to_bits(), Ordering::Relaxed);
                        Reply::text(204, "").into()
                    }
                    None => Reply::text(400, "the body must be a number, like 21.5\n").into(),
                }
            }
            (Method::Get | Method::Head, "/api/setpoint") => {
                let v = f64::from_bits(self.setpoint.load(Ordering::Relaxed));
                Reply::text(200, format!("{v}\n")).into()
            }
            (Method::Get | Method::Head, "/api/reading") => {
                // Slow work: hand it over, answer later. Never sleep here.
                let responder = ex.defer();
                // If the worker were gone, the responder would come back in the error and
                // be dropped with it: a dropped responder answers 500.
                let _ = self.sensor.send(responder);
                Answer::Later
            }
            (Method::Get | Method::Head, "/api/events") => {
                let sender = ex.stream(EVENT_QUEUE);
                let _ = self.subscribers.send(sender);
                // The head now; the events come from the ticker.
                let head = Reply::new(200, "text/event-stream", ": connected\n\n")
                    .with_header("Cache-Control", "no-store");
                Answer::Stream(head)
            }
            (Method::Get, "/api/panic") => panic!("a bug in the device's handler"),
            _ => return None, // ./public has the rest
        };
        Some(answer)
    }
}

/// The sensor worker: one read at a time, each taking about 100 ms, as a real bus would.
fn sensor_worker(readings: Receiver<Responder>, setpoint: Arc<AtomicU64>) {
    let mut celsius = 19.0_f64;
    for responder in readings {
        std::thread::sleep(Duration::from_millis(100)); // the slow part
        let target = f64::from_bits(setpoint.load(Ordering::Relaxed));
        celsius += (target - celsius) * 0.1; // the room warms toward the setpoint
        let body = format!("{{\"celsius\":{celsius:.1},\"setpoint\":{target}}}\n");
        responder.send(Reply::json(200, body));
    }
}

/// The ticker: every 200 ms, one event to every stream client, never waiting for any.
fn ticker(new_clients: Receiver<BodySender>) {
    let mut clients: Vec<BodySender> = Vec::new();
    for tick in 1u64.. {
        std::thread::sleep(Duration::from_millis(200));
        clients.extend(new_clients.try_iter());
        let event = format!("data: {{\"tick\":{tick}}}\n\n");
        clients.retain(|client| match client.try_send(event.as_bytes()) {
            Ok(()) => true,
            // A slow reader: skip this tick for it, rather than wait or queue more.
            Err(TrySendError::Full(_)) => true,
            // Gone: dropping the sender is all there is to do.
            Err(TrySendError::Closed(_)) => false,
        });
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9011".to_string());
    if args.next().as_deref() == Some("--trace") {
        let logger = simple_logger::SimpleLogger::new()
            .with_level(log::LevelFilter::Warn)
            .with_module_level("readyserve", log::LevelFilter::Trace);
        // Guarded, as the binary's: a stderr nobody reads drops lines (and counts them)
        // instead of stopping the loop at the next one.
        let max_level = logger.max_level();
        let guarded = readyserve::ops::stderr_log::Guarded::new(logger);
        match log::set_boxed_logger(Box::new(guarded)) {
            Ok(()) => log::set_max_level(max_level),
            Err(e) => eprintln!("cannot start logging: {e}"),
        }
    }
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

    let setpoint = Arc::new(AtomicU64::new(20.0_f64.to_bits()));
    let (sensor, readings) = mpsc::channel();
    let (subscribers, new_clients) = mpsc::channel();
    let worker_setpoint = Arc::clone(&setpoint);
    std::thread::spawn(move || sensor_worker(readings, worker_setpoint));
    std::thread::spawn(move || ticker(new_clients));
    server.set_handler(Device {
        setpoint,
        sensor,
        subscribers,
    });

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
