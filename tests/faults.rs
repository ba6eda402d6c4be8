//! Nothing lost (issue 4, "Tests"): real faults against a real server, each
//! bounded in time. A server restarted, backends terminated, a server
//! stopped for good, SIGTERM and SIGINT, a COMMIT whose answer is lost, a
//! permanent error, the state file and the reject file.
//!
//! Every finding carries a marker, its lsn, equal to its line number, so a
//! test tells exactly which lines are in the table, which are in the reject
//! file, and that none is in both or twice. Tests that stop or restart a
//! server take a private one; the others use the shared server and touch
//! only their own database.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::process::run_ok;
use crate::support::run::{Outcome, Started};
use crate::support::{PgServer, Scratch, private, shared};

const TABLE: &str = "pgsense.findings";

/// Findings in a "large" load: enough that it lasts a few seconds, so a
/// fault lands in the middle of it.
const LARGE: u64 = 300_000;

/// Rows per batch in the large loads: many batches, so a fault lands between
/// some and inside one.
const BATCH_ROWS: u64 = 2000;

// --- Findings with markers -------------------------------------------------

/// A valid finding whose lsn, its marker, is `marker`.
fn finding(marker: u64) -> String {
    finding_with_sample(marker, "ja****om")
}

/// A valid finding with marker `marker` and this masked_sample.
fn finding_with_sample(marker: u64, sample: &str) -> String {
    format!(
        "{{\"database\":\"primary/orders\",\"rule_id\":\"email-address\",\
         \"description\":\"Email addresses\",\"category\":\"PII\",\"severity\":\"HIGH\",\
         \"schema_name\":\"public\",\"table_name\":\"users\",\"column_name\":\"contact\",\
         \"masked_sample\":\"{sample}\",\"primary_key\":{{\"id\":\"{marker}\"}},\
         \"lsn\":{marker},\"timestamp\":\"2024-11-01T12:00:00.123456+00:00\"}}"
    )
}

/// The findings with these markers, one per line.
fn findings(markers: RangeInclusive<u64>) -> String {
    markers.map(|m| finding(m) + "\n").collect()
}

/// Writes findings 1..=count, one per line, to `name` in `scratch`.
fn write_findings(scratch: &Scratch, name: &str, count: u64) -> PathBuf {
    let path = scratch.path().join(name);
    let file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut out = BufWriter::new(file);
    for marker in 1..=count {
        writeln!(out, "{}", finding(marker)).expect("write findings");
    }
    out.flush().expect("write findings");
    path
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// The marker of every row in the table, in no particular order.
fn table_markers(server: &PgServer, db: &str) -> Vec<u64> {
    server
        .query(db, &format!("select lsn from {TABLE}"))
        .into_iter()
        .map(|row| {
            row[0]
                .as_deref()
                .and_then(|lsn| lsn.parse().ok())
                .expect("lsn is a number")
        })
        .collect()
}

/// The markers of the findings in a reject file, one per line.
fn file_markers(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(|line| {
            let json: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "{} holds a line that is not a finding ({e}): {:?}",
                    path.display(),
                    String::from_utf8_lossy(line)
                )
            });
            json["lsn"].as_u64().expect("every finding has an lsn")
        })
        .collect()
}

/// The markers as a set, or a panic naming the markers present twice.
#[track_caller]
fn each_once(markers: &[u64], what: &str) -> BTreeSet<u64> {
    each_once_after(markers, what, None)
}

/// [`each_once`], showing what `run` printed on failure.
#[track_caller]
fn each_once_after(markers: &[u64], what: &str, run: Option<&Outcome>) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let twice: BTreeSet<u64> = markers
        .iter()
        .copied()
        .filter(|&m| !seen.insert(m))
        .collect();
    assert!(
        twice.is_empty(),
        "{} findings are in {what} more than once, for example {:?}\n{}",
        twice.len(),
        twice.iter().take(10).collect::<Vec<_>>(),
        run.map(Outcome::describe).unwrap_or_default()
    );
    seen
}

/// Asserts that the table holds exactly the findings `expected`, each once.
#[track_caller]
fn assert_table_holds(server: &PgServer, db: &str, expected: RangeInclusive<u64>) {
    assert_table_holds_after(server, db, expected, None);
}

/// [`assert_table_holds`], showing what `run` printed on failure.
#[track_caller]
fn assert_table_holds_after(
    server: &PgServer,
    db: &str,
    expected: RangeInclusive<u64>,
    run: Option<&Outcome>,
) {
    let markers = table_markers(server, db);
    let in_table = each_once_after(&markers, "the table", run);
    let expected: BTreeSet<u64> = expected.collect();
    let missing: Vec<_> = expected.difference(&in_table).take(10).collect();
    let extra: Vec<_> = in_table.difference(&expected).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the table holds {} findings, expected {}; missing for example {missing:?}, \
         unexpected for example {extra:?}\n{}",
        in_table.len(),
        expected.len(),
        run.map(Outcome::describe).unwrap_or_default()
    );
}

/// Asserts that no finding is both in the table and in the reject file.
#[track_caller]
fn assert_disjoint(in_table: &BTreeSet<u64>, rejected: &BTreeSet<u64>) {
    let both: Vec<_> = in_table.intersection(rejected).take(10).collect();
    assert!(
        both.is_empty(),
        "findings both in the table and in the reject file, for example {both:?}"
    );
}

/// The object a load run with `--summary json` printed on stdout.
#[track_caller]
fn json_summary(out: &Outcome) -> serde_json::Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not the one JSON summary of --summary json ({e})\n{}",
            out.describe()
        )
    })
}

/// A count from the JSON summary of a load run with `--summary json`.
#[track_caller]
fn json_count(out: &Outcome, field: &str) -> u64 {
    json_summary(out)[field].as_u64().unwrap_or_else(|| {
        panic!(
            "the JSON summary has no count {field:?}\n{}",
            out.describe()
        )
    })
}

/// After a run that ended with a database failure: the findings both in the
/// table and in the reject file, once checked that they can only be lines of
/// unknown outcome.
///
/// The README allows that overlap and no other: when the answer to a COMMIT
/// is lost and the server stays down past --retry-for, the batch's lines
/// "may or may not be in the table" and go to the reject file all the same.
/// So the overlap is at most the run's `dropped_outcome_unknown`, every row
/// in the table is one the run counted as inserted or one of the overlap,
/// and every line of the reject file is one it counted as dropped. Those
/// drop messages that stderr shows (the first 100) must give the overlap's
/// lines as of unknown outcome.
#[track_caller]
fn overlap_of_unknown_outcome(
    in_table: &BTreeSet<u64>,
    rejected: &BTreeSet<u64>,
    out: &Outcome,
    file: &str,
) -> BTreeSet<u64> {
    let unknown = json_count(out, "dropped_outcome_unknown");
    let (read, inserted, dropped) = out.summary();
    let both: BTreeSet<u64> = in_table.intersection(rejected).copied().collect();
    assert!(
        both.len() as u64 <= unknown,
        "{} findings are both in the table and in the reject file, for example {:?}, \
         but only {unknown} were of unknown outcome\n{}",
        both.len(),
        both.iter().take(10).collect::<Vec<_>>(),
        out.describe()
    );
    assert_eq!(
        in_table.len() as u64,
        inserted + both.len() as u64,
        "the table holds findings the run neither inserted nor reported as of unknown \
         outcome ({} of them in the reject file too)\n{}",
        both.len(),
        out.describe()
    );
    assert_eq!(dropped, rejected.len() as u64, "{}", out.describe());
    assert_eq!(read, inserted + dropped, "{}", out.describe());
    let prefix = format!("pgsense-pg: {file}:");
    let misreported: Vec<&str> = out
        .stderr
        .lines()
        .filter(|line| {
            line.strip_prefix(&prefix)
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(number, _)| number.parse::<u64>().ok())
                .is_some_and(|marker| both.contains(&marker))
                && !line.contains("may or may not be in the table")
        })
        .take(10)
        .collect();
    assert!(
        misreported.is_empty(),
        "lines in both the table and the reject file were reported as dropped for \
         another reason than an unknown outcome: {misreported:#?}\n{}",
        out.describe()
    );
    both
}

/// Asserts that `markers` are exactly `expected`, those of `twice` twice and
/// every other once.
#[track_caller]
fn assert_each_once_but(
    markers: &[u64],
    expected: RangeInclusive<u64>,
    twice: &BTreeSet<u64>,
    what: &str,
    runs: &[&Outcome],
) {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for &marker in markers {
        *counts.entry(marker).or_default() += 1;
    }
    let wrong: Vec<(u64, usize, usize)> = expected
        .clone()
        .map(|m| (m, counts.get(&m).copied().unwrap_or(0)))
        .chain(
            counts
                .iter()
                .filter(|(m, _)| !expected.contains(m))
                .map(|(&m, &n)| (m, n)),
        )
        .map(|(m, n)| (m, n, if twice.contains(&m) { 2 } else { 1 }))
        .filter(|&(m, n, want)| n != want || !expected.contains(&m))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} findings are in {what} a wrong number of times (marker, times, expected; \
         only those of unknown outcome may be there twice), for example {:?}\n{}",
        wrong.len(),
        wrong.iter().take(10).collect::<Vec<_>>(),
        runs.iter()
            .map(|run| run.describe())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// --- Running loads ---------------------------------------------------------

/// Creates the schema and table, so that a test can count rows while a load
/// runs.
fn init(server: &PgServer, db: &str) {
    server.pgsense(db).arg("init").run().assert_code(0);
}

/// Waits, polling, until `done`, while `load` runs. Panics with the load's
/// output if it exits first, and when `timeout` passes.
#[track_caller]
fn wait_during(
    mut load: Started,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> Started {
    let deadline = Instant::now() + timeout;
    while !done() {
        if load.has_exited() {
            let out = load.wait();
            panic!("the load ended before {what}\n{}", out.describe());
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?} of waiting"
        );
        thread::sleep(Duration::from_millis(20));
    }
    load
}

/// Sends a signal (TERM, INT) to a process, with kill(1).
fn send_signal(pid: u32, signal: &str) {
    run_ok(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
        Duration::from_secs(10),
        "kill",
    );
}

/// The line number in "stopped reading FILE after line N" on stderr.
#[track_caller]
fn stopped_after(out: &Outcome) -> u64 {
    out.stderr
        .lines()
        .find(|line| line.contains("stopped reading"))
        .and_then(|line| line.rsplit_once(" after line "))
        .and_then(|(_, number)| number.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no \"stopped reading FILE after line N\" on stderr\n{}",
                out.describe()
            )
        })
}

// --- Server restarted, backends terminated ---------------------------------

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
    assert_table_holds_after(&server, &db, 1..=LARGE, Some(&out));
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
    let killed = killed.into_inner();
    assert!(
        killed >= 2,
        "only {killed} backends were terminated before the load ended: nothing was tested\n{}",
        out.describe()
    );
    assert_table_holds_after(server, &db, 1..=LARGE, Some(&out));
}

// --- Server stopped for good -----------------------------------------------

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
    let in_table = each_once_after(&table_markers(&server, &db), "the table", Some(&stopped));
    let rejected = each_once_after(&file_markers(&rejects), "the reject file", Some(&stopped));
    let unknown =
        overlap_of_unknown_outcome(&in_table, &rejected, &stopped, &input.display().to_string());

    let replay = server.pgsense(&db).arg("load").arg(&rejects).run();
    replay.assert_code(0);
    append(&input, &format!("{tail}\n"));
    let resumed = load_command()
        .arg("--reject-file")
        .arg(scratch.path().join("rejects-2.ndjson"))
        .arg(&input)
        .run();
    resumed.assert_code(0);
    assert_each_once_but(
        &table_markers(&server, &db),
        1..=LARGE + 1,
        &unknown,
        "the table",
        &[&stopped, &replay, &resumed],
    );
}

// --- Signals ---------------------------------------------------------------

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

// --- A COMMIT whose answer is lost -----------------------------------------

/// Where the proxy cuts the connection of a batch's COMMIT.
#[derive(Clone, Copy)]
enum CutAt {
    /// Right after forwarding COMMIT: the server commits, the client never
    /// hears of it.
    AnswerLost,
    /// Before forwarding COMMIT: the server rolls back.
    CommitLost,
    /// After the server's answer to COMMIT, with the FATAL error that a
    /// backend terminated just after committing sends next, both in one
    /// write: what the client gets when pg_terminate_backend or a fast
    /// shutdown lands right after a commit. The answer says committed.
    FatalAfterAnswer,
}

/// A TCP proxy on 127.0.0.1 in front of a server that cuts ([`CutAt`]),
/// once, the connection on which a batch is being committed (the first
/// simple-query COMMIT after a COPY), in both directions. Every other
/// connection, and
/// every connection after the cut, is relayed unchanged.
struct CommitCutter {
    port: u16,
    cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

/// Protocol codes of the untyped start-up requests a server answers with
/// one byte, before the real start-up message.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

impl CommitCutter {
    fn start(upstream: u16, at: CutAt) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on a listener");
        let port = listener.local_addr().expect("bound listener").port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted_cuts, accepting) = (Arc::clone(&cuts), Arc::clone(&stop));
        thread::spawn(move || {
            while !accepting.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let cuts = Arc::clone(&accepted_cuts);
                        thread::spawn(move || relay(client, upstream, at, &cuts));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return,
                }
            }
        });
        CommitCutter { port, cuts, stop }
    }

    fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Relays one client connection to the server until either side closes, or
/// until the cut.
fn relay(client: TcpStream, upstream: u16, at: CutAt, cuts: &AtomicUsize) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    // Set before COMMIT goes on: its answer, and anything after, is read
    // from the server and not relayed as it comes.
    let muted = Arc::new(AtomicBool::new(false));
    let answers = {
        let (from, to) = (server.try_clone(), client.try_clone());
        let muted = Arc::clone(&muted);
        thread::spawn(move || {
            let (Ok(mut from), Ok(mut to)) = (from, to) else {
                return;
            };
            let mut buf = vec![0; 64 * 1024];
            let mut held = Vec::new();
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if !muted.load(Ordering::SeqCst) {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    continue;
                }
                if let CutAt::FatalAfterAnswer = at {
                    held.extend_from_slice(&buf[..n]);
                    if ends_with_ready_for_query(&held) {
                        held.extend_from_slice(&fatal_termination());
                        let _ = to.write_all(&held);
                        let _ = to.shutdown(Shutdown::Both);
                        held.clear();
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        })
    };
    let _ = forward_requests(&client, &server, at, cuts, &muted);
    // A FIN, not a reset: the server reads everything sent before it (the
    // COMMIT included), then the end of the connection.
    let _ = server.shutdown(Shutdown::Write);
    let _ = answers.join();
}

/// Forwards the client's messages one at a time, cutting at a batch's
/// COMMIT when no connection was cut yet.
fn forward_requests(
    client: &TcpStream,
    server: &TcpStream,
    at: CutAt,
    cuts: &AtomicUsize,
    muted: &AtomicBool,
) -> io::Result<()> {
    let mut from = BufReader::new(client.try_clone()?);
    let mut to = server.try_clone()?;
    loop {
        let message = read_message(&mut from, false)?;
        to.write_all(&message)?;
        let code = message
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if code != Some(SSL_REQUEST) && code != Some(GSSENC_REQUEST) {
            break;
        }
    }
    let mut copied = false;
    loop {
        let message = read_message(&mut from, true)?;
        match message[0] {
            // CopyDone: a batch's rows are in; its COMMIT comes next.
            b'c' => copied = true,
            b'Q' if copied
                && is_commit(&message[5..])
                && cuts
                    .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok() =>
            {
                muted.store(true, Ordering::SeqCst);
                match at {
                    CutAt::AnswerLost => {
                        to.write_all(&message)?;
                        client.shutdown(Shutdown::Both)?;
                    }
                    CutAt::CommitLost => client.shutdown(Shutdown::Both)?,
                    // The answers thread ends the client's side.
                    CutAt::FatalAfterAnswer => to.write_all(&message)?,
                }
                return Ok(());
            }
            _ => {}
        }
        to.write_all(&message)?;
    }
}

/// One protocol message, whole: a type byte when `typed`, then a length
/// that counts itself, then the body.
fn read_message(from: &mut impl BufRead, typed: bool) -> io::Result<Vec<u8>> {
    let mut message = Vec::new();
    if typed {
        let mut tag = [0u8];
        from.read_exact(&mut tag)?;
        message.push(tag[0]);
    }
    let mut length = [0u8; 4];
    from.read_exact(&mut length)?;
    message.extend_from_slice(&length);
    let length = u32::from_be_bytes(length) as usize;
    if length < 4 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad length"));
    }
    let start = message.len();
    message.resize(start + length - 4, 0);
    from.read_exact(&mut message[start..])?;
    Ok(message)
}

/// Whether server messages end with ReadyForQuery ('Z', length 5, status).
fn ends_with_ready_for_query(messages: &[u8]) -> bool {
    messages.len() >= 6 && messages[messages.len() - 6..messages.len() - 1] == [b'Z', 0, 0, 0, 5]
}

/// The ErrorResponse a backend sends when pg_terminate_backend or a fast
/// shutdown ends it: FATAL, SQLSTATE 57P01.
fn fatal_termination() -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "57P01"),
        (b'M', "terminating connection due to administrator command"),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    message
}

/// Whether a simple-query text (NUL-terminated) is COMMIT.
fn is_commit(body: &[u8]) -> bool {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    std::str::from_utf8(text).is_ok_and(|text| {
        text.trim()
            .trim_end_matches(';')
            .trim()
            .eq_ignore_ascii_case("COMMIT")
    })
}

/// A load through a [`CommitCutter`]: the run ends 0 with every finding in
/// the table exactly once, whatever became of the cut COMMIT.
fn commit_cut(at: CutAt) {
    const COUNT: u64 = 20_000;
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", COUNT);
    let proxy = CommitCutter::start(server.port(), at);
    let out = server
        .pgsense(&db)
        .args(["--port", &proxy.port.to_string()])
        .arg("load")
        .args(["--batch-rows", "1000"])
        .arg(&input)
        .timeout(Duration::from_secs(30))
        .run();
    assert_eq!(
        proxy.cuts(),
        1,
        "the proxy never saw a batch's COMMIT: nothing was tested\n{}",
        out.describe()
    );
    out.assert_code(0)
        .assert_stderr_contains(&format!("{COUNT} read, {COUNT} inserted, 0 dropped"));
    assert_table_holds_after(server, &db, 1..=COUNT, Some(&out));
}

/// The server commits a batch and the answer never arrives: the loader asks
/// txid_status() on a new connection and does not send the batch again.
#[test]
fn a_lost_commit_answer_is_resolved_without_duplicates() {
    commit_cut(CutAt::AnswerLost);
}

/// COMMIT never reaches the server, which rolls back: the loader learns so
/// and sends the batch again.
#[test]
fn a_commit_that_never_arrives_is_resent_without_loss() {
    commit_cut(CutAt::CommitLost);
}

/// The server answers COMMIT and the backend is terminated at once, so the
/// FATAL error arrives with the answer: the batch committed, and a FATAL
/// error is not the server saying it did not (the driver may report the
/// error rather than the answer). Seen as duplicated batches when
/// pg_terminate_backend runs repeatedly during a load; made deterministic
/// here.
#[test]
fn a_fatal_error_right_after_a_commit_does_not_resend_the_batch() {
    commit_cut(CutAt::FatalAfterAnswer);
}

// --- Permanent errors ------------------------------------------------------

/// A load through a pipe as `user`, hit by `fault` once its first 100
/// findings are in, then fed 100 more: it ends with 75, saying `says`, well
/// before the default 60 s retry window. Returns what it printed.
#[track_caller]
fn permanent_fault(
    server: &PgServer,
    db: &str,
    user: &str,
    fault: impl FnOnce(),
    says: &str,
) -> Outcome {
    let scratch = Scratch::new();
    let rejects = scratch.path().join("rejects.ndjson");
    let mut load = server
        .pgsense(db)
        .args(["--username", user])
        .arg("load")
        .arg("--reject-file")
        .arg(&rejects)
        .timeout(Duration::from_secs(60))
        .spawn_piped();
    load.stdin()
        .write_all(findings(1..=100).as_bytes())
        .expect("feed");
    load.stdin().flush().expect("flush");
    let mut load = wait_during(
        load,
        "100 rows in the table",
        Duration::from_secs(20),
        || server.count(db, TABLE) == 100,
    );
    fault();
    let faulted = Instant::now();
    // The load may stop reading once it fails: a broken pipe is its right.
    let _ = load.stdin().write_all(findings(101..=200).as_bytes());
    load.close_stdin();
    let out = load.wait();
    let took = faulted.elapsed();
    out.assert_code(75).assert_stderr_contains(says);
    assert!(
        took < Duration::from_secs(10),
        "a permanent error took {took:?} to end the run: was it retried?\n{}",
        out.describe()
    );
    let (read, inserted, dropped) = out.summary();
    assert_eq!(inserted, 100, "{}", out.describe());
    assert_eq!(read, inserted + dropped, "{}", out.describe());
    let rejected = each_once(&file_markers(&rejects), "the reject file");
    assert_eq!(dropped, rejected.len() as u64, "{}", out.describe());
    assert!(
        rejected.iter().all(|m| (101..=200).contains(m)),
        "the reject file holds findings loaded before the fault: {rejected:?}"
    );
    out
}

/// INSERT revoked from the loader's role mid-run: "permission denied" ends
/// the run at once instead of being retried for a minute.
#[test]
fn insert_revoked_mid_run_is_not_retried() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let role = format!("loader_{db}");
    server.execute(
        &db,
        &format!(
            "CREATE ROLE {role} LOGIN;
             GRANT USAGE ON SCHEMA pgsense TO {role};
             GRANT INSERT ON {TABLE} TO {role};
             GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};"
        ),
    );
    let revoke = || server.execute(&db, &format!("REVOKE INSERT ON {TABLE} FROM {role}"));
    permanent_fault(server, &db, &role, revoke, "permission denied");
    assert_table_holds(server, &db, 1..=100);
    server.execute(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

/// The findings table dropped mid-run: "does not exist" is not retried.
#[test]
fn the_table_dropped_mid_run_is_not_retried() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let drop_table = || server.execute(&db, &format!("DROP TABLE {TABLE}"));
    permanent_fault(server, &db, "postgres", drop_table, "does not exist");
}

// --- The state file --------------------------------------------------------

/// `load --state-file STATE FILE`, run to its end.
fn load_with_state(server: &PgServer, db: &str, state: &Path, input: &Path) -> Outcome {
    server
        .pgsense(db)
        .arg("load")
        .arg("--state-file")
        .arg(state)
        .arg(input)
        .run()
}

/// Cron over a file the scanner keeps appending to: each run loads what
/// was appended since the last one, and nothing twice.
#[test]
fn three_runs_over_a_growing_file_load_each_finding_once() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=100));
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("100 read, 100 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=100);

    append(&input, &findings(101..=250));
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("150 read, 150 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=250);

    append(&input, &findings(251..=300));
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("50 read, 50 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=300);

    // Nothing new: nothing loaded.
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=300);
}

/// The scanner is mid-write when cron fires: the half-written last line is
/// not a bad line, it is loaded whole by the next run.
#[test]
fn an_unterminated_last_line_is_left_for_the_next_run() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let eleventh = finding(11);
    let (head, tail) = eleventh.split_at(eleventh.len() / 2);
    let input = scratch.write("findings.ndjson", findings(1..=10) + head);
    let out = load_with_state(server, &db, &state, &input);
    out.assert_code(0)
        .assert_stderr_contains("10 read, 10 inserted, 0 dropped");
    assert!(out.reject_lines().is_empty(), "{}", out.describe());
    assert_table_holds(server, &db, 1..=10);

    append(&input, &format!("{tail}\n{}", findings(12..=12)));
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("2 read, 2 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=12);
}

/// The file was rotated (renamed away, a new one in its place): the new
/// file is loaded from its start, even though it is longer than the offset
/// reached in the old one, so only its inode tells.
#[test]
fn a_rotated_file_is_loaded_from_its_start() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=50));
    load_with_state(server, &db, &state, &input).assert_code(0);
    assert_table_holds(server, &db, 1..=50);

    // The old file stays, so the new one cannot get its inode back.
    fs::rename(&input, scratch.path().join("findings.ndjson.1")).expect("rotate");
    scratch.write("findings.ndjson", findings(51..=170));
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("120 read, 120 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=170);
}

/// The file was truncated in place (same inode, shorter than the offset
/// reached): its new content is loaded from the start.
#[test]
fn a_truncated_file_is_loaded_from_its_start() {
    use std::os::unix::fs::MetadataExt;
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=100));
    let inode = fs::metadata(&input).expect("stat").ino();
    load_with_state(server, &db, &state, &input).assert_code(0);
    assert_table_holds(server, &db, 1..=100);

    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&input)
        .and_then(|mut file| file.write_all(findings(101..=120).as_bytes()))
        .expect("truncate and rewrite");
    assert_eq!(fs::metadata(&input).expect("stat").ino(), inode);
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("20 read, 20 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=120);
}

/// Two runs with the same state file at once: the second refuses (75)
/// rather than loading the same lines again, and says which file is busy.
#[test]
fn a_second_run_with_the_same_state_file_refuses() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=100));
    // Holds the first run's inserts back, so it is still loading while the
    // second one starts.
    let mut blocker = server.client(&db);
    blocker
        .batch_execute(&format!("BEGIN; LOCK TABLE {TABLE} IN SHARE MODE"))
        .expect("lock the table");
    let first = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg(&input)
        .spawn();
    let first = wait_during(
        first,
        "the first run waiting on the table lock",
        Duration::from_secs(20),
        || {
            server.query_one(
                &db,
                "select count(*) from pg_stat_activity where datname = current_database() \
                 and application_name = 'pgsense-pg' and wait_event_type = 'Lock'",
            ) != Some("0".into())
        },
    );
    let second = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg(&input)
        .timeout(Duration::from_secs(15))
        .run();
    blocker.batch_execute("COMMIT").expect("unlock the table");
    second
        .assert_code(75)
        .assert_stderr_contains(&state.display().to_string());
    first
        .wait()
        .assert_code(0)
        .assert_stderr_contains("100 read, 100 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=100);
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=100);
}

/// A state-file run stopped by SIGTERM records only what it committed: the
/// next run loads the rest, nothing twice, nothing lost.
#[test]
fn a_run_stopped_by_sigterm_is_resumed_from_the_state_file() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let load = server
        .pgsense(&db)
        .arg("load")
        .args(["--batch-rows", &BATCH_ROWS.to_string()])
        .arg("--state-file")
        .arg(&state)
        .arg(&input)
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(30), || {
        server.count(&db, TABLE) > 0
    });
    send_signal(load.id(), "TERM");
    let first = load.wait();
    first.assert_code(143);
    let (_, inserted, _) = first.summary();
    let second = load_with_state(server, &db, &state, &input);
    second.assert_code(0);
    let (_, resumed, _) = second.summary();
    assert_eq!(
        inserted + resumed,
        LARGE,
        "first run:\n{}\nsecond run:\n{}",
        first.describe(),
        second.describe()
    );
    assert_table_holds_after(server, &db, 1..=LARGE, Some(&second));
}

// --- The reject file -------------------------------------------------------

/// The lines of a reject file (or of what it must hold), terminators kept,
/// sorted: lines refused by the server are appended by the writers, so
/// their order among the others is not part of the contract.
fn sorted_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    lines.sort();
    lines
}

/// A line, readable in a failure message even when long.
fn show(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    if text.len() <= 120 {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(60).collect();
    let tail: String = text
        .chars()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("({} bytes) {head:?} ... {tail:?}", line.len())
}

/// Asserts that the reject file holds exactly `expected`, byte for byte.
#[track_caller]
fn assert_reject_file(path: &Path, expected: &[u8]) {
    let actual = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (actual, expected) = (sorted_lines(&actual), sorted_lines(expected));
    if actual == expected {
        return;
    }
    let only_in = |these: &[Vec<u8>], those: &[Vec<u8>]| {
        let mut those = those.to_vec();
        let mut list = String::new();
        for line in these {
            match those.iter().position(|l| l == line) {
                Some(at) => {
                    those.swap_remove(at);
                }
                None => list.push_str(&format!("  {}\n", show(line))),
            }
        }
        list
    };
    panic!(
        "{} does not hold exactly the dropped lines: {} lines, {} expected.\n\
         --- lines it should not hold ---\n{}--- lines it lacks ---\n{}",
        path.display(),
        actual.len(),
        expected.len(),
        only_in(&actual, &expected),
        only_in(&expected, &actual)
    );
}

/// The reasons given on stderr for dropped lines, without FILE:LINE,
/// sorted.
fn reasons(out: &Outcome) -> Vec<String> {
    let mut reasons: Vec<String> = out
        .reject_lines()
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("pgsense-pg: ")?;
            let (_, rest) = rest.split_once(':')?;
            let (_, reason) = rest.split_once(": ")?;
            Some(reason.to_owned())
        })
        .collect();
    reasons.sort();
    reasons
}

/// Every kind of dropped line lands in the reject file exactly as read (a
/// CRLF line keeps its CR, a line over --max-line-bytes is kept whole, a
/// row the server refuses too), and replaying the file drops the same
/// lines for the same reasons.
#[test]
fn the_reject_file_holds_each_dropped_line_as_read_and_replays_the_same() {
    enum Kind {
        Good(u64),
        Blank,
        Bad,
    }
    use Kind::{Bad, Blank, Good};
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    server.execute(
        &db,
        &format!(
            "ALTER TABLE {TABLE} ADD CONSTRAINT no_refusals CHECK (masked_sample <> 'refuse-me')"
        ),
    );
    let lines: Vec<(Vec<u8>, Kind)> = vec![
        ((finding(1) + "\n").into(), Good(1)),
        (b"{\"database\": \"x\", \n".to_vec(), Bad),
        (b"{\"not\":\"a finding\"}\r\n".to_vec(), Bad),
        ((finding(4) + "\r\n").into(), Good(4)),
        (
            (finding_with_sample(5, &"x".repeat(3000)) + "\r\n").into(),
            Bad,
        ),
        (b"\n".to_vec(), Blank),
        (b"{\"database\":\"\xff\xfe\"}\n".to_vec(), Bad),
        ((finding_with_sample(7, "refuse-me") + "\n").into(), Bad),
        (b"   \r\n".to_vec(), Blank),
        ((finding_with_sample(9, "a\\u0000b") + "\n").into(), Bad),
        ((finding(10) + "\n").into(), Good(10)),
        (b"not json".to_vec(), Bad),
    ];
    let input: Vec<u8> = lines.iter().flat_map(|(l, _)| l.clone()).collect();
    // The last line has no newline: the reject file gets one, so that lines
    // appended later stay lines of their own.
    let mut expected: Vec<u8> = lines
        .iter()
        .filter(|(_, kind)| matches!(kind, Bad))
        .flat_map(|(l, _)| l.clone())
        .collect();
    expected.push(b'\n');
    let bad = lines.iter().filter(|(_, k)| matches!(k, Bad)).count() as u64;
    let read = lines.iter().filter(|(_, k)| !matches!(k, Blank)).count() as u64;

    let scratch = Scratch::new();
    let input = scratch.write("findings.ndjson", input);
    let rejects = scratch.path().join("rejects.ndjson");
    let out = server
        .pgsense(&db)
        .arg("load")
        .args(["--max-line-bytes", "1000"])
        .arg("--reject-file")
        .arg(&rejects)
        .arg(&input)
        .run();
    out.assert_code(65).assert_stderr_contains(&format!(
        "{read} read, {} inserted, {bad} dropped",
        read - bad
    ));
    assert_reject_file(&rejects, &expected);
    let good: Vec<u64> = lines
        .iter()
        .filter_map(|(_, kind)| match kind {
            Good(marker) => Some(*marker),
            _ => None,
        })
        .collect();
    assert_eq!(table_markers(server, &db).len(), good.len());
    let in_table = each_once(&table_markers(server, &db), "the table");
    assert_eq!(in_table, good.into_iter().collect());

    let replayed = scratch.path().join("rejects-again.ndjson");
    let replay = server
        .pgsense(&db)
        .arg("load")
        .args(["--max-line-bytes", "1000"])
        .arg("--reject-file")
        .arg(&replayed)
        .arg(&rejects)
        .run();
    replay
        .assert_code(65)
        .assert_stderr_contains(&format!("{bad} read, 0 inserted, {bad} dropped"));
    assert_reject_file(&replayed, &expected);
    assert_eq!(reasons(&replay), reasons(&out), "{}", replay.describe());
    assert_eq!(table_markers(server, &db).len(), in_table.len());
}

/// A line over --max-line-bytes goes to the reject file piece by piece as
/// it is read; lines the writers drop meanwhile (here, rows a trigger
/// refuses slowly) must not land between its pieces.
#[test]
fn a_long_line_in_the_reject_file_is_not_split_by_other_dropped_lines() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    server.execute(
        &db,
        "CREATE FUNCTION pgsense.slow_refusal() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF new.masked_sample = 'refuse-me' THEN
                 PERFORM pg_sleep(0.02);
                 RAISE EXCEPTION 'refused on purpose';
             END IF;
             RETURN new;
         END $$;
         CREATE TRIGGER slow_refusal BEFORE INSERT ON pgsense.findings
         FOR EACH ROW EXECUTE FUNCTION pgsense.slow_refusal();",
    );
    let scratch = Scratch::new();
    let rejects = scratch.path().join("rejects.ndjson");
    let mut load = server
        .pgsense(&db)
        .arg("load")
        .args(["--max-line-bytes", "1000"])
        .arg("--reject-file")
        .arg(&rejects)
        .timeout(Duration::from_secs(30))
        .spawn_piped();
    let refused: String = (1..=40)
        .map(|m| finding_with_sample(m, "refuse-me") + "\n")
        .collect();
    load.stdin().write_all(refused.as_bytes()).expect("feed");
    load.stdin().flush().expect("flush");
    // Read and handed to a writer, which now refuses them one by one.
    thread::sleep(Duration::from_millis(200));
    let mut long = String::from("{\"database\":\"");
    load.stdin().write_all(long.as_bytes()).expect("feed");
    let piece = "x".repeat(4096);
    for _ in 0..40 {
        load.stdin().write_all(piece.as_bytes()).expect("feed");
        load.stdin().flush().expect("flush");
        long.push_str(&piece);
        thread::sleep(Duration::from_millis(25));
    }
    long.push_str("\"}\n");
    load.stdin().write_all(b"\"}\n").expect("feed");
    load.stdin()
        .write_all((finding(42) + "\n").as_bytes())
        .expect("feed");
    load.close_stdin();
    let out = load.wait();
    out.assert_code(65)
        .assert_stderr_contains("42 read, 1 inserted, 41 dropped");
    assert_reject_file(&rejects, (refused + &long).as_bytes());
}

/// Rotation with the renamed file passed too: files are known by device
/// and inode, so the old one resumes where it stopped and the lines added
/// to it just before the rotation are loaded, none twice.
#[test]
fn a_rotated_file_passed_too_gives_the_lines_added_before_the_rotation() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=50));
    load_with_state(server, &db, &state, &input).assert_code(0);

    OpenOptions::new()
        .append(true)
        .open(&input)
        .and_then(|mut file| file.write_all(findings(51..=60).as_bytes()))
        .expect("append before the rotation");
    let rotated = scratch.path().join("findings.ndjson.1");
    fs::rename(&input, &rotated).expect("rotate");
    scratch.write("findings.ndjson", findings(61..=100));
    server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg(&rotated)
        .arg(&input)
        .run()
        .assert_code(0)
        .assert_stderr_contains("50 read, 50 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=100);
}

/// A reject file that is also an input would grow while being read: the
/// run is refused before anything is loaded, and the file is left alone.
#[test]
fn a_reject_file_that_is_also_an_input_is_refused() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let text = format!("not json\n{}", findings(1..=3));
    let input = scratch.write("rejects.ndjson", &text);
    let out = server
        .pgsense(&db)
        .arg("load")
        .arg("--reject-file")
        .arg(&input)
        .arg(&input)
        .run();
    out.assert_code(2)
        .assert_stderr_contains("the reject file is also an input");
    assert_eq!(fs::read_to_string(&input).expect("read"), text);
}

/// A COPY waiting on a lock held elsewhere does not hold a SIGTERM up: the
/// statement is cancelled a few seconds after the signal, its batch rolls
/// back and is reported as interrupted.
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
    let input = scratch.write("findings.ndjson", findings(1..=20));
    let load = server.pgsense(&db).arg("load").arg(&input).spawn();
    let load = wait_during(
        load,
        "a COPY waiting on the lock",
        Duration::from_secs(20),
        || {
            server.count(
            &db,
            "pg_stat_activity where application_name = 'pgsense-pg' and wait_event_type = 'Lock'",
        ) > 0
        },
    );
    let signalled = Instant::now();
    send_signal(load.id(), "TERM");
    let out = load.wait();
    let took = signalled.elapsed();
    lock.rollback().expect("release the lock");
    out.assert_code(143)
        .assert_stderr_contains("not inserted: interrupted");
    assert!(
        took < Duration::from_secs(10),
        "the run ended {took:?} after SIGTERM\n{}",
        out.describe()
    );
    assert_eq!(server.count(&db, TABLE), 0, "{}", out.describe());
}

/// A database that accepts no writes (a standby, default_transaction_read_only)
/// is named at startup, before anything is read.
#[test]
fn a_read_only_database_is_named_at_startup() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    server.execute(
        &db,
        &format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
    );
    let out = server.pgsense(&db).arg("load").stdin(findings(1..=3)).run();
    out.assert_code(69).assert_stderr_contains("read-only");
    server.execute(
        "postgres",
        &format!("ALTER DATABASE {db} SET default_transaction_read_only = off"),
    );
    assert_eq!(server.count(&db, TABLE), 0);
}

/// A reject file that cannot be written (a full disk) fails the run, and
/// the state file is not moved past the dropped lines that never reached it:
/// the next run reads them again instead of losing them.
#[test]
fn a_full_reject_file_fails_the_run_and_holds_the_state_back() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", format!("not json\n{}", findings(1..=3)));
    let out = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .args(["--reject-file", "/dev/full"])
        .arg(&input)
        .run();
    out.assert_code(1)
        .assert_stderr_contains("cannot write reject file /dev/full");
    let offset = fs::read_to_string(&state)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| {
            json["files"]
                .as_object()?
                .values()
                .map(|mark| mark["offset"].as_u64())
                .next()?
        })
        .unwrap_or(0);
    assert_eq!(
        offset,
        0,
        "the state moved past a dropped line the reject file does not hold\n{}",
        out.describe()
    );
}
