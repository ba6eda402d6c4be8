//! Failover to a synchronous standby (issue 12, "Failover"): the loader is
//! given `--host primary,standby`, the primary goes away in the middle of a
//! load and the standby is promoted; the load finishes on the new primary
//! with every line in the table once and nothing set aside.
//!
//! The standby is synchronous, so every COMMIT the old primary acknowledged
//! is on it, and a batch whose COMMIT answer was lost is settled there with
//! txid_status(): what the README promises, and all it promises.

use std::fs;
use std::path::Path;
use std::time::Duration;

use postgres::SimpleQueryMessage;

use crate::support::markers::{assert_table_holds_after, file_markers, write_findings};
use crate::support::run::{Outcome, init};
use crate::support::standby::{Replicated, replicated};
use crate::support::wait::wait_during;
use crate::support::{Scratch, TABLE, pgsense};

/// Findings in the load: enough that it is still running when the standby
/// has been promoted.
const FINDINGS: u64 = 200_000;

/// Small batches: many COMMITs, each waiting for the standby, so the
/// primary goes away between some and during one.
const BATCH_ROWS: u64 = 500;

/// Bound on each run of the load: the default --retry-for (60 s) spans the
/// failover, and the runs are slow on a busy machine.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// How the primary goes away.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// `pg_ctl stop -m immediate`: the way a crash does, WAL not yet sent
    /// to the standby stays behind.
    Immediate,
    /// `pg_ctl stop -m fast`: an operator's switchover.
    Fast,
}

#[test]
fn a_primary_crashing_mid_load_fails_over_to_the_promoted_standby() {
    load_through_failover(Stop::Immediate);
}

#[test]
fn a_primary_stopped_mid_load_fails_over_to_the_promoted_standby() {
    load_through_failover(Stop::Fast);
}

fn load_through_failover(stop: Stop) {
    let pair = replicated();
    let Replicated { primary, standby } = &pair;
    let db = primary.new_database();
    init(primary, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", FINDINGS);
    let state = scratch.path().join("pgsense-pg.state");
    let rejects = scratch.path().join("rejects.ndjson");
    let ports = format!("{},{}", primary.port(), standby.port());
    let load_command = || {
        pgsense()
            .args(["--host", "127.0.0.1,127.0.0.1", "--port", &ports])
            .args(["--dbname", &db, "--username", "postgres"])
            .arg("load")
            .args(["--batch-rows", &BATCH_ROWS.to_string()])
            .arg("--state-file")
            .arg(&state)
            .arg("--reject-file")
            .arg(&rejects)
            .arg(&input)
            .timeout(LOAD_TIMEOUT)
    };

    let load = load_command().spawn();
    let mut load = wait_during(load, "rows on the primary", Duration::from_secs(60), || {
        primary.count(&db, TABLE) > 0
    });
    match stop {
        Stop::Immediate => primary.stop_immediate(),
        Stop::Fast => primary.stop(),
    }
    pair.promote();
    // Still running once the standby is promoted: its connections to the
    // old primary were cut under it, and it has more to load.
    let spanned = !load.has_exited();
    let first = load.wait();
    assert!(
        spanned,
        "the load was over before the standby was promoted: nothing was tested\n{}",
        first.describe()
    );
    let runs = finish(first, || load_command().run());
    let last = runs.last().expect("at least one run");
    assert_table_holds_after(standby, &db, 1..=FINDINGS, Some(last));
    assert_nothing_set_aside(&rejects, &runs);
}

/// The first run's outcome, and the second's when the first gave up with
/// 75 (the failover took longer than --retry-for): then the same command
/// again must finish the load. Any other exit is a failure.
fn finish(first: Outcome, again: impl FnOnce() -> Outcome) -> Vec<Outcome> {
    match first.code {
        Some(0) => vec![first],
        Some(75) => {
            let second = again();
            second.assert_code(0);
            vec![first, second]
        }
        _ => {
            first.assert_code(0);
            unreachable!("assert_code panics on any other code")
        }
    }
}

/// The reject file is absent or empty: no line was set aside.
#[track_caller]
fn assert_nothing_set_aside(rejects: &Path, runs: &[Outcome]) {
    if !fs::exists(rejects).expect("stat the reject file") {
        return;
    }
    let set_aside = file_markers(rejects);
    assert!(
        set_aside.is_empty(),
        "{} findings were set aside in the reject file, for example {:?}\n{}",
        set_aside.len(),
        set_aside.iter().take(10).collect::<Vec<_>>(),
        runs.iter()
            .map(Outcome::describe)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A COMMIT cut before any of its transaction reached the standby, and the
/// new primary giving that transaction's id to another transaction before
/// the loader asks about it: txid_status() then speaks of the other
/// transaction, which committed. The loader does not take that answer (the
/// timeline changed): it looks for the rows its batch would have left, finds
/// none, and sends the batch again, once.
///
/// Made deterministic: the standby is cut off from the primary before the
/// load starts (so its first COMMIT waits for the standby, and none of its
/// transactions reaches it) and refuses the loader's connections; the
/// primary crashes, the standby is promoted and runs committed transactions
/// until it has handed out the waiting transaction's id; only then may the
/// loader connect.
#[test]
fn a_lost_commit_whose_id_the_new_primary_reused_is_still_loaded_once() {
    let pair = replicated();
    let Replicated { primary, standby } = &pair;
    let db = primary.new_database();
    init(primary, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", FINDINGS);
    let state = scratch.path().join("pgsense-pg.state");
    let rejects = scratch.path().join("rejects.ndjson");
    standby.set_hba(&["host all all 127.0.0.1/32 reject"]);
    pair.cut_off_standby();
    let load = load_command(primary, standby, &db, &state, &rejects, &input).spawn();
    let waiting = "select backend_xid from pg_stat_activity \
                   where wait_event = 'SyncRep' and application_name = 'pgsense-pg'";
    let mut rows = Vec::new();
    let load = wait_during(
        load,
        "a COMMIT waiting for the standby",
        LOAD_TIMEOUT,
        || {
            rows = primary.query("postgres", waiting);
            !rows.is_empty()
        },
    );
    let xid: u64 = rows[0][0].as_deref().unwrap().parse().unwrap();
    primary.stop_immediate();
    pair.promote();
    // Each a transaction of its own, committed.
    let mut client = standby.client("postgres");
    for _ in 0..=xid {
        let rows = client.simple_query("select txid_current()").unwrap();
        let current: Option<u64> = rows.iter().find_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|x| x.parse().ok()),
            _ => None,
        });
        if current.unwrap() >= xid {
            break;
        }
    }
    assert_eq!(
        standby
            .query_one("postgres", &format!("select txid_status({xid})"))
            .as_deref(),
        Some("committed"),
        "the new primary did not reuse transaction id {xid}: nothing was tested"
    );
    standby.set_hba(&["host all all 127.0.0.1/32 trust"]);
    let out = load.wait();
    out.assert_code(0);
    assert_table_holds_after(standby, &db, 1..=FINDINGS, Some(&out));
    assert_nothing_set_aside(&rejects, &[out]);
}

/// The load command of the reuse test: both hosts, state and reject files.
fn load_command(
    primary: &crate::support::PgServer,
    standby: &crate::support::PgServer,
    db: &str,
    state: &std::path::Path,
    rejects: &std::path::Path,
    input: &std::path::Path,
) -> crate::support::run::Pgsense {
    pgsense()
        .args(["--host", "127.0.0.1,127.0.0.1"])
        .args(["--port", &format!("{},{}", primary.port(), standby.port())])
        .args(["--dbname", db, "--username", "postgres"])
        .arg("load")
        .args(["--batch-rows", &BATCH_ROWS.to_string()])
        .arg("--state-file")
        .arg(state)
        .arg("--reject-file")
        .arg(rejects)
        .arg(input)
        .timeout(LOAD_TIMEOUT)
}
