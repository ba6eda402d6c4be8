//! The writers: each takes batches off the queue and writes each in one
//! transaction of its own, on one pool connection, then settles it in its
//! turn (see `turns`).
//!
//! - A row the server refuses drops only itself: the batch is probed under
//!   savepoints (PostgreSQL names the failing line, and the rows around it
//!   are sent again; without a line number the rows are bisected), rolled
//!   back, and sent again without the refused rows. The batch still commits
//!   once, every row under the transaction's own id (but when the refused
//!   rows change at each attempt: see `plan`).
//! - A transient failure (connection lost, server restarting, too many
//!   connections, deadlock) is retried on a new connection with exponential
//!   backoff and jitter, for up to --retry-for.
//! - Before COMMIT, in its turn, the batch's dropped lines are appended to
//!   the reject file and its progress recorded in the state journal with
//!   its transaction id; a COMMIT whose answer was lost is looked up with
//!   txid_status() instead of guessed, now or by the next run.

mod outcome;
mod plan;
mod session;

pub use outcome::{TxnState, txn_state};

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::batch::{Batch, Rows, Spares, Timing};
use super::control::{Control, POLL};
use super::ledger::{self, Dropped, FAILED_EARLIER, INTERRUPTED, Ledger, Prepared, Refused};
use super::lock;
use super::sink::Sink;
use super::turns::{PanicGuard, Turn, Turns};
use crate::config::Settings;
use crate::connect::{LOCK_TIMEOUT, SAY_EVERY, session_settings};
use crate::state::Txn;
use crate::table;
use plan::{Copying, Plan, isolate};
use session::{Commit, Failure, Session, backoff};

/// The COPY statements of the table, what each transaction sets first, and
/// how long to retry.
#[derive(Clone)]
pub struct Copy {
    table: String,
    timed: String,
    untimed: String,
    settings: String,
    retry_for: Duration,
    /// --follow: retry without end, saying once that the database is gone
    /// and once that it is back.
    endless: bool,
}

pub use crate::connect::ENDLESS;

impl Copy {
    pub fn new(settings: &Settings, retry_for: Option<Duration>) -> Copy {
        let qualified_table = settings.qualified_table();
        Copy {
            table: qualified_table.clone(),
            timed: table::copy_sql(&qualified_table, true),
            untimed: table::copy_sql(&qualified_table, false),
            // A lock waited for past --retry-for would overrun it: the
            // wait ends with the window (a second at least; 0 is no limit).
            settings: session_settings(
                Some(&settings.schema.value),
                retry_for.map_or(LOCK_TIMEOUT, |window| {
                    window.clamp(Duration::from_secs(1), LOCK_TIMEOUT)
                }),
            ),
            retry_for: retry_for.unwrap_or(ENDLESS),
            endless: retry_for.is_none(),
        }
    }

    fn sql(&self, timing: Timing) -> &str {
        match timing {
            Timing::Timed => &self.timed,
            Timing::Untimed => &self.untimed,
        }
    }
}

/// How long a writer holds its transaction open waiting for its turn.
const TURN_PATIENCE: Duration = Duration::from_secs(10);

/// How long a writer that let go of its connection waits before trying
/// again.
const YIELD_FOR: Duration = Duration::from_millis(200);

/// What every writer shares with the rest of the load.
#[derive(Clone)]
pub struct Shares {
    pub ledger: Arc<Ledger>,
    pub control: Arc<Control>,
    pub spares: Arc<Spares>,
    pub turns: Arc<Turns>,
}

/// A writer's life: batches until the reader is done, or until the run is
/// interrupted and the reader holds nothing more to send.
pub fn run(
    index: usize,
    sink: Sink,
    copy: Copy,
    shares: &Shares,
    receiver: &Mutex<Receiver<Batch>>,
) {
    let _guard = PanicGuard(&shares.turns);
    let mut writer = match sink {
        Sink::Database(pool) => Some(Writer {
            session: Session::new(pool, &shares.control, index),
            copy,
            ledger: &shares.ledger,
            control: &shares.control,
            turns: &shares.turns,
        }),
        Sink::DryRun => None,
    };
    loop {
        let next = lock(receiver).recv_timeout(POLL);
        match next {
            Ok(batch) => {
                match &mut writer {
                    Some(writer) => writer.write(&batch),
                    None => count(&batch, shares),
                }
                // Between batches the connection goes back to the pool,
                // where the other writer finds it when the server has
                // none to spare.
                if let Some(writer) = &mut writer {
                    writer.session.release();
                }
                shares.spares.recycle(batch);
            }
            Err(RecvTimeoutError::Timeout) => {
                if shares.control.stopped_while_waiting() {
                    return;
                }
                shares.ledger.save_if_idle();
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A dry run: the rows count as inserted.
fn count(batch: &Batch, shares: &Shares) {
    let turn = shares.turns.wait(batch.seq);
    match shares.ledger.prepare(batch, &[], 0, None, &turn) {
        Ok(prepared) => shares.ledger.committed(batch, &[], prepared),
        Err(err) => log::error!("{err:#}"),
    }
}

/// What finally happened to a batch the writer could not commit.
enum GaveUp {
    /// Not committed, for sure: the database failed.
    Lost(String),
    Interrupted,
    /// COMMIT was sent and the server could not be asked how it ended.
    Uncertain(String),
    /// An earlier batch could not be settled, or this one's progress could
    /// not be recorded: left for the next run.
    Gap,
}

/// Writes batches on one connection of the pool.
struct Writer<'a> {
    session: Session<'a>,
    copy: Copy,
    ledger: &'a Ledger,
    control: &'a Control,
    turns: &'a Turns,
}

impl<'a> Writer<'a> {
    /// Writes and settles a batch.
    fn write(&mut self, batch: &Batch) {
        let mut turn = None;
        let gave_up = if self.control.failed() {
            GaveUp::Lost(FAILED_EARLIER.into())
        } else if self.control.grace_over() {
            GaveUp::Interrupted
        } else {
            match self.try_write(batch, &mut turn) {
                Ok(()) => return,
                Err(gave_up) => gave_up,
            }
        };
        let turn = turn.unwrap_or_else(|| self.turns.wait(batch.seq));
        let kind = if self.control.interrupted() {
            Dropped::Interrupted
        } else {
            Dropped::Lost
        };
        match gave_up {
            _ if turn.gap() => self.ledger.left_for_next_run(batch, kind),
            GaveUp::Gap => self.ledger.left_for_next_run(batch, kind),
            GaveUp::Lost(reason) => {
                let reason = match reason.as_str() {
                    FAILED_EARLIER => reason,
                    _ => format!("not inserted: {reason}"),
                };
                self.ledger.dropped(batch, Dropped::Lost, &reason, &turn);
            }
            GaveUp::Interrupted => {
                self.ledger
                    .dropped(batch, Dropped::Interrupted, INTERRUPTED, &turn);
            }
            GaveUp::Uncertain(reason) => {
                let reason = format!("may or may not be in the table: {reason}");
                self.ledger.unknown_outcome(batch, &reason, &turn);
            }
        }
    }

    /// Writes a batch, retrying transient failures until --retry-for has
    /// passed since the first one.
    fn try_write(&mut self, batch: &Batch, turn: &mut Option<Turn<'a>>) -> Result<(), GaveUp> {
        // The retry window opens at the first failure, however long the
        // first attempt took.
        let mut first_failure = None;
        let mut attempt = 0u32;
        // Said at the first failure, then every few seconds while it goes on.
        let mut said = None;
        let mut plan = Plan::default();
        loop {
            // A stop's grace is over: what is in flight is being
            // cancelled, and nothing begins again.
            if self.control.grace_over() {
                return Err(GaveUp::Interrupted);
            }
            let reason = match self.attempt(batch, plan.mode, &plan.known, turn) {
                Ok(()) => {
                    if self.copy.endless && self.control.outage_over() {
                        log::warn!("the database is back: loading again");
                    }
                    return Ok(());
                }
                Err(Attempt::Gap) => return Err(GaveUp::Gap),
                Err(Attempt::RowRefused) => {
                    plan.refused();
                    continue;
                }
                Err(Attempt::Probed(refused)) => {
                    plan.probed(refused);
                    continue;
                }
                Err(Attempt::Yield) => {
                    // Not a failure: the retry window stays closed.
                    self.control.sleep(YIELD_FOR);
                    continue;
                }
                Err(Attempt::Failed(Failure::Permanent(reason))) => {
                    self.control.fail_because(&reason);
                    return Err(GaveUp::Lost(reason));
                }
                Err(Attempt::Failed(failure)) => describe_failure(failure),
                Err(Attempt::Unknown(unresolved)) => {
                    let since = *first_failure.get_or_insert_with(Instant::now);
                    match self.resolve(batch, *unresolved, since + self.copy.retry_for)? {
                        Some(reason) => reason,
                        None => return Ok(()),
                    }
                }
            };
            if self.control.interrupted() {
                return Err(GaveUp::Interrupted);
            }
            let since = *first_failure.get_or_insert_with(Instant::now);
            let left = self.copy.retry_for.saturating_sub(since.elapsed());
            if left.is_zero() {
                let reason = match self.copy.retry_for.as_secs_f64() {
                    0.0 => format!("database failure: {reason}"),
                    window => format!(
                        "database failure, still failing after retrying for {window:.0} s: {reason}"
                    ),
                };
                self.control.fail_because(&reason);
                return Err(GaveUp::Lost(reason));
            }
            if self.copy.endless {
                if self.control.outage_began() {
                    log::warn!(
                        "{reason}; retrying until the database is back (the files keep the lines meanwhile)"
                    );
                }
            } else if said.is_none_or(|at: Instant| at.elapsed() >= SAY_EVERY) {
                log::warn!("{reason}; retrying for up to {} s", left.as_secs().max(1));
                said = Some(Instant::now());
            }
            self.control.sleep(backoff(attempt).min(left));
            attempt += 1;
        }
    }

    /// Learns from the server, before `deadline`, how a COMMIT whose answer
    /// was lost ended: None when it committed (the batch is done), the
    /// reason to try again when it did not.
    fn resolve(
        &mut self,
        batch: &Batch,
        unresolved: Unresolved,
        deadline: Instant,
    ) -> Result<Option<String>, GaveUp> {
        let Unresolved {
            txn,
            reason,
            refused,
            prepared,
        } = unresolved;
        let trace = ledger::trace(batch, &refused, txn.savepoints);
        match self
            .session
            .resolve(&txn, trace, &self.copy.table, deadline)
        {
            Ok(true) => {
                self.ledger.committed(batch, &refused, prepared);
                Ok(None)
            }
            Ok(false) => {
                self.ledger.unprepare(prepared);
                Ok(Some(reason))
            }
            Err(why) => {
                self.ledger.unresolved(prepared);
                let reason = format!(
                    "{reason}; the outcome of COMMIT (transaction {}) is not known: {why}",
                    txn.id
                );
                self.control.fail_because(&reason);
                Err(GaveUp::Uncertain(reason))
            }
        }
    }

    /// One attempt: BEGIN, COPY each part (but the `known` refused rows),
    /// then in turn record and COMMIT.
    fn attempt(
        &mut self,
        batch: &Batch,
        mode: Copying,
        known: &[Refused],
        turn: &mut Option<Turn<'a>>,
    ) -> Result<(), Attempt> {
        let (txn, refused, taken) = match batch.rows() {
            0 => (None, Vec::new(), 0),
            _ => self.copy_batch(batch, mode, known)?,
        };
        // Rows sent that the server did not take: a trigger skipped them.
        let skipped = match txn {
            Some(_) => ((batch.rows() - refused.len()) as u64).saturating_sub(taken),
            None => 0,
        };
        if turn.is_none() {
            // Holding a transaction (and a connection) open for the turn:
            // when the other writer cannot get a connection meanwhile, it
            // may be the one whose turn comes first; when the wait is long,
            // it may be waiting for a row lock this transaction holds (a
            // unique index both batches hit). Let go, and redo this.
            let failed = crate::connect::failed_attempts();
            let since = Instant::now();
            let yield_now =
                || crate::connect::failed_attempts() > failed || since.elapsed() > TURN_PATIENCE;
            match self.turns.wait_unless(batch.seq, yield_now) {
                Some(now) => *turn = Some(now),
                None => {
                    self.session.rollback();
                    self.session.release();
                    return Err(Attempt::Yield);
                }
            }
        }
        let turn = turn.as_ref().expect("the turn was just taken");
        if turn.gap() {
            self.session.rollback();
            return Err(Attempt::Gap);
        }
        let prepared = match self
            .ledger
            .prepare(batch, &refused, skipped, txn.as_ref(), turn)
        {
            Ok(prepared) => prepared,
            Err(err) => {
                self.session.rollback();
                self.ledger.cannot_record(err, turn);
                self.control.fail_to_record();
                return Err(Attempt::Gap);
            }
        };
        let Some(txn) = txn else {
            self.ledger.committed(batch, &refused, prepared);
            return Ok(());
        };
        match self.session.commit() {
            Commit::Done => {
                crate::crash::at("committed");
                self.ledger.committed(batch, &refused, prepared);
                Ok(())
            }
            Commit::Refused(failure) => {
                self.ledger.unprepare(prepared);
                Err(failure.into())
            }
            Commit::Unknown(reason) => Err(Attempt::Unknown(Box::new(Unresolved {
                txn,
                reason,
                refused,
                prepared,
            }))),
        }
    }

    /// BEGIN and COPY of each part of a batch (but the `known` refused
    /// rows): the transaction, none when every row is known to be refused,
    /// the rows refused, in input order, and how many rows the server
    /// took.
    fn copy_batch(
        &mut self,
        batch: &Batch,
        mode: Copying,
        known: &[Refused],
    ) -> Result<(Option<Txn>, Vec<Refused>, u64), Attempt> {
        let mut refused = Vec::new();
        let mut taken = 0;
        let mut txn = match mode {
            // Nothing to commit, and no transaction id to settle later.
            Copying::Plain if known.len() == batch.rows() => None,
            _ => Some(self.session.begin(&self.copy.settings)?),
        };
        for rows in batch.parts().into_iter().filter(|_| txn.is_some()) {
            let copied = match mode {
                Copying::Plain => self.copy_kept(rows, known),
                Copying::Probe | Copying::Savepoints => self.copy_rows(rows, &mut refused),
            };
            match copied {
                Ok(rows) => taken += rows,
                Err(failure) => {
                    self.session.rollback();
                    return Err(match failure {
                        Failure::Row { .. } if mode == Copying::Plain => Attempt::RowRefused,
                        failure => failure.into(),
                    });
                }
            }
        }
        match mode {
            Copying::Probe => {
                self.session.rollback();
                return Err(Attempt::Probed(refused));
            }
            Copying::Plain => refused = known.to_vec(),
            Copying::Savepoints => {
                if let Some(txn) = &mut txn {
                    txn.savepoints = true;
                }
            }
        }
        // Found part by part, range by range: reported in input order.
        refused.sort_by_key(|r| batch.part(r.timing).rows[r.index].origin.line);
        Ok((txn, refused, taken))
    }

    /// One COPY of the rows of `rows` but the `known` refused ones: how
    /// many rows the server took.
    fn copy_kept(&mut self, rows: &Rows, known: &[Refused]) -> Result<u64, Failure> {
        if rows.len() == 0 {
            return Ok(0);
        }
        let sql = self.copy.sql(rows.timing).to_owned();
        let mut skipped: Vec<usize> = known
            .iter()
            .filter(|r| r.timing == rows.timing)
            .map(|r| r.index)
            .collect();
        skipped.sort_unstable();
        skipped.push(rows.len());
        let mut start = 0;
        let mut pieces = Vec::with_capacity(skipped.len());
        for end in skipped {
            if start < end {
                pieces.push(rows.row_bytes(start..end));
            }
            start = end + 1;
        }
        self.session.copy(&sql, &pieces)
    }

    /// COPY of every row of `rows` under savepoints, but for those the
    /// server refuses, which are added to `refused`: how many rows the
    /// server took.
    fn copy_rows(&mut self, rows: &Rows, refused: &mut Vec<Refused>) -> Result<u64, Failure> {
        let sql = self.copy.sql(rows.timing).to_owned();
        let mut taken = 0;
        let mut pending = Vec::new();
        pending.push(0..rows.len());
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            match self
                .session
                .copy_undoable(&sql, rows.row_bytes(range.clone()))
            {
                Ok(rows) => taken += rows,
                Err(Failure::Row { line, reason }) => {
                    isolate(rows.timing, &mut pending, range, line, reason, refused);
                }
                Err(failure) => return Err(failure),
            }
        }
        Ok(taken)
    }
}

/// How one attempt at a batch failed.
enum Attempt {
    Failed(Failure),
    /// Not to be committed: left for the next run.
    Gap,
    /// Let go of the connection while waiting for the turn: try again.
    Yield,
    /// The server refused a row of a batch copied plainly: probe it.
    RowRefused,
    /// The rows a probe found refused: copy the batch without them.
    Probed(Vec<Refused>),
    /// COMMIT was sent and its answer lost.
    Unknown(Box<Unresolved>),
}

/// A COMMIT whose answer was lost; the rejects and journal entry written
/// for it stand until its outcome is known.
struct Unresolved {
    txn: Txn,
    reason: String,
    refused: Vec<Refused>,
    prepared: Prepared,
}

impl From<Failure> for Attempt {
    fn from(failure: Failure) -> Attempt {
        Attempt::Failed(failure)
    }
}

/// The reason of a failure worth retrying.
fn describe_failure(failure: Failure) -> String {
    match failure {
        Failure::Transient(reason) | Failure::Permanent(reason) => reason,
        Failure::Row { reason, .. } => reason,
    }
}
