//! Nothing lost when the server goes away (issue 4, "Tests"): a server
//! restarted mid-load, backends terminated again and again, and a server
//! stopped for good, after which the reject and state files complete the
//! table. Tests that stop or restart a server take a private one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::journal::{in_progress_in, settling};
use crate::support::markers::{
    BATCH_ROWS, LARGE, append, assert_disjoint, assert_each_once_but, assert_table_holds_after,
    each_once_after, file_markers, finding, overlap_of_unknown_outcome, table_markers,
    write_findings,
};
use crate::support::report::{json_summary, number, stopped_after};
use crate::support::run::init;
use crate::support::wait::wait_during;
use crate::support::{Scratch, TABLE, private, shared};

/// `pg_ctl restart -m fast` in the middle of a large load: the writers
/// reconnect and resend, and every finding is in the table exactly once.
#[test]
fn a_server_restart_mid_load_loses_and_duplicates_nothing() {
    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let load = server
        .pgsense(&db)
        .arg("load")
        .args(["--batch-rows", &BATCH_ROWS.to_string()])
        .arg(&input)
        .spawn();
    let mut load = wait_during(load, "rows in the table", Duration::from_secs(30), || {
        server.count(&db, TABLE) > 0
    });
    server.restart();
    // Still running once the restart is over: its connections were cut
    // under it.
    let spanned = !load.has_exited();
    let out = load.wait();
    assert!(
        spanned,
        "the load was over before the restart ended: nothing was tested\n{}",
        out.describe()
    );
    out.assert_code(0)
        .assert_stderr_contains(&format!("{LARGE} read, {LARGE} inserted, 0 dropped"));
    assert!(
        !out.stderr.contains("no answer within"),
        "{}",
        out.describe()
    );
    assert_table_holds_after(&server, &db, 1..=LARGE, Some(&out));
}

/// The next run of a killed one settles its journal before loading; a
/// restart then (here while it waits for a transaction still in progress)
/// is retried within --retry-for, as a load is: the run reconnects, learns
/// that the transaction did not commit, and loads everything once.
#[test]
fn a_restart_while_settling_a_killed_run_is_retried() {
    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let state = scratch.path().join("state.json");
    let killed = server
        .pgsense(&db)
        .args(["load", "--state-file"])
        .arg(&state)
        .arg(&input)
        .args(["--batch-rows", "500"])
        .env("PGSENSE_PG_CRASH_AT", "committed:2")
        .run();
    assert_eq!(killed.code, None, "expected a kill\n{}", killed.describe());
    // After the batches that committed, one more stands for a transaction
    // still in progress, so that the next run waits, asking again and
    // again: the restart comes after it has learned of the others, which
    // it must not forget.
    let journal = scratch.path().join("state.json.journal");
    let _holder = in_progress_in(&server, &db, &journal, false);
    let load = server
        .pgsense(&db)
        .args(["load", "--state-file"])
        .arg(&state)
        .arg(&input)
        .spawn();
    let load = settling(load, &server);
    server.restart();
    let out = load.wait();
    // The two batches that committed are not loaded again.
    let rest = LARGE - 1000;
    out.assert_code(0)
        .assert_stderr_contains("trying again for up to")
        .assert_stderr_contains(&format!("{rest} read, {rest} inserted, 0 dropped"));
    assert_table_holds_after(&server, &db, 1..=LARGE, Some(&out));
}

/// --follow catches SIGTERM from the start: one that comes while the run
/// waits for a killed run's transaction still in progress ends it at once,
/// not after the 30 s that wait may take.
#[test]
fn sigterm_while_settling_a_killed_run_ends_the_wait() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", 2_000);
    let state = scratch.path().join("state.json");
    let killed = server
        .pgsense(&db)
        .args(["load", "--state-file"])
        .arg(&state)
        .arg(&input)
        .env("PGSENSE_PG_CRASH_AT", "journaled:1")
        .run();
    assert_eq!(killed.code, None, "expected a kill\n{}", killed.describe());
    let journal = scratch.path().join("state.json.journal");
    let mut holder = in_progress_in(server, &db, &journal, true);
    let load = server
        .pgsense(&db)
        .args(["load", "--follow", "--state-file"])
        .arg(&state)
        .arg(&input)
        .spawn();
    let load = settling(load, server);
    let sent = Instant::now();
    crate::support::process::send_signal(load.id(), "TERM");
    let out = load.wait();
    out.assert_code(143);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?} after SIGTERM\n{}",
        sent.elapsed(),
        out.describe()
    );
    holder.batch_execute("rollback").expect("rollback");
}

/// The loader's backends killed with pg_terminate_backend again and again
/// during a load: same result as a restart. The shared server is fine, the
/// backends killed are only those of this test's database.
#[test]
fn backends_terminated_repeatedly_lose_and_duplicate_nothing() {
    const KILLS: usize = 10;
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let load = server
        .pgsense(&db)
        .arg("load")
        .args(["--batch-rows", &BATCH_ROWS.to_string()])
        .arg(&input)
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(30), || {
        server.count(&db, TABLE) > 0
    });
    let stop = AtomicBool::new(false);
    let killed = AtomicUsize::new(0);
    let out = thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) && killed.load(Ordering::SeqCst) < KILLS {
                let terminated = server.query_one(
                    &db,
                    "select count(*) filter (where pg_terminate_backend(pid)) \
                     from pg_stat_activity \
                     where application_name = 'pgsense-pg' and datname = current_database()",
                );
                let terminated: usize = terminated.and_then(|n| n.parse().ok()).expect("a count");
                killed.fetch_add(terminated, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(100));
            }
        });
        let out = load.wait();
        stop.store(true, Ordering::SeqCst);
        out
    });
    out.assert_code(0)
        .assert_stderr_contains(&format!("{LARGE} read, {LARGE} inserted, 0 dropped"));
    // Both writers connect again at once, to the same host: neither takes
    // the other's attempt for one given up on.
    assert!(
        !out.stderr.contains("no answer within"),
        "{}",
        out.describe()
    );
    let killed = killed.into_inner();
    assert!(
        killed >= 2,
        "only {killed} backends were terminated before the load ended: nothing was tested\n{}",
        out.describe()
    );
    assert_table_holds_after(server, &db, 1..=LARGE, Some(&out));
}

/// The server stops for good in the middle of a load run with
/// `--retry-for 5`: the run ends with 75 within the retry window plus the
/// connect timeout and the time to set the unread input aside, well before
/// the default 60 s window would end; every input line is in the table or
/// in the reject file, never both unless its outcome is unknown (a COMMIT
/// whose answer was lost as the server went down); replaying the reject
/// file once the server is back completes the table, with no duplicates but
/// of those.
#[test]
fn a_server_stopped_for_good_gives_75_and_a_reject_file_that_completes_the_table() {
    const RETRY_FOR: u64 = 5;
    const CONNECT_TIMEOUT: u64 = 2;
    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let rejects = scratch.path().join("rejects.ndjson");
    let load = server
        .pgsense(&db)
        .args(["--connect-timeout", &CONNECT_TIMEOUT.to_string()])
        .arg("load")
        .args(["--batch-rows", &BATCH_ROWS.to_string()])
        .args(["--retry-for", &RETRY_FOR.to_string()])
        .args(["--summary", "json"])
        .arg("--reject-file")
        .arg(&rejects)
        .arg(&input)
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(30), || {
        server.count(&db, TABLE) > 0
    });
    server.stop();
    let stopped = Instant::now();
    let out = load.wait();
    let took = stopped.elapsed();
    out.assert_code(75)
        .assert_stderr_contains("database failure");
    // After the retry window the run still writes the unread rest of the
    // input (some 100 MB) to the reject file and fsyncs it: seconds on a
    // busy 2-core machine. The bound only has to tell --retry-for from the
    // default 60 s.
    let bound = Duration::from_secs(RETRY_FOR + CONNECT_TIMEOUT + 20);
    assert!(
        took < bound,
        "the run ended {took:?} after the server stopped, more than {bound:?}\n{}",
        out.describe()
    );

    server.start();
    let in_table = each_once_after(&table_markers(&server, &db), "the table", Some(&out));
    let rejected = each_once_after(&file_markers(&rejects), "the reject file", Some(&out));
    let unknown =
        overlap_of_unknown_outcome(&in_table, &rejected, &out, &input.display().to_string());

    let replay = server.pgsense(&db).arg("load").arg(&rejects).run();
    replay.assert_code(0);
    assert_eq!(
        in_table.len() + rejected.len() - unknown.len(),
        LARGE as usize,
        "table rows + reject-file lines != input lines: reading stopped after line {} \
         of {LARGE}, and the lines after it are neither in the table nor in the reject \
         file, so replaying it cannot complete the table\n{}",
        stopped_after(&out),
        out.describe()
    );
    // The replay loads the lines of unknown outcome that did commit a second
    // time, as the README warns; nothing else.
    assert_each_once_but(
        &table_markers(&server, &db),
        1..=LARGE,
        &unknown,
        "the table after the replay",
        &[&out, &replay],
    );
}

/// The way back from a server stopped for good that the README gives:
/// with --state-file and --reject-file together, replaying the reject file
/// and running again over the input complete the table, each finding once
/// but those of unknown outcome that did commit (the README warns that a
/// replay may duplicate exactly those).
/// The input ends in a half-written line (the scanner is mid-write), which
/// is left for the run after the scanner finished it, not set aside broken.
#[test]
fn after_a_server_stopped_for_good_the_reject_and_state_files_complete_the_table() {
    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let last = finding(LARGE + 1);
    let (head, tail) = last.split_at(last.len() / 2);
    append(&input, head);
    let state = scratch.path().join("pgsense-pg.state");
    let rejects = scratch.path().join("rejects.ndjson");
    let load_command = || {
        server
            .pgsense(&db)
            .args(["--connect-timeout", "2"])
            .arg("load")
            .args(["--batch-rows", &BATCH_ROWS.to_string()])
            .args(["--retry-for", "2"])
            .arg("--state-file")
            .arg(&state)
    };
    let load = load_command()
        .args(["--summary", "json"])
        .arg("--reject-file")
        .arg(&rejects)
        .arg(&input)
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(30), || {
        server.count(&db, TABLE) > 0
    });
    server.stop();
    let stopped = load.wait();
    stopped.assert_code(75);
    server.start();
    // With a state file nothing is in both: a batch of unknown outcome is
    // kept in the journal for the next run, not written to the reject file.
    let in_table = each_once_after(&table_markers(&server, &db), "the table", Some(&stopped));
    let rejected = each_once_after(&file_markers(&rejects), "the reject file", Some(&stopped));
    assert_disjoint(&in_table, &rejected);

    let replay = server.pgsense(&db).arg("load").arg(&rejects).run();
    replay.assert_code(0);
    append(&input, &format!("{tail}\n"));
    let resumed = load_command()
        .arg("--reject-file")
        .arg(scratch.path().join("rejects-2.ndjson"))
        .arg(&input)
        .run();
    resumed.assert_code(0);
    // The next run settled the batch of unknown outcome with the server:
    // every finding once, without exception (issue 10).
    assert_each_once_but(
        &table_markers(&server, &db),
        1..=LARGE + 1,
        &BTreeSet::new(),
        "the table",
        &[&stopped, &replay, &resumed],
    );
}

/// The table goes away mid-load (renamed), with --state-file and no reject
/// file: the batch that fails and those after it are left in the file for
/// the next run, as the README says (the state stops before the first line
/// not loaded), not reported as dropped: a list of "not inserted" lines
/// that the next run then loads would be replayed twice. Once the table is
/// back, the next run completes it, each finding once.
#[test]
fn a_table_gone_mid_load_with_a_state_file_leaves_the_failed_lines_in_the_file() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let state = scratch.path().join("pgsense-pg.state");
    let load_command = || {
        server
            .pgsense(&db)
            .arg("load")
            .args(["--batch-rows", &BATCH_ROWS.to_string()])
            .args(["--retry-for", "2"])
            .arg("--state-file")
            .arg(&state)
    };
    let load = load_command()
        .args(["--summary", "json"])
        .arg(&input)
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(30), || {
        server.count(&db, TABLE) > 0
    });
    server.execute(&db, "ALTER TABLE pgsense.findings RENAME TO findings_away");
    let stopped = load.wait();
    server.execute(&db, "ALTER TABLE pgsense.findings_away RENAME TO findings");
    stopped.assert_code(75);
    let summary = json_summary(&stopped);
    assert_eq!(
        number(&summary, "dropped_database_failure"),
        0,
        "lines the next run loads were counted as lost\n{}",
        stopped.describe()
    );
    assert!(
        !stopped.stderr.contains("not inserted"),
        "lines the next run loads were reported as not inserted\n{}",
        stopped.describe()
    );
    assert!(
        number(&summary, "left_in_files") > 0,
        "the stop left nothing in the file: nothing was tested\n{}",
        stopped.describe()
    );
    assert_eq!(
        number(&summary, "lines_read"),
        number(&summary, "inserted") + number(&summary, "left_in_files"),
        "every line read is inserted or left in the file\n{}",
        stopped.describe()
    );
    let resumed = load_command().arg(&input).run();
    resumed.assert_code(0);
    assert_each_once_but(
        &table_markers(server, &db),
        1..=LARGE,
        &BTreeSet::new(),
        "the table",
        &[&stopped, &resumed],
    );
}
