//! One NDJSON line -> a validated [`Finding`], or the reason it is rejected.
//!
//! Parsing borrows from the line wherever the JSON text needs no unescaping,
//! so a typical line costs no allocation. Every check that PostgreSQL would
//! otherwise make later (NUL characters, BIGINT range, timestamp syntax) is
//! made here, so that a bad line is named with its own reason instead of
//! failing a whole batch on the server.

mod deserialize;
mod integer;
mod scan;
mod timestamp;

use std::borrow::Cow;
use std::fmt;

use serde::de;

use crate::table;
pub use integer::integer_at;
pub use scan::{place, plain_len, usual_key_at, usual_next};
pub use timestamp::micros as timestamp_micros;

/// A finding ready to be written: every field validated.
#[derive(Debug, PartialEq)]
pub struct Finding<'a> {
    pub database: Cow<'a, str>,
    pub rule_id: Cow<'a, str>,
    pub description: Cow<'a, str>,
    pub category: Cow<'a, str>,
    pub severity: Severity,
    pub schema_name: Cow<'a, str>,
    pub table_name: Cow<'a, str>,
    pub column_name: Cow<'a, str>,
    pub masked_sample: Cow<'a, str>,
    /// Column name to value; empty when the scanner wrote none.
    pub primary_key: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The commit LSN, within BIGINT range.
    pub lsn: i64,
    /// In microseconds since 2000-01-01 UTC, as `timestamptz` holds it;
    /// `None` lets the column default apply.
    pub detected_at: Option<i64>,
}

/// The severities the scanner writes; stored upper-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::High => "HIGH",
            Severity::Medium => "MEDIUM",
            Severity::Low => "LOW",
            Severity::Info => "INFO",
        }
    }

    pub fn parse(text: &[u8]) -> Option<Severity> {
        // The scanner writes them in capitals.
        match text {
            b"CRITICAL" => Some(Severity::Critical),
            b"HIGH" => Some(Severity::High),
            b"MEDIUM" => Some(Severity::Medium),
            b"LOW" => Some(Severity::Low),
            b"INFO" => Some(Severity::Info),
            _ => Severity::ALL
                .into_iter()
                .find(|s| s.as_str().as_bytes().eq_ignore_ascii_case(text)),
        }
    }
}

/// Why a line was rejected; the text is what the user sees after FILE:LINE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectReason(pub String);

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl RejectReason {
    fn new(text: impl Into<String>) -> Self {
        RejectReason(text.into())
    }
}

/// Parses one line (without its line terminator) into a finding.
pub fn parse_line(line: &[u8]) -> Result<Finding<'_>, RejectReason> {
    let text = std::str::from_utf8(line).map_err(|e| {
        let utf16 = match line.starts_with(&[0xff, 0xfe]) || line.starts_with(&[0xfe, 0xff]) {
            true => {
                " (it starts with UTF-16's byte order mark: the file is UTF-16; convert it \
                 first, e.g. iconv -f UTF-16 -t UTF-8)"
            }
            false => "",
        };
        RejectReason::new(format!(
            "invalid UTF-8 at byte {} of the line{utf16}",
            e.valid_up_to() + 1
        ))
    })?;
    let mut raw = RawFinding::default();
    if !scan::scan(text, &mut raw) {
        raw = parse_unusual(text)?;
    }
    raw.validate()
}

/// The serde path, for lines of an unusual shape and for the reasons a line
/// is invalid.
fn parse_unusual(text: &str) -> Result<RawFinding<'_>, RejectReason> {
    // serde_json takes a control character in an object's key as it is
    // (an unknown field's, so that the line loaded); JSON does not.
    if let Some(at) = control_in_string(text.as_bytes()) {
        return Err(RejectReason::new(format!(
            "invalid JSON: control character (\\u0000-\\u001F) found while parsing a string \
             at column {}",
            at + 1
        )));
    }
    serde_json::from_str(text).map_err(|err| {
        // A syntax error inside a field's value comes back labelled with the
        // field, as a data error; the plain parse tells the two apart.
        match serde_json::from_str::<de::IgnoredAny>(text) {
            Err(syntax) => json_reason(syntax),
            Ok(_) => json_reason(err),
        }
    })
}

/// Where the first control character inside a string (a key or a value)
/// of `bytes` is, if any.
fn control_in_string(bytes: &[u8]) -> Option<usize> {
    let (mut in_string, mut escaped) = (false, false);
    for (at, &byte) in bytes.iter().enumerate() {
        if !in_string {
            in_string = byte == b'"';
        } else if escaped {
            escaped = false;
        } else if byte < 0x20 {
            return Some(at);
        } else {
            escaped = byte == b'\\';
            in_string = byte != b'"';
        }
    }
    None
}

/// serde_json appends " at line 1 column N" to every message; for a single
/// line only the column is worth keeping, and only for syntax errors.
fn json_reason(err: serde_json::Error) -> RejectReason {
    use serde_json::error::Category;
    let column = err.column();
    let mut message = err.to_string();
    while let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    match err.classify() {
        Category::Syntax | Category::Eof => {
            RejectReason::new(format!("invalid JSON: {message} at column {column}"))
        }
        Category::Data => RejectReason::new(message),
        Category::Io => RejectReason::new(format!("cannot read line: {message}")),
    }
}

/// Text fields in the order of the table's columns; the index into
/// `RawFinding::text` is the position here.
const TEXT_FIELDS: [&str; 9] = table::TEXT_COLUMNS;

/// The other fields a finding may have.
const OTHER_FIELDS: [&str; 5] = [
    "primary_key",
    "primary_keys",
    "lsn",
    "timestamp",
    "detected_at",
];

/// Primary key columns and their values, in the order given.
type PrimaryKey<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Whether the strings of a line may hold a NUL character.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Nuls {
    /// Serde's strings: a `\u0000` escape is one.
    #[default]
    Possible,
    /// The scanner's: it leaves `\u` escapes and control bytes to serde.
    Impossible,
}

/// The line as JSON gave it: fields present, types checked, nothing else.
#[derive(Debug, Default, PartialEq)]
struct RawFinding<'a> {
    text: [Option<Cow<'a, str>>; 9],
    primary_key: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    primary_keys: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    lsn: Option<i64>,
    timestamp: Option<Cow<'a, str>>,
    detected_at: Option<Cow<'a, str>>,
    nuls: Nuls,
}

impl<'a> RawFinding<'a> {
    /// The finding, its fields taken out of the raw one, which is left
    /// empty: moving it whole would cost more than checking it.
    fn validate(&mut self) -> Result<Finding<'a>, RejectReason> {
        let nuls = self.nuls;
        for (value, name) in self.text.iter().zip(TEXT_FIELDS) {
            let value = value
                .as_ref()
                .ok_or_else(|| RejectReason::new(format!("missing field `{name}`")))?;
            check_no_nul(nuls, name, value)?;
        }
        let lsn = self
            .lsn
            .ok_or_else(|| RejectReason::new("missing field `lsn`"))?;
        let primary_key =
            merge_primary_key(self.primary_key.take(), self.primary_keys.take(), nuls)?;
        let detected_at = merge_detected_at(self.timestamp.take(), self.detected_at.take())?;
        let [
            database,
            rule_id,
            description,
            category,
            severity,
            schema_name,
            table_name,
            column_name,
            masked_sample,
        ] = &mut self.text;
        let take = |value: &mut Option<Cow<'a, str>>| {
            value.take().expect("every text field was checked above")
        };
        let severity_text = take(severity);
        let severity = Severity::parse(severity_text.as_bytes()).ok_or_else(|| {
            RejectReason::new(format!(
                "field `severity`: {severity_text:?} is not one of CRITICAL, HIGH, MEDIUM, LOW, INFO"
            ))
        })?;
        Ok(Finding {
            database: take(database),
            rule_id: take(rule_id),
            description: take(description),
            category: take(category),
            severity,
            schema_name: take(schema_name),
            table_name: take(table_name),
            column_name: take(column_name),
            masked_sample: take(masked_sample),
            primary_key,
            lsn,
            detected_at,
        })
    }
}

/// The primary key, from `primary_key`, `primary_keys` or both (which must
/// agree): no NUL, no column twice.
fn merge_primary_key<'a>(
    object: Option<PrimaryKey<'a>>,
    pairs: Option<PrimaryKey<'a>>,
    nuls: Nuls,
) -> Result<PrimaryKey<'a>, RejectReason> {
    // The field the key is reported under: the one the line gave.
    let field = match (&object, &pairs) {
        (None, Some(_)) => "primary_keys",
        _ => "primary_key",
    };
    let primary_key = match (object, pairs) {
        (Some(object), Some(pairs)) => {
            if !same_key(&object, &pairs) {
                return Err(RejectReason::new(
                    "fields `primary_key` and `primary_keys` disagree",
                ));
            }
            object
        }
        (Some(object), None) => object,
        (None, Some(pairs)) => pairs,
        (None, None) => Vec::new(),
    };
    for (name, value) in &primary_key {
        check_no_nul(nuls, field, name)?;
        check_no_nul(nuls, field, value)?;
    }
    if let Some(name) = duplicate_column(&primary_key) {
        return Err(RejectReason::new(format!(
            "field `{field}`: column {name:?} appears twice"
        )));
    }
    Ok(primary_key)
}

/// A column named twice in a primary key. Keys have a column or two:
/// sorting a copy of the names only when there are many keeps a hostile
/// line from costing quadratic time.
fn duplicate_column<'k>(primary_key: &'k PrimaryKey<'_>) -> Option<&'k Cow<'k, str>> {
    if primary_key.len() <= 8 {
        primary_key
            .iter()
            .enumerate()
            .find(|(i, (name, _))| primary_key[..*i].iter().any(|(seen, _)| seen == name))
            .map(|(_, (name, _))| name)
    } else {
        let mut names: Vec<_> = primary_key.iter().map(|(name, _)| name).collect();
        names.sort_unstable();
        names
            .windows(2)
            .find(|pair| pair[0] == pair[1])
            .map(|pair| pair[0])
    }
}

fn same_key(a: &[(Cow<'_, str>, Cow<'_, str>)], b: &[(Cow<'_, str>, Cow<'_, str>)]) -> bool {
    let mut a: Vec<_> = a.iter().collect();
    let mut b: Vec<_> = b.iter().collect();
    a.sort();
    b.sort();
    a == b
}

fn check_no_nul(nuls: Nuls, field: &str, value: &str) -> Result<(), RejectReason> {
    if nuls == Nuls::Possible && value.contains('\0') {
        return Err(RejectReason::new(format!(
            "field `{field}` contains a NUL character, which PostgreSQL cannot store"
        )));
    }
    Ok(())
}

/// The moment of the finding, from `timestamp`, `detected_at` (its other
/// name) or both: each must be a timestamp, and both the same instant as
/// stored (to the microsecond), however they are written
/// (`2026-11-27T10:15:02Z` and `2026-11-27T10:15:02+00:00` are one).
fn merge_detected_at(
    timestamp: Option<Cow<'_, str>>,
    detected_at: Option<Cow<'_, str>>,
) -> Result<Option<i64>, RejectReason> {
    let timestamp = timestamp
        .map(|t| check_timestamp("timestamp", &t))
        .transpose()?;
    let detected_at = detected_at
        .map(|t| check_timestamp("detected_at", &t))
        .transpose()?;
    match (timestamp, detected_at) {
        (Some(a), Some(b)) if a != b => Err(RejectReason::new(
            "fields `timestamp` and `detected_at` disagree: they are different instants",
        )),
        (a, b) => Ok(a.or(b)),
    }
}

fn check_timestamp(field: &str, value: &str) -> Result<i64, RejectReason> {
    timestamp::micros(value.as_bytes()).map_err(|problem| {
        RejectReason::new(format!(
            "field `{field}`: {value:?} is not an RFC 3339 timestamp ({problem})"
        ))
    })
}

/// Parses PostgreSQL's textual LSN, "16/B374D848": two hexadecimal 32-bit
/// halves.
pub fn parse_text_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    let half = |part: &str| {
        if part.is_empty() || part.len() > 8 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(part, 16).ok()
    };
    Some(u64::from(half(high)?) << 32 | u64::from(half(low)?))
}

#[cfg(test)]
mod tests;
