//! Asking a server how a transaction ended: txid_status(), checked
//! against the rows the batch left when the server may have handed the
//! transaction's id out again (a crash recovery, a failover).

use crate::state::{Trace, Txn};

/// The current WAL timeline, or NULL on a standby.
pub(super) const TIMELINE: &str = "CASE WHEN pg_is_in_recovery() THEN NULL \
     ELSE pg_walfile_name(pg_current_wal_lsn()) END";

/// When the server last reset its shared statistics, in microseconds since
/// the epoch (text would follow the session's DateStyle), as a further
/// column: it does on every crash recovery, the one time it may hand out
/// again the ids of transactions whose WAL it lost. A reset asked for by
/// hand (`pg_stat_reset_shared`) looks the same, and only makes the check
/// below more careful.
pub(super) const STATS_RESET: &str =
    ", (SELECT (extract(epoch FROM stats_reset) * 1000000)::bigint FROM pg_stat_bgwriter)";

/// The timeline in a WAL file name: its first 8 hexadecimal digits.
pub(super) fn timeline_of(walfile: &str) -> String {
    walfile.chars().take(8).collect()
}

/// What a server says of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnState {
    Committed,
    /// Aborted, or never seen by this server (its id is "in the future"):
    /// not committed here.
    Aborted,
    InProgress,
    /// Too old for the server to remember.
    Forgotten,
    /// This server cannot tell: why.
    Unknowable(String),
}

/// What `client`'s server says of `txn`. Simple queries: behind a
/// transaction-pooling PgBouncer, a prepared statement could run on another
/// server connection than the one that prepared it.
///
/// A server that recovered from a crash, or a promoted standby (on a new
/// timeline), may have given the id of a transaction whose WAL it lost to
/// another transaction. That transaction did not commit there, so
/// "aborted" and an id "in the future" mean not committed; but "committed"
/// may be about another transaction, and is checked against what the batch
/// leaves in `table` (`trace`). "In progress" means not committed on a new
/// timeline; after a statistics reset, which may not have been a crash, it
/// is waited for like any other.
///
/// A COMMIT the server `acknowledged` was on its disk first (the writers
/// commit with synchronous_commit on): its id was not given again after a
/// crash, and "committed" is about it. A promoted standby may not have had
/// it (asynchronous replication), so on a new timeline it is checked all
/// the same.
pub fn txn_state(
    client: &mut postgres::Client,
    txn: &Txn,
    trace: Option<&Trace>,
    acknowledged: bool,
    table: &str,
) -> Result<TxnState, postgres::Error> {
    // The status first: behind PgBouncer the two questions may reach the
    // server either side of a crash, and an answer from before it must not
    // be checked against the server as it was then.
    let status = match client.simple_query(&format!("SELECT txid_status({})", txn.id)) {
        Ok(messages) => first_value(&messages),
        Err(err) if err.code() == Some(&postgres::error::SqlState::INVALID_PARAMETER_VALUE) => {
            return Ok(TxnState::Aborted);
        }
        Err(err) => return Err(err),
    };
    let answer = client.simple_query(&format!("SELECT {TIMELINE}{STATS_RESET}"))?;
    let Some(reuse) = ids_handed_out_again(txn, first_row(&answer)) else {
        return Ok(match status.as_deref() {
            Some("committed") => TxnState::Committed,
            Some("aborted") => TxnState::Aborted,
            Some(_) => TxnState::InProgress,
            None => TxnState::Forgotten,
        });
    };
    match (status.as_deref(), trace) {
        (Some("committed"), _) if acknowledged && !reuse.certain => Ok(TxnState::Committed),
        (Some("committed"), Some(trace)) => traced(client, txn, trace, table, &reuse.why),
        (Some("committed"), None) => Ok(TxnState::Unknowable(format!(
            "{}, which may have given its id to another transaction",
            reuse.why
        ))),
        (Some("aborted"), _) => Ok(TxnState::Aborted),
        (Some(_), _) if reuse.certain => Ok(TxnState::Aborted),
        (Some(_), _) => Ok(TxnState::InProgress),
        (None, _) => Ok(TxnState::Forgotten),
    }
}

/// Why a server may have given a transaction's id to another one.
struct Reuse {
    why: String,
    /// Whether it did give out ids again since (a new timeline), or only
    /// may have (statistics reset, maybe by hand).
    certain: bool,
}

/// Whether the server may have given `txn`'s id to another transaction
/// since it ran (`now`: the server's timeline and statistics reset).
fn ids_handed_out_again(txn: &Txn, now: Option<&postgres::SimpleQueryRow>) -> Option<Reuse> {
    let timeline = now.and_then(|row| row.get(0)).map(timeline_of);
    if let (Some(then), Some(now)) = (&txn.timeline, &timeline)
        && then != now
    {
        return Some(Reuse {
            why: format!(
                "it ran on timeline {then} and the server is now on timeline {now} (a standby \
                 was promoted since)"
            ),
            certain: true,
        });
    }
    let reset = now.and_then(|row| row.get(1));
    match (&txn.stats_reset, reset) {
        (Some(then), Some(now)) if then != now => Some(Reuse {
            why: "the server's shared statistics were reset since it ran (by a crash recovery, \
                  or pg_stat_reset_shared)"
                .into(),
            certain: false,
        }),
        _ => None,
    }
}

/// Whether the rows a batch left carry the id of `txn`: all of them
/// (committed), none (not committed), or some (another transaction's).
/// A batch's rows carry its own id, unless the trace says they were
/// committed under savepoints (see the writer's `Copying`): then nothing
/// can be told.
fn traced(
    client: &mut postgres::Client,
    txn: &Txn,
    trace: &Trace,
    table: &str,
    why: &str,
) -> Result<TxnState, postgres::Error> {
    if trace.savepoints {
        return Ok(TxnState::Unknowable(format!(
            "{why}; its rows were committed under savepoints (the server refused other rows at \
             each attempt), so they do not carry its id: look for its {} rows, one of them with \
             lsn {}",
            trace.rows, trace.lsn
        )));
    }
    // xmin holds the low 32 bits of the transaction id.
    let xid = txn.id & 0xFFFF_FFFF;
    // The sum as an integer: a numeric lsn column with a scale shows its
    // values with decimals (zeros: lsns are integers).
    let sql = format!(
        "SELECT count(*), count(*) FILTER (WHERE lsn = {}), trunc(sum(lsn)) FROM {table} \
         WHERE xmin = '{xid}'::xid",
        trace.lsn
    );
    let messages = match client.simple_query(&sql) {
        Ok(messages) => messages,
        Err(err) if err.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            let sum = trace
                .lsn_sum
                .map_or(String::new(), |sum| format!(", and {sum}"));
            let role = client
                .simple_query("SELECT quote_ident(current_user)")
                .ok()
                .and_then(|messages| first_value(&messages))
                .unwrap_or_else(|| "the loading role".to_owned());
            return Ok(TxnState::Unknowable(format!(
                "{why}; telling its rows apart needs SELECT on {table} (`GRANT SELECT ON \
                 {table} TO {role}`); as a role that can read it, `{sql}` says {}, at least \
                 1{sum} if it committed, and 0 if not",
                trace.rows
            )));
        }
        Err(err) => return Err(err),
    };
    let found = first_row(&messages).map(|row| {
        let count = |at| row.get(at).and_then(|v| v.parse().ok()).unwrap_or(0);
        Found {
            rows: count(0),
            with_lsn: count(1),
            // numeric; integral, as lsns are.
            lsn_sum: row.get(2).and_then(|v| v.parse().ok()),
        }
    });
    Ok(judge(trace, found.as_ref(), why, table))
}

/// What carries a transaction's id in the table.
#[derive(Debug)]
struct Found {
    rows: u64,
    /// Of them, with the trace's lsn.
    with_lsn: u64,
    lsn_sum: Option<i128>,
}

/// Whether `found` is what the batch of `trace` left: its rows, with its
/// lsns (their sum, or one of them for a trace written without it).
fn judge(trace: &Trace, found: Option<&Found>, why: &str, table: &str) -> TxnState {
    let Some(found) = found.filter(|found| found.rows > 0) else {
        return TxnState::Aborted;
    };
    let same_lsns =
        found.with_lsn > 0 && trace.lsn_sum.is_none_or(|sum| found.lsn_sum == Some(sum));
    match (found.rows == trace.rows, same_lsns) {
        (true, true) => TxnState::Committed,
        (false, _) => TxnState::Unknowable(format!(
            "{why}; its id is on {} rows of {table}, not the {} it wrote",
            found.rows, trace.rows
        )),
        (true, false) => TxnState::Unknowable(format!(
            "{why}; its id is on {} rows of {table}, as many as it wrote, but not with its \
             lsns (one of them {})",
            found.rows, trace.lsn
        )),
    }
}

/// The first row of a simple query's answer.
pub(super) fn first_row(
    messages: &[postgres::SimpleQueryMessage],
) -> Option<&postgres::SimpleQueryRow> {
    messages.iter().find_map(|m| match m {
        postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    })
}

/// The first column of the first row of a simple query's answer.
fn first_value(messages: &[postgres::SimpleQueryMessage]) -> Option<String> {
    first_row(messages).and_then(|row| row.get(0).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: Trace = Trace {
        rows: 3,
        lsn: 10,
        lsn_sum: Some(60),
        savepoints: false,
    };

    fn judged(trace: &Trace, rows: u64, with_lsn: u64, lsn_sum: Option<i128>) -> TxnState {
        let found = Found {
            rows,
            with_lsn,
            lsn_sum,
        };
        judge(trace, Some(&found), "why", "t")
    }

    #[test]
    fn the_batch_is_recognised_by_its_row_count_and_lsns() {
        assert_eq!(judged(&TRACE, 3, 1, Some(60)), TxnState::Committed);
        assert_eq!(judged(&TRACE, 0, 0, None), TxnState::Aborted);
        assert_eq!(judge(&TRACE, None, "why", "t"), TxnState::Aborted);
    }

    #[test]
    fn as_many_rows_with_one_same_lsn_are_not_taken_for_the_batch() {
        // The scanner gives all findings of one transaction the same lsn:
        // another batch may hold it too.
        let state = judged(&TRACE, 3, 1, Some(70));
        assert!(
            matches!(&state, TxnState::Unknowable(why) if why.contains("not with its lsns")),
            "{state:?}"
        );
        assert!(matches!(
            judged(&TRACE, 2, 1, Some(60)),
            TxnState::Unknowable(_)
        ));
        // The same sum without the lsn (20, 20, 20 for 10, 10, 40).
        assert!(matches!(
            judged(&TRACE, 3, 0, Some(60)),
            TxnState::Unknowable(_)
        ));
    }

    #[test]
    fn a_trace_without_a_sum_is_recognised_by_one_lsn() {
        let old = Trace {
            lsn_sum: None,
            ..TRACE
        };
        assert_eq!(judged(&old, 3, 1, Some(70)), TxnState::Committed);
        assert!(matches!(
            judged(&old, 3, 0, Some(60)),
            TxnState::Unknowable(_)
        ));
    }
}
