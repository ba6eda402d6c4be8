//! How the rows of a batch are copied when the server refuses some: the
//! plan of the next attempt, and the search for the refused rows.

use std::ops::Range;

use super::super::batch::{Rows, Timing};
use super::super::ledger::Refused;

/// How a batch's rows are copied.
///
/// Committed rows carry the id of the transaction that wrote them (`xmin`),
/// which is how a batch is recognised when the server may have handed its
/// transaction id out again (after a crash or a failover): rows copied under
/// a savepoint would carry the savepoint's own id. So savepoints only find
/// the refused rows, in a transaction rolled back, and the batch is then
/// copied plainly without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copying {
    /// Each part in one COPY, but the rows known to be refused.
    Plain,
    /// Under savepoints, to find the rows the server refuses; rolled back.
    Probe,
}

/// Probes of one batch, beyond which rows refused without the server
/// naming them fail the attempt.
const MAX_PROBES: u32 = 3;

/// How the next attempt at a batch copies it, from what the earlier ones
/// found. Plainly first: a refused row is rare, and the savepoints that
/// find it cost round trips.
pub struct Plan {
    pub mode: Copying,
    /// The rows found refused so far.
    pub known: Vec<Refused>,
    probes: u32,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            mode: Copying::Plain,
            known: Vec::new(),
            probes: 0,
        }
    }
}

impl Plan {
    /// A plain COPY had a row refused, `row` when the server named it: the
    /// first time, probe the whole batch; after that (a row refused now
    /// that the probe let through: refusals that depend on concurrent
    /// writers), drop the row named, or probe again. Every step drops a
    /// row more or counts a probe, so this ends; rows refused without a
    /// name after the last probe fail the attempt (retried as any
    /// failure).
    pub fn refused(&mut self, row: Option<Refused>) -> Result<(), String> {
        match row {
            Some(row) if self.probes > 0 => self.known.push(row),
            _ if self.probes < MAX_PROBES => {
                self.probes += 1;
                self.mode = Copying::Probe;
            }
            _ => {
                return Err(format!(
                    "the server kept refusing rows of the batch without naming them, after {} \
                     probes",
                    self.probes
                ));
            }
        }
        Ok(())
    }

    /// A probe found these rows refused: copy the batch without them (and
    /// without those found before).
    pub fn probed(&mut self, refused: Vec<Refused>) {
        for row in refused {
            let same = |known: &Refused| known.timing == row.timing && known.index == row.index;
            if !self.known.iter().any(same) {
                self.known.push(row);
            }
        }
        self.mode = Copying::Plain;
    }
}

/// The index in `rows` of the `line`-th (from 1) row of a COPY that left
/// out the `known` refused ones.
pub fn kept_row(rows: &Rows, known: &[Refused], line: usize) -> Option<usize> {
    let skipped = |index: &usize| {
        known
            .iter()
            .any(|r| r.timing == rows.timing && r.index == *index)
    };
    (0..rows.len())
        .filter(|index| !skipped(index))
        .nth(line.checked_sub(1)?)
}

/// Marks the row the server refused and queues the rows around it.
pub fn isolate(
    timing: Timing,
    pending: &mut Vec<Range<usize>>,
    rows: Range<usize>,
    line: Option<usize>,
    reason: String,
    refused: &mut Vec<Refused>,
) {
    let bad = match line {
        Some(line) if (1..=rows.len()).contains(&line) => rows.start + line - 1,
        // No line number: bisect.
        _ if rows.len() > 1 => {
            let middle = rows.start + rows.len() / 2;
            pending.push(middle..rows.end);
            pending.push(rows.start..middle);
            return;
        }
        _ => rows.start,
    };
    refused.push(Refused {
        timing,
        index: bad,
        reason,
    });
    // COPY stops at the first bad row, so the rest is untested: when bad
    // rows are dense, resending all of it after each one would be
    // quadratic; probe with a chunk sized by how far the last attempt got.
    let probe = (bad + 1 + 2 * (bad - rows.start).max(8)).min(rows.end);
    pending.push(probe..rows.end);
    pending.push(bad + 1..probe);
    pending.push(rows.start..bad);
}
