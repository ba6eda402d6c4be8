//! SIGTERM and SIGINT (issue 4, "Tests"): the exit status names the
//! signal, batches already handed over commit whole or not at all, lines
//! read but not sent go to the reject file, and a signal ends the run
//! promptly even when it waits on a quiet pipe or on a lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::support::markers::{
    BATCH_ROWS, LARGE, assert_disjoint, assert_table_holds, each_once, file_markers, findings,
    table_markers, write_findings,
};
use crate::support::process::send_signal;
use crate::support::prometheus::Exposition;
use crate::support::report::stopped_after;
use crate::support::run::{Started, init, pgsense};
use crate::support::wait::wait_during;
use crate::support::{Scratch, SilentServer, TABLE, shared};

/// A load of a large file stopped by `signal` as soon as the first rows are
/// in: the exit status says which signal; each line read is in the table
/// or in the reject file, never both; every batch is all in or all out; the
/// summary agrees.
fn signal_mid_load(signal: &str, name: &str, code: i32) {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let rejects = scratch.path().join("rejects.ndjson");
    let load = server
        .pgsense(&db)
        .arg("load")
        .args(["--batch-rows", &BATCH_ROWS.to_string()])
        .arg("--reject-file")
        .arg(&rejects)
        .arg(&input)
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(30), || {
        server.count(&db, TABLE) > 0
    });
    send_signal(load.id(), signal);
    let out = load.wait();
    out.assert_code(code)
        .assert_stderr_contains(&format!("interrupted ({name})"));

    let (read, inserted, dropped) = out.summary();
    assert_eq!(read, stopped_after(&out), "{}", out.describe());
    assert!(read < LARGE, "{}", out.describe());
    let in_table = each_once(&table_markers(server, &db), "the table");
    let rejected = each_once(&file_markers(&rejects), "the reject file");
    assert_disjoint(&in_table, &rejected);
    let all: BTreeSet<u64> = in_table.union(&rejected).copied().collect();
    assert_eq!(
        all,
        (1..=read).collect::<BTreeSet<u64>>(),
        "the lines read are not exactly those in the table and the reject file\n{}",
        out.describe()
    );
    assert_eq!(inserted, in_table.len() as u64, "{}", out.describe());
    assert_eq!(dropped, rejected.len() as u64, "{}", out.describe());

    // Batches are runs of BATCH_ROWS consecutive lines: each is in the table
    // whole or not at all.
    let mut per_batch: BTreeMap<u64, u64> = BTreeMap::new();
    for marker in &in_table {
        *per_batch.entry((marker - 1) / BATCH_ROWS).or_default() += 1;
    }
    let partial: Vec<_> = per_batch
        .iter()
        .filter(|&(_, &rows)| rows != BATCH_ROWS)
        .collect();
    assert!(
        partial.is_empty(),
        "batches (index, rows in the table) partly in the table: {partial:?}"
    );
}

#[test]
fn sigterm_mid_load_gives_143_and_no_partial_batch() {
    signal_mid_load("TERM", "SIGTERM", 143);
}

#[test]
fn sigint_mid_load_gives_130_and_no_partial_batch() {
    signal_mid_load("INT", "SIGINT", 130);
}

/// What a run by hand gets when its terminal or ssh session closes.
#[test]
fn sighup_mid_load_gives_129_and_no_partial_batch() {
    signal_mid_load("HUP", "SIGHUP", 129);
}

/// Under nohup, SIGHUP stays ignored: the load goes on to its end.
#[test]
fn sighup_under_nohup_is_ignored() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let load = server
        .pgsense(&db)
        .ignoring_hangups()
        .arg("load")
        .args(["--batch-rows", &BATCH_ROWS.to_string()])
        .arg(&input)
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(30), || {
        server.count(&db, TABLE) > 0
    });
    send_signal(load.id(), "HUP");
    let out = load.wait();
    out.assert_code(0);
    assert_eq!(out.summary(), (LARGE, LARGE, 0), "{}", out.describe());
    assert_eq!(server.count(&db, TABLE), LARGE as i64);
}

/// A load reading a pipe whose writer stays open: it hands over what it
/// read before it waits for more, so SIGTERM ends it at once, with every
/// line written so far in the table.
#[test]
fn sigterm_while_waiting_on_an_open_pipe_exits_143_promptly() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let rejects = scratch.path().join("rejects.ndjson");
    let mut load = server
        .pgsense(&db)
        .arg("load")
        .arg("--reject-file")
        .arg(&rejects)
        .timeout(Duration::from_secs(30))
        .spawn_piped();
    load.stdin()
        .write_all(findings(1..=50).as_bytes())
        .expect("feed");
    load.stdin().flush().expect("flush");
    // A second descriptor for the pipe's write end: waiting for the load
    // closes the first one, and the pipe must stay open.
    let _write_end = load
        .stdin()
        .as_fd()
        .try_clone_to_owned()
        .expect("dup the pipe");
    let load = wait_during(
        load,
        "50 rows in the table",
        Duration::from_secs(20),
        || server.count(&db, TABLE) == 50,
    );
    let signalled = Instant::now();
    send_signal(load.id(), "TERM");
    let out = load.wait();
    let took = signalled.elapsed();
    out.assert_code(143)
        .assert_stderr_contains("50 read, 50 inserted, 0 dropped");
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?} to end the load\n{}",
        out.describe()
    );
    assert_table_holds(server, &db, 1..=50);
    assert_eq!(fs::read(&rejects).expect("the reject file exists"), b"");
}

/// A load of 200 findings into `db` of the shared server, in batches of
/// 5, once its first COPY waits on the table's lock, held by the caller.
fn load_waiting_on_the_lock(db: &str, scratch: &Scratch) -> Started {
    let server = shared();
    let input = scratch.write("findings.ndjson", findings(1..=200));
    let load = server
        .pgsense(db)
        .args(["load", "--batch-rows", "5"])
        .arg(&input)
        .spawn();
    wait_during(
        load,
        "a COPY waiting on the lock",
        Duration::from_secs(20),
        || {
            server.count(
                db,
                "pg_stat_activity where application_name = 'pgsense-pg' \
                 and wait_event_type = 'Lock' and datname = current_database()",
            ) > 0
        },
    )
}

/// A COPY waiting on a lock held elsewhere does not hold a SIGTERM up: the
/// statement is cancelled a few seconds after the signal, its batch rolls
/// back and is reported as interrupted, and the batches queued behind it
/// are not begun (each would wait on the lock again until cancelled).
#[test]
fn sigterm_while_a_copy_waits_on_a_lock_ends_within_seconds() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let mut locker = server.client(&db);
    let mut lock = locker.transaction().expect("begin");
    lock.batch_execute(&format!("LOCK TABLE {TABLE}"))
        .expect("lock the table");
    let scratch = Scratch::new();
    let load = load_waiting_on_the_lock(&db, &scratch);
    let signalled = Instant::now();
    send_signal(load.id(), "TERM");
    // Cancelled 3 s after the signal: a COPY waiting on the lock a while
    // later was begun after the cancel.
    let (out, waiting_after_cancel) = std::thread::scope(|scope| {
        let count = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(4500));
            server.count(
                &db,
                "pg_stat_activity where application_name = 'pgsense-pg' \
                 and wait_event_type = 'Lock' and datname = current_database()",
            )
        });
        let out = load.wait();
        (out, count.join().expect("the count"))
    });
    let took = signalled.elapsed();
    lock.rollback().expect("release the lock");
    out.assert_code(143)
        .assert_stderr_contains("not inserted: interrupted");
    assert_eq!(
        waiting_after_cancel,
        0,
        "a batch began after the cancel\n{}",
        out.describe()
    );
    assert!(
        took < Duration::from_secs(10),
        "the run ended {took:?} after SIGTERM\n{}",
        out.describe()
    );
    assert_eq!(server.count(&db, TABLE), 0, "{}", out.describe());
}

/// A second SIGINT, while the first waits for a COPY held up by a lock,
/// ends the run at once, with the signal's status, saying so and what it
/// means: the batch in flight rolls back.
#[test]
fn a_second_sigint_exits_at_once_and_says_so() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let mut locker = server.client(&db);
    let mut lock = locker.transaction().expect("begin");
    lock.batch_execute(&format!("LOCK TABLE {TABLE}"))
        .expect("lock the table");
    let scratch = Scratch::new();
    let load = load_waiting_on_the_lock(&db, &scratch);
    send_signal(load.id(), "INT");
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    send_signal(load.id(), "INT");
    let out = load.wait();
    let took = signalled.elapsed();
    lock.rollback().expect("release the lock");
    out.assert_code(130)
        .assert_stderr_contains("a second signal: exiting now");
    // The first signal's cancel comes 3 s after it: the second did not wait.
    assert!(
        took < Duration::from_secs(2),
        "the run ended {took:?} after the second SIGINT\n{}",
        out.describe()
    );
    assert_eq!(server.count(&db, TABLE), 0, "{}", out.describe());
}

/// A SIGTERM while the first connection waits for a server that does not
/// answer ends a one-shot load within seconds, as the signal says (143),
/// saying that nothing was loaded, with its metrics file written: it is
/// caught from before the first connection on, not left to kill the
/// process.
#[test]
fn sigterm_while_connecting_ends_the_load_saying_nothing_was_loaded() {
    let silent = SilentServer::new();
    let scratch = Scratch::new();
    let input = scratch.write("findings.ndjson", findings(1..=5));
    let metrics = scratch.path().join("pgsense-pg.prom");
    let load = pgsense()
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .args(["--connect-timeout", "60"])
        .arg("load")
        .arg("--metrics-file")
        .arg(&metrics)
        .arg(&input)
        .timeout(Duration::from_secs(30))
        .spawn();
    let load = wait_during(
        load,
        "a connection attempt",
        Duration::from_secs(20),
        || silent.was_contacted(),
    );
    let signalled = Instant::now();
    send_signal(load.id(), "TERM");
    let out = load.wait();
    let took = signalled.elapsed();
    out.assert_code(143)
        .assert_stderr_contains("stopped by a signal before reading: nothing was loaded");
    // A stop asked for is not an error.
    assert!(!out.stderr.contains("error:"), "{}", out.describe());
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?} to end the load\n{}",
        out.describe()
    );
    let text = fs::read_to_string(&metrics).expect("the metrics file is written");
    let exposition = Exposition::parse(&text).expect("a valid exposition");
    assert_eq!(
        exposition.value("pgsense_pg_last_run_exit_status", &[]),
        143.0,
        "{text}"
    );
}

/// A line too long to hold that never ends (`/dev/zero` named as a FILE)
/// does not hold a SIGTERM off: the run ends within seconds, as the signal
/// says, with the lines before it loaded.
#[test]
fn sigterm_while_skipping_an_endless_line_ends_the_load() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = scratch.write("findings.ndjson", findings(1..=5));
    let load = server
        .pgsense(&db)
        .arg("load")
        .arg(&input)
        .arg("/dev/zero")
        .timeout(Duration::from_secs(30))
        .spawn();
    let load = wait_during(load, "5 rows in the table", Duration::from_secs(20), || {
        server.count(&db, TABLE) == 5
    });
    // Well into the endless line.
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    send_signal(load.id(), "TERM");
    let out = load.wait();
    let took = signalled.elapsed();
    out.assert_code(143)
        .assert_stderr_contains("stopped reading /dev/zero before its first line")
        .assert_stderr_contains("5 read, 5 inserted, 0 dropped");
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?} to end the load\n{}",
        out.describe()
    );
}

/// --follow: a stop in the middle of a line too long to hold (a sparse file
/// of 20 GiB of zeros, read for seconds) ends the run as a stop, not as an
/// error reading the file.
#[test]
fn sigterm_while_following_a_file_with_a_huge_line_is_a_plain_stop() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = scratch.path().join("findings.jsonl");
    fs::File::create(&input)
        .and_then(|file| file.set_len(20 << 30))
        .expect("a sparse file");
    let load = server
        .pgsense(&db)
        .arg("load")
        .arg("--follow")
        .arg("--state-file")
        .arg(scratch.path().join("state"))
        .arg(&input)
        .timeout(Duration::from_secs(60))
        .spawn();
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    send_signal(load.id(), "TERM");
    let out = load.wait();
    let took = signalled.elapsed();
    out.assert_code(143);
    assert!(
        !out.stderr.contains("error"),
        "a stop said as an error\n{}",
        out.describe()
    );
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?} to end the load\n{}",
        out.describe()
    );
}
