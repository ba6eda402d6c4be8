//! Settings: the TOML file's `[alerts.postgres]` (and its `tls` table), the
//! command-line flags and the libpq environment variables resolved into one
//! validated [`Settings`]. This is the one place that owns precedence:
//! flags, then the config file, then the PG* variables, then the defaults
//! of the scanner's PostgreSQL channel ([`source`]), each setting named once
//! ([`setting`]). Passwords come from --password-file, the config file,
//! PGPASSWORD, then libpq's password file ([`password`]). TLS files are read
//! and checked here ([`tls`]), so that a missing or malformed one is a
//! configuration error before anything connects.

mod file;
mod password;
mod pem;
mod pgpass;
mod secret;
pub mod setting;
mod source;
mod tls;

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cli::GlobalArgs;
pub use crate::cli::SslMode;
use file::PostgresSection;
pub use password::Password;
use source::Precedence;
pub use source::Sourced;
pub use tls::{Roots, Tls};

/// Everything needed to reach the findings table; each value remembers the
/// setting it came from.
pub struct Settings {
    pub host: Sourced<String>,
    pub port: Sourced<u16>,
    pub dbname: Sourced<String>,
    pub username: Sourced<String>,
    pub password: Option<Password>,
    pub schema: Sourced<String>,
    pub table: Sourced<String>,
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
        self.host.value.starts_with('/')
    }
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
    let host = Precedence::of(&setting::HOST)
        .flag(args.host.clone())
        .file(host)
        .env(env.host.clone())
        .or_default("localhost".to_owned());
    let port = Precedence::of(&setting::PORT)
        .flag(args.port)
        .file(port)
        .try_env(env.port.clone(), |text, origin| {
            text.parse()
                .with_context(|| format!("{} is not a port number", origin.show_quoted(&text)))
        })?
        .or_default(5432);
    let dbname = Precedence::of(&setting::DBNAME)
        .flag(args.dbname.clone())
        .file(dbname)
        .env(env.dbname.clone())
        .or_default("postgres".to_owned());
    let username = Precedence::of(&setting::USERNAME)
        .flag(args.username.clone())
        .file(username)
        .env(env.user.clone())
        .or_default("postgres".to_owned());
    let schema = identifier(&setting::SCHEMA, &args.schema, schema, "pgsense")?;
    let table = identifier(&setting::TABLE, &args.table, table, "findings")?;

    let target = pgpass::Target {
        host: &host.value,
        port: port.value,
        dbname: &dbname.value,
        user: &username.value,
    };
    let password = password::resolve(args.password_file.as_deref(), password, env, &target)?;
    match &password {
        Some(password) => log::debug!("password from {}", password.origin),
        None => log::debug!("no password set"),
    }
    let tls = tls::resolve(args, tls.unwrap_or_default(), env)?;

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
                s.host.value.as_str(),
                s.port.value,
                s.dbname.value.as_str(),
                s.username.value.as_str()
            ),
            ("localhost", 5432, "postgres", "postgres")
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
        assert_eq!((s.host.value.as_str(), s.port.value), ("flaghost", 6543));
        assert_eq!(
            (s.host.origin, s.port.origin),
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
