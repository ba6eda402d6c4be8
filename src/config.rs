//! Settings: the TOML file's `[alerts.postgres]`, the command-line flags and
//! the libpq environment variables resolved into one validated [`Settings`].
//! This is the one place that owns precedence: flags, then the config file,
//! then PGHOST/PGPORT/PGDATABASE/PGUSER/PGPASSWORD, then the defaults of the
//! scanner's PostgreSQL channel.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::cli::GlobalArgs;

/// Everything needed to reach the findings table.
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub username: String,
    pub password: Option<Secret>,
    pub schema: String,
    pub table: String,
    pub tls: TlsMode,
    pub connect_timeout: Duration,
}

impl Settings {
    /// `"schema"."table"`, safe to splice into SQL: both are validated
    /// identifiers.
    pub fn qualified_table(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.table)
    }

    /// Where the connection goes, for messages: never the password.
    pub fn target(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.username, self.host, self.port, self.dbname
        )
    }
}

/// TLS as the scanner's channel means it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// `enabled = false`: TLS when the server offers it, certificate not checked.
    Prefer,
    /// `enabled = true`: TLS required, certificate chain and host name checked,
    /// against the system roots plus `trusted_root_certs` when given.
    VerifyFull { root_cert: Option<RootCert> },
}

/// `trusted_root_certs`: a PEM file's path, or the PEM text itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    Path(PathBuf),
    Pem(String),
}

/// A password; its Debug and Display never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The parts of the scanner's config file that concern this tool; serde
/// ignores every other section.
#[derive(Deserialize)]
struct ConfigFile {
    alerts: Option<Alerts>,
}

#[derive(Deserialize)]
struct Alerts {
    postgres: Option<PostgresSection>,
}

/// `[alerts.postgres]`, with exactly the scanner's keys: a typo is an error,
/// not a silent fallback to a default.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PostgresSection {
    #[allow(dead_code, reason = "the scanner's channel name; accepted, not used")]
    name: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
    username: Option<String>,
    password: Option<PasswordSource>,
    schema: Option<String>,
    table: Option<String>,
    tls: Option<TlsSection>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string, or { file = \"PATH\" }")]
enum PasswordSource {
    Inline(String),
    File { file: PathBuf },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    #[serde(default)]
    enabled: bool,
    trusted_root_certs: Option<String>,
}

/// The libpq variables this tool honours as fallbacks.
pub struct PgEnv {
    pub host: Option<String>,
    pub port: Option<String>,
    pub dbname: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl PgEnv {
    pub fn from_process() -> PgEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        PgEnv {
            host: var("PGHOST"),
            port: var("PGPORT"),
            dbname: var("PGDATABASE"),
            user: var("PGUSER"),
            password: var("PGPASSWORD"),
        }
    }
}

/// Resolves flags, config file and environment into settings.
pub fn resolve(args: &GlobalArgs, env: &PgEnv) -> Result<Settings> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => PostgresSection::default(),
    };

    let host = first(
        [args.host.clone(), file.host, env.host.clone()],
        "localhost",
    );
    let port = match (args.port, file.port, &env.port) {
        (Some(port), _, _) | (None, Some(port), _) => port,
        (None, None, Some(text)) => text
            .parse()
            .with_context(|| format!("PGPORT={text:?} is not a port number"))?,
        (None, None, None) => 5432,
    };
    let dbname = first(
        [args.dbname.clone(), file.dbname, env.dbname.clone()],
        "postgres",
    );
    let username = first(
        [args.username.clone(), file.username, env.user.clone()],
        "postgres",
    );
    let schema = first([args.schema.clone(), file.schema], "pgsense");
    let table = first([args.table.clone(), file.table], "findings");
    check_identifier("schema", &schema)?;
    check_identifier("table", &table)?;

    let password = match (&args.password_file, file.password) {
        (Some(path), _) => Some(read_secret(path, "--password-file")?),
        (None, Some(PasswordSource::File { file })) => Some(read_secret(
            &file,
            "password = { file } in [alerts.postgres]",
        )?),
        (None, Some(PasswordSource::Inline(text))) => Some(Secret(text)),
        (None, None) => env.password.clone().map(Secret),
    };

    let tls = match file.tls {
        Some(TlsSection {
            enabled: true,
            trusted_root_certs,
        }) => TlsMode::VerifyFull {
            root_cert: trusted_root_certs.map(|value| {
                if value.contains("-----BEGIN") {
                    RootCert::Pem(value)
                } else {
                    RootCert::Path(PathBuf::from(value))
                }
            }),
        },
        _ => TlsMode::Prefer,
    };

    Ok(Settings {
        host,
        port,
        dbname,
        username,
        password,
        schema,
        table,
        tls,
        connect_timeout: Duration::from_secs(args.connect_timeout),
    })
}

fn first<const N: usize>(candidates: [Option<String>; N], default: &str) -> String {
    candidates
        .into_iter()
        .flatten()
        .next()
        .unwrap_or_else(|| default.to_owned())
}

fn read_config(path: &Path) -> Result<PostgresSection> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let parsed: ConfigFile = toml::from_str(&text).map_err(|err| {
        // The error's own Display quotes the offending line, which may be the
        // password line: give the message and the line number only.
        let line = err
            .span()
            .map(|span| text[..span.start].matches('\n').count() + 1);
        let message = err.message().trim_end();
        match line {
            Some(line) => anyhow::anyhow!("{}:{line}: {message}", path.display()),
            None => anyhow::anyhow!("{}: {message}", path.display()),
        }
    })?;
    match parsed.alerts.and_then(|a| a.postgres) {
        Some(section) => Ok(section),
        None => bail!(
            "{} has no [alerts.postgres] section: add one (see `man pgsense-pg`), \
             or leave out --config to use flags and PG* variables",
            path.display()
        ),
    }
}

fn read_secret(path: &Path, origin: &str) -> Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read password file {} ({origin})", path.display()))?;
    Ok(Secret(text.trim_end().to_owned()))
}

/// Schema and table names are spliced into SQL and must reach PostgreSQL
/// unchanged: ASCII letters, digits and underscores, at most 63 bytes (the
/// server silently truncates longer names).
fn check_identifier(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("{what} name is empty");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        bail!(
            "{what} name {name:?} contains {bad:?}: only ASCII letters, digits and underscores are allowed"
        );
    }
    if name.len() > 63 {
        bail!(
            "{what} name {name:?} is {} bytes long: PostgreSQL allows at most 63",
            name.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn no_env() -> PgEnv {
        PgEnv {
            host: None,
            port: None,
            dbname: None,
            user: None,
            password: None,
        }
    }

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["pgsense-pg"];
        argv.extend_from_slice(args);
        argv.push("init");
        crate::cli::Cli::try_parse_from(argv).unwrap().global
    }

    #[test]
    fn defaults_then_env_then_flags() {
        let s = resolve(&global(&[]), &no_env()).unwrap();
        assert_eq!(
            (
                s.host.as_str(),
                s.port,
                s.dbname.as_str(),
                s.username.as_str()
            ),
            ("localhost", 5432, "postgres", "postgres")
        );
        assert_eq!(
            (s.schema.as_str(), s.table.as_str()),
            ("pgsense", "findings")
        );
        let env = PgEnv {
            host: Some("envhost".into()),
            port: Some("6543".into()),
            ..no_env()
        };
        let s = resolve(&global(&["--host", "flaghost"]), &env).unwrap();
        assert_eq!((s.host.as_str(), s.port), ("flaghost", 6543));
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(check_identifier("table", "findings_2026").is_ok());
        for bad in ["", "a-b", "a.b", "a\"b", "é", &"x".repeat(64)] {
            assert!(check_identifier("table", bad).is_err(), "{bad}");
        }
        assert!(check_identifier("table", &"x".repeat(63)).is_ok());
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(..)");
    }
}
