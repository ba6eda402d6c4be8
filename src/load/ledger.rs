//! The accounting of a load: every line read ends as exactly one of
//! inserted or dropped (by reason). [`Ledger`] is the only place the counts
//! change; it writes dropped lines to the reject file, tells the state
//! tracker which lines are done, and says on stderr which lines were
//! dropped, after letting go of its locks.

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result};

use super::batch::Batch;
use super::lock;
use crate::exit::Status;
use crate::rejects::Rejects;
use crate::state::Tracker;

/// How a dropped line was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The line is not a valid finding.
    Invalid,
    /// The server refused the row (constraint, trigger, value).
    Refused,
    /// The database failed while the row was being written.
    Lost,
    /// Read, but not written because a signal stopped the run.
    Interrupted,
    /// Sent with a COMMIT whose outcome could not be learned: maybe in the
    /// table, maybe not.
    Uncertain,
}

/// The reason for lines not sent because the database had failed for good.
pub const FAILED_EARLIER: &str = "not sent: the database failed earlier in this run";
/// The reason for lines read but not written because a signal stopped the run.
pub const INTERRUPTED: &str = "not inserted: interrupted";

/// Per-line messages shown before the rest are only counted.
pub const SHOWN_DROPS: u64 = 100;

/// What became of the lines read so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Non-blank lines read.
    pub read: u64,
    pub inserted: u64,
    pub invalid: u64,
    pub refused: u64,
    pub lost: u64,
    pub interrupted: u64,
    pub uncertain: u64,
    /// Of the lost lines, those copied unread to the reject file after the
    /// database failed.
    pub set_aside: u64,
}

impl Counts {
    pub fn dropped(&self) -> u64 {
        self.invalid + self.refused + self.lost + self.interrupted + self.uncertain
    }

    /// Lines rejected as bad data, which --max-rejects limits.
    pub fn rejected(&self) -> u64 {
        self.invalid + self.refused
    }

    /// The exit status the accounting calls for.
    pub fn status(&self) -> Status {
        if self.lost + self.uncertain > 0 {
            Status::TempFail
        } else if self.rejected() > 0 {
            Status::DataErr
        } else {
            Status::Ok
        }
    }

    /// Counts one dropped line.
    fn drop_one(&mut self, kind: Dropped) {
        match kind {
            Dropped::Invalid => self.invalid += 1,
            Dropped::Refused => self.refused += 1,
            Dropped::Lost => self.lost += 1,
            Dropped::Interrupted => self.interrupted += 1,
            Dropped::Uncertain => self.uncertain += 1,
        }
    }
}

/// Whether dropped lines are reported one by one on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    PerLine,
}

/// The accounting, shared by the reader and the writers.
pub struct Ledger {
    counts: Mutex<Counts>,
    verbosity: Verbosity,
    /// Input names by index, for messages.
    names: Vec<String>,
    rejects: Option<Mutex<Rejects>>,
    /// With --state-file: which lines are done.
    tracker: Option<Mutex<Tracker>>,
}

/// A dropped line to report once the locks are released.
struct Shown {
    source: usize,
    line: u64,
}

impl Ledger {
    pub fn new(
        names: Vec<String>,
        verbosity: Verbosity,
        rejects: Option<Rejects>,
        tracker: Option<Tracker>,
    ) -> Ledger {
        Ledger {
            counts: Mutex::new(Counts::default()),
            verbosity,
            names,
            rejects: rejects.map(Mutex::new),
            tracker: tracker.map(Mutex::new),
        }
    }

    /// The name of input `source`.
    pub fn name(&self, source: usize) -> &str {
        &self.names[source]
    }

    /// Whether lines as read are kept, for a reject file.
    pub fn keeps_lines(&self) -> bool {
        self.rejects.is_some()
    }

    pub fn counts(&self) -> Counts {
        *lock(&self.counts)
    }

    /// A line with a finding was read.
    pub fn read_one(&self) {
        lock(&self.counts).read += 1;
    }

    pub fn inserted(&self, rows: usize) {
        lock(&self.counts).inserted += rows as u64;
    }

    /// A line read and dropped at once; `raw`, the line as read, goes to the
    /// reject file unless it is already there.
    pub fn drop_read(
        &self,
        source: usize,
        line: u64,
        kind: Dropped,
        reason: &dyn fmt::Display,
        raw: Option<&[u8]>,
    ) {
        let shown = {
            let mut counts = lock(&self.counts);
            counts.read += 1;
            self.count_drop(&mut counts, kind)
        };
        if let Some(raw) = raw {
            self.reject(raw);
        }
        if shown {
            self.say(&Shown { source, line }, reason);
        }
    }

    /// Accounts for rows of a batch that will not be inserted.
    pub fn drop_rows(&self, batch: &Batch, rows: Range<usize>, kind: Dropped, reason: &str) {
        let mut shown = Vec::new();
        {
            let mut counts = lock(&self.counts);
            let mut rejects = self.rejects.as_ref().map(lock);
            for index in rows {
                let origin = batch.rows[index].origin;
                if self.count_drop(&mut counts, kind) {
                    shown.push(Shown {
                        source: origin.source,
                        line: origin.line,
                    });
                }
                if let Some(rejects) = &mut rejects {
                    rejects.append(batch.raw_line(index));
                }
            }
        }
        for line in &shown {
            self.say(line, &reason);
        }
    }

    /// Findings copied unread to the reject file after the database failed:
    /// read, and lost.
    pub fn set_aside(&self, findings: u64) {
        let mut counts = lock(&self.counts);
        counts.read += findings;
        counts.lost += findings;
        counts.set_aside += findings;
    }

    /// Drops every row of a batch that will not be sent.
    pub fn give_up(&self, batch: &Batch, kind: Dropped, reason: &str) {
        self.drop_rows(batch, 0..batch.rows.len(), kind, reason);
        self.finish_batch(batch, Some(0));
    }

    /// Appends bytes to the reject file, when there is one.
    pub fn reject(&self, bytes: &[u8]) {
        if let Some(rejects) = &self.rejects {
            let mut rejects = lock(rejects);
            rejects.append(bytes);
            if !bytes.ends_with(b"\n") {
                rejects.append(b"\n");
            }
        }
    }

    /// The reject file, held so that pieces of one long line are not split
    /// by other dropped lines.
    pub fn hold_rejects(&self) -> Option<MutexGuard<'_, Rejects>> {
        self.rejects.as_ref().map(lock)
    }

    /// Tells the state tracker, when there is one.
    pub fn track(&self, update: impl FnOnce(&mut Tracker)) {
        if let Some(tracker) = &self.tracker {
            update(&mut lock(tracker));
        }
    }

    /// Accounts for a batch whose rows are all inserted or dropped; with
    /// `lost_from`, rows from that index on were lost (database failure or
    /// interruption).
    pub fn finish_batch(&self, batch: &Batch, lost_from: Option<usize>) {
        let (Some(tracker), Some(first)) = (&self.tracker, batch.rows.first()) else {
            return;
        };
        let mut tracker = lock(tracker);
        tracker.close_batch(first.origin.source, first.origin.offset);
        if let (Some(lost), None) = (lost_from, &self.rejects) {
            // Lines lost and recorded nowhere: the next run starts at them
            // again.
            let origin = batch.rows[lost].origin;
            tracker.open_batch(origin.source, origin.offset, origin.line - 1);
        }
        let saved = if tracker.due() {
            self.save_state(&mut tracker)
        } else {
            Ok(())
        };
        drop(tracker);
        if let Err(err) = saved {
            log::error!("{err:#}");
        }
    }

    /// Saves the state file, once the reject file holds on disk every line
    /// the new marks pass over; never after the reject file failed.
    fn save_state(&self, tracker: &mut Tracker) -> Result<()> {
        if let Some(rejects) = &self.rejects {
            lock(rejects)
                .sync()
                .context("the state file is not updated past lines the reject file may not hold")?;
        }
        tracker.save()
    }

    /// The end of the run: the final counts, the reject file to close, and
    /// the final save of the state file.
    pub fn close(&self) -> (Counts, Option<Rejects>, Result<()>) {
        let saved = match &self.tracker {
            Some(tracker) => self.save_state(&mut lock(tracker)),
            None => Ok(()),
        };
        let rejects = self
            .rejects
            .as_ref()
            .map(|rejects| std::mem::take(&mut *lock(rejects)));
        (self.counts(), rejects, saved)
    }

    /// Counts a dropped line; whether it is to be shown.
    fn count_drop(&self, counts: &mut Counts, kind: Dropped) -> bool {
        counts.drop_one(kind);
        self.verbosity == Verbosity::PerLine && counts.dropped() <= SHOWN_DROPS
    }

    fn say(&self, shown: &Shown, reason: &dyn fmt::Display) {
        let name = &self.names[shown.source];
        let _ = writeln!(
            std::io::stderr(),
            "pgsense-pg: {name}:{}: {reason}",
            shown.line
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::batch::tests::{batch_of, line};

    fn ledger(rejects: Option<Rejects>) -> Ledger {
        Ledger::new(vec!["in.jsonl".into()], Verbosity::Quiet, rejects, None)
    }

    #[test]
    fn every_line_read_is_inserted_or_dropped_once() {
        let ledger = ledger(None);
        let batch = batch_of(&[1, 2, 3, 4]);
        for _ in 0..4 {
            ledger.read_one();
        }
        ledger.drop_read(0, 5, Dropped::Invalid, &"bad", None);
        ledger.inserted(2);
        ledger.drop_rows(&batch, 2..3, Dropped::Refused, "no");
        ledger.drop_rows(&batch, 3..4, Dropped::Uncertain, "maybe");
        let counts = ledger.counts();
        assert_eq!(counts.read, 5);
        assert_eq!(counts.inserted + counts.dropped(), counts.read);
        assert_eq!(
            (counts.invalid, counts.refused, counts.uncertain),
            (1, 1, 1)
        );
        assert_eq!(counts.rejected(), 2);
        assert_eq!(counts.status(), Status::TempFail);
    }

    #[test]
    fn status_follows_the_worst_drop() {
        let mut counts = Counts::default();
        assert_eq!(counts.status(), Status::Ok);
        counts.drop_one(Dropped::Refused);
        assert_eq!(counts.status(), Status::DataErr);
        counts.drop_one(Dropped::Interrupted);
        assert_eq!(counts.status(), Status::DataErr);
        counts.drop_one(Dropped::Lost);
        assert_eq!(counts.status(), Status::TempFail);
    }

    #[test]
    fn set_aside_lines_are_read_and_lost() {
        let ledger = ledger(None);
        ledger.set_aside(3);
        let counts = ledger.counts();
        assert_eq!(
            (counts.read, counts.lost, counts.status()),
            (3, 3, Status::TempFail)
        );
    }

    #[test]
    fn dropped_lines_reach_the_reject_file_as_read() {
        let dir = std::env::temp_dir().join(format!("pgsense-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("rejects");
        let _ = std::fs::remove_file(&path);
        let ledger = ledger(Some(Rejects::open(&path).expect("open reject file")));
        let batch = batch_of(&[7, 8]);
        ledger.drop_read(0, 1, Dropped::Invalid, &"bad", Some(b"{oops"));
        ledger.give_up(&batch, Dropped::Lost, FAILED_EARLIER);
        let (counts, rejects, saved) = ledger.close();
        saved.expect("no state file to save");
        rejects.expect("a reject file").finish().expect("synced");
        let text = std::fs::read_to_string(&path).expect("read reject file");
        assert_eq!(text, format!("{{oops\n{}\n{}\n", line(7), line(8)));
        assert_eq!((counts.invalid, counts.lost), (1, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
