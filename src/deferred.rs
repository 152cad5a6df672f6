//! Answers that come later, from another thread: the [`Mailbox`] in the loop, the
//! [`Responder`] and the [`BodySender`] that workers hold, and what a connection keeps
//! while it waits ([`Pending`]).
//!
//! The loop has one thread and must never block, so slow work (a sensor read, a database
//! query) is done on a worker thread of the library user's. The worker cannot touch the
//! connection: it lives in the loop's slab, on the loop's thread. So the worker *posts*
//! its answer: it puts a [`Note`] into the mailbox (a mutex around a queue, held for one
//! push) and wakes the loop with the `mio::Waker` registered in its `Poll`. The loop, back
//! from `poll` with the waker's token among the events, takes every note and hands each to
//! the connection it names. Nothing waits on anything: the worker pushes and goes on, and
//! the connection waits the way it waits for a socket, as a state the loop knows about.
//!
//! A note names its connection by slab key, and slab keys are reused: by the time a worker
//! answers, the client may have gone and a new connection may hold the key. So every
//! deferred answer and every stream also gets a serial number, unique in the server's
//! life, and the connection takes a note only if it is waiting for that very number. A
//! note for a connection that is gone, or that waits for something else, is dropped: a
//! late answer is harmless, never misdelivered.
//!
//! A stream's pieces do not go through the mailbox: they go through a bounded channel
//! (`std::sync::mpsc::sync_channel`) of their own, and the mailbox only carries "there is
//! something to take", once until the loop next looks (a flag keeps a
//! busy sender from posting a note per piece). The loop takes pieces only while the
//! connection's output is below its high-water mark, so a client that reads slowly leaves
//! them in the channel; once the channel is full, [`BodySender::try_send`] says
//! [`TrySendError::Full`]. That is the backpressure: the server holds at most the
//! high-water mark and the channel's capacity per stream, however slow the client.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use mio::Waker;

use crate::buffers::OutBuf;
use crate::reply::Reply;

/// Where workers leave answers for the loop, and the waker that tells it to look.
pub struct Mailbox {
    notes: Mutex<VecDeque<Note>>,
    /// `None` outside a running server: nobody reads such a mailbox.
    waker: Option<Arc<Waker>>,
    /// The next serial number for a deferred answer or a stream.
    next_serial: AtomicU64,
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

impl Mailbox {
    /// An empty mailbox that wakes the loop through `waker`.
    pub fn new(waker: Option<Arc<Waker>>) -> Self {
        Mailbox {
            notes: Mutex::new(VecDeque::new()),
            waker,
            next_serial: AtomicU64::new(1),
        }
    }

    /// Moves every note into `into` (the loop's side).
    pub fn take_all(&self, into: &mut VecDeque<Note>) {
        // A worker that panicked cannot have done so while holding the lock (a push does
        // not panic short of running out of memory), so a poisoned queue is still whole.
        let mut notes = self.notes.lock().unwrap_or_else(PoisonError::into_inner);
        into.append(&mut notes);
    }

    /// Posts a note and wakes the loop (a worker's side).
    fn post(&self, note: Note) {
        self.notes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(note);
        // After the push: a loop woken before it could find the queue empty and sleep.
        if let Some(waker) = &self.waker
            && let Err(e) = waker.wake()
        {
            log::error!("could not wake the event loop: {e}");
        }
    }

    fn serial(&self) -> u64 {
        self.next_serial.fetch_add(1, Ordering::Relaxed)
    }
}

/// A worker's message for one connection.
#[derive(Debug)]
pub struct Note {
    /// The connection's slab key.
    pub key: usize,
    /// The serial number of the answer or stream it is about.
    serial: u64,
    what: News,
}

/// What a note says.
#[derive(Debug)]
enum News {
    /// The deferred reply.
    Reply(Reply),
    /// The responder was dropped without an answer: 500.
    Dropped,
    /// The stream has pieces to take, or has ended.
    Stream,
}

/// The handle that completes a deferred reply, from any thread (see
/// [`crate::handler::Exchange::defer`]).
///
/// Dropping it without calling [`Responder::send`] (a worker that gave up, or panicked)
/// answers 500. Sending after the client has gone, or after the timeout answered 503, is
/// harmless: the answer is dropped.
pub struct Responder {
    mailbox: Arc<Mailbox>,
    key: usize,
    serial: u64,
    answered: bool,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("key", &self.key)
            .field("serial", &self.serial)
            .finish()
    }
}

impl Responder {
    /// Completes the response with `reply`, and wakes the loop to send it.
    pub fn send(mut self, reply: Reply) {
        self.answered = true;
        self.post(News::Reply(reply));
    }

    fn post(&self, what: News) {
        self.mailbox.post(Note {
            key: self.key,
            serial: self.serial,
            what,
        });
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            self.post(News::Dropped);
        }
    }
}

/// Why [`BodySender::try_send`] (or [`BodySender::send`]) did not take a piece; the piece
/// is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError {
    /// The queue is full: the client reads slower than the pieces come. Try again later,
    /// or drop the piece (an SSE reading that a newer one will replace, say).
    Full(Vec<u8>),
    /// The stream is over: the client went away, or the request was a HEAD. Stop.
    Closed(Vec<u8>),
}

impl fmt::Display for TrySendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the stream's queue is full"),
            TrySendError::Closed(_) => f.write_str("the stream is closed"),
        }
    }
}

impl std::error::Error for TrySendError {}

/// Flags a stream's two ends share.
#[derive(Debug, Default)]
struct StreamFlags {
    /// A [`News::Stream`] note is on its way, or the loop is about to look anyway: no need
    /// to post another. The loop clears it before it takes pieces.
    notified: AtomicBool,
    /// The sender was dropped by a panic: the body is cut off, not ended.
    aborted: AtomicBool,
}

/// The sending end of a streamed body, for any thread (see
/// [`crate::handler::Exchange::stream`]).
///
/// Dropping it (or [`BodySender::finish`]) ends the body: the loop sends the last chunk
/// once the pieces before it are out. Dropped by a panic, it cuts the body off instead:
/// the connection closes without the last chunk, so the client can tell.
pub struct BodySender {
    /// `None` once dropped (see `Drop`).
    tx: Option<SyncSender<Vec<u8>>>,
    flags: Arc<StreamFlags>,
    mailbox: Arc<Mailbox>,
    key: usize,
    serial: u64,
}

impl fmt::Debug for BodySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodySender")
            .field("key", &self.key)
            .field("serial", &self.serial)
            .finish()
    }
}

impl BodySender {
    /// Queues `piece` without waiting: [`TrySendError::Full`] when the queue is full (the
    /// client is slow), [`TrySendError::Closed`] when the stream is over. An empty piece
    /// is accepted and sends nothing (in chunked coding it would end the body).
    pub fn try_send(&self, piece: impl Into<Vec<u8>>) -> Result<(), TrySendError> {
        let piece = piece.into();
        let Some(tx) = self.tx.as_ref().filter(|_| !piece.is_empty()) else {
            return Ok(());
        };
        match tx.try_send(piece) {
            Ok(()) => {
                self.nudge();
                Ok(())
            }
            Err(mpsc::TrySendError::Full(piece)) => Err(TrySendError::Full(piece)),
            Err(mpsc::TrySendError::Disconnected(piece)) => Err(TrySendError::Closed(piece)),
        }
    }

    /// Queues `piece`, waiting (on this, the worker's, thread) while the queue is full.
    /// Only [`TrySendError::Closed`] comes back. Never call it on the loop's thread, that
    /// is, from a handler: the loop is what empties the queue.
    pub fn send(&self, piece: impl Into<Vec<u8>>) -> Result<(), TrySendError> {
        let piece = piece.into();
        let Some(tx) = self.tx.as_ref().filter(|_| !piece.is_empty()) else {
            return Ok(());
        };
        match tx.send(piece) {
            Ok(()) => {
                self.nudge();
                Ok(())
            }
            Err(mpsc::SendError(piece)) => Err(TrySendError::Closed(piece)),
        }
    }

    /// Ends the body (the same as dropping the sender).
    pub fn finish(self) {}

    /// Tells the loop there is something to take, unless it has been told already.
    fn nudge(&self) {
        if !self.flags.notified.swap(true, Ordering::AcqRel) {
            self.mailbox.post(Note {
                key: self.key,
                serial: self.serial,
                what: News::Stream,
            });
        }
    }
}

impl Drop for BodySender {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.flags.aborted.store(true, Ordering::Release);
        }
        // Disconnect first, then tell: the loop that looks must find the channel closed.
        self.tx = None;
        self.nudge();
    }
}

/// What a handler set up to answer later, for the connection to wait on.
#[derive(Debug)]
pub enum Later {
    /// A reply from a [`Responder`].
    Reply {
        /// The responder's serial number.
        serial: u64,
    },
    /// A body from a [`BodySender`].
    Stream(StreamIn),
}

impl Later {
    /// A deferred reply for the connection `key`, and its responder.
    pub(crate) fn reply(mailbox: Arc<Mailbox>, key: usize) -> (Later, Responder) {
        let serial = mailbox.serial();
        let responder = Responder {
            mailbox,
            key,
            serial,
            answered: false,
        };
        (Later::Reply { serial }, responder)
    }

    /// A streamed body for the connection `key`, queueing at most `capacity` pieces.
    pub(crate) fn stream(
        mailbox: Arc<Mailbox>,
        key: usize,
        capacity: usize,
    ) -> (Later, BodySender) {
        let serial = mailbox.serial();
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let flags = Arc::new(StreamFlags::default());
        let sender = BodySender {
            tx: Some(tx),
            flags: Arc::clone(&flags),
            mailbox,
            key,
            serial,
        };
        let stream = StreamIn {
            serial,
            rx,
            flags,
            chunked: true,
        };
        (Later::Stream(stream), sender)
    }
}

/// The loop's end of a stream.
#[derive(Debug)]
pub struct StreamIn {
    serial: u64,
    rx: Receiver<Vec<u8>>,
    flags: Arc<StreamFlags>,
    /// Chunked transfer coding (HTTP/1.1); else the body ends with the connection (1.0).
    pub chunked: bool,
}

/// What one connection waits for from a handler, if anything. Boxed: most connections never
/// wait for one, and every connection slot, idle ones too, pays for what is inline here.
#[derive(Debug, Default)]
pub struct Pending(Option<Box<Waiting>>);

#[derive(Debug)]
enum Waiting {
    /// A deferred reply. Its request's head is still at the front of the connection's
    /// input, to be answered and consumed when the reply comes.
    Reply(DeferredReply),
    /// The rest of a streamed body.
    Stream(StreamIn),
}

/// A deferred reply being waited for.
#[derive(Debug, Clone, Copy)]
pub struct DeferredReply {
    serial: u64,
    /// When the wait began (for the timeout).
    pub since: Instant,
    /// When the request began to arrive (for the access log).
    pub started: Instant,
    /// Its body was read after `100 Continue`: nothing of it is left on the wire.
    pub continued: bool,
}

/// What [`Pending::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Nothing is pending: the response is complete.
    Idle,
    /// Output was queued, or the wait is over: go on writing.
    More,
    /// Waiting for the handler's thread; the reason, for the trace.
    Wait(&'static str),
    /// The stream's sender panicked: the body is cut off.
    Broken,
}

impl Pending {
    /// Waits for the reply that `later` set up, if it is one.
    pub fn wait_for_reply(
        &mut self,
        later: Later,
        now: Instant,
        started: Instant,
        continued: bool,
    ) {
        if let Later::Reply { serial } = later {
            self.0 = Some(Box::new(Waiting::Reply(DeferredReply {
                serial,
                since: now,
                started,
                continued,
            })));
        }
    }

    /// Takes the body from `stream`.
    pub fn take_stream(&mut self, stream: StreamIn) {
        self.0 = Some(Box::new(Waiting::Stream(stream)));
    }

    /// Whether a handler still has something to say.
    pub fn is_waiting(&self) -> bool {
        self.0.is_some()
    }

    /// The deferred reply waited for, if that is what is pending.
    pub fn deferred(&self) -> Option<&DeferredReply> {
        match self.0.as_deref() {
            Some(Waiting::Reply(reply)) => Some(reply),
            _ => None,
        }
    }

    /// Stops waiting for the deferred reply (it timed out): returns what it was.
    pub fn give_up(&mut self) -> Option<DeferredReply> {
        match self.0.take().map(|waiting| *waiting) {
            Some(Waiting::Reply(reply)) => Some(reply),
            other => {
                self.0 = other.map(Box::new);
                None
            }
        }
    }

    /// Reads a note. Returns the reply it completes (a 500 for a dropped responder) with
    /// what was kept about its request, or `None` when there is nothing to answer: a
    /// stream's news (the connection takes the pieces as it writes), or a note that is not
    /// for what this connection waits for (`Err`, to be ignored).
    pub fn on_note(&mut self, note: Note) -> Result<Option<(Reply, DeferredReply)>, Note> {
        match (self.0.as_deref(), note.what) {
            (Some(Waiting::Reply(wait)), News::Reply(reply)) if wait.serial == note.serial => {
                let wait = *wait;
                self.0 = None;
                Ok(Some((reply, wait)))
            }
            (Some(Waiting::Reply(wait)), News::Dropped) if wait.serial == note.serial => {
                let wait = *wait;
                self.0 = None;
                log::error!("a handler's responder was dropped without an answer; sending 500");
                let reply = Reply::text(500, "the handler did not answer\n");
                Ok(Some((reply, wait)))
            }
            (Some(Waiting::Stream(stream)), News::Stream) if stream.serial == note.serial => {
                Ok(None)
            }
            (_, what) => Err(Note { what, ..note }),
        }
    }

    /// Queues what the handler has for `out`, which must be empty: a stream's pieces,
    /// while `out` is below `high_water`, and the last chunk once the sender is gone.
    pub fn feed(&mut self, out: &mut OutBuf, high_water: usize) -> Feed {
        let stream = match self.0.as_deref_mut() {
            None => return Feed::Idle,
            Some(Waiting::Reply(_)) => return Feed::Wait("deferred reply not answered yet"),
            Some(Waiting::Stream(stream)) => stream,
        };
        // Cleared before looking: a piece sent from now on posts a new note.
        stream.flags.notified.store(false, Ordering::Release);
        let mut queued = false;
        while out.len() < high_water {
            match stream.rx.try_recv() {
                Ok(piece) => {
                    frame_piece(out, &piece, stream.chunked);
                    queued = true;
                }
                Err(TryRecvError::Empty) if queued => return Feed::More,
                Err(TryRecvError::Empty) => return Feed::Wait("stream waiting for its next piece"),
                // Send what came before first; the next look finds the end again.
                Err(TryRecvError::Disconnected) if queued => return Feed::More,
                Err(TryRecvError::Disconnected) => {
                    let broken = stream.flags.aborted.load(Ordering::Acquire);
                    if !broken && stream.chunked {
                        // The last chunk, with no trailers (RFC 9112 section 7.1).
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                    self.0 = None;
                    return if broken { Feed::Broken } else { Feed::More };
                }
            }
        }
        Feed::More
    }
}

/// Queues one piece of a streamed body: as one chunk (RFC 9112 section 7.1:
/// `chunk-size CRLF chunk-data CRLF`), or as it is when the body ends with the connection.
pub fn frame_piece(out: &mut OutBuf, piece: &[u8], chunked: bool) {
    if piece.is_empty() {
        return; // an empty chunk would end the body
    }
    if chunked {
        let head = out.owned();
        head.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        head.extend_from_slice(piece);
        head.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(out: &OutBuf) -> Vec<u8> {
        let mut slices = [std::io::IoSlice::new(&[]); 4];
        let n = out.slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn stream_pieces_are_chunked_and_end_with_the_last_chunk() {
        let mailbox = Arc::new(Mailbox::new(None));
        let (later, sender) = Later::stream(Arc::clone(&mailbox), 7, 2);
        let Later::Stream(stream) = later else {
            panic!("a stream")
        };
        let mut pending = Pending::default();
        pending.take_stream(stream);
        let mut out = OutBuf::new();
        assert_eq!(
            pending.feed(&mut out, 1024),
            Feed::Wait("stream waiting for its next piece")
        );
        sender.try_send("hello").expect("room");
        sender.try_send("").expect("nothing to send");
        sender.try_send("!").expect("room");
        assert_eq!(sender.try_send("x"), Err(TrySendError::Full(b"x".to_vec())));
        // One note for three sends: the flag holds the others back.
        let mut notes = VecDeque::new();
        mailbox.take_all(&mut notes);
        assert_eq!(notes.len(), 1);
        assert_eq!(pending.feed(&mut out, 1024), Feed::More);
        drop(sender);
        assert_eq!(pending.feed(&mut out, 1024), Feed::More);
        assert_eq!(drained(&out), b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n");
        assert_eq!(pending.feed(&mut out, 1024), Feed::Idle);
    }

    #[test]
    fn notes_for_other_serials_are_not_taken() {
        let mailbox = Arc::new(Mailbox::new(None));
        let (old, old_responder) = Later::reply(Arc::clone(&mailbox), 3);
        let (new, new_responder) = Later::reply(Arc::clone(&mailbox), 3);
        let mut pending = Pending::default();
        let now = Instant::now();
        pending.wait_for_reply(new, now, now, false);
        drop(old);
        old_responder.send(Reply::text(200, "stale"));
        drop(new_responder);
        let mut notes = VecDeque::new();
        mailbox.take_all(&mut notes);
        let stale = notes.pop_front().expect("the stale note");
        assert!(pending.on_note(stale).is_err(), "a stale answer is ignored");
        let dropped = notes.pop_front().expect("the drop");
        let answered = pending.on_note(dropped).expect("ours").expect("a reply");
        assert_eq!(answered.0.status, 500);
        assert!(!pending.is_waiting());
    }
}
