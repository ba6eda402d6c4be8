//! How the rows of a batch are copied when the server refuses some: the
//! plan of the next attempt, and the search for the refused rows.

use std::ops::Range;

use super::super::batch::Timing;
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
    /// Under savepoints, committed: when the plain copy kept having rows
    /// refused that the probe before it let through (a trigger or
    /// constraint that refuses different rows at each attempt). Its rows
    /// cannot be told apart by their id after a crash, and the journal
    /// says so.
    Savepoints,
}

/// Probes of one batch, after which it is committed under savepoints.
const MAX_PROBES: u32 = 3;

/// How the next attempt at a batch copies it, from what the earlier ones
/// found. Plainly first: a refused row is rare, and the savepoints that
/// find it cost round trips. Each attempt sends the whole batch once (a
/// probe, once and a bit), so a batch costs at most 2 + 2 x MAX_PROBES
/// sends.
pub struct Plan {
    pub mode: Copying,
    /// The rows the probes found refused.
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
    /// A plain COPY had a row refused: probe the batch, or after
    /// MAX_PROBES (the rows refused change from one attempt to the next),
    /// commit it under savepoints.
    pub fn refused(&mut self) {
        self.mode = match self.probes {
            probes if probes < MAX_PROBES => Copying::Probe,
            _ => Copying::Savepoints,
        };
        self.probes += 1;
        if self.mode == Copying::Savepoints {
            log::warn!(
                "the server refused other rows of a batch at each of {MAX_PROBES} attempts (a \
                 trigger or constraint that depends on other writers?): committing it under \
                 savepoints"
            );
        }
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
