//! A scanner for the shape findings come in, several times faster than
//! going through serde: fields that are strings, a `primary_key` object of
//! strings or `primary_keys` pairs, an integer or textual lsn, no escapes
//! beyond the short ones.
//!
//! It only ever accepts: anything unusual (an unknown field holding an
//! object or a float, `\u` escapes, a duplicate field, a wrong type, a
//! syntax error) gives up with `None`, and the line goes through the serde
//! path, which says what is wrong. So whatever it returns, serde would have
//! returned too, and the rules and reasons stay those of one place.

use std::borrow::Cow;

use super::{OTHER_FIELDS, PrimaryKey, RawFinding, TEXT_FIELDS, parse_text_lsn};

/// The line's fields, when it has the usual shape.
pub(super) fn scan(text: &str) -> Option<RawFinding<'_>> {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let raw = scanner.object()?;
    scanner.space();
    (scanner.at == scanner.bytes.len()).then_some(raw)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

/// Where a field goes, by its place among the fields a finding has.
fn place(name: &str) -> Option<usize> {
    TEXT_FIELDS
        .iter()
        .chain(&OTHER_FIELDS)
        .position(|field| *field == name)
}

impl<'a> Scanner<'a> {
    /// The finding object, each field in turn.
    fn object(&mut self) -> Option<RawFinding<'a>> {
        let mut raw = RawFinding::default();
        let mut seen = 0u32;
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(raw);
        }
        loop {
            let name = self.plain_string()?;
            self.expect(b':')?;
            match place(name) {
                Some(place) => {
                    if seen & (1 << place) != 0 {
                        return None;
                    }
                    seen |= 1 << place;
                    self.field(&mut raw, place)?;
                }
                None => self.skip_simple_value()?,
            }
            match self.next()? {
                b',' => continue,
                b'}' => return Some(raw),
                _ => return None,
            }
        }
    }

    /// The value of the field at `place` (see [`place`]).
    fn field(&mut self, raw: &mut RawFinding<'a>, place: usize) -> Option<()> {
        if let Some(text) = raw.text.get_mut(place) {
            *text = Some(self.string()?);
            return Some(());
        }
        match OTHER_FIELDS[place - TEXT_FIELDS.len()] {
            "primary_key" => raw.primary_key = self.null_or(Scanner::key_object)?,
            "primary_keys" => raw.primary_keys = self.null_or(Scanner::key_pairs)?,
            "lsn" => raw.lsn = Some(self.lsn()?),
            "timestamp" => raw.timestamp = self.null_or(Scanner::string)?,
            _ => raw.detected_at = self.null_or(Scanner::string)?,
        }
        Some(())
    }

    /// `null` as None, else what `value` reads.
    fn null_or<T>(&mut self, value: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        value(self).map(Some)
    }

    /// `{"column": "value", ...}`.
    fn key_object(&mut self) -> Option<PrimaryKey<'a>> {
        let mut columns = Vec::new();
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(columns);
        }
        loop {
            let name = self.string()?;
            self.expect(b':')?;
            columns.push((name, self.string()?));
            match self.next()? {
                b',' => continue,
                b'}' => return Some(columns),
                _ => return None,
            }
        }
    }

    /// `[["column", "value"], ...]`.
    fn key_pairs(&mut self) -> Option<PrimaryKey<'a>> {
        let mut columns = Vec::new();
        self.expect(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Some(columns);
        }
        loop {
            self.expect(b'[')?;
            let name = self.string()?;
            self.expect(b',')?;
            let value = self.string()?;
            self.expect(b']')?;
            columns.push((name, value));
            match self.next()? {
                b',' => continue,
                b']' => return Some(columns),
                _ => return None,
            }
        }
    }

    /// An integer within BIGINT range, or a textual LSN that is.
    fn lsn(&mut self) -> Option<i64> {
        if self.peek()? == b'"' {
            let text = self.string()?;
            return i64::try_from(parse_text_lsn(&text)?).ok();
        }
        let start = self.at;
        let mut value: i64 = 0;
        while let Some(digit) = self.bytes.get(self.at).filter(|c| c.is_ascii_digit()) {
            value = value
                .checked_mul(10)?
                .checked_add(i64::from(digit - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        // JSON allows no leading zero; a fraction or an exponent makes it a
        // float, which serde explains.
        let well_formed = digits == 1 || (digits > 1 && self.bytes[start] != b'0');
        let ends = !matches!(self.bytes.get(self.at), Some(b'.' | b'e' | b'E'));
        (well_formed && ends).then_some(value)
    }

    /// An unknown field's value, when it is a string, an integer, true,
    /// false or null; anything else is left to serde.
    fn skip_simple_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'0'..=b'9' => self.lsn().map(drop),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.space();
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A string without escapes (a field name).
    fn plain_string(&mut self) -> Option<&'a str> {
        match self.string()? {
            Cow::Borrowed(text) => Some(text),
            Cow::Owned(_) => None,
        }
    }

    /// A string, borrowed when it has no escapes; `\u` escapes and control
    /// characters are left to serde.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.at;
        let end = self.plain_run(start);
        match *self.bytes.get(end)? {
            b'"' => {
                self.at = end + 1;
                return self.text.get(start..end).map(Cow::Borrowed);
            }
            b'\\' => {}
            _ => return None,
        }
        let mut owned = String::with_capacity(end - start + 16);
        let mut from = start;
        let mut end = end;
        loop {
            owned.push_str(self.text.get(from..end)?);
            match *self.bytes.get(end)? {
                b'"' => {
                    self.at = end + 1;
                    return Some(Cow::Owned(owned));
                }
                b'\\' => {}
                _ => return None,
            }
            owned.push(match *self.bytes.get(end + 1)? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                _ => return None,
            });
            from = end + 2;
            end = self.plain_run(from);
        }
    }

    /// Where the run of plain string bytes from `start` ends: at a quote, a
    /// backslash, a control character or the end of the line.
    fn plain_run(&self, start: usize) -> usize {
        self.bytes[start..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .map_or(self.bytes.len(), |n| start + n)
    }

    /// Skips white space and takes the next byte, which must be `byte`.
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// Skips white space and takes the next byte.
    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// Skips white space and looks at the next byte.
    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.bytes.get(self.at).copied()
    }

    /// JSON's white space.
    fn space(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_unusual;
    use super::*;

    const GOOD: &str = r#"{"database":"primary/orders","rule_id":"email-address","description":"Email addresses","category":"PII","severity":"HIGH","schema_name":"public","table_name":"users","column_name":"contact","masked_sample":"ja****om","primary_key":{"id":"42"},"lsn":1234567,"timestamp":"2026-11-27T10:15:02.123456789+00:00"}"#;

    /// GOOD with `"lsn":1234567` replaced.
    fn lsn(value: &str) -> String {
        GOOD.replace(r#""lsn":1234567"#, value)
    }

    #[test]
    fn the_usual_shapes_are_scanned_as_serde_reads_them() {
        let lines = [
            GOOD.to_owned(),
            format!(" {} ", GOOD.replace(",", " ,\t").replace(":", ": ")),
            GOOD.replace(
                "Email addresses",
                r#"Quoted \"secret\"\ttab\\ \/ \b\f\n\r é"#,
            ),
            GOOD.replace(r#"{"id":"42"}"#, r#"{"id":"42","tenant":"t\"7"}"#),
            GOOD.replace(r#"{"id":"42"}"#, "{}"),
            GOOD.replace(r#"{"id":"42"}"#, "null"),
            GOOD.replace(
                r#""primary_key":{"id":"42"}"#,
                r#""primary_keys":[["id","42"],["b","c"]]"#,
            ),
            GOOD.replace(r#""primary_key":{"id":"42"}"#, r#""primary_keys":[ ]"#),
            lsn(r#""lsn":"16/B374D848""#),
            lsn(r#""lsn":0"#),
            lsn(r#""lsn":9223372036854775807"#),
            lsn(r#""lsn":1,"extra":"x","n":0,"m":12,"t":true,"f":false,"z":null"#),
            lsn(r#""lsn":1,"detected_at":null"#),
            lsn(r#""lsn":1,"detected_at":"2026-11-27T10:15:02Z""#),
            GOOD.replace(r#","timestamp":"2026-11-27T10:15:02.123456789+00:00""#, ""),
            "{}".to_owned(),
            r#"{"database":"d"}"#.to_owned(),
        ];
        for line in &lines {
            let scanned = scan(line).unwrap_or_else(|| panic!("not scanned: {line}"));
            let read = parse_unusual(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(scanned, read, "{line}");
        }
        assert!(matches!(
            scan(GOOD).map(|raw| raw.text[8].clone()),
            Some(Some(Cow::Borrowed(_)))
        ));
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        let lines = [
            GOOD.replace("Email addresses", r#"caf\u00e9"#),
            GOOD.replace(r#""database""#, r#""data\u0062ase""#),
            GOOD.replace("Email addresses", "tab\there"),
            GOOD.replace(r#""PII""#, "5"),
            GOOD.replace(r#""PII""#, "null"),
            GOOD.replace(r#"{"id":"42"}"#, r#"{"id":42}"#),
            GOOD.replace(r#"{"id":"42"}"#, r#"[["id","42"]]"#),
            GOOD.replace(
                r#""primary_key":{"id":"42"}"#,
                r#""primary_keys":[["id","42","x"]]"#,
            ),
            GOOD.replace(
                r#""primary_key":{"id":"42"}"#,
                r#""primary_keys":{"id":"42"}"#,
            ),
            lsn(r#""lsn":-1"#),
            lsn(r#""lsn":1.5"#),
            lsn(r#""lsn":1e3"#),
            lsn(r#""lsn":01"#),
            lsn(r#""lsn":9223372036854775808"#),
            lsn(r#""lsn":"FFFFFFFF/0""#),
            lsn(r#""lsn":"16/""#),
            lsn(r#""lsn":true"#),
            lsn(r#""lsn":1,"lsn":2"#),
            lsn(r#""lsn":1,"timestamp":null"#),
            lsn(r#""lsn":1,"extra":{"a":1}"#),
            lsn(r#""lsn":1,"extra":[1]"#),
            lsn(r#""lsn":1,"extra":1.5"#),
            lsn(r#""lsn":1,"extra":nul"#),
            format!("{GOOD},"),
            format!("{GOOD}}}"),
            format!("{GOOD} x"),
            GOOD[..GOOD.len() - 1].to_owned(),
            GOOD.replace(",", ",,"),
            "[1,2]".to_owned(),
            String::new(),
        ];
        for line in &lines {
            assert_eq!(scan(line), None, "{line}");
        }
    }
}
