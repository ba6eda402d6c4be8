//! The command line (issue 2, "Commands" and "Exit status"): usage errors
//! exit 2 before anything else happens, global options go before or after
//! the command, and input files are checked before connecting (66).

use crate::support::findings::ndjson;
use crate::support::{Scratch, Shape, SilentServer, pgsense, shared};

#[test]
fn usage_errors_exit_2_without_connecting() {
    let silent = SilentServer::new();
    let port = silent.port().to_string();
    let cases: [&[&str]; 8] = [
        &["load", "--bogus"],
        &["--port", "not-a-port", "load"],
        &["--port", "70000", "load"],
        &["frobnicate"],
        &[],
        // No flag takes a password on the command line.
        &["--password", "secret", "load"],
        &["--connect-timeout", "0", "load"],
        &["load", "--max-line-bytes", "0"],
    ];
    for args in cases {
        let out = pgsense()
            .args(["--host", "127.0.0.1", "--port", &port])
            .args(args)
            .run();
        out.assert_code(2);
        assert!(
            !out.stderr.is_empty(),
            "a usage error says why\n{}",
            out.describe()
        );
    }
    assert!(!silent.was_contacted(), "a usage error must not connect");
}

#[test]
fn help_and_version_exit_0() {
    let help = pgsense().arg("--help").run();
    help.assert_code(0)
        .assert_stdout_contains("load")
        .assert_stdout_contains("init")
        .assert_stdout_contains("--config");
    let load_help = pgsense().args(["load", "--help"]).run();
    load_help
        .assert_code(0)
        .assert_stdout_contains("--max-line-bytes");
    let version = pgsense().arg("--version").run();
    version
        .assert_code(0)
        .assert_stdout_contains(&format!("pgsense-pg {}", env!("CARGO_PKG_VERSION")));
}

/// The connection options work before the command, after it, and mixed.
#[test]
fn global_options_go_before_or_after_the_command() {
    let server = shared();
    let db = server.new_database();
    let port = server.port().to_string();
    let after = pgsense()
        .args(["load", "--host", server.host(), "--port", &port])
        .args(["--dbname", &db, "--username", "postgres", "-"])
        .stdin(ndjson(0, 2, Shape::Object))
        .run();
    after.assert_code(0);
    let mixed = pgsense()
        .args([
            "--host",
            server.host(),
            "--dbname",
            &db,
            "init",
            "--port",
            &port,
        ])
        .args(["--username", "postgres", "--quiet"])
        .run();
    mixed.assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 2);
}

/// psql's short flags: -h is the host, not help (a cron line written as
/// for psql must not print help and exit 0); -? is help.
#[test]
fn psql_short_flags_name_the_server() {
    let server = shared();
    let db = server.new_database();
    let port = server.port().to_string();
    pgsense()
        .args(["-h", server.host(), "-p", &port])
        .args(["-d", &db, "-U", "postgres"])
        .args(["load", "-"])
        .stdin(ndjson(0, 3, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 3);
    pgsense()
        .args(["load", "-h"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("--host");
    pgsense()
        .args(["load", "-?"])
        .run()
        .assert_code(0)
        .assert_stdout_contains("--max-line-bytes");
}

/// A missing input file: exit 66 naming it, checked before connecting.
#[test]
fn a_missing_input_file_gives_66_without_connecting() {
    let silent = SilentServer::new();
    let scratch = Scratch::new();
    let present = scratch.write("present.ndjson", ndjson(0, 2, Shape::Object));
    let missing = scratch.path().join("missing.ndjson");
    let out = pgsense()
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .arg("load")
        .arg(&present)
        .arg(&missing)
        .run();
    out.assert_code(66)
        .assert_stderr_contains(&missing.display().to_string());
    assert!(!silent.was_contacted(), "66 is decided before connecting");
}

/// A directory given as FILE cannot be opened as input either: 66.
#[test]
fn a_directory_as_input_file_gives_66_without_connecting() {
    let silent = SilentServer::new();
    let scratch = Scratch::new();
    let out = pgsense()
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .arg("load")
        .arg(scratch.path())
        .run();
    out.assert_code(66)
        .assert_stderr_contains(&scratch.path().display().to_string());
    assert!(!silent.was_contacted(), "66 is decided before connecting");
}

/// Nothing is loaded, not even the bootstrap, when a later file is missing.
#[test]
fn a_missing_later_file_loads_nothing() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let present = scratch.write("present.ndjson", ndjson(0, 2, Shape::Object));
    let out = server
        .pgsense(&db)
        .arg("load")
        .arg(&present)
        .arg("-")
        .arg("nowhere/else.ndjson")
        .stdin(ndjson(2, 2, Shape::Object))
        .run();
    out.assert_code(66)
        .assert_stderr_contains("nowhere/else.ndjson");
    assert_eq!(
        server.query_one(&db, "select to_regclass('pgsense.findings') is null"),
        Some("t".to_owned()),
        "nothing at all happened in the database"
    );
}

/// Exit 1, any other failure: standard input that cannot be read.
#[test]
fn unreadable_standard_input_exits_1() {
    let server = shared();
    let db = server.new_database();
    let directory = std::fs::File::open(std::env::temp_dir()).expect("open the temp directory");
    let out = server.pgsense(&db).arg("load").stdin_file(directory).run();
    out.assert_code(1)
        .assert_stderr_contains("pgsense-pg: error: ");
}

/// Standard output whose reader went away (`| head`, `| true`): what was
/// done still sets the exit status, and no error is made of it.
#[test]
fn a_closed_standard_output_is_no_failure() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let input = scratch.write("in.ndjson", crate::support::markers::findings(1..=3));
    let closed = || {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        std::fs::File::from(std::os::fd::OwnedFd::from(writer))
    };
    for args in [
        vec!["init".as_ref()],
        vec!["check".as_ref()],
        vec![
            "load".as_ref(),
            "--summary".as_ref(),
            "json".as_ref(),
            input.as_os_str(),
        ],
    ] {
        let out = server.pgsense(&db).args(&args).stdout_file(closed()).run();
        out.assert_code(0);
        assert!(
            !out.stderr.contains("error"),
            "{args:?}: {}",
            out.describe()
        );
    }
    assert_eq!(server.count(&db, crate::support::TABLE), 3);
}

/// Exit 1, any other failure: init cannot write its report.
#[test]
fn init_that_cannot_write_its_report_exits_1() {
    let server = shared();
    let db = server.new_database();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let out = server.pgsense(&db).arg("init").stdout_file(full).run();
    out.assert_code(1)
        .assert_stderr_contains("pgsense-pg: error: ");
}
