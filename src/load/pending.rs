//! The batch being filled by the reader: the lines of one input since the
//! last batch, handed to the writers once full, at the end of the input, or
//! before the reader may wait. Batches are numbered here, in input order;
//! what the reader settles itself (dropped rows, a long line, input set
//! aside) takes a number too, and waits for its turn.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use super::batch::{Batch, Origin, Spares};
use super::control::Control;
use super::copy::Valid;
use super::ledger::{Dropped, FAILED_EARLIER, INTERRUPTED, Ledger};
use super::turns::{Turn, Turns};
use crate::state::Seen;

/// Where the reader shares the pipeline with the writers.
pub struct Pipeline {
    pub sender: SyncSender<Batch>,
    pub ledger: Arc<Ledger>,
    pub control: Arc<Control>,
    pub spares: Arc<Spares>,
    pub turns: Arc<Turns>,
}

pub struct Pending {
    batch: Batch,
    next_seq: u64,
    /// Findings read and not yet counted in the ledger.
    uncounted: u64,
    pipeline: Pipeline,
}

impl Pending {
    pub fn new(pipeline: Pipeline) -> Pending {
        Pending {
            batch: pipeline.spares.take(),
            next_seq: 0,
            uncounted: 0,
            pipeline,
        }
    }

    /// What was seen of the input up to the next line covered.
    pub fn seen(&mut self, seen: Seen) {
        self.batch.seen = seen;
    }

    /// How many batches were handed over (or settled apart) so far.
    pub fn batches(&self) -> u64 {
        self.next_seq
    }

    /// The input of the batch being filled, if it holds any line.
    pub fn source(&self) -> Option<usize> {
        (self.batch.lines > 0).then_some(self.batch.source)
    }

    /// Whether lines read wait to be handed over.
    pub fn holds_lines(&self) -> bool {
        self.batch.lines > 0
    }

    /// The next batch starts input `source` at (offset, line).
    pub fn start_input(&mut self, source: usize, start: (u64, u64)) {
        debug_assert_eq!(self.batch.lines, 0, "a batch holds lines of one input");
        self.batch.source = source;
        self.batch.end = start;
    }

    /// Adds a finding read from `origin` (its line ends at `end`), and hands
    /// the batch over once full. False when nothing more may be sent: what
    /// was read is dropped.
    pub fn add(
        &mut self,
        finding: &Valid<'_>,
        origin: Origin,
        end: (u64, u64),
        raw: &[u8],
    ) -> bool {
        let keep = self.pipeline.ledger.keeps_lines().then_some(raw);
        self.batch.push(finding, origin, keep);
        self.uncounted += 1;
        self.cover(end);
        if self.batch.is_full(self.pipeline.spares.limits()) {
            self.flush()
        } else {
            true
        }
    }

    /// A line rejected by the reader, kept for the reject file.
    pub fn reject(&mut self, raw: &[u8], end: (u64, u64)) {
        if self.pipeline.ledger.keeps_lines() {
            self.batch.reject(raw);
        }
        self.invalid(end);
    }

    /// A line rejected by the reader and not kept (too long, without a
    /// reject file): the batch covers it and counts it.
    pub fn invalid(&mut self, end: (u64, u64)) {
        self.batch.invalid += 1;
        self.cover(end);
    }

    /// A line with nothing to write (blank, or too long without a reject
    /// file): the batch covers it all the same.
    pub fn skip(&mut self, end: (u64, u64)) {
        self.cover(end);
    }

    /// Lines up to `end` were settled by the reader itself.
    pub fn settled_to(&mut self, end: (u64, u64)) {
        debug_assert_eq!(self.batch.lines, 0, "settled by the reader in its own turn");
        self.batch.end = end;
    }

    fn cover(&mut self, end: (u64, u64)) {
        self.batch.end = end;
        self.batch.lines += 1;
    }

    /// A number for what the reader settles itself, in its turn.
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub fn turns(&self) -> Arc<Turns> {
        Arc::clone(&self.pipeline.turns)
    }

    /// Hands the batch to the writers, unless it covers no line. False when
    /// nothing more may be sent: the batch is dropped.
    pub fn send(&mut self) -> bool {
        if self.batch.lines == 0 {
            return true;
        }
        self.count_read();
        let mut fresh = self.pipeline.spares.take();
        fresh.source = self.batch.source;
        fresh.end = self.batch.end;
        fresh.seen = self.batch.seen;
        let mut batch = std::mem::replace(&mut self.batch, fresh);
        batch.seq = self.next_seq;
        self.next_seq += 1;
        let control = &self.pipeline.control;
        if control.interrupted() {
            self.settle_dropped(&batch, Dropped::Interrupted, INTERRUPTED);
            return false;
        }
        if control.failed() {
            self.settle_dropped(&batch, Dropped::Lost, FAILED_EARLIER);
            return false;
        }
        match self.pipeline.sender.send(batch) {
            Ok(()) => true,
            Err(returned) => {
                // Only possible if every writer died: nothing may vanish.
                self.settle_dropped(&returned.0, Dropped::Lost, "not sent: no writer left");
                false
            }
        }
    }

    /// Hands over what was read, or drops it when that cannot be.
    pub fn flush(&mut self) -> bool {
        if self.send() {
            return true;
        }
        self.drop_unsent();
        false
    }

    /// Drops what was read and not sent, when the run stops early.
    pub fn drop_unsent(&mut self) {
        if self.batch.lines == 0 {
            return;
        }
        self.count_read();
        let mut batch = std::mem::replace(&mut self.batch, self.pipeline.spares.take());
        self.batch.source = batch.source;
        self.batch.end = batch.end;
        self.batch.seen = batch.seen;
        batch.seq = self.next_seq;
        self.next_seq += 1;
        let (kind, reason) = if self.pipeline.control.interrupted() {
            (Dropped::Interrupted, INTERRUPTED)
        } else {
            (Dropped::Lost, FAILED_EARLIER)
        };
        self.settle_dropped(&batch, kind, reason);
        self.pipeline.spares.recycle(batch);
    }

    /// Counts the findings read so far in the ledger: before a batch
    /// leaves the reader (so before any of them is settled), and before a
    /// read that may wait.
    pub fn count_read(&mut self) {
        if self.uncounted > 0 {
            self.pipeline
                .ledger
                .read(std::mem::take(&mut self.uncounted));
        }
    }

    /// Settles a batch that will not be written, in its turn.
    fn settle_dropped(&self, batch: &Batch, kind: Dropped, reason: &str) {
        let turn = self.pipeline.turns.wait(batch.seq);
        settle_dropped(&self.pipeline.ledger, batch, kind, reason, &turn);
    }
}

/// Drops a batch in `turn`, or leaves it for the next run after a gap.
fn settle_dropped(ledger: &Ledger, batch: &Batch, kind: Dropped, reason: &str, turn: &Turn<'_>) {
    if turn.gap() {
        ledger.left_for_next_run(batch, kind);
    } else {
        ledger.dropped(batch, kind, reason, turn);
    }
}
