//! Valid findings made up for the tests, in both input shapes, and the rows
//! the findings table holds, so that a test compares every column of what
//! went in with what came out. Nothing here reads files outside the repo.

use serde_json::{Map, Value, json};

use super::pg::PgServer;

/// The two shapes of a finding in the wild (finding-format.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Current: `primary_key` is an object, absent when there is no key.
    Object,
    /// Older: `primary_keys` is an array of `[name, value]` pairs.
    Pairs,
}

/// One finding, as the scanner would write it.
#[derive(Clone, Debug)]
pub struct Finding {
    pub database: String,
    pub rule_id: String,
    pub description: String,
    pub category: String,
    pub severity: String,
    pub schema_name: String,
    pub table_name: String,
    pub column_name: String,
    pub masked_sample: String,
    /// (column, value) in the order written; empty when the row has no key.
    pub primary_key: Vec<(String, String)>,
    pub lsn: u64,
    /// RFC 3339 in UTC, as the scanner writes it; None leaves it out.
    pub timestamp: Option<String>,
}

const SEVERITIES: [&str; 5] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"];

impl Finding {
    /// The i-th sample finding. The samples vary every column, and include
    /// non-ASCII text, escaped characters, keys of zero to two columns,
    /// LSNs up to the BIGINT maximum, and timestamps with 9- and 6-digit
    /// fractions (always whole microseconds, so they round-trip exactly).
    pub fn sample(i: u64) -> Finding {
        let primary_key = match i % 4 {
            0 => vec![],
            1 => vec![("id".to_owned(), (i * 10 + 2).to_string())],
            2 => vec![
                ("id".to_owned(), i.to_string()),
                ("tenant".to_owned(), format!("t-{}", i % 9)),
            ],
            _ => vec![(
                "uuid".to_owned(),
                format!("550e8400-e29b-41d4-a716-{:012x}", i),
            )],
        };
        let micros = (i * 7919 + 13) % 1_000_000;
        let fraction = if i.is_multiple_of(2) {
            format!("{micros:06}000")
        } else {
            format!("{micros:06}")
        };
        Finding {
            database: ["primary/orders", "replica-2/billing", "données/клиенты"][(i % 3) as usize]
                .to_owned(),
            rule_id: [
                "email-address",
                "credit-card",
                "iban",
                "phone-number",
                "ssn",
            ][(i % 5) as usize]
                .to_owned(),
            description: match i % 4 {
                1 => "Line one\nline two\t\"quoted\" back\\slash".to_owned(),
                2 => format!("Email addresses №{i} ✓"),
                _ => "Email addresses".to_owned(),
            },
            category: ["PII", "PCI", "Financial"][(i % 3) as usize].to_owned(),
            severity: SEVERITIES[(i % 5) as usize].to_owned(),
            schema_name: ["public", "sales"][(i % 2) as usize].to_owned(),
            table_name: format!("users_{}", i % 7),
            column_name: ["contact", "Émail", "card number"][(i % 3) as usize].to_owned(),
            masked_sample: ["ja****om", "4111********1111", "日本****語", ""][(i % 4) as usize]
                .to_owned(),
            primary_key,
            lsn: if i % 5 == 4 {
                i64::MAX as u64 - i
            } else {
                1_234_567 + i * 1000
            },
            timestamp: Some(format!(
                "2024-11-{:02}T{:02}:{:02}:{:02}.{fraction}+00:00",
                1 + i % 28,
                i % 24,
                (i / 7) % 60,
                i % 60
            )),
        }
    }

    /// The finding as a JSON object in `shape`.
    pub fn to_json(&self, shape: Shape) -> Value {
        let mut object = json!({
            "database": self.database,
            "rule_id": self.rule_id,
            "description": self.description,
            "category": self.category,
            "severity": self.severity,
            "schema_name": self.schema_name,
            "table_name": self.table_name,
            "column_name": self.column_name,
            "masked_sample": self.masked_sample,
            "lsn": self.lsn,
        });
        let fields = object.as_object_mut().expect("json! object");
        match shape {
            Shape::Object if !self.primary_key.is_empty() => {
                fields.insert("primary_key".into(), Value::Object(self.key_object()));
            }
            Shape::Pairs if !self.primary_key.is_empty() => {
                let pairs = self
                    .primary_key
                    .iter()
                    .map(|(name, value)| json!([name, value]))
                    .collect();
                fields.insert("primary_keys".into(), Value::Array(pairs));
            }
            _ => {}
        }
        if let Some(timestamp) = &self.timestamp {
            fields.insert("timestamp".into(), json!(timestamp));
        }
        object
    }

    /// The finding as one NDJSON line (no newline).
    pub fn line(&self, shape: Shape) -> String {
        self.to_json(shape).to_string()
    }

    fn key_object(&self) -> Map<String, Value> {
        self.primary_key
            .iter()
            .map(|(name, value)| (name.clone(), json!(value)))
            .collect()
    }

    /// The row this finding must become. detected_at is None when the
    /// finding has no timestamp (the column default applies: checked apart).
    pub fn expected_row(&self) -> Row {
        Row {
            database: self.database.clone(),
            rule_id: self.rule_id.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
            severity: self.severity.to_uppercase(),
            schema_name: self.schema_name.clone(),
            table_name: self.table_name.clone(),
            column_name: self.column_name.clone(),
            masked_sample: self.masked_sample.clone(),
            primary_key: Value::Object(self.key_object()),
            lsn: i64::try_from(self.lsn).expect("samples stay within BIGINT"),
            detected_at: self.timestamp.as_deref().map(utc_micros),
        }
    }
}

/// An RFC 3339 UTC timestamp cut to microseconds, in the form [`rows`]
/// prints detected_at.
fn utc_micros(timestamp: &str) -> String {
    let (seconds, rest) = timestamp.split_once('.').expect("samples have a fraction");
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    format!("{seconds}.{:0<6}+00:00", &digits[..digits.len().min(6)])
}

/// `count` sample findings starting at `first`, one per line, each line
/// ending in a newline.
pub fn ndjson(first: u64, count: u64, shape: Shape) -> String {
    (first..first + count)
        .map(|i| Finding::sample(i).line(shape) + "\n")
        .collect()
}

/// A row of the findings table, every column but id.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub database: String,
    pub rule_id: String,
    pub description: String,
    pub category: String,
    pub severity: String,
    pub schema_name: String,
    pub table_name: String,
    pub column_name: String,
    pub masked_sample: String,
    pub primary_key: Value,
    pub lsn: i64,
    /// In UTC with microseconds: `2026-11-27T10:15:02.123456+00:00`.
    pub detected_at: Option<String>,
}

/// Every row of `table` (schema-qualified if needed) in `db`, by id.
pub fn rows(server: &PgServer, db: &str, table: &str) -> Vec<Row> {
    let sql = format!(
        "select database, rule_id, description, category, severity, schema_name, \
         table_name, column_name, masked_sample, primary_key::text, lsn::text, \
         to_char(detected_at at time zone 'UTC', \
                 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"') \
         from {table} order by id"
    );
    server
        .query(db, &sql)
        .into_iter()
        .map(|values| {
            let text = |i: usize| values[i].clone().expect("NOT NULL column");
            Row {
                database: text(0),
                rule_id: text(1),
                description: text(2),
                category: text(3),
                severity: text(4),
                schema_name: text(5),
                table_name: text(6),
                column_name: text(7),
                masked_sample: text(8),
                primary_key: serde_json::from_str(&text(9)).expect("JSONB prints as JSON"),
                lsn: text(10).parse().expect("BIGINT prints as a number"),
                detected_at: Some(text(11)),
            }
        })
        .collect()
}

/// Asserts that `actual` holds exactly the rows of `expected`, every column
/// equal (detected_at only where the finding had a timestamp). Order is not
/// part of the contract, so both sides are sorted first.
#[track_caller]
pub fn assert_rows(actual: &[Row], expected: &[Finding]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "row count differs; rows: {actual:#?}"
    );
    let mut actual = actual.to_vec();
    let mut expected: Vec<Row> = expected.iter().map(Finding::expected_row).collect();
    actual.sort_by_key(sort_key);
    expected.sort_by_key(sort_key);
    for (row, mut want) in actual.iter().zip(expected) {
        if want.detected_at.is_none() {
            want.detected_at = row.detected_at.clone();
        }
        assert_eq!(row, &want, "a row differs from the finding it came from");
    }
}

/// Every column but detected_at (which may be the server's now()).
fn sort_key(row: &Row) -> String {
    format!(
        "{:020}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        row.lsn,
        row.database,
        row.rule_id,
        row.description,
        row.category,
        row.severity,
        row.schema_name,
        row.table_name,
        row.column_name,
        row.masked_sample,
        row.primary_key
    )
}
