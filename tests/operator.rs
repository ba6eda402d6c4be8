//! The operator's tool (issue 6, "Tests"): `check` names each missing grant
//! with the GRANT that fixes it, `load --dry-run` accounts exactly as a real
//! run does and writes nothing, `--summary json` and `--metrics-file` match
//! the table, `--max-rejects` stops at the right line, progress shows on a
//! terminal only, and the completions work in real bash, zsh and fish.
//!
//! Everything runs against the shared throwaway server, each test in a
//! database (and, where it needs one, a role) of its own.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::findings::{assert_rows, ndjson, rows};
use crate::support::pg::{free_port, unique};
use crate::support::process::{self, Finished};
use crate::support::run::Outcome;
use crate::support::{Finding, PgServer, Scratch, Shape, SilentServer, pgsense, shared};

const TABLE: &str = "pgsense.findings";

/// The fields `--summary json` documents.
const SUMMARY_FIELDS: [&str; 12] = [
    "files",
    "lines_read",
    "inserted",
    "rejected_invalid",
    "refused_by_server",
    "dropped_database_failure",
    "dropped_interrupted",
    "stopped",
    "dry_run",
    "seconds",
    "rows_per_second",
    "exit_status",
];

// --- check -------------------------------------------------------------------

/// One line of `pgsense-pg check`: `ok       WHAT` or
/// `missing  WHAT: PROBLEM`.
#[derive(Debug)]
struct CheckLine {
    what: String,
    problem: Option<String>,
}

/// The lines `check` printed on stdout; panics on a line of neither form.
#[track_caller]
fn check_lines(out: &Outcome) -> Vec<CheckLine> {
    out.stdout
        .lines()
        .map(|line| {
            if let Some(what) = line.strip_prefix("ok       ") {
                CheckLine {
                    what: what.to_owned(),
                    problem: None,
                }
            } else if let Some((what, problem)) = line
                .strip_prefix("missing  ")
                .and_then(|rest| rest.split_once(": "))
            {
                CheckLine {
                    what: what.to_owned(),
                    problem: Some(problem.to_owned()),
                }
            } else {
                panic!(
                    "check printed a line that is neither `ok` nor `missing`: {line:?}\n{}",
                    out.describe()
                )
            }
        })
        .collect()
}

/// Asserts that check passed: exit 0 and every line ok.
#[track_caller]
fn assert_check_passes(out: &Outcome) {
    out.assert_code(0);
    let lines = check_lines(out);
    assert!(
        !lines.is_empty(),
        "check printed nothing\n{}",
        out.describe()
    );
    assert!(
        lines.iter().all(|line| line.problem.is_none()),
        "check exited 0 with a missing line\n{}",
        out.describe()
    );
}

/// The GRANT statement a problem quotes in backquotes.
#[track_caller]
fn quoted_grant<'a>(problem: &'a str, out: &Outcome) -> &'a str {
    problem
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|quoted| quoted.starts_with("GRANT "))
        .unwrap_or_else(|| {
            panic!(
                "no `GRANT ...` in backquotes in {problem:?}\n{}",
                out.describe()
            )
        })
}

/// `check` as `role` fails (69) naming exactly one missing thing, `what`,
/// with a GRANT starting `grant_start` and ending `TO role`; the superuser
/// runs exactly that GRANT; then check passes and a load as `role` works.
#[track_caller]
fn missing_grant_is_named_and_its_grant_fixes_it(
    server: &PgServer,
    db: &str,
    role: &str,
    what: &str,
    grant_start: &str,
) {
    let before = server.pgsense_as(db, role).arg("check").run();
    if before.code == Some(0) {
        // Show whether a load agrees: check passing must mean a load works.
        let load = server
            .pgsense_as(db, role)
            .arg("load")
            .stdin(ndjson(0, 3, Shape::Object))
            .run();
        panic!(
            "check passed without {what}; a load as {role} then exits {:?}\n{}\n{}",
            load.code,
            before.describe(),
            load.describe()
        );
    }
    before.assert_code(69);
    let lines = check_lines(&before);
    let missing: Vec<&CheckLine> = lines.iter().filter(|l| l.problem.is_some()).collect();
    assert_eq!(
        missing.len(),
        1,
        "expected exactly one missing line, for {what}\n{}",
        before.describe()
    );
    assert_eq!(missing[0].what, what, "{}", before.describe());
    let problem = missing[0].problem.as_deref().expect("a missing line");
    let grant = quoted_grant(problem, &before);
    assert!(
        grant.starts_with(grant_start) && grant.ends_with(&format!(" TO {role}")),
        "expected `{grant_start} ... TO {role}`, got `{grant}`\n{}",
        before.describe()
    );

    server.execute(db, grant);

    let after = server.pgsense_as(db, role).arg("check").run();
    assert_check_passes(&after);
    // check exits 0 only when a load would succeed.
    server
        .pgsense_as(db, role)
        .arg("load")
        .stdin(ndjson(0, 3, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(db, TABLE), 3);
}

/// A superuser on a fresh database: everything ok, exit 0, and check
/// creates nothing; after init, the table's lines are all ok too.
#[test]
fn check_as_superuser_on_a_fresh_database_is_all_ok() {
    let server = shared();
    let db = server.new_database();
    let out = server.pgsense(&db).arg("check").run();
    assert_check_passes(&out);
    let version = server
        .query_one(&db, "show server_version")
        .expect("server_version is set");
    let connected = &check_lines(&out)[0].what;
    let target = format!("postgres@127.0.0.1:{}/{db}", server.port());
    assert!(
        connected.starts_with("connected to")
            && connected.contains(&target)
            && connected.contains(&version)
            && connected.contains("no TLS"),
        "the first line names the target, the server version and TLS\n{}",
        out.describe()
    );
    assert_eq!(
        server.query_one(
            &db,
            "select count(*) from pg_namespace where nspname = 'pgsense'"
        ),
        Some("0".into()),
        "check must not create anything"
    );

    server.pgsense(&db).arg("init").run().assert_code(0);
    let out = server.pgsense(&db).arg("check").run();
    assert_check_passes(&out);
    let whats: Vec<String> = check_lines(&out).into_iter().map(|l| l.what).collect();
    for expected in [
        "USAGE on schema pgsense",
        "INSERT on table pgsense.findings",
        "USAGE on sequence pgsense.findings_id_seq",
        "column masked_sample",
        "column detected_at",
    ] {
        assert!(
            whats.iter().any(|w| w == expected),
            "no line for {expected:?}\n{}",
            out.describe()
        );
    }
}

/// A role (with its name unique on the shared server) that may log in, for
/// the grant tests: `sql`, run as the superuser in `db` after the role is
/// created, gives it its grants.
fn role_with(server: &PgServer, db: &str, sql: &str) -> String {
    let role = unique("checker_");
    server.execute(db, &format!("CREATE ROLE {role} LOGIN"));
    server.execute(db, &sql.replace("{role}", &role));
    role
}

#[test]
fn check_names_missing_usage_on_the_schema() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = role_with(
        server,
        &db,
        "GRANT INSERT ON pgsense.findings TO {role};
         GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};",
    );
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "USAGE on schema pgsense",
        "GRANT USAGE ON SCHEMA ",
    );
}

#[test]
fn check_names_missing_insert_on_the_table() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = role_with(
        server,
        &db,
        "GRANT USAGE ON SCHEMA pgsense TO {role};
         GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};",
    );
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "INSERT on table pgsense.findings",
        "GRANT INSERT ON ",
    );
}

#[test]
fn check_names_missing_usage_on_the_id_sequence() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let role = role_with(
        server,
        &db,
        "GRANT USAGE ON SCHEMA pgsense TO {role};
         GRANT INSERT ON pgsense.findings TO {role};",
    );
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "USAGE on sequence pgsense.findings_id_seq",
        "GRANT USAGE ON SEQUENCE ",
    );
}

/// Schema and table missing: the role must be able to create the schema.
#[test]
fn check_names_missing_create_on_the_database() {
    let server = shared();
    let db = server.new_database();
    let role = role_with(server, &db, "SELECT 1");
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        &format!("CREATE on database {db}"),
        "GRANT CREATE ON DATABASE ",
    );
}

/// The schema exists (with USAGE), the table does not: the role must be
/// able to create it.
#[test]
fn check_names_missing_create_on_the_schema() {
    let server = shared();
    let db = server.new_database();
    server.execute(&db, "CREATE SCHEMA pgsense");
    let role = role_with(server, &db, "GRANT USAGE ON SCHEMA pgsense TO {role}");
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "CREATE on schema pgsense",
        "GRANT CREATE ON SCHEMA ",
    );
}

/// The schema exists and the role may create the table in it, but has no
/// USAGE on it: a load fails (it cannot use the table it would create), so
/// check must not pass; it names USAGE on the schema.
#[test]
fn check_names_missing_usage_when_the_table_is_yet_to_be_created() {
    let server = shared();
    let db = server.new_database();
    server.execute(&db, "CREATE SCHEMA pgsense");
    let role = role_with(server, &db, "GRANT CREATE ON SCHEMA pgsense TO {role}");
    missing_grant_is_named_and_its_grant_fixes_it(
        server,
        &db,
        &role,
        "USAGE on schema pgsense",
        "GRANT USAGE ON SCHEMA ",
    );
}

/// The scanner's table without one of its columns, or with a column of a
/// type the loader cannot write: check names the column, exit 69.
#[test]
fn check_names_a_missing_or_mistyped_column() {
    let server = shared();
    for (alter, column, says) in [
        (
            "ALTER TABLE pgsense.findings DROP COLUMN masked_sample",
            "masked_sample",
            "no column masked_sample",
        ),
        (
            "ALTER TABLE pgsense.findings ALTER COLUMN lsn TYPE text",
            "lsn",
            "is text",
        ),
    ] {
        let db = server.new_database();
        server.pgsense(&db).arg("init").run().assert_code(0);
        server.execute(&db, alter);
        let out = server.pgsense(&db).arg("check").run();
        out.assert_code(69);
        let lines = check_lines(&out);
        let missing: Vec<&CheckLine> = lines.iter().filter(|l| l.problem.is_some()).collect();
        assert_eq!(missing.len(), 1, "after {alter}\n{}", out.describe());
        assert_eq!(
            missing[0].what,
            format!("column {column}"),
            "{}",
            out.describe()
        );
        let problem = missing[0].problem.as_deref().expect("a missing line");
        assert!(problem.contains(says), "{problem:?}\n{}", out.describe());
    }
}

/// A configuration error is 78, before connecting; a server that cannot be
/// reached is 69.
#[test]
fn check_exits_78_on_bad_config_and_69_without_a_server() {
    let silent = SilentServer::new();
    let out = pgsense()
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .args(["--schema", "not-an-identifier!", "check"])
        .run();
    out.assert_code(78);
    assert!(!silent.was_contacted(), "a config error must not connect");

    let out = pgsense()
        .args(["--host", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--connect-timeout", "5", "check"])
        .run();
    out.assert_code(69).assert_stderr_contains("cannot connect");
}

// --- load --dry-run ------------------------------------------------------------

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

/// The summary line on stderr, without the `pgsense-pg: ` prefix and a dry
/// run's `dry run, nothing written: ` (which a dry run must have).
#[track_caller]
fn summary_line(out: &Outcome, dry_run: bool) -> String {
    let line = out
        .stderr
        .lines()
        .rev()
        .find(|line| line.contains(" read, ") && line.contains(" inserted, "))
        .unwrap_or_else(|| panic!("no summary line\n{}", out.describe()));
    let line = line.strip_prefix("pgsense-pg: ").expect("prefixed");
    match line.strip_prefix("dry run, nothing written: ") {
        Some(rest) if dry_run => rest.to_owned(),
        None if !dry_run => line.to_owned(),
        _ => panic!(
            "dry run {dry_run}, but the summary says otherwise\n{}",
            out.describe()
        ),
    }
}

/// The JSON summary a run printed on stdout, its only output there.
#[track_caller]
fn json_summary(out: &Outcome) -> serde_json::Map<String, Value> {
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
fn number(summary: &serde_json::Map<String, Value>, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a whole number: {summary:?}"))
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

// --- load --summary json ---------------------------------------------------------

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
    assert_eq!(summary["stopped"], Value::Null);
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

// --- load --metrics-file ---------------------------------------------------------

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A file in the Prometheus text exposition format, checked as
/// node_exporter's textfile collector would: every sample's metric has a
/// TYPE line before it (and a HELP line), each family's samples are
/// together, no series twice, a newline at the end.
#[derive(Debug, Default)]
struct Exposition {
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn parse(text: &str) -> Result<Exposition, String> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the last line does not end with a newline".into());
        }
        let mut exposition = Exposition::default();
        let mut families: Vec<String> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", index + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim_start();
                if let Some(rest) = comment.strip_prefix("HELP ") {
                    let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                    metric_name(name).map_err(at)?;
                    if exposition.help.insert(name.into(), help.into()).is_some() {
                        return Err(at("a second HELP".into()));
                    }
                } else if let Some(rest) = comment.strip_prefix("TYPE ") {
                    let (name, kind) = rest
                        .split_once(' ')
                        .ok_or_else(|| at("TYPE without a type".into()))?;
                    metric_name(name).map_err(at)?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if families.iter().any(|f| f == name) {
                        return Err(at("TYPE after samples of its metric".into()));
                    }
                    if exposition.kind.insert(name.into(), kind.into()).is_some() {
                        return Err(at("a second TYPE".into()));
                    }
                }
                continue;
            }
            let sample = parse_sample(line).map_err(at)?;
            let family = exposition.family(&sample.name);
            if !exposition.kind.contains_key(&family) {
                return Err(at(format!("no TYPE line for {family} before it")));
            }
            if families.last() != Some(&family) {
                if families.contains(&family) {
                    return Err(at(format!("samples of {family} are not together")));
                }
                families.push(family);
            }
            if exposition
                .samples
                .iter()
                .any(|s| s.name == sample.name && s.labels == sample.labels)
            {
                return Err(at("the same series twice".into()));
            }
            exposition.samples.push(sample);
        }
        if let Some(name) = exposition
            .kind
            .keys()
            .find(|name| !exposition.help.contains_key(*name))
        {
            return Err(format!("{name} has a TYPE line but no HELP line"));
        }
        Ok(exposition)
    }

    /// The metric a sample belongs to (a histogram's `_bucket` belongs to
    /// the histogram).
    fn family(&self, name: &str) -> String {
        if !self.kind.contains_key(name) {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix)
                    && matches!(
                        self.kind.get(base).map(String::as_str),
                        Some("histogram" | "summary")
                    )
                {
                    return base.into();
                }
            }
        }
        name.into()
    }

    /// The value of the series `name{labels}`, or a panic.
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in {:#?}", self.samples))
            .value
    }
}

fn metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    valid
        .then_some(())
        .ok_or_else(|| format!("invalid metric name {name:?}"))
}

fn label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid
        .then_some(())
        .ok_or_else(|| format!("invalid label name {name:?}"))
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let end = line
        .find(['{', ' ', '\t'])
        .ok_or("a sample without a value")?;
    let name = &line[..end];
    metric_name(name)?;
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            inside = inside.trim_start();
            if let Some(after) = inside.strip_prefix('}') {
                inside = after;
                break;
            }
            let (label, after) = inside.split_once('=').ok_or("a label without =")?;
            let label = label.trim();
            label_name(label)?;
            let mut chars = after
                .trim_start()
                .strip_prefix('"')
                .ok_or("a label value not in double quotes")?
                .chars();
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("an unterminated label value".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("a bad escape \\{other:?}")),
                    },
                    Some(c) => value.push(c),
                }
            }
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            inside = chars.as_str().trim_start();
            if let Some(after) = inside.strip_prefix(',') {
                inside = after;
            } else if !inside.starts_with('}') {
                return Err("expected , or } after a label".into());
            }
        }
        rest = inside;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value".into());
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => value
            .parse()
            .map_err(|_| format!("value {value:?} is not a number"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("timestamp {timestamp:?} is not an integer"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The parser accepts the format and refuses what node_exporter would: it
/// is a check, not a formality.
#[test]
fn prometheus_parser_refuses_malformed_text() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\n\
                a_total{k=\"v\\\"q\\\\\\n\",j=\"2\",} 3\na_total 4 1700000000000\n\
                # HELP h A histogram.\n# TYPE h histogram\n\
                h_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n# a comment\n\n";
    let parsed = Exposition::parse(good).expect("valid exposition");
    assert_eq!(
        parsed.value("a_total", &[("k", "v\"q\\\n"), ("j", "2")]),
        3.0
    );
    assert_eq!(parsed.value("h_count", &[]), 1.0);
    for bad in [
        "# HELP a x\n# TYPE a gauge\na 1",        // no final newline
        "a 1\n",                                  // no TYPE
        "# HELP a x\na 1\n# TYPE a gauge\n",      // TYPE after
        "# HELP a x\n# TYPE a gauge\na{k=v} 1\n", // unquoted
        "# HELP a x\n# TYPE a gauge\na one\n",    // not a number
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n", // twice
        "# HELP a x\n# TYPE a gauge\na{k=\"1\"} 1\n# HELP b x\n# TYPE b gauge\nb 1\na 2\n", // apart
        "# TYPE a gauge\na 1\n",                  // no HELP
        "# HELP a x\n# TYPE a metre\na 1\n",      // type
        "# HELP 1a x\n# TYPE 1a gauge\n1a 1\n",   // name
        "# HELP a x\n# TYPE a gauge\na{k=\"1\" 1\n", // unclosed
    ] {
        assert!(
            Exposition::parse(bad).is_err(),
            "accepted malformed text {bad:?}"
        );
    }
}

/// Reads and parses a metrics file, or panics with its text.
#[track_caller]
fn read_metrics(path: &Path) -> Exposition {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Exposition::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not Prometheus text: {e}\n{text}", path.display()))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
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

    // A second, clean run replaces the file whole.
    let inode = fs::metadata(&metrics).expect("metrics file").ino();
    let clean = scratch.write("clean.jsonl", ndjson(100, 5, Shape::Object));
    server
        .pgsense(&db)
        .args(["load", "--metrics-file"])
        .arg(&metrics)
        .arg(&clean)
        .run()
        .assert_code(0);
    let m = read_metrics(&metrics);
    assert_eq!(
        m.value(
            "pgsense_alerts_total",
            &[("channel", "postgres"), ("status", "ok")]
        ),
        5.0
    );
    assert_eq!(
        m.value(
            "pgsense_alerts_total",
            &[("channel", "postgres"), ("status", "error")]
        ),
        0.0
    );
    assert_eq!(m.value("pgsense_pg_last_run_exit_status", &[]), 0.0);
    assert_ne!(
        fs::metadata(&metrics).expect("metrics file").ino(),
        inode,
        "the metrics file must be replaced by rename, not rewritten in place"
    );
    let left: Vec<String> = fs::read_dir(&metrics_dir)
        .expect("read the textfile directory")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert_eq!(left, ["pgsense_pg.prom"], "only the metrics file is left");
}

// --- load --max-rejects ------------------------------------------------------------

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

// --- progress --------------------------------------------------------------------

/// Findings, one per line, until the text is over `bytes` long.
fn findings_over(bytes: usize) -> (String, u64) {
    let mut text = String::with_capacity(bytes + 4096);
    let mut count = 0;
    while text.len() <= bytes {
        text += &Finding::sample(count).line(Shape::Object);
        text.push('\n');
        count += 1;
    }
    (text, count)
}

/// A word for `sh -c`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// How a load is run for the progress tests.
enum Stderr {
    /// Under a pseudo-terminal (`script`): stdout and stderr are the terminal.
    Terminal,
    /// A pipe.
    Pipe,
}

/// Loads `file` into `db` (initialised) while the table is locked, so the
/// load lasts over a second whatever the machine's speed: the lock is held
/// until the loader's COPY waits on it, and one second longer. Returns what
/// the terminal showed (stdout and stderr together) or stderr.
fn load_while_locked(
    server: &PgServer,
    db: &str,
    file: &Path,
    extra: &[&str],
    stderr: Stderr,
) -> Finished {
    let mut lock = server.client(db);
    lock.batch_execute("BEGIN; LOCK TABLE pgsense.findings IN EXCLUSIVE MODE")
        .expect("lock the findings table");
    let mut args: Vec<String> = [
        env!("CARGO_BIN_EXE_pgsense-pg"),
        "--host",
        server.host(),
        "--port",
        &server.port().to_string(),
        "--dbname",
        db,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["load".to_owned(), file.display().to_string()]);
    let mut cmd = match stderr {
        Stderr::Terminal => {
            let line: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
            let mut cmd = Command::new("script");
            cmd.args(["-qec", &line.join(" "), "/dev/null"]);
            cmd
        }
        Stderr::Pipe => {
            let mut cmd = Command::new(&args[0]);
            cmd.args(&args[1..]);
            cmd
        }
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let mut running = process::spawn(&mut cmd, process::Stdin::Null, "pgsense-pg load");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting = server.query_one(
            db,
            "select count(*) from pg_stat_activity where datname = current_database() \
             and wait_event_type = 'Lock' and query ilike 'COPY%'",
        );
        if waiting.as_deref() != Some("0") {
            break;
        }
        if running.has_exited() || Instant::now() > deadline {
            let finished = running.wait(Duration::from_secs(10));
            panic!(
                "the load never waited on the locked table: {}\n--- stdout ---\n{}--- stderr ---\n{}",
                finished.status, finished.stdout, finished.stderr
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    // A progress line is drawn every quarter second.
    thread::sleep(Duration::from_secs(1));
    lock.batch_execute("COMMIT").expect("release the lock");
    running.wait(Duration::from_secs(120))
}

/// Whether the text holds a progress line for an input of `total` bytes.
fn has_progress(text: &str, total: u64) -> bool {
    let total = format!("/{:.1} MB (", total as f64 / 1e6);
    text.split('\r').any(|part| {
        part.starts_with("\x1b[K")
            && part.contains(&total)
            && part.contains(" lines ")
            && part.contains(" rows/s")
            && part.contains("ETA")
    })
}

/// None (and a note) when `program` is not installed outside CI; under CI
/// a missing program is a failure, naming the package .ci/run installs.
#[track_caller]
fn installed(program: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{program} is not installed, and CI is set: a missing {program} is a failure \
                 there; .ci/run must install it (apt-get install {package})"
            );
        }
        eprintln!("note: {program} is not installed: test skipped (apt-get install {package})");
    }
    found
}

/// A regular file over 4 MiB, stderr a terminal: the progress line shows,
/// and is cleared before the summary.
#[test]
fn progress_shows_under_a_terminal_for_a_large_file() {
    if installed("script", "bsdutils").is_none() {
        return;
    }
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let scratch = Scratch::new();
    let (text, count) = findings_over(4_500_000);
    let file = scratch.write("large.jsonl", &text);
    let size = text.len() as u64;

    let shown = load_while_locked(server, &db, &file, &[], Stderr::Terminal);
    assert_eq!(shown.status.code(), Some(0), "{shown:?}");
    assert!(
        has_progress(&shown.stdout, size),
        "no progress line on the terminal:\n{:?}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains(&format!(
            "\r\x1b[Kpgsense-pg: {count} read, {count} inserted"
        )),
        "the progress line is cleared before the summary:\n{:?}",
        shown.stdout
    );
    assert_eq!(server.count(&db, TABLE), count as i64);
}

/// Nothing of the kind in a pipe, with -q, or for a small file.
#[test]
fn no_progress_in_a_pipe_with_quiet_or_for_a_small_file() {
    if installed("script", "bsdutils").is_none() {
        return;
    }
    let server = shared();
    let scratch = Scratch::new();
    let (large, large_count) = findings_over(4_500_000);
    let large_file = scratch.write("large.jsonl", &large);
    let (small, small_count) = findings_over(1_000_000);
    let small_file = scratch.write("small.jsonl", &small);
    let cases: [(&Path, &[&str], Stderr, u64); 3] = [
        (large_file.as_path(), &[], Stderr::Pipe, large_count),
        (large_file.as_path(), &["-q"], Stderr::Terminal, large_count),
        (small_file.as_path(), &[], Stderr::Terminal, small_count),
    ];
    for (file, extra, stderr, count) in cases {
        let db = server.new_database();
        server.pgsense(&db).arg("init").run().assert_code(0);
        let size = fs::metadata(file).expect("input").len();
        let out = load_while_locked(server, &db, file, extra, stderr);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !has_progress(text, size) && !text.contains("rows/s") && !text.contains("\x1b["),
                "unexpected progress for {} {extra:?}:\n{text:?}",
                file.display()
            );
        }
        assert_eq!(server.count(&db, TABLE), count as i64);
    }
}

// --- completions --------------------------------------------------------------------

/// A completion file of the repository.
fn completion_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("completions")
        .join(name)
}

/// Runs a shell in a scrubbed environment with HOME (and fish's XDG
/// directories) in `home`, bounded in time.
fn run_shell(program: &Path, args: &[&str], home: &Path) -> Finished {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .current_dir(home);
    let finished = process::spawn(
        &mut cmd,
        process::Stdin::Null,
        &program.display().to_string(),
    )
    .wait(Duration::from_secs(30));
    assert!(
        finished.status.success(),
        "{} failed: {finished:?}",
        program.display()
    );
    finished
}

#[track_caller]
fn assert_offers_load(shell: &str, offered: &[String], finished: &Finished) {
    assert!(
        offered.iter().any(|word| word == "load"),
        "{shell} does not offer `load` for `pgsense-pg l`: {offered:?}\n{finished:?}"
    );
}

/// The bash completion, sourced in real bash, offers `load` for
/// `pgsense-pg l`.
#[test]
fn bash_completes_l_to_load() {
    let Some(bash) = installed("bash", "bash") else {
        return;
    };
    let scratch = Scratch::new();
    const SCRIPT: &str = r#"
source "$1" || exit 3
spec=$(complete -p pgsense-pg) || { echo "no completion for pgsense-pg" >&2; exit 4; }
function=${spec##*-F }
function=${function%% *}
COMP_LINE="pgsense-pg l"
COMP_POINT=${#COMP_LINE}
COMP_WORDS=(pgsense-pg l)
COMP_CWORD=1
COMP_TYPE=9
COMP_KEY=9
"$function" pgsense-pg l pgsense-pg
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let file = completion_file("pgsense-pg.bash");
    let finished = run_shell(
        &bash,
        &[
            "--norc",
            "--noprofile",
            "-c",
            SCRIPT,
            "bash",
            &file.display().to_string(),
        ],
        scratch.path(),
    );
    let offered: Vec<String> = finished.stdout.lines().map(str::to_owned).collect();
    assert_offers_load("bash", &offered, &finished);
}

/// The zsh completion, installed in $fpath with compinit, in an interactive
/// zsh on a pseudo-terminal (zsh/zpty): Tab after `pgsense-pg l` offers
/// `load`. compadd is wrapped to print each match it adds.
#[test]
fn zsh_completes_l_to_load() {
    let Some(zsh) = installed("zsh", "zsh") else {
        return;
    };
    let scratch = Scratch::new();
    let functions = scratch.path().join("functions");
    fs::create_dir(&functions).expect("create the fpath directory");
    fs::copy(
        completion_file("_pgsense-pg"),
        functions.join("_pgsense-pg"),
    )
    .expect("copy _pgsense-pg");
    // Markers are split in the source so that the terminal's echo of it
    // never matches them.
    const HARNESS: &str = r#"
zmodload zsh/zpty || { print -u2 'no zsh/zpty module'; exit 3 }
zpty completer zsh -f -i
zpty -w completer "PROMPT= RPROMPT=
fpath=(${(q)1} \$fpath)
autoload -U compinit && compinit -u -D
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
compadd() {
  if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\\ * ]]; then builtin compadd \"\$@\"; return; fi
  local -a __hits
  builtin compadd -A __hits \"\$@\"
  local __hit; for __hit in \$__hits; do print -r -- \"<m\"\"atch>\$__hit</match>\"; done
  builtin compadd \"\$@\"
}
__completion_done() { print -r -- '<''done>' }
comppostfuncs=(__completion_done)
bindkey '^I' complete-word
print -r -- '<''ready>'"
out=
while zpty -r completer line; do out+=$line; [[ $out == *'<ready>'* ]] && break; done
[[ $out == *'<ready>'* ]] || { print -u2 -r -- "zsh did not start: $out"; exit 4 }
zpty -w -n completer "$2"$'\t'
out=
while zpty -r completer line; do out+=$line; [[ $out == *'<done>'* ]] && break; done
zpty -d completer
print -r -- $out
"#;
    let harness = scratch.write("harness.zsh", HARNESS);
    let finished = run_shell(
        &zsh,
        &[
            "-f",
            &harness.display().to_string(),
            &functions.display().to_string(),
            "pgsense-pg l",
        ],
        scratch.path(),
    );
    assert!(
        finished.stdout.contains("<done>"),
        "the completion did not finish: {finished:?}"
    );
    let offered: Vec<String> = finished
        .stdout
        .split("<match>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</match>"))
        .map(|(word, _)| word.to_owned())
        .collect();
    assert_offers_load("zsh", &offered, &finished);
}

/// The fish completion, sourced in real fish, offers `load` for
/// `pgsense-pg l`.
#[test]
fn fish_completes_l_to_load() {
    let Some(fish) = installed("fish", "fish") else {
        return;
    };
    let scratch = Scratch::new();
    let file = completion_file("pgsense-pg.fish");
    let finished = run_shell(
        &fish,
        &[
            "--no-config",
            "-c",
            "source $argv[1]; or exit 3; complete -C 'pgsense-pg l'",
            &file.display().to_string(),
        ],
        scratch.path(),
    );
    let offered: Vec<String> = finished
        .stdout
        .lines()
        .map(|line| line.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    assert_offers_load("fish", &offered, &finished);
}
