//! A COMMIT whose answer is lost (issue 4, "Tests"): through a proxy that
//! cuts the connection at a batch's COMMIT, every finding ends up in the
//! table exactly once, whatever became of that COMMIT.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::journal::journaled_txids;
use crate::support::markers::{
    assert_table_holds_after, each_once_after, file_markers, finding, table_markers, write_findings,
};
use crate::support::proxy::{After, CommitCutter, CutAt};
use crate::support::run::init;
use crate::support::{Scratch, TABLE, shared};

/// A load through a [`CommitCutter`]: the run ends 0 with every finding in
/// the table exactly once, whatever became of the cut COMMIT.
fn commit_cut(at: CutAt) {
    const COUNT: u64 = 20_000;
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", COUNT);
    let proxy = CommitCutter::start(server.port(), at);
    let out = server
        .pgsense(&db)
        .args(["--port", &proxy.port.to_string()])
        .arg("load")
        .args(["--batch-rows", "1000"])
        .arg(&input)
        .timeout(Duration::from_secs(30))
        .run();
    assert_eq!(
        proxy.cuts(),
        1,
        "the proxy never saw a batch's COMMIT: nothing was tested\n{}",
        out.describe()
    );
    out.assert_code(0)
        .assert_stderr_contains(&format!("{COUNT} read, {COUNT} inserted, 0 dropped"));
    assert_table_holds_after(server, &db, 1..=COUNT, Some(&out));
}

/// The server commits a batch and the answer never arrives: the loader asks
/// txid_status() on a new connection and does not send the batch again.
#[test]
fn a_lost_commit_answer_is_resolved_without_duplicates() {
    commit_cut(CutAt::AnswerLost);
}

/// COMMIT never reaches the server, which rolls back: the loader learns so
/// and sends the batch again.
#[test]
fn a_commit_that_never_arrives_is_resent_without_loss() {
    commit_cut(CutAt::CommitLost);
}

/// The server answers COMMIT and the backend is terminated at once, so the
/// FATAL error arrives with the answer: the batch committed, and a FATAL
/// error is not the server saying it did not (the driver may report the
/// error rather than the answer). Seen as duplicated batches when
/// pg_terminate_backend runs repeatedly during a load; made deterministic
/// here.
#[test]
fn a_fatal_error_right_after_a_commit_does_not_resend_the_batch() {
    commit_cut(CutAt::FatalAfterAnswer);
}

/// The answer to a batch's COMMIT is lost and the server then looks gone
/// for longer than --retry-for: with a state file the batch is neither
/// resent nor written to the reject file, and the next run asks the server
/// whether it committed (issue 10).
#[test]
fn an_unknown_commit_outcome_is_settled_by_the_next_run() {
    const COUNT: u64 = 6_000;
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", COUNT);
    let state = scratch.path().join("state");
    let rejects = scratch.path().join("rejects.ndjson");
    let load = |port: u16| {
        server
            .pgsense(&db)
            .args(["--port", &port.to_string(), "--connect-timeout", "2"])
            .arg("load")
            .args(["--batch-rows", "500", "--retry-for", "2"])
            .arg("--state-file")
            .arg(&state)
            .arg("--reject-file")
            .arg(&rejects)
            .arg(&input)
            .timeout(Duration::from_secs(60))
            .run()
    };
    // The fifth batch's: four before it are settled, in the journal.
    let proxy = CommitCutter::start_after(server.port(), CutAt::AnswerLost, After::Refuse, 4);
    let cut = load(proxy.port);
    assert_eq!(proxy.cuts(), 1, "no COMMIT was cut\n{}", cut.describe());
    // The lines after the batch in doubt stay in the file, for the next
    // run: not lost.
    cut.assert_code(75)
        .assert_stderr_contains("may or may not be in the table")
        .assert_stderr_contains(" 0 lost to database failures")
        .assert_stderr_contains("left in their files for the next run");
    assert_eq!(
        std::fs::read(&rejects).expect("reject file"),
        b"",
        "lines of unknown outcome were written to the reject file\n{}",
        cut.describe()
    );
    // Only the batch in doubt is left to settle: those before it are in
    // the state file, and asking about them again could only go wrong (a
    // server crash since makes each such question need SELECT).
    let txids: BTreeSet<u64> = journaled_txids(&scratch.path().join("state.journal"))
        .into_iter()
        .collect();
    assert_eq!(txids.len(), 1, "{txids:?}\n{}", cut.describe());
    let again = load(server.port());
    again.assert_code(0);
    assert_table_holds_after(server, &db, 1..=COUNT, Some(&again));
    assert_eq!(std::fs::read(&rejects).expect("reject file"), b"");
}

/// The same without a state file: the batch of unknown outcome goes to the
/// reject file, and the lines of it that were rejected before COMMIT (and
/// written to the reject file then) are not written a second time.
#[test]
fn an_unknown_commit_outcome_writes_each_rejected_line_once() {
    const COUNT: u64 = 6_000;
    let invalid = |marker: u64| marker.is_multiple_of(10);
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let text: String = (1..=COUNT)
        .map(|m| match invalid(m) {
            true => finding(m).replace("\"HIGH\"", "\"NOPE\"") + "\n",
            false => finding(m) + "\n",
        })
        .collect();
    let input = scratch.write("findings.ndjson", text);
    let rejects = scratch.path().join("rejects.ndjson");
    let proxy = CommitCutter::start_then(server.port(), CutAt::AnswerLost, After::Refuse);
    let cut = server
        .pgsense(&db)
        .args(["--port", &proxy.port.to_string(), "--connect-timeout", "2"])
        .arg("load")
        .args(["--batch-rows", "500", "--retry-for", "2"])
        .arg("--reject-file")
        .arg(&rejects)
        .arg(&input)
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(proxy.cuts(), 1, "no COMMIT was cut\n{}", cut.describe());
    cut.assert_code(75)
        .assert_stderr_contains("500 of unknown outcome");
    let rejected = each_once_after(&file_markers(&rejects), "the reject file", Some(&cut));
    let in_table = each_once_after(&table_markers(server, &db), "the table", Some(&cut));
    let everywhere: BTreeSet<u64> = rejected.union(&in_table).copied().collect();
    assert_eq!(
        everywhere,
        (1..=COUNT).collect(),
        "lines are in neither\n{}",
        cut.describe()
    );
}

/// The answer to a COMMIT is lost, and the server refuses, every time, to
/// say how that transaction ended (here the role may not run
/// txid_status()): the run says why and stops after a few tries. Before,
/// it asked on, silently, until --retry-for ran out, and without end in
/// --follow.
#[test]
fn a_server_that_refuses_to_say_how_a_commit_ended_ends_the_run_saying_so() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let role = crate::support::pg::unique("loader_");
    server.execute(
        &db,
        &format!(
            "CREATE ROLE {role} LOGIN; \
             GRANT USAGE ON SCHEMA pgsense TO {role}; \
             GRANT INSERT ON {TABLE} TO {role}; \
             GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role}; \
             REVOKE EXECUTE ON FUNCTION txid_status(bigint) FROM PUBLIC;"
        ),
    );
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", 3_000);
    let proxy = CommitCutter::start(server.port(), CutAt::AnswerLost);
    let out = server
        .pgsense_as(&db, &role)
        .args(["--port", &proxy.port.to_string()])
        .arg("load")
        .args(["--batch-rows", "1000", "--retry-for", "3600"])
        .arg(&input)
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(proxy.cuts(), 1, "no COMMIT was cut\n{}", out.describe());
    out.assert_code(75)
        .assert_stderr_contains("is not known: the server refused to say")
        .assert_stderr_contains("permission denied for function txid_status");
}

/// Trigger-based partitioning: a BEFORE INSERT trigger writes each row to
/// a child table and returns NULL, so COPY says it took none. A COMMIT
/// whose answer is lost, and a crash of the server before the next run
/// (which makes the next run check the batch against its rows): the rows
/// are found in the child, under the transaction's id, and the batch is
/// settled as committed, each line once.
#[test]
fn a_batch_a_trigger_routed_to_a_child_table_is_settled_after_a_crash() {
    settled_after_a_crash(
        "CREATE TABLE pgsense.findings_child () INHERITS (pgsense.findings);
         CREATE FUNCTION pgsense.route() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO pgsense.findings_child SELECT new.*;
             RETURN NULL;
         END $$;
         CREATE TRIGGER route BEFORE INSERT ON pgsense.findings
         FOR EACH ROW EXECUTE FUNCTION pgsense.route();",
        true,
    );
}

/// The same with an lsn column of numeric with a scale, whose values
/// (and their sum) the server shows with decimals.
#[test]
fn a_batch_with_lsns_stored_as_decimals_is_settled_after_a_crash() {
    settled_after_a_crash(
        "ALTER TABLE pgsense.findings ALTER lsn TYPE numeric(20,2)",
        false,
    );
}

/// A batch whose COMMIT answer is lost, then a server crash, with the
/// table changed by `setup` first: the next run settles the batch from
/// its rows. `routed`: a trigger skips every row (writing it elsewhere).
fn settled_after_a_crash(setup: &str, routed: bool) {
    const COUNT: u64 = 3_000;
    let server = crate::support::pg::private_with(&["synchronous_commit = on"]);
    let db = server.new_database();
    init(&server, &db);
    server.execute(&db, setup);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", COUNT);
    let state = scratch.path().join("state");
    let load = |port: u16| {
        server
            .pgsense(&db)
            .args(["--port", &port.to_string(), "--connect-timeout", "2"])
            .arg("load")
            .args([
                "--batch-rows",
                "500",
                "--retry-for",
                "2",
                "--summary",
                "json",
            ])
            .arg("--state-file")
            .arg(&state)
            .arg(&input)
            .timeout(Duration::from_secs(60))
            .run()
    };
    let proxy = CommitCutter::start_after(server.port(), CutAt::AnswerLost, After::Refuse, 2);
    let cut = load(proxy.port);
    assert_eq!(proxy.cuts(), 1, "no COMMIT was cut\n{}", cut.describe());
    cut.assert_code(75);
    let skipped = crate::support::report::json_summary(&cut)["skipped_by_trigger"].clone();
    assert_eq!(skipped.as_u64() > Some(0), routed, "{}", cut.describe());
    server.stop_immediate();
    server.start();
    let again = load(server.port());
    again.assert_code(0);
    assert_table_holds_after(&server, &db, 1..=COUNT, Some(&again));
}
