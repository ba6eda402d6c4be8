//! Where the reader is, shared with the progress line and the summary.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Where the reader is, for the progress line and for the message that
/// says where reading stopped.
#[derive(Default)]
pub struct Position {
    source: AtomicUsize,
    line: AtomicU64,
    bytes: AtomicU64,
}

impl Position {
    /// Input bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The input being read, and the lines read from it.
    pub fn at(&self) -> (usize, u64) {
        (
            self.source.load(Ordering::Acquire),
            self.line.load(Ordering::Acquire),
        )
    }

    /// Only the reader adds: a load and a store, where an atomic addition
    /// would lock the bus after every line.
    pub(in crate::load) fn add_bytes(&self, bytes: u64) {
        let read = self.bytes.load(Ordering::Relaxed);
        self.bytes.store(read + bytes, Ordering::Relaxed);
    }

    /// Set after each line: release stores, which cost nothing more than
    /// plain ones on x86, where sequentially consistent ones cost a fence.
    pub(super) fn set(&self, source: usize, line: u64) {
        self.source.store(source, Ordering::Release);
        self.line.store(line, Ordering::Release);
    }
}
