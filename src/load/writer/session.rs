//! One writer's connection: open it from the pool, run a transaction on it
//! (BEGIN with its id, COPY, COMMIT), ask a new one how a COMMIT whose
//! answer was lost ended, and sort server errors by what can be done about
//! them.

use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::time::{Duration, Instant};

use super::super::control::Control;
use super::super::copy::{HEADER, TRAILER};
use super::outcome::{STATS_RESET, TIMELINE, TxnState, first_row, timeline_of, txn_state};
use crate::connect::{Connection, Pool};
use crate::pg_error::{connection_lost, describe};
use crate::state::{Trace, Txn};

/// Backoff bounds between retries.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Why rows could not be written.
pub enum Failure {
    /// The server refused a row: its 1-based line in the COPY, when known.
    Row { line: Option<usize>, reason: String },
    /// Worth retrying on a new connection.
    Transient(String),
    /// Retrying cannot help: say what to fix.
    Permanent(String),
}

/// How a COMMIT ended.
pub enum Commit {
    Done,
    /// The server answered with an ERROR: not committed.
    Refused(Failure),
    /// No answer, or a FATAL one: only the server knows.
    Unknown(String),
}

/// A connection from the pool, opened when first needed and again after it
/// was lost.
pub struct Session<'a> {
    pool: Pool,
    connection: Option<Connection>,
    control: &'a Control,
    /// Which writer: its connection's cancel token is kept under it.
    writer: usize,
}

impl<'a> Session<'a> {
    pub fn new(pool: Pool, control: &'a Control, writer: usize) -> Session<'a> {
        Session {
            pool,
            connection: None,
            control,
            writer,
        }
    }

    /// Hands the connection back to the pool, for the other writer when it
    /// cannot open one (the server has no connection to spare).
    pub fn release(&mut self) {
        self.connection = None;
    }

    /// The connection, opened (or reopened) from the pool.
    fn connect(&mut self) -> Result<&mut Connection, Failure> {
        if self.connection.as_mut().is_some_and(|c| c.is_closed()) {
            self.connection = None;
        }
        if self.connection.is_none() {
            let control = self.control;
            let client = crate::connect::checkout(&self.pool, &|| control.interrupted())
                .map_err(Failure::Transient)?;
            self.control
                .on_stop_cancel(self.writer, client.cancel_token());
            self.connection = Some(client);
        }
        Ok(self.connection.as_mut().expect("just connected"))
    }

    /// BEGIN, and the transaction id that later tells whether it
    /// committed. The commit is durable before it is acknowledged, and
    /// deferred constraints are checked row by row, where a refused row can
    /// be told apart.
    pub fn begin(&mut self, settings: &str) -> Result<Txn, Failure> {
        let call = self.control.in_call(self.writer);
        let connection = self.connect()?;
        // Asked once a minute per connection: no connection outlives a
        // crash (one to PgBouncer may, and then only makes the check more
        // careful), and a reset by hand is seen within a minute.
        let known = Connection::extensions(connection)
            .get::<StatsReset>()
            .filter(|known| known.asked.elapsed() < STATS_RESET_FOR)
            .cloned();
        let stats_reset = match known {
            Some(_) => "",
            None => STATS_RESET,
        };
        let answer = connection.simple_query(&format!(
            "BEGIN; {settings}; SET LOCAL synchronous_commit = on; \
             SET CONSTRAINTS ALL IMMEDIATE; SELECT txid_current(), {TIMELINE}{stats_reset}"
        ));
        drop(call);
        let messages = match answer {
            Ok(messages) => messages,
            Err(err) => {
                // The BEGIN may have run before a later statement failed (a
                // cancel after --stall-timeout): the transaction it left
                // open, aborted, would refuse everything the retry sends on
                // this connection.
                let failure = classify(&err);
                self.rollback();
                return Err(failure);
            }
        };
        let row = first_row(&messages);
        let Some(id) = row.and_then(|row| row.get(0)?.parse().ok()) else {
            // Not what a server in its right state answers: the connection
            // is not to be trusted, a new one may do.
            self.connection = None;
            return Err(Failure::Transient(
                "the server answered BEGIN without a transaction id".into(),
            ));
        };
        let timeline = row.and_then(|row| row.get(1)).map(timeline_of);
        let StatsReset {
            value: stats_reset, ..
        } = match known {
            Some(known) => known,
            None => {
                let answered = StatsReset {
                    value: row.and_then(|row| row.get(2)).map(str::to_owned),
                    asked: Instant::now(),
                };
                if let Some(connection) = &mut self.connection {
                    Connection::extensions_mut(connection).insert(answered.clone());
                }
                answered
            }
        };
        self.control.began(self.writer, id);
        Ok(Txn {
            id,
            timeline,
            stats_reset,
            savepoints: false,
        })
    }

    /// One COPY of the rows in `pieces`, alone: a refused row aborts the
    /// transaction. How many rows the server took.
    pub fn copy(&mut self, sql: &str, pieces: &[&[u8]]) -> Result<u64, Failure> {
        let _call = self.control.in_call(self.writer);
        copy_in(self.connect()?, sql, pieces)
    }

    /// COPY of `data` under a savepoint: a refused row undoes only this.
    /// How many rows the server took.
    pub fn copy_undoable(&mut self, sql: &str, data: &[u8]) -> Result<u64, Failure> {
        let _call = self.control.in_call(self.writer);
        let client = self.connect()?;
        client
            .batch_execute("SAVEPOINT rows")
            .map_err(|e| classify(&e))?;
        match copy_in(client, sql, &[data]) {
            Ok(rows) => client
                .batch_execute("RELEASE SAVEPOINT rows")
                .map(|()| rows)
                .map_err(|e| classify(&e)),
            Err(failure @ Failure::Row { .. }) => {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT rows")
                    .map_err(|e| classify(&e))?;
                Err(failure)
            }
            Err(failure) => Err(failure),
        }
    }

    pub fn commit(&mut self) -> Commit {
        let _call = self.control.in_call(self.writer);
        let Some(client) = self.connection.as_mut().filter(|c| !c.is_closed()) else {
            self.connection = None;
            return Commit::Refused(Failure::Transient(
                "the connection was lost before COMMIT".into(),
            ));
        };
        match client.batch_execute("COMMIT") {
            Ok(()) => Commit::Done,
            Err(err) if err.as_db_error().is_some_and(|db| db.severity() == "ERROR") => {
                self.rollback();
                Commit::Refused(classify(&err))
            }
            Err(err) => {
                self.connection = None;
                Commit::Unknown(describe(&err))
            }
        }
    }

    /// Ends a failed transaction so the connection can be reused, or drops
    /// the connection when that fails.
    pub fn rollback(&mut self) {
        let _call = self.control.in_call(self.writer);
        if let Some(client) = &mut self.connection
            && client.batch_execute("ROLLBACK").is_err()
        {
            self.connection = None;
        }
    }

    /// Asks a new connection whether transaction `txn` committed: Ok(true)
    /// or Ok(false), or why that could not be learned (before `deadline`, or
    /// at all).
    pub fn resolve(
        &mut self,
        txn: &Txn,
        trace: Option<Trace>,
        table: &str,
        deadline: Instant,
    ) -> Result<bool, String> {
        let mut attempt = 0;
        let mut refused = 0;
        loop {
            // The other writer was given this id since: the server lost
            // this transaction in a crash and handed its id out again.
            if self.control.began_again_elsewhere(self.writer, txn.id) {
                return Ok(false);
            }
            let call = self.control.in_call(self.writer);
            let answer = self
                .connect()
                .ok()
                .map(|c| txn_state(c, txn, trace.as_ref(), false, table));
            drop(call);
            let state = match answer {
                Some(Ok(state)) => {
                    refused = 0;
                    Some(state)
                }
                // What the server refuses to answer, it refuses again (no
                // privilege, a statement_timeout shorter than the check,
                // a table changed): said, and given up after a few tries
                // in a row. A cancel, a lock or a lack of resources passes.
                Some(Err(err)) if !connection_lost(&err) && !passing(&err) => {
                    refused += 1;
                    let err = describe(&err);
                    if refused >= MAX_REFUSED_CHECKS {
                        return Err(format!("the server refused to say: {err}"));
                    }
                    log::warn!("asking whether transaction {} committed: {err}", txn.id);
                    None
                }
                Some(Err(_)) | None => None,
            };
            match state {
                Some(TxnState::Committed) => return Ok(true),
                Some(TxnState::Aborted) => return Ok(false),
                Some(TxnState::Unknowable(why)) => return Err(why),
                Some(TxnState::Forgotten) => {
                    return Err("the server no longer knows it (too old)".into());
                }
                // "in progress": the old backend has not noticed yet.
                Some(TxnState::InProgress) | None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.control.interrupted() {
                return Err("interrupted before it was known".into());
            }
            if left.is_zero() {
                return Err("it could not be learned within --retry-for".into());
            }
            self.connection = None;
            self.control.sleep(backoff(attempt).min(left));
            attempt += 1;
        }
    }
}

/// What a connection's server said of [`STATS_RESET`], and when.
#[derive(Clone)]
struct StatsReset {
    value: Option<String>,
    asked: Instant,
}

/// Whether a server error may pass if asked again: a cancel (the stall
/// watchdog's, or an admin's), a lock not granted, a lack of resources, a
/// serialization failure. A statement_timeout's cancel comes back each
/// time: it is a refusal.
fn passing(err: &postgres::Error) -> bool {
    let Some(db) = err.as_db_error() else {
        return false;
    };
    let code = db.code().code();
    code.starts_with("53")
        || matches!(code, "55P03" | "40001" | "40P01")
        || (code == "57014" && !db.message().contains("statement timeout"))
}

/// How many times in a row the server may refuse to say how a transaction
/// ended before the question is given up.
const MAX_REFUSED_CHECKS: u32 = 3;

/// How long an answer of [`STATS_RESET`] is taken as still true.
const STATS_RESET_FOR: Duration = Duration::from_secs(60);

/// COPY FROM STDIN of the rows in `pieces`, in binary format: how many
/// rows the server took (fewer than sent when a trigger skipped some).
fn copy_in(client: &mut Connection, sql: &str, pieces: &[&[u8]]) -> Result<u64, Failure> {
    let mut writer = client.copy_in(sql).map_err(|e| classify(&e))?;
    // In chunks: the driver buffers what it is given whole, and megabyte
    // buffers per batch would fragment the heap.
    let written = std::iter::once(HEADER)
        .chain(pieces.iter().flat_map(|piece| piece.chunks(64 * 1024)))
        .chain(std::iter::once(TRAILER))
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
    writer.finish().map_err(|e| classify(&e))
}

/// Exponential backoff with jitter: 100 ms doubling to 5 s, each delay
/// drawn between half and all of its step.
pub fn backoff(attempt: u32) -> Duration {
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
