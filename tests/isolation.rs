//! Per-row isolation inside COPY batches (issue 3): a row the server refuses
//! drops only itself, wherever it sits in a batch, whether the server names
//! its line (CHECK constraint, trigger) or not (a deferred constraint
//! trigger, which fails at COMMIT and makes the loader bisect).

use crate::support::findings::{assert_rows, rows};
use crate::support::{Finding, Shape, shared};

const TABLE: &str = "pgsense.findings";

/// Ten rows a batch; lines refused: the first and the last row of the second
/// batch, two rows of the third, and the whole fourth batch.
const BATCH_ROWS: u64 = 10;
const LINES: u64 = 50;

fn refused(line: u64) -> bool {
    matches!(line, 11 | 20 | 23 | 27 | 31..=40)
}

/// Input where the refused lines carry rule_id "refuse-me"; the findings
/// expected in the table.
fn input() -> (String, Vec<Finding>) {
    let mut text = String::new();
    let mut kept = Vec::new();
    for line in 1..=LINES {
        let mut finding = Finding::sample(line);
        if refused(line) {
            finding.rule_id = "refuse-me".into();
            // Rows without a timestamp go in a COPY of their own.
            if line % 2 == 0 {
                finding.timestamp = None;
            }
        } else {
            kept.push(finding.clone());
        }
        text += &finding.line(Shape::Object);
        text.push('\n');
    }
    (text, kept)
}

fn load_with(setup: &str, reason: &str) {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    server.execute(&db, setup);
    let (text, kept) = input();
    let out = server
        .pgsense(&db)
        .args(["load", "--batch-rows", &BATCH_ROWS.to_string()])
        .stdin(text)
        .run();
    let expected: Vec<u64> = (1..=LINES).filter(|l| refused(*l)).collect();
    out.assert_code(65).assert_stderr_contains(&format!(
        "{LINES} read, {} inserted, {} dropped (0 invalid, {} refused by the server",
        kept.len(),
        expected.len(),
        expected.len()
    ));
    // In input order, whichever COPY and whichever bisection step found them.
    assert_eq!(
        out.rejected_line_numbers("-"),
        expected,
        "{}",
        out.describe()
    );
    for line in &expected {
        assert!(
            out.reject_reason("-", *line).contains(reason),
            "line {line}: the server's reason is given\n{}",
            out.describe()
        );
    }
    assert_rows(&rows(server, &db, TABLE), &kept);
}

#[test]
fn a_check_constraint_drops_only_the_refused_rows_wherever_they_sit() {
    load_with(
        "alter table pgsense.findings add constraint no_refusals check (rule_id <> 'refuse-me')",
        "no_refusals",
    );
}

#[test]
fn a_trigger_exception_drops_only_the_refused_rows() {
    load_with(
        "create function pgsense.refuse() returns trigger language plpgsql as $$
         begin
           if new.rule_id = 'refuse-me' then raise exception 'refused by policy'; end if;
           return new;
         end $$;
         create trigger refuse before insert on pgsense.findings
         for each row execute function pgsense.refuse()",
        "refused by policy",
    );
}

/// A deferred constraint trigger fails at COMMIT, with no COPY line number:
/// the loader finds the refused rows by bisecting.
#[test]
fn an_error_at_commit_without_a_line_number_is_bisected() {
    load_with(
        "create function pgsense.refuse_late() returns trigger language plpgsql as $$
         begin
           if new.rule_id = 'refuse-me' then raise exception 'refused at commit'; end if;
           return null;
         end $$;
         create constraint trigger refuse_late after insert on pgsense.findings
         deferrable initially deferred
         for each row execute function pgsense.refuse_late()",
        "refused at commit",
    );
}

/// Two neighbouring batches that hit one unique index with the same value:
/// the later batch, copied first, holds the row the earlier one waits for,
/// while it waits for the earlier one's turn to commit. It lets go after a
/// while, the earlier batch commits, and the later one's row is refused: no
/// stall until --retry-for runs out (issue 10).
#[test]
fn batches_hitting_one_unique_value_do_not_wait_on_each_other() {
    use crate::support::markers::{each_once_after, finding, table_markers};
    let server = crate::support::shared();
    let db = server.new_database();
    crate::support::run::init(server, &db);
    server.execute(&db, "CREATE UNIQUE INDEX ON pgsense.findings (lsn)");
    // The earlier batch is held at its first row until the later one is
    // copied (it then holds the shared value) and waits for its turn.
    server.execute(
        &db,
        "CREATE FUNCTION pgsense.gate() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF new.lsn = 1 THEN PERFORM pg_advisory_xact_lock_shared(4343); END IF;
             RETURN new;
         END $$;
         CREATE TRIGGER gate BEFORE INSERT ON pgsense.findings
         FOR EACH ROW EXECUTE FUNCTION pgsense.gate();",
    );
    let mut gate = server.client(&db);
    gate.batch_execute("SELECT pg_advisory_lock(4343)")
        .expect("close the gate");
    let scratch = crate::support::Scratch::new();
    // Line 20000 ends the first batch and line 20001 starts the second,
    // both with marker 20001.
    let text: String = (1..=40_000u64)
        .map(|line| finding(if line == 20_000 { 20_001 } else { line }) + "\n")
        .collect();
    let input = scratch.write("findings.ndjson", text);
    let started = std::time::Instant::now();
    let load = server
        .pgsense(&db)
        .arg("load")
        .args(["--batch-rows", "20000", "--batch-bytes", "67108864"])
        .arg(&input)
        .timeout(std::time::Duration::from_secs(120))
        .spawn();
    let load = crate::support::wait::wait_during(
        load,
        "the later batch copied, waiting for its turn",
        std::time::Duration::from_secs(60),
        || {
            server.count(
                &db,
                "pg_stat_activity where datname = current_database() \
                 and application_name = 'pgsense-pg' and state = 'idle in transaction' \
                 and now() - state_change > interval '500 ms'",
            ) > 0
                && server.count(
                    &db,
                    "pg_stat_activity where datname = current_database() \
                     and application_name = 'pgsense-pg' and wait_event = 'advisory'",
                ) > 0
        },
    );
    gate.batch_execute("SELECT pg_advisory_unlock(4343)")
        .expect("open the gate");
    let out = load.wait();
    let took = started.elapsed();
    out.assert_code(65)
        .assert_stderr_contains("40000 read, 39999 inserted, 1 dropped (0 invalid, 1 refused");
    assert!(
        took < std::time::Duration::from_secs(45),
        "took {took:?}\n{}",
        out.describe()
    );
    let markers = each_once_after(&table_markers(server, &db), "the table", Some(&out));
    let expected: std::collections::BTreeSet<u64> = (1..=19_999).chain(20_001..=40_000).collect();
    assert!(markers == expected, "{}", out.describe());
}

/// A BEFORE INSERT trigger that returns NULL skips rows without refusing
/// them: the server takes fewer rows than it was sent. They are counted as
/// skipped, not inserted, beside a row another trigger refuses in the same
/// batches, and each batch says how many it lost so. Before, they were
/// counted as inserted.
#[test]
fn rows_a_trigger_skips_are_counted_as_skipped_not_inserted() {
    use crate::support::markers::{assert_table_holds_after, findings};
    use crate::support::report::json_summary;
    let server = shared();
    let db = server.new_database();
    crate::support::run::init(server, &db);
    server.execute(
        &db,
        "CREATE FUNCTION pgsense.triage() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF new.lsn = 5 THEN RAISE EXCEPTION 'refused by policy'; END IF;
             IF new.lsn % 3 = 0 THEN RETURN NULL; END IF;
             RETURN new;
         END $$;
         CREATE TRIGGER triage BEFORE INSERT ON pgsense.findings
         FOR EACH ROW EXECUTE FUNCTION pgsense.triage();",
    );
    let out = server
        .pgsense(&db)
        .args(["load", "--batch-rows", "7", "--summary", "json"])
        .stdin(findings(1..=30))
        .run();
    out.assert_code(65)
        .assert_stderr_contains("30 read, 19 inserted, 1 dropped")
        .assert_stderr_contains("; 10 skipped by a trigger")
        .assert_stderr_contains(
            "-: lines 1 to 7: 2 rows not taken by the table: a BEFORE INSERT trigger",
        );
    let summary = json_summary(&out);
    assert_eq!(summary["inserted"], 19, "{}", out.describe());
    assert_eq!(summary["skipped_by_trigger"], 10, "{}", out.describe());
    assert_eq!(summary["refused_by_server"], 1, "{}", out.describe());
    assert_table_holds_after(
        server,
        &db,
        (1..=30).filter(|m| m % 3 != 0 && *m != 5),
        Some(&out),
    );
}
