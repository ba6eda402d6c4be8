//! The password: the first source that is set, --password-file, the config
//! file (inline or `{ file = ... }`), PGPASSWORD, then libpq's password
//! file ([`pgpass`](super::pgpass)).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::file::{PasswordFile, PasswordSource};
use super::pgpass;
use super::secret::{Secret, warn_if_readable_by_others};
use super::setting;
use super::source::{Origin, Precedence, Sourced};
use super::{Parts, PgEnv};

/// A password and where it came from (for messages; never the value).
#[derive(Clone)]
pub struct Password {
    pub secret: Secret,
    pub origin: String,
}

/// The password for each host, in the order they are tried: the first
/// source's that is set for all of them, or, from libpq's password file,
/// each host's own line (libpq looks one up for each host it tries, so a
/// host the file leaves out is sent none).
pub struct Passwords(Vec<Option<Password>>);

impl Passwords {
    pub fn for_host(&self, index: usize) -> Option<&Password> {
        self.0.get(index).and_then(Option::as_ref)
    }

    /// Where the passwords came from, for messages: each source once, in
    /// the order of the hosts; None when no host has one.
    pub fn origin(&self) -> Option<String> {
        let mut origins: Vec<&str> = Vec::new();
        for password in self.0.iter().flatten() {
            if !origins.contains(&password.origin.as_str()) {
                origins.push(&password.origin);
            }
        }
        (!origins.is_empty()).then(|| origins.join(" or "))
    }

    fn same_for(password: Option<Password>, targets: &[pgpass::Target]) -> Passwords {
        Passwords(targets.iter().map(|_| password.clone()).collect())
    }
}

/// The first password source that is set, for every host; else each
/// host's line of the password file.
pub fn resolve(
    flag: Option<&Path>,
    in_config: Option<PasswordSource>,
    parts: &Parts,
    env: &PgEnv,
    targets: &[pgpass::Target],
) -> Result<Passwords> {
    // An empty password in the config file is none: the next source
    // applies. (From a source after it, the password file is read.)
    let in_config =
        in_config.filter(|p| !matches!(p, PasswordSource::Inline(text) if text.is_empty()));
    let chosen = parts
        .text(
            Precedence::of(&setting::PASSWORD),
            flag.map(|file| PasswordSource::File(PasswordFile { file: file.into() })),
            in_config.clone(),
            PasswordSource::Inline,
        )
        .env(env.password.clone().map(PasswordSource::Inline))
        .get();
    match chosen {
        Some(Sourced {
            value: PasswordSource::File(PasswordFile { file }),
            origin,
        }) => {
            let password = read_secret(&file, &file_origin(origin))?;
            if !password.secret.expose().is_empty() {
                return Ok(Passwords::same_for(Some(password), targets));
            }
            // An empty file is no password either: the next source applies.
            log::warn!(
                "password file {} is empty: taken as no password",
                password.origin
            );
            match origin {
                Origin::Flag(_) => resolve(None, in_config, parts, env, targets),
                _ => resolve(flag, None, parts, env, targets),
            }
        }
        // An empty password is none, as libpq takes it: the password file
        // is read.
        Some(Sourced {
            value: PasswordSource::Inline(text),
            ..
        }) if text.is_empty() => Ok(from_passfile(parts, env, targets)),
        Some(Sourced {
            value: PasswordSource::Inline(text),
            origin,
        }) => Ok(Passwords::same_for(
            Some(Password {
                secret: Secret::new(text),
                origin: origin.to_string(),
            }),
            targets,
        )),
        None => Ok(from_passfile(parts, env, targets)),
    }
}

/// "password = { file } in [alerts.postgres]" rather than the key alone: the
/// value is a file's name, not the password.
fn file_origin(origin: Origin) -> String {
    match origin {
        Origin::File { key, section } => format!("{key} = {{ file }} in {section}"),
        other => other.to_string(),
    }
}

/// libpq's last resort: passfile (in a connection string or service), else
/// PGPASSFILE, else ~/.pgpass; each host's own line.
fn from_passfile(parts: &Parts, env: &PgEnv, targets: &[pgpass::Target]) -> Passwords {
    let named = parts
        .text(
            Precedence::of(&setting::PASSFILE_SETTING),
            None,
            None,
            |v| v,
        )
        .env(env.passfile.clone())
        .get();
    let passfile = match (named, &env.home) {
        (Some(path), _) => PathBuf::from(path.value),
        (None, Some(home)) => Path::new(home).join(".pgpass"),
        (None, None) => return Passwords::same_for(None, targets),
    };
    let found = pgpass::lookup(&passfile, targets).into_iter().map(|found| {
        found.map(|(text, line)| Password {
            secret: Secret::new(text),
            origin: format!("{}, line {line}", passfile.display()),
        })
    });
    Passwords(found.collect())
}

fn read_secret(path: &Path, origin: &str) -> Result<Password> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read password file {} ({origin})", path.display()))?;
    warn_if_readable_by_others(path, origin, 0o004, "every user of this machine");
    Ok(Password {
        secret: Secret::new(text.trim_end().to_owned()),
        origin: format!("{} ({origin})", path.display()),
    })
}
