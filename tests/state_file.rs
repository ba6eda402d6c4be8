//! `--state-file` (issue 4, "Tests"): cron over a file that keeps growing
//! loads each finding once, across half-written lines, rotation,
//! truncation, a concurrent run and a run stopped by SIGTERM.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::markers::{
    BATCH_ROWS, HalfLineWriter, LARGE, append, assert_table_holds, assert_table_holds_after,
    each_once_after, finding, findings, table_markers, write_findings,
};
use crate::support::process::{read_offset, send_signal};
use crate::support::run::{Outcome, Started, init};
use crate::support::wait::wait_during;
use crate::support::{PgServer, Scratch, TABLE, shared};

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

/// Holds a SHARE lock on the table (until COMMIT on the client returned),
/// so that a run's inserts wait.
fn lock_table(server: &PgServer, db: &str) -> postgres::Client {
    let mut blocker = server.client(db);
    blocker
        .batch_execute(&format!("BEGIN; LOCK TABLE {TABLE} IN SHARE MODE"))
        .expect("lock the table");
    blocker
}

/// Waits until the run `load` waits on the lock [`lock_table`] holds.
fn waiting_on_the_lock(server: &PgServer, db: &str, load: Started) -> Started {
    wait_during(
        load,
        "the run waiting on the table lock",
        Duration::from_secs(20),
        || {
            server.query_one(
                db,
                "select count(*) from pg_stat_activity where datname = current_database() \
                 and application_name = 'pgsense-pg' and wait_event_type = 'Lock'",
            ) != Some("0".into())
        },
    )
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

/// The same with invalid lines among the findings: the invalid lines of the
/// batches not committed when the run stopped stay in the file with them,
/// and are counted as left, not as rejected, by the stopped run: over both
/// runs each invalid line is counted once. Before, those were counted by
/// both runs.
#[test]
fn invalid_lines_left_in_the_file_by_a_stopped_run_are_counted_once() {
    use crate::support::report::json_summary;
    const LINES: u64 = 200_000;
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    // Every 7th line is invalid, and every 50th over --max-line-bytes.
    let invalid = |n: u64| n.is_multiple_of(7) || n % 50 == 25;
    let text: String = (1..=LINES)
        .map(|n| match (n.is_multiple_of(7), n % 50 == 25) {
            (true, _) => format!("{{\"bad\":{n}}}\n"),
            (_, true) => format!("{{\"long\":\"{}\"}}\n", "x".repeat(2000)),
            _ => finding(n) + "\n",
        })
        .collect();
    let input = scratch.write("mixed.ndjson", text);
    let load = || {
        server
            .pgsense(&db)
            .arg("load")
            .args(["--batch-rows", &BATCH_ROWS.to_string(), "--summary", "json"])
            .args(["--max-line-bytes", "1000", "--state-file"])
            .arg(&state)
            .arg(&input)
    };
    let started = wait_during(
        load().spawn(),
        "rows in the table",
        Duration::from_secs(30),
        || server.count(&db, TABLE) > 0,
    );
    send_signal(started.id(), "TERM");
    let first = started.wait();
    first.assert_code(143);
    let second = load().run();
    let count = |out: &Outcome, field: &str| {
        json_summary(out)[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}\n{}", out.describe()))
    };
    for out in [&first, &second] {
        assert_eq!(
            count(out, "lines_read"),
            count(out, "inserted") + count(out, "rejected_invalid") + count(out, "left_in_files"),
            "{}",
            out.describe()
        );
    }
    let bad = (1..=LINES).filter(|n| invalid(*n)).count() as u64;
    assert_eq!(
        count(&first, "rejected_invalid") + count(&second, "rejected_invalid"),
        bad,
        "first run:\n{}\nsecond run:\n{}",
        first.describe(),
        second.describe()
    );
    assert_table_holds_after(
        server,
        &db,
        (1..=LINES).filter(|n| !invalid(*n)),
        Some(&second),
    );
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
        .assert_stderr_contains("10 read, 10 inserted, 0 dropped")
        .assert_stderr_contains(&format!(
            "findings.ndjson:11: the file ends in this line, which has no newline yet ({} bytes): \
             left for the next run",
            head.len()
        ));
    assert!(out.reject_lines().is_empty(), "{}", out.describe());
    assert_table_holds(server, &db, 1..=10);

    append(&input, &format!("{tail}\n{}", findings(12..=12)));
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("2 read, 2 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=12);
}

/// A buffered writer keeps ending the file mid-line, finishing each line
/// with the next write (every 0.3 s): the run still ends, within seconds,
/// with the lines it found whole loaded; it does not follow the writer
/// for as long as it writes, holding them.
#[test]
fn a_file_a_writer_keeps_ending_mid_line_does_not_keep_the_run() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.path().join("findings.ndjson");
    let writer = HalfLineWriter::start(&input, 10);
    let out = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg(&input)
        .timeout(Duration::from_secs(60))
        .run();
    drop(writer);
    out.assert_code(0);
    let (read, inserted, _) = out.summary();
    assert!(
        (10..100).contains(&read) && inserted == read,
        "the run followed the writer\n{}",
        out.describe()
    );
    assert_table_holds(server, &db, 1..=read);
}

/// The state file cannot be rewritten any more in the middle of a run
/// (here a directory took its temporary file's name) while its journal
/// still can: the journal would grow without end, every entry of it for a
/// later run to settle. After 1000 batches so recorded, nothing more is
/// committed and the run fails saying why; once the state file can be
/// written again, the same command loads the rest, each line once. Before,
/// the run went on for good, saying only that each rewrite failed.
#[test]
fn a_state_file_that_cannot_be_rewritten_stops_the_run_after_a_while() {
    const LINES: u64 = 6_000;
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", LINES);
    let state = scratch.path().join("state");
    let load = || {
        server
            .pgsense(&db)
            .arg("load")
            .args(["--batch-rows", "1", "--state-file"])
            .arg(&state)
            .arg(&input)
            .timeout(Duration::from_secs(120))
    };
    let started = wait_during(
        load().spawn(),
        "the first batches committed",
        Duration::from_secs(30),
        || server.count(&db, TABLE) > 0,
    );
    let blocker = scratch.path().join("state.tmp");
    fs::create_dir(&blocker).expect("take the temporary file's name");
    let stuck = started.wait();
    stuck
        .assert_code(1)
        .assert_stderr_contains("cannot write state file")
        .assert_stderr_contains("nothing more is, until it can be rewritten");
    let committed = server.count(&db, TABLE) as u64;
    assert!(
        committed < LINES,
        "the run loaded everything: nothing was tested\n{}",
        stuck.describe()
    );
    fs::remove_dir(&blocker).expect("free the name");
    let rerun = load().run();
    rerun.assert_code(0);
    assert_table_holds_after(server, &db, 1..=LINES, Some(&rerun));
}

/// The same for a line over --max-line-bytes: half-written, it is left,
/// and the next run rejects it whole, once, in the reject file too. Before,
/// its first half went to the reject file and its second half was
/// rejected again by the next run as a line of its own.
#[test]
fn an_unterminated_line_too_long_is_left_for_the_next_run_and_rejected_whole() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let rejects = scratch.path().join("rejects.ndjson");
    let long = format!("{{\"database\":\"{}\"}}", "x".repeat(3000));
    let (head, tail) = long.split_at(2000);
    let input = scratch.write("findings.ndjson", findings(1..=10) + head);
    let run = || {
        server
            .pgsense(&db)
            .arg("load")
            .args(["--max-line-bytes", "1000", "--state-file"])
            .arg(&state)
            .arg("--reject-file")
            .arg(&rejects)
            .arg(&input)
            .run()
    };
    run()
        .assert_code(0)
        .assert_stderr_contains("10 read, 10 inserted, 0 dropped");
    assert_eq!(
        fs::read(&rejects).unwrap_or_default(),
        b"",
        "nothing rejected yet"
    );

    append(&input, &format!("{tail}\n{}", findings(12..=12)));
    let out = run();
    out.assert_code(65)
        .assert_stderr_contains("2 read, 1 inserted, 1 dropped")
        .assert_stderr_contains(&format!("findings.ndjson:11: line of {} bytes", long.len()));
    assert_eq!(
        fs::read_to_string(&rejects).expect("the reject file"),
        long + "\n",
        "{}",
        out.describe()
    );
    assert_table_holds(server, &db, (1..=10).chain(12..=12));
}

/// logrotate's copytruncate while a run waits at a half-written last line,
/// and the scanner writing on past the point read (issue 13's session): the
/// run stops reading at the truncation instead of taking the new lines for
/// the old file's. Before, the new bytes were glued onto the half line and
/// the new lines were loaded twice, by this run and by the next.
#[test]
fn a_copytruncate_during_a_run_loads_each_finding_once() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let eleventh = finding(11);
    let input = scratch.write(
        "findings.ndjson",
        findings(1..=10) + &eleventh[..eleventh.len() / 2],
    );
    let length = fs::metadata(&input).expect("the input").len();
    let load = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg(&input)
        .spawn();
    // Read to its end, the run waits up to a second for the half line's end.
    let pid = load.id();
    let load = wait_during(
        load,
        "the whole input read",
        Duration::from_secs(20),
        || read_offset(pid, &input) == Some(length),
    );
    let copy = scratch.path().join("findings.ndjson.1");
    fs::copy(&input, &copy).expect("copy");
    OpenOptions::new()
        .write(true)
        .open(&input)
        .and_then(|file| file.set_len(0))
        .expect("truncate");
    // The scanner's next lines, past where the run is.
    append(&input, &findings(12..=40));
    let out = load.wait();
    out.assert_code(0)
        .assert_stderr_contains("10 read, 10 inserted, 0 dropped")
        .assert_stderr_contains("truncated or rewritten while it was read");
    assert_table_holds_after(server, &db, 1..=10, Some(&out));

    let out = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg(&copy)
        .arg(&input)
        .run();
    // The copy's half line never got its end: it stays for a later run.
    out.assert_code(0)
        .assert_stderr_contains("29 read, 29 inserted, 0 dropped");
    let in_table = each_once_after(&table_markers(server, &db), "the table", Some(&out));
    let expected: std::collections::BTreeSet<u64> = (1..=10).chain(12..=40).collect();
    assert_eq!(in_table, expected, "{}", out.describe());
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

/// Cron over a glob (`findings.ndjson*`) while logrotate runs: a file the
/// shell named is renamed before the run opens it. Known to the state file
/// by that name, it is skipped with a warning, and its lines are loaded
/// under its new name, from where it was left; a gone file never loaded is
/// still an error.
#[test]
fn a_file_rotated_away_between_the_glob_and_the_run_is_skipped() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=50));
    load_with_state(server, &db, &state, &input).assert_code(0);
    append(&input, &findings(51..=80));
    let rotated = scratch.path().join("findings.ndjson.1");
    fs::rename(&input, &rotated).expect("rotate");
    let out = server
        .pgsense(&db)
        .args(["load", "--state-file"])
        .arg(&state)
        .arg(&input)
        .arg(&rotated)
        .run();
    out.assert_code(0)
        .assert_stderr_contains("gone since it was named")
        .assert_stderr_contains("30 read, 30 inserted, 0 dropped");
    assert_table_holds_after(server, &db, 1..=80, Some(&out));
    let never = scratch.path().join("never.ndjson");
    server
        .pgsense(&db)
        .args(["load", "--state-file"])
        .arg(&state)
        .arg(&never)
        .run()
        .assert_code(66);
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
    second_run_refuses(|state| state.to_owned());
}

/// The same through a symbolic link to the state file: the lock is the
/// file's, whatever name leads to it, and the link stays a link.
#[test]
fn a_second_run_through_a_link_to_the_state_file_refuses() {
    second_run_refuses(|state| {
        let link = state.with_file_name("link.state");
        std::os::unix::fs::symlink(state.file_name().expect("a name"), &link).expect("link");
        link
    });
}

/// Starts a run with a state file, then, while it loads, a second one with
/// the state file `second` names: it refuses; the first loads everything.
fn second_run_refuses(second: impl Fn(&Path) -> PathBuf) {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let other = second(&state);
    let input = scratch.write("findings.ndjson", findings(1..=100));
    // Holds the first run's inserts back, so it is still loading while the
    // second one starts.
    let mut blocker = lock_table(server, &db);
    let first = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg(&input)
        .spawn();
    let first = waiting_on_the_lock(server, &db, first);
    let second = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&other)
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
    load_with_state(server, &db, &other, &input)
        .assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted, 0 dropped");
    assert_table_holds(server, &db, 1..=100);
    let kind = fs::symlink_metadata(&other).expect("stat").file_type();
    assert_eq!(kind.is_symlink(), other != state, "{}", other.display());
}

/// A state-file run stopped by SIGTERM records only what it committed: the
/// next run loads the rest, nothing twice, nothing lost. What the stop kept
/// out is not called dropped: it is left in the file for the next run.
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
    let (read, inserted, dropped) = first.summary();
    assert_eq!(dropped, 0, "{}", first.describe());
    assert!(
        !first.stderr.contains("not inserted"),
        "{}",
        first.describe()
    );
    if read > inserted {
        first.assert_stderr_contains(&format!(
            "; {} left in their files for the next run",
            read - inserted
        ));
    }
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

/// With a state file and a reject file too (the usual cron setup), what a
/// stop kept out of the table stays in the file for the next run, as
/// after a kill: the reject file gets no good line, and the same command
/// loads every finding once.
#[test]
fn a_stop_with_a_reject_file_leaves_the_lines_kept_out_in_the_file() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let rejects = scratch.path().join("rejects.jsonl");
    let input = write_findings(&scratch, "findings.jsonl", 300);
    let load = |server: &PgServer| {
        server
            .pgsense(&db)
            .arg("load")
            .args(["--batch-rows", "50"])
            .arg("--state-file")
            .arg(&state)
            .arg("--reject-file")
            .arg(&rejects)
            .arg(&input)
    };
    let mut blocker = lock_table(server, &db);
    let first = waiting_on_the_lock(server, &db, load(server).spawn());
    send_signal(first.id(), "TERM");
    let first = first.wait();
    blocker.batch_execute("COMMIT").expect("unlock the table");
    first
        .assert_code(143)
        .assert_stderr_contains("left in their files for the next run");
    let diverted = fs::read_to_string(&rejects).unwrap_or_default();
    assert!(
        diverted.is_empty(),
        "good lines went to the reject file on a stop:\n{diverted}\n{}",
        first.describe()
    );
    let second = load(server).run();
    second.assert_code(0);
    assert_table_holds_after(server, &db, 1..=300, Some(&second));
    assert_eq!(fs::read_to_string(&rejects).unwrap_or_default(), "");
}

/// Standard input keeps nothing for a next run: with a state file and no
/// reject file, the lines a SIGTERM kept out of the table are dropped as
/// interrupted, not said to be left in their files.
#[test]
fn interrupted_standard_input_is_dropped_not_left() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let mut blocker = lock_table(server, &db);
    let load = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .arg("-")
        .stdin(findings(1..=20))
        .spawn();
    let load = waiting_on_the_lock(server, &db, load);
    send_signal(load.id(), "TERM");
    let out = load.wait();
    blocker.batch_execute("COMMIT").expect("unlock the table");
    out.assert_code(143)
        .assert_stderr_contains("20 read, 0 inserted, 20 dropped")
        .assert_stderr_contains("20 not loaded when interrupted");
    assert!(
        !out.stderr.contains("left in their files"),
        "{}",
        out.describe()
    );
}

/// A damaged journal is a failure (1), as a damaged state file is, not an
/// output that cannot be created (73); nothing is loaded.
#[test]
fn a_damaged_journal_fails_the_run_with_1_naming_it() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=3));
    let journal = scratch.write("pgsense-pg.state.journal", "zzz\n");
    load_with_state(server, &db, &state, &input)
        .assert_code(1)
        .assert_stderr_contains(&format!("state journal {} is damaged", journal.display()));
    assert_eq!(server.count(&db, TABLE), 0);
}

/// A file given as standard input is not tracked: the run says so, and
/// how to have it tracked, since every run would load it again.
#[test]
fn a_file_given_as_standard_input_is_said_to_be_loaded_again_by_every_run() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=10));
    let load = || {
        server
            .pgsense(&db)
            .arg("load")
            .arg("--state-file")
            .arg(&state)
            .stdin_file(File::open(&input).expect("open the input"))
            .run()
    };
    for _ in 0..2 {
        load()
            .assert_code(0)
            .assert_stderr_contains("standard input is a file, and --state-file does not track")
            .assert_stderr_contains("name the file instead");
    }
    assert_eq!(server.count(&db, TABLE), 20, "loaded by each run");
    let piped = server
        .pgsense(&db)
        .arg("load")
        .arg("--state-file")
        .arg(&state)
        .stdin(findings(11..=12))
        .run();
    piped.assert_code(0);
    assert!(
        !piped.stderr.contains("standard input is a file"),
        "{}",
        piped.describe()
    );
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

/// The new file rotation creates is loaded whole even when it starts with
/// the very lines the renamed one held (findings can repeat): under the
/// name another file was loaded under, it is that name's new file, not a
/// copy of the old one to be resumed where it stopped.
#[test]
fn a_new_file_starting_with_the_rotated_ones_lines_is_loaded_whole() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.write("findings.ndjson", findings(1..=5));
    load_with_state(server, &db, &state, &input).assert_code(0);
    let rotated = scratch.path().join("findings.ndjson.1");
    fs::rename(&input, &rotated).expect("rotate");
    scratch.write("findings.ndjson", findings(1..=5) + &findings(6..=8));
    for (files, read) in [(vec![&rotated, &input], 8), (vec![&input], 0)] {
        server
            .pgsense(&db)
            .arg("load")
            .arg("--state-file")
            .arg(&state)
            .args(files)
            .run()
            .assert_code(0)
            .assert_stderr_contains(&format!("{read} read, {read} inserted, 0 dropped"));
    }
    let counts = server.query_one(
        &db,
        &format!("select count(*) || ' ' || count(distinct lsn) from {TABLE}"),
    );
    assert_eq!(counts.as_deref(), Some("13 8"), "1-5 twice, 6-8 once");
}

/// A file shipped by rsync, scp or cp then mv is replaced under its name
/// by a new file (a new inode) holding what was loaded and more: each run
/// loads only the lines added. A replacement holding less than was loaded
/// is a new file, loaded whole.
#[test]
fn a_file_replaced_by_a_longer_copy_loads_only_the_lines_added() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense-pg.state");
    let input = scratch.path().join("findings.ndjson");
    let replace = |lines: RangeInclusive<u64>| {
        let shipped = scratch.write("findings.ndjson.tmp", findings(lines));
        fs::rename(shipped, &input).expect("replace");
    };
    for (lines, read) in [(1..=5, 5), (1..=9, 4), (1..=9, 0), (1..=12, 3)] {
        replace(lines);
        load_with_state(server, &db, &state, &input)
            .assert_code(0)
            .assert_stderr_contains(&format!("{read} read, {read} inserted, 0 dropped"));
    }
    assert_table_holds(server, &db, 1..=12);
    replace(1..=4);
    load_with_state(server, &db, &state, &input)
        .assert_code(0)
        .assert_stderr_contains("loading")
        .assert_stderr_contains("4 read, 4 inserted, 0 dropped");
}

/// The state file's disk fills up mid-run: the journal cannot record a
/// batch, so that batch does not commit, nor any after it; the run fails
/// (exit 1), and once there is room the same command loads the rest, each
/// finding once (issue 10).
#[test]
fn a_full_disk_under_the_state_file_commits_nothing_unrecorded() {
    const LINES: u64 = 30_000;
    let Some(disk) = crate::support::tmpfs::Tmpfs::mount("1m") else {
        return;
    };
    // Room for some hundred journal entries and a state file or two.
    let filler = disk.path().join("filler");
    fs::write(&filler, vec![0u8; (1 << 20) - (48 << 10)]).expect("fill the tmpfs");
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", LINES);
    let state = disk.path().join("state");
    let load = || {
        server
            .pgsense(&db)
            .arg("load")
            .args(["--batch-rows", "50"])
            .arg("--state-file")
            .arg(&state)
            .arg(&input)
            .run()
    };
    let full = load();
    full.assert_code(1).assert_stderr_contains("state");
    let committed = server.count(&db, TABLE);
    assert!(
        committed > 0 && (committed as u64) < LINES,
        "the disk did not fill in the middle of the run: {committed} rows\n{}",
        full.describe()
    );
    fs::remove_file(&filler).expect("free the tmpfs");
    let rerun = load();
    rerun.assert_code(0);
    assert_table_holds_after(server, &db, 1..=LINES, Some(&rerun));
}

/// A full disk under the state file is not blamed on the database: the
/// run says that the state could not be written, and the lines it kept out
/// of the table are left in their file for the next run, not counted as
/// lost to database failures.
#[test]
fn a_full_disk_under_the_state_file_is_not_said_to_be_a_database_failure() {
    const LINES: u64 = 3_000;
    let Some(disk) = crate::support::tmpfs::Tmpfs::mount("1m") else {
        return;
    };
    // Room for a state file, not for the journal entries of every batch.
    let filler = disk.path().join("filler");
    fs::write(&filler, vec![0u8; (1 << 20) - (8 << 10)]).expect("fill the tmpfs");
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", LINES);
    let full = server
        .pgsense(&db)
        .arg("load")
        .args(["--batch-rows", "50", "--summary", "json"])
        .arg("--state-file")
        .arg(disk.path().join("state"))
        .arg(&input)
        .run();
    full.assert_code(1).assert_stderr_contains(
        "the state file or the reject file could not be written: stopped reading",
    );
    assert!(
        !full.stderr.contains("the database failed"),
        "{}",
        full.describe()
    );
    let summary = crate::support::report::json_summary(&full);
    let inserted = crate::support::report::number(&summary, "inserted");
    assert!(
        inserted < LINES,
        "the disk did not fill\n{}",
        full.describe()
    );
    assert_eq!(
        crate::support::report::number(&summary, "dropped_database_failure"),
        0,
        "{}",
        full.describe()
    );
    full.assert_stderr_contains("left in their files for the next run");
}

/// A directory named as the state file is a usage error, said before
/// anything is created beside it.
#[test]
fn a_directory_or_a_pipe_for_a_state_file_is_refused_leaving_nothing() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let dir = scratch.path().join("state.d");
    fs::create_dir(&dir).expect("mkdir");
    let input = scratch.write("findings.ndjson", findings(1..=3));
    load_with_state(server, &db, &dir, &input)
        .assert_code(2)
        .assert_stderr_contains("is a directory: name a file");
    let beside: Vec<_> = fs::read_dir(scratch.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(beside.len(), 2, "{beside:?}");
    // Nor anything else that is not a regular file (`--state-file
    // /dev/null` made /dev/null.lock, then called /dev/null damaged).
    let fifo = scratch.path().join("state.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    load_with_state(server, &db, &fifo, &input)
        .assert_code(2)
        .assert_stderr_contains("is not a regular file: name a file");
    assert!(!scratch.path().join("state.fifo.lock").exists());
}

/// A backlog of more files than the state file keeps marks of files no
/// longer given: the marks of this run's inputs are all kept, so the next
/// run with the same files loads nothing again.
#[test]
fn a_backlog_of_many_files_is_loaded_once_over_two_runs() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let state = scratch.path().join("state.json");
    let files: Vec<PathBuf> = (1..=1100)
        .map(|n| scratch.write(&format!("{n:04}.ndjson"), findings(n..=n)))
        .collect();
    for inserted in [1100, 0] {
        let out = server
            .pgsense(&db)
            .arg("load")
            .arg("--state-file")
            .arg(&state)
            .args(&files)
            .run();
        out.assert_code(0)
            .assert_stderr_contains(&format!("read, {inserted} inserted"));
        assert_table_holds_after(server, &db, 1..=1100, Some(&out));
    }
}
