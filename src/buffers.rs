//! Recycled buffers, so that idle connections hold none and busy ones allocate nothing.
//!
//! A keep-alive connection spends most of its life idle between requests. If it kept its
//! 4 KiB read buffer and its output buffer, 10,000 idle connections would hold 40+ MiB for
//! nothing. So a connection gives its buffers back to this pool whenever it goes idle, and
//! takes them again when bytes arrive. Because the pool hands out buffers that were used
//! before, the steady state makes no allocation at all: a request borrows, a request returns.

/// Size of every read buffer the pool hands out.
pub const READ_BUFFER: usize = 4 * 1024;

/// Output buffers bigger than this are freed rather than kept.
const OUT_KEEP: usize = 16 * 1024;

/// How many free buffers of each kind are kept; past that they are freed.
const MAX_FREE: usize = 256;

/// Free read and output buffers.
#[derive(Debug, Default)]
pub struct BufferPool {
    reads: Vec<Vec<u8>>,
    outs: Vec<Vec<u8>>,
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

    /// An empty output buffer, with some capacity.
    pub fn take_out(&mut self) -> Vec<u8> {
        self.outs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(READ_BUFFER))
    }

    /// Gives a read buffer back. Buffers that grew (for a large head) are freed.
    pub fn give_read(&mut self, buf: Vec<u8>) {
        if buf.len() == READ_BUFFER && self.reads.len() < MAX_FREE {
            self.reads.push(buf);
        }
    }

    /// Gives an output buffer back. Large ones are freed.
    pub fn give_out(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > 0 && buf.capacity() <= OUT_KEEP && self.outs.len() < MAX_FREE {
            buf.clear();
            self.outs.push(buf);
        }
    }
}
