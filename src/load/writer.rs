//! The writers: each takes batches off the queue and writes them with COPY
//! in a transaction of their own, on one pool connection.
//!
//! - A row the server refuses drops only itself: PostgreSQL names the failing
//!   line of a COPY, so the rows around it are sent again; without a line
//!   number the batch is bisected.
//! - A transient failure (connection lost, server restarting, too many
//!   connections, deadlock) is retried on a new connection with exponential
//!   backoff and jitter, for up to --retry-for.
//! - A COMMIT whose answer was lost has an unknown outcome: the batch's
//!   transaction id, taken at BEGIN, is looked up with txid_status() on the
//!   next connection instead of guessing, so a retry never duplicates rows.

use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::ops::Range;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::batch::{Batch, Spares, Timing};
use super::control::{Control, POLL};
use super::ledger::{Dropped, FAILED_EARLIER, INTERRUPTED, Ledger};
use super::lock;
use super::sink::Sink;
use crate::connect::{Connection, Pool};
use crate::pg_error::describe;
use crate::table;

/// Backoff bounds between retries.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The COPY statements of the table, and how long to retry.
#[derive(Clone)]
pub struct Copy {
    timed: String,
    untimed: String,
    retry_for: Duration,
}

impl Copy {
    pub fn new(qualified_table: &str, retry_for: Duration) -> Copy {
        Copy {
            timed: table::copy_sql(qualified_table, true),
            untimed: table::copy_sql(qualified_table, false),
            retry_for,
        }
    }

    fn sql(&self, timing: Timing) -> &str {
        match timing {
            Timing::Timed => &self.timed,
            Timing::Untimed => &self.untimed,
        }
    }
}

/// What every writer shares with the rest of the load.
pub struct Shares {
    pub ledger: Arc<Ledger>,
    pub control: Arc<Control>,
    pub spares: Arc<Spares>,
}

/// A writer's life: batches until the reader is done, or until the run is
/// interrupted and the reader holds nothing more to send.
pub fn run(sink: Sink, copy: Copy, shares: &Shares, receiver: &Mutex<Receiver<Batch>>) {
    let mut writer = match sink {
        Sink::Database(pool) => Some(Writer {
            pool,
            copy,
            connection: None,
            ledger: &shares.ledger,
            control: &shares.control,
        }),
        Sink::DryRun => None,
    };
    loop {
        let next = lock(receiver).recv_timeout(POLL);
        match next {
            Ok(batch) => {
                let lost_from = match &mut writer {
                    Some(writer) => writer.write(&batch),
                    None => {
                        shares.ledger.inserted(batch.rows.len());
                        None
                    }
                };
                shares.ledger.finish_batch(&batch, lost_from);
                shares.spares.recycle(batch);
            }
            Err(RecvTimeoutError::Timeout) => {
                if shares.control.stopped_while_waiting() {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Writes batches on one connection of the pool.
struct Writer<'a> {
    pool: Pool,
    copy: Copy,
    connection: Option<Connection>,
    ledger: &'a Ledger,
    control: &'a Control,
}

/// Why rows could not be written.
enum Failure {
    /// The server refused a row: its 1-based line in the COPY, when known.
    Row { line: Option<usize>, reason: String },
    /// Worth retrying on a new connection.
    Transient(String),
    /// Retrying cannot help: say what to fix.
    Permanent(String),
    /// COMMIT was sent and its answer lost.
    Unknown { txid: i64, reason: String },
}

/// What finally happened to rows the writer gave up on.
enum GaveUp {
    Row {
        line: Option<usize>,
        reason: String,
    },
    Lost(String),
    Interrupted,
    /// COMMIT was sent and the server could not be asked how it ended.
    Uncertain(String),
}

impl Writer<'_> {
    /// Writes a batch; returns the index of its first row lost to a
    /// database failure or an interruption, if any.
    fn write(&mut self, batch: &Batch) -> Option<usize> {
        let all = 0..batch.rows.len();
        if self.control.failed() {
            self.ledger
                .drop_rows(batch, all, Dropped::Lost, FAILED_EARLIER);
            return Some(0);
        }
        let sql = self.copy.sql(batch.timing).to_owned();
        let mut pending = Vec::from([all]);
        while let Some(rows) = pending.pop() {
            if rows.is_empty() {
                continue;
            }
            let failure = match self.send(&sql, batch.row_bytes(rows.clone())) {
                Ok(()) => {
                    self.ledger.inserted(rows.len());
                    continue;
                }
                Err(failure) => failure,
            };
            let (kind, reason) = match failure {
                GaveUp::Row { line, reason } => {
                    self.isolate(batch, &mut pending, rows, line, &reason);
                    continue;
                }
                GaveUp::Lost(reason) => {
                    log::error!("{reason}");
                    self.control.fail();
                    (Dropped::Lost, format!("not inserted: {reason}"))
                }
                GaveUp::Interrupted => (Dropped::Interrupted, INTERRUPTED.into()),
                GaveUp::Uncertain(reason) => {
                    log::error!("{reason}");
                    self.control.fail();
                    (
                        Dropped::Uncertain,
                        format!("may or may not be in the table: {reason}"),
                    )
                }
            };
            let unsent: Vec<_> = std::iter::once(rows)
                .chain(pending.drain(..))
                .filter(|r| !r.is_empty())
                .collect();
            for rows in &unsent {
                self.ledger.drop_rows(batch, rows.clone(), kind, &reason);
            }
            return unsent.iter().map(|r| r.start).min();
        }
        None
    }

    /// Drops the row the server refused and queues the rows around it.
    fn isolate(
        &self,
        batch: &Batch,
        pending: &mut Vec<Range<usize>>,
        rows: Range<usize>,
        line: Option<usize>,
        reason: &str,
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
        let reason = format!("refused by the server: {reason}");
        self.ledger
            .drop_rows(batch, bad..bad + 1, Dropped::Refused, &reason);
        // COPY stops at the first bad row, so the rest is untested: when bad
        // rows are dense, resending all of it after each one would be
        // quadratic; probe with a chunk sized by how far the last attempt got.
        let probe = (bad + 1 + 2 * (bad - rows.start).max(8)).min(rows.end);
        pending.push(probe..rows.end);
        pending.push(bad + 1..probe);
        pending.push(rows.start..bad);
    }

    /// Sends rows in one transaction, retrying transient failures until
    /// --retry-for has passed since the first one.
    fn send(&mut self, sql: &str, data: &[u8]) -> Result<(), GaveUp> {
        // The retry window opens at the first failure, however long the
        // first attempt took.
        let mut first_failure = None;
        let mut attempt = 0u32;
        loop {
            let reason = match self.try_send(sql, data) {
                Ok(()) => return Ok(()),
                Err(Failure::Row { line, reason }) => return Err(GaveUp::Row { line, reason }),
                Err(Failure::Permanent(reason)) => return Err(GaveUp::Lost(reason)),
                Err(Failure::Transient(reason)) => reason,
                Err(Failure::Unknown { txid, reason }) => {
                    match self.resolve(txid, *first_failure.get_or_insert_with(Instant::now)) {
                        Some(true) => return Ok(()),
                        Some(false) => reason,
                        None if self.control.interrupted() => {
                            return Err(GaveUp::Uncertain(format!(
                                "{reason}; interrupted before the outcome of COMMIT \
                                 (transaction {txid}) was known"
                            )));
                        }
                        None => {
                            return Err(GaveUp::Uncertain(format!(
                                "{reason}; the outcome of COMMIT (transaction {txid}) could \
                                 not be learned within --retry-for"
                            )));
                        }
                    }
                }
            };
            if self.control.interrupted() {
                return Err(GaveUp::Interrupted);
            }
            let since: Instant = *first_failure.get_or_insert_with(Instant::now);
            let left = self.copy.retry_for.saturating_sub(since.elapsed());
            if left.is_zero() {
                let window = self.copy.retry_for.as_secs_f64();
                return Err(GaveUp::Lost(if window > 0.0 {
                    format!(
                        "database failure, still failing after retrying for {window:.0} s: {reason}"
                    )
                } else {
                    format!("database failure: {reason}")
                }));
            }
            let delay = backoff(attempt).min(left);
            log::warn!("{reason}; retrying in {:.1} s", delay.as_secs_f64());
            self.control.sleep(delay);
            attempt += 1;
        }
    }

    /// One attempt: BEGIN, remember the transaction id, COPY, COMMIT.
    fn try_send(&mut self, sql: &str, data: &[u8]) -> Result<(), Failure> {
        let client = self.connect()?;
        let txid = begin(client)?;
        let copied = (|| {
            let mut writer = client.copy_in(sql).map_err(|e| classify(&e))?;
            // In pieces: the driver buffers what it is given whole, and
            // megabyte buffers per batch would fragment the heap.
            let written = data
                .chunks(64 * 1024)
                .try_for_each(|piece| writer.write_all(piece));
            if let Err(err) = written {
                // The driver wraps its own error in an io::Error.
                return Err(
                    match err
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<postgres::Error>())
                    {
                        Some(pg) => classify(pg),
                        None => Failure::Transient(err.to_string()),
                    },
                );
            }
            writer.finish().map(drop).map_err(|e| classify(&e))
        })();
        if let Err(failure) = copied {
            self.rollback();
            return Err(failure);
        }
        let client = self.connect()?;
        match client.batch_execute("COMMIT") {
            Ok(()) => Ok(()),
            // An ERROR answering COMMIT: the transaction did not commit.
            Err(err) if err.as_db_error().is_some_and(|db| db.severity() == "ERROR") => {
                self.rollback();
                Err(classify(&err))
            }
            // No answer, or a FATAL one (a terminated backend may commit and
            // then send FATAL in place of the answer): only the server knows.
            Err(err) => {
                self.connection = None;
                Err(Failure::Unknown {
                    txid,
                    reason: describe(&err),
                })
            }
        }
    }

    /// Asks a new connection whether transaction `txid` committed. None when
    /// that could not be learned before the retry window closed.
    fn resolve(&mut self, txid: i64, started: Instant) -> Option<bool> {
        let mut attempt = 0;
        loop {
            let status = self.connect().ok().and_then(|client| {
                client
                    .query_one("SELECT txid_status($1)", &[&txid])
                    .ok()
                    .map(|row| row.get::<_, Option<String>>(0))
            });
            match status.flatten().as_deref() {
                Some("committed") => return Some(true),
                Some("aborted") => return Some(false),
                // "in progress": the old backend has not noticed yet.
                _ => {}
            }
            if self.control.interrupted() {
                return None;
            }
            let left = self.copy.retry_for.saturating_sub(started.elapsed());
            if left.is_zero() {
                return None;
            }
            self.connection = None;
            self.control.sleep(backoff(attempt).min(left));
            attempt += 1;
        }
    }

    /// The writer's connection, opened (or reopened) from the pool.
    fn connect(&mut self) -> Result<&mut Connection, Failure> {
        if self.connection.as_mut().is_some_and(|c| c.is_closed()) {
            self.connection = None;
        }
        if self.connection.is_none() {
            let client = self.pool.get().map_err(|e| {
                Failure::Transient(match crate::connect::last_error() {
                    Some(cause) => format!("cannot connect: {cause}"),
                    None => format!("cannot connect: {e}"),
                })
            })?;
            self.control.on_stop_cancel(client.cancel_token());
            self.connection = Some(client);
        }
        Ok(self.connection.as_mut().expect("just connected"))
    }

    /// Ends a failed transaction so the connection can be reused, or drops
    /// the connection when that fails.
    fn rollback(&mut self) {
        if let Some(client) = &mut self.connection
            && client.batch_execute("ROLLBACK").is_err()
        {
            self.connection = None;
        }
    }
}

/// BEGIN, and the transaction id that later tells whether it committed.
fn begin(client: &mut Connection) -> Result<i64, Failure> {
    let messages = client
        .simple_query("BEGIN; SELECT txid_current()")
        .map_err(|e| classify(&e))?;
    messages
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| Failure::Permanent("txid_current() returned no transaction id".into()))
}

/// Exponential backoff with jitter: 100 ms doubling to 5 s, each delay
/// drawn between half and all of its step.
fn backoff(attempt: u32) -> Duration {
    let step = FIRST_DELAY
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_DELAY);
    let jitter = RandomState::new().hash_one(attempt) % 1000;
    step / 2 + step / 2 * jitter as u32 / 1000
}

/// Sorts a driver error by what can be done about it, by SQLSTATE class.
fn classify(err: &postgres::Error) -> Failure {
    let Some(db) = err.as_db_error() else {
        // No answer from the server: the connection is gone.
        return Failure::Transient(describe(err));
    };
    let code = db.code().code();
    let class = &code[..2];
    match class {
        // Data exceptions, integrity violations, trigger and routine
        // exceptions, program limits (an over-long index entry): the row is
        // at fault.
        "22" | "23" | "P0" | "2F" | "38" | "39" | "54" => Failure::Row {
            line: db.where_().and_then(copy_line),
            reason: format!("{} (SQLSTATE {code})", db.message()),
        },
        // Connection exceptions, insufficient resources (too many
        // connections), operator intervention (shutdown, restart,
        // pg_terminate_backend, a cancel), transaction rollback (deadlock,
        // serialization), system errors, object not available (a lock
        // waited for longer than lock_timeout).
        "08" | "53" | "57" | "40" | "58" | "55" => Failure::Transient(describe(err)),
        _ => Failure::Permanent(describe(err)),
    }
}

/// The line number in a COPY error's context, "COPY findings, line 3, ...".
fn copy_line(context: &str) -> Option<usize> {
    let line = context.lines().rev().find(|l| l.starts_with("COPY "))?;
    let rest = line.split(", line ").nth(1)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_line_numbers() {
        assert_eq!(
            copy_line("COPY findings, line 3, column lsn: \"x\""),
            Some(3)
        );
        assert_eq!(
            copy_line("PL/pgSQL function f() line 4 at RAISE\nCOPY findings, line 12"),
            Some(12)
        );
        assert_eq!(copy_line("SQL statement \"SELECT 1\""), None);
    }

    #[test]
    fn backoff_doubles_from_100_ms_to_a_5_s_cap_with_jitter() {
        let bounds_ms = [(0, 50, 100), (1, 100, 200), (2, 200, 400), (5, 1600, 3200)];
        for (attempt, low, high) in bounds_ms {
            for _ in 0..20 {
                let ms = backoff(attempt).as_millis();
                assert!((low..=high).contains(&ms), "attempt {attempt}: {ms} ms");
            }
        }
        for attempt in [6, 10, 16, 17, 40, u32::MAX] {
            let ms = backoff(attempt).as_millis();
            assert!((2500..=5000).contains(&ms), "attempt {attempt}: {ms} ms");
        }
    }
}
