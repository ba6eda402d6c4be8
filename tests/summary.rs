//! `load --summary json` and `load --metrics-file` (issue 6, "Tests"): both
//! parse, and their numbers are the run's and the table's.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::findings::ndjson;
use crate::support::prometheus::read_metrics;
use crate::support::report::{json_summary, number};
use crate::support::{Finding, PgServer, Scratch, Shape, TABLE, shared};

/// Two files, one good, one with invalid lines and lines the server
/// refuses: the summary parses, and its numbers are the input's and the
/// table's.
#[test]
fn json_summary_parses_and_matches_the_table() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    server.execute(
        &db,
        "alter table pgsense.findings add constraint no_refusals check (rule_id <> 'refuse-me')",
    );
    let scratch = Scratch::new();
    let first = scratch.write("first.jsonl", ndjson(0, 7, Shape::Object));
    let mut second = String::new();
    for i in 7..19u64 {
        let mut finding = Finding::sample(i);
        if i == 9 || i == 15 {
            finding.rule_id = "refuse-me".into();
        }
        second += &finding.line(Shape::Object);
        second.push('\n');
        if i == 10 {
            second += "{\"not\": \"a finding\"}\n\n";
        }
        if i == 12 {
            second += "[]\n";
        }
    }
    let second = scratch.write("second.jsonl", second);

    let started = Instant::now();
    let out = server
        .pgsense(&db)
        .args(["load", "--summary", "json"])
        .arg(&first)
        .arg(&second)
        .run();
    let elapsed = started.elapsed().as_secs_f64();
    out.assert_code(65);
    let summary = json_summary(&out);
    let count = server.count(&db, TABLE) as u64;
    assert_eq!(count, 7 + 12 - 2);
    assert_eq!(
        summary["files"],
        serde_json::json!([first.display().to_string(), second.display().to_string()])
    );
    assert_eq!(number(&summary, "lines_read"), 7 + 12 + 2, "blank not read");
    assert_eq!(number(&summary, "inserted"), count);
    assert_eq!(number(&summary, "rejected_invalid"), 2);
    assert_eq!(number(&summary, "refused_by_server"), 2);
    assert_eq!(number(&summary, "dropped_database_failure"), 0);
    assert_eq!(number(&summary, "dropped_interrupted"), 0);
    assert_eq!(number(&summary, "left_in_files"), 0);
    assert_eq!(summary["stopped"], Value::Null);
    assert_eq!(summary["errors"], serde_json::json!([]));
    assert_eq!(summary["dry_run"], Value::Bool(false));
    assert_eq!(number(&summary, "exit_status"), 65);
    let seconds = summary["seconds"].as_f64().expect("seconds is a number");
    assert!(
        (0.0..=elapsed).contains(&seconds),
        "seconds {seconds} outside 0..={elapsed}"
    );
    let rate = summary["rows_per_second"]
        .as_f64()
        .expect("rows_per_second is a number");
    if seconds >= 0.01 {
        let expected = count as f64 / seconds;
        assert!(
            (rate - expected).abs() <= 1.0 + expected * 0.1,
            "rows_per_second {rate}, expected about {expected}"
        );
    }
    // The summary on stderr says the same.
    assert_eq!(out.summary(), (7 + 12 + 2, count, 4), "{}", out.describe());
}

/// A run that fails says why in the JSON summary too, as on stderr: one
/// that never got going (no server), and one whose input broke off.
#[test]
fn json_summary_names_the_errors_that_failed_the_run() {
    let scratch = Scratch::new();
    let input = scratch.write("findings.jsonl", ndjson(0, 3, Shape::Object));
    let out = crate::support::pgsense()
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--connect-timeout",
            "2",
        ])
        .args(["load", "--summary", "json"])
        .arg(&input)
        .run();
    out.assert_code(69);
    assert_one_error(&out, "cannot connect");
    // A gzip file cut short: its lines before the cut are read, and the
    // error names it.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, ndjson(0, 40, Shape::Object).as_bytes()).expect("gzip");
    let mut gz = encoder.finish().expect("gzip");
    gz.truncate(gz.len() - 10);
    let cut = scratch.path().join("cut.jsonl.gz");
    fs::write(&cut, gz).expect("write");
    let out = crate::support::pgsense()
        .args(["load", "--dry-run", "--summary", "json"])
        .arg(&cut)
        .run();
    out.assert_code(1);
    assert_one_error(&out, &cut.display().to_string());
}

/// The JSON summary of `out` names one error, which says `what`.
#[track_caller]
fn assert_one_error(out: &crate::support::run::Outcome, what: &str) {
    let summary = json_summary(out);
    let errors = summary["errors"].as_array().expect("errors is an array");
    assert!(
        errors.len() == 1 && errors[0].as_str().is_some_and(|e| e.contains(what)),
        "{summary:?}"
    );
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// A metrics file that cannot be written at the end (its disk is full)
/// fails the run, and the JSON summary lists that error as stderr says
/// it; no half-written temporary file is left beside it.
#[test]
fn a_metrics_file_on_a_full_disk_is_an_error_of_the_summary() {
    let Some(disk) = crate::support::tmpfs::Tmpfs::mount("64k") else {
        return;
    };
    let server = shared();
    let db = server.new_database();
    let filler = disk.path().join("filler");
    // Room for files, none for their bytes.
    let _ = fs::write(&filler, vec![0u8; 64 << 10]);
    let metrics = disk.path().join("pgsense_pg.prom");
    let out = server
        .pgsense(&db)
        .args(["load", "--summary", "json", "--metrics-file"])
        .arg(&metrics)
        .arg("-")
        .stdin(ndjson(0, 3, Shape::Object))
        .run();
    out.assert_code(1)
        .assert_stderr_contains("cannot write metrics file");
    let summary = json_summary(&out);
    let errors = summary["errors"].as_array().expect("errors is a list");
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.contains("cannot write metrics file"))),
        "{}",
        out.describe()
    );
    assert_eq!(summary["inserted"], 3);
    let left: Vec<_> = fs::read_dir(disk.path())
        .expect("the disk")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert_eq!(left, ["filler"], "{}", out.describe());
}

/// The metrics file parses, its counters are the run's and the table's,
/// and a second run replaces it by rename (a new inode, no temp file left).
#[test]
fn metrics_file_parses_and_matches_the_run() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    server.execute(
        &db,
        "alter table pgsense.findings add constraint no_refusals check (rule_id <> 'refuse-me')",
    );
    let scratch = Scratch::new();
    let metrics_dir = scratch.path().join("textfile");
    fs::create_dir(&metrics_dir).expect("create the textfile directory");
    let metrics = metrics_dir.join("pgsense_pg.prom");

    let mut input = String::new();
    for i in 0..30u64 {
        let mut finding = Finding::sample(i);
        if i % 10 == 4 {
            finding.rule_id = "refuse-me".into();
        }
        input += &finding.line(Shape::Object);
        input.push('\n');
        if i % 10 == 7 {
            input += "{\"lsn\": \"not a finding\"}\n";
        }
    }
    let file = scratch.write("input.jsonl", input);
    let (before, started) = (unix_now(), Instant::now());
    let out = server
        .pgsense(&db)
        .args(["load", "--metrics-file"])
        .arg(&metrics)
        .arg(&file)
        .run();
    let (after, elapsed) = (unix_now(), started.elapsed().as_secs_f64());
    out.assert_code(65);

    let m = read_metrics(&metrics);
    let count = server.count(&db, TABLE) as f64;
    assert_eq!(count, 27.0);
    assert_eq!(
        m.kind.get("pgsense_alerts_total").map(String::as_str),
        Some("counter")
    );
    let alerts = |status| {
        m.value(
            "pgsense_alerts_total",
            &[("channel", "postgres"), ("status", status)],
        )
    };
    assert_eq!(alerts("ok"), count);
    assert_eq!(alerts("error"), 6.0);
    let dropped = |reason| m.value("pgsense_pg_dropped_lines", &[("reason", reason)]);
    assert_eq!(dropped("invalid"), 3.0);
    assert_eq!(dropped("refused"), 3.0);
    assert_eq!(dropped("database_failure"), 0.0);
    assert_eq!(dropped("interrupted"), 0.0);
    assert_eq!(m.value("pgsense_pg_lines_read", &[]), 33.0);
    assert_eq!(m.value("pgsense_pg_last_run_exit_status", &[]), 65.0);
    let duration = m.value("pgsense_pg_last_run_duration_seconds", &[]);
    assert!(
        (0.0..=elapsed).contains(&duration),
        "duration {duration} outside 0..={elapsed}"
    );
    let timestamp = m.value("pgsense_pg_last_run_timestamp_seconds", &[]);
    assert!(
        (before - 1.0..=after + 1.0).contains(&timestamp),
        "last run at {timestamp}, the run was from {before} to {after}"
    );
    assert_eq!(out.summary(), (33, 27, 6), "{}", out.describe());

    assert_a_second_run_replaces_the_file(server, &db, &scratch, &metrics);
}

/// A second, clean run replaces the metrics file whole, by rename: a new
/// inode, no temp file left next to it. Its `pgsense_alerts_total` counts
/// on from the first run's (27 inserted, 6 dropped), as a counter must for
/// Prometheus' increase() over cron runs; the per-run gauges are its own.
/// Before, the counter held the last run's counts only.
#[track_caller]
fn assert_a_second_run_replaces_the_file(
    server: &PgServer,
    db: &str,
    scratch: &Scratch,
    metrics: &Path,
) {
    let metrics_dir = metrics.parent().expect("in the textfile directory");
    let inode = fs::metadata(metrics).expect("metrics file").ino();
    let clean = scratch.write("clean.jsonl", ndjson(100, 5, Shape::Object));
    server
        .pgsense(db)
        .args(["load", "--metrics-file"])
        .arg(metrics)
        .arg(&clean)
        .run()
        .assert_code(0);
    let m = read_metrics(metrics);
    assert_eq!(
        m.value(
            "pgsense_alerts_total",
            &[("channel", "postgres"), ("status", "ok")]
        ),
        27.0 + 5.0
    );
    assert_eq!(
        m.value(
            "pgsense_alerts_total",
            &[("channel", "postgres"), ("status", "error")]
        ),
        6.0
    );
    assert_eq!(m.value("pgsense_pg_lines_read", &[]), 5.0);
    let dropped = |reason| m.value("pgsense_pg_dropped_lines", &[("reason", reason)]);
    assert_eq!(dropped("invalid"), 0.0);
    assert_eq!(m.value("pgsense_pg_last_run_exit_status", &[]), 0.0);
    assert_ne!(
        fs::metadata(metrics).expect("metrics file").ino(),
        inode,
        "the metrics file must be replaced by rename, not rewritten in place"
    );
    let left: Vec<String> = fs::read_dir(metrics_dir)
        .expect("read the textfile directory")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert_eq!(left, ["pgsense_pg.prom"], "only the metrics file is left");
}

/// `--summary json` to a standard output that cannot take it (/dev/full):
/// said on stderr, and the run fails, so that no one takes the missing
/// summary for a success. Before, it was lost silently, with exit 0.
#[test]
fn a_json_summary_that_cannot_be_written_fails_the_run() {
    let server = shared();
    let db = server.new_database();
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = server
        .pgsense(&db)
        .args(["load", "--summary", "json"])
        .stdin(ndjson(1, 1, Shape::Object))
        .stdout_file(full)
        .run();
    out.assert_code(1)
        .assert_stderr_contains("cannot write the JSON summary to standard output")
        .assert_stderr_contains("1 read, 1 inserted, 0 dropped");
    assert_eq!(server.count(&db, TABLE), 1);
}
