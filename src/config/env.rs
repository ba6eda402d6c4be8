//! The libpq environment variables: the ones pgsense-pg honours, read once,
//! and a warning naming each other PG* variable that is set, so that none is
//! ignored silently.

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
    pub service: Option<String>,
    pub servicefile: Option<String>,
    pub sysconfdir: Option<String>,
    pub connect_timeout: Option<String>,
    pub appname: Option<String>,
    pub target_session_attrs: Option<String>,
    pub options: Option<String>,
    /// HOME, for ~/.pgpass and ~/.pg_service.conf.
    pub home: Option<String>,
}

/// Every PG* variable read here (PGSENSE_PG_* are this tool's own).
pub const HONOURED: &[&str] = &[
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
    "PGTARGETSESSIONATTRS",
    "PGOPTIONS",
];

impl PgEnv {
    pub fn from_process() -> PgEnv {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        warn_unused(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()));
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
            service: var("PGSERVICE"),
            servicefile: var("PGSERVICEFILE"),
            sysconfdir: var("PGSYSCONFDIR"),
            connect_timeout: var("PGCONNECT_TIMEOUT"),
            appname: var("PGAPPNAME"),
            target_session_attrs: var("PGTARGETSESSIONATTRS"),
            options: var("PGOPTIONS"),
            home: var("HOME"),
        }
    }
}

/// Warns once about each PG* variable among `names` that is not used.
fn warn_unused(names: impl Iterator<Item = String>) {
    let mut unused: Vec<String> = names.filter(|name| is_unused(name)).collect();
    unused.sort();
    for name in unused {
        log::warn!("{name} is set but pgsense-pg does not use it");
    }
}

fn is_unused(name: &str) -> bool {
    name.starts_with("PG") && !name.starts_with("PGSENSE_PG_") && !HONOURED.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_foreign_pg_variables_are_unused() {
        assert!(is_unused("PGGSSENCMODE"));
        assert!(is_unused("PGDATA"));
        assert!(!is_unused("PGSENSE_PG_CONFIG"));
        assert!(!is_unused("PGAPPNAME"));
        assert!(!is_unused("PATH"));
    }
}
