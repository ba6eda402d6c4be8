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
pub use straight::Usual;

/// A line that is a valid finding, ready to be written as a row.
#[derive(Debug)]
pub enum Valid<'a> {
    /// The usual shape, as spans of the line.
    Usual(Usual<'a>),
    /// Any other, parsed.
    Parsed(Finding<'a>),
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

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const POSTGRES_EPOCH_DAYS: i64 = 10_957;

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
    if let Some(at) = &finding.detected_at {
        put_field(out, &timestamp_micros(at).to_be_bytes());
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

/// Microseconds since 2000-01-01 UTC of an RFC 3339 timestamp the record
/// checks passed (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`), computed as
/// PostgreSQL does for the same text: the fraction read as a double and
/// rounded to microseconds, half to even; a leap second is the next
/// minute's first.
pub fn timestamp_micros(text: &str) -> i64 {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'))
    };
    let days = days_from_civil(number(0..4), number(5..7), number(8..10)) - POSTGRES_EPOCH_DAYS;
    let seconds = number(11..13) * 3600 + number(14..16) * 60 + number(17..19);
    let zone = b[19..]
        .iter()
        .position(|c| matches!(c, b'Z' | b'z' | b'+' | b'-'))
        .map_or(b.len(), |at| at + 19);
    let offset = match b.get(zone) {
        Some(sign @ (b'+' | b'-')) => {
            let minutes = number(zone + 1..zone + 3) * 60 + number(zone + 4..zone + 6);
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => 0,
    };
    ((days * 86_400 + seconds - offset * 60) * 1_000_000) + fraction_micros(&text[19..zone])
}

/// A fraction of a second (".123456789", or "") in microseconds, as
/// PostgreSQL computes it: `rint(strtod(fraction) * 1000000)`.
fn fraction_micros(fraction: &str) -> i64 {
    let digits = fraction.len().saturating_sub(1);
    if (1..=12).contains(&digits) {
        // Exact in integers, and the same as PostgreSQL's doubles but for a
        // tie: the error of a double is far below the distance to one.
        let value: i64 = fraction[1..]
            .bytes()
            .fold(0, |acc, c| acc * 10 + i64::from(c - b'0'));
        let (micros, rest, unit) = if digits <= 6 {
            (value * 10i64.pow(6 - digits as u32), 0, 1)
        } else {
            let unit = 10i64.pow(digits as u32 - 6);
            (value / unit, value % unit, unit)
        };
        match (2 * rest).cmp(&unit) {
            std::cmp::Ordering::Less => return micros,
            std::cmp::Ordering::Greater => return micros + 1,
            std::cmp::Ordering::Equal => {}
        }
    }
    match fraction {
        "" => 0,
        digits => {
            let value: f64 = digits.parse().expect("the record checks passed a fraction");
            (value * 1_000_000.0).round_ties_even() as i64
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
    fn timestamps_as_postgres_reads_them() {
        // Checked against SELECT extract(epoch FROM '...'::timestamptz).
        let micros = |text| timestamp_micros(text);
        assert_eq!(micros("2000-01-01T00:00:00Z"), 0);
        assert_eq!(micros("2000-01-01T00:00:00.5+00:00"), 500_000);
        assert_eq!(micros("1999-12-31T23:59:59.999999Z"), -1);
        assert_eq!(micros("2000-01-01T01:00:00+01:00"), 0);
        assert_eq!(micros("2000-01-01 00:00:00-00:30"), 1_800_000_000);
        assert_eq!(
            micros("2026-11-27T10:15:02.123845643+00:00"),
            849_089_702_123_846
        );
        assert_eq!(
            micros("2024-02-29T23:59:60Z"),
            micros("2024-03-01T00:00:00Z")
        );
        assert_eq!(micros("2000-01-01T00:00:00.0000005Z"), 0, "half to even");
        assert_eq!(micros("2000-01-01T00:00:00.0000015Z"), 2, "half to even");
        assert_eq!(micros("2000-01-01T00:00:00.0000025Z"), 2, "half to even");
        assert_eq!(micros("2000-01-01T00:00:00.1234565Z"), 123_456);
        assert_eq!(micros("2000-01-01T00:00:00.9999996Z"), 1_000_000);
        assert_eq!(micros("0001-01-01T00:00:00Z"), -63_082_281_600_000_000);
    }

    #[test]
    fn fractions_in_integers_as_in_doubles() {
        let double = |fraction: &str| -> i64 {
            let value: f64 = fraction.parse().expect("a fraction");
            (value * 1_000_000.0).round_ties_even() as i64
        };
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for digits in 1..=14 {
            for _ in 0..2000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let text = format!(".{:0digits$}", seed % 10u64.pow(digits as u32));
                assert_eq!(fraction_micros(&text), double(&text), "{text}");
            }
        }
        for tie in [
            ".0000005",
            ".0000015",
            ".1234565",
            ".99999950",
            ".000000500000",
        ] {
            assert_eq!(fraction_micros(tie), double(tie), "{tie}");
        }
        assert_eq!(fraction_micros(""), 0);
    }

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
