//! Connecting and failing (issue 2, "Connection" and "Exit status"):
//! nothing waits forever, startup failures exit 69 with the real cause,
//! and a database that fails during the run exits 75 with every line
//! accounted for.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::findings::ndjson;
use crate::support::markers::{assert_table_holds, findings};
use crate::support::pg::free_port;
use crate::support::run::init;
use crate::support::{Shape, SilentServer, pgsense, private, shared};

/// A port on 127.0.0.1 whose connections are cut as soon as they are
/// taken, and how many were.
fn cutting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port().to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, accepted)
}

/// A server that accepts connections and cuts them before the session
/// begins is going down (a restart under the first connection): tried
/// again within --retry-for, then 69 with the cause. A refused connection
/// is not tried again (below).
#[test]
fn a_connection_cut_before_the_session_begins_is_tried_again() {
    let (port, accepted) = cutting_server();
    let out = pgsense()
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--sslmode",
            "disable",
        ])
        .args(["load", "--retry-for", "2"])
        .stdin(ndjson(0, 1, Shape::Object))
        .run();
    out.assert_code(69)
        .assert_stderr_contains("trying again for up to");
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "tried once\n{}",
        out.describe()
    );
}

#[test]
fn a_refused_connection_gives_69_with_the_cause() {
    let port = free_port().to_string();
    for command in ["load", "init"] {
        let out = pgsense()
            .args(["--host", "127.0.0.1", "--port", &port, command])
            .stdin(ndjson(0, 1, Shape::Object))
            .run();
        out.assert_code(69);
        assert!(
            out.stderr.to_lowercase().contains("refused"),
            "the cause (connection refused) is shown\n{}",
            out.describe()
        );
        assert!(out.elapsed < Duration::from_secs(10), "{}", out.describe());
    }
}

/// A server that accepts TCP and never answers: the run gives up within
/// about --connect-timeout, and says it timed out.
#[test]
fn a_silent_server_gives_69_within_the_connect_timeout() {
    let silent = SilentServer::new();
    let port = silent.port().to_string();
    for command in ["load", "init"] {
        let out = pgsense()
            .args(["--host", "127.0.0.1", "--port", &port])
            .args(["--connect-timeout", "2", command])
            .stdin(ndjson(0, 1, Shape::Object))
            .timeout(Duration::from_secs(30))
            .run();
        out.assert_code(69);
        assert!(
            out.elapsed < Duration::from_secs(2 + 5),
            "gave up after {:?}, --connect-timeout was 2 s\n{}",
            out.elapsed,
            out.describe()
        );
        let stderr = out.stderr.to_lowercase();
        assert!(
            stderr.contains("timed out") || stderr.contains("timeout"),
            "{}",
            out.describe()
        );
        assert!(
            !stderr.contains("timed out waiting for connection"),
            "r2d2's bare message hides the cause\n{}",
            out.describe()
        );
    }
    assert!(silent.was_contacted());
}

#[test]
fn a_missing_database_gives_69_naming_it() {
    let server = shared();
    let out = server
        .pgsense("no_such_db_here")
        .arg("load")
        .stdin(ndjson(0, 1, Shape::Object))
        .run();
    out.assert_code(69)
        .assert_stderr_contains("no_such_db_here")
        .assert_stderr_contains("does not exist");
}

#[test]
fn an_unknown_role_gives_69_naming_it() {
    let server = shared();
    let db = server.new_database();
    let out = server
        .pgsense_as(&db, "no_such_role_here")
        .arg("init")
        .run();
    out.assert_code(69)
        .assert_stderr_contains("no_such_role_here");
}

/// The server shuts down in the middle of a load: the run ends with 75
/// (retrying later may succeed), and read = inserted + dropped, with
/// exactly the reported number of rows in the table.
#[test]
fn a_server_stopped_mid_load_gives_75_and_every_line_is_accounted_for() {
    let server = private();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);

    let mut load = server
        .pgsense(&db)
        .args(["--connect-timeout", "2", "load", "--batch-rows", "10"])
        // The server stays down: retry briefly, then give up.
        .args(["--retry-for", "1"])
        .timeout(Duration::from_secs(120))
        .spawn_piped();
    load.stdin()
        .write_all(ndjson(0, 200, Shape::Object).as_bytes())
        .expect("feed the first half");
    load.stdin().flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.count(&db, "pgsense.findings") < 100 {
        assert!(Instant::now() < deadline, "the first batches never arrived");
        thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    // The loader may already have given up: a broken pipe is fine here.
    let _ = load
        .stdin()
        .write_all(ndjson(200, 200, Shape::Object).as_bytes());
    load.close_stdin();
    let out = load.wait();
    out.assert_code(75);
    let (read, inserted, dropped) = out.summary();
    // The loader may read on (dropping what it cannot send) or stop reading
    // and say after which line: either way every line it read is accounted
    // for.
    assert!(read <= 400, "{}", out.describe());
    if read < 400 {
        let says_where = out.stderr.lines().any(|line| {
            line.contains("stopped reading")
                && line
                    .split(|c: char| !c.is_ascii_digit())
                    .any(|number| number == read.to_string())
        });
        assert!(
            says_where,
            "stopping early must say after which line\n{}",
            out.describe()
        );
    }
    assert_eq!(
        inserted + dropped,
        read,
        "read = inserted + dropped\n{}",
        out.describe()
    );
    assert_eq!(
        out.reject_lines().len() as u64,
        dropped.min(100),
        "each dropped line is reported\n{}",
        out.describe()
    );
    assert!(dropped > 0 && inserted >= 100, "{}", out.describe());

    server.start();
    // Rows sent with a COMMIT whose answer was lost while the server stayed
    // down are reported as of unknown outcome: they may be in the table.
    let uncertain: i64 = out
        .stderr
        .lines()
        .rev()
        .find_map(|line| {
            let (before, _) = line.split_once(" of unknown outcome")?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or(0);
    let rows = server.count(&db, "pgsense.findings");
    assert!(
        rows >= inserted as i64 && rows <= inserted as i64 + uncertain,
        "the table holds what the summary says was inserted, plus at most the lines of unknown outcome ({uncertain})\n{}",
        out.describe()
    );
}

/// Bad data and a database failure in one run: 75 takes precedence.
#[test]
fn a_database_failure_takes_precedence_over_bad_data() {
    let server = private();
    let db = server.new_database();
    server.pgsense(&db).arg("init").run().assert_code(0);
    let mut load = server
        .pgsense(&db)
        .args(["--connect-timeout", "2", "load", "--batch-rows", "5"])
        .args(["--retry-for", "1"])
        .timeout(Duration::from_secs(120))
        .spawn_piped();
    let first = ndjson(0, 20, Shape::Object) + "{bad line\n";
    load.stdin().write_all(first.as_bytes()).expect("feed");
    load.stdin().flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.count(&db, "pgsense.findings") < 20 {
        assert!(Instant::now() < deadline, "the first batches never arrived");
        thread::sleep(Duration::from_millis(50));
    }
    server.stop_immediate();
    let _ = load
        .stdin()
        .write_all(ndjson(20, 20, Shape::Object).as_bytes());
    load.close_stdin();
    let out = load.wait();
    out.assert_code(75);
    assert_eq!(
        out.rejected_line_numbers("-").first(),
        Some(&21),
        "{}",
        out.describe()
    );
}

/// A first host that takes the TCP connection and never answers (a frozen
/// machine) holds neither the first connection nor the pool's others
/// beyond the connect timeout: the next host is tried, and every line is
/// loaded there, over both connections.
#[test]
fn a_silent_first_host_is_passed_over_after_the_connect_timeout() {
    let silent = SilentServer::new();
    let server = shared();
    let db = server.new_database();
    init(server, &db);
    let hosts = format!("{},{}", "127.0.0.1", server.host());
    let ports = format!("{},{}", silent.port(), server.port());
    let out = pgsense()
        .args(["--host", &hosts, "--port", &ports])
        .args(["--dbname", &db, "--username", "postgres"])
        .args(["--connect-timeout", "2", "load", "--batch-rows", "100"])
        .stdin(findings(1..=2000))
        .timeout(Duration::from_secs(60))
        .run();
    out.assert_code(0)
        .assert_stderr_contains("2000 read, 2000 inserted");
    assert_table_holds(server, &db, 1..=2000);
    assert!(silent.was_contacted());
}

/// --follow at startup, against a server that cuts every connection before
/// the session begins: tried again until it answers, said so (not as a
/// retry "for up to" a hundred years), and a SIGTERM ends the wait within
/// seconds.
#[test]
fn follow_against_a_server_cutting_connections_stops_on_sigterm() {
    let (port, _) = cutting_server();
    let scratch = crate::support::Scratch::new();
    let input = scratch.write("findings.jsonl", ndjson(0, 3, Shape::Object));
    let load = pgsense()
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--sslmode",
            "disable",
        ])
        .args(["load", "--follow", "--state-file"])
        .arg(scratch.path().join("state"))
        .arg(&input)
        .timeout(Duration::from_secs(30))
        .spawn();
    thread::sleep(Duration::from_secs(2));
    let signalled = Instant::now();
    crate::support::process::send_signal(load.id(), "TERM");
    let out = load.wait();
    let took = signalled.elapsed();
    out.assert_code(143)
        .assert_stderr_contains("trying again until it answers")
        .assert_stderr_contains("interrupted while waiting for the database");
    assert!(
        !out.stderr.contains("for up to"),
        "an endless wait said as a bounded one\n{}",
        out.describe()
    );
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?} to end the wait\n{}",
        out.describe()
    );
}

/// --follow waits at startup for a database that does not answer, but not
/// for one that answers no for good (a database or role that does not
/// exist, a password refused): that needs a fix, so the run ends at once
/// with 69, naming the cause, as a one-shot load does.
#[test]
fn follow_refused_for_good_at_startup_exits_69_at_once() {
    let server = shared();
    let scratch = crate::support::Scratch::new();
    let input = scratch.write("findings.jsonl", ndjson(0, 3, Shape::Object));
    for (flag, value, said) in [
        (
            "--dbname",
            "no_such_database",
            "\"no_such_database\" does not exist",
        ),
        (
            "--username",
            "no_such_role",
            "\"no_such_role\" does not exist",
        ),
    ] {
        let mut cmd = server.pgsense("postgres");
        cmd = cmd.args([flag, value]);
        let out = cmd
            .args(["load", "--follow", "--state-file"])
            .arg(scratch.path().join("state"))
            .arg(&input)
            .timeout(Duration::from_secs(30))
            .run();
        out.assert_code(69).assert_stderr_contains(said);
        assert!(
            out.elapsed < Duration::from_secs(10),
            "took {:?}\n{}",
            out.elapsed,
            out.describe()
        );
    }
}
