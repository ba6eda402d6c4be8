//! What a load reports besides its exit code and summary line: the JSON
//! summary of `--summary json` (one parser for every suite) and where
//! reading stopped.

use serde_json::{Map, Value};

use super::run::Outcome;

/// The fields `--summary json` documents.
pub const SUMMARY_FIELDS: [&str; 13] = [
    "files",
    "lines_read",
    "inserted",
    "rejected_invalid",
    "refused_by_server",
    "dropped_database_failure",
    "dropped_interrupted",
    "dropped_outcome_unknown",
    "stopped",
    "dry_run",
    "seconds",
    "rows_per_second",
    "exit_status",
];

/// The JSON summary a run printed on stdout, its only output there: one
/// line, an object with every documented field.
#[track_caller]
pub fn json_summary(out: &Outcome) -> Map<String, Value> {
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "--summary json prints one line on stdout\n{}",
        out.describe()
    );
    let value: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("the summary is not JSON: {e}\n{}", out.describe()));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("the summary is not an object\n{}", out.describe()))
        .clone();
    for field in SUMMARY_FIELDS {
        assert!(
            object.contains_key(field),
            "the summary has no {field:?}\n{}",
            out.describe()
        );
    }
    object
}

/// The integer value of a summary field.
#[track_caller]
pub fn number(summary: &Map<String, Value>, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a whole number: {summary:?}"))
}

/// The line number in "stopped reading FILE after line N" on stderr.
#[track_caller]
pub fn stopped_after(out: &Outcome) -> u64 {
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
