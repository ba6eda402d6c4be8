//! COPY binary format: one finding encoded as a row, its fields in the order
//! of `table::COLUMNS`.
//!
//! Binary rather than text: the server then parses no timestamp, no
//! integer and no escapes, and the loader writes text fields as they are.
//! Each field is its length (a 32-bit integer) and its bytes; the columns
//! whose type may vary (`table::Wire`) are written in the form of the type
//! the table has.

mod straight;

use super::record::{Finding, plain_len};
use crate::table::{self, Wire};
pub use straight::{Scratch, Usual};

/// A line that is a valid finding, ready to be written as a row.
#[derive(Debug)]
pub enum Valid<'a> {
    /// The usual shape, as spans of the line.
    Usual(Usual<'a>),
    /// Any other, parsed.
    Parsed(Box<Finding<'a>>),
}

impl Valid<'_> {
    pub fn lsn(&self) -> i64 {
        match self {
            Valid::Usual(usual) => usual.lsn(),
            Valid::Parsed(finding) => finding.lsn,
        }
    }

    /// Whether the row carries `detected_at`.
    pub fn is_timed(&self) -> bool {
        match self {
            Valid::Usual(usual) => usual.is_timed(),
            Valid::Parsed(finding) => finding.detected_at.is_some(),
        }
    }

    /// Appends the finding as a row of COPY binary format.
    pub fn encode(&self, out: &mut Vec<u8>, wire: Wire) {
        match self {
            Valid::Usual(usual) => usual.encode(out, wire),
            Valid::Parsed(finding) => encode(finding, out, wire),
        }
    }
}

/// What every binary COPY starts with: the signature, no flags, no header
/// extension.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// What ends it: a row of -1 fields.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// jsonb's binary form is this version byte and the JSON text.
const JSONB_VERSION: u8 = 1;

/// Appends one finding as a row of COPY binary format.
pub fn encode(finding: &Finding<'_>, out: &mut Vec<u8>, wire: Wire) {
    let fields: u16 = if finding.detected_at.is_some() {
        12
    } else {
        11
    };
    out.extend_from_slice(&fields.to_be_bytes());
    for field in [
        &*finding.database,
        &finding.rule_id,
        &finding.description,
        &finding.category,
        finding.severity.as_str(),
        &finding.schema_name,
        &finding.table_name,
        &finding.column_name,
        &finding.masked_sample,
    ] {
        put_field(out, field.as_bytes());
    }
    let start = begin_field(out);
    if wire.primary_key == table::PrimaryKeyType::Jsonb {
        out.push(JSONB_VERSION);
    }
    put_json_object(out, &finding.primary_key);
    end_field(out, start);
    match wire.lsn {
        table::LsnType::Bigint => put_field(out, &finding.lsn.to_be_bytes()),
        table::LsnType::Numeric => {
            let start = begin_field(out);
            put_numeric(out, finding.lsn);
            end_field(out, start);
        }
    }
    if let Some(micros) = finding.detected_at {
        put_field(out, &micros.to_be_bytes());
    }
}

fn put_field(out: &mut Vec<u8>, value: &[u8]) {
    let len = u32::try_from(value.len()).expect("a field is shorter than a line, under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// Leaves room for a field's length, set by [`end_field`].
fn begin_field(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0; 4]);
    out.len()
}

fn end_field(out: &mut [u8], start: usize) {
    let len = u32::try_from(out.len() - start).expect("a field is shorter than a line");
    out[start - 4..start].copy_from_slice(&len.to_be_bytes());
}

/// The primary key as a compact JSON object, as serde_json writes it.
fn put_json_object(out: &mut Vec<u8>, columns: &[(impl AsRef<str>, impl AsRef<str>)]) {
    out.push(b'{');
    for (index, (name, value)) in columns.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        put_json_string(out, name.as_ref());
        out.push(b':');
        put_json_string(out, value.as_ref());
    }
    out.push(b'}');
}

/// A JSON string: quote, backslash and control characters escaped, the
/// rest as is.
fn put_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let mut rest = text.as_bytes();
    loop {
        let plain = plain_len(rest);
        out.extend_from_slice(&rest[..plain]);
        let Some((&byte, after)) = rest[plain..].split_first() else {
            break;
        };
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
        }
        rest = after;
    }
    out.push(b'"');
}

/// A non-negative integer in numeric's binary form: the count of base-10000
/// digits, the weight of the first, the sign (positive), the display scale
/// (none), then the digits, most significant first.
fn put_numeric(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0u16; 5];
    let mut count = 0;
    let mut rest = value.unsigned_abs();
    while rest > 0 {
        digits[count] = (rest % 10_000) as u16;
        rest /= 10_000;
        count += 1;
    }
    let weight = count.saturating_sub(1) as u16;
    for part in [count as u16, weight, 0, 0] {
        out.extend_from_slice(&part.to_be_bytes());
    }
    for digit in digits[..count].iter().rev() {
        out.extend_from_slice(&digit.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::record::parse_line;
    use crate::table::{LsnType, PrimaryKeyType};

    const JSONB_BIGINT: Wire = Wire {
        primary_key: PrimaryKeyType::Jsonb,
        lsn: LsnType::Bigint,
    };

    #[test]
    fn numeric_digits_in_base_10000() {
        let numeric = |value| {
            let mut out = Vec::new();
            put_numeric(&mut out, value);
            out.chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect::<Vec<_>>()
        };
        assert_eq!(numeric(0), [0, 0, 0, 0]);
        assert_eq!(numeric(42), [1, 0, 0, 0, 42]);
        assert_eq!(numeric(1_2345_0000), [3, 2, 0, 0, 1, 2345, 0]);
        assert_eq!(numeric(i64::MAX), [5, 4, 0, 0, 922, 3372, 368, 5477, 5807]);
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        for text in [
            "plain",
            "a\"b\\c",
            "tab\there\nnl\r\u{8}\u{c}",
            "\u{1}\u{1f}",
            "é/€",
        ] {
            let mut out = Vec::new();
            put_json_string(&mut out, text);
            let expected = serde_json::to_string(text).expect("a string serializes");
            assert_eq!(String::from_utf8(out).expect("utf-8"), expected, "{text:?}");
        }
    }

    #[test]
    fn a_row_is_its_field_count_and_length_prefixed_fields() {
        let line = r#"{"database":"d","rule_id":"r","description":"x","category":"c","severity":"high","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","primary_key":{"id":"4"},"lsn":7,"timestamp":"2000-01-01T00:00:01Z"}"#;
        let finding = parse_line(line.as_bytes()).expect("valid");
        let mut out = Vec::new();
        encode(&finding, &mut out, JSONB_BIGINT);
        let mut fields = Vec::new();
        let mut at = 2;
        while at < out.len() {
            let len = u32::from_be_bytes(out[at..at + 4].try_into().expect("4 bytes")) as usize;
            fields.push(&out[at + 4..at + 4 + len]);
            at += 4 + len;
        }
        assert_eq!(out[..2], [0, 12]);
        assert_eq!(fields.len(), 12);
        assert_eq!(fields[4], b"HIGH");
        assert_eq!(fields[9], b"\x01{\"id\":\"4\"}");
        assert_eq!(fields[10], 7i64.to_be_bytes());
        assert_eq!(fields[11], 1_000_000i64.to_be_bytes());
    }
}
