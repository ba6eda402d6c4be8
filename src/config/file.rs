//! The config file: the scanner's TOML, of which only `[alerts.postgres]`
//! (and its `tls` table) concerns this tool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

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
pub struct PostgresSection {
    #[allow(dead_code, reason = "the scanner's channel name; accepted, not used")]
    name: Option<String>,
    pub host: Option<String>,
    pub port: Option<PortValue>,
    pub dbname: Option<String>,
    pub username: Option<String>,
    pub password: Option<PasswordSource>,
    pub schema: Option<String>,
    pub table: Option<String>,
    pub tls: Option<TlsSection>,
}

/// `port = 5432`, or libpq's list as a string: `port = "5432,5433"`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "port must be a number, or a string of comma-separated numbers"
)]
pub enum PortValue {
    Number(i64),
    Text(String),
}

#[derive(Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "password must be a string, or { file = \"PATH\" } with no other key"
)]
pub enum PasswordSource {
    Inline(String),
    File(PasswordFile),
}

/// `{ file = "PATH" }`; another key next to `file` is a typo, not ignored.
/// Read from a table only: serde's derive would also take an array, and
/// `password = ["..."]` would then be a path, printed when it cannot be read.
#[derive(Clone, Deserialize)]
#[serde(try_from = "BTreeMap<String, PathBuf>")]
pub struct PasswordFile {
    pub file: PathBuf,
}

impl TryFrom<BTreeMap<String, PathBuf>> for PasswordFile {
    type Error = &'static str;

    fn try_from(mut table: BTreeMap<String, PathBuf>) -> Result<Self, Self::Error> {
        match table.remove("file") {
            Some(file) if table.is_empty() => Ok(PasswordFile { file }),
            _ => Err("a password file is { file = \"PATH\" }, with no other key"),
        }
    }
}

/// `[alerts.postgres.tls]`: the scanner's `enabled` and
/// `trusted_root_certs`, and this tool's `mode`, `client_cert` and
/// `client_key`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub enabled: Option<bool>,
    pub mode: Option<String>,
    pub trusted_root_certs: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

/// `[alerts.postgres]` of the file at `path`.
pub fn read(path: &Path) -> Result<PostgresSection> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let parsed: ConfigFile = toml::from_str(&text).map_err(|err| {
        // The error's own Display quotes the offending line, which may be the
        // password line: give the message and the line number only.
        let line = err
            .span()
            .map(|span| text[..span.start].matches('\n').count() + 1);
        let message = err.message().trim_end();
        let message = match err.span().filter(|_| message == "duplicate key") {
            Some(span) => duplicate(&text, span),
            None => readable(message, &text, err.span()),
        };
        match line {
            Some(line) => anyhow::anyhow!("{}:{line}: {message}", path.display()),
            None => anyhow::anyhow!("{}: {message}", path.display()),
        }
    })?;
    match parsed.alerts.and_then(|a| a.postgres) {
        Some(section) => {
            if let Some(PasswordSource::Inline(_)) = section.password {
                super::secret::warn_if_inline_password_readable(
                    "config file",
                    path,
                    "[alerts.postgres]",
                );
            }
            Ok(section)
        }
        None => bail!(
            "{} has no [alerts.postgres] section: add one (see `man pgsense-pg`), \
             or leave out --config to use flags and PG* variables",
            path.display()
        ),
    }
}

/// toml's message in the file's terms: a section written as an array of
/// tables (`[[alerts.postgres]]`, which serde would take field by field),
/// and the tables named as the file names them, not as the code does.
fn readable(message: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let header = span.and_then(|span| {
        let start = text[..span.start].rfind('\n').map_or(0, |at| at + 1);
        text[start..].lines().next().map(str::trim)
    });
    if let Some(header) = header.filter(|line| {
        line.starts_with("[[") && line.ends_with("]]") && message.starts_with("invalid type")
    }) {
        let table = header.trim_start_matches('[').trim_end_matches(']');
        return format!("{header} is an array of tables: write [{table}], with single brackets");
    }
    message
        .replace("struct PostgresSection", "a table: [alerts.postgres]")
        .replace("struct TlsSection", "a table: [alerts.postgres.tls]")
        .replace("struct Alerts", "a table: [alerts]")
}

/// What toml's "duplicate key" at `span` is: a section given twice
/// (`[alerts.postgres]` twice), or a key given twice in one section. Only
/// a header or a bare key is quoted, never a value: it may be a password.
fn duplicate(text: &str, span: std::ops::Range<usize>) -> String {
    let start = text[..span.start].rfind('\n').map_or(0, |at| at + 1);
    let end = text[start..].find('\n').map_or(text.len(), |at| start + at);
    let line = text[start..end]
        .split('#')
        .next()
        .unwrap_or_default()
        .trim();
    if line.starts_with('[') && line.ends_with(']') {
        return format!(
            "duplicate section {line}: the section is given twice; merge its keys into one \
             {line}"
        );
    }
    let key = text.get(span).unwrap_or_default().trim();
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        format!("duplicate key `{key}`: the key is given twice in its section; keep one")
    } else {
        "duplicate key: a key is given twice in its section; keep one".to_owned()
    }
}
