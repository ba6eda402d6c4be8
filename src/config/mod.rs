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
pub use password::Passwords;
pub(crate) use source::Origin;
pub use source::Sourced;
use source::{Params, Precedence, Whole};
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
    /// For each host, in the order of [`Settings::endpoints`].
    pub password: Passwords,
    pub schema: Sourced<String>,
    pub table: Sourced<String>,
    pub tls: Tls,
    /// For each host in turn.
    pub connect_timeout: Sourced<Duration>,
    pub application_name: Sourced<String>,
    pub target_session_attrs: Sourced<TargetSessionAttrs>,
    /// Server options sent at startup (PGOPTIONS), when set.
    pub options: Option<Sourced<String>>,
    /// How long one statement may go unanswered (--stall-timeout).
    pub stall_timeout: Duration,
}

/// `host:port` for messages, an IPv6 address in brackets (`[::1]:5432`).
pub fn endpoint(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
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
            .map(|(host, port)| endpoint(host, port))
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
    let dbname = given(dbname);
    let parts = Parts::gather(args, dbname.as_ref(), env)?;
    warn_of_passwords_in(&parts, args.config.as_deref());
    let hosts = hosts(&parts, args.host.clone(), host, env);
    let ports = ports(&parts, args.port.clone(), port, env)?;
    check_counts(&hosts, &ports)?;
    let (dbname, username) = database_and_user(args, &parts, env, dbname, given(username));
    if dbname.origin == Origin::Env("PGDATABASE") && conninfo::is_conninfo(&dbname.value) {
        // Its text is not shown: it may hold a password.
        bail!(
            "PGDATABASE holds a connection string, but it is a database name only (as in \
             libpq, which does not read a connection string there): pass the connection \
             string with --dbname or the config file's dbname, and keep a password out of it"
        );
    }
    let schema = identifier(&setting::SCHEMA, &args.schema, schema, "pgsense")?;
    check_not_system(&schema)?;
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
    match password.origin() {
        Some(origin) => log::debug!("password from {origin}"),
        None => log::debug!("no password set"),
    }
    let tls = tls::resolve(args, tls.unwrap_or_default(), &parts, env, over_tcp(&hosts))?;
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
        stall_timeout: Duration::from_secs(args.stall_timeout),
    })
}

/// Warns of a password in the connection string of --dbname, which every
/// user of the machine can read in the process list, and in that of the
/// config file's dbname when others can read the file.
fn warn_of_passwords_in(parts: &Parts, config: Option<&std::path::Path>) {
    if parts
        .flag
        .as_ref()
        .is_some_and(|p| p.get("password").is_some())
    {
        log::warn!(
            "the connection string of --dbname holds a password: every user of this machine \
             can read it in the process list (ps) while the run lasts; keep it in a password \
             file (--password-file, PGPASSFILE or ~/.pgpass) or the config file instead"
        );
    }
    if let (Some(path), Some(_)) = (config, parts.file.as_ref().and_then(|p| p.get("password"))) {
        secret::warn_if_inline_password_readable(
            "config file",
            path,
            "the connection string of dbname in [alerts.postgres]",
        );
    }
}

/// An empty value is no value, as libpq takes it: the next source, or the
/// default, applies.
fn given(text: Option<String>) -> Option<String> {
    text.filter(|text| !text.is_empty())
}

/// The database and the user, from the flags, the config file's `dbname`
/// and `username`, the connection strings and service, and PG* variables.
fn database_and_user(
    args: &GlobalArgs,
    parts: &Parts,
    env: &PgEnv,
    dbname: Option<String>,
    username: Option<String>,
) -> (Sourced<String>, Sourced<String>) {
    let plain = |text: Option<String>| given(text).filter(|text| !conninfo::is_conninfo(text));
    let dbname = parts
        .text(
            Precedence::of(&setting::DBNAME),
            plain(args.dbname.clone()),
            plain(dbname),
            |v| v,
        )
        .env(given(env.dbname.clone()))
        .or_default("postgres".to_owned());
    let username = parts
        .text(
            Precedence::of(&setting::USERNAME),
            given(args.username.clone()),
            username,
            |v| v,
        )
        .env(given(env.user.clone()))
        .or_default("postgres".to_owned());
    (empty_is_default(dbname), empty_is_default(username))
}

/// An empty user or dbname of a connection string or service is the
/// default, as libpq takes it for its own default (which is the OS user
/// there), without looking at PGUSER or PGDATABASE: the keyword was
/// given.
fn empty_is_default(chosen: Sourced<String>) -> Sourced<String> {
    if chosen.value.is_empty() {
        Sourced {
            value: "postgres".to_owned(),
            origin: Origin::Default,
        }
    } else {
        chosen
    }
}

/// Whether a host is reached over TCP: a host that is a directory is a
/// Unix socket, where TLS does not apply.
fn over_tcp(hosts: &Sourced<Vec<String>>) -> bool {
    hosts.value.iter().any(|host| !host.starts_with('/'))
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

/// A schema of the system's own: `pg_` names are reserved (pg_catalog,
/// pg_toast), and information_schema is left out of pg_dump's backups.
fn check_not_system(schema: &Sourced<String>) -> Result<()> {
    let name = schema.value.to_ascii_lowercase();
    if name.starts_with("pg_") || name == "information_schema" {
        bail!(
            "{} is a schema of the system's own (pg_ names are reserved, and \
             information_schema is left out of backups): name a schema of your own",
            schema.origin.show_quoted(&schema.value)
        );
    }
    Ok(())
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
mod tests;
