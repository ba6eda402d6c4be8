//! What became of the lines read: inserted, or dropped for a reason.

use crate::exit::Status;

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
    /// Rows the server did not take though it refused none: a trigger
    /// skipped them. Not dropped: the table's own rule.
    pub skipped: u64,
    /// Of the batches, those with rows a trigger skipped.
    pub skipped_batches: u64,
    /// Findings read but not loaded, left in their files for the next run
    /// (--follow stopped, or a state file's run without a reject file was
    /// interrupted): not dropped.
    pub left: u64,
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
    pub(super) fn drop_one(&mut self, kind: Dropped) {
        match kind {
            Dropped::Invalid => self.invalid += 1,
            Dropped::Refused => self.refused += 1,
            Dropped::Lost => self.lost += 1,
            Dropped::Interrupted => self.interrupted += 1,
            Dropped::Uncertain => self.uncertain += 1,
        }
    }
}
