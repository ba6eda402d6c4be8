//! `--reject-file` (issue 4, "Tests"): every dropped line as read, a long
//! line never split by others, a reject file that is an input refused, one
//! that cannot be written failing the run, and (issue 10) one whose disk
//! fills committing nothing it cannot record.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::support::markers::{
    assert_table_holds_after, each_once, each_once_after, file_markers, finding,
    finding_with_sample, findings, table_markers,
};
use crate::support::proxy::{After, CommitCutter, CutAt};
use crate::support::run::{Outcome, init};
use crate::support::tmpfs::Tmpfs;
use crate::support::wait::wait_during;
use crate::support::{Scratch, TABLE, shared};

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

/// What becomes of a line of [`every_kind_of_line`].
enum Kind {
    /// Inserted: a finding with this marker.
    Good(u64),
    /// Skipped, neither read nor dropped.
    Blank,
    /// Dropped: invalid, too long, or refused by the server.
    Bad,
}

/// Lines of every kind, each with its line terminator (the last has none).
fn every_kind_of_line() -> Vec<(Vec<u8>, Kind)> {
    use Kind::{Bad, Blank, Good};
    vec![
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
    ]
}

/// Every kind of dropped line lands in the reject file exactly as read (a
/// CRLF line keeps its CR, a line over --max-line-bytes is kept whole, a
/// row the server refuses too), and replaying the file drops the same
/// lines for the same reasons.
#[test]
fn the_reject_file_holds_each_dropped_line_as_read_and_replays_the_same() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    server.execute(
        &db,
        &format!(
            "ALTER TABLE {TABLE} ADD CONSTRAINT no_refusals CHECK (masked_sample <> 'refuse-me')"
        ),
    );
    let lines = every_kind_of_line();
    let input: Vec<u8> = lines.iter().flat_map(|(l, _)| l.clone()).collect();
    // The last line has no newline: the reject file gets one, so that lines
    // appended later stay lines of their own.
    let mut expected: Vec<u8> = lines
        .iter()
        .filter(|(_, kind)| matches!(kind, Kind::Bad))
        .flat_map(|(l, _)| l.clone())
        .collect();
    expected.push(b'\n');
    let bad = lines.iter().filter(|(_, k)| matches!(k, Kind::Bad)).count() as u64;
    let read = lines
        .iter()
        .filter(|(_, k)| !matches!(k, Kind::Blank))
        .count() as u64;

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
            Kind::Good(marker) => Some(*marker),
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
/// it is read; a line the writer drops meanwhile (here, a row a trigger
/// refuses) must not land between its pieces.
///
/// No sleep decides the interleaving: the trigger waits on an advisory lock
/// the test holds, so the writer refuses the first row only once the long
/// line is being read, and the line is ended only once that refusal has
/// reached the writer.
#[test]
fn a_long_line_in_the_reject_file_is_not_split_by_other_dropped_lines() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    server.execute(
        &db,
        "CREATE FUNCTION pgsense.gated_refusal() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF new.masked_sample = 'refuse-me' THEN
                 PERFORM pg_advisory_xact_lock_shared(4242);
                 RAISE EXCEPTION 'refused on purpose';
             END IF;
             RETURN new;
         END $$;
         CREATE TRIGGER gated_refusal BEFORE INSERT ON pgsense.findings
         FOR EACH ROW EXECUTE FUNCTION pgsense.gated_refusal();",
    );
    let mut gate = server.client(&db);
    gate.batch_execute("SELECT pg_advisory_lock(4242)")
        .expect("close the gate");
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
    let writer = |condition: &str| {
        format!(
            "select count(*) from pg_stat_activity where datname = current_database() \
             and application_name = 'pgsense-pg' and {condition}"
        )
    };
    let mut load = wait_during(
        load,
        "the writer refusing the first row, held at the gate",
        Duration::from_secs(20),
        || server.query_one(&db, &writer("wait_event = 'advisory'")) != Some("0".into()),
    );
    // More than a pipe holds (64 KiB): once written, the reader has read
    // well past --max-line-bytes, so the long line is open. The reader waits
    // to write it until the refused rows before it are settled, so it is
    // fed while the gate opens.
    let mut long = String::from("{\"database\":\"") + &"x".repeat(160 * 1024);
    std::thread::scope(|scope| {
        let stdin = load.stdin();
        let feeding = scope.spawn(|| {
            stdin.write_all(long.as_bytes()).expect("feed");
            stdin.flush().expect("flush");
        });
        gate.batch_execute("SELECT pg_advisory_unlock(4242)")
            .expect("open the gate");
        feeding.join().expect("fed the long line");
    });
    // The refusal reached the writer: its statement failed, so no backend of
    // the load is running one.
    let mut load = wait_during(
        load,
        "the first refusal answered",
        Duration::from_secs(20),
        || server.query_one(&db, &writer("state = 'active'")) == Some("0".into()),
    );
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

/// A reject file that is the state file, its journal, or the metrics file
/// (by its name or through a link) would be overwritten by it, or
/// overwrite it: the run is refused before anything is loaded.
#[test]
fn a_reject_file_that_is_another_output_is_refused() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let input = scratch.write("findings.ndjson", format!("not json\n{}", findings(1..=3)));
    let state = scratch.write("pgsense-pg.state", "{\"files\":{}}\n");
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(&state, &link).expect("link");
    let journal = scratch.path().join("pgsense-pg.state.journal");
    let metrics = scratch.path().join("pgsense-pg.prom");
    for (reject, other_flag, other) in [
        (&state, "--state-file", &state),
        (&journal, "--state-file", &state),
        (&link, "--state-file", &state),
        // The journal is the one beside the file the link leads to.
        (&journal, "--state-file", &link),
        (&metrics, "--metrics-file", &metrics),
    ] {
        let out = server
            .pgsense(&db)
            .arg("load")
            .arg("--reject-file")
            .arg(reject)
            .arg(other_flag)
            .arg(other)
            .arg(&input)
            .run();
        out.assert_code(2)
            .assert_stderr_contains("would write the same file");
        assert_eq!(
            fs::read_to_string(&state).expect("read"),
            "{\"files\":{}}\n"
        );
        // The metrics file still says the run failed, for monitoring.
        assert!(!journal.exists(), "no journal written");
    }
}

/// A reject file that cannot be written (a full disk) fails the run, and
/// the state file is not moved past the dropped lines that never reached it:
/// the next run reads them again instead of losing them.
#[test]
fn a_full_reject_file_fails_the_run_and_holds_the_state_back() {
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    // Full to the last block: what fits of a file larger than the disk.
    let _ = fs::write(disk.path().join("filler"), vec![0u8; 2 << 20]);
    let rejects = disk.path().join("rejects.ndjson");
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
        .arg("--reject-file")
        .arg(&rejects)
        .arg(&input)
        .run();
    out.assert_code(1)
        .assert_stderr_contains("cannot write reject file");
    assert_eq!(
        out.stderr.matches("cannot write reject file").count(),
        1,
        "said once\n{}",
        out.describe()
    );
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
    // A device that is always full, without a state file: the same, said
    // once.
    let out = server
        .pgsense(&db)
        .arg("load")
        .args(["--reject-file", "/dev/full"])
        .arg(&input)
        .run();
    out.assert_code(1)
        .assert_stderr_contains("cannot write reject file /dev/full");
    assert_eq!(
        out.stderr.matches("cannot write reject file").count(),
        1,
        "said once\n{}",
        out.describe()
    );
}

/// The markers of the whole lines of a reject file, leaving out a last line
/// without its newline (what a failed write may leave).
fn whole_line_markers(path: &Path) -> BTreeSet<u64> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| line.ends_with(b"\n"))
        .map(|line| {
            let json: serde_json::Value = serde_json::from_slice(line)
                .unwrap_or_else(|e| panic!("not a finding ({e}): {}", show(line)));
            json["lsn"].as_u64().expect("every finding has an lsn")
        })
        .collect()
}

/// Asserts that `what` holds exactly the findings `expected`.
#[track_caller]
fn assert_holds(what: &str, holds: &BTreeSet<u64>, expected: &BTreeSet<u64>, out: &Outcome) {
    let missing: Vec<_> = expected.difference(holds).take(10).collect();
    let extra: Vec<_> = holds.difference(expected).take(10).collect();
    assert!(
        holds == expected,
        "{what} holds {} findings, expected {}; missing for example {missing:?}, \
         unexpected for example {extra:?}\n{}",
        holds.len(),
        expected.len(),
        out.describe()
    );
}

/// The reject file on a disk that fills during a run with a state file
/// (issue 10): the run fails naming the reject file, and commits no batch
/// whose dropped lines the file does not hold. Once there is room again,
/// the same command completes the picture: every line once, in the table
/// or in the reject file, which holds whole lines only.
#[test]
fn a_reject_file_on_a_full_disk_commits_nothing_unrecorded_and_the_rerun_completes_it() {
    const LINES: u64 = 15_000;
    // Every third line is invalid (a bad severity, still JSON with its
    // marker): some 5000 dropped lines of about 370 bytes, where the disk
    // has room for a megabyte.
    let invalid = |marker: u64| marker.is_multiple_of(3);
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    let filler = disk.path().join("filler");
    fs::write(&filler, vec![0u8; 7 << 20]).expect("fill the tmpfs but a megabyte");
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let text: String = (1..=LINES)
        .map(|m| {
            if invalid(m) {
                finding(m).replace("\"HIGH\"", "\"NOPE\"") + "\n"
            } else {
                finding(m) + "\n"
            }
        })
        .collect();
    let input = scratch.write("findings.ndjson", text);
    let rejects = disk.path().join("rejects.ndjson");
    let load = || {
        server
            .pgsense(&db)
            .arg("load")
            .args(["--batch-rows", "500"])
            .arg("--state-file")
            .arg(scratch.path().join("state"))
            .arg("--reject-file")
            .arg(&rejects)
            .arg(&input)
            .run()
    };

    let full = load();
    full.assert_code(1)
        .assert_stderr_contains(&format!("cannot write reject file {}", rejects.display()));
    let in_table = each_once_after(&table_markers(server, &db), "the table", Some(&full));
    let last = in_table.last().copied().unwrap_or(0);
    assert!(
        last > 0 && in_table.len() < (1..=LINES).filter(|&m| !invalid(m)).count(),
        "the disk did not fill in the middle of the run: {} rows committed\n{}",
        in_table.len(),
        full.describe()
    );
    // Batches settle in input order: every invalid line before the last
    // committed row belongs to a committed batch.
    let recorded = whole_line_markers(&rejects);
    let unrecorded: Vec<u64> = (1..last)
        .filter(|&m| invalid(m) && !recorded.contains(&m))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "rows up to line {last} were committed though {} dropped lines before it are not \
         in the reject file, for example {:?}\n{}",
        unrecorded.len(),
        &unrecorded[..unrecorded.len().min(10)],
        full.describe()
    );

    fs::remove_file(&filler).expect("free the tmpfs");
    let rerun = load();
    rerun.assert_code(65);
    let in_table = each_once_after(&table_markers(server, &db), "the table", Some(&rerun));
    let rejected = each_once_after(&file_markers(&rejects), "the reject file", Some(&rerun));
    let (bad, good): (BTreeSet<u64>, BTreeSet<u64>) = (1..=LINES).partition(|&m| invalid(m));
    assert_holds("the table", &in_table, &good, &rerun);
    assert_holds("the reject file", &rejected, &bad, &rerun);
    let bytes = fs::read(&rejects).expect("read the reject file");
    assert!(bytes.ends_with(b"\n"), "the reject file ends mid-line");
}

/// When the database fails for good, the inputs not read yet are copied to
/// the reject file as they are, but for the UTF-8 BOM an input starts with:
/// in the middle of the reject file it would make its line invalid on
/// replay.
#[test]
fn input_set_aside_after_a_database_failure_leaves_its_bom_out() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let first = scratch.write("first.ndjson", findings(1..=1000));
    let second = scratch.write(
        "second.ndjson",
        [&b"\xEF\xBB\xBF"[..], findings(1001..=1200).as_bytes()].concat(),
    );
    let rejects = scratch.path().join("rejects.ndjson");
    let proxy = CommitCutter::start_then(server.port(), CutAt::CommitLost, After::Refuse);
    let out = server
        .pgsense(&db)
        .args(["--port", &proxy.port.to_string(), "--connect-timeout", "2"])
        .arg("load")
        .args(["--batch-rows", "100", "--retry-for", "0"])
        .arg("--reject-file")
        .arg(&rejects)
        .arg(&first)
        .arg(&second)
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(proxy.cuts(), 1, "no COMMIT was cut\n{}", out.describe());
    out.assert_code(75)
        .assert_stderr_contains("appended to the reject file as they are");
    let bytes = fs::read(&rejects).expect("reject file");
    assert!(
        !bytes.windows(3).any(|w| w == b"\xEF\xBB\xBF"),
        "a BOM was copied into the reject file\n{}",
        out.describe()
    );
    // Replayed, every line of it is a finding.
    let replay = server.pgsense(&db).arg("load").arg(&rejects).run();
    replay.assert_code(0);
    assert_table_holds_after(server, &db, 1..=1200, Some(&replay));
}

/// A reject file that is a pipe (`--reject-file >(gzip > r.gz)`) or
/// /dev/null is written to, not synced: the run ends as it would with a
/// file. Before, the fsync it cannot take failed the run (exit 1, saying
/// the dropped lines were missing from it). With --state-file, whose next
/// run takes a killed run's lines back from the reject file, it is refused
/// before anything is loaded (exit 2).
#[test]
fn a_reject_file_that_is_a_pipe_or_a_device_is_written_unsynced() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let text = findings(1..=5) + "{\"lsn\":-1}\n" + &findings(6..=10);
    let input = scratch.write("findings.ndjson", text);
    let fifo = scratch.path().join("rejects.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    // The other end: opened before the load, so that its open does not
    // wait, and read to its end.
    let reading = std::thread::spawn({
        let fifo = fifo.clone();
        move || fs::read(fifo).expect("read the pipe")
    });
    let load = |rejects: &Path| {
        server
            .pgsense(&db)
            .arg("load")
            .arg("--reject-file")
            .arg(rejects)
            .arg(&input)
            .run()
    };
    let out = load(&fifo);
    out.assert_code(65)
        .assert_stderr_contains("11 read, 10 inserted, 1 dropped");
    assert_eq!(reading.join().expect("reader"), b"{\"lsn\":-1}\n");
    assert_table_holds_after(server, &db, 1..=10, Some(&out));
    load(Path::new("/dev/null"))
        .assert_code(65)
        .assert_stderr_contains("11 read, 10 inserted, 1 dropped");
    // A batch whose COMMIT never reached the server is sent again: the
    // invalid line written for it cannot be taken back from the device,
    // which is said, and the run goes on.
    let resent = server.new_database();
    init(server, &resent);
    let proxy = CommitCutter::start(server.port(), CutAt::CommitLost);
    let out = server
        .pgsense(&resent)
        .args(["--port", &proxy.port.to_string()])
        .args(["load", "--reject-file", "/dev/null"])
        .arg(&input)
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(proxy.cuts(), 1, "no COMMIT was cut\n{}", out.describe());
    out.assert_code(65)
        .assert_stderr_contains("11 read, 10 inserted, 1 dropped")
        .assert_stderr_contains("cannot be taken back");
    assert_table_holds_after(server, &resent, 1..=10, Some(&out));

    let other = server.new_database();
    init(server, &other);
    server
        .pgsense(&other)
        .arg("load")
        .arg("--state-file")
        .arg(scratch.path().join("state"))
        .args(["--reject-file", "/dev/null"])
        .arg(&input)
        .run()
        .assert_code(2)
        .assert_stderr_contains("--reject-file /dev/null is not a regular file");
    assert!(table_markers(server, &other).is_empty());
}
