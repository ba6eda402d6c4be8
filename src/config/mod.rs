//! Settings: the TOML file's `[alerts.postgres]` (and its `tls` table), the
//! command-line flags and the libpq environment variables resolved into one
//! validated [`Settings`]. This is the one place that owns precedence:
//! flags, then the config file, then the PG* variables, then the defaults
//! of the scanner's PostgreSQL channel ([`source`]), each setting named once
//! ([`setting`]). Passwords come from --password-file, the config file,
//! PGPASSWORD, then libpq's password file ([`password`]). TLS files are read
//! and checked here ([`tls`]), so that a missing or malformed one is a
//! configuration error before anything connects.

mod conninfo;
mod env;
mod file;
mod password;
mod pem;
mod pgpass;
mod secret;
mod service;
pub mod setting;
mod source;
mod tls;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use postgres::config::TargetSessionAttrs;

pub use crate::cli::SslMode;
use crate::cli::{DEFAULT_PORT, GlobalArgs, Ports, parse_ports};
pub use env::PgEnv;
use file::{PortValue, PostgresSection};
pub use password::Password;
pub use source::Sourced;
use source::{Origin, Params, Precedence, Whole};
pub use tls::{Roots, Tls};

/// The default host.
const DEFAULT_HOST: &str = "localhost";
/// The default application_name, seen in pg_stat_activity.
const APPLICATION_NAME: &str = "pgsense-pg";
/// The default --connect-timeout, in seconds.
const CONNECT_TIMEOUT: u64 = 10;

/// Everything needed to reach the findings table; each value remembers the
/// setting it came from.
pub struct Settings {
    /// The hosts, tried in order; never empty, no entry empty.
    pub hosts: Sourced<Vec<String>>,
    /// One port for every host, or one per host.
    pub ports: Sourced<Vec<u16>>,
    pub dbname: Sourced<String>,
    pub username: Sourced<String>,
    pub password: Option<Password>,
    pub schema: Sourced<String>,
    pub table: Sourced<String>,
    pub tls: Tls,
    /// For each host in turn.
    pub connect_timeout: Sourced<Duration>,
    pub application_name: Sourced<String>,
    pub target_session_attrs: Sourced<TargetSessionAttrs>,
    /// Server options sent at startup (PGOPTIONS), when set.
    pub options: Option<Sourced<String>>,
}

impl Settings {
    /// `"schema"."table"`, safe to splice into SQL: both are validated
    /// identifiers.
    pub fn qualified_table(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.table)
    }

    /// Where the connection goes, for messages: never the password.
    pub fn target(&self) -> String {
        let endpoints: Vec<String> = self
            .endpoints()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect();
        format!("{}@{}/{}", self.username, endpoints.join(","), self.dbname)
    }

    /// Each host with its port, in the order tried.
    pub fn endpoints(&self) -> impl Iterator<Item = (&str, u16)> {
        endpoints(&self.hosts.value, &self.ports.value)
    }

    /// Whether every host is a Unix socket directory (as libpq, a leading
    /// `/`).
    pub fn is_unix_socket(&self) -> bool {
        self.hosts.value.iter().all(|host| host.starts_with('/'))
    }
}

/// The libpq keywords that hold settings, strongest first: a connection
/// string in --dbname, one in the config file's dbname, a service.
#[derive(Default)]
pub struct Parts {
    pub flag: Option<Params>,
    pub file: Option<Params>,
    pub service: Option<Params>,
}

impl Parts {
    /// The connection strings of `--dbname` and `dbname`, and the service
    /// they, --service or PGSERVICE name.
    fn gather(args: &GlobalArgs, file_dbname: Option<&String>, env: &PgEnv) -> Result<Parts> {
        let conninfo = |text: Option<&String>, whole| {
            text.filter(|text| conninfo::is_conninfo(text))
                .map(|text| conninfo::parse(text, whole).with_context(|| whole.to_string()))
                .transpose()
        };
        let mut parts = Parts {
            flag: conninfo(args.dbname.as_ref(), Whole::DbnameFlag)?,
            file: conninfo(file_dbname, Whole::DbnameFile)?,
            service: None,
        };
        let name = Precedence::of(&setting::SERVICE)
            .flag(args.service.clone())
            .part(parts.flag.as_ref(), |v| v)
            .part(parts.file.as_ref(), |v| v)
            .env(env.service.clone())
            .get();
        if let Some(name) = name {
            let places = service::Places {
                servicefile: env.servicefile.as_deref(),
                sysconfdir: env.sysconfdir.as_deref(),
                home: env.home.as_deref(),
            };
            let params = service::lookup(&name.value, &places)
                .with_context(|| format!("service from {}", name.origin))?;
            parts.service = Some(params);
        }
        Ok(parts)
    }

    /// Offers the three in order, after the flag and after the file.
    fn text<T>(
        &self,
        precedence: Precedence<T>,
        flag: Option<T>,
        file: Option<T>,
        map: impl Fn(String) -> T,
    ) -> Precedence<T> {
        precedence
            .flag(flag)
            .part(self.flag.as_ref(), &map)
            .file(file)
            .part(self.file.as_ref(), &map)
            .part(self.service.as_ref(), &map)
    }

    /// The same with a parse for the keywords' values.
    fn parsed<T>(
        &self,
        precedence: Precedence<T>,
        parse: impl Fn(String, Origin) -> Result<T>,
    ) -> Result<Precedence<T>> {
        precedence
            .try_part(self.flag.as_ref(), &parse)?
            .try_part(self.file.as_ref(), &parse)?
            .try_part(self.service.as_ref(), &parse)
    }
}

/// Resolves flags, config file and environment into settings.
pub fn resolve(args: &GlobalArgs, env: &PgEnv) -> Result<Settings> {
    let PostgresSection {
        host,
        port,
        dbname,
        username,
        password,
        schema,
        table,
        tls,
        ..
    } = match &args.config {
        Some(path) => file::read(path)?,
        None => PostgresSection::default(),
    };
    let parts = Parts::gather(args, dbname.as_ref(), env)?;
    let plain = |text: Option<String>| text.filter(|text| !conninfo::is_conninfo(text));
    let hosts = hosts(&parts, args.host.clone(), host, env);
    let ports = ports(&parts, args.port.clone(), port, env)?;
    check_counts(&hosts, &ports)?;
    let dbname = parts
        .text(
            Precedence::of(&setting::DBNAME),
            plain(args.dbname.clone()),
            plain(dbname),
            |v| v,
        )
        .env(env.dbname.clone())
        .or_default("postgres".to_owned());
    let username = parts
        .text(
            Precedence::of(&setting::USERNAME),
            args.username.clone(),
            username,
            |v| v,
        )
        .env(env.user.clone())
        .or_default("postgres".to_owned());
    let schema = identifier(&setting::SCHEMA, &args.schema, schema, "pgsense")?;
    let table = identifier(&setting::TABLE, &args.table, table, "findings")?;

    let targets: Vec<pgpass::Target> = endpoints(&hosts.value, &ports.value)
        .map(|(host, port)| pgpass::Target {
            host,
            port,
            dbname: &dbname.value,
            user: &username.value,
        })
        .collect();
    let password = password::resolve(
        args.password_file.as_deref(),
        password,
        &parts,
        env,
        &targets,
    )?;
    match &password {
        Some(password) => log::debug!("password from {}", password.origin),
        None => log::debug!("no password set"),
    }
    let tls = tls::resolve(args, tls.unwrap_or_default(), &parts, env)?;
    let session = session(args, &parts, env)?;

    Ok(Settings {
        hosts,
        ports,
        dbname,
        username,
        password,
        schema,
        table,
        tls,
        connect_timeout: session.connect_timeout,
        application_name: session.application_name,
        target_session_attrs: session.target_session_attrs,
        options: session.options,
    })
}

/// Each host with its port: one port for all, or one per host.
fn endpoints<'a>(hosts: &'a [String], ports: &'a [u16]) -> impl Iterator<Item = (&'a str, u16)> {
    hosts
        .iter()
        .enumerate()
        .map(move |(i, host)| (host.as_str(), ports[if ports.len() == 1 { 0 } else { i }]))
}

/// The host list, an empty entry standing for the default, as in libpq.
fn hosts(
    parts: &Parts,
    flag: Option<String>,
    file: Option<String>,
    env: &PgEnv,
) -> Sourced<Vec<String>> {
    let list = parts
        .text(Precedence::of(&setting::HOST), flag, file, |v| v)
        .env(env.host.clone())
        .or_default(DEFAULT_HOST.to_owned());
    Sourced {
        value: list
            .value
            .split(',')
            .map(|host| match host.trim() {
                "" => DEFAULT_HOST.to_owned(),
                host => host.to_owned(),
            })
            .collect(),
        origin: list.origin,
    }
}

fn ports(
    parts: &Parts,
    flag: Option<Ports>,
    file: Option<PortValue>,
    env: &PgEnv,
) -> Result<Sourced<Vec<u16>>> {
    let text_ports = |text: String, origin: Origin| {
        parse_ports(&text)
            .map(|ports| ports.0)
            .map_err(|err| anyhow::anyhow!("{}: {err}", origin.show_quoted(&text)))
    };
    let file_ports = |value: PortValue, origin: Origin| match value {
        PortValue::Text(text) => text_ports(text, origin),
        PortValue::Number(number) => match u16::try_from(number) {
            Ok(port) if port > 0 => Ok(vec![port]),
            _ => bail!("{origin} is {number}: ports are numbers from 1 to 65535"),
        },
    };
    let precedence = Precedence::of(&setting::PORT)
        .flag(flag.map(|ports| ports.0))
        .try_part(parts.flag.as_ref(), text_ports)?
        .try_file(file, file_ports)?
        .try_part(parts.file.as_ref(), text_ports)?
        .try_part(parts.service.as_ref(), text_ports)?;
    Ok(precedence
        .try_env(env.port.clone(), text_ports)?
        .or_default(vec![DEFAULT_PORT]))
}

/// libpq's rule: one port for all hosts, or exactly one per host.
fn check_counts(hosts: &Sourced<Vec<String>>, ports: &Sourced<Vec<u16>>) -> Result<()> {
    let (h, p) = (hosts.value.len(), ports.value.len());
    if p != 1 && p != h {
        bail!(
            "{} gives {p} ports for {h} host(s) from {}: give one port for all hosts, or one \
             per host",
            ports.origin,
            hosts.origin
        );
    }
    Ok(())
}

/// The settings of the session itself, which only libpq's keywords and
/// variables set (and --connect-timeout).
struct Session {
    connect_timeout: Sourced<Duration>,
    application_name: Sourced<String>,
    target_session_attrs: Sourced<TargetSessionAttrs>,
    options: Option<Sourced<String>>,
}

fn session(args: &GlobalArgs, parts: &Parts, env: &PgEnv) -> Result<Session> {
    let flag_timeout = args.connect_timeout.map(Duration::from_secs);
    let precedence = Precedence::of(&setting::CONNECT_TIMEOUT).flag(flag_timeout);
    let connect_timeout = parts
        .parsed(precedence, parse_timeout)?
        .try_env(env.connect_timeout.clone(), parse_timeout)?
        .or_default(Duration::from_secs(CONNECT_TIMEOUT));
    let application_name = parts
        .parsed(Precedence::of(&setting::APPLICATION_NAME), |v, _| Ok(v))?
        .env(env.appname.clone())
        .or_default(APPLICATION_NAME.to_owned());
    let target_session_attrs = parts
        .parsed(Precedence::of(&setting::TARGET_SESSION_ATTRS), parse_attrs)?
        .try_env(env.target_session_attrs.clone(), parse_attrs)?
        .or_default(TargetSessionAttrs::ReadWrite);
    let options = parts
        .parsed(Precedence::of(&setting::OPTIONS), |v, _| Ok(v))?
        .env(env.options.clone())
        .get();
    Ok(Session {
        connect_timeout,
        application_name,
        target_session_attrs,
        options,
    })
}

/// Whole seconds from 1: libpq waits forever on 0, and every wait here is
/// bounded.
fn parse_timeout(text: String, origin: Origin) -> Result<Duration> {
    match text.trim().parse::<i64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds.unsigned_abs())),
        Ok(_) => bail!(
            "{}: libpq waits forever with 0, and pgsense-pg bounds every wait: give a \
             number of seconds from 1 (unset, it is {CONNECT_TIMEOUT})",
            origin.show_quoted(&text)
        ),
        Err(_) => bail!("{} is not a number of seconds", origin.show_quoted(&text)),
    }
}

/// A loader writes: read-write (the default) or any; the modes that want a
/// standby are refused.
fn parse_attrs(text: String, origin: Origin) -> Result<TargetSessionAttrs> {
    match text.as_str() {
        "read-write" => Ok(TargetSessionAttrs::ReadWrite),
        "any" => Ok(TargetSessionAttrs::Any),
        "read-only" | "primary" | "standby" | "prefer-standby" => bail!(
            "{}: pgsense-pg writes, and supports read-write (the default) or any",
            origin.show_quoted(&text)
        ),
        _ => bail!(
            "{} is not a target_session_attrs: use read-write or any",
            origin.show_quoted(&text)
        ),
    }
}

/// A schema or table name: a flag, then the file, then the default (libpq
/// has no variable for them), checked.
fn identifier(
    setting: &'static setting::Setting,
    flag: &Option<String>,
    file: Option<String>,
    default: &str,
) -> Result<Sourced<String>> {
    let name = Precedence::of(setting)
        .flag(flag.clone())
        .file(file)
        .or_default(default.to_owned());
    check_identifier(setting.key, &name.value)?;
    Ok(name)
}

/// Settings from these flags alone (no config file, no PG* variables), for
/// the unit tests of the modules that read settings.
#[cfg(test)]
pub fn from_flags(flags: &[&str]) -> Settings {
    use clap::Parser;
    let argv = ["pgsense-pg"].iter().chain(flags).chain(&["init"]);
    let cli = crate::cli::Cli::try_parse_from(argv).expect("the test's flags parse");
    resolve(&cli.global, &PgEnv::default()).expect("the test's flags resolve")
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
    use source::Origin;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    fn no_env() -> PgEnv {
        PgEnv::default()
    }

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["pgsense-pg"];
        argv.extend_from_slice(args);
        argv.push("init");
        crate::cli::Cli::try_parse_from(argv).unwrap().global
    }

    /// A scratch directory for config and secret files, removed on Drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("pgsense-pg-unit-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            Dir(dir)
        }

        fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn with_config(dir: &Dir, text: &str, args: &[&str], env: &PgEnv) -> Result<Settings> {
        let config = dir.write("config.toml", text, 0o600);
        let mut argv = vec!["-c", config.to_str().unwrap()];
        argv.extend_from_slice(args);
        resolve(&global(&argv), env)
    }

    #[test]
    fn a_password_file_table_takes_no_other_key() {
        let dir = Dir::new("pwkeys");
        let secret = dir.write("pw", "hunter2\n", 0o600);
        let text = format!(
            "[alerts.postgres]\npassword = {{ file = {:?}, mode = \"x\" }}\n",
            secret.to_str().unwrap()
        );
        let err = with_config(&dir, &text, &[], &no_env())
            .err()
            .expect("an error");
        assert!(format!("{err:#}").contains("no other key"), "{err:#}");
        let text = format!(
            "[alerts.postgres]\npassword = {{ file = {:?} }}\n",
            secret.to_str().unwrap()
        );
        let settings = with_config(&dir, &text, &[], &no_env()).unwrap();
        assert_eq!(
            settings
                .password
                .map(|p| p.secret.expose().to_owned())
                .as_deref(),
            Some("hunter2")
        );
    }

    #[test]
    fn defaults_then_env_then_flags() {
        let s = resolve(&global(&[]), &no_env()).unwrap();
        assert_eq!(
            (
                s.hosts.value.join(","),
                s.ports.value[0],
                s.dbname.value.as_str(),
                s.username.value.as_str()
            ),
            ("localhost".to_owned(), 5432, "postgres", "postgres")
        );
        assert_eq!(
            (s.schema.value.as_str(), s.table.value.as_str()),
            ("pgsense", "findings")
        );
        assert_eq!(s.tls.mode.value, SslMode::Prefer);
        let env = PgEnv {
            host: Some("envhost".into()),
            port: Some("6543".into()),
            ..no_env()
        };
        let s = resolve(&global(&["--host", "flaghost"]), &env).unwrap();
        assert_eq!(
            (s.hosts.value.join(","), s.ports.value[0]),
            ("flaghost".into(), 6543)
        );
        assert_eq!(
            (s.hosts.origin, s.ports.origin),
            (Origin::Flag("--host"), Origin::Env("PGPORT"))
        );
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
    fn sslmode_precedence_flag_then_config_then_env() {
        let dir = Dir::new("sslmode");
        let env = PgEnv {
            sslmode: Some("require".into()),
            ..no_env()
        };
        let mode = |config: &str, args: &[&str], env: &PgEnv| {
            let s = with_config(&dir, &format!("[alerts.postgres]\n{config}"), args, env).unwrap();
            (s.tls.mode.value, s.tls.mode.origin.to_string())
        };
        assert_eq!(
            mode("", &[], &no_env()),
            (SslMode::Prefer, "the default".into())
        );
        assert_eq!(mode("", &[], &env), (SslMode::Require, "PGSSLMODE".into()));
        let enabled = "[alerts.postgres.tls]\nenabled = true";
        assert_eq!(mode(enabled, &[], &env).0, SslMode::VerifyFull);
        let disabled = "[alerts.postgres.tls]\nenabled = false";
        assert_eq!(mode(disabled, &[], &env).0, SslMode::Prefer);
        // mode overrides enabled; the flag overrides both.
        let both = "[alerts.postgres.tls]\nenabled = true\nmode = \"disable\"";
        assert_eq!(mode(both, &[], &env).0, SslMode::Disable);
        assert_eq!(
            mode(both, &["--sslmode", "allow"], &env),
            (SslMode::Allow, "--sslmode".into())
        );
        // A tls table without enabled or mode leaves the choice to PGSSLMODE.
        let no_mode = "[alerts.postgres.tls]\ntrusted_root_certs = \"/nonexistent\"";
        assert_eq!(mode(no_mode, &[], &env).0, SslMode::Require);
    }

    #[test]
    fn bad_sslmodes_name_the_setting() {
        let dir = Dir::new("badmode");
        let env = PgEnv {
            sslmode: Some("verify_full".into()),
            ..no_env()
        };
        let err = resolve(&global(&[]), &env).err().unwrap().to_string();
        assert!(err.contains("PGSSLMODE=\"verify_full\""), "{err}");
        assert!(err.contains("verify-full"), "{err}");
        let err = with_config(
            &dir,
            "[alerts.postgres]\n[alerts.postgres.tls]\nmode = \"strict\"",
            &[],
            &no_env(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("mode = \"strict\" in [alerts.postgres.tls]"),
            "{err}"
        );
        let err = with_config(
            &dir,
            "[alerts.postgres]\n[alerts.postgres.tls]\nverify = true",
            &[],
            &no_env(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("verify"), "{err}");
    }

    #[test]
    fn verify_ca_needs_a_root_certificate() {
        let err = resolve(&global(&["--sslmode", "verify-ca"]), &no_env())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--sslrootcert"), "{err}");
        let err = resolve(
            &global(&["--sslmode", "verify-ca", "--sslrootcert", "system"]),
            &no_env(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("verify-full"), "{err}");
        // verify-full against the system's roots is the scanner's enabled = true.
        let s = resolve(&global(&["--sslmode", "verify-full"]), &no_env()).unwrap();
        assert!(matches!(s.tls.roots, Roots::System));
    }

    #[test]
    fn root_certificates_are_read_only_when_they_are_used() {
        let dir = Dir::new("roots");
        let env = PgEnv {
            sslrootcert: Some("/nonexistent/env-ca.pem".into()),
            ..no_env()
        };
        // Unused under prefer: not read, no error.
        assert!(resolve(&global(&[]), &env).is_ok());
        let err = resolve(&global(&["--sslmode", "verify-full"]), &env)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("PGSSLROOTCERT=/nonexistent/env-ca.pem"),
            "{err:#}"
        );
        // The flag wins over the environment; a file without a certificate
        // is an error naming it.
        let empty = dir.write("empty.pem", "not a certificate\n", 0o644);
        let err = resolve(
            &global(&[
                "--sslmode",
                "verify-full",
                "--sslrootcert",
                empty.to_str().unwrap(),
            ]),
            &env,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("--sslrootcert") && err.contains("no PEM certificate"),
            "{err}"
        );
        // Inline PEM in the config file is told apart from a path.
        let err = with_config(
            &dir,
            "[alerts.postgres]\n[alerts.postgres.tls]\nenabled = true\n\
             trusted_root_certs = \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\"",
            &[],
            &env,
        )
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").contains("trusted_root_certs (inline PEM)"),
            "{err:#}"
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let err = resolve(&global(&["--sslcert", "/c.pem"]), &no_env())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--sslcert /c.pem") && err.contains("--sslkey"),
            "{err}"
        );
        let env = PgEnv {
            sslkey: Some("/k.pem".into()),
            ..no_env()
        };
        let err = resolve(&global(&[]), &env).err().unwrap().to_string();
        assert!(
            err.contains("PGSSLKEY=/k.pem") && err.contains("--sslcert"),
            "{err}"
        );
    }

    #[test]
    fn password_sources_in_order() {
        let dir = Dir::new("passwords");
        let flag_file = dir.write("flag-pw", "from-flag\n", 0o600);
        let config_file = dir.write("config-pw", "from-config-file \n", 0o600);
        dir.write(".pgpass", "*:*:*:*:from-pgpass\n", 0o600);
        let other_pgpass = dir.write(
            "other-pgpass",
            "localhost:5432:postgres:postgres:from-passfile\n",
            0o600,
        );
        let env = PgEnv {
            password: Some("from-env".into()),
            home: Some(dir.path().into()),
            ..no_env()
        };
        let password = |config: &str, args: &[&str], env: &PgEnv| {
            with_config(&dir, &format!("[alerts.postgres]\n{config}"), args, env)
                .unwrap()
                .password
                .map(|p| (p.secret.expose().to_owned(), p.origin))
        };
        let flag = ["--password-file", flag_file.to_str().unwrap()];
        let file_ref = format!("password = {{ file = \"{}\" }}", config_file.display());
        assert_eq!(password(&file_ref, &flag, &env).unwrap().0, "from-flag");
        assert_eq!(
            password(&file_ref, &[], &env).unwrap().0,
            "from-config-file"
        );
        assert_eq!(
            password("password = \"inline\"", &[], &env).unwrap().0,
            "inline"
        );
        assert_eq!(password("", &[], &env).unwrap().0, "from-env");
        let no_password = PgEnv {
            password: None,
            ..PgEnv {
                home: Some(dir.path().into()),
                ..no_env()
            }
        };
        let (text, origin) = password("", &[], &no_password).unwrap();
        assert_eq!(text, "from-pgpass");
        assert!(origin.ends_with(".pgpass, line 1"), "{origin}");
        // PGPASSFILE replaces ~/.pgpass.
        let passfile = PgEnv {
            passfile: Some(other_pgpass.to_str().unwrap().into()),
            ..PgEnv {
                home: Some(dir.path().into()),
                ..no_env()
            }
        };
        assert_eq!(password("", &[], &passfile).unwrap().0, "from-passfile");
        assert_eq!(password("", &["--dbname", "other"], &passfile), None);
        assert_eq!(password("", &[], &no_env()), None);
    }

    #[test]
    fn a_readable_pgpass_is_ignored() {
        let dir = Dir::new("pgpass-mode");
        dir.write(".pgpass", "*:*:*:*:secret\n", 0o644);
        let env = PgEnv {
            home: Some(dir.path().into()),
            ..no_env()
        };
        assert!(resolve(&global(&[]), &env).unwrap().password.is_none());
        dir.write(".pgpass", "*:*:*:*:secret\n", 0o640);
        assert!(resolve(&global(&[]), &env).unwrap().password.is_none());
        dir.write(".pgpass", "*:*:*:*:secret\n", 0o400);
        assert!(resolve(&global(&[]), &env).unwrap().password.is_some());
    }
}

#[cfg(test)]
mod libpq_tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["pgsense-pg"];
        argv.extend_from_slice(args);
        argv.push("init");
        crate::cli::Cli::try_parse_from(argv).unwrap().global
    }

    #[test]
    fn several_hosts_with_one_port_or_one_each() {
        let s = resolve(
            &global(&["--host", "a,,c", "--port", "6432"]),
            &PgEnv::default(),
        )
        .unwrap();
        assert_eq!(s.target(), "postgres@a:6432,localhost:6432,c:6432/postgres");
        let env = PgEnv {
            port: Some("5432,5433".into()),
            ..PgEnv::default()
        };
        let s = resolve(&global(&["--host", "a,b"]), &env).unwrap();
        assert_eq!(s.target(), "postgres@a:5432,b:5433/postgres");
        let err = resolve(&global(&["--host", "a,b,c"]), &env).err().unwrap();
        assert!(
            err.to_string()
                .contains("PGPORT gives 2 ports for 3 host(s)"),
            "{err}"
        );
        assert!(crate::cli::Cli::try_parse_from(["pgsense-pg", "--port", "0", "init"]).is_err());
        assert_eq!(s.target_session_attrs.value, TargetSessionAttrs::ReadWrite);
    }

    #[test]
    fn a_conninfo_in_dbname_is_overridden_by_flags() {
        let uri = "postgresql://loader:s3cret@db1,db2:5433/findings?application_name=x";
        let s = resolve(
            &global(&["--dbname", uri, "--username", "admin"]),
            &PgEnv::default(),
        )
        .unwrap();
        assert_eq!(s.target(), "admin@db1:5432,db2:5433/findings");
        assert_eq!(s.password.unwrap().secret.expose(), "s3cret");
        assert_eq!(s.application_name.value, "x");
        assert_eq!(
            s.dbname.origin.to_string(),
            "dbname in the connection string of --dbname"
        );
        let env = PgEnv {
            host: Some("envhost".into()),
            port: Some("7000".into()),
            ..PgEnv::default()
        };
        let s = resolve(&global(&["--dbname", "dbname=f user=u"]), &env).unwrap();
        assert_eq!(s.target(), "u@envhost:7000/f");
    }

    #[test]
    fn connect_timeout_and_attrs_from_the_environment() {
        let env = PgEnv {
            connect_timeout: Some("3".into()),
            target_session_attrs: Some("any".into()),
            appname: Some("mine".into()),
            ..PgEnv::default()
        };
        let s = resolve(&global(&[]), &env).unwrap();
        assert_eq!(s.connect_timeout.value, Duration::from_secs(3));
        assert_eq!(s.target_session_attrs.value, TargetSessionAttrs::Any);
        assert_eq!(s.application_name.value, "mine");
        let s = resolve(&global(&["--connect-timeout", "5"]), &env).unwrap();
        assert_eq!(s.connect_timeout.value, Duration::from_secs(5));
        let s = resolve(&global(&[]), &PgEnv::default()).unwrap();
        assert_eq!(s.connect_timeout.value, Duration::from_secs(10));
        assert_eq!(s.application_name.value, "pgsense-pg");
        for (timeout, attrs) in [("0", "any"), ("x", "any"), ("3", "standby")] {
            let env = PgEnv {
                connect_timeout: Some(timeout.into()),
                target_session_attrs: Some(attrs.into()),
                ..PgEnv::default()
            };
            assert!(resolve(&global(&[]), &env).is_err(), "{timeout} {attrs}");
        }
    }
}
