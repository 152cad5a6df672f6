//! Deadlines for every connection, without scanning the connections.
//!
//! A server with 10,000 connections cannot afford to look at each one on every loop turn to
//! see whether it has timed out. Instead every connection has at most one deadline, kept in
//! an ordered set of `(when, token)` pairs. Setting, moving and removing a deadline cost
//! O(log n); the nearest one is the first element, and it becomes `poll`'s timeout, so the
//! loop sleeps exactly until the next thing can expire.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mio::Token;

/// All pending deadlines, ordered by time.
#[derive(Debug, Default)]
pub struct Timers {
    set: BTreeSet<(Instant, usize)>,
}

impl Timers {
    /// No deadlines.
    pub fn new() -> Self {
        Timers::default()
    }

    /// Moves `token`'s deadline from `old` to `new` (either may be `None`). Each connection
    /// remembers its own deadline and passes it in as `old`, so no lookup by token is needed.
    pub fn reschedule(&mut self, token: Token, old: Option<Instant>, new: Option<Instant>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.set.remove(&(old, token.0));
        }
        if let Some(new) = new {
            self.set.insert((new, token.0));
        }
    }

    /// How long `poll` may sleep before the nearest deadline, or `None` for no deadline.
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.set.first().map(|&(when, _)| {
            // Round up to the next millisecond: epoll counts in whole milliseconds, and
            // waking up a hair early would only mean a second, useless turn of the loop.
            when.saturating_duration_since(now) + Duration::from_micros(999)
        })
    }

    /// Removes and returns one token whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Token> {
        match self.set.first() {
            Some(&(when, _)) if when <= now => self.set.pop_first().map(|(_, t)| Token(t)),
            _ => None,
        }
    }

    /// Number of pending deadlines.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no deadline is pending.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_in_order_and_reschedule() {
        let mut timers = Timers::new();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        timers.reschedule(Token(1), None, Some(t0 + s(3)));
        timers.reschedule(Token(2), None, Some(t0 + s(1)));
        timers.reschedule(Token(3), None, Some(t0 + s(2)));
        // Token 2 made progress: its deadline moves later.
        timers.reschedule(Token(2), Some(t0 + s(1)), Some(t0 + s(5)));
        assert_eq!(timers.len(), 3);
        assert!(timers.poll_timeout(t0).is_some_and(|d| d >= s(2)));
        assert_eq!(timers.pop_expired(t0 + s(1)), None);
        assert_eq!(timers.pop_expired(t0 + s(4)), Some(Token(3)));
        assert_eq!(timers.pop_expired(t0 + s(4)), Some(Token(1)));
        assert_eq!(timers.pop_expired(t0 + s(4)), None);
        timers.reschedule(Token(2), Some(t0 + s(5)), None);
        assert!(timers.is_empty());
        assert_eq!(timers.poll_timeout(t0), None);
    }
}
