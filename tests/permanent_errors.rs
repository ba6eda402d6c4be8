//! Permanent errors (issue 4, "Tests"): permission denied, a table dropped,
//! a read-only database: not retried, the run says what failed and stops.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::markers::{assert_table_holds, each_once, file_markers, findings};
use crate::support::run::{Outcome, init};
use crate::support::wait::wait_during;
use crate::support::{PgServer, Scratch, TABLE, shared};

/// A load through a pipe as `user`, hit by `fault` once its first 100
/// findings are in, then fed 100 more: it ends with 75, saying `says`, well
/// before the default 60 s retry window. Returns what it printed.
#[track_caller]
fn permanent_fault(
    server: &PgServer,
    db: &str,
    user: &str,
    fault: impl FnOnce(),
    says: &str,
) -> Outcome {
    let scratch = Scratch::new();
    let rejects = scratch.path().join("rejects.ndjson");
    let mut load = server
        .pgsense(db)
        .args(["--username", user])
        .arg("load")
        .arg("--reject-file")
        .arg(&rejects)
        .timeout(Duration::from_secs(60))
        .spawn_piped();
    load.stdin()
        .write_all(findings(1..=100).as_bytes())
        .expect("feed");
    load.stdin().flush().expect("flush");
    let mut load = wait_during(
        load,
        "100 rows in the table",
        Duration::from_secs(20),
        || server.count(db, TABLE) == 100,
    );
    fault();
    let faulted = Instant::now();
    // The load may stop reading once it fails: a broken pipe is its right.
    let _ = load.stdin().write_all(findings(101..=200).as_bytes());
    load.close_stdin();
    let out = load.wait();
    let took = faulted.elapsed();
    out.assert_code(75).assert_stderr_contains(says);
    assert!(
        took < Duration::from_secs(10),
        "a permanent error took {took:?} to end the run: was it retried?\n{}",
        out.describe()
    );
    let (read, inserted, dropped) = out.summary();
    assert_eq!(inserted, 100, "{}", out.describe());
    assert_eq!(read, inserted + dropped, "{}", out.describe());
    let rejected = each_once(&file_markers(&rejects), "the reject file");
    assert_eq!(dropped, rejected.len() as u64, "{}", out.describe());
    assert!(
        rejected.iter().all(|m| (101..=200).contains(m)),
        "the reject file holds findings loaded before the fault: {rejected:?}"
    );
    out
}

/// INSERT revoked from the loader's role mid-run: "permission denied" ends
/// the run at once instead of being retried for a minute.
#[test]
fn insert_revoked_mid_run_is_not_retried() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let role = format!("loader_{db}");
    server.execute(
        &db,
        &format!(
            "CREATE ROLE {role} LOGIN;
             GRANT USAGE ON SCHEMA pgsense TO {role};
             GRANT INSERT ON {TABLE} TO {role};
             GRANT USAGE ON SEQUENCE pgsense.findings_id_seq TO {role};"
        ),
    );
    let revoke = || server.execute(&db, &format!("REVOKE INSERT ON {TABLE} FROM {role}"));
    permanent_fault(server, &db, &role, revoke, "permission denied");
    assert_table_holds(server, &db, 1..=100);
    server.execute(&db, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

/// The findings table dropped mid-run: "does not exist" is not retried.
#[test]
fn the_table_dropped_mid_run_is_not_retried() {
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let drop_table = || server.execute(&db, &format!("DROP TABLE {TABLE}"));
    permanent_fault(server, &db, "postgres", drop_table, "does not exist");
}

/// A database that accepts no writes (a standby, default_transaction_read_only)
/// is named at startup, before anything is read.
#[test]
fn a_read_only_database_is_named_at_startup() {
    let server = shared();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    server.execute(
        &db,
        &format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
    );
    let out = server.pgsense(&db).arg("load").stdin(findings(1..=3)).run();
    out.assert_code(69).assert_stderr_contains("read-only");
    server.execute(
        "postgres",
        &format!("ALTER DATABASE {db} SET default_transaction_read_only = off"),
    );
    assert_eq!(server.count(&db, TABLE), 0);
}
