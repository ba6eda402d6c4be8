//! Behind PgBouncer (issue 12, "PgBouncer"), Debian's package configured
//! with nothing but a database entry: loads in transaction and in session
//! pooling, search_path and lock_timeout in effect in every transaction
//! whichever server connection is handed out, `init` and `check`, and the
//! fault guarantees through it (server backends killed behind it, PgBouncer
//! itself restarted mid-load).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use postgres::SimpleQueryMessage;

use crate::support::markers::{assert_table_holds_after, findings, write_findings};
use crate::support::pgbouncer::{self, PgBouncer, PoolMode};
use crate::support::run::{Outcome, Pgsense, init};
use crate::support::wait::wait_during;
use crate::support::{PgServer, Scratch, TABLE, shared};

/// Findings in the ordinary loads: with [`SMALL_BATCH`], a hundred
/// transactions or so, enough that both writers take turns on the few
/// server connections.
const FINDINGS: u64 = 5000;

/// Rows per batch in the ordinary loads.
const SMALL_BATCH: &str = "50";

/// A PgBouncer in front of `server`, or None when pgbouncer is not installed
/// (outside CI: the test is skipped with a note).
fn bouncer(server: &PgServer, mode: PoolMode, pool_size: u32) -> Option<(PgBouncer, PathBuf)> {
    let binary = pgbouncer::installed()?;
    Some((PgBouncer::start(&binary, server, mode, pool_size), binary))
}

/// Every value of a simple query's rows, in PostgreSQL's text form.
fn simple_rows(client: &mut postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Loads findings 1..=FINDINGS through PgBouncer in two runs (two
/// processes one after the other on the same server connections, so a
/// statement left prepared by the first would collide with the second's),
/// in small batches: exit 0 and every finding once.
fn load_in_two_runs(mode: PoolMode) {
    let server = shared();
    let db = server.new_database();
    let Some((bouncer, _)) = bouncer(server, mode, 2) else {
        return;
    };
    init(server, &db);
    let scratch = Scratch::new();
    let half = FINDINGS / 2;
    for (name, markers) in [("first", 1..=half), ("second", half + 1..=FINDINGS)] {
        let count = markers.clone().count();
        let input = scratch.write(&format!("{name}.ndjson"), findings(markers));
        let out = bouncer
            .pgsense(&db)
            .arg("load")
            .args(["--batch-rows", SMALL_BATCH])
            .arg(&input)
            .run();
        out.assert_code(0)
            .assert_stderr_contains(&format!("{count} read, {count} inserted, 0 dropped"));
    }
    assert_table_holds_after(server, &db, 1..=FINDINGS, None);
}

#[test]
fn loads_through_pgbouncer_in_transaction_pooling() {
    load_in_two_runs(PoolMode::Transaction);
}

#[test]
fn loads_through_pgbouncer_in_session_pooling() {
    load_in_two_runs(PoolMode::Session);
}

/// What PostgreSQL prints for the loader's lock_timeout of 60 s.
const LOADER_LOCK_TIMEOUT: &str = "1min";

/// A BEFORE INSERT trigger that writes, into every row it sees, the
/// lock_timeout in effect (into description) and what an unqualified call
/// of a helper that exists only in schema pgsense returns (into category):
/// a transaction without the findings schema in search_path cannot insert.
const STAMPING_TRIGGER: &str = "
    CREATE FUNCTION pgsense.pgbouncer_only_here() RETURNS text
        LANGUAGE sql AS $$ SELECT 'found in pgsense' $$;
    CREATE FUNCTION pgsense.stamp() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.description := current_setting('lock_timeout');
        NEW.category := pgbouncer_only_here();
        RETURN NEW;
    END $$;
    CREATE TRIGGER stamp BEFORE INSERT ON pgsense.findings
        FOR EACH ROW EXECUTE FUNCTION pgsense.stamp();";

/// Every server connection starts with other settings than the loader's
/// (the database's defaults), and another client keeps setting search_path
/// for the session on whichever server connection it gets, as a client of
/// a transaction pool can: with a server pool of two, the loader's
/// transactions run on connections that others have set. Each row must
/// still have been inserted with the loader's lock_timeout and with the
/// findings schema in search_path; and the loader's settings must not
/// outlive its transactions on the connections it gives back.
fn settings_hold_in_every_transaction(mode: PoolMode, pool_size: u32) {
    let server = shared();
    let db = server.new_database();
    let Some((bouncer, _)) = bouncer(server, mode, pool_size) else {
        return;
    };
    init(server, &db);
    server.execute(&db, STAMPING_TRIGGER);
    server.execute(
        &db,
        &format!(
            "ALTER DATABASE {db} SET search_path = public; \
             ALTER DATABASE {db} SET lock_timeout = '7s'"
        ),
    );
    let scratch = Scratch::new();
    let input = scratch.write("findings.ndjson", findings(1..=FINDINGS));
    let stop = AtomicBool::new(false);
    let polluted = AtomicUsize::new(0);
    let out = thread::scope(|scope| {
        scope.spawn(|| {
            let mut other = bouncer.client(&db);
            while !stop.load(Ordering::SeqCst) {
                other
                    .batch_execute("SET search_path = pg_catalog")
                    .expect("SET search_path through PgBouncer");
                polluted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let out = bouncer
            .pgsense(&db)
            .arg("load")
            .args(["--batch-rows", SMALL_BATCH])
            .arg(&input)
            .run();
        stop.store(true, Ordering::SeqCst);
        out
    });
    assert!(
        polluted.into_inner() > 0,
        "the other client set nothing during the load: nothing was tested\n{}",
        out.describe()
    );
    out.assert_code(0)
        .assert_stderr_contains(&format!("{FINDINGS} read, {FINDINGS} inserted, 0 dropped"));
    assert_table_holds_after(server, &db, 1..=FINDINGS, Some(&out));
    let stamps = server.query(
        &db,
        &format!(
            "select description, category, count(*) from {TABLE} \
             group by 1, 2 order by 3 desc"
        ),
    );
    let expected = vec![vec![
        Some(LOADER_LOCK_TIMEOUT.to_owned()),
        Some("found in pgsense".to_owned()),
        Some(FINDINGS.to_string()),
    ]];
    assert_eq!(
        stamps,
        expected,
        "(lock_timeout, helper's answer, rows) as the trigger saw them\n{}",
        out.describe()
    );
    assert_nothing_outlived_the_load(&bouncer, &db, pool_size);
}

/// Every server connection of the pool, held at once in open
/// transactions, shows the database's lock_timeout, not the loader's, and
/// holds no statement the loader prepared: PgBouncer 1.18 does not track
/// them, so one left behind would meet the same name from the next process.
fn assert_nothing_outlived_the_load(bouncer: &PgBouncer, db: &str, pool_size: u32) {
    let mut clients: Vec<_> = (0..pool_size).map(|_| bouncer.client(db)).collect();
    let mut seen = Vec::new();
    for client in &mut clients {
        let rows = simple_rows(
            client,
            "BEGIN; SELECT pg_backend_pid()::text, current_setting('lock_timeout'), \
             (SELECT string_agg(name, ' ') FROM pg_prepared_statements)",
        );
        seen.push(rows[0].clone());
    }
    assert!(
        seen.iter()
            .all(|row| row[1].as_deref() == Some("7s") && row[2].is_none()),
        "after the load, server connections (backend pid, lock_timeout, prepared \
         statements) {seen:?}: the loader's lock_timeout or a statement it prepared \
         outlived its transactions"
    );
}

#[test]
fn search_path_and_lock_timeout_hold_in_every_transaction_in_transaction_pooling() {
    settings_hold_in_every_transaction(PoolMode::Transaction, 2);
}

/// In session pooling each client keeps its server connection: the other
/// client needs one of its own, hence a pool of three.
#[test]
fn search_path_and_lock_timeout_hold_in_every_transaction_in_session_pooling() {
    settings_hold_in_every_transaction(PoolMode::Session, 3);
}

/// `init` through a transaction-pooling PgBouncer creates the table, and
/// again (a second process on the same server connections) finds it; then
/// `check` through it passes, each line ok.
#[test]
fn init_and_check_work_through_pgbouncer_in_transaction_pooling() {
    let server = shared();
    let db = server.new_database();
    let Some((bouncer, _)) = bouncer(server, PoolMode::Transaction, 2) else {
        return;
    };
    for _ in 0..2 {
        bouncer.pgsense(&db).arg("init").run().assert_code(0);
    }
    assert_eq!(server.count(&db, TABLE), 0);
    let out = bouncer.pgsense(&db).arg("check").run();
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|line| line.starts_with("ok ")),
        "check through PgBouncer printed other lines than ok\n{}",
        out.describe()
    );
    assert!(
        lines.iter().any(|line| line.contains(TABLE)),
        "no ok line names {TABLE}\n{}",
        out.describe()
    );
}

/// Statement pooling refuses transactions by closing the connection (the
/// driver loses PgBouncer's words): the error says what may have done it
/// and which pool modes work.
#[test]
fn statement_pooling_gets_advice() {
    let server = shared();
    let db = server.new_database();
    let Some((bouncer, _)) = bouncer(server, PoolMode::Statement, 2) else {
        return;
    };
    // The driver loses PgBouncer's FATAL message at times, not always:
    // either way the advice is there.
    for _ in 0..5 {
        let out = bouncer.pgsense(&db).arg("check").run();
        out.assert_code(69)
            .assert_stderr_contains("statement pooling")
            .assert_stderr_contains(
                "pgsense-pg needs PgBouncer's pool_mode = transaction or session",
            );
    }
}

/// PgBouncer refuses the startup options that PGOPTIONS sends: the error
/// says which setting sent them and what to do.
#[test]
fn pgoptions_refused_by_pgbouncer_get_advice() {
    let server = shared();
    let db = server.new_database();
    let Some((bouncer, _)) = bouncer(server, PoolMode::Transaction, 2) else {
        return;
    };
    let out = bouncer
        .pgsense(&db)
        .env("PGOPTIONS", "-c work_mem=64MB")
        .arg("check")
        .run();
    out.assert_code(69)
        .assert_stderr_contains("unsupported startup parameter")
        .assert_stderr_contains("options (from PGOPTIONS) were sent: unset PGOPTIONS");
}

/// PgBouncer asking for a password by SCRAM refuses a wrong one with words
/// of its own ("SASL authentication failed"): the error says where the
/// password came from and what to check in PgBouncer's auth_file; the
/// right one loads.
#[test]
fn a_password_pgbouncer_refuses_gets_advice() {
    let server = shared();
    let db = server.new_database();
    let Some(binary) = pgbouncer::installed() else {
        return;
    };
    let bouncer =
        PgBouncer::start_with(&binary, server, PoolMode::Transaction, 2, Some("right-one"));
    let scratch = Scratch::new();
    let wrong = scratch.write("wrong", "not-this-one\n");
    let out = bouncer
        .pgsense(&db)
        .arg("--password-file")
        .arg(&wrong)
        .arg("check")
        .run();
    out.assert_code(69)
        .assert_stderr_contains("SASL authentication failed")
        .assert_stderr_contains(
            "(--password-file) was refused; through PgBouncer, also check its auth_file",
        );
    assert!(!out.stderr.contains("not-this-one"), "{}", out.describe());
    bouncer
        .pgsense(&db)
        .env("PGPASSWORD", "right-one")
        .arg("init")
        .run()
        .assert_code(0);
}

/// Findings in the fault loads: enough that the load lasts a few seconds
/// through PgBouncer, so faults land in the middle of it.
const FAULT_FINDINGS: u64 = 100_000;

/// Rows per batch in the fault loads.
const FAULT_BATCH: &str = "500";

/// A bound on a run that faults slow down, generous for a busy machine.
const FAULT_RUN: Duration = Duration::from_secs(240);

/// The fault loads' command: a state file, so that a run that gives up is
/// completed by the same command again.
fn fault_load(bouncer: &PgBouncer, db: &str, input: &Path, state: &Path) -> Pgsense {
    bouncer
        .pgsense(db)
        .arg("load")
        .args(["--batch-rows", FAULT_BATCH])
        .arg("--state-file")
        .arg(state)
        .arg(input)
        .timeout(FAULT_RUN)
}

/// A run that a fault made give up (75) is followed by the same command
/// again, which must end the load; the last run's outcome.
fn completed(first: Outcome, again: impl FnOnce() -> Outcome) -> Outcome {
    match first.code {
        Some(0) => first,
        Some(75) => {
            let out = again();
            out.assert_code(0);
            out
        }
        _ => panic!("expected 0, or 75 and a second run\n{}", first.describe()),
    }
}

/// The loader's server-side backends, behind a transaction-pooling
/// PgBouncer, terminated again and again mid-load: PgBouncer cuts the
/// client whose server connection died, the writers reconnect through it,
/// ask txid_status (a simple query, on whichever server connection) and
/// resend, and every finding is in the table exactly once.
#[test]
fn server_backends_killed_behind_pgbouncer_lose_and_duplicate_nothing() {
    const KILLS: usize = 10;
    let server = shared();
    let db = server.new_database();
    let Some((bouncer, _)) = bouncer(server, PoolMode::Transaction, 2) else {
        return;
    };
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", FAULT_FINDINGS);
    let state = scratch.path().join("state");
    let load = fault_load(&bouncer, &db, &input, &state).spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(60), || {
        server.count(&db, TABLE) > 0
    });
    let stop = AtomicBool::new(false);
    let killed = AtomicUsize::new(0);
    let first = thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) && killed.load(Ordering::SeqCst) < KILLS {
                let terminated = server.query_one(
                    &db,
                    "select count(*) filter (where pg_terminate_backend(pid)) \
                     from pg_stat_activity \
                     where application_name = 'pgsense-pg' and datname = current_database()",
                );
                let terminated: usize = terminated.and_then(|n| n.parse().ok()).expect("a count");
                killed.fetch_add(terminated, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(100));
            }
        });
        let out = load.wait();
        stop.store(true, Ordering::SeqCst);
        out
    });
    let killed = killed.into_inner();
    assert!(
        killed >= 2,
        "only {killed} backends were terminated before the load ended: nothing was tested\n{}",
        first.describe()
    );
    let last = completed(first, || fault_load(&bouncer, &db, &input, &state).run());
    assert_table_holds_after(server, &db, 1..=FAULT_FINDINGS, Some(&last));
}

/// PgBouncer itself stopped (SIGTERM: every client and server connection
/// cut) and started again on the same port, twice, in the middle of a
/// load: the writers reconnect once it is back and every finding is in the
/// table exactly once.
#[test]
fn pgbouncer_restarted_mid_load_loses_and_duplicates_nothing() {
    let server = shared();
    let db = server.new_database();
    let Some((bouncer, binary)) = bouncer(server, PoolMode::Transaction, 2) else {
        return;
    };
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", FAULT_FINDINGS);
    let state = scratch.path().join("state");
    let load = fault_load(&bouncer, &db, &input, &state).spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(60), || {
        server.count(&db, TABLE) > 0
    });
    bouncer.restart(&binary);
    let after_first = server.count(&db, TABLE);
    let mut load = wait_during(
        load,
        "more rows after the restart",
        Duration::from_secs(60),
        || server.count(&db, TABLE) > after_first,
    );
    bouncer.restart(&binary);
    // Still running once the second restart is over: its connections were
    // cut under it twice.
    let spanned = !load.has_exited();
    let first = load.wait();
    assert!(
        spanned,
        "the load was over before the restarts ended: nothing was tested\n{}",
        first.describe()
    );
    let last = completed(first, || fault_load(&bouncer, &db, &input, &state).run());
    assert_table_holds_after(server, &db, 1..=FAULT_FINDINGS, Some(&last));
}

/// A run killed between journaling a batch's transaction and its COMMIT,
/// and one killed right after a COMMIT, behind a transaction-pooling
/// PgBouncer: the next run asks txid_status for the journaled transaction
/// through PgBouncer, on whichever server connection it is handed, and
/// resends exactly what did not commit.
#[test]
fn a_run_killed_behind_pgbouncer_is_completed_once_by_the_next() {
    let server = shared();
    let db = server.new_database();
    let Some((bouncer, _)) = bouncer(server, PoolMode::Transaction, 2) else {
        return;
    };
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "findings.ndjson", FINDINGS);
    let state = scratch.path().join("state");
    for point in ["journaled:3", "committed:5"] {
        let out = fault_load(&bouncer, &db, &input, &state)
            .env("PGSENSE_PG_CRASH_AT", point)
            .run();
        assert_eq!(
            out.code,
            None,
            "expected a kill at {point}\n{}",
            out.describe()
        );
    }
    let last = fault_load(&bouncer, &db, &input, &state).run();
    last.assert_code(0);
    assert_table_holds_after(server, &db, 1..=FINDINGS, Some(&last));
}
