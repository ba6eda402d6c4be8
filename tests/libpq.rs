//! libpq's connection conventions (issue 12): a connection string or URI in
//! --dbname, pg_service.conf, several hosts tried in order, and the PG*
//! variables PGCONNECT_TIMEOUT, PGAPPNAME and the warning for the others.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::findings::ndjson;
use crate::support::pg::{free_port, private};
use crate::support::{Scratch, Shape, SilentServer, pgsense, shared};

#[test]
fn a_uri_or_a_connection_string_as_dbname() {
    let server = shared();
    let db = server.new_database();
    let uri = format!("postgresql://postgres@127.0.0.1:{}/{db}", server.port());
    pgsense()
        .args(["--dbname", &uri, "load"])
        .stdin(ndjson(0, 2, Shape::Object))
        .run()
        .assert_code(0);
    // The string's port is wrong; the flag overrides it.
    let conninfo = format!(
        "host=127.0.0.1 port={} dbname='{db}' user=postgres",
        free_port()
    );
    pgsense()
        .args(["--dbname", &conninfo])
        .args(["--port", &server.port().to_string(), "load"])
        .stdin(ndjson(2, 3, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 5);
}

#[test]
fn a_service_from_pgservicefile_or_service() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let file = scratch.write(
        "services.conf",
        format!(
            "# findings store\n[other]\nhost=192.0.2.1\n\n[findings]\nhost=127.0.0.1\nport={}\n\
             dbname={db}\nuser=postgres\n",
            server.port()
        ),
    );
    pgsense()
        .env("PGSERVICEFILE", &file)
        .env("PGSERVICE", "findings")
        .arg("load")
        .stdin(ndjson(0, 2, Shape::Object))
        .run()
        .assert_code(0);
    pgsense()
        .env("PGSERVICEFILE", &file)
        .args(["--service", "findings", "load"])
        .stdin(ndjson(2, 1, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 3);
    // In ~/.pg_service.conf, via --dbname's service keyword.
    scratch.write(".pg_service.conf", std::fs::read(&file).unwrap());
    pgsense()
        .env("HOME", scratch.path())
        .args(["--dbname", "service=findings", "load"])
        .stdin(ndjson(3, 1, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 4);
}

#[test]
fn a_missing_service_is_a_config_error_naming_the_files() {
    let scratch = Scratch::new();
    let file = scratch.write("services.conf", "[elsewhere]\nhost=192.0.2.1\n");
    let out = pgsense()
        .env("PGSERVICEFILE", &file)
        .env("PGSYSCONFDIR", scratch.path())
        .args(["--service", "findings", "init"])
        .run();
    out.assert_code(78)
        .assert_stderr_contains("service \"findings\" is not defined")
        .assert_stderr_contains(&file.display().to_string())
        .assert_stderr_contains(&scratch.path().join("pg_service.conf").display().to_string());
}

/// Nothing listens on the first port: libpq's way, the next host is tried.
#[test]
fn the_next_host_is_tried_when_the_first_refuses() {
    let server = shared();
    let db = server.new_database();
    let ports = format!("{},{}", free_port(), server.port());
    let out = pgsense()
        .args(["--host", "127.0.0.1,127.0.0.1", "--port", &ports])
        .args(["--dbname", &db, "--username", "postgres", "-v", "load"])
        .stdin(ndjson(0, 2, Shape::Object))
        .run();
    out.assert_code(0)
        .assert_stderr_contains(&format!("127.0.0.1:{}", server.port()));
    pgsense()
        .env("PGHOST", "127.0.0.1,127.0.0.1")
        .env("PGPORT", &ports)
        .args(["--dbname", &db, "--username", "postgres", "load"])
        .stdin(ndjson(2, 1, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 3);
}

/// Of several hosts, `check` says which one it reached.
#[test]
fn check_says_which_of_several_hosts_it_reached() {
    let server = shared();
    let db = server.new_database();
    let dead = free_port();
    let ports = format!("{dead},{}", server.port());
    let out = pgsense()
        .args(["--host", "127.0.0.1,127.0.0.1", "--port", &ports])
        .args(["--dbname", &db, "--username", "postgres", "check"])
        .run();
    let expected = format!(
        "connected to postgres@127.0.0.1:{dead},127.0.0.1:{}/{db} at 127.0.0.1:{} (",
        server.port(),
        server.port()
    );
    assert!(
        out.stdout.contains(&expected),
        "{expected}\n{}",
        out.describe()
    );
}

/// No host takes writes, each for its own reason: nothing listens on one,
/// the other is read-only. The error names each host with its own cause,
/// in either order, and does not say that every host is read-only.
/// As libpq does, a host that answers with an error of its own (here: no
/// such database) ends the attempt: the next host is not tried, and
/// nothing is loaded into it behind the operator's back.
#[test]
fn a_host_that_answers_with_an_error_ends_the_attempt() {
    let first = private();
    let server = shared();
    let db = server.new_database();
    let ports = format!("{},{}", first.port(), server.port());
    let out = pgsense()
        .args(["--host", "127.0.0.1,127.0.0.1", "--port", &ports])
        .args(["--dbname", &db, "--username", "postgres", "load"])
        .stdin(ndjson(0, 2, Shape::Object))
        .run();
    out.assert_code(69)
        .assert_stderr_contains(&format!("127.0.0.1:{}: FATAL", first.port()))
        .assert_stderr_contains("does not exist")
        .assert_stderr_contains("the hosts after it were not tried");
    assert_eq!(
        server.query_one(
            &db,
            "select count(*)::text from pg_tables where schemaname = 'pgsense'"
        ),
        Some("0".to_owned())
    );
}

#[test]
fn each_host_that_failed_is_named_with_its_own_cause() {
    let server = shared();
    let db = server.new_database();
    let role = format!("reader_{db}");
    server.execute(
        &db,
        &format!(
            "CREATE ROLE {role} LOGIN;
             ALTER ROLE {role} SET default_transaction_read_only = on;"
        ),
    );
    let (closed, open) = (free_port(), server.port());
    for ports in [format!("{closed},{open}"), format!("{open},{closed}")] {
        let out = pgsense()
            .args(["--host", "127.0.0.1,127.0.0.1", "--port", &ports])
            .args(["--dbname", &db, "--username", &role, "check"])
            .run();
        out.assert_code(69);
        let refused = format!("127.0.0.1:{closed}: error connecting to server: Connection refused");
        let read_only =
            format!("127.0.0.1:{open}: error connecting to server: database does not allow writes");
        out.assert_stderr_contains(&refused)
            .assert_stderr_contains(&read_only);
        assert!(
            !out.stderr.contains("every host"),
            "one host refused: not every host is read-only\n{}",
            out.describe()
        );
    }
    // Both hosts read-only, for the same reason: each is named, and the
    // advice is given once.
    let out = pgsense()
        .args(["--host", "127.0.0.1,localhost", "--port", &open.to_string()])
        .args(["--dbname", &db, "--username", &role, "check"])
        .run();
    out.assert_code(69)
        .assert_stderr_contains(&format!("127.0.0.1:{open}: error connecting"))
        .assert_stderr_contains(&format!("localhost:{open}: error connecting"));
    assert_eq!(
        out.stderr.matches("the server is read-only").count(),
        1,
        "{}",
        out.describe()
    );
    server.execute(&db, &format!("DROP ROLE {role}"));
}

#[test]
fn pgconnect_timeout_is_honoured() {
    let silent = SilentServer::new();
    let out = pgsense()
        .env("PGCONNECT_TIMEOUT", "2")
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &silent.port().to_string(),
            "init",
        ])
        .timeout(Duration::from_secs(30))
        .run();
    out.assert_code(69)
        .assert_stderr_contains("from PGCONNECT_TIMEOUT");
    assert!(
        out.elapsed < Duration::from_secs(2 + 4),
        "PGCONNECT_TIMEOUT=2, default 10\n{}",
        out.describe()
    );
    let out = pgsense()
        .env("PGCONNECT_TIMEOUT", "0")
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &silent.port().to_string(),
            "init",
        ])
        .run();
    out.assert_code(78).assert_stderr_contains("waits forever");
}

#[test]
fn pgappname_is_the_application_name() {
    let server = shared();
    let db = server.new_database();
    let mut load = server
        .pgsense(&db)
        .env("PGAPPNAME", "findings-loader-12")
        .arg("load")
        .spawn_piped();
    load.stdin()
        .write_all(ndjson(0, 1, Shape::Object).as_bytes())
        .unwrap();
    load.stdin().flush().unwrap();
    let sql = format!(
        "SELECT count(*)::text FROM pg_stat_activity \
         WHERE datname = '{db}' AND application_name = 'findings-loader-12'"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.query_one("postgres", &sql).as_deref() == Some("0") {
        assert!(Instant::now() < deadline, "no session named by PGAPPNAME");
        thread::sleep(Duration::from_millis(50));
    }
    load.close_stdin();
    load.wait().assert_code(0);
}

#[test]
fn an_unused_pg_variable_is_named_once() {
    let server = shared();
    let db = server.new_database();
    let out = server
        .pgsense(&db)
        .env("PGGSSENCMODE", "disable")
        .arg("init")
        .run();
    out.assert_code(0);
    let warning = "PGGSSENCMODE is set but pgsense-pg does not use it";
    assert_eq!(out.stderr.matches(warning).count(), 1, "{}", out.describe());
}

#[test]
fn a_password_in_a_uri_never_shows() {
    let server = shared();
    let db = server.new_database();
    let secret = "Sup3rSecretPw";
    for port in [free_port(), server.port()] {
        let uri = format!("postgresql://postgres:{secret}@127.0.0.1:{port}/{db}?sslmode=disable");
        let out = pgsense().args(["--dbname", &uri, "-vvv", "init"]).run();
        assert!(!out.stderr.contains(secret), "{}", out.describe());
        assert!(!out.stdout.contains(secret), "{}", out.describe());
        let code = if port == server.port() { 0 } else { 69 };
        out.assert_code(code);
    }
}

/// A connection string that does not parse is reported without the parts
/// of its password that a parser would take for something else: a tail
/// after a space, or what follows a "/" in a URI's password.
#[test]
fn a_malformed_connection_string_does_not_show_pieces_of_its_password() {
    for (dbname, hint) in [
        (
            "postgresql://loader:Sec9/Ret7@db/findings",
            "must be percent-encoded, as %2F",
        ),
        (
            "host=db password=Sec9 Ret7=x",
            "keyword number 3 is not a libpq connection keyword",
        ),
    ] {
        let out = pgsense().args(["--dbname", dbname, "check"]).run();
        out.assert_code(78).assert_stderr_contains(hint);
        for piece in ["Sec9", "Ret7"] {
            assert!(
                !out.stderr.contains(piece),
                "{piece} shown\n{}",
                out.describe()
            );
        }
    }
    let out = pgsense()
        .args(["--dbname", "host=db bogus=1", "check"])
        .run();
    out.assert_code(78).assert_stderr_contains(
        "error: the connection string of --dbname: \"bogus\" is not a libpq connection keyword",
    );
    // In a URI a password cannot spill into the keywords: the unknown one
    // is named.
    let out = pgsense()
        .args(["--dbname", "postgresql://u:Sec9@db/x?bogus=1", "check"])
        .run();
    out.assert_code(78)
        .assert_stderr_contains("\"bogus\" is not a libpq connection keyword");
    assert!(!out.stderr.contains("Sec9"), "{}", out.describe());
    // Unless it comes after an unencoded password with an "&" in it.
    let out = pgsense()
        .args([
            "--dbname",
            "postgresql://u@db/x?password=Sec&ret9x=1",
            "check",
        ])
        .run();
    out.assert_code(78).assert_stderr_contains("keyword number");
    assert!(!out.stderr.contains("ret9x"), "{}", out.describe());
}
