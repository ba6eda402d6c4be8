//! TLS and credentials (issue 5): libpq's sslmodes against servers with
//! certificates made at test time, trusted roots from flags, the config
//! file and PG* variables, client-certificate authentication, libpq's
//! password file, passwords that never reach the output, and connection
//! attempts bounded by --connect-timeout whatever the sslmode.
//!
//! Most tests share one TLS server ([`fixture`]) whose pg_hba.conf gives
//! each role its own rule: `tls_only` over TLS only, `cert_user` by client
//! certificate, `pw_user` by SCRAM password, `postgres` trusted.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::findings::ndjson;
use crate::support::pg::unique;
use crate::support::process;
use crate::support::run::{Outcome, Pgsense};
use crate::support::tls::{Ca, CertFiles, Key, private_tls, self_signed};
use crate::support::{PgServer, Scratch, Shape, SilentServer, pgsense, private, shared};

/// pw_user's password: a colon and a backslash exercise .pgpass escapes,
/// and it is distinctive enough to search the output for.
const PASSWORD: &str = "canary:Zq7\\pw-5e1f";

/// The shared TLS server and the files around it.
struct Fixture {
    server: PgServer,
    /// The CA of the server's certificate (SAN DNS:localhost only) and of
    /// the client certificate.
    ca: PathBuf,
    /// A CA that signed nothing the server uses.
    other_ca: PathBuf,
    /// CN=cert_user, signed by `ca`; its key is PKCS#1 RSA.
    client: CertFiles,
    /// CN=cert_user, signed by `other_ca`; its key is RSA too, so it is a
    /// wrong key of the right type for `client`.
    stranger: CertFiles,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let server = private();
        let files = server.socket_dir().join("tls-files");
        std::fs::create_dir(&files).expect("create tls-files");
        let ca = Ca::new(&files, "test-ca");
        let other_ca = Ca::new(&files, "other-ca");
        let server_cert = ca.issue("server", "localhost", Some("DNS:localhost"), 2, Key::Ec);
        let client = ca.issue("client", "cert_user", None, 2, Key::RsaPkcs1);
        let stranger = other_ca.issue("stranger", "cert_user", None, 2, Key::RsaPkcs1);
        server.enable_tls(&server_cert, Some(&ca.files.cert));
        server.execute(
            "postgres",
            &format!(
                "create role tls_only login;
                 create role plain_only login;
                 create role switched_to;
                 create role switcher login noinherit in role switched_to;
                 alter role switcher set role = switched_to;
                 create role cert_user login;
                 set password_encryption = 'scram-sha-256';
                 create role pw_user login password '{}';",
                PASSWORD.replace('\'', "''")
            ),
        );
        server.set_hba(&[
            "hostnossl all plain_only 127.0.0.1/32 trust",
            "hostssl all switcher 127.0.0.1/32 trust",
            "hostssl all tls_only 127.0.0.1/32 trust",
            "hostssl all cert_user 127.0.0.1/32 cert",
            "host all pw_user 127.0.0.1/32 scram-sha-256",
            "host all postgres 127.0.0.1/32 trust",
        ]);
        Fixture {
            ca: ca.files.cert.clone(),
            other_ca: other_ca.files.cert.clone(),
            client,
            stranger,
            server,
        }
    })
}

/// A server whose certificate is self-signed, for 127.0.0.1 (SAN IP) only.
fn self_signed_server() -> &'static (PgServer, CertFiles) {
    static SERVER: OnceLock<(PgServer, CertFiles)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = private();
        let files = server.socket_dir().join("tls-files");
        std::fs::create_dir(&files).expect("create tls-files");
        let cert = self_signed(&files, "self-signed", "pgsense-test", "IP:127.0.0.1");
        server.enable_tls(&cert, None);
        (server, cert)
    })
}

/// A new database on `server` with the findings table made (over the Unix
/// socket, as the superuser) and handed to `owner`, recording for each row
/// whether it came over TLS and with which client certificate.
fn database_for(server: &PgServer, owner: &str) -> String {
    let db = server.new_database();
    pgsense()
        .arg("--host")
        .arg(server.socket_dir())
        .args(["--port", &server.port().to_string()])
        .args(["--dbname", &db, "--username", "postgres", "init"])
        .run()
        .assert_code(0);
    if owner != "postgres" {
        server.execute(
            &db,
            &format!(
                "alter schema pgsense owner to {owner};
                 alter table pgsense.findings owner to {owner};"
            ),
        );
    }
    server.record_tls_of_inserts(&db);
    db
}

/// pgsense-pg as `user` on `db`, over TCP to `host` (which must resolve to
/// 127.0.0.1), no TLS setting given.
fn loader(server: &PgServer, host: &str, db: &str, user: &str) -> Pgsense {
    pgsense()
        .args(["--host", host, "--port", &server.port().to_string()])
        .args(["--dbname", db, "--username", user])
}

/// Loads finding `n` (one line) with `cmd` and returns what the user saw.
fn load_one(cmd: Pgsense, n: u64) -> Outcome {
    cmd.arg("load").stdin(ndjson(n, 1, Shape::Object)).run()
}

/// (rows, every row over TLS, client certificate subject) of `db`.
fn tls_of_rows(server: &PgServer, db: &str) -> (i64, Option<String>, Option<String>) {
    let rows = server.query(
        db,
        "select count(*), bool_and(over_tls), min(client_dn) from pgsense.findings",
    );
    let row = &rows[0];
    (
        row[0].as_deref().unwrap_or("0").parse().expect("a count"),
        row[1].clone(),
        row[2].clone(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

#[test]
fn verify_full_with_the_right_ca_and_host_name_loads() {
    let fx = fixture();
    let db = database_for(&fx.server, "tls_only");
    let out = load_one(
        loader(&fx.server, "localhost", &db, "tls_only").args([
            "--sslmode",
            "verify-full",
            "--sslrootcert",
            path(&fx.ca),
        ]),
        0,
    );
    out.assert_code(0);
    assert_eq!(
        tls_of_rows(&fx.server, &db),
        (1, Some("t".into()), None),
        "{}",
        out.describe()
    );
}

#[test]
fn verify_full_by_a_name_not_in_the_certificate_fails_with_a_hostname_error() {
    let fx = fixture();
    let db = database_for(&fx.server, "tls_only");
    let out = load_one(
        loader(&fx.server, "127.0.0.1", &db, "tls_only").args([
            "--sslmode",
            "verify-full",
            "--sslrootcert",
            path(&fx.ca),
        ]),
        0,
    );
    out.assert_code(69)
        .assert_stderr_contains("hostname mismatch")
        .assert_stderr_contains("\"127.0.0.1\"")
        .assert_stderr_contains("--sslmode verify-ca");
    assert_eq!(fx.server.count(&db, "pgsense.findings"), 0);
}

#[test]
fn verify_full_against_an_unknown_ca_fails() {
    let fx = fixture();
    let db = database_for(&fx.server, "tls_only");
    // Another CA than the server's, then the system's roots.
    let out = load_one(
        loader(&fx.server, "localhost", &db, "tls_only").args([
            "--sslmode",
            "verify-full",
            "--sslrootcert",
            path(&fx.other_ca),
        ]),
        0,
    );
    out.assert_code(69)
        .assert_stderr_contains("unknown CA")
        .assert_stderr_contains(&format!("--sslrootcert {}", fx.other_ca.display()));
    let out = load_one(
        loader(&fx.server, "localhost", &db, "tls_only").args(["--sslmode", "verify-full"]),
        0,
    );
    out.assert_code(69)
        .assert_stderr_contains("unknown CA")
        .assert_stderr_contains("the system's trusted roots")
        .assert_stderr_contains("set --sslrootcert");
    assert_eq!(fx.server.count(&db, "pgsense.findings"), 0);
}

#[test]
fn verify_ca_with_a_host_name_mismatch_loads() {
    let fx = fixture();
    let db = database_for(&fx.server, "tls_only");
    let out = load_one(
        loader(&fx.server, "127.0.0.1", &db, "tls_only").args([
            "--sslmode",
            "verify-ca",
            "--sslrootcert",
            path(&fx.ca),
        ]),
        0,
    );
    out.assert_code(0);
    assert_eq!(tls_of_rows(&fx.server, &db).0, 1);
    // The chain is still checked.
    load_one(
        loader(&fx.server, "127.0.0.1", &db, "tls_only").args([
            "--sslmode",
            "verify-ca",
            "--sslrootcert",
            path(&fx.other_ca),
        ]),
        1,
    )
    .assert_code(69)
    .assert_stderr_contains("unknown CA");
}

/// prefer and require encrypt without verifying, as libpq: a self-signed
/// certificate is fine, and the rows arrive over TLS. allow acts as prefer,
/// and so does the default and the scanner's `enabled = false`.
#[test]
fn prefer_and_require_load_over_tls_from_a_self_signed_server() {
    let (server, _) = self_signed_server();
    let db = database_for(server, "postgres");
    let scratch = Scratch::new();
    let config = scratch.write(
        "scanner.toml",
        format!(
            "[alerts.postgres]\nhost = \"localhost\"\nport = {}\ndbname = \"{db}\"\n\
             [alerts.postgres.tls]\nenabled = false\n",
            server.port()
        ),
    );
    let runs: Vec<(&str, Pgsense)> = vec![
        ("default", loader(server, "127.0.0.1", &db, "postgres")),
        (
            "prefer",
            loader(server, "localhost", &db, "postgres").args(["--sslmode", "prefer"]),
        ),
        (
            "require",
            loader(server, "localhost", &db, "postgres").args(["--sslmode", "require"]),
        ),
        (
            "allow",
            loader(server, "127.0.0.1", &db, "postgres").args(["--sslmode", "allow"]),
        ),
        (
            "PGSSLMODE=require",
            loader(server, "localhost", &db, "postgres").env("PGSSLMODE", "require"),
        ),
        ("enabled = false", pgsense().arg("-c").arg(&config)),
    ];
    let total = runs.len() as i64;
    for (n, (what, cmd)) in runs.into_iter().enumerate() {
        let out = load_one(cmd, n as u64);
        assert_eq!(out.code, Some(0), "{what}\n{}", out.describe());
    }
    assert_eq!(
        tls_of_rows(server, &db),
        (total, Some("t".into()), None),
        "every row came over TLS"
    );
}

/// verify-full checks IP addresses in subjectAltName too.
#[test]
fn an_ip_address_in_the_certificate_is_checked_by_verify_full() {
    let (server, cert) = self_signed_server();
    let db = database_for(server, "postgres");
    let verify = [
        "--sslmode",
        "verify-full",
        "--sslrootcert",
        path(&cert.cert),
    ];
    load_one(loader(server, "127.0.0.1", &db, "postgres").args(verify), 0).assert_code(0);
    load_one(loader(server, "localhost", &db, "postgres").args(verify), 1)
        .assert_code(69)
        .assert_stderr_contains("hostname mismatch")
        .assert_stderr_contains("\"localhost\"");
    assert_eq!(tls_of_rows(server, &db), (1, Some("t".into()), None));
}

#[test]
fn an_expired_server_certificate_is_named() {
    let scratch = Scratch::new();
    let ca = Ca::new(scratch.path(), "expired-ca");
    let cert = ca.issue("expired", "localhost", Some("DNS:localhost"), -1, Key::Ec);
    let server = private_tls(&cert, None);
    let db = database_for(&server, "postgres");
    let out = load_one(
        loader(&server, "localhost", &db, "postgres").args([
            "--sslmode",
            "verify-full",
            "--sslrootcert",
            path(&ca.files.cert),
        ]),
        0,
    );
    out.assert_code(69)
        .assert_stderr_contains("has expired")
        .assert_stderr_contains("renew it");
    // require does not look at it.
    load_one(
        loader(&server, "localhost", &db, "postgres").args(["--sslmode", "require"]),
        0,
    )
    .assert_code(0);
}

/// pg_hba.conf accepts tls_only over TLS only: disable fails, saying so.
#[test]
fn disable_against_a_hostssl_only_server_fails_clearly() {
    let fx = fixture();
    let db = database_for(&fx.server, "tls_only");
    let out = load_one(
        loader(&fx.server, "127.0.0.1", &db, "tls_only").args(["--sslmode", "disable"]),
        0,
    );
    out.assert_code(69)
        .assert_stderr_contains("no encryption")
        .assert_stderr_contains("set --sslmode require");
    // The same role over TLS gets in.
    load_one(
        loader(&fx.server, "127.0.0.1", &db, "tls_only").args(["--sslmode", "require"]),
        0,
    )
    .assert_code(0);
    assert_eq!(tls_of_rows(&fx.server, &db), (1, Some("t".into()), None));
}

/// pg_hba.conf accepts plain_only without TLS only: prefer (the default),
/// refused over TLS, connects again without it, as libpq does; require
/// does not.
#[test]
fn prefer_against_a_hostnossl_only_role_connects_without_tls() {
    let fx = fixture();
    let db = database_for(&fx.server, "plain_only");
    load_one(loader(&fx.server, "127.0.0.1", &db, "plain_only"), 0).assert_code(0);
    assert_eq!(tls_of_rows(&fx.server, &db), (1, Some("f".into()), None));
    load_one(
        loader(&fx.server, "127.0.0.1", &db, "plain_only").args(["--sslmode", "require"]),
        1,
    )
    .assert_code(69)
    .assert_stderr_contains("SSL encryption")
    .assert_stderr_contains("add a hostssl line");
}

/// check says a connection is over TLS when it is, also for a role that
/// switches to another at login (the other role does not see its
/// backend's row of pg_stat_ssl).
#[test]
fn check_says_tls_for_a_role_that_switches_at_login() {
    let fx = fixture();
    let db = fx.server.new_database();
    let out = loader(&fx.server, "127.0.0.1", &db, "switcher")
        .args(["--sslmode", "require", "check"])
        .run();
    let connected = out
        .stdout
        .lines()
        .find(|line| line.contains("connected to"))
        .unwrap_or_else(|| panic!("no connected line\n{}", out.describe()));
    assert!(
        connected.contains(", TLS)"),
        "{connected}\n{}",
        out.describe()
    );
}

/// Against a server without TLS, a mode that requires it fails at
/// startup, naming the mode and where it came from.
#[test]
fn require_against_a_server_without_tls_fails_naming_the_mode() {
    let server = shared();
    let db = server.new_database();
    let out = load_one(
        loader(server, "127.0.0.1", &db, "postgres").env("PGSSLMODE", "require"),
        0,
    );
    out.assert_code(69)
        .assert_stderr_contains("does not offer TLS")
        .assert_stderr_contains("sslmode require from PGSSLMODE");
}

/// The scanner's `enabled = true` with `trusted_root_certs` as a path and
/// as the PEM text itself: both verify-full against that CA.
#[test]
fn tls_enabled_with_trusted_root_certs_as_a_path_and_as_inline_pem() {
    let fx = fixture();
    let db = database_for(&fx.server, "tls_only");
    let scratch = Scratch::new();
    let pem = std::fs::read_to_string(&fx.ca).expect("read the CA");
    let config = |name: &str, host: &str, roots: &str| {
        scratch.write(
            name,
            format!(
                "[alerts.postgres]\nhost = \"{host}\"\nport = {}\ndbname = \"{db}\"\n\
                 username = \"tls_only\"\n\n[alerts.postgres.tls]\nenabled = true\n\
                 trusted_root_certs = {roots}\n",
                fx.server.port()
            ),
        )
    };
    let as_path = config(
        "path.toml",
        "localhost",
        &format!("\"{}\"", fx.ca.display()),
    );
    let inline = config("inline.toml", "localhost", &format!("\"\"\"\n{pem}\"\"\""));
    load_one(pgsense().arg("-c").arg(&as_path), 0).assert_code(0);
    load_one(pgsense().arg("-c").arg(&inline), 1).assert_code(0);
    assert_eq!(tls_of_rows(&fx.server, &db), (2, Some("t".into()), None));
    // enabled = true is verify-full: the host name is checked.
    let by_address = config("address.toml", "127.0.0.1", &format!("\"\"\"\n{pem}\"\"\""));
    load_one(pgsense().arg("-c").arg(&by_address), 2)
        .assert_code(69)
        .assert_stderr_contains("hostname mismatch")
        .assert_stderr_contains("sslmode verify-full from enabled in [alerts.postgres.tls]");
    // A missing roots file is a configuration error, before connecting.
    let missing = config("missing.toml", "localhost", "\"/nonexistent/ca.pem\"");
    load_one(pgsense().arg("-c").arg(&missing), 2)
        .assert_code(78)
        .assert_stderr_contains("/nonexistent/ca.pem");
}

/// Flags, then the config file, then PGSSLMODE and PGSSLROOTCERT.
#[test]
fn tls_settings_take_flags_then_the_config_file_then_the_environment() {
    let fx = fixture();
    let db = database_for(&fx.server, "tls_only");
    let scratch = Scratch::new();
    let env_verify_full = |cmd: Pgsense| {
        cmd.env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", path(&fx.ca))
    };
    // The environment alone: verify-full, so 127.0.0.1 is a mismatch.
    load_one(
        env_verify_full(loader(&fx.server, "127.0.0.1", &db, "tls_only")),
        0,
    )
    .assert_code(69)
    .assert_stderr_contains("hostname mismatch");
    // A flag over the environment.
    load_one(
        env_verify_full(loader(&fx.server, "127.0.0.1", &db, "tls_only"))
            .args(["--sslmode", "verify-ca"]),
        0,
    )
    .assert_code(0);
    load_one(
        env_verify_full(loader(&fx.server, "localhost", &db, "tls_only"))
            .args(["--sslrootcert", path(&fx.other_ca)]),
        1,
    )
    .assert_code(69)
    .assert_stderr_contains("unknown CA");
    // The config file over the environment; the environment still gives
    // what the file does not set (the roots here).
    let config = scratch.write(
        "mode.toml",
        format!(
            "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{db}\"\n\
             username = \"tls_only\"\n[alerts.postgres.tls]\nmode = \"verify-ca\"\n",
            fx.server.port()
        ),
    );
    load_one(env_verify_full(pgsense().arg("-c").arg(&config)), 1).assert_code(0);
    // A bad PGSSLMODE is a configuration error.
    load_one(
        loader(&fx.server, "localhost", &db, "tls_only").env("PGSSLMODE", "verify"),
        2,
    )
    .assert_code(78)
    .assert_stderr_contains("PGSSLMODE=\"verify\"");
    assert_eq!(fx.server.count(&db, "pgsense.findings"), 2);
}

/// pg_hba.conf `hostssl ... cert`: the client certificate (whose key is a
/// PKCS#1 RSA key) gets cert_user in, from flags, the config file or
/// PGSSLCERT/PGSSLKEY; without one the error says what to set.
#[test]
fn client_certificate_authentication() {
    let fx = fixture();
    let db = database_for(&fx.server, "cert_user");
    let key_text = std::fs::read_to_string(&fx.client.key).expect("read the client key");
    assert!(key_text.starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    let as_cert_user = || {
        loader(&fx.server, "localhost", &db, "cert_user").args([
            "--sslmode",
            "verify-full",
            "--sslrootcert",
            path(&fx.ca),
        ])
    };
    load_one(
        as_cert_user().args([
            "--sslcert",
            path(&fx.client.cert),
            "--sslkey",
            path(&fx.client.key),
        ]),
        0,
    )
    .assert_code(0);
    load_one(
        as_cert_user()
            .env("PGSSLCERT", path(&fx.client.cert))
            .env("PGSSLKEY", path(&fx.client.key)),
        1,
    )
    .assert_code(0);
    let scratch = Scratch::new();
    let config = scratch.write(
        "cert.toml",
        format!(
            "[alerts.postgres]\nhost = \"localhost\"\nport = {}\ndbname = \"{db}\"\n\
             username = \"cert_user\"\n[alerts.postgres.tls]\nmode = \"require\"\n\
             client_cert = \"{}\"\nclient_key = \"\"\"\n{key_text}\"\"\"\n",
            fx.server.port(),
            fx.client.cert.display()
        ),
    );
    load_one(pgsense().arg("-c").arg(&config), 2).assert_code(0);
    let (rows, over_tls, client_dn) = tls_of_rows(&fx.server, &db);
    assert_eq!((rows, over_tls.as_deref()), (3, Some("t")));
    assert!(
        client_dn.as_deref().unwrap_or("").contains("CN=cert_user"),
        "{client_dn:?}"
    );

    // Without a certificate.
    load_one(as_cert_user(), 3)
        .assert_code(69)
        .assert_stderr_contains("client certificate")
        .assert_stderr_contains("--sslcert and --sslkey");
    // A certificate from a CA the server does not trust.
    let out = load_one(
        as_cert_user().args([
            "--sslcert",
            path(&fx.stranger.cert),
            "--sslkey",
            path(&fx.stranger.key),
        ]),
        3,
    );
    out.assert_code(69);
    assert!(
        out.stderr.contains("client certificate") || out.stderr.contains("unknown ca"),
        "{}",
        out.describe()
    );
    // A key that is not the certificate's: a configuration error.
    load_one(
        as_cert_user().args([
            "--sslcert",
            path(&fx.client.cert),
            "--sslkey",
            path(&fx.stranger.key),
        ]),
        3,
    )
    .assert_code(78)
    .assert_stderr_contains("does not go with");
    assert_eq!(fx.server.count(&db, "pgsense.findings"), 3);
}

/// libpq's password file: the matching line is used (escapes, wildcards,
/// first match wins), PGPASSFILE replaces ~/.pgpass, PGPASSWORD comes
/// first, and a file others can read is ignored with a warning.
#[test]
fn pgpass_the_matching_entry_is_used_and_a_readable_file_is_ignored() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let db = database_for(&fx.server, "pw_user");
    let home = Scratch::new();
    let port = fx.server.port();
    let escaped = PASSWORD.replace('\\', "\\\\").replace(':', "\\:");
    let pgpass = home.write(
        ".pgpass",
        format!(
            "# host:port:database:user:password\n\
             localhost:{port}:*:pw_user:wrong-host\n\
             127.0.0.1:{port}:other_db:pw_user:wrong-db\n\
             127.0.0.1:*:{db}:pw_user:{escaped}\n\
             *:*:*:*:too-late\n"
        ),
    );
    let chmod = |mode| {
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    chmod(0o600);
    let as_pw_user = || loader(&fx.server, "127.0.0.1", &db, "pw_user");

    load_one(as_pw_user().env("HOME", home.path()), 0).assert_code(0);
    let elsewhere = Scratch::new();
    load_one(
        as_pw_user()
            .env("HOME", elsewhere.path())
            .env("PGPASSFILE", &pgpass),
        1,
    )
    .assert_code(0);
    // PGPASSWORD comes before the password file.
    load_one(
        as_pw_user()
            .env("HOME", home.path())
            .env("PGPASSWORD", "not-it"),
        2,
    )
    .assert_code(69)
    .assert_stderr_contains("the password from PGPASSWORD was refused");

    chmod(0o644);
    // Two hosts: the file is looked at once, and said to be ignored once.
    let out = load_one(
        loader(&fx.server, "127.0.0.1,localhost", &db, "pw_user").env("HOME", home.path()),
        2,
    );
    out.assert_code(69)
        .assert_stderr_contains("group or world access")
        .assert_stderr_contains("chmod 600")
        .assert_stderr_contains("asks for a password");
    assert_eq!(
        out.stderr.matches("group or world access").count(),
        1,
        "{}",
        out.describe()
    );
    assert_eq!(fx.server.count(&db, "pgsense.findings"), 2);
}

/// As libpq, each host gets its own line of the password file: a host no
/// line matches is sent no password (not another host's, which a server
/// asking for it in clear text would read), and the next host is tried
/// with its own.
#[test]
fn pgpass_each_host_gets_its_own_line() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let db = database_for(&fx.server, "pw_user");
    let home = Scratch::new();
    let port = fx.server.port();
    let escaped = PASSWORD.replace('\\', "\\\\").replace(':', "\\:");
    let pgpass = home.write(
        ".pgpass",
        format!("127.0.0.1:{port}:{db}:pw_user:{escaped}\n"),
    );
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    // localhost, first, has no line: it is sent no password and refuses
    // the connection; 127.0.0.1 is reached with its own.
    let out = loader(&fx.server, "localhost,127.0.0.1", &db, "pw_user")
        .env("HOME", home.path())
        .arg("check")
        .run();
    out.assert_code(0)
        .assert_stdout_contains(&format!(" at 127.0.0.1:{port} "));
}

/// Of two hosts, the one that did not answer gets the advice of a
/// timeout, and the one that refused the password that of a password: the
/// first's advice does not follow the second's error, as if it were its.
#[test]
fn each_host_that_failed_gets_its_own_advice() {
    let fx = fixture();
    let db = database_for(&fx.server, "pw_user");
    let silent = SilentServer::new();
    let ports = format!("{},{}", silent.port(), fx.server.port());
    let out = pgsense()
        .args(["--host", "127.0.0.1,127.0.0.1", "--port", &ports])
        .args(["--dbname", &db, "--username", "pw_user"])
        .args(["--connect-timeout", "1", "check"])
        .env("PGPASSWORD", "not-it")
        .run();
    out.assert_code(69)
        .assert_stderr_contains("no answer within 1 s")
        .assert_stderr_contains("the password from PGPASSWORD was refused");
    let refused = out
        .stderr
        .find("the password from PGPASSWORD was refused")
        .unwrap();
    let timeout = out.stderr.find("raise --connect-timeout").unwrap();
    assert!(
        timeout < refused,
        "the timeout advice follows the refused password\n{}",
        out.describe()
    );
}

/// A world-readable `{ file }` password works, with a warning.
#[test]
fn a_world_readable_password_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let fx = fixture();
    let db = database_for(&fx.server, "pw_user");
    let scratch = Scratch::new();
    let secret = scratch.write("alerts-pw", format!("{PASSWORD}\n"));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = scratch.write(
        "pw.toml",
        format!(
            "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{db}\"\n\
             username = \"pw_user\"\npassword = {{ file = \"{}\" }}\n",
            fx.server.port(),
            secret.display()
        ),
    );
    load_one(pgsense().arg("-c").arg(&config), 0)
        .assert_code(0)
        .assert_stderr_contains("readable by every user")
        .assert_stderr_contains(&format!("chmod 600 {}", secret.display()));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = load_one(pgsense().arg("-c").arg(&config), 1);
    out.assert_code(0);
    assert!(!out.stderr.contains("readable"), "{}", out.describe());
}

/// Whatever the source and the verbosity, neither a wrong password nor the
/// right one is printed; nor does one show in --help or the command line.
#[test]
fn the_password_never_appears_in_the_output() {
    let fx = fixture();
    let db = database_for(&fx.server, "pw_user");
    let scratch = Scratch::new();
    let wrong = "wrong-canary-9f3b";
    let wrong_file = scratch.write("wrong-pw", format!("{wrong}\n"));
    let right_file = scratch.write("right-pw", format!("{PASSWORD}\n"));
    let config = |password: &str| {
        scratch.write(
            &unique("c-"),
            format!(
                "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"{db}\"\n\
                 username = \"pw_user\"\npassword = \"{}\"\n",
                fx.server.port(),
                password.replace('\\', "\\\\")
            ),
        )
    };
    let home = Scratch::new();
    home.write(".pgpass", format!("*:*:*:*:{wrong}\n"));
    std::fs::set_permissions(
        home.path().join(".pgpass"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let noisy = |cmd: Pgsense| cmd.arg("-vvv").env("RUST_LOG", "trace");
    let as_pw_user = || loader(&fx.server, "127.0.0.1", &db, "pw_user");
    let assert_silent = |out: &Outcome, what: &str| assert_unprinted(out, what, wrong);

    let failing: Vec<(&str, Pgsense)> = vec![
        ("PGPASSWORD", noisy(as_pw_user()).env("PGPASSWORD", wrong)),
        (
            "--password-file",
            noisy(as_pw_user()).arg("--password-file").arg(&wrong_file),
        ),
        ("inline", noisy(pgsense().arg("-c").arg(config(wrong)))),
        (".pgpass", noisy(as_pw_user()).env("HOME", home.path())),
        (
            "require",
            noisy(as_pw_user())
                .env("PGPASSWORD", wrong)
                .args(["--sslmode", "require"]),
        ),
        (
            "disable",
            noisy(as_pw_user())
                .env("PGPASSWORD", wrong)
                .args(["--sslmode", "disable"]),
        ),
    ];
    for (what, cmd) in failing {
        let out = load_one(cmd, 0);
        out.assert_code(69)
            .assert_stderr_contains("password authentication failed");
        assert!(
            out.stderr.contains("TRACE") || out.stderr.contains("DEBUG"),
            "{what}: the run was not verbose\n{}",
            out.describe()
        );
        assert_silent(&out, what);
    }

    let succeeding: Vec<(&str, Pgsense)> = vec![
        (
            "PGPASSWORD",
            noisy(as_pw_user()).env("PGPASSWORD", PASSWORD),
        ),
        (
            "--password-file",
            noisy(as_pw_user()).arg("--password-file").arg(&right_file),
        ),
        ("inline", noisy(pgsense().arg("-c").arg(config(PASSWORD)))),
    ];
    for (n, (what, cmd)) in succeeding.into_iter().enumerate() {
        let out = load_one(cmd, n as u64);
        out.assert_code(0);
        assert_silent(&out, what);
    }
    assert_eq!(fx.server.count(&db, "pgsense.findings"), 3);

    assert_help_hides_passwords(&right_file, |out, what| assert_silent(out, what));
    assert_command_line_hides_passwords(&right_file);
}

/// Neither password, nor anything of the canary, in what the run printed.
#[track_caller]
fn assert_unprinted(out: &Outcome, what: &str, wrong: &str) {
    for secret in [wrong, PASSWORD, "canary"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{what}: {secret:?} was printed\n{}",
            out.describe()
        );
    }
}

/// --help with every password variable set (clap can show an argument's
/// environment value in help) prints none of them.
fn assert_help_hides_passwords(right_file: &Path, assert_silent: impl Fn(&Outcome, &str)) {
    for help in ["--help", "-?"] {
        let out = pgsense()
            .arg(help)
            .env("PGPASSWORD", PASSWORD)
            .env("PGPASSFILE", path(right_file))
            .run();
        out.assert_code(0);
        assert_silent(&out, help);
    }
}

/// The command line of a running loader (it waits on a silent server)
/// holds no password.
fn assert_command_line_hides_passwords(right_file: &Path) {
    let silent = SilentServer::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsense-pg"));
    cmd.env_clear()
        .env("PGPASSWORD", PASSWORD)
        .args(["--host", "127.0.0.1", "--port", &silent.port().to_string()])
        .args(["--password-file", path(right_file)])
        .args(["--connect-timeout", "3", "init"]);
    let running = process::spawn(&mut cmd, process::Stdin::Null, "pgsense-pg");
    // Just after exec the kernel may not show the command line yet.
    let proc_cmdline = format!("/proc/{}/cmdline", running.id());
    let mut cmdline = Vec::new();
    for _ in 0..100 {
        cmdline = std::fs::read(&proc_cmdline).unwrap_or_default();
        if !cmdline.is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let finished = running.wait(Duration::from_secs(30));
    assert!(
        !cmdline.is_empty(),
        "cannot read {proc_cmdline}\n{finished:?}"
    );
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("canary"),
        "{cmdline:?}"
    );
    assert_eq!(finished.status.code(), Some(69), "{finished:?}");
}

/// A listener that answers PostgreSQL's SSLRequest with "S" (TLS is
/// welcome) and then says nothing: the TLS handshake never completes.
struct SilentAfterSslRequest {
    port: u16,
    stop: mpsc::Sender<()>,
}

impl SilentAfterSslRequest {
    fn new() -> SilentAfterSslRequest {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("bound").port();
        let (stop, stopped) = mpsc::channel::<()>();
        thread::spawn(move || {
            let mut held = Vec::new();
            loop {
                match stopped.try_recv() {
                    Err(mpsc::TryRecvError::Empty) => {}
                    _ => return,
                }
                if let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut request = [0; 8];
                    if stream.read_exact(&mut request).is_ok() {
                        let _ = stream.write_all(b"S");
                    }
                    held.push(stream);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        SilentAfterSslRequest { port, stop }
    }
}

impl Drop for SilentAfterSslRequest {
    fn drop(&mut self) {
        let _ = self.stop.send(());
    }
}

/// A server that accepts TCP and never answers, and one that agrees to TLS
/// and then never answers: every sslmode gives up within --connect-timeout.
#[test]
fn a_silent_server_fails_within_the_connect_timeout_in_every_sslmode() {
    let silent = SilentServer::new();
    let after_ssl_request = SilentAfterSslRequest::new();
    let scratch = Scratch::new();
    let ca = Ca::new(scratch.path(), "timeout-ca");
    let modes = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    let mut runs = Vec::new();
    for port in [silent.port(), after_ssl_request.port] {
        for mode in modes {
            if port == after_ssl_request.port && mode == "disable" {
                continue; // never sends an SSLRequest
            }
            let started = pgsense()
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--sslmode", mode, "--sslrootcert", path(&ca.files.cert)])
                .args(["--connect-timeout", "1", "load"])
                .stdin(ndjson(0, 1, Shape::Object))
                .timeout(Duration::from_secs(30))
                .spawn();
            runs.push((port, mode, started));
        }
    }
    for (port, mode, started) in runs {
        let out = started.wait();
        out.assert_code(69);
        assert!(
            out.elapsed < Duration::from_secs(1 + 4),
            "port {port}, sslmode {mode}: gave up after {:?} with --connect-timeout 1\n{}",
            out.elapsed,
            out.describe()
        );
        out.assert_stderr_contains("no answer within 1 s");
    }
    assert!(silent.was_contacted());
}

/// As libpq, TLS does not apply to a Unix socket: even verify-full
/// connects there, and verify-ca without a CA certificate to check by.
#[test]
fn a_unix_socket_connects_whatever_the_sslmode() {
    let server = shared();
    let db = server.new_database();
    for (n, mode) in ["verify-full", "verify-ca", "require", "disable"]
        .into_iter()
        .enumerate()
    {
        let out = load_one(
            pgsense()
                .arg("--host")
                .arg(server.socket_dir())
                .args(["--port", &server.port().to_string()])
                .args(["--dbname", &db, "--username", "postgres"])
                .args(["--sslmode", mode]),
            n as u64,
        );
        out.assert_code(0);
    }
    assert_eq!(server.count(&db, "pgsense.findings"), 4);
}

/// A client key pasted into the config file without its PEM armour is
/// refused (exit 78) without showing it: taken for a file's name, it was
/// printed whole in the error saying the file could not be read.
#[test]
fn a_client_key_without_its_armour_is_not_printed() {
    let scratch = Scratch::new();
    let client = self_signed(scratch.path(), "client", "cert_user", "DNS:localhost");
    let key = std::fs::read_to_string(&client.key).expect("read the key");
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let silent = SilentServer::new();
    let config = scratch.write(
        "cert.toml",
        format!(
            "[alerts.postgres]\nhost = \"127.0.0.1\"\nport = {}\n[alerts.postgres.tls]\n\
             mode = \"require\"\nclient_cert = \"{}\"\nclient_key = \"\"\"\n{}\n\"\"\"\n",
            silent.port(),
            client.cert.display(),
            body.join("\n")
        ),
    );
    let out = pgsense()
        .arg("-c")
        .arg(&config)
        .arg("-vvv")
        .arg("load")
        .stdin(ndjson(0, 1, Shape::Object))
        .run();
    out.assert_code(78).assert_stderr_contains("client_key");
    for line in body {
        assert!(!out.stderr.contains(line), "{}", out.describe());
    }
}
