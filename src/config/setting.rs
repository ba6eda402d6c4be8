//! The one table of each setting's names: its flag, its key in the config
//! file and its libpq variable. Every origin in a message ("from
//! PGSSLMODE") and every piece of advice ("set --sslkey, client_key in
//! [alerts.postgres.tls], or PGSSLKEY") is written from it.

use std::fmt;

/// The config-file table a key belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Postgres,
    Tls,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Postgres => "[alerts.postgres]",
            Section::Tls => "[alerts.postgres.tls]",
        })
    }
}

/// The names of one setting.
#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    /// The command-line flag, with its dashes.
    pub flag: &'static str,
    /// The key in the config file, within `section`.
    pub key: &'static str,
    pub section: Section,
    /// The libpq variable, for the settings libpq has one for.
    pub env: Option<&'static str>,
    /// libpq's keyword for it in a connection string or service file.
    pub keyword: Option<&'static str>,
}

const fn setting(
    flag: &'static str,
    key: &'static str,
    section: Section,
    env: Option<&'static str>,
    keyword: Option<&'static str>,
) -> Setting {
    Setting {
        flag,
        key,
        section,
        env,
        keyword,
    }
}

/// A libpq parameter that has neither a flag nor a config key here: only a
/// connection string, a service or the variable set it.
const fn libpq_only(env: &'static str, keyword: &'static str) -> Setting {
    setting("", "", Postgres, Some(env), Some(keyword))
}

use Section::{Postgres, Tls};

pub const HOST: Setting = setting("--host", "host", Postgres, Some("PGHOST"), Some("host"));
pub const PORT: Setting = setting("--port", "port", Postgres, Some("PGPORT"), Some("port"));
pub const DBNAME: Setting = setting(
    "--dbname",
    "dbname",
    Postgres,
    Some("PGDATABASE"),
    Some("dbname"),
);
pub const USERNAME: Setting = setting(
    "--username",
    "username",
    Postgres,
    Some("PGUSER"),
    Some("user"),
);
pub const PASSWORD: Setting = setting(
    "--password-file",
    "password",
    Postgres,
    Some("PGPASSWORD"),
    Some("password"),
);
pub const SCHEMA: Setting = setting("--schema", "schema", Postgres, None, None);
pub const TABLE: Setting = setting("--table", "table", Postgres, None, None);
/// `enabled` in the same table is the scanner's older spelling of `mode`.
pub const SSLMODE: Setting = setting("--sslmode", "mode", Tls, Some("PGSSLMODE"), Some("sslmode"));
pub const SSLROOTCERT: Setting = setting(
    "--sslrootcert",
    "trusted_root_certs",
    Tls,
    Some("PGSSLROOTCERT"),
    Some("sslrootcert"),
);
pub const SSLCERT: Setting = setting(
    "--sslcert",
    "client_cert",
    Tls,
    Some("PGSSLCERT"),
    Some("sslcert"),
);
pub const SSLKEY: Setting = setting(
    "--sslkey",
    "client_key",
    Tls,
    Some("PGSSLKEY"),
    Some("sslkey"),
);
/// No config key: the scanner's file has none, and a timeout is a property
/// of the machine that runs the loader.
pub const CONNECT_TIMEOUT: Setting = setting(
    "--connect-timeout",
    "",
    Postgres,
    Some("PGCONNECT_TIMEOUT"),
    Some("connect_timeout"),
);
pub const APPLICATION_NAME: Setting = libpq_only("PGAPPNAME", "application_name");
pub const TARGET_SESSION_ATTRS: Setting =
    libpq_only("PGTARGETSESSIONATTRS", "target_session_attrs");
pub const OPTIONS: Setting = libpq_only("PGOPTIONS", "options");
pub const PASSFILE_SETTING: Setting = libpq_only("PGPASSFILE", "passfile");
/// No config key: a service is the config file's alternative.
pub const SERVICE: Setting = setting(
    "--service",
    "",
    Postgres,
    Some("PGSERVICE"),
    Some("service"),
);

/// Every setting, for tests that hold the table to the flags.
#[cfg(test)]
pub const ALL: [&Setting; 11] = [
    &HOST,
    &PORT,
    &DBNAME,
    &USERNAME,
    &PASSWORD,
    &SCHEMA,
    &TABLE,
    &SSLMODE,
    &SSLROOTCERT,
    &SSLCERT,
    &SSLKEY,
];

/// The last password source, after the three of [`PASSWORD`].
pub const PASSFILE: &str = "a line in ~/.pgpass (or the file PGPASSFILE names)";

impl Setting {
    /// `key in [section]`.
    pub fn key_in_section(&self) -> String {
        format!("{} in {}", self.key, self.section)
    }

    /// The ways to set it, flag first.
    pub fn ways(&self) -> Vec<String> {
        let mut ways = Vec::new();
        if !self.flag.is_empty() {
            ways.push(self.flag.to_owned());
        }
        if !self.key.is_empty() {
            ways.push(self.key_in_section());
        }
        ways.extend(self.env.map(str::to_owned));
        ways
    }

    /// "--sslkey, client_key in [alerts.postgres.tls], or PGSSLKEY".
    pub fn one_of(&self) -> String {
        one_of(&self.ways())
    }

    /// "--sslrootcert (or trusted_root_certs in [alerts.postgres.tls], or
    /// PGSSLROOTCERT)": the flag, the others in parentheses.
    pub fn flag_or_others(&self) -> String {
        let ways = self.ways();
        format!("{} (or {})", ways[0], ways[1..].join(", or "))
    }
}

/// Two settings that go together: "--sslcert and --sslkey (client_cert and
/// client_key in [alerts.postgres.tls], or PGSSLCERT and PGSSLKEY)".
pub fn both(first: &Setting, second: &Setting) -> String {
    debug_assert_eq!(first.section, second.section);
    let mut text = format!(
        "{} and {} ({} and {} in {}",
        first.flag, second.flag, first.key, second.key, first.section
    );
    if let (Some(first), Some(second)) = (first.env, second.env) {
        text.push_str(&format!(", or {first} and {second}"));
    }
    text.push(')');
    text
}

/// "a", "a or b", "a, b, or c".
pub fn one_of(ways: &[String]) -> String {
    match ways {
        [] => String::new(),
        [only] => only.clone(),
        [first, second] => format!("{first} or {second}"),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_is_a_flag_of_the_cli() {
        let command = crate::cli::Cli::command();
        for setting in ALL {
            let long = setting.flag.trim_start_matches("--");
            assert!(
                command
                    .get_arguments()
                    .any(|arg| arg.get_long() == Some(long)),
                "{} is not a flag",
                setting.flag
            );
        }
    }

    #[test]
    fn advice_is_written_from_the_table() {
        assert_eq!(
            SSLKEY.one_of(),
            "--sslkey, client_key in [alerts.postgres.tls], or PGSSLKEY"
        );
        assert_eq!(
            SSLROOTCERT.flag_or_others(),
            "--sslrootcert (or trusted_root_certs in [alerts.postgres.tls], or PGSSLROOTCERT)"
        );
        assert_eq!(
            both(&SSLCERT, &SSLKEY),
            "--sslcert and --sslkey (client_cert and client_key in [alerts.postgres.tls], or \
             PGSSLCERT and PGSSLKEY)"
        );
        assert_eq!(SCHEMA.one_of(), "--schema or schema in [alerts.postgres]");
    }
}
