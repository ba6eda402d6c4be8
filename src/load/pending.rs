//! The rows read but not handed to a writer yet: one batch per [`Timing`],
//! handed over when full, or all at once before the reader may wait.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use super::batch::{Batch, Origin, Spares, Timing};
use super::control::Control;
use super::ledger::{Dropped, FAILED_EARLIER, INTERRUPTED, Ledger};
use super::record::Finding;

/// When a batch is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Once it is full.
    Full,
    /// Now, unless it is empty.
    Now,
}

pub struct Pending {
    timed: Batch,
    untimed: Batch,
    sender: SyncSender<Batch>,
    ledger: Arc<Ledger>,
    control: Arc<Control>,
    spares: Arc<Spares>,
}

impl Pending {
    pub fn new(
        sender: SyncSender<Batch>,
        ledger: Arc<Ledger>,
        control: Arc<Control>,
        spares: Arc<Spares>,
    ) -> Pending {
        Pending {
            timed: spares.take(Timing::Timed),
            untimed: spares.take(Timing::Untimed),
            sender,
            ledger,
            control,
            spares,
        }
    }

    fn batch(&mut self, timing: Timing) -> &mut Batch {
        match timing {
            Timing::Timed => &mut self.timed,
            Timing::Untimed => &mut self.untimed,
        }
    }

    /// Adds a finding read from `origin` (its line ends at byte `end`), and
    /// hands its batch over once full. False when nothing more may be sent:
    /// what was read is dropped.
    pub fn add(
        &mut self,
        finding: &Finding<'_>,
        origin: Origin,
        end: u64,
        raw: &[u8],
        scratch: &mut Vec<u8>,
    ) -> bool {
        let timing = Timing::of(finding);
        let keep = self.ledger.keeps_lines().then_some(raw);
        let ledger = Arc::clone(&self.ledger);
        let batch = self.batch(timing);
        if batch.rows.is_empty() {
            ledger.track(|t| t.open_batch(origin.source, origin.offset, origin.line - 1));
        }
        batch.push(finding, origin, keep, scratch);
        ledger.read_one();
        // The tracker moves past the line only once its row is in a batch,
        // and before the batch can be written and closed.
        ledger.track(|t| t.read_to(origin.source, end, origin.line));
        if self.send(timing, When::Full) {
            true
        } else {
            self.drop_unsent();
            false
        }
    }

    /// Hands the batch of `timing` to the writers when `when` says so.
    /// False when nothing more may be sent.
    pub fn send(&mut self, timing: Timing, when: When) -> bool {
        let limits = self.spares.limits();
        let fresh = {
            let batch = self.batch(timing);
            if batch.rows.is_empty() || (when == When::Full && !batch.is_full(limits)) {
                return true;
            }
            self.spares.take(timing)
        };
        let batch = std::mem::replace(self.batch(timing), fresh);
        if self.control.interrupted() {
            self.ledger
                .give_up(&batch, Dropped::Interrupted, INTERRUPTED);
            return false;
        }
        if self.control.failed() {
            self.ledger.give_up(&batch, Dropped::Lost, FAILED_EARLIER);
            return false;
        }
        match self.sender.send(batch) {
            Ok(()) => true,
            Err(returned) => {
                // Only possible if every writer died: nothing may vanish.
                self.ledger
                    .give_up(&returned.0, Dropped::Lost, "not sent: no writer left");
                false
            }
        }
    }

    /// Hands over every row read so far. False when nothing more may be sent.
    pub fn send_all(&mut self) -> bool {
        self.send(Timing::Timed, When::Now) && self.send(Timing::Untimed, When::Now)
    }

    /// Hands over every row read so far, or drops them when that cannot be.
    pub fn flush(&mut self) -> bool {
        let sent = self.send_all();
        if !sent {
            self.drop_unsent();
        }
        sent
    }

    /// Drops what was read and not sent, when the run stops early.
    pub fn drop_unsent(&mut self) {
        let (kind, reason) = if self.control.interrupted() {
            (Dropped::Interrupted, INTERRUPTED)
        } else {
            (Dropped::Lost, FAILED_EARLIER)
        };
        for timing in [Timing::Timed, Timing::Untimed] {
            let ledger = Arc::clone(&self.ledger);
            let batch = self.batch(timing);
            ledger.give_up(batch, kind, reason);
            batch.clear();
        }
    }
}
