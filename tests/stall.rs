//! A server that stops answering: its backends are stopped with SIGSTOP,
//! so the kernel still acknowledges the connections, keepalives pass and a
//! cancel request is never acted on. A stop signal still ends the run
//! within seconds, a statement left unanswered for --stall-timeout is
//! given up, and the run after the server is back loads each finding once.

use std::time::{Duration, Instant};

use crate::support::journal::{in_progress_in, settling};
use crate::support::markers::{LARGE, assert_table_holds_after, write_findings};
use crate::support::process::send_signal;
use crate::support::run::init;
use crate::support::wait::wait_during;
use crate::support::{PgServer, Scratch, TABLE, private};

/// The loader's backends of `db`, stopped until dropped.
struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    fn backends_of(server: &PgServer, db: &str) -> Frozen {
        let pids: Vec<u32> = server
            .query(
                "postgres",
                &format!(
                    "select pid from pg_stat_activity \
                     where datname = '{db}' and application_name = 'pgsense-pg'"
                ),
            )
            .into_iter()
            .filter_map(|row| row[0].as_deref()?.parse().ok())
            .collect();
        assert!(!pids.is_empty(), "no backend of the loader to stop");
        for pid in &pids {
            send_signal(*pid, "STOP");
        }
        Frozen { pids }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.pids {
            send_signal(*pid, "CONT");
        }
    }
}

/// Loads LARGE findings with a state file, in small batches, until the
/// first rows are in; then stops the loader's backends.
fn frozen_mid_load(
    server: &PgServer,
    db: &str,
    scratch: &Scratch,
    flags: &[&str],
) -> (crate::support::run::Started, Frozen) {
    let input = write_findings(scratch, "large.ndjson", LARGE);
    let load = server
        .pgsense(db)
        .args(flags)
        .arg("load")
        .args(["--batch-rows", "500", "--state-file"])
        .arg(scratch.path().join("state.json"))
        .arg(&input)
        .timeout(Duration::from_secs(180))
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(60), || {
        server.count(db, TABLE) > 0
    });
    let frozen = Frozen::backends_of(server, db);
    (load, frozen)
}

/// The same load again once the server answers: it completes what the
/// stopped run left, each finding once.
fn rerun_completes(server: &PgServer, db: &str, scratch: &Scratch) {
    let out = server
        .pgsense(db)
        .arg("load")
        .arg("--state-file")
        .arg(scratch.path().join("state.json"))
        .arg(scratch.path().join("large.ndjson"))
        .run();
    out.assert_code(0);
    assert_table_holds_after(server, db, 1..=LARGE, Some(&out));
}

#[test]
fn sigterm_ends_a_run_whose_server_stopped_answering() {
    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let scratch = Scratch::new();
    let (load, frozen) = frozen_mid_load(&server, &db, &scratch, &[]);
    let sent = Instant::now();
    send_signal(load.id(), "TERM");
    let out = load.wait();
    let took = sent.elapsed();
    out.assert_code(143);
    assert!(
        took < Duration::from_secs(30),
        "took {took:?} after SIGTERM\n{}",
        out.describe()
    );
    drop(frozen);
    rerun_completes(&server, &db, &scratch);
}

#[test]
fn a_statement_unanswered_for_the_stall_timeout_is_given_up() {
    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let scratch = Scratch::new();
    let flags = ["--stall-timeout", "2", "--connect-timeout", "2"];
    let (load, frozen) = frozen_mid_load(&server, &db, &scratch, &flags);
    // The statement in flight is cancelled after 2 s, the connections shut
    // down 5 s later; then the batch is retried on a new connection, or its
    // COMMIT's outcome asked of the server for up to --retry-for (60 s).
    let out = load.wait();
    assert!(
        matches!(out.code, Some(0 | 75)),
        "neither done nor given up for now\n{}",
        out.describe()
    );
    out.assert_stderr_contains("(--stall-timeout): cancelling it");
    drop(frozen);
    rerun_completes(&server, &db, &scratch);
}

/// The bootstrap runs before the writers' watch: it has a deadline of its
/// own. Here it waits on the lock that serializes bootstraps, held by
/// another session.
#[test]
fn a_bootstrap_left_waiting_is_given_up_after_the_stall_timeout() {
    let server = private();
    let db = server.new_database();
    let mut holder = server.client(&db);
    holder
        .batch_execute("select pg_advisory_lock(1885827952, hashtext('pgsense'))")
        .expect("take the bootstrap lock");
    let started = Instant::now();
    let out = server
        .pgsense(&db)
        .args(["--stall-timeout", "2", "init"])
        .run();
    out.assert_code(69)
        .assert_stderr_contains("the server has not answered for 2 s (--stall-timeout)");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{}",
        out.describe()
    );
}

/// Standard output connected to a socket with a named peer (a systemd
/// service's stdout and stderr go to /run/systemd/journal/stdout): giving
/// up on the database connections leaves it alone, and the summary still
/// gets there.
#[test]
fn a_stall_leaves_a_standard_stream_that_is_a_socket_alone() {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::{UnixListener, UnixStream};

    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let scratch = Scratch::new();
    let listener = UnixListener::bind(scratch.path().join("journal.sock")).expect("bind");
    let stdout = UnixStream::connect(scratch.path().join("journal.sock")).expect("connect");
    let (mut journal, _) = listener.accept().expect("accept");
    let received = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = journal.read_to_string(&mut text);
        text
    });
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let load = server
        .pgsense(&db)
        .args(["--stall-timeout", "2", "--connect-timeout", "2"])
        .args([
            "load",
            "--summary",
            "json",
            "--batch-rows",
            "500",
            "--state-file",
        ])
        .arg(scratch.path().join("state.json"))
        .arg(&input)
        .stdout_file(std::fs::File::from(OwnedFd::from(stdout)))
        .timeout(Duration::from_secs(180))
        .spawn();
    let load = wait_during(load, "rows in the table", Duration::from_secs(60), || {
        server.count(&db, TABLE) > 0
    });
    let frozen = Frozen::backends_of(&server, &db);
    let out = load.wait();
    drop(frozen);
    out.assert_stderr_contains("shutting the database connections down");
    let received = received.join().expect("reader");
    assert!(
        received.contains("\"lines_read\""),
        "no summary on the socket: {received:?}\n{}",
        out.describe()
    );
    rerun_completes(&server, &db, &scratch);
}

/// The next run settles what a killed run left in the state journal by
/// asking the server, before any writer (and its watch) starts: a server
/// that stops answering then is given up after the stall timeout too.
#[test]
fn settling_a_killed_run_is_given_up_when_the_server_stops_answering() {
    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "large.ndjson", LARGE);
    let state = scratch.path().join("state.json");
    let killed = server
        .pgsense(&db)
        .args(["load", "--state-file"])
        .arg(&state)
        .arg(&input)
        .env("PGSENSE_PG_CRASH_AT", "journaled:1")
        .run();
    assert_eq!(killed.code, None, "expected a kill\n{}", killed.describe());
    // The journaled transaction is still in progress: the next run waits
    // for it to end, asking the server again and again.
    let journal = scratch.path().join("state.json.journal");
    let mut holder = in_progress_in(&server, &db, &journal, true);
    let started = Instant::now();
    let load = server
        .pgsense(&db)
        .args([
            "--stall-timeout",
            "2",
            "load",
            "--retry-for",
            "0",
            "--state-file",
        ])
        .arg(&state)
        .arg(&input)
        .timeout(Duration::from_secs(90))
        .spawn();
    let load = settling(load, &server);
    let frozen = Frozen::backends_of(&server, &db);
    let out = load.wait();
    drop(frozen);
    out.assert_code(69)
        .assert_stderr_contains("the server has not answered for 2 s (--stall-timeout)");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{}",
        out.describe()
    );
    holder.batch_execute("rollback").expect("rollback");
    rerun_completes(&server, &db, &scratch);
}

/// Both writers' COPYs wait on a lock longer than --stall-timeout: each is
/// cancelled, answers the cancel, and is retried until the lock goes. A
/// server that answers its cancels keeps its connections.
#[test]
fn statements_waiting_on_a_lock_are_cancelled_and_retried_keeping_the_connections() {
    let server = crate::support::shared();
    let db = server.new_database();
    init(server, &db);
    let scratch = Scratch::new();
    let input = write_findings(&scratch, "in.ndjson", 20_000);
    let mut holder = server.client(&db);
    let mut lock = holder.transaction().expect("begin");
    lock.batch_execute(&format!("lock table {TABLE} in share mode"))
        .expect("lock the table");
    let load = server
        .pgsense(&db)
        .args(["--stall-timeout", "6", "load", "--batch-rows", "500"])
        .arg(&input)
        .spawn();
    std::thread::sleep(Duration::from_secs(14));
    lock.commit().expect("let the lock go");
    let out = load.wait();
    out.assert_code(0)
        .assert_stderr_contains("(--stall-timeout): cancelling it")
        .assert_stderr_contains("pgsense-pg's own after --stall-timeout");
    for misleading in [
        "shutting the database connections down",
        "RESET statement_timeout",
    ] {
        assert!(!out.stderr.contains(misleading), "{}", out.describe());
    }
    assert_table_holds_after(server, &db, 1..=20_000, Some(&out));
}

/// The query that opens a batch's transaction (BEGIN, its settings,
/// txid_current()) waits past --stall-timeout after its BEGIN ran: here its
/// function lookups wait on a lock on pg_proc, which a new connection
/// needs. The cancel leaves that transaction open and aborted; it is rolled
/// back before the batch is retried, and the retry loads the batch once the
/// lock goes, rather than taking "current transaction is aborted" for an
/// error that retrying cannot fix.
#[test]
fn a_batch_whose_begin_was_cancelled_is_retried() {
    use std::io::Write;

    let server = private();
    let db = server.new_database();
    init(&server, &db);
    let load = server
        .pgsense(&db)
        .args(["--stall-timeout", "1", "load", "--retry-for", "60"])
        .timeout(Duration::from_secs(120))
        .spawn_piped();
    // The bootstrap is over once the loader's connection has been idle for
    // a while: it waits for input.
    let idle = format!(
        "select count(*) from pg_stat_activity where datname = '{db}' \
         and application_name = 'pgsense-pg' and state = 'idle' \
         and now() - state_change > interval '1 second'"
    );
    let mut load = wait_during(load, "the bootstrap", Duration::from_secs(30), || {
        server.query_one("postgres", &idle).as_deref() != Some("0")
    });
    let mut holder = server.client(&db);
    let mut lock = holder.transaction().expect("begin");
    lock.batch_execute("lock table pg_catalog.pg_proc in access exclusive mode")
        .expect("lock pg_proc");
    load.stdin()
        .write_all(crate::support::markers::findings(1..=3).as_bytes())
        .expect("write findings");
    load.close_stdin();
    // Cancelled after 1 s, then retried while the lock stays.
    std::thread::sleep(Duration::from_secs(4));
    lock.commit().expect("let the lock go");
    let out = load.wait();
    out.assert_code(0)
        .assert_stderr_contains("(--stall-timeout): cancelling it");
    assert_table_holds_after(&server, &db, 1..=3, Some(&out));
}
