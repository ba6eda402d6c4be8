//! `load --dry-run` (issue 6, "Tests"): accounts exactly as a real run
//! does, and writes nothing, connecting to nothing.

use serde_json::Value;

use crate::support::findings::{assert_rows, ndjson, rows};
use crate::support::pg::free_port;
use crate::support::prometheus::read_metrics;
use crate::support::report::json_summary;
use crate::support::run::Outcome;
use crate::support::{Finding, Scratch, Shape, SilentServer, TABLE, pgsense, shared};

/// An input of every kind of bad line next to good ones, as bytes (one line
/// is not UTF-8). Returns it with the good findings and the numbers of the
/// bad lines. Use with `--max-line-bytes 4096`.
fn bad_input() -> (Vec<u8>, Vec<Finding>, Vec<u64>) {
    let good = |i: u64| Finding::sample(i).line(Shape::Object);
    let mut missing_field = Finding::sample(2).to_json(Shape::Object);
    missing_field
        .as_object_mut()
        .expect("an object")
        .remove("database");
    let mut severity = Finding::sample(3);
    severity.severity = "URGENT".into();
    let mut negative_lsn = Finding::sample(4).to_json(Shape::Object);
    negative_lsn["lsn"] = (-5).into();
    let mut no_offset = Finding::sample(5);
    no_offset.timestamp = Some("2024-11-01T00:00:00".into());
    let mut nul = Finding::sample(6);
    nul.masked_sample = "ja\u{0}om".into();
    let duplicate = format!("{{\"lsn\":1,{}", &good(7)[1..]);
    let mut long = Finding::sample(8);
    long.description = "x".repeat(5000);
    let mut disagree = Finding::sample(9).to_json(Shape::Object);
    disagree["primary_keys"] = serde_json::json!([["id", "999"]]);
    // Invalid UTF-8 in the first string value.
    let mut not_utf8 = good(10).into_bytes();
    let at = not_utf8
        .windows(12)
        .position(|w| w == b"\"database\":\"")
        .expect("a database field")
        + 12;
    not_utf8.splice(at..at, *b"\xff\xfe");

    let lines: Vec<Vec<u8>> = vec![
        format!("\u{FEFF}{}", good(0)).into_bytes(), // 1
        b"{not json".to_vec(),                       // 2
        format!("{}\r", good(1)).into_bytes(),       // 3 (CRLF)
        b"   ".to_vec(),                             // 4 (blank)
        missing_field.to_string().into_bytes(),      // 5
        severity.line(Shape::Object).into_bytes(),   // 6
        negative_lsn.to_string().into_bytes(),       // 7
        good(11).into_bytes(),                       // 8
        not_utf8,                                    // 9
        no_offset.line(Shape::Object).into_bytes(),  // 10
        nul.line(Shape::Object).into_bytes(),        // 11
        duplicate.into_bytes(),                      // 12
        long.line(Shape::Object).into_bytes(),       // 13
        disagree.to_string().into_bytes(),           // 14
        good(12).into_bytes(),                       // 15, no final newline
    ];
    let input = lines.join(&b"\n"[..]);
    let findings = [0, 1, 11, 12].map(Finding::sample).to_vec();
    (input, findings, vec![2, 5, 6, 7, 9, 10, 11, 12, 13, 14])
}

/// The summary line on stderr, without the `pgsense-pg: ` prefix, and of a
/// dry run without its `dry run, nothing written: ` and with `would be
/// inserted` made `inserted` (a dry run must say both: issue 12), so that
/// it compares with a real run's.
#[track_caller]
fn summary_line(out: &Outcome, dry_run: bool) -> String {
    let line = out
        .stderr
        .lines()
        .rev()
        .find(|line| line.contains(" read, ") && line.contains(" inserted, "))
        .unwrap_or_else(|| panic!("no summary line\n{}", out.describe()));
    let line = line.strip_prefix("pgsense-pg: ").expect("prefixed");
    let would = line.contains(" would be inserted, ");
    match line.strip_prefix("dry run, nothing written: ") {
        Some(rest) if dry_run && would => rest.replacen(" would be inserted, ", " inserted, ", 1),
        None if !dry_run && !would => line.to_owned(),
        _ => panic!(
            "dry run {dry_run}, but the summary says otherwise\n{}",
            out.describe()
        ),
    }
}

/// The same bad input, loaded for real and dry: the same per-line reasons,
/// the same counts, the same exit status; the dry run writes nothing, and
/// needs no server at all.
#[test]
fn dry_run_accounts_exactly_as_a_real_run_and_writes_nothing() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let (input, good, bad_lines) = bad_input();
    let file = scratch.write("bad.jsonl", &input);
    let load = |dry: bool| {
        let mut cmd =
            server
                .pgsense(&db)
                .args(["load", "--max-line-bytes", "4096", "--summary", "json"]);
        if dry {
            cmd = cmd.arg("--dry-run");
        }
        cmd.arg(&file).run()
    };

    // Dry first, on a fresh database: nothing is created.
    let dry = load(true);
    dry.assert_code(65);
    assert_eq!(
        server.query_one(
            &db,
            "select count(*) from pg_namespace where nspname = 'pgsense'"
        ),
        Some("0".into()),
        "a dry run must not create the schema"
    );

    let real = load(false);
    real.assert_code(65);
    let name = file.display().to_string();
    assert_eq!(
        real.rejected_line_numbers(&name),
        bad_lines,
        "{}",
        real.describe()
    );
    assert_rows(&rows(server, &db, TABLE), &good);

    assert_eq!(dry.reject_lines(), real.reject_lines(), "per-line reasons");
    assert_eq!(summary_line(&dry, true), summary_line(&real, false));
    let (dry_json, real_json) = (json_summary(&dry), json_summary(&real));
    for field in [
        "files",
        "lines_read",
        "inserted",
        "rejected_invalid",
        "refused_by_server",
        "dropped_database_failure",
        "dropped_interrupted",
        "stopped",
        "exit_status",
    ] {
        assert_eq!(dry_json[field], real_json[field], "{field}");
    }
    assert_eq!(dry_json["dry_run"], Value::Bool(true));
    assert_eq!(real_json["dry_run"], Value::Bool(false));

    // Again, dry, once the table holds rows: it still writes nothing.
    let again = load(true);
    again.assert_code(65);
    assert_eq!(again.reject_lines(), real.reject_lines());
    assert_eq!(server.count(&db, TABLE), good.len() as i64);

    // And with no server: a port where something listens but never answers
    // is never even contacted.
    let silent = SilentServer::new();
    let offline = pgsense()
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .args(["--dbname", &db, "--connect-timeout", "2"])
        .args(["load", "--dry-run", "--max-line-bytes", "4096"])
        .arg(&file)
        .run();
    offline.assert_code(65);
    assert_eq!(offline.reject_lines(), real.reject_lines());
    assert_eq!(summary_line(&offline, true), summary_line(&real, false));
    assert!(!silent.was_contacted(), "a dry run must not connect");
    assert_eq!(server.count(&db, TABLE), good.len() as i64);
}

/// Good input: 0 dry and real, the same summary; a dry run against a port
/// nothing listens on works as well.
#[test]
fn dry_run_of_good_input_exits_0_like_the_real_run() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let file = scratch.write("good.jsonl", ndjson(0, 25, Shape::Pairs));
    let offline = pgsense()
        .args(["--host", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["load", "--dry-run"])
        .arg(&file)
        .run();
    offline.assert_code(0);
    assert!(
        offline.stdout.is_empty(),
        "stdout stays quiet\n{}",
        offline.describe()
    );
    let real = server.pgsense(&db).arg("load").arg(&file).run();
    real.assert_code(0);
    assert!(real.stdout.is_empty(), "{}", real.describe());
    assert_eq!(summary_line(&offline, true), summary_line(&real, false));
    assert_eq!(server.count(&db, TABLE), 25);
}

/// A dry run leaves the metrics file of the last real run as it is, and
/// says so once (issue 12).
#[test]
fn dry_run_leaves_the_metrics_file_of_real_runs() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let metrics = scratch.path().join("pgsense.prom");
    let load = |count: u64, dry: bool| {
        let mut cmd = server
            .pgsense(&db)
            .arg("load")
            .arg("--metrics-file")
            .arg(&metrics);
        if dry {
            cmd = cmd.arg("--dry-run");
        }
        cmd.stdin(ndjson(0, count, Shape::Object)).run()
    };
    load(5, false).assert_code(0);
    let real = std::fs::read_to_string(&metrics).expect("the real run's metrics");
    assert_eq!(
        read_metrics(&metrics).value("pgsense_pg_lines_read", &[]),
        5.0
    );
    let dry = load(7, true);
    dry.assert_code(0);
    let said = format!(
        "--metrics-file {}: not written by a dry run",
        metrics.display()
    );
    assert_eq!(dry.stderr.matches(&said).count(), 1, "{}", dry.describe());
    assert_eq!(
        std::fs::read_to_string(&metrics).expect("still there"),
        real,
        "a dry run overwrote the metrics file"
    );
    assert!(!scratch.path().join("pgsense.prom.tmp").exists());
}

/// A dry run with a state file reads every input from its start, leaves
/// the state file as the last real run wrote it, and says so once.
#[test]
fn dry_run_reads_from_the_start_and_leaves_the_state_file() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let state = scratch.path().join("pgsense.state");
    let input = scratch.write("findings.ndjson", ndjson(0, 5, Shape::Object));
    let load = |dry: bool| {
        let mut cmd = server
            .pgsense(&db)
            .arg("load")
            .arg("--state-file")
            .arg(&state)
            .arg(&input);
        if dry {
            cmd = cmd.arg("--dry-run");
        }
        cmd.run()
    };
    load(false)
        .assert_code(0)
        .assert_stderr_contains("5 read, 5 inserted");
    let saved = std::fs::read(&state).expect("the real run's state");
    let dry = load(true);
    dry.assert_code(0)
        .assert_stderr_contains("5 read, 5 would be inserted");
    let said = format!("--state-file {}: not read by a dry run", state.display());
    assert_eq!(dry.stderr.matches(&said).count(), 1, "{}", dry.describe());
    assert_eq!(std::fs::read(&state).expect("still there"), saved);
    load(false)
        .assert_code(0)
        .assert_stderr_contains("0 read, 0 inserted");
}
