//! Findings with markers, for the fault tests: every finding carries a
//! marker, its lsn, equal to its line number, so a test tells exactly which
//! lines are in the table, which are in the reject file, and that none is in
//! both or twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use super::report::{json_summary, number};
use super::run::Outcome;
use super::{PgServer, Scratch, TABLE};

/// Findings in a "large" load: enough that it lasts a few seconds, so a
/// fault lands in the middle of it.
pub const LARGE: u64 = 300_000;

/// Rows per batch in the large loads: many batches, so a fault lands between
/// some and inside one.
pub const BATCH_ROWS: u64 = 2000;

/// A valid finding whose lsn, its marker, is `marker`.
pub fn finding(marker: u64) -> String {
    finding_with_sample(marker, "ja****om")
}

/// A valid finding with marker `marker` and this masked_sample.
pub fn finding_with_sample(marker: u64, sample: &str) -> String {
    format!(
        "{{\"database\":\"primary/orders\",\"rule_id\":\"email-address\",\
         \"description\":\"Email addresses\",\"category\":\"PII\",\"severity\":\"HIGH\",\
         \"schema_name\":\"public\",\"table_name\":\"users\",\"column_name\":\"contact\",\
         \"masked_sample\":\"{sample}\",\"primary_key\":{{\"id\":\"{marker}\"}},\
         \"lsn\":{marker},\"timestamp\":\"2024-11-01T12:00:00.123456+00:00\"}}"
    )
}

/// The findings with these markers, one per line.
pub fn findings(markers: RangeInclusive<u64>) -> String {
    markers.map(|m| finding(m) + "\n").collect()
}

/// Writes findings 1..=count, one per line, to `name` in `scratch`.
pub fn write_findings(scratch: &Scratch, name: &str, count: u64) -> PathBuf {
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
pub fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// A writer that keeps ending `path` mid-line, as a buffered one does: it
/// starts with lines 1 to `whole` and half of the next, then every 0.3 s
/// ends that line and writes half of the next, until dropped.
pub struct HalfLineWriter {
    writing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HalfLineWriter {
    pub fn start(path: &Path, whole: u64) -> HalfLineWriter {
        use std::sync::atomic::{AtomicBool, Ordering};
        let half = |line: &str| line.len() / 2;
        let first = finding(whole + 1);
        std::fs::write(path, findings(1..=whole) + &first[..half(&first)]).expect("the input");
        let writing = std::sync::Arc::new(AtomicBool::new(true));
        let thread = {
            let (path, writing) = (path.to_owned(), std::sync::Arc::clone(&writing));
            std::thread::spawn(move || {
                for marker in whole + 1.. {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    if !writing.load(Ordering::SeqCst) {
                        break;
                    }
                    let (this, next) = (finding(marker), finding(marker + 1));
                    append(
                        &path,
                        &format!("{}\n{}", &this[half(&this)..], &next[..half(&next)]),
                    );
                }
            })
        };
        HalfLineWriter {
            writing,
            thread: Some(thread),
        }
    }
}

impl Drop for HalfLineWriter {
    fn drop(&mut self) {
        self.writing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The marker of every row in the table, in no particular order.
pub fn table_markers(server: &PgServer, db: &str) -> Vec<u64> {
    server
        .query(db, &format!("select lsn::bigint from {TABLE}"))
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
pub fn file_markers(path: &Path) -> Vec<u64> {
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
pub fn each_once(markers: &[u64], what: &str) -> BTreeSet<u64> {
    each_once_after(markers, what, None)
}

/// [`each_once`], showing what `run` printed on failure.
#[track_caller]
pub fn each_once_after(markers: &[u64], what: &str, run: Option<&Outcome>) -> BTreeSet<u64> {
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
pub fn assert_table_holds(server: &PgServer, db: &str, expected: impl IntoIterator<Item = u64>) {
    assert_table_holds_after(server, db, expected, None);
}

/// [`assert_table_holds`], showing what `run` printed on failure.
#[track_caller]
pub fn assert_table_holds_after(
    server: &PgServer,
    db: &str,
    expected: impl IntoIterator<Item = u64>,
    run: Option<&Outcome>,
) {
    let markers = table_markers(server, db);
    let in_table = each_once_after(&markers, "the table", run);
    let expected: BTreeSet<u64> = expected.into_iter().collect();
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
pub fn assert_disjoint(in_table: &BTreeSet<u64>, rejected: &BTreeSet<u64>) {
    let both: Vec<_> = in_table.intersection(rejected).take(10).collect();
    assert!(
        both.is_empty(),
        "findings both in the table and in the reject file, for example {both:?}"
    );
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
pub fn overlap_of_unknown_outcome(
    in_table: &BTreeSet<u64>,
    rejected: &BTreeSet<u64>,
    out: &Outcome,
    file: &str,
) -> BTreeSet<u64> {
    let unknown = number(&json_summary(out), "dropped_outcome_unknown");
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
pub fn assert_each_once_but(
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
