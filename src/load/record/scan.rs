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

use super::{Nuls, PrimaryKey, RawFinding, integer_at, parse_text_lsn};

/// The line's fields into `raw` (empty), when it has the usual shape.
/// Filled in place: a finding is a few hundred bytes, which moving around
/// costs more than scanning a field.
pub(super) fn scan<'a>(text: &'a str, raw: &mut RawFinding<'a>) -> bool {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    if scanner.object(raw).is_none() {
        return false;
    }
    scanner.space();
    raw.nuls = Nuls::Impossible;
    scanner.at == scanner.bytes.len()
}

/// How many bytes `bytes` starts with that a JSON string holds as they
/// are: up to a quote, a backslash or a control character. Eight bytes at a
/// time: strings are most of a line.
pub fn plain_len(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte that is zero; exact for the lowest one.
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGH;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("a chunk of 8 bytes"));
        let special = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            // Bytes below 0x20.
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map_or(bytes.len(), |n| at + n)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

/// Where a field goes, by its place among the fields a finding has: the
/// text fields (`TEXT_FIELDS`) first, then `OTHER_FIELDS`.
pub fn place(name: &str) -> Option<usize> {
    Some(match name {
        "database" => 0,
        "rule_id" => 1,
        "description" => 2,
        "category" => 3,
        "severity" => 4,
        "schema_name" => 5,
        "table_name" => 6,
        "column_name" => 7,
        "masked_sample" => 8,
        "primary_key" => 9,
        "primary_keys" => 10,
        "lsn" => 11,
        "timestamp" => 12,
        "detected_at" => 13,
        _ => return None,
    })
}

/// Each field's name as JSON writes it, quoted and followed by its colon,
/// by place.
const KEYS: [&[u8]; 14] = [
    b"\"database\":",
    b"\"rule_id\":",
    b"\"description\":",
    b"\"category\":",
    b"\"severity\":",
    b"\"schema_name\":",
    b"\"table_name\":",
    b"\"column_name\":",
    b"\"masked_sample\":",
    b"\"primary_key\":",
    b"\"primary_keys\":",
    b"\"lsn\":",
    b"\"timestamp\":",
    b"\"detected_at\":",
];

/// The place of the field that usually follows the one at `place` (None:
/// the first), in the scanner's order.
pub fn usual_next(place: Option<usize>) -> usize {
    match place {
        None => 0,
        // primary_key or primary_keys, then lsn.
        Some(9 | 10) => 11,
        Some(place) => (place + 1).min(KEYS.len() - 1),
    }
}

/// The length of the name and colon of the field at `usual`, when `bytes`
/// has them, as JSON writes them, at `at`.
#[inline]
pub fn usual_key_at(bytes: &[u8], at: usize, usual: usize) -> Option<usize> {
    let key = KEYS[usual];
    bytes
        .get(at..at + key.len())
        .is_some_and(|here| same_key(here, key))
        .then_some(key.len())
}

/// Whether `here` is `key`, one of [`KEYS`]: at most 16 bytes, so two
/// 8-byte words (overlapping for shorter keys) compare them at once.
#[inline]
fn same_key(here: &[u8], key: &[u8]) -> bool {
    let word = |bytes: &[u8], at: usize| {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("a word of 8 bytes"))
    };
    match key.len() {
        8..=16 => {
            let last = key.len() - 8;
            word(here, 0) == word(key, 0) && word(here, last) == word(key, last)
        }
        _ => here == key,
    }
}

impl<'a> Scanner<'a> {
    /// The finding object, each field in turn.
    fn object(&mut self, raw: &mut RawFinding<'a>) -> Option<()> {
        let mut seen = 0u32;
        let mut last = None;
        self.list(b'{', b'}', |scanner| {
            match scanner.name(usual_next(last))? {
                Some(place) => {
                    last = Some(place);
                    if seen & (1 << place) != 0 {
                        return None;
                    }
                    seen |= 1 << place;
                    scanner.field(raw, place)
                }
                None => scanner.skip_simple_value(),
            }
        })
    }

    /// A JSON object or array: `open`, items separated by commas (`item`
    /// reads each), `close`.
    fn list(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.expect(open)?;
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.next()? {
                b',' => {}
                byte if byte == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// A field's name and its colon, and the field's place (None for a
    /// field findings do not have). The name at `usual` is tried first, as
    /// it is written without white space: most lines have the same fields
    /// in the same order.
    fn name(&mut self, usual: usize) -> Option<Option<usize>> {
        self.space();
        if let Some(len) = usual_key_at(self.bytes, self.at, usual) {
            self.at += len;
            return Some(Some(usual));
        }
        let name = self.plain_string()?;
        self.expect(b':')?;
        Some(place(name))
    }

    /// The value of the field at `place` (see [`place`]).
    fn field(&mut self, raw: &mut RawFinding<'a>, place: usize) -> Option<()> {
        if let Some(text) = raw.text.get_mut(place) {
            *text = Some(self.string()?);
            return Some(());
        }
        // The places of OTHER_FIELDS, in its order.
        match place {
            9 => raw.primary_key = self.null_or(Scanner::key_object)?,
            10 => raw.primary_keys = self.null_or(Scanner::key_pairs)?,
            11 => raw.lsn = Some(self.lsn()?),
            12 => raw.timestamp = self.null_or(Scanner::string)?,
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
        self.list(b'{', b'}', |scanner| {
            let name = scanner.string()?;
            scanner.expect(b':')?;
            columns.push((name, scanner.string()?));
            Some(())
        })?;
        Some(columns)
    }

    /// `[["column", "value"], ...]`.
    fn key_pairs(&mut self) -> Option<PrimaryKey<'a>> {
        let mut columns = Vec::new();
        self.list(b'[', b']', |scanner| {
            scanner.expect(b'[')?;
            let name = scanner.string()?;
            scanner.expect(b',')?;
            let value = scanner.string()?;
            scanner.expect(b']')?;
            columns.push((name, value));
            Some(())
        })?;
        Some(columns)
    }

    /// An integer within BIGINT range, or a textual LSN that is.
    fn lsn(&mut self) -> Option<i64> {
        if self.peek()? == b'"' {
            let text = self.string()?;
            return i64::try_from(parse_text_lsn(&text)?).ok();
        }
        // A float is left to serde, which explains it.
        let (value, end) = integer_at(self.bytes, self.at)?;
        self.at = end;
        Some(value)
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
    #[inline]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.at;
        let end = self.plain_run(start);
        match *self.bytes.get(end)? {
            b'"' => {
                self.at = end + 1;
                self.text.get(start..end).map(Cow::Borrowed)
            }
            b'\\' => self.escaped(start, end),
            _ => None,
        }
    }

    /// The rest of a string that has escapes from `end` on.
    #[inline(never)]
    fn escaped(&mut self, start: usize, end: usize) -> Option<Cow<'a, str>> {
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
        start + plain_len(&self.bytes[start..])
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
    use super::super::{OTHER_FIELDS, TEXT_FIELDS, parse_unusual};
    use super::*;

    const GOOD: &str = r#"{"database":"primary/orders","rule_id":"email-address","description":"Email addresses","category":"PII","severity":"HIGH","schema_name":"public","table_name":"users","column_name":"contact","masked_sample":"ja****om","primary_key":{"id":"42"},"lsn":1234567,"timestamp":"2026-11-27T10:15:02.123456789+00:00"}"#;

    /// What the scanner makes of a line, if it takes it.
    fn scanned(line: &str) -> Option<RawFinding<'_>> {
        let mut raw = RawFinding::default();
        scan(line, &mut raw).then_some(raw)
    }

    /// GOOD with `"lsn":1234567` replaced.
    fn lsn(value: &str) -> String {
        GOOD.replace(r#""lsn":1234567"#, value)
    }

    #[test]
    fn places_follow_the_field_lists() {
        for (index, name) in TEXT_FIELDS.iter().chain(&OTHER_FIELDS).enumerate() {
            assert_eq!(place(name), Some(index), "{name}");
            assert_eq!(KEYS[index], format!("{name:?}:").as_bytes(), "{name}");
            assert!(KEYS[index].len() <= 16, "{name}: two words compare it");
            let mut other = KEYS[index].to_vec();
            for at in 0..other.len() {
                other[at] ^= 0x20;
                assert!(!same_key(&other, KEYS[index]), "{name} {at}");
                other[at] ^= 0x20;
            }
            assert!(same_key(&other, KEYS[index]));
        }
        assert_eq!(place("lsn2"), None);
    }

    #[test]
    fn strings_end_at_quotes_backslashes_and_control_characters() {
        let long = "0123456789abcdefghijklmnopqrstuvwxyz";
        for end in 0..long.len() {
            for special in ["\"", "\\", "\u{1}", "\u{1f}"] {
                let text = format!("{}{special}{}é", &long[..end], &long[end..]);
                let scanner = Scanner {
                    text: &text,
                    bytes: text.as_bytes(),
                    at: 0,
                };
                assert_eq!(scanner.plain_run(0), end, "{text:?}");
            }
        }
        let text = "é€ no end";
        let scanner = Scanner {
            text,
            bytes: text.as_bytes(),
            at: 0,
        };
        assert_eq!(scanner.plain_run(2), text.len());
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
            r#"{"lsn":1,"database":"d","timestamp":null,"rule_id":"r"}"#.to_owned(),
            r#"{ "lsn" :1, "database":"d"}"#.to_owned(),
        ];
        for line in &lines {
            let scanned = scanned(line).unwrap_or_else(|| panic!("not scanned: {line}"));
            let mut read = parse_unusual(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(read.nuls, Nuls::Possible);
            read.nuls = Nuls::Impossible;
            assert_eq!(scanned, read, "{line}");
        }
        assert!(matches!(
            scanned(GOOD).map(|raw| raw.text[8].clone()),
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
            assert_eq!(scanned(line), None, "{line}");
        }
    }
}
