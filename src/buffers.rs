//! Recycled buffers, so that idle connections hold none and busy ones allocate nothing, and
//! the output queue that refers to shared bodies instead of copying them.
//!
//! A keep-alive connection spends most of its life idle between requests. If it kept its
//! 4 KiB read buffer and its output buffer, 10,000 idle connections would hold 40+ MiB for
//! nothing. So a connection gives its buffers back to this pool whenever it goes idle, and
//! takes them again when bytes arrive. Because the pool hands out buffers that were used
//! before, the steady state makes no allocation at all: a request borrows, a request returns.
//!
//! Input is an [`InBuf`]: the bytes received and not consumed yet, in one buffer.
//! Output is an [`OutBuf`]: response heads (and small bodies) are copied into it, but a
//! body that is already in memory and shared (a cached file, a listing page) is only
//! referred to, and goes to the socket straight from where it lives, in the same writev(2)
//! as the head before it. A thousand clients asking for the same cached megabyte cost one
//! megabyte, not a thousand.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

use crate::ops::access_log::Unsent;

/// Size of every read buffer the pool hands out.
pub const READ_BUFFER: usize = 4 * 1024;

/// Output buffers bigger than this are freed rather than kept.
const OUT_KEEP: usize = 16 * 1024;

/// Output queues that referred to more shared bodies than this at once are freed rather
/// than kept (a deep pipeline of small files; rare).
const SHARED_KEEP: usize = 64;

/// How many free buffers of each kind are kept; past that they are freed.
const MAX_FREE: usize = 256;

/// Most slices handed to one writev(2). They live on the stack, set up anew for each call,
/// so fewer is cheaper; and as shared bodies are at least [`COPY_BELOW`] long, 16 slices
/// carry at least 32 KiB, half the high-water mark.
pub const MAX_SLICES: usize = 16;

/// Shared bodies shorter than this are copied after all. Copying a few hundred bytes
/// costs less than one more slice for the kernel to walk, and a pipelined batch of small
/// responses stays one contiguous run; the copy counts toward the high-water mark like
/// any other queued byte.
pub const COPY_BELOW: usize = 4 * 1024;

/// Free read and output buffers.
#[derive(Debug, Default)]
pub struct BufferPool {
    reads: Vec<Vec<u8>>,
    outs: Vec<OutBuf>,
    unsent: Vec<Unsent>,
}

impl BufferPool {
    /// An empty pool.
    pub fn new() -> Self {
        BufferPool::default()
    }

    /// A read buffer: `READ_BUFFER` initialized bytes.
    pub fn take_read(&mut self) -> Vec<u8> {
        self.reads.pop().unwrap_or_else(|| vec![0; READ_BUFFER])
    }

    /// An empty output queue, with some capacity.
    pub fn take_out(&mut self) -> OutBuf {
        self.outs.pop().unwrap_or_else(|| OutBuf {
            owned: Vec::with_capacity(READ_BUFFER),
            ..OutBuf::default()
        })
    }

    /// An empty queue of access-log lines (see [`Unsent`]).
    pub fn take_unsent(&mut self) -> Unsent {
        self.unsent.pop().unwrap_or_default()
    }

    /// Gives an empty queue of access-log lines back.
    pub fn give_unsent(&mut self, unsent: Unsent) {
        if unsent.worth_keeping() && self.unsent.len() < MAX_FREE {
            self.unsent.push(unsent);
        }
    }

    /// Gives a read buffer back. Buffers that grew (for a large head) are freed.
    pub fn give_read(&mut self, buf: Vec<u8>) {
        if buf.len() == READ_BUFFER && self.reads.len() < MAX_FREE {
            self.reads.push(buf);
        }
    }

    /// Gives an output queue back. Large ones are freed.
    pub fn give_out(&mut self, mut out: OutBuf) {
        if out.has_capacity()
            && out.owned.capacity() <= OUT_KEEP
            && out.shared.capacity() <= SHARED_KEEP
            && self.outs.len() < MAX_FREE
        {
            out.clear();
            self.outs.push(out);
        }
    }
}

/// One connection's received bytes: `buf[start..end]` is not consumed yet, the rest is free
/// space for the next read.
///
/// ```text
///   buf:  [ consumed | pending: the next request(s) | free ]
///                    ▲ start                        ▲ end
/// ```
///
/// An idle connection holds no buffer at all: it borrows one from the [`BufferPool`] when
/// bytes arrive ([`InBuf::make_room`]) and gives it back when everything is consumed
/// ([`InBuf::recycle`]).
#[derive(Debug, Default)]
pub struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    /// An empty buffer that holds no memory.
    pub fn new() -> Self {
        InBuf::default()
    }

    /// The bytes received and not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether every received byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Consumes the first `n` pending bytes (a request head that was answered).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Drops every pending byte: nothing after them can be trusted (or answered).
    pub fn clear(&mut self) {
        self.start = self.end;
    }

    /// Removes `n` pending bytes that start `skip` bytes in: from the front when `skip` is
    /// 0, else from behind a request head that stays at the front (see the connection's
    /// held head).
    pub fn remove(&mut self, skip: usize, n: usize) {
        if skip == 0 {
            self.consume(n);
        } else {
            let at = self.start + skip;
            self.buf.copy_within(at + n..self.end, at);
            self.end -= n;
        }
    }

    /// Makes free space at the end for the next read: borrows a buffer if there is none,
    /// moves pending bytes to the front when the end is reached, and grows the buffer
    /// (doubling, up to `cap`) when it is full. `false` when it is full at `cap` already.
    pub fn make_room(&mut self, cap: usize, pool: &mut BufferPool) -> bool {
        if self.buf.is_empty() {
            // Idle connections hold no buffer; borrow one for as long as a request lasts.
            self.buf = pool.take_read();
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end < self.buf.len() {
            return true;
        }
        if self.buf.len() >= cap {
            return false;
        }
        let size = (self.buf.len() * 2).max(READ_BUFFER).min(cap);
        self.buf.resize(size, 0);
        true
    }

    /// The free space at the end, to read into.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`InBuf::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Gives the buffer back to the pool if nothing in it is still needed.
    pub fn recycle(&mut self, pool: &mut BufferPool) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            pool.give_read(std::mem::take(&mut self.buf));
        }
    }
}

/// A shared body queued for sending: `body[start..end]` is still to go, and it goes after
/// the owned bytes before offset `at`.
#[derive(Debug)]
struct Shared {
    at: usize,
    body: Rc<[u8]>,
    start: usize,
    end: usize,
}

/// One connection's queued output, in order: owned bytes with shared bodies between them.
///
/// ```text
///   owned:  [ head 1 ][ head 2 ][ head 3 | small body 3 ]
///                    ▲         ▲
///   shared:   body 1 ┘  body 2 ┘      (an Rc and a range each, no copy)
/// ```
///
/// Owned bytes are only ever appended to; a shared body records the offset in the owned
/// bytes it goes at. [`OutBuf::slices`] lists what is left as `IoSlice`s for one writev(2),
/// and [`OutBuf::advance`] drops what the socket took. All of it counts toward
/// [`OutBuf::len`], which the connection holds against its high-water mark.
#[derive(Debug, Default)]
pub struct OutBuf {
    /// Response heads and small bodies. `owned[pos..]` is not sent yet.
    owned: Vec<u8>,
    pos: usize,
    /// Shared bodies, in order of their `at`.
    shared: VecDeque<Shared>,
    /// Bytes of shared bodies not sent yet.
    shared_len: usize,
}

impl OutBuf {
    /// An empty queue without capacity (one from [`BufferPool::take_out`] has some).
    pub fn new() -> Self {
        OutBuf::default()
    }

    /// Bytes queued and not sent yet, shared bodies included.
    pub fn len(&self) -> usize {
        self.owned.len() - self.pos + self.shared_len
    }

    /// Whether everything queued has been sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this queue holds memory (an idle connection gives it back to the pool).
    pub fn has_capacity(&self) -> bool {
        self.owned.capacity() > 0
    }

    /// The owned bytes, to append a response head or a small body to.
    ///
    /// Only append: shared bodies already queued point at offsets in these bytes.
    pub fn owned(&mut self) -> &mut Vec<u8> {
        &mut self.owned
    }

    /// Appends bytes, copying them.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.owned.extend_from_slice(bytes);
    }

    /// Queues `body[start..end]`, a body that lives in shared memory: copied if it is
    /// shorter than [`COPY_BELOW`], referred to (see [`OutBuf::push_shared`]) otherwise.
    pub fn push_body(&mut self, body: &Rc<[u8]>, start: usize, end: usize) {
        match body.get(start..end) {
            Some(bytes) if bytes.len() < COPY_BELOW => self.owned.extend_from_slice(bytes),
            _ => self.push_shared(Rc::clone(body), start, end),
        }
    }

    /// Queues `body[start..end]` without copying it: it is sent from `body` itself, after
    /// the owned bytes appended so far. An empty or out-of-bounds range queues nothing.
    pub fn push_shared(&mut self, body: Rc<[u8]>, start: usize, end: usize) {
        if start >= end || end > body.len() {
            return;
        }
        self.shared_len += end - start;
        self.shared.push_back(Shared {
            at: self.owned.len(),
            body,
            start,
            end,
        });
    }

    /// Drops everything queued, keeping the capacity.
    pub fn clear(&mut self) {
        self.owned.clear();
        self.pos = 0;
        self.shared.clear();
        self.shared_len = 0;
    }

    /// Fills `slices` with what is to be sent next, in order; returns how many it filled.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        let mut cursor = self.pos;
        for shared in &self.shared {
            if filled == slices.len() {
                return filled;
            }
            if shared.at > cursor {
                slices[filled] = IoSlice::new(&self.owned[cursor..shared.at]);
                filled += 1;
                cursor = shared.at;
                if filled == slices.len() {
                    return filled;
                }
            }
            slices[filled] = IoSlice::new(&shared.body[shared.start..shared.end]);
            filled += 1;
        }
        if filled < slices.len() && cursor < self.owned.len() {
            slices[filled] = IoSlice::new(&self.owned[cursor..]);
            filled += 1;
        }
        filled
    }

    /// Drops the first `n` queued bytes, which the socket took. When nothing is left, the
    /// owned bytes start over from the beginning of the buffer.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            // Owned bytes up to the next shared body go first.
            let gap_end = self.shared.front().map_or(self.owned.len(), |s| s.at);
            let owned = (gap_end - self.pos).min(n);
            self.pos += owned;
            n -= owned;
            if n == 0 {
                break;
            }
            let Some(front) = self.shared.front_mut() else {
                // More than was queued: cannot happen with an honest transport.
                self.pos = self.owned.len();
                break;
            };
            let taken = (front.end - front.start).min(n);
            front.start += taken;
            self.shared_len -= taken;
            n -= taken;
            if front.start == front.end {
                self.shared.pop_front();
            }
        }
        if self.is_empty() {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything still queued, flattened, by way of `slices` and `advance`.
    fn drain(out: &mut OutBuf, step: usize) -> Vec<u8> {
        let mut sent = Vec::new();
        while !out.is_empty() {
            let mut slices = [IoSlice::new(&[]); 3];
            let n = out.slices(&mut slices);
            let mut flat: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            flat.truncate(step);
            sent.extend_from_slice(&flat);
            out.advance(flat.len());
        }
        sent
    }

    #[test]
    fn owned_and_shared_bytes_leave_in_order() {
        let body: Rc<[u8]> = Rc::from(&b"0123456789"[..]);
        for step in [1, 2, 3, 7, 100] {
            let mut out = OutBuf::new();
            out.extend_from_slice(b"head1|");
            out.push_shared(Rc::clone(&body), 0, 10);
            out.extend_from_slice(b"|head2|");
            out.push_shared(Rc::clone(&body), 3, 5);
            out.push_shared(Rc::clone(&body), 8, 10);
            out.extend_from_slice(b"|tail");
            assert_eq!(out.len(), 6 + 10 + 7 + 2 + 2 + 5);
            let sent = drain(&mut out, step);
            assert_eq!(sent, b"head1|0123456789|head2|3489|tail", "step {step}");
            assert!(out.is_empty());
            assert_eq!(out.owned().len(), 0, "starts over when drained");
        }
        assert_eq!(Rc::strong_count(&body), 1, "sent bodies are let go");
    }

    #[test]
    fn small_bodies_are_copied_large_ones_shared() {
        let small: Rc<[u8]> = Rc::from(vec![b's'; COPY_BELOW - 1]);
        let large: Rc<[u8]> = Rc::from(vec![b'l'; COPY_BELOW]);
        let mut out = OutBuf::new();
        out.push_body(&small, 0, COPY_BELOW - 1);
        out.push_body(&large, 0, COPY_BELOW);
        assert_eq!(Rc::strong_count(&small), 1, "copied");
        assert_eq!(Rc::strong_count(&large), 2, "referred to");
        assert_eq!(out.len(), 2 * COPY_BELOW - 1);
        let sent = drain(&mut out, 1000);
        assert_eq!(sent[..COPY_BELOW - 1], small[..]);
        assert_eq!(sent[COPY_BELOW - 1..], large[..]);
    }

    #[test]
    fn shared_body_first_and_empty_ranges() {
        let body: Rc<[u8]> = Rc::from(&b"abc"[..]);
        let mut out = OutBuf::new();
        out.push_shared(Rc::clone(&body), 1, 1);
        out.push_shared(Rc::clone(&body), 2, 9);
        assert!(out.is_empty());
        out.push_shared(Rc::clone(&body), 0, 3);
        out.extend_from_slice(b"!");
        assert_eq!(drain(&mut out, 2), b"abc!");
    }
}
