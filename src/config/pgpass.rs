//! libpq's password file (PGPASSFILE, or ~/.pgpass): the last password
//! source, used when neither a flag, the config file nor PGPASSWORD gives
//! one. Same format and rules as libpq: `host:port:database:user:password`
//! lines, `*` matching anything in the first four fields, `\:` and `\\`
//! escapes, `#` comments, the first matching line wins, and a file that
//! group or others can read is ignored with a warning.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What a line must match.
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// For each of `targets`, the password of the first line of `path` that
/// matches it, with that line's number, as libpq looks one up for each
/// host; None for a target no line matches, and for all of them when the
/// file is missing or unusable (with one warning saying why).
pub fn lookup(path: &Path, targets: &[Target]) -> Vec<Option<(String, usize)>> {
    let Some(text) = read(path) else {
        return targets.iter().map(|_| None).collect();
    };
    let shown = path.display();
    targets
        .iter()
        .map(|target| {
            let found = find(&text, target);
            if found.is_none() {
                log::debug!("no line of {shown} matches {}", describe(target));
            }
            found
        })
        .collect()
}

/// The file's text, when it is there and usable: a plain file that only
/// its owner may read.
fn read(path: &Path) -> Option<String> {
    let shown = path.display();
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == ErrorKind::NotFound => return None,
        Err(err) => {
            log::warn!("password file {shown} ignored: {err}");
            return None;
        }
    };
    if !metadata.is_file() {
        log::warn!("password file {shown} ignored: it is not a plain file");
        return None;
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!(
            "password file {shown} ignored: it has group or world access (mode {mode:04o}); \
             permissions should be u=rw (0600) or less: chmod 600 {shown}"
        );
        return None;
    }
    match std::fs::read(path) {
        Ok(bytes) => Some(utf8_lines(&bytes, &shown.to_string())),
        Err(err) => {
            log::warn!("password file {shown} ignored: {err}");
            None
        }
    }
}

/// The file's lines that are UTF-8, each in its place: a line that is not
/// is left empty, with a warning, and the others still count (libpq reads
/// bytes; a password here is text).
fn utf8_lines(bytes: &[u8], shown: &str) -> String {
    let mut text = String::with_capacity(bytes.len());
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        match std::str::from_utf8(line) {
            Ok(line) => text.push_str(line),
            Err(_) => log::warn!(
                "password file {shown}: line {} is not UTF-8: skipped",
                index + 1
            ),
        }
        text.push('\n');
    }
    text
}

fn describe(target: &Target) -> String {
    format!(
        "{}:{}:{}:{}",
        target.host, target.port, target.dbname, target.user
    )
}

/// The first matching line's password and number.
fn find(text: &str, target: &Target) -> Option<(String, usize)> {
    let host = pgpass_host(target.host);
    let port = target.port.to_string();
    let wanted = [host, &port, target.dbname, target.user];
    text.lines().enumerate().find_map(|(index, line)| {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let fields = split(line);
        if fields.len() < 5 {
            return None;
        }
        let matches = fields
            .iter()
            .zip(wanted)
            .all(|(field, want)| field.wildcard || field.value == want);
        matches.then(|| (fields[4].value.clone(), index + 1))
    })
}

/// libpq compares a Unix socket directory with the host field as it is,
/// except the default directory, which counts as `localhost`. The default
/// is built into each libpq; these are the usual ones.
fn pgpass_host(host: &str) -> &str {
    match host.trim_end_matches('/') {
        "/var/run/postgresql" | "/run/postgresql" | "/tmp" => "localhost",
        _ => host,
    }
}

struct Field {
    value: String,
    /// The field was exactly `*` (an escaped `\*` is a literal star).
    wildcard: bool,
}

/// Splits a line at unescaped colons, removing the escapes. A backslash
/// escapes any next character; a backslash at the very end stays as is.
fn split(line: &str) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut value = String::new();
    let mut raw_len = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => {
                fields.push(Field {
                    wildcard: raw_len == 1 && value == "*",
                    value: std::mem::take(&mut value),
                });
                raw_len = 0;
            }
            '\\' => match chars.next() {
                Some(escaped) => {
                    value.push(escaped);
                    raw_len += 2;
                }
                None => {
                    value.push('\\');
                    raw_len += 1;
                }
            },
            other => {
                value.push(other);
                raw_len += 1;
            }
        }
    }
    fields.push(Field {
        wildcard: raw_len == 1 && value == "*",
        value,
    });
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target<'static> {
        Target {
            host: "db.internal",
            port: 5432,
            dbname: "findings",
            user: "loader",
        }
    }

    #[test]
    fn first_matching_line_wins() {
        let text = "# comment\n\
                    \n\
                    other:5432:findings:loader:no\n\
                    db.internal:5433:findings:loader:no\n\
                    db.internal:5432:*:loader:first\n\
                    *:*:*:*:second\n";
        assert_eq!(find(text, &target()), Some(("first".into(), 5)));
        let text = "*:*:*:*:any\r\n";
        assert_eq!(find(text, &target()), Some(("any".into(), 1)));
        assert_eq!(find("db.internal:5432:findings:loader\n", &target()), None);
        assert_eq!(find("", &target()), None);
        // A line that is not UTF-8 is skipped, and only it.
        let text = utf8_lines(
            b"db.internal:5432:findings:loader:\xff\nother:1:x:y:z\n*:*:*:*:after\n",
            "pgpass",
        );
        assert_eq!(find(&text, &target()), Some(("after".into(), 3)));
    }

    #[test]
    fn escapes_and_literal_stars() {
        let text = "db.internal:5432:findings:loader:pa\\:ss\\\\word:ignored\n";
        assert_eq!(find(text, &target()), Some(("pa:ss\\word".into(), 1)));
        // An escaped star is a star, not a wildcard.
        assert_eq!(find("\\*:*:*:*:x\n", &target()), None);
        let star = Target {
            host: "*",
            ..target()
        };
        assert_eq!(find("\\*:*:*:*:x\n", &star), Some(("x".into(), 1)));
        // A field with a colon in it.
        let odd = Target {
            dbname: "a:b",
            ..target()
        };
        assert_eq!(find("*:*:a\\:b:*:y\n", &odd), Some(("y".into(), 1)));
        // A trailing backslash is kept.
        assert_eq!(find("*:*:*:*:z\\\n", &target()), Some(("z\\".into(), 1)));
        // An empty password field is a (wrong, but given) password.
        assert_eq!(find("*:*:*:*:\n", &target()), Some((String::new(), 1)));
    }

    #[test]
    fn default_socket_directory_counts_as_localhost() {
        let socket = Target {
            host: "/var/run/postgresql",
            ..target()
        };
        assert_eq!(
            find("localhost:5432:*:*:s\n", &socket),
            Some(("s".into(), 1))
        );
        let private = Target {
            host: "/srv/pg",
            ..target()
        };
        assert_eq!(find("localhost:5432:*:*:s\n", &private), None);
        assert_eq!(
            find("/srv/pg:5432:*:*:t\n", &private),
            Some(("t".into(), 1))
        );
    }
}
