//! kill -9 at any moment, then the same command again (issue 10): every
//! line of the input ends up exactly once in the table or the reject file,
//! and the reject file holds only whole lines. The loader is stopped dead
//! at named points (PGSENSE_PG_CRASH_AT) and at moments picked by time, and
//! the server may crash too before the next run settles what it left.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::journal::journaled_txids;
use crate::support::markers::{
    assert_disjoint, each_once_after, file_markers, finding, table_markers,
};
use crate::support::process::send_signal;
use crate::support::run::{Outcome, Pgsense, init};
use crate::support::wait::wait_until;
use crate::support::{PgServer, Scratch, TABLE, private_with, shared};

const ROWS: u64 = 30_000;
const BATCH_ROWS: &str = "500";

/// Lines the loader rejects as invalid (a bad severity: still JSON with a
/// marker, so the reject file can be read back).
fn invalid(marker: u64) -> bool {
    marker.is_multiple_of(97)
}

/// Lines the server refuses (a CHECK constraint).
fn refused(marker: u64) -> bool {
    marker.is_multiple_of(89) && !invalid(marker)
}

fn line(marker: u64) -> String {
    if invalid(marker) {
        finding(marker).replace("\"HIGH\"", "\"NOPE\"")
    } else if refused(marker) {
        finding(marker).replace("ja****om", "refuse-me")
    } else {
        finding(marker)
    }
}

struct Setup {
    scratch: Scratch,
    db: String,
    input: PathBuf,
}

impl Setup {
    fn new(server: &PgServer) -> Setup {
        let db = server.new_database();
        init(server, &db);
        server.execute(
            &db,
            &format!("ALTER TABLE {TABLE} ADD CHECK (masked_sample <> 'refuse-me')"),
        );
        let scratch = Scratch::new();
        let text: String = (1..=ROWS).map(|m| line(m) + "\n").collect();
        let input = scratch.write("findings.ndjson", text);
        Setup { scratch, db, input }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// The transaction ids in the state journal a killed run left.
    fn journaled_txids(&self) -> Vec<u64> {
        journaled_txids(&self.path("state.journal"))
    }

    /// The same command every time: state file, reject file, small batches.
    fn load(&self, server: &PgServer) -> Pgsense {
        self.load_in_batches_of(server, BATCH_ROWS)
    }

    fn load_in_batches_of(&self, server: &PgServer, rows: &str) -> Pgsense {
        self.load_as(server, "postgres", rows)
    }

    fn load_as(&self, server: &PgServer, role: &str, rows: &str) -> Pgsense {
        self.load_with(server, role, rows, &self.path("state"))
    }

    fn load_with(&self, server: &PgServer, role: &str, rows: &str, state: &Path) -> Pgsense {
        server
            .pgsense_as(&self.db, role)
            .arg("load")
            .args(["--batch-rows", rows])
            .arg("--state-file")
            .arg(state)
            .arg("--reject-file")
            .arg(self.path("rejects.ndjson"))
            .arg(&self.input)
    }

    /// After a last, complete run: each line once, in the table or in the
    /// reject file, whichever its kind says.
    #[track_caller]
    fn assert_exactly_once(&self, server: &PgServer, last: &Outcome) {
        let rejects = self.path("rejects.ndjson");
        let in_table = each_once_after(&table_markers(server, &self.db), "the table", Some(last));
        let rejected = each_once_after(&file_markers(&rejects), "the reject file", Some(last));
        let expect_table: BTreeSet<u64> =
            (1..=ROWS).filter(|&m| !invalid(m) && !refused(m)).collect();
        let expect_rejected: BTreeSet<u64> =
            (1..=ROWS).filter(|&m| invalid(m) || refused(m)).collect();
        assert_eq!(
            in_table.len(),
            expect_table.len(),
            "rows in the table\n{}",
            last.describe()
        );
        assert!(in_table == expect_table, "the table\n{}", last.describe());
        assert!(
            rejected == expect_rejected,
            "the reject file\n{}",
            last.describe()
        );
        let bytes = std::fs::read(&rejects).expect("read the reject file");
        assert!(bytes.ends_with(b"\n"), "the reject file ends mid-line");
    }
}

/// Runs the command to its end after some were killed: 65 for the lines
/// it rejected, or 0 when the killed run had settled everything already.
fn complete(setup: &Setup, server: &PgServer) -> Outcome {
    let last = setup.load(server).run();
    assert!(
        matches!(last.code, Some(0 | 65)),
        "the last run\n{}",
        last.describe()
    );
    last
}

fn killed(out: &Outcome) {
    assert_eq!(out.code, None, "expected a kill\n{}", out.describe());
}

fn crash_at(point: &str) {
    let server = shared();
    let setup = Setup::new(server);
    let out = setup.load(server).env("PGSENSE_PG_CRASH_AT", point).run();
    killed(&out);
    let last = complete(&setup, server);
    setup.assert_exactly_once(server, &last);
}

#[test]
fn killed_after_the_rejects_of_a_batch_are_written() {
    crash_at("rejects-written:5");
}

#[test]
fn killed_while_writing_the_rejects_of_a_batch() {
    crash_at("rejects-half-written:4");
}

#[test]
fn killed_between_the_journal_and_commit() {
    crash_at("journaled:6");
}

#[test]
fn killed_between_commit_and_anything_else() {
    crash_at("committed:7");
}

#[test]
fn killed_while_the_state_file_is_replaced() {
    crash_at("state-written:2");
}

#[test]
fn killed_in_the_first_batch_and_again_in_the_rerun() {
    let server = shared();
    let setup = Setup::new(server);
    killed(
        &setup
            .load(server)
            .env("PGSENSE_PG_CRASH_AT", "journaled:1")
            .run(),
    );
    killed(
        &setup
            .load(server)
            .env("PGSENSE_PG_CRASH_AT", "committed:3")
            .run(),
    );
    let last = complete(&setup, server);
    setup.assert_exactly_once(server, &last);
}

/// A state file moved without its journal after a kill is refused (its
/// journal holds a committed batch, which would be loaded again), and
/// taken once the journal follows it; a copy or a hard link of a state
/// file that is still there is refused too: runs by turns under the two
/// names would each load what the other did.
#[test]
fn a_state_file_moved_without_its_journal_or_copied_is_refused() {
    let server = shared();
    let setup = Setup::new(server);
    killed(
        &setup
            .load(server)
            .env("PGSENSE_PG_CRASH_AT", "committed:3")
            .run(),
    );
    assert!(
        !setup.journaled_txids().is_empty(),
        "the killed run left no journal: nothing was tested"
    );
    std::fs::create_dir(setup.path("moved")).expect("mkdir");
    let moved = setup.path("moved").join("state");
    std::fs::rename(setup.path("state"), &moved).expect("move the state file");
    let refused = setup
        .load_with(server, "postgres", BATCH_ROWS, &moved)
        .run();
    refused
        .assert_code(2)
        .assert_stderr_contains("without its journal")
        .assert_stderr_contains(&format!("move it to {}.journal", moved.display()));
    std::fs::rename(
        setup.path("state.journal"),
        setup.path("moved/state.journal"),
    )
    .expect("move the journal");
    let last = setup
        .load_with(server, "postgres", BATCH_ROWS, &moved)
        .run();
    assert!(
        matches!(last.code, Some(0 | 65)),
        "the run after the move\n{}",
        last.describe()
    );
    setup.assert_exactly_once(server, &last);

    let linked = setup.path("linked");
    std::fs::hard_link(&moved, &linked).expect("hard link");
    let copied = setup.path("copied");
    std::fs::copy(&moved, &copied).expect("copy");
    for other in [&linked, &copied] {
        setup
            .load_with(server, "postgres", BATCH_ROWS, other)
            .run()
            .assert_code(2)
            .assert_stderr_contains(&format!(
                "was last written as {}, which is still there",
                moved.display()
            ));
    }
    setup.assert_exactly_once(server, &last);
    std::fs::remove_file(&linked).expect("remove the link");
    std::fs::remove_file(&copied).expect("remove the copy");

    // The same directory under another name, a bind mount (as a
    // container's volume is): the same state file, taken.
    let Some(mount) = BindMount::new(&setup.path("moved")) else {
        return;
    };
    let again = setup
        .load_with(server, "postgres", BATCH_ROWS, &mount.0.join("state"))
        .run();
    assert!(
        matches!(again.code, Some(0 | 65)),
        "the state file through a bind mount\n{}",
        again.describe()
    );
    setup.assert_exactly_once(server, &again);
}

/// `dir` mounted again elsewhere (`mount --bind`), unmounted on Drop.
/// None, after a note, when not root outside CI.
struct BindMount(PathBuf);

impl BindMount {
    fn new(dir: &Path) -> Option<BindMount> {
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .expect("id");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            assert!(
                std::env::var_os("CI").is_none(),
                "a bind mount takes root, and CI is set"
            );
            eprintln!("note: not root, so no bind mount: part of the test skipped");
            return None;
        }
        let at = std::env::temp_dir().join(crate::support::pg::unique("pgsense-pg-bind-"));
        std::fs::create_dir(&at).expect("mkdir");
        let status = std::process::Command::new("mount")
            .arg("--bind")
            .arg(dir)
            .arg(&at)
            .status()
            .expect("mount --bind");
        assert!(status.success(), "mount --bind {}", dir.display());
        Some(BindMount(at))
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A server that crashes may hand out again the ids of transactions whose
/// WAL it lost, so after a crash the next run checks a "committed" answer
/// against the rows each batch left. Every batch here has a row the server
/// refused: its rows must still carry its transaction's id, not a
/// savepoint's, or they would be taken for not committed and sent twice.
#[test]
fn batches_with_refused_rows_committed_before_a_server_crash_are_not_sent_again() {
    // The harness's own statements must survive the crash.
    let server = private_with(&["synchronous_commit = on"]);
    let setup = Setup::new(&server);
    killed(
        &setup
            .load(&server)
            .env("PGSENSE_PG_CRASH_AT", "committed:3")
            .run(),
    );
    assert!(
        !setup.journaled_txids().is_empty(),
        "the killed run left no transaction to settle: nothing was tested"
    );
    server.stop_immediate();
    server.start();
    let last = complete(&setup, &server);
    setup.assert_exactly_once(&server, &last);
}

/// Refusals that change from one attempt to the next (a trigger that
/// refuses rows by a sequence, which no rollback resets): the rows a probe
/// found are not those the next COPY has refused. After a few probes such
/// a batch commits under savepoints, saying so in the journal; after a
/// kill and a server crash the next run does not take its rows for
/// another transaction's (which would send them twice) but asks the
/// operator.
#[test]
fn rows_refused_differently_at_each_attempt_are_loaded_once_across_a_server_crash() {
    let server = private_with(&["synchronous_commit = on"]);
    let setup = Setup::new(&server);
    server.execute(
        &setup.db,
        &format!(
            "CREATE SEQUENCE flip; \
             CREATE FUNCTION flip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF nextval('flip') * 7919 % 300 = 0 THEN RAISE EXCEPTION 'flip'; END IF; \
               RETURN NEW; END $$; \
             CREATE TRIGGER flip BEFORE INSERT ON {TABLE} FOR EACH ROW EXECUTE FUNCTION flip()"
        ),
    );
    killed(
        &setup
            .load(&server)
            .env("PGSENSE_PG_CRASH_AT", "committed:3")
            .run(),
    );
    server.stop_immediate();
    server.start();
    // Batches committed under savepoints cannot be recognised after the
    // crash: the operator is asked, never answered by a guess.
    let (last, _) = settle_by_hand(&setup, &server, "postgres");
    assert!(matches!(last.code, Some(0 | 65)), "{}", last.describe());
    let in_table = each_once_after(&table_markers(&server, &setup.db), "the table", Some(&last));
    let rejects = setup.path("rejects.ndjson");
    let rejected = each_once_after(&file_markers(&rejects), "the reject file", Some(&last));
    assert_disjoint(&in_table, &rejected);
    let all: BTreeSet<u64> = in_table.union(&rejected).copied().collect();
    assert_eq!(all, (1..=ROWS).collect(), "{}", last.describe());
    // Invalid lines, the CHECK's refusals, and about one in 300 by the
    // trigger: not a batch whittled down row by row.
    let expected = ROWS / 97 + ROWS / 89 + ROWS / 300;
    assert!(
        (ROWS / 89..2 * expected).contains(&(rejected.len() as u64)),
        "{} lines set aside, about {expected} expected\n{}",
        rejected.len(),
        last.describe()
    );
}

/// Batches whose every row the server refuses commit nothing, and leave no
/// transaction to settle: after a kill and a server crash, the next run
/// has nothing to ask about them.
#[test]
fn batches_of_refused_rows_only_leave_nothing_to_settle_after_a_server_crash() {
    let server = private_with(&["synchronous_commit = on"]);
    let setup = Setup::new(&server);
    let first_loaded = 2001;
    server.execute(
        &setup.db,
        &format!("ALTER TABLE {TABLE} ADD CHECK (lsn >= {first_loaded})"),
    );
    killed(
        &setup
            .load(&server)
            .env("PGSENSE_PG_CRASH_AT", "committed:3")
            .run(),
    );
    server.stop_immediate();
    server.start();
    let last = complete(&setup, &server);
    let in_table = each_once_after(&table_markers(&server, &setup.db), "the table", Some(&last));
    let rejected = each_once_after(
        &file_markers(&setup.path("rejects.ndjson")),
        "the reject file",
        Some(&last),
    );
    let expect_table: BTreeSet<u64> = (first_loaded..=ROWS)
        .filter(|&m| !invalid(m) && !refused(m))
        .collect();
    assert!(in_table == expect_table, "the table\n{}", last.describe());
    assert_eq!(
        rejected.len() as u64 + in_table.len() as u64,
        ROWS,
        "{}",
        last.describe()
    );
}

/// A least-privileged role (no SELECT on the table) cannot have the
/// batches of a killed run checked against the table after a crash of the
/// server: the next run stops, naming each batch and the --settle that
/// settles it by hand; with the operator's word the load completes, each
/// line once. A batch whose COMMIT the killed run saw acknowledged needs
/// no word: the journal says so.
#[test]
fn batches_the_server_cannot_settle_are_settled_by_hand() {
    let server = private_with(&["synchronous_commit = on"]);
    let setup = Setup::new(&server);
    let role = crate::support::pg::unique("loader_");
    server.execute(
        &setup.db,
        &format!(
            "CREATE ROLE {role} LOGIN; \
             GRANT USAGE ON SCHEMA pgsense TO {role}; \
             GRANT INSERT ON {TABLE} TO {role}; \
             GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};"
        ),
    );
    killed(
        &setup
            .load_as(&server, &role, BATCH_ROWS)
            .env("PGSENSE_PG_CRASH_AT", "committed:3")
            .run(),
    );
    server.stop_immediate();
    server.start();
    let (last, settled) = settle_by_hand(&setup, &server, &role);
    // The batches whose COMMIT the server acknowledged are known to have
    // committed: only the one killed before it was noted is left.
    assert_eq!(
        settled.len(),
        1,
        "batches to settle by hand: {settled:?}\n{}",
        last.describe()
    );
    assert!(matches!(last.code, Some(0 | 65)), "{}", last.describe());
    setup.assert_exactly_once(&server, &last);
    // A --settle that names no such batch is said to be ignored.
    let again = setup
        .load_as(&server, &role, BATCH_ROWS)
        .args(["--settle", "1=aborted"])
        .run();
    again
        .assert_code(0)
        .assert_stderr_contains("--settle 1: no batch of that transaction");
}

/// Runs the load as `role` after a run killed, settling by hand the
/// batches it cannot settle, as an operator would: by the query the message
/// gives for each, run as a role that can read the table, or else by the
/// lsn it names. The last run, and the ids settled.
fn settle_by_hand(setup: &Setup, server: &PgServer, role: &str) -> (Outcome, Vec<u64>) {
    let mut settled: Vec<(u64, bool)> = Vec::new();
    loop {
        let mut command = setup.load_as(server, role, BATCH_ROWS);
        for (txid, committed) in &settled {
            let outcome = if *committed { "committed" } else { "aborted" };
            command = command.args(["--settle", &format!("{txid}={outcome}")]);
        }
        let out = command.run();
        if out.code != Some(1) {
            return (out, settled.iter().map(|(txid, _)| *txid).collect());
        }
        let error = out
            .stderr
            .lines()
            .find(|line| line.starts_with("pgsense-pg: error:"))
            .unwrap_or_else(|| panic!("no error\n{}", out.describe()));
        let batches: Vec<&str> = error.split("whether the batch of ").skip(1).collect();
        assert!(!batches.is_empty(), "no batch named\n{}", out.describe());
        for batch in batches {
            let txid: u64 = between(batch, "(transaction ", ")")
                .and_then(|txid| txid.parse().ok())
                .unwrap_or_else(|| panic!("no transaction in {batch}"));
            assert!(
                settled.iter().all(|(t, _)| *t != txid),
                "asked twice\n{}",
                out.describe()
            );
            // The GRANT that would settle it names the role.
            if batch.contains("needs SELECT") {
                let grant = format!("GRANT SELECT ON \"pgsense\".\"findings\" TO {role}`");
                assert!(batch.contains(&grant), "no `{grant}` in {batch}");
            }
            settled.push((txid, committed_by_hand(server, &setup.db, batch)));
        }
    }
}

/// The text between `from` and the next `to` in `text`.
fn between(text: &str, from: &str, to: &str) -> Option<String> {
    let start = text.find(from)? + from.len();
    let len = text[start..].find(to)?;
    Some(text[start..start + len].to_owned())
}

/// Whether the batch a run could not settle is in the table, found as what
/// its message says of it (`batch`) tells.
fn committed_by_hand(server: &PgServer, db: &str, batch: &str) -> bool {
    if let Some(query) = between(batch, "as a role that can read it, `", "`") {
        let rows = server.query(db, &query);
        let count = |i: usize| -> u64 { rows[0][i].as_deref().unwrap().parse().unwrap() };
        return count(0) > 0 && count(1) > 0;
    }
    let lsn = between(batch, "one of them with lsn ", " ")
        .unwrap_or_else(|| panic!("no way to look the batch up in {batch}"));
    server.count(db, &format!("{TABLE} WHERE lsn = {lsn}")) > 0
}

/// A run stopped between its journal and COMMIT, then the server crashing
/// before that transaction's WAL was written: crash recovery hands its id
/// out again, here to another client's transaction, which commits. The
/// next run must not take txid_status()'s "committed" for its batch's.
///
/// The run freezes (SIGSTOP, connections open) rather than dying, so that
/// its backend does not roll back (which would wake the WAL writer). The
/// WAL writer waits 10 s and the buffers are large, so the batch's WAL is
/// still in memory when the server stops; the first batches have no
/// refused row (whose rollback would wake it too). Should the WAL have been
/// written all the same, the id is not reused and the round is tried again.
#[test]
fn a_batch_whose_id_a_crashed_server_gave_to_another_transaction_is_loaded() {
    let server = private_with(&[
        // The harness's own statements must survive the crash.
        "synchronous_commit = on",
        "wal_writer_delay = 10s",
        "wal_writer_flush_after = 1GB",
        "wal_buffers = 32MB",
        "bgwriter_lru_maxpages = 0",
        "checkpoint_timeout = 1h",
        "autovacuum = off",
    ]);
    for _round in 0..3 {
        let setup = Setup::new(&server);
        let load = setup
            .load_in_batches_of(&server, "40")
            .env("PGSENSE_PG_CRASH_AT", "journaled:1:freeze")
            .spawn();
        let pid = load.id();
        wait_until("frozen loader", Duration::from_secs(60), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('T')
            })
        });
        let xid = *setup
            .journaled_txids()
            .first()
            .expect("the frozen run journaled its batch");
        server.stop_immediate();
        send_signal(pid, "KILL");
        killed(&load.wait());
        server.start();
        if !hand_out_again(&server, xid) {
            continue;
        }
        let last = complete(&setup, &server);
        setup.assert_exactly_once(&server, &last);
        return;
    }
    panic!("the server never handed a lost transaction id out again: nothing was tested");
}

/// Commits transactions until the server has handed out `xid`: whether it
/// gave that id to one of them (it had lost the transaction that had it).
fn hand_out_again(server: &PgServer, xid: u64) -> bool {
    let mut client = server.client("postgres");
    loop {
        let current: u64 = client
            .query_one("select txid_current()::text", &[])
            .unwrap()
            .get::<_, String>(0)
            .parse()
            .unwrap();
        if current >= xid {
            return current == xid
                || server.query_one("postgres", &format!("select txid_status({xid})"))
                    == Some("committed".into());
        }
    }
}

/// kill -9 from outside, at moments picked by time, several times over the
/// same load.
#[test]
fn killed_at_many_moments_then_completed() {
    let server = shared();
    let setup = Setup::new(server);
    for delay_ms in [30, 120, 250, 400, 700, 1000] {
        let load = setup.load(server).spawn();
        std::thread::sleep(Duration::from_millis(delay_ms));
        send_signal(load.id(), "KILL");
        let out = load.wait();
        if out.code.is_some() {
            // Finished before the kill: nothing left to interrupt.
            break;
        }
    }
    let last = complete(&setup, server);
    setup.assert_exactly_once(server, &last);
}

/// A reject file a killed run left with a half line is never appended to
/// blindly, with or without a state file.
#[test]
fn a_half_line_left_in_the_reject_file_is_cut_before_appending() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let rejects = scratch.write(
        "rejects.ndjson",
        format!("{}\n{{\"database\":\"pr", line(97)),
    );
    let input = scratch.write("in.ndjson", format!("{}\n{}\n", line(194), finding(1)));
    let out = server
        .pgsense(&db)
        .arg("load")
        .arg("--reject-file")
        .arg(&rejects)
        .arg(&input)
        .run();
    out.assert_code(65)
        .assert_stderr_contains("cutting 15 bytes of a last line without its end");
    assert_eq!(file_markers(&rejects), [97, 194]);
}
