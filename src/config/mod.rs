//! Settings: the TOML file's `[alerts.postgres]` (and its `tls` table), the
//! command-line flags and the libpq environment variables resolved into one
//! validated [`Settings`]. This is the one place that owns precedence:
//! flags, then the config file, then the PG* variables, then the defaults
//! of the scanner's PostgreSQL channel. Passwords come from --password-file,
//! the config file, PGPASSWORD, then libpq's password file ([`pgpass`]).
//! TLS files are read and checked here, so that a missing or malformed one
//! is a configuration error before anything connects.

mod pem;
mod pgpass;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use native_tls::{Certificate, Identity};
use serde::Deserialize;

use crate::cli::GlobalArgs;
pub use crate::cli::SslMode;

/// Everything needed to reach the findings table.
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub username: String,
    pub password: Option<Password>,
    pub schema: String,
    pub table: String,
    pub tls: Tls,
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

    /// Whether `host` is a Unix socket directory (as libpq, a leading `/`).
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

/// A password and where it came from (for messages; never the value).
pub struct Password {
    pub secret: Secret,
    pub origin: String,
}

/// TLS as resolved: libpq's sslmode and the certificates it uses.
#[derive(Clone)]
pub struct Tls {
    pub mode: SslMode,
    /// Which setting chose the mode, for messages.
    pub mode_origin: &'static str,
    /// What verify-ca and verify-full trust; unused by the other modes.
    pub roots: Roots,
    /// The certificate the client presents, for `cert` authentication.
    pub client: Option<ClientCert>,
}

/// The certificate authorities a verifying mode trusts.
#[derive(Clone)]
pub enum Roots {
    /// The system's trusted roots (the scanner's behaviour, and libpq's
    /// `sslrootcert=system`).
    System,
    /// Only these certificates, as libpq does with `sslrootcert`: a private
    /// CA must not be diluted by every public one.
    Only {
        certificates: Vec<Certificate>,
        origin: String,
    },
}

impl Roots {
    /// Where the trusted roots come from, for messages.
    pub fn origin(&self) -> &str {
        match self {
            Roots::System => "the system's trusted roots",
            Roots::Only { origin, .. } => origin,
        }
    }
}

/// A client certificate with its key, and where they came from.
#[derive(Clone)]
pub struct ClientCert {
    pub identity: Identity,
    pub origin: String,
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self
            .to_possible_value()
            .expect("every sslmode is a possible value");
        f.write_str(value.get_name())
    }
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
#[serde(
    untagged,
    expecting = "password must be a string, or { file = \"PATH\" } with no other key"
)]
enum PasswordSource {
    Inline(String),
    File(PasswordFile),
}

/// `{ file = "PATH" }`; another key next to `file` is a typo, not ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordFile {
    file: PathBuf,
}

/// `[alerts.postgres.tls]`: the scanner's `enabled` and
/// `trusted_root_certs`, and this tool's `mode`, `client_cert` and
/// `client_key`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    enabled: Option<bool>,
    mode: Option<String>,
    trusted_root_certs: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

/// The libpq variables this tool honours as fallbacks.
#[derive(Default)]
pub struct PgEnv {
    pub host: Option<String>,
    pub port: Option<String>,
    pub dbname: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub passfile: Option<String>,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    /// HOME, for ~/.pgpass.
    pub home: Option<String>,
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
            passfile: var("PGPASSFILE"),
            sslmode: var("PGSSLMODE"),
            sslrootcert: var("PGSSLROOTCERT"),
            sslcert: var("PGSSLCERT"),
            sslkey: var("PGSSLKEY"),
            home: var("HOME"),
        }
    }
}

/// Resolves flags, config file and environment into settings.
pub fn resolve(args: &GlobalArgs, env: &PgEnv) -> Result<Settings> {
    let mut file = match &args.config {
        Some(path) => read_config(path)?,
        None => PostgresSection::default(),
    };

    let host = first(
        [args.host.clone(), file.host.take(), env.host.clone()],
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
        [args.dbname.clone(), file.dbname.take(), env.dbname.clone()],
        "postgres",
    );
    let username = first(
        [
            args.username.clone(),
            file.username.take(),
            env.user.clone(),
        ],
        "postgres",
    );
    let schema = first([args.schema.clone(), file.schema.take()], "pgsense");
    let table = first([args.table.clone(), file.table.take()], "findings");
    check_identifier("schema", &schema)?;
    check_identifier("table", &table)?;

    let target = pgpass::Target {
        host: &host,
        port,
        dbname: &dbname,
        user: &username,
    };
    let password = resolve_password(args, file.password.take(), env, &target)?;
    match &password {
        Some(password) => log::debug!("password from {}", password.origin),
        None => log::debug!("no password set"),
    }
    let tls = resolve_tls(args, file.tls.take().unwrap_or_default(), env)?;

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

/// The first password source that is set: --password-file, the config
/// file, PGPASSWORD, then the password file of libpq.
fn resolve_password(
    args: &GlobalArgs,
    in_config: Option<PasswordSource>,
    env: &PgEnv,
    target: &pgpass::Target,
) -> Result<Option<Password>> {
    if let Some(path) = &args.password_file {
        return read_secret(path, "--password-file").map(Some);
    }
    match in_config {
        Some(PasswordSource::File(PasswordFile { file })) => {
            return read_secret(&file, "password = { file } in [alerts.postgres]").map(Some);
        }
        Some(PasswordSource::Inline(text)) => {
            return Ok(Some(Password {
                secret: Secret(text),
                origin: "password in [alerts.postgres]".into(),
            }));
        }
        None => {}
    }
    if let Some(text) = &env.password {
        return Ok(Some(Password {
            secret: Secret(text.clone()),
            origin: "PGPASSWORD".into(),
        }));
    }
    let passfile = match (&env.passfile, &env.home) {
        (Some(path), _) => PathBuf::from(path),
        (None, Some(home)) => Path::new(home).join(".pgpass"),
        (None, None) => return Ok(None),
    };
    Ok(
        pgpass::lookup(&passfile, target).map(|(text, line)| Password {
            secret: Secret(text),
            origin: format!("{}, line {line}", passfile.display()),
        }),
    )
}

/// A PEM value: a file, or (in the config file only) the PEM text itself.
enum Pem {
    Path(PathBuf),
    Text(String),
}

/// A PEM value and the setting it came from.
struct PemSetting {
    pem: Pem,
    origin: String,
}

impl PemSetting {
    fn flag(flag: &str, path: &Path) -> PemSetting {
        PemSetting {
            origin: format!("{flag} {}", path.display()),
            pem: Pem::Path(path.to_owned()),
        }
    }

    fn config(key: &str, value: String) -> PemSetting {
        // The scanner's docs call trusted_root_certs a path and its code
        // reads PEM text: accept both, told apart by the PEM armour.
        if value.contains("-----BEGIN ") {
            PemSetting {
                origin: format!("{key} (inline PEM) in [alerts.postgres.tls]"),
                pem: Pem::Text(value),
            }
        } else {
            PemSetting {
                origin: format!("{key} = {value:?} in [alerts.postgres.tls]"),
                pem: Pem::Path(PathBuf::from(value)),
            }
        }
    }

    fn env(name: &str, value: &str) -> PemSetting {
        PemSetting {
            origin: format!("{name}={value}"),
            pem: Pem::Path(PathBuf::from(value)),
        }
    }

    /// `system` in place of a root certificate file, as libpq spells the
    /// system's trusted roots.
    fn is_system(&self) -> bool {
        matches!(&self.pem, Pem::Path(path) if path.as_os_str() == "system")
    }

    fn read(&self) -> Result<String> {
        match &self.pem {
            Pem::Text(text) => Ok(text.clone()),
            Pem::Path(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", self.origin)),
        }
    }

    /// The file name for the openssl commands of messages.
    fn file_for_commands(&self) -> String {
        match &self.pem {
            Pem::Path(path) => path.display().to_string(),
            Pem::Text(_) => "client.key".into(),
        }
    }
}

/// The first of a flag, a config key and a variable that is set.
fn pick(
    flag: (&str, Option<&PathBuf>),
    config: (&str, Option<String>),
    env: (&str, Option<&String>),
) -> Option<PemSetting> {
    if let Some(path) = flag.1 {
        return Some(PemSetting::flag(flag.0, path));
    }
    if let Some(value) = config.1 {
        return Some(PemSetting::config(config.0, value));
    }
    env.1.map(|value| PemSetting::env(env.0, value))
}

/// `setting` is how the value was written, for the message.
fn parse_sslmode(text: &str, setting: &str) -> Result<SslMode> {
    SslMode::from_str(text, false).map_err(|_| {
        anyhow::anyhow!(
            "{setting} is not an sslmode: use one of disable, allow, prefer, require, \
             verify-ca, verify-full"
        )
    })
}

fn resolve_tls(args: &GlobalArgs, section: TlsSection, env: &PgEnv) -> Result<Tls> {
    let (mode, mode_origin) = if let Some(mode) = args.sslmode {
        (mode, "--sslmode")
    } else if let Some(text) = &section.mode {
        (
            parse_sslmode(text, &format!("mode = {text:?} in [alerts.postgres.tls]"))?,
            "mode in [alerts.postgres.tls]",
        )
    } else if let Some(enabled) = section.enabled {
        // The scanner's meaning of the two values.
        let mode = if enabled {
            SslMode::VerifyFull
        } else {
            SslMode::Prefer
        };
        (mode, "enabled in [alerts.postgres.tls]")
    } else if let Some(text) = &env.sslmode {
        (
            parse_sslmode(text, &format!("PGSSLMODE={text:?}"))?,
            "PGSSLMODE",
        )
    } else {
        (SslMode::Prefer, "the default")
    };
    log::debug!("sslmode {mode} (from {mode_origin})");

    let root = pick(
        ("--sslrootcert", args.sslrootcert.as_ref()),
        ("trusted_root_certs", section.trusted_root_certs),
        ("PGSSLROOTCERT", env.sslrootcert.as_ref()),
    );
    let verifies = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    let roots = match root {
        Some(root) if root.is_system() => Roots::System,
        Some(root) if verifies => read_roots(&root)?,
        Some(root) => {
            // libpq turns require into verify-ca when it finds a root
            // certificate; here require never verifies, so say so.
            let unused = format!(
                "{} is not used: sslmode {mode} (from {mode_origin}) does not verify the \
                 server's certificate; set --sslmode verify-full (or verify-ca) to verify it",
                root.origin
            );
            if mode == SslMode::Require {
                log::warn!("{unused}");
            } else {
                log::info!("{unused}");
            }
            Roots::System
        }
        None => Roots::System,
    };
    if mode == SslMode::VerifyCa && matches!(roots, Roots::System) {
        bail!(
            "sslmode verify-ca (from {mode_origin}) needs the certificate of the CA that signed \
             the server's: set --sslrootcert, trusted_root_certs in [alerts.postgres.tls], or \
             PGSSLROOTCERT. Against the system's roots, which vouch for any public host, only \
             verify-full is safe"
        );
    }

    let cert = pick(
        ("--sslcert", args.sslcert.as_ref()),
        ("client_cert", section.client_cert),
        ("PGSSLCERT", env.sslcert.as_ref()),
    );
    let key = pick(
        ("--sslkey", args.sslkey.as_ref()),
        ("client_key", section.client_key),
        ("PGSSLKEY", env.sslkey.as_ref()),
    );
    let client = match (cert, key) {
        (None, None) => None,
        (Some(cert), None) => bail!(
            "{} is set without its private key: set --sslkey, client_key in \
             [alerts.postgres.tls], or PGSSLKEY",
            cert.origin
        ),
        (None, Some(key)) => bail!(
            "{} is set without its certificate: set --sslcert, client_cert in \
             [alerts.postgres.tls], or PGSSLCERT",
            key.origin
        ),
        (Some(_), Some(_)) if mode == SslMode::Disable => {
            log::info!("the client certificate is not used: sslmode is disable");
            None
        }
        (Some(cert), Some(key)) => Some(read_client_cert(&cert, &key)?),
    };

    Ok(Tls {
        mode,
        mode_origin,
        roots,
        client,
    })
}

fn read_roots(root: &PemSetting) -> Result<Roots> {
    let text = root.read()?;
    let blocks = pem::certificate_blocks(&text);
    if blocks.is_empty() {
        bail!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            root.origin
        );
    }
    let certificates = blocks
        .iter()
        .map(|block| Certificate::from_pem(block.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds a malformed certificate", root.origin))?;
    log::debug!(
        "trusting {} certificate(s) from {}",
        certificates.len(),
        root.origin
    );
    Ok(Roots::Only {
        certificates,
        origin: root.origin.clone(),
    })
}

fn read_client_cert(cert: &PemSetting, key: &PemSetting) -> Result<ClientCert> {
    if let Pem::Path(path) = &key.pem {
        warn_if_readable_by_others(path, &key.origin, 0o077, "group or others");
    }
    let cert_text = cert.read()?;
    if pem::certificate_blocks(&cert_text).is_empty() {
        bail!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert.origin
        );
    }
    let key_text = pem::pkcs8_key(&key.read()?, &key.origin, &key.file_for_commands())?;
    let identity = Identity::from_pkcs8(cert_text.as_bytes(), key_text.as_bytes())
        .with_context(|| format!("cannot use {} with {}", cert.origin, key.origin))?;
    // A key that does not belong to the certificate is only noticed when a
    // connector is built: build one now, so it is a configuration error.
    native_tls::TlsConnector::builder()
        .identity(identity.clone())
        .build()
        .with_context(|| {
            format!(
                "{} does not go with {}: they must be a certificate and its own private key",
                cert.origin, key.origin
            )
        })?;
    Ok(ClientCert {
        identity,
        origin: cert.origin.clone(),
    })
}

/// Warns when a secret file's mode grants any of `bits` (the group and
/// others bits that are too many), naming `who` can read it.
fn warn_if_readable_by_others(path: &Path, origin: &str, bits: u32, who: &str) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & bits != 0 {
        log::warn!(
            "{origin}: {} is readable by {who} (mode {mode:04o}): chmod 600 {}",
            path.display(),
            path.display()
        );
    }
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

fn read_secret(path: &Path, origin: &str) -> Result<Password> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read password file {} ({origin})", path.display()))?;
    warn_if_readable_by_others(path, origin, 0o004, "every user of this machine");
    Ok(Password {
        secret: Secret(text.trim_end().to_owned()),
        origin: format!("{} ({origin})", path.display()),
    })
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
        assert_eq!(s.tls.mode, SslMode::Prefer);
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

    #[test]
    fn sslmode_precedence_flag_then_config_then_env() {
        let dir = Dir::new("sslmode");
        let env = PgEnv {
            sslmode: Some("require".into()),
            ..no_env()
        };
        let mode = |config: &str, args: &[&str], env: &PgEnv| {
            let s = with_config(&dir, &format!("[alerts.postgres]\n{config}"), args, env).unwrap();
            (s.tls.mode, s.tls.mode_origin)
        };
        assert_eq!(mode("", &[], &no_env()), (SslMode::Prefer, "the default"));
        assert_eq!(mode("", &[], &env), (SslMode::Require, "PGSSLMODE"));
        let enabled = "[alerts.postgres.tls]\nenabled = true";
        assert_eq!(mode(enabled, &[], &env).0, SslMode::VerifyFull);
        let disabled = "[alerts.postgres.tls]\nenabled = false";
        assert_eq!(mode(disabled, &[], &env).0, SslMode::Prefer);
        // mode overrides enabled; the flag overrides both.
        let both = "[alerts.postgres.tls]\nenabled = true\nmode = \"disable\"";
        assert_eq!(mode(both, &[], &env).0, SslMode::Disable);
        assert_eq!(
            mode(both, &["--sslmode", "allow"], &env),
            (SslMode::Allow, "--sslmode")
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
