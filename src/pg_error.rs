//! What a server or driver error means and what to do about it: one line
//! for any driver error ([`describe`]), and for a failed first connection
//! the check that failed and the setting to change ([`explain`]), from a
//! table of rules.

use crate::config::{Settings, SslMode, setting};
use Kind::{Server, Tls};

/// One line for a driver error: the server's own message, hint and
/// SQLSTATE when the server sent one, with the next step when the SQLSTATE
/// names a known cause; else the driver's text followed by its causes.
///
/// An ERROR's severity is left out: the log line that prints it already
/// says ERROR or WARN. FATAL and PANIC stay: they say the session ended.
pub fn describe(err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut text = match db.severity() {
                "ERROR" => db.message().to_owned(),
                severity => format!("{severity}: {}", db.message()),
            };
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            let code = db.code().code();
            text.push_str(&format!(" (SQLSTATE {code})"));
            if let Some(step) = next_step(code, db.message()) {
                text.push_str(&format!(": {step}"));
            }
            text
        }
        None => {
            let mut text = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(inner) = cause {
                text.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            text
        }
    }
}

/// The SQLSTATE of a server's error, when the server sent one.
pub fn sqlstate(err: &postgres::Error) -> Option<&str> {
    err.as_db_error().map(|db| db.code().code())
}

/// SQLSTATE 42501, insufficient_privilege: the role lacks a GRANT.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// What to do about an error whose cause its SQLSTATE names, whatever the
/// statement: the cause is the server's setting, not the statement.
pub fn next_step(sqlstate: &str, message: &str) -> Option<&'static str> {
    Some(match sqlstate {
        // query_canceled by a cancel request: not a setting to change.
        "57014" if message.contains("user request") => {
            "a cancel request: pg_cancel_backend, or pgsense-pg's own after --stall-timeout \
             or a stop signal"
        }
        // query_canceled
        "57014" => {
            "the server cancelled the statement: statement_timeout (see `SHOW \
             statement_timeout`; a role's or database's setting applies to every session), or \
             pg_cancel_backend; raise or unset it, e.g. `ALTER ROLE ... RESET statement_timeout`"
        }
        // lock_not_available
        "55P03" => {
            "a lock was not granted within lock_timeout: another session holds it (see \
             pg_locks); end that session's transaction, or run again later"
        }
        // read_only_sql_transaction
        "25006" => {
            "the session is read-only (a standby, or default_transaction_read_only on for the \
             role or database): point --host at the primary, or connect as a role that may \
             write (`ALTER ROLE ... SET default_transaction_read_only = off`)"
        }
        // undefined_table
        "42P01" => {
            "run `pgsense-pg init` to create the findings table, or check --schema, --table \
             and the search_path of the role (a trigger's or rule's relation must be on it)"
        }
        _ => return None,
    })
}

/// Wraps a driver error as one readable line.
pub fn db_error(err: postgres::Error) -> anyhow::Error {
    anyhow::Error::new(DbError {
        lost: connection_lost(&err),
        text: describe(&err),
    })
}

/// [`db_error`] of a failed start of a transaction. A connection closed
/// right then, without a word, is what a PgBouncer in statement pooling
/// mode does (the driver loses its FATAL message): said, in case.
pub fn begin_error(err: postgres::Error) -> anyhow::Error {
    // When its message does get through.
    if err
        .as_db_error()
        .is_some_and(|db| db.message().contains("statement pooling mode"))
    {
        return anyhow::Error::new(DbError {
            lost: false,
            text: format!(
                "{}: pgsense-pg needs PgBouncer's pool_mode = transaction or session",
                describe(&err)
            ),
        });
    }
    if !err.is_closed() {
        return db_error(err);
    }
    anyhow::Error::new(DbError {
        lost: true,
        text: "connection closed as a transaction began: the server went away, or a \
               PgBouncer in statement pooling mode closed it (pgsense-pg needs PgBouncer's \
               pool_mode = transaction or session)"
            .to_owned(),
    })
}

/// A driver error in words ([`describe`]), remembering whether it lost the
/// connection.
#[derive(Debug)]
struct DbError {
    text: String,
    lost: bool,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for DbError {}

/// Whether the connection was lost, or ended by a server going down or
/// not up yet: another connection may do.
pub fn connection_lost(err: &postgres::Error) -> bool {
    match err.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        None => {
            err.is_closed()
                || std::error::Error::source(err).is_some_and(|cause| cause.is::<std::io::Error>())
        }
    }
}

/// Whether the server refused a connection for a reason that waiting does
/// not mend: a password refused, a role or database that does not exist
/// (PgBouncer says so with 08P01 and words of its own).
pub fn refused_for_good(err: &postgres::Error) -> bool {
    let Some(db) = err.as_db_error() else {
        return false;
    };
    let message = db.message();
    match db.code().code() {
        "28P01" | "28000" | "3D000" => true,
        "08P01" => {
            message.contains("password authentication failed")
                || message.starts_with("no such database")
                || message.starts_with("no such user")
        }
        _ => false,
    }
}

/// A first connection every host refused for good ([`refused_for_good`]),
/// in words.
#[derive(Debug)]
pub struct RefusedForGood(pub String);

impl std::fmt::Display for RefusedForGood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedForGood {}

/// Whether every host refused the first connection for good.
pub fn is_refused_for_good(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<RefusedForGood>()
            || cause
                .downcast_ref::<crate::exit::Exit>()
                .is_some_and(|exit| is_refused_for_good(&exit.error))
    })
}

/// Whether an error came of a lost connection ([`connection_lost`]).
pub fn lost_connection(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<DbError>().is_some_and(|db| db.lost)
            || cause
                .downcast_ref::<postgres::Error>()
                .is_some_and(connection_lost)
            || cause
                .downcast_ref::<crate::exit::Exit>()
                .is_some_and(|exit| lost_connection(&exit.error))
    })
}

/// A failed first connection in one line: the driver's or server's words
/// and, when the cause is recognised, which check failed and what to set.
pub fn explain(err: &postgres::Error, settings: &Settings) -> String {
    let text = describe(err);
    match advise(&text.to_lowercase(), settings) {
        // TLS library messages are long and cryptic: the plain words first.
        Some((Tls, advice)) => format!("TLS: {advice} ({text})"),
        Some((Server, advice)) => format!("{text}: {advice}"),
        None => text,
    }
}

/// Failed first connections to several hosts in one line: each host's
/// words, and the advice once when it is the same for all (a wrong
/// password, a certificate every host refuses).
pub fn explain_hosts(failures: &[(&str, &postgres::Error)], settings: &Settings) -> String {
    let advised: Vec<(String, Option<(Kind, String)>)> = failures
        .iter()
        .map(|(_, err)| {
            let text = describe(err);
            let advice = advise(&text.to_lowercase(), settings);
            (text, advice)
        })
        .collect();
    let shared = match &advised[..] {
        [(_, Some(first)), rest @ ..] if !rest.is_empty() => rest
            .iter()
            .all(|(_, advice)| advice.as_ref() == Some(first))
            .then_some(first),
        _ => None,
    };
    let each = |text: &dyn Fn(usize) -> String| {
        failures
            .iter()
            .enumerate()
            .map(|(i, (host, _))| format!("{host}: {}", text(i)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match shared {
        Some((Tls, advice)) => format!("TLS: {advice} ({})", each(&|i| advised[i].0.clone())),
        Some((Server, advice)) => format!("{}: {advice}", each(&|i| advised[i].0.clone())),
        None => each(&|i| explain(failures[i].1, settings)),
    }
}

/// The advice of the first rule that matches `text` (lowercase) under
/// `settings`.
fn advise(text: &str, settings: &Settings) -> Option<(Kind, String)> {
    RULES
        .iter()
        .find(|rule| rule.matches(text, settings))
        .map(|rule| (rule.kind, (rule.advice)(settings)))
}

/// Who is speaking, which decides where the advice goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The TLS library: its words are cryptic, so the advice comes first.
    Tls,
    /// The server: its words come first, the advice after.
    Server,
}

/// What must also hold of the settings for a rule to apply.
#[derive(Clone, Copy)]
enum When {
    Always,
    ClientCert,
    NoClientCert,
    SslDisabled,
    /// require, verify-ca or verify-full: no second try without TLS.
    SslRequired,
}

impl When {
    fn holds(self, settings: &Settings) -> bool {
        match self {
            When::Always => true,
            When::ClientCert => settings.tls.client.is_some(),
            When::NoClientCert => settings.tls.client.is_none(),
            When::SslDisabled => settings.tls.mode.value == SslMode::Disable,
            When::SslRequired => matches!(
                settings.tls.mode.value,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            ),
        }
    }
}

/// One recognised failure.
struct Rule {
    /// Fragments of the lowercase error text: each group must have one
    /// fragment in the text.
    all_of: &'static [&'static [&'static str]],
    when: When,
    kind: Kind,
    advice: fn(&Settings) -> String,
}

impl Rule {
    fn matches(&self, text: &str, settings: &Settings) -> bool {
        self.when.holds(settings)
            && self
                .all_of
                .iter()
                .all(|any_of| any_of.iter().any(|needle| text.contains(needle)))
    }
}

/// The rules, tried in order: the first that matches gives the advice.
#[rustfmt::skip]
const RULES: &[Rule] = &[
    //   speaker  the text has one of each                    when                 advice
    rule(Tls,     &[HOSTNAME_MISMATCH],                       When::Always,        hostname_mismatch),
    rule(Tls,     &[&["certificate has expired"]],            When::Always,        expired),
    rule(Tls,     &[&["certificate is not yet valid"]],       When::Always,        not_yet_valid),
    rule(Tls,     &[UNKNOWN_CA],                              When::Always,        unknown_ca),
    rule(Tls,     &[&["server does not support tls"]],        When::Always,        no_tls_on_server),
    rule(Tls,     &[CERTIFICATE_ALERTS],                      When::ClientCert,    client_cert_refused),
    rule(Tls,     &[CERTIFICATE_ALERTS],                      When::NoClientCert,  client_cert_wanted),
    // Under TLS 1.3 the server checks a client certificate after the
    // handshake, and its refusal often arrives as a bare reset.
    rule(Server,  &[CONNECTION_CLOSED],                       When::ClientCert,    closed_at_startup),
    rule(Tls,     &[&["error performing tls handshake"]],     When::Always,        handshake_failed),
    rule(Server,  &[CLIENT_CERT_REQUIRED],                    When::ClientCert,    client_cert_not_accepted),
    rule(Server,  &[CLIENT_CERT_REQUIRED],                    When::NoClientCert,  set_client_cert),
    rule(Server,  &[&["certificate authentication failed"]],  When::Always,        certificate_name),
    rule(Server,  &[NO_HBA_ENTRY, &["no encryption"]],        When::SslDisabled,   hostssl_only),
    rule(Server,  &[NO_HBA_ENTRY, &["ssl encryption"]],       When::SslRequired,   hostnossl_only),
    rule(Server,  &[&["connect privilege"]],                  When::Always,        connect_grant),
    rule(Server,  &[&["password authentication failed"]],     When::Always,        password_refused),
    // PgBouncer's words for a SCRAM exchange that failed.
    rule(Server,  &[&["sasl authentication failed"]],         When::Always,        sasl_refused),
    rule(Server,  &[&["password missing"]],                   When::Always,        password_missing),
    rule(Server,  &[&["does not allow writes"]],              When::Always,        read_only),
    rule(Server,  &[&["unsupported startup parameter"]],      When::Always,        startup_parameter),
    rule(Server,  &[NOT_POSTGRES],                            When::Always,        not_postgres),
];

/// The driver's words for an answer that is not PostgreSQL's protocol.
const NOT_POSTGRES: &[&str] = &[
    "bytes remaining on stream",
    "unexpected message from server",
    "unexpected response from server",
    "invalid message length",
];

const HOSTNAME_MISMATCH: &[&str] = &["hostname mismatch", "ip address mismatch"];

const UNKNOWN_CA: &[&str] = &[
    "self-signed certificate",
    "self signed certificate",
    "unable to get local issuer certificate",
    "unable to get issuer certificate",
    "unable to verify the first certificate",
    "certificate signature failure",
];

const CERTIFICATE_ALERTS: &[&str] = &[
    "alert unknown ca",
    "alert bad certificate",
    "alert certificate required",
    "alert certificate unknown",
];

const CONNECTION_CLOSED: &[&str] = &["connection reset", "unexpected eof"];

const CLIENT_CERT_REQUIRED: &[&str] = &["requires a valid client certificate"];

const NO_HBA_ENTRY: &[&str] = &["no pg_hba.conf entry", "pg_hba.conf rejects connection"];

const fn rule(
    kind: Kind,
    all_of: &'static [&'static [&'static str]],
    when: When,
    advice: fn(&Settings) -> String,
) -> Rule {
    Rule {
        all_of,
        when,
        kind,
        advice,
    }
}

/// "sslmode verify-full from --sslmode".
fn mode(settings: &Settings) -> String {
    let mode = settings.tls.mode;
    format!("sslmode {mode} from {}", mode.origin)
}

fn client_origin(settings: &Settings) -> &str {
    settings
        .tls
        .client
        .as_ref()
        .map_or("", |client| client.origin.as_str())
}

fn read_only(settings: &Settings) -> String {
    let attrs = &settings.target_session_attrs;
    format!(
        "the server is read-only (a standby, or default_transaction_read_only on for the \
         role or database) and target_session_attrs is read-write (from {}): connect to the \
         primary, or turn default_transaction_read_only off",
        attrs.origin
    )
}

fn hostname_mismatch(settings: &Settings) -> String {
    format!(
        "the server's certificate is not valid for host {} (hostname mismatch; {}): \
         connect with {} set to a name or address the certificate lists in its \
         subjectAltName, or set {} verify-ca to check only that a trusted CA signed it",
        settings
            .hosts
            .value
            .iter()
            .map(|host| format!("{host:?}"))
            .collect::<Vec<_>>()
            .join(" or "),
        mode(settings),
        setting::HOST.flag,
        setting::SSLMODE.flag
    )
}

fn expired(settings: &Settings) -> String {
    format!(
        "the server's certificate has expired ({}): renew it on the server, or check \
         this machine's clock",
        mode(settings)
    )
}

fn not_yet_valid(settings: &Settings) -> String {
    format!(
        "the server's certificate is not valid yet ({}): check this machine's clock",
        mode(settings)
    )
}

fn unknown_ca(settings: &Settings) -> String {
    format!(
        "the server's certificate is not signed by a CA in {} (unknown CA; {}): set {} to \
         the PEM file of the CA that signed it, or {} require to encrypt without verifying \
         the server",
        settings.tls.roots.origin(),
        mode(settings),
        setting::SSLROOTCERT.flag_or_others(),
        setting::SSLMODE.flag
    )
}

fn no_tls_on_server(settings: &Settings) -> String {
    format!(
        "the server does not offer TLS, and {} requires it: turn ssl on in the server's \
         postgresql.conf, or set {} prefer to use TLS only when offered",
        mode(settings),
        setting::SSLMODE.flag
    )
}

fn client_cert_refused(settings: &Settings) -> String {
    format!(
        "the server refused the client certificate ({}): it must be signed by a CA in the \
         server's ssl_ca_file",
        client_origin(settings)
    )
}

fn client_cert_wanted(_: &Settings) -> String {
    format!(
        "the server asks for a client certificate: set {}",
        setting::both(&setting::SSLCERT, &setting::SSLKEY)
    )
}

fn closed_at_startup(settings: &Settings) -> String {
    format!(
        "the server closed the connection at start-up, as PostgreSQL does when it refuses \
         a client certificate: check that {} is signed by a CA in the server's ssl_ca_file",
        client_origin(settings)
    )
}

fn handshake_failed(settings: &Settings) -> String {
    format!("the TLS handshake failed ({})", mode(settings))
}

fn client_cert_not_accepted(settings: &Settings) -> String {
    format!(
        "the server did not accept the client certificate ({}): it must be signed by a CA \
         in the server's ssl_ca_file, and the key must be its own",
        client_origin(settings)
    )
}

fn set_client_cert(_: &Settings) -> String {
    format!("set {}", setting::both(&setting::SSLCERT, &setting::SSLKEY))
}

fn certificate_name(settings: &Settings) -> String {
    format!(
        "the client certificate's common name (CN) must be the role name {:?}, or the \
         server's pg_ident.conf must map it to that role",
        settings.username.value
    )
}

fn hostssl_only(settings: &Settings) -> String {
    format!(
        "the server may accept this role over TLS only (hostssl in pg_hba.conf), and {} \
         turns TLS off: set {} require or stronger",
        mode(settings),
        setting::SSLMODE.flag
    )
}

fn hostnossl_only(settings: &Settings) -> String {
    format!(
        "no pg_hba.conf line lets this role in over TLS from this address (there may be \
         hostnossl lines only), and {} needs TLS: add a hostssl line for it on the server",
        mode(settings)
    )
}

fn connect_grant(settings: &Settings) -> String {
    format!(
        "the role may not connect to the database (REVOKE CONNECT, often FROM PUBLIC): as its \
         owner, run `GRANT CONNECT ON DATABASE \"{}\" TO \"{}\"`",
        settings.dbname.value.replace('"', "\"\""),
        settings.username.value.replace('"', "\"\"")
    )
}

fn password_refused(settings: &Settings) -> String {
    match settings.password.origin() {
        Some(origin) => format!("the password from {origin} was refused"),
        None => "set a password".to_owned(),
    }
}

fn sasl_refused(settings: &Settings) -> String {
    format!(
        "{}; through PgBouncer, also check its auth_file: the user must be in it, with the \
         password in plain text or as a SCRAM secret (an md5 hash fails SCRAM)",
        password_refused(settings)
    )
}

fn not_postgres(_: &Settings) -> String {
    "what answered does not speak PostgreSQL's protocol (another service on that port?): \
     check the host and port"
        .to_owned()
}

fn startup_parameter(settings: &Settings) -> String {
    let sent = match &settings.options {
        Some(options) => format!("options (from {}) were sent", options.origin),
        None => "a startup parameter was sent".to_owned(),
    };
    format!(
        "a connection pooler such as PgBouncer refuses startup parameters it does not \
         know, and {sent}: unset PGOPTIONS (or the options keyword), or add the parameter \
         to the pooler's ignore_startup_parameters"
    )
}

fn password_missing(_: &Settings) -> String {
    let mut ways = setting::PASSWORD.ways();
    ways.push(setting::PASSFILE.to_owned());
    format!(
        "the server asks for a password: set {}",
        setting::one_of(&ways)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_flags;

    fn advice(text: &str, flags: &[&str]) -> Option<(Kind, String)> {
        advise(&text.to_lowercase(), &from_flags(flags))
    }

    #[test]
    fn an_unknown_ca_names_every_way_to_set_the_roots() {
        let (kind, text) = advice(
            "error performing TLS handshake: self-signed certificate in certificate chain",
            &["--sslmode", "verify-full"],
        )
        .expect("a rule matches");
        assert_eq!(kind, Tls);
        assert_eq!(
            text,
            "the server's certificate is not signed by a CA in the system's trusted roots \
             (unknown CA; sslmode verify-full from --sslmode): set --sslrootcert (or \
             trusted_root_certs in [alerts.postgres.tls], or PGSSLROOTCERT) to the PEM file of \
             the CA that signed it, or --sslmode require to encrypt without verifying the server"
        );
    }

    #[test]
    fn an_answer_in_another_protocol_asks_for_the_host_and_port() {
        let (kind, text) = advice(
            "error communicating with the server: bytes remaining on stream",
            &["--port", "8080"],
        )
        .expect("a rule matches");
        assert_eq!(kind, Server);
        assert!(
            text.contains("does not speak PostgreSQL's protocol"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_password_names_every_password_source() {
        let (kind, text) = advice("db error: password missing", &[]).expect("a rule matches");
        assert_eq!(kind, Server);
        assert_eq!(
            text,
            "the server asks for a password: set --password-file, password in \
             [alerts.postgres], PGPASSWORD, or a line in ~/.pgpass (or the file PGPASSFILE \
             names)"
        );
    }

    #[test]
    fn a_wanted_client_certificate_names_flags_keys_and_variables() {
        let (kind, text) = advice("tlsv13 alert certificate required", &[]).expect("a rule");
        assert_eq!(kind, Tls);
        for name in [
            "--sslcert and --sslkey",
            "client_cert and client_key",
            "PGSSLCERT",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
        let (kind, text) =
            advice("FATAL: connection requires a valid client certificate", &[]).expect("a rule");
        assert_eq!(kind, Server);
        assert!(text.starts_with("set --sslcert and --sslkey ("), "{text}");
    }

    #[test]
    fn rules_hold_only_under_their_settings() {
        let hba = "FATAL: no pg_hba.conf entry for host \"1.2.3.4\", user \"u\", no encryption";
        assert!(advice(hba, &[]).is_none(), "prefer does not turn TLS off");
        let (_, text) = advice(hba, &["--sslmode", "disable"]).expect("a rule");
        assert!(
            text.contains("sslmode disable from --sslmode")
                && text.contains("set --sslmode require"),
            "{text}"
        );
        // Without a client certificate a reset is only a reset.
        assert!(advice("connection reset by peer", &[]).is_none());
    }

    #[test]
    fn the_mode_is_named_with_its_origin() {
        let (_, text) = advice("certificate has expired", &[]).expect("a rule");
        assert!(text.contains("(sslmode prefer from the default)"), "{text}");
        let (_, text) = advice("Hostname mismatch", &["--host", "db.example"]).expect("a rule");
        assert!(
            text.contains("host \"db.example\"") && text.contains("--host set to"),
            "{text}"
        );
    }

    #[test]
    fn an_unrecognised_error_has_no_advice() {
        assert!(advice("ERROR: relation \"x\" does not exist", &[]).is_none());
    }
}
