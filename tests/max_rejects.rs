//! `load --max-rejects` (issue 6, "Tests"): reading stops at the right
//! line, and the summary says where.

use serde_json::Value;

use crate::support::findings::{assert_rows, rows};
use crate::support::pg::free_port;
use crate::support::report::{json_summary, number};
use crate::support::{Finding, Scratch, Shape, TABLE, pgsense, shared};

/// 20 lines, bad at 3, 5 and 9: with --max-rejects N, reading stops after
/// the line that makes N + 1 rejects, the lines after it are not loaded,
/// and the summary says where it stopped; with N = 3 nothing stops.
#[test]
fn max_rejects_stops_after_the_line_that_exceeds_it() {
    let server = shared();
    let scratch = Scratch::new();
    let bad = [3u64, 5, 9];
    let input: String = (1..=20u64)
        .map(|line| {
            if bad.contains(&line) {
                format!("{{\"bad line\": {line}}}\n")
            } else {
                Finding::sample(line).line(Shape::Object) + "\n"
            }
        })
        .collect();
    let file = scratch.write("input.jsonl", input);
    let name = file.display().to_string();
    for (max, stop_after) in [(0u64, Some(3u64)), (1, Some(5)), (2, Some(9)), (3, None)] {
        let db = server.new_database();
        let out = server
            .pgsense(&db)
            .args([
                "load",
                "--summary",
                "json",
                "--max-rejects",
                &max.to_string(),
            ])
            .arg(&file)
            .run();
        out.assert_code(65);
        let last = stop_after.unwrap_or(20);
        let rejected: Vec<u64> = bad.iter().copied().filter(|&l| l <= last).collect();
        assert_eq!(
            out.rejected_line_numbers(&name),
            rejected,
            "--max-rejects {max}\n{}",
            out.describe()
        );
        let loaded: Vec<Finding> = (1..=last)
            .filter(|line| !bad.contains(line))
            .map(Finding::sample)
            .collect();
        assert_rows(&rows(server, &db, TABLE), &loaded);
        let summary = json_summary(&out);
        assert_eq!(number(&summary, "lines_read"), last, "{}", out.describe());
        assert_eq!(number(&summary, "inserted"), loaded.len() as u64);
        assert_eq!(number(&summary, "rejected_invalid"), rejected.len() as u64);
        assert_eq!(number(&summary, "exit_status"), 65);
        match stop_after {
            Some(line) => {
                let stopped = summary["stopped"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no stopped in {summary:?}"));
                let at = format!("stopped reading {name} after line {line}");
                assert!(
                    stopped.contains(&at) && stopped.contains("--max-rejects"),
                    "{stopped:?} should say {at:?} and why"
                );
                out.assert_stderr_contains(&at);
            }
            None => assert_eq!(summary["stopped"], Value::Null, "{}", out.describe()),
        }
    }

    // A dry run stops at the same line.
    let dry = pgsense()
        .args(["--port", &free_port().to_string()])
        .args(["load", "--dry-run", "--max-rejects", "1"])
        .arg(&file)
        .run();
    dry.assert_code(65)
        .assert_stderr_contains(&format!("stopped reading {name} after line 5"));
    assert_eq!(dry.rejected_line_numbers(&name), [3, 5]);
}
