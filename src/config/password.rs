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
pub struct Password {
    pub secret: Secret,
    pub origin: String,
}

/// The first password source that is set, or `None`.
pub fn resolve(
    flag: Option<&Path>,
    in_config: Option<PasswordSource>,
    parts: &Parts,
    env: &PgEnv,
    targets: &[pgpass::Target],
) -> Result<Option<Password>> {
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
                return Ok(Some(password));
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
        }) => Ok(Some(Password {
            secret: Secret::new(text),
            origin: origin.to_string(),
        })),
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
/// PGPASSFILE, else ~/.pgpass. libpq looks a password up for each host as
/// it tries it; here one password serves every host, so it is the line that
/// matches the first host that has one.
fn from_passfile(parts: &Parts, env: &PgEnv, targets: &[pgpass::Target]) -> Option<Password> {
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
        (None, None) => return None,
    };
    pgpass::lookup(&passfile, targets).map(|(text, line)| Password {
        secret: Secret::new(text),
        origin: format!("{}, line {line}", passfile.display()),
    })
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
