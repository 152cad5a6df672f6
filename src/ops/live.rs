//! The loop, live: `/loop` on the metrics listener draws the slab in a browser, fed by
//! `/loop/events`, a Server-Sent Events stream of snapshots.
//!
//! This module holds what is not I/O: the page (embedded in the binary), the record of
//! recent turns, and the JSON of one snapshot. The server takes a snapshot a few times a
//! second, only while someone watches, and sends it down every watcher's stream; a watcher
//! that does not keep up is dropped rather than buffered for (see `crate::server`).
//!
//! A snapshot is one JSON object:
//!
//! ```text
//! {"turn":1234,"events":[1,0,2,…],"nearest_deadline_ms":950,
//!  "slots":[{"token":0,"state":"Writing","interest":"W","peer":"127.0.0.1:40112",
//!            "bytes_in":78,"bytes_out":1048864,"requests":1,"deadline_ms":9990,
//!            "watcher":false},…]}
//! ```
//!
//! `events` is the number of events in each of the last turns, oldest first.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// The page served at `/loop`: HTML, CSS and a little JavaScript, no outside resources.
pub const PAGE: &str = include_str!("live.html");

/// How often the loop takes a snapshot while someone watches.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Snapshots queued for one watcher: a watcher whose queue is full when the next one is
/// due is dropped (its stream ends), not buffered for.
pub const QUEUE: usize = 4;

/// Most `/loop/events` streams open at once. A stream has no deadline (it ends when its
/// watcher leaves), and each holds one of the metrics listener's
/// [`crate::server::MAX_METRICS_CONNECTIONS`] connections: past this, a new one gets 503,
/// so that watchers can never take the places of scrapes and health checks.
pub const MAX_WATCHERS: usize = 4;

/// How many turns' event counts a snapshot carries.
const RECENT_TURNS: usize = 64;

/// One slot, as a snapshot shows it.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The slab key, which is the mio token.
    pub token: usize,
    /// The state's name (`Reading`, `Writing`…).
    pub state: &'static str,
    /// The interest registered with mio: `R`, `W` or `RW`.
    pub interest: &'static str,
    /// The client (`None`: a Unix-socket client).
    pub peer: Option<SocketAddr>,
    /// Bytes read from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Requests answered.
    pub requests: u64,
    /// Time until its deadline, if it has one.
    pub deadline_in: Option<Duration>,
    /// This slot is a watcher of this very page.
    pub watcher: bool,
}

/// The loop's recent turns.
#[derive(Debug, Clone)]
pub struct Turns {
    /// Turns so far.
    count: u64,
    /// Events per turn, a ring of the last [`RECENT_TURNS`].
    events: [u32; RECENT_TURNS],
}

impl Default for Turns {
    fn default() -> Self {
        Turns {
            count: 0,
            events: [0; RECENT_TURNS],
        }
    }
}

impl Turns {
    /// Records one turn that had `events` events.
    pub fn record(&mut self, events: usize) {
        self.events[(self.count % RECENT_TURNS as u64) as usize] =
            u32::try_from(events).unwrap_or(u32::MAX);
        self.count += 1;
    }

    /// Turns so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes one snapshot, as a single line of JSON, into `out` (cleared first).
    pub fn snapshot(&self, nearest: Option<Duration>, rows: &[Row], out: &mut String) {
        out.clear();
        let _ = write!(out, "{{\"turn\":{},\"events\":[", self.count);
        let recorded = self.count.min(RECENT_TURNS as u64) as usize;
        for i in 0..recorded {
            // Oldest first: the ring's next slot to be written is the oldest.
            let at = (self.count as usize + RECENT_TURNS - recorded + i) % RECENT_TURNS;
            let _ = write!(out, "{}{}", if i > 0 { "," } else { "" }, self.events[at]);
        }
        out.push_str("],\"nearest_deadline_ms\":");
        millis(out, nearest);
        out.push_str(",\"slots\":[");
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Every string here is ours (a state name, `R`/`W`, an address): nothing to
            // escape.
            let _ = write!(
                out,
                "{{\"token\":{},\"state\":\"{}\",\"interest\":\"{}\",\"peer\":\"",
                row.token, row.state, row.interest
            );
            match row.peer {
                Some(addr) => {
                    let _ = write!(out, "{addr}");
                }
                None => out.push_str("unix:"),
            }
            let _ = write!(
                out,
                "\",\"bytes_in\":{},\"bytes_out\":{},\"requests\":{},\"deadline_ms\":",
                row.bytes_in, row.bytes_out, row.requests
            );
            millis(out, row.deadline_in);
            let _ = write!(out, ",\"watcher\":{}}}", row.watcher);
        }
        out.push_str("]}");
    }
}

/// A duration in whole milliseconds, or `null`.
fn millis(out: &mut String, d: Option<Duration>) {
    match d {
        Some(d) => {
            let _ = write!(out, "{}", d.as_millis());
        }
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_one_line_of_json_with_the_last_turns_oldest_first() {
        let mut turns = Turns::default();
        for events in 0..70 {
            turns.record(events);
        }
        let rows = [
            Row {
                token: 3,
                state: "Writing",
                interest: "W",
                peer: Some("[::1]:5000".parse().unwrap()),
                bytes_in: 78,
                bytes_out: 1 << 20,
                requests: 1,
                deadline_in: Some(Duration::from_millis(9990)),
                watcher: false,
            },
            Row {
                token: 4,
                state: "Reading",
                interest: "R",
                peer: None,
                bytes_in: 0,
                bytes_out: 0,
                requests: 0,
                deadline_in: None,
                watcher: true,
            },
        ];
        let mut out = String::new();
        turns.snapshot(Some(Duration::from_millis(5)), &rows, &mut out);
        assert!(!out.contains('\n'));
        let events: Vec<String> = (6..70).map(|n| n.to_string()).collect();
        assert_eq!(
            out,
            format!(
                "{{\"turn\":70,\"events\":[{}],\"nearest_deadline_ms\":5,\"slots\":[\
                 {{\"token\":3,\"state\":\"Writing\",\"interest\":\"W\",\"peer\":\"[::1]:5000\",\
                 \"bytes_in\":78,\"bytes_out\":1048576,\"requests\":1,\"deadline_ms\":9990,\
                 \"watcher\":false}},\
                 {{\"token\":4,\"state\":\"Reading\",\"interest\":\"R\",\"peer\":\"unix:\",\
                 \"bytes_in\":0,\"bytes_out\":0,\"requests\":0,\"deadline_ms\":null,\
                 \"watcher\":true}}]}}",
                events.join(",")
            )
        );
        let mut few = Turns::default();
        few.record(2);
        few.snapshot(None, &[], &mut out);
        assert_eq!(
            out,
            "{\"turn\":1,\"events\":[2],\"nearest_deadline_ms\":null,\"slots\":[]}"
        );
    }
}
