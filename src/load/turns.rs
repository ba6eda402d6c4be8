//! Turns: batches are settled (their dropped lines appended to the reject
//! file, their progress recorded, their transaction committed) strictly in
//! input order, whichever writer wrote them, so that what the state file
//! and the reject file say is always a prefix of the input.
//!
//! Once a batch could not be settled (its outcome unknown, or its lines
//! recorded nowhere), the turns carry a gap: no later batch may commit,
//! since the state file could not say so.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lock;

#[derive(Default)]
struct Order {
    /// The sequence number whose turn it is.
    next: u64,
    gap: bool,
    /// A thread died holding a batch whose turn would never end: every
    /// waiter gets its turn at once, after a gap.
    poisoned: bool,
}

#[derive(Default)]
pub struct Turns {
    order: Mutex<Order>,
    changed: Condvar,
}

/// Held while it is a batch's turn; the next one's turn comes when it is
/// dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
    seq: u64,
}

/// How long a wait goes before it is logged.
const SAY_AFTER: Duration = Duration::from_secs(10);

impl Turns {
    /// Waits until every batch before `seq` is settled. The wait is bounded
    /// by theirs: each ends within --retry-for, or on a stop.
    pub fn wait(&self, seq: u64) -> Turn<'_> {
        let started = Instant::now();
        let mut said = false;
        let mut order = lock(&self.order);
        while order.next != seq && !order.poisoned {
            let (next, _) = self
                .changed
                .wait_timeout(order, Duration::from_secs(1))
                .unwrap_or_else(|e| e.into_inner());
            order = next;
            if !said && started.elapsed() > SAY_AFTER {
                log::info!(
                    "batch {seq} is waiting for batch {} to be settled",
                    order.next
                );
                said = true;
            }
        }
        Turn { turns: self, seq }
    }
}

impl Turns {
    /// [`Turns::wait`], unless `yield_now` says, while waiting, that the
    /// waiter should let go of what it holds (its connection, which an
    /// earlier batch's writer may be waiting for): then None.
    pub fn wait_unless(&self, seq: u64, yield_now: impl Fn() -> bool) -> Option<Turn<'_>> {
        let mut order = lock(&self.order);
        while order.next != seq && !order.poisoned {
            if yield_now() {
                return None;
            }
            let (next, _) = self
                .changed
                .wait_timeout(order, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner());
            order = next;
        }
        Some(Turn { turns: self, seq })
    }
}

impl Turns {
    /// A thread that was to settle a batch died: no turn after it would
    /// ever come. Every waiter goes on, after a gap (nothing more commits).
    pub fn poison(&self) {
        let mut order = lock(&self.order);
        order.poisoned = true;
        order.gap = true;
        drop(order);
        self.changed.notify_all();
    }
}

/// Poisons the turns if the thread holding it panics.
pub struct PanicGuard<'a>(pub &'a Turns);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison();
        }
    }
}

impl Turn<'_> {
    /// Whether an earlier batch could not be settled.
    pub fn gap(&self) -> bool {
        lock(&self.turns.order).gap
    }

    /// This batch could not be settled: none after it may commit.
    pub fn open_gap(&self) {
        lock(&self.turns.order).gap = true;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut order = lock(&self.turns.order);
        order.next = order.next.max(self.seq + 1);
        drop(order);
        self.turns.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn turns_come_in_sequence_whatever_the_threads() {
        let turns = Arc::new(Turns::default());
        let settled = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..6u64)
            .rev()
            .map(|seq| {
                let (turns, settled) = (Arc::clone(&turns), Arc::clone(&settled));
                std::thread::spawn(move || {
                    let _turn = turns.wait(seq);
                    lock(&settled).push(seq);
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        assert_eq!(*lock(&settled), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_waiter_told_to_yield_gets_no_turn() {
        let turns = Turns::default();
        assert!(turns.wait_unless(1, || true).is_none());
        assert!(
            turns.wait_unless(0, || true).is_some(),
            "its turn: nothing to yield"
        );
        assert!(turns.wait_unless(1, || false).is_some());
    }

    #[test]
    fn a_thread_that_dies_with_a_batch_does_not_hold_the_others_forever() {
        let turns = Arc::new(Turns::default());
        let dying = {
            let turns = Arc::clone(&turns);
            std::thread::spawn(move || {
                let _guard = PanicGuard(&turns);
                panic!("a bug while writing batch 0");
            })
        };
        assert!(dying.join().is_err());
        let turn = turns.wait(1);
        assert!(turn.gap(), "nothing commits after a lost batch");
    }

    #[test]
    fn a_gap_is_seen_by_every_later_turn() {
        let turns = Turns::default();
        assert!(!turns.wait(0).gap());
        turns.wait(1).open_gap();
        assert!(turns.wait(2).gap());
    }
}
