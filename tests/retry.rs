//! `--retry-for` is the whole budget (issue 10): from the first failure of a
//! batch to giving up, connects included, with a warning at the first
//! failure and then every few seconds. Tests that stop a server take a
//! private one.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::markers::{finding, findings};
use crate::support::run::{Outcome, init};
use crate::support::wait::wait_during;
use crate::support::{TABLE, private};

/// The --connect-timeout of the runs below: the budget may overrun
/// --retry-for by one connect at most.
const CONNECT_TIMEOUT: u64 = 2;

/// A load from a pipe that stays open (as `tail -F | pgsense-pg load`),
/// with the server stopped for good between two batches; then one more
/// line, whose batch is the first to fail. Returns what the run printed
/// and how long after that line was fed it ended on its own.
fn stopped_under_an_open_pipe(retry_for: u64) -> (Outcome, Duration) {
    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let mut load = server
        .pgsense(&db)
        .args(["--connect-timeout", &CONNECT_TIMEOUT.to_string()])
        .arg("load")
        .args(["--retry-for", &retry_for.to_string()])
        .timeout(Duration::from_secs(120))
        .spawn_piped();
    load.stdin()
        .write_all(findings(1..=10).as_bytes())
        .expect("feed");
    load.stdin().flush().expect("flush");
    let mut load = wait_during(
        load,
        "the first batch in the table",
        Duration::from_secs(30),
        || server.count(&db, TABLE) == 10,
    );
    server.stop();
    // Taken before the line is written: the first failure comes after it.
    let fed = Instant::now();
    load.stdin()
        .write_all((finding(11) + "\n").as_bytes())
        .expect("feed a line after the stop");
    load.stdin().flush().expect("flush");
    // Not load.wait(), which closes stdin: the run must end with its input
    // still open.
    let deadline = fed + Duration::from_secs(60);
    while !load.has_exited() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let took = fed.elapsed();
    (load.wait(), took)
}

/// `--retry-for 3` with the server stopped: exit 75 no sooner than 3 s after
/// the first failure, and no later than one connect timeout after that
/// (plus a margin for a busy machine: before issue 10 it took 20 s), having
/// said once that it retries.
#[test]
fn retry_for_is_the_whole_budget_from_the_first_failure_to_giving_up() {
    const RETRY_FOR: u64 = 3;
    let (out, took) = stopped_under_an_open_pipe(RETRY_FOR);
    out.assert_code(75)
        .assert_stderr_contains("database failure")
        .assert_stderr_contains(&format!("after retrying for {RETRY_FOR} s"));
    assert!(
        took >= Duration::from_secs(RETRY_FOR),
        "gave up {took:?} after the first failure, before --retry-for {RETRY_FOR} s\n{}",
        out.describe()
    );
    let bound = Duration::from_secs(RETRY_FOR + CONNECT_TIMEOUT + 10);
    assert!(
        took < bound,
        "gave up {took:?} after the first failure, more than {bound:?} with \
         --retry-for {RETRY_FOR} and --connect-timeout {CONNECT_TIMEOUT}\n{}",
        out.describe()
    );
    // Said at the first failure, then at most every 5 s: once in 3 s.
    let said = out
        .stderr
        .lines()
        .filter(|line| line.contains("retrying for up to"))
        .count();
    assert_eq!(
        said,
        1,
        "expected one \"retrying for up to\" warning in {RETRY_FOR} s\n{}",
        out.describe()
    );
}

/// `--retry-for 0` disables retries: one attempt, then exit 75, well under
/// the 10 s it took before issue 10, without a word about retrying.
#[test]
fn retry_for_0_gives_up_after_one_attempt() {
    let (out, took) = stopped_under_an_open_pipe(0);
    out.assert_code(75)
        .assert_stderr_contains("database failure");
    let bound = Duration::from_secs(CONNECT_TIMEOUT + 5);
    assert!(
        took < bound,
        "gave up {took:?} after the first failure with --retry-for 0, more than {bound:?}\n{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("retrying"),
        "--retry-for 0 retries nothing\n{}",
        out.describe()
    );
}
