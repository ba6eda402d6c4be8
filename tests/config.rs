//! Configuration (issue 2, "Configuration"): the scanner's own TOML file,
//! precedence flags > file > PG* variables > defaults, configuration errors
//! exit 78 before anything connects, and passwords from a file.

use std::path::PathBuf;

use crate::support::findings::{assert_rows, ndjson, rows};
use crate::support::{Finding, PgServer, Scratch, Shape, SilentServer, pgsense, private, shared};

/// `[alerts.postgres]` pointing at `db` on `server`, plus `extra` lines.
fn alerts_postgres(port: u16, db: &str, extra: &str) -> String {
    format!(
        "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = {port}\ndbname = \"{db}\"\n\
         username = \"postgres\"\n{extra}\n"
    )
}

/// A whole scanner configuration file, every section the scanner has, with
/// the PostgreSQL channel pointing at `db` in schema scan_alerts, table found.
fn scanner_config(server: &PgServer, db: &str) -> String {
    format!(
        r#"# pgsense scanner configuration
log_level = "info"

[[databases]]
name = "orders"
connection_string = "postgres://scanner@db1.internal:5432/orders"
publication = "pgsense_pub"
slot_name = "pgsense_slot"
tables = ["public.users", "public.payments"]

[[databases]]
name = "billing"
connection_string = "postgres://scanner@db2.internal:5432/billing"
publication = "pgsense_pub"

[scan]
sample_rate = 0.25
max_value_bytes = 4096
rules = ["email-address", "credit-card", "iban"]

[scan.overrides]
"public.audit" = {{ skip = true }}

[[rules]]
id = "employee-id"
pattern = "EMP-[0-9]{{6}}"
severity = "MEDIUM"

[alerts.jsonl]
path = "/var/log/pgsense/findings.jsonl"

[alerts.webhook]
url = "https://alerts.example.com/hook"
timeout_seconds = 5

[alerts.webhook.tls]
enabled = true

[alerts.postgres]
name = "central-store"
host = "127.0.0.1"
port = {port}
dbname = "{db}"
username = "postgres"
schema = "scan_alerts"
table = "found"

[alerts.postgres.tls]
enabled = false

[metrics]
listen = "0.0.0.0:9187"
"#,
        port = server.port()
    )
}

#[test]
fn a_scanner_config_file_with_all_its_sections_works() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let config = scratch.write("pgsense.toml", scanner_config(server, &db));
    let findings: Vec<Finding> = (0..5).map(Finding::sample).collect();
    let out = pgsense()
        .arg("-c")
        .arg(&config)
        .arg("load")
        .stdin(ndjson(0, 5, Shape::Object))
        .run();
    out.assert_code(0);
    assert_rows(&rows(server, &db, "scan_alerts.found"), &findings);
}

/// PGSENSE_PG_CONFIG names the file when -c does not; -c after the command
/// works too.
#[test]
fn the_config_file_from_the_environment_or_after_the_command() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let config = scratch.write("pgsense.toml", scanner_config(server, &db));
    pgsense()
        .env("PGSENSE_PG_CONFIG", &config)
        .arg("load")
        .stdin(ndjson(0, 2, Shape::Object))
        .run()
        .assert_code(0);
    pgsense()
        .arg("load")
        .arg("--config")
        .arg(&config)
        .stdin(ndjson(2, 3, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(&db, "scan_alerts.found"), 5);
    // Set and empty is not set: no config file, the flags apply.
    server
        .pgsense(&db)
        .env("PGSENSE_PG_CONFIG", "")
        .arg("load")
        .stdin(ndjson(5, 1, Shape::Object))
        .run()
        .assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 1);
}

/// Flags beat the file: the file's port and dbname are wrong, the flags'
/// are right.
#[test]
fn flags_override_the_config_file() {
    let server = shared();
    let db = server.new_database();
    let silent = SilentServer::new();
    let scratch = Scratch::new();
    let config = scratch.write(
        "c.toml",
        alerts_postgres(silent.port(), "not_this_db", "schema = \"from_file\""),
    );
    let out = pgsense()
        .arg("-c")
        .arg(&config)
        .args(["--port", &server.port().to_string(), "--dbname", &db])
        .args(["--schema", "from_flag", "load"])
        .stdin(ndjson(0, 2, Shape::Object))
        .run();
    out.assert_code(0);
    assert_eq!(server.count(&db, "from_flag.findings"), 2);
    assert!(!silent.was_contacted());
}

/// The file beats the PG* variables, which fill in only what neither flags
/// nor file set.
#[test]
fn the_config_file_overrides_pg_variables_which_fill_the_gaps() {
    let server = shared();
    let db = server.new_database();
    let other_db = server.new_database();
    let silent = SilentServer::new();
    let scratch = Scratch::new();
    // The file sets port and dbname; the host and user come from PG*.
    let config = scratch.write(
        "c.toml",
        format!(
            "[alerts.postgres]\nport = {}\ndbname = \"{db}\"\n",
            server.port()
        ),
    );
    let out = pgsense()
        .arg("-c")
        .arg(&config)
        .env("PGHOST", "127.0.0.1")
        .env("PGUSER", "postgres")
        .env("PGPORT", silent.port().to_string())
        .env("PGDATABASE", &other_db)
        .arg("load")
        .stdin(ndjson(0, 3, Shape::Object))
        .run();
    out.assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 3);
    assert_eq!(
        server.query_one(&other_db, "select to_regclass('pgsense.findings') is null"),
        Some("t".to_owned())
    );
    assert!(!silent.was_contacted());
}

/// Without any config file the tool works from the PG* variables alone.
#[test]
fn pg_variables_alone_are_enough() {
    let server = shared();
    let db = server.new_database();
    let out = pgsense()
        .env("PGHOST", server.host())
        .env("PGPORT", server.port().to_string())
        .env("PGDATABASE", &db)
        .env("PGUSER", "postgres")
        .arg("load")
        .stdin(ndjson(0, 3, Shape::Object))
        .run();
    out.assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 3);
}

/// PGHOST may name the Unix socket directory, as with libpq.
#[test]
fn pghost_as_a_socket_directory() {
    let server = shared();
    let db = server.new_database();
    let out = pgsense()
        .env("PGHOST", server.socket_dir())
        .env("PGPORT", server.port().to_string())
        .env("PGDATABASE", &db)
        .env("PGUSER", "postgres")
        .arg("load")
        .stdin(ndjson(0, 1, Shape::Object))
        .run();
    out.assert_code(0);
    assert_eq!(server.count(&db, "pgsense.findings"), 1);
}

/// A run that must stop with 78 before connecting: the config points at a
/// silent server that would notice a connection.
#[track_caller]
fn assert_config_error(config: &str, extra_args: &[&str], mentions: &str) {
    let silent = SilentServer::new();
    let scratch = Scratch::new();
    let config = config.replace("SILENT_PORT", &silent.port().to_string());
    let path = scratch.write("config.toml", config);
    let out = pgsense()
        .arg("-c")
        .arg(&path)
        .args(extra_args)
        .arg("load")
        .stdin(ndjson(0, 1, Shape::Object))
        .run();
    out.assert_code(78).assert_stderr_contains(mentions);
    assert!(
        !silent.was_contacted(),
        "a configuration error must stop before connecting\n{}",
        out.describe()
    );
}

const VALID: &str = "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = SILENT_PORT\n";

#[test]
fn an_unknown_key_is_a_config_error_naming_it() {
    assert_config_error(&format!("{VALID}hots = \"db.internal\"\n"), &[], "hots");
    assert_config_error(&format!("{VALID}pasword = \"x\"\n"), &[], "pasword");
}

#[test]
fn a_config_file_without_alerts_postgres_is_a_config_error() {
    assert_config_error(
        "[alerts.jsonl]\npath = \"/tmp/x\"\n[scan]\nsample_rate = 1.0\n",
        &[],
        "alerts.postgres",
    );
    assert_config_error("", &[], "alerts.postgres");
}

/// A section of the wrong kind is named as the file names it.
#[test]
fn a_section_of_the_wrong_kind_is_named_as_written() {
    assert_config_error(
        "[[alerts.postgres]]\nhost = \"127.0.0.1\"\n",
        &[],
        "config.toml:1: [[alerts.postgres]] is an array of tables: write [alerts.postgres]",
    );
    assert_config_error(
        &format!("{VALID}tls = true\n"),
        &[],
        "config.toml:4: invalid type: boolean `true`, expected a table: [alerts.postgres.tls]",
    );
}

#[test]
fn malformed_or_mistyped_config_is_a_config_error() {
    assert_config_error("[alerts.postgres\nhost = ", &[], "config.toml");
    // A wrongly typed value is located by file and line.
    assert_config_error(&format!("{VALID}dbname = 5\n"), &[], "config.toml:4");
    // A port as a string is libpq's list (issue 12); one that is no port
    // is named with its setting.
    assert_config_error(
        "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = \"SILENT_PORT,x\"\n",
        &[],
        "in [alerts.postgres]: \"x\" is not a port",
    );
    assert_config_error(
        "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = 0\n",
        &[],
        "port in [alerts.postgres] is 0",
    );
    assert_config_error(
        "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = [1]\n",
        &[],
        "config.toml:3",
    );
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let silent = SilentServer::new();
    let out = pgsense()
        .args(["-c", "/nonexistent/pgsense.toml"])
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &silent.port().to_string(),
            "init",
        ])
        .run();
    out.assert_code(78)
        .assert_stderr_contains("/nonexistent/pgsense.toml");
    assert!(!silent.was_contacted());
    let from_env = pgsense()
        .env("PGSENSE_PG_CONFIG", "/nonexistent/from-env.toml")
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &silent.port().to_string(),
            "init",
        ])
        .run();
    from_env
        .assert_code(78)
        .assert_stderr_contains("/nonexistent/from-env.toml");
}

/// Bad schema or table names (flags or file) exit 78 naming the value,
/// before connecting.
#[test]
fn a_bad_identifier_gives_78_without_connecting() {
    let too_long = "a".repeat(64);
    for bad in [
        "bad-name",
        "a.b",
        "has space",
        "\"quoted\"",
        "naïve",
        "",
        &too_long,
    ] {
        // However the message quotes it, the value itself is there.
        let named = bad.trim_matches('"');
        assert_config_error(VALID, &["--schema", bad], named);
        assert_config_error(VALID, &["--table", bad], named);
        let in_file = format!("{VALID}table = {}\n", toml_string(bad));
        assert_config_error(&in_file, &[], named);
    }
}

fn toml_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// 63 bytes is PostgreSQL's limit, and allowed.
#[test]
fn a_63_byte_identifier_is_accepted() {
    let server = shared();
    let db = server.new_database();
    let name = format!("t{}", "_9".repeat(31));
    assert_eq!(name.len(), 63);
    let out = server.pgsense(&db).args(["--table", &name, "init"]).run();
    out.assert_code(0)
        .assert_stdout_contains(&format!("created table pgsense.{name}"));
    assert_eq!(
        server.query_one(&db, &format!("select count(*) from pgsense.{name}")),
        Some("0".to_owned())
    );
}

#[test]
fn an_unreadable_password_file_is_a_config_error_naming_it() {
    assert_config_error(
        &format!("{VALID}password = {{ file = \"/nonexistent/alerts-pw\" }}\n"),
        &[],
        "/nonexistent/alerts-pw",
    );
    assert_config_error(
        VALID,
        &["--password-file", "/nonexistent/flag-pw"],
        "/nonexistent/flag-pw",
    );
}

/// A private server where TCP connections need a SCRAM password, and a
/// role `pw_loader` (password "correct horse") owning database `db`.
fn password_server() -> (PgServer, String) {
    let server = private();
    let db = server.new_database();
    server.execute(
        "postgres",
        &format!(
            "set password_encryption = 'scram-sha-256';
             create role pw_loader login password 'correct horse';
             alter database {db} owner to pw_loader;"
        ),
    );
    server.set_hba(&["host all all 127.0.0.1/32 scram-sha-256"]);
    (server, db)
}

/// Passwords from --password-file, from `password = { file }`, inline, and
/// from PGPASSWORD, with flags > file > PGPASSWORD; a wrong one exits 69
/// without printing it.
#[test]
fn password_from_a_file_against_a_password_authenticated_role() {
    let (server, db) = password_server();
    let scratch = Scratch::new();
    let good_file = scratch.write("good-pw", "correct horse\n\n");
    let bad_file = scratch.write("bad-pw", "battery staple\n");
    let config = |password: &str| -> PathBuf {
        scratch.write(
            &crate::support::pg::unique("c-"),
            alerts_postgres(
                server.port(),
                &db,
                &format!("username = \"pw_loader\"\npassword = {password}"),
            )
            .replace("username = \"postgres\"\n", ""),
        )
    };
    let mut loaded = 0;
    let mut load = |cmd: crate::support::run::Pgsense, code: i32| {
        let out = cmd
            .arg("load")
            .stdin(ndjson(loaded, 1, Shape::Object))
            .run();
        out.assert_code(code);
        if code == 0 {
            loaded += 1;
        }
        out
    };

    // Without any password the server refuses: 69.
    load(server.pgsense_as(&db, "pw_loader"), 69);
    load(
        server
            .pgsense_as(&db, "pw_loader")
            .arg("--password-file")
            .arg(&good_file),
        0,
    );
    let wrong = load(
        server
            .pgsense_as(&db, "pw_loader")
            .arg("--password-file")
            .arg(&bad_file),
        69,
    );
    wrong.assert_stderr_contains("authentication");
    assert!(
        !wrong.stderr.contains("battery"),
        "the password is never printed\n{}",
        wrong.describe()
    );

    let file_ref = format!("{{ file = \"{}\" }}", good_file.display());
    load(pgsense().arg("-c").arg(config(&file_ref)), 0);
    load(pgsense().arg("-c").arg(config("\"correct horse\"")), 0);
    load(
        server
            .pgsense_as(&db, "pw_loader")
            .env("PGPASSWORD", "correct horse"),
        0,
    );

    // Precedence: the flag's file over the config's password, the config's
    // password over PGPASSWORD.
    load(
        pgsense()
            .arg("-c")
            .arg(config("\"battery staple\""))
            .arg("--password-file")
            .arg(&good_file),
        0,
    );
    load(
        pgsense()
            .arg("-c")
            .arg(config(&file_ref))
            .env("PGPASSWORD", "battery staple"),
        0,
    );
    load(
        pgsense()
            .arg("-c")
            .arg(config("\"battery staple\""))
            .env("PGPASSWORD", "correct horse"),
        69,
    );
    assert_eq!(server.count(&db, "pgsense.findings"), loaded as i64);
}

/// `tls.enabled = true` means verify-full: against a server without TLS
/// the run fails at startup instead of falling back to plain text.
#[test]
fn tls_enabled_refuses_a_server_without_tls() {
    let server = shared();
    let db = server.new_database();
    let scratch = Scratch::new();
    let config = scratch.write(
        "tls.toml",
        alerts_postgres(server.port(), &db, "[alerts.postgres.tls]\nenabled = true"),
    );
    let out = pgsense()
        .arg("-c")
        .arg(&config)
        .arg("load")
        .stdin(ndjson(0, 1, Shape::Object))
        .run();
    out.assert_code(69);
    assert_eq!(
        server.query_one(&db, "select to_regclass('pgsense.findings') is null"),
        Some("t".to_owned())
    );
}

/// A config file that group or others can read and that holds a password
/// inline gets a warning naming the file and the fix (issue 12); once it
/// is mode 600, or the password is in a file of its own, none.
#[test]
fn a_readable_config_file_with_an_inline_password_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let run = |contents: &str, mode: u32| {
        let path = scratch.write(&crate::support::pg::unique("c-"), contents);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = pgsense()
            .arg("-c")
            .arg(&path)
            .args(["load", "--dry-run"])
            .stdin(ndjson(0, 1, Shape::Object))
            .run();
        out.assert_code(0);
        (path.display().to_string(), out)
    };
    let inline = format!("{VALID}password = \"hunter2\"\n").replace("SILENT_PORT", "5432");
    let (path, out) = run(&inline, 0o644);
    out.assert_stderr_contains(&format!("config file {path} holds a password"))
        .assert_stderr_contains("(mode 0644)")
        .assert_stderr_contains(&format!("chmod 600 {path}"))
        .assert_stderr_contains("password = { file = \"PATH\" }");
    assert!(!out.stderr.contains("hunter2"), "{}", out.describe());
    let (_, out) = run(&inline, 0o640);
    out.assert_stderr_contains("readable by group or others (mode 0640)");
    let (_, out) = run(&inline, 0o600);
    assert!(
        !out.stderr.contains("holds a password"),
        "{}",
        out.describe()
    );
    let from_file = scratch.write("pw", "hunter2\n");
    std::fs::set_permissions(&from_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let by_file = format!(
        "{VALID}password = {{ file = \"{}\" }}\n",
        from_file.display()
    )
    .replace("SILENT_PORT", "5432");
    let (_, out) = run(&by_file, 0o644);
    assert!(
        !out.stderr.contains("holds a password"),
        "{}",
        out.describe()
    );
}

/// A password in a connection string is warned about where others can
/// read it: in --dbname (the process list), in the config file's dbname or
/// a service file that group or others can read; a connection string in
/// PGDATABASE, which libpq takes as a database name, is refused without
/// showing it. The password itself is never shown.
#[test]
fn passwords_in_connection_strings_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let dry_run = |cmd: crate::support::run::Pgsense| {
        cmd.args(["load", "--dry-run"])
            .stdin(ndjson(0, 1, Shape::Object))
            .run()
    };
    let out = dry_run(pgsense().args(["--dbname", "host=localhost password=hunter2"]));
    out.assert_code(0)
        .assert_stderr_contains("the connection string of --dbname holds a password")
        .assert_stderr_contains("process list");
    assert!(!out.stderr.contains("hunter2"), "{}", out.describe());
    let out = dry_run(pgsense().args(["--dbname", "postgresql://u:hunter2@localhost/db"]));
    out.assert_stderr_contains("the connection string of --dbname holds a password");
    let out = dry_run(pgsense().args(["--dbname", "host=localhost dbname=x"]));
    assert!(
        !out.stderr.contains("holds a password"),
        "{}",
        out.describe()
    );

    let config = scratch.write(
        "c.toml",
        "[alerts.postgres]\ndbname = \"host=localhost password=hunter2\"\n",
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dry_run(pgsense().arg("-c").arg(&config));
    out.assert_code(0).assert_stderr_contains(&format!(
        "config file {} holds a password (password in the connection string of dbname",
        config.display()
    ));
    assert!(!out.stderr.contains("hunter2"), "{}", out.describe());
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dry_run(pgsense().arg("-c").arg(&config));
    assert!(
        !out.stderr.contains("holds a password"),
        "{}",
        out.describe()
    );

    let services = scratch.write(
        "services.conf",
        "[loader]\nhost=localhost\npassword=hunter2\n",
    );
    std::fs::set_permissions(&services, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dry_run(
        pgsense()
            .args(["--service", "loader"])
            .env("PGSERVICEFILE", &services),
    );
    out.assert_code(0).assert_stderr_contains(&format!(
        "service file {} holds a password (password in service \"loader\")",
        services.display()
    ));
    assert!(!out.stderr.contains("hunter2"), "{}", out.describe());

    let out = dry_run(pgsense().env("PGDATABASE", "host=localhost password=hunter2"));
    out.assert_code(78)
        .assert_stderr_contains("PGDATABASE holds a connection string");
    assert!(!out.stderr.contains("hunter2"), "{}", out.describe());
}

/// A system schema (pg_catalog, pg_toast, any pg_ name, and
/// information_schema, which backups leave out) is refused before
/// connecting, from the flag or the config file.
#[test]
fn a_system_schema_is_refused() {
    for schema in ["pg_catalog", "pg_toast", "PG_mine", "information_schema"] {
        assert_config_error(
            &format!("{VALID}schema = \"{schema}\"\n"),
            &[],
            "is a schema of the system's own",
        );
        assert_config_error(VALID, &["--schema", schema], "--schema");
    }
}

/// A section given twice is named as a duplicate (issue 12).
#[test]
fn a_duplicated_section_is_named() {
    assert_config_error(
        &format!("{VALID}\n[alerts.postgres]\ndbname = \"x\"\n"),
        &[],
        "config.toml:5: duplicate section [alerts.postgres]",
    );
    assert_config_error(
        &format!("{VALID}password = \"a\"\npassword = \"hunter2\"\n"),
        &[],
        "config.toml:5: duplicate key `password`",
    );
}

/// A password written as an array is refused as a mistyped password, and
/// not taken for `{ file = ... }` and printed as the path that could not be
/// read.
#[test]
fn a_password_given_as_an_array_is_refused_without_printing_it() {
    for password in ["[\"hunter2\"]", "[\"hunter2\", \"x\"]"] {
        let silent = SilentServer::new();
        let scratch = Scratch::new();
        let config = format!("{VALID}password = {password}\n")
            .replace("SILENT_PORT", &silent.port().to_string());
        let path = scratch.write("config.toml", config);
        let out = pgsense().arg("-c").arg(&path).arg("check").run();
        out.assert_code(78)
            .assert_stderr_contains("config.toml:4: password must be a string");
        assert!(!out.stderr.contains("hunter2"), "{}", out.describe());
        assert!(!silent.was_contacted());
    }
}
