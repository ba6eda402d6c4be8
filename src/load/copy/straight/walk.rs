//! The walk through a line: each token in turn, each string's end found
//! in the line's masks.

use super::masks::LineMasks;
use super::{Fields, Key, LSN, MAX_KEY_COLUMNS, PRIMARY_KEY, PRIMARY_KEYS, Span, TIMESTAMP};
use super::{span_bytes, span_len};
use crate::load::record::{integer_at, parse_text_lsn, place, usual_key_at, usual_next};

/// A walk through the line, left to right.
pub struct Walk<'a, 'm> {
    line: &'a [u8],
    pub at: usize,
    masks: &'m LineMasks,
}

impl<'a, 'm> Walk<'a, 'm> {
    /// A walk from the line's start, its masks made.
    pub fn new(line: &'a [u8], masks: &'m LineMasks) -> Walk<'a, 'm> {
        Walk { line, at: 0, masks }
    }

    fn peek(&self) -> Option<u8> {
        self.line.get(self.at).copied()
    }

    #[inline(always)]
    pub fn spaces(&mut self) {
        // The usual line has none: the loop is kept out of the way.
        if self.peek() == Some(b' ') {
            self.more_spaces();
        }
    }

    #[cold]
    fn more_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    /// Skips spaces, then takes `byte`.
    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.spaces();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A string; its contents as a span, and whether it has escapes (the
    /// short ones only: a `\u` escape is left to the record path).
    #[inline(always)]
    fn any_string(&mut self) -> Option<(Span, bool)> {
        self.expect(b'"')?;
        self.string_body()
    }

    /// [`Walk::any_string`] past its opening quote.
    #[inline(always)]
    fn string_body(&mut self) -> Option<(Span, bool)> {
        let start = self.at;
        let mut escaped = false;
        let mut from = start;
        loop {
            let at = self.masks.next_special(from)?;
            if self.line[at] == b'"' {
                self.at = at + 1;
                return Some(((start as u32, at as u32), escaped));
            }
            if !matches!(
                self.line.get(at + 1)?,
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't'
            ) {
                return None;
            }
            escaped = true;
            from = at + 2;
        }
    }

    /// A string without escapes.
    #[inline(always)]
    fn string(&mut self) -> Option<Span> {
        match self.any_string()? {
            (span, false) => Some(span),
            (_, true) => None,
        }
    }

    /// Whether the value is `null`, which is then taken.
    fn null(&mut self) -> bool {
        self.spaces();
        let null = self.line[self.at..].starts_with(b"null");
        if null {
            self.at += 4;
        }
        null
    }

    /// The finding object, field by field.
    pub fn object(&mut self, fields: &mut Fields) -> Option<()> {
        self.expect(b'{')?;
        let taken = self.usual_text_fields(fields)?;
        if taken == 9 {
            let at = self.at;
            if let Some(tail) = self.usual_tail() {
                tail.into_fields(fields);
                return Some(());
            }
            self.at = at;
        }
        let mut last = taken.checked_sub(1);
        self.items_after(b'}', taken == 0, |walk| {
            match walk.name(usual_next(last))? {
                Some(place) => {
                    last = Some(place);
                    walk.field(fields, place)
                }
                None => walk.skip_simple_value(),
            }
        })
    }

    /// The text fields the line starts with when they come in the usual
    /// order and compact (`"database":"...",` and on), each with its
    /// comma: how many. They are taken without asking, at each, which
    /// field it is and whether it was seen; the rest of the line is
    /// walked field by field.
    #[inline(always)]
    fn usual_text_fields(&mut self, fields: &mut Fields) -> Option<usize> {
        for place in 0..9 {
            let Some(len) = usual_key_at(self.line, self.at, place) else {
                fields.seen |= (1 << place) - 1;
                return Some(place);
            };
            if self.line.get(self.at + len) != Some(&b'"') {
                fields.seen |= (1 << place) - 1;
                return Some(place);
            }
            self.at += len + 1;
            let (span, escaped) = self.string_body()?;
            fields.text[place] = span;
            fields.escaped |= u16::from(escaped) << place;
            // The line's end or white space here: the record path says
            // whether it is a finding.
            if self.peek()? != b',' {
                return None;
            }
            self.at += 1;
        }
        fields.seen |= (1 << 9) - 1;
        Some(9)
    }

    /// The fields after the text fields and the object's end, when they
    /// are written as the scanner writes them:
    /// `"primary_key":{"id":"42"},"lsn":7,"timestamp":"..."}`, the primary
    /// key and the timestamp each optional. None for anything else, which
    /// is walked field by field from the same place.
    #[inline(always)]
    fn usual_tail(&mut self) -> Option<Tail> {
        let mut tail = Tail {
            key: None,
            lsn: 0,
            timestamp: None,
        };
        if let Some(len) = usual_key_at(self.line, self.at, PRIMARY_KEY) {
            self.at += len;
            tail.key = Some(self.compact_key()?);
            self.take(b',')?;
        }
        let len = usual_key_at(self.line, self.at, LSN)?;
        self.at += len;
        tail.lsn = self.integer()?;
        if self.peek()? == b',' {
            let len = usual_key_at(self.line, self.at + 1, TIMESTAMP)?;
            self.at += 1 + len;
            self.take(b'"')?;
            tail.timestamp = Some(self.plain_string_body()?);
        }
        self.take(b'}')?;
        Some(tail)
    }

    /// A primary key object written compact, without escapes: `{}` or
    /// `{"column":"value",...}`, each column once.
    #[inline(always)]
    fn compact_key(&mut self) -> Option<Key> {
        let start = self.at;
        self.take(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Key::Verbatim((start as u32, self.at as u32)));
        }
        let mut names = [(0, 0); MAX_KEY_COLUMNS];
        for count in 0..MAX_KEY_COLUMNS {
            self.take(b'"')?;
            let name = self.plain_string_body()?;
            let bytes = span_bytes(self.line, name);
            if names[..count]
                .iter()
                .any(|seen| span_bytes(self.line, *seen) == bytes)
            {
                return None;
            }
            names[count] = name;
            self.take(b':')?;
            self.take(b'"')?;
            self.plain_string_body()?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(Key::Verbatim((start as u32, self.at as u32)));
                }
                _ => return None,
            }
        }
        None
    }

    /// Takes `byte`, which must come next.
    #[inline(always)]
    fn take(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// [`Walk::string_body`] of a string without escapes.
    #[inline(always)]
    fn plain_string_body(&mut self) -> Option<Span> {
        match self.string_body()? {
            (span, false) => Some(span),
            (_, true) => None,
        }
    }

    /// A field's name and its colon, and the field's place (None for a
    /// field findings do not have). The name at `usual` is tried first,
    /// as it is written without white space: most lines have the same
    /// fields in the same order. Its bytes are known, so the masks
    /// need not see them.
    fn name(&mut self, usual: usize) -> Option<Option<usize>> {
        if let Some(len) = usual_key_at(self.line, self.at, usual) {
            self.at += len;
            return Some(Some(usual));
        }
        let name = self.string()?;
        self.expect(b':')?;
        Some(place(self.text(name)?))
    }

    /// `open`, items separated by commas (`item` reads each), `close`.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.expect(open)?;
        self.items_after(close, true, item)
    }

    /// Items separated by commas, then `close`: after the opening, when
    /// `may_close` (there may be none), or after a comma.
    fn items_after(
        &mut self,
        close: u8,
        may_close: bool,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.spaces();
        if may_close && self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            self.spaces();
            match self.peek()? {
                b',' => self.at += 1,
                byte if byte == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The value of the field at `place`, once.
    fn field(&mut self, fields: &mut Fields, place: usize) -> Option<()> {
        if fields.seen & 1 << place != 0 {
            return None;
        }
        fields.seen |= 1 << place;
        match place {
            0..=8 => {
                let (span, escaped) = self.any_string()?;
                fields.text[place] = span;
                fields.escaped |= u16::from(escaped) << place;
            }
            // Both forms of one field, not null, are compared by the
            // record path.
            PRIMARY_KEY | PRIMARY_KEYS => {
                if !self.null()
                    && fields
                        .key
                        .replace(self.key(place == PRIMARY_KEYS)?)
                        .is_some()
                {
                    return None;
                }
            }
            LSN => fields.lsn = self.lsn()?,
            _ => {
                if !self.null() && fields.timestamp.replace(self.string()?).is_some() {
                    return None;
                }
            }
        }
        Some(())
    }

    /// The primary key: `{"column":"value",...}`, or with `pairs`,
    /// `[["column","value"],...]`.
    fn key(&mut self, pairs: bool) -> Option<Key> {
        self.spaces();
        let start = self.at;
        let line = self.line;
        let mut names = [(0, 0); MAX_KEY_COLUMNS];
        let mut count = 0;
        // The length of the object written compact.
        let mut compact = 1;
        self.columns(pairs, |name, value| {
            let bytes = span_bytes(line, name);
            if names[..count]
                .iter()
                .any(|seen| span_bytes(line, *seen) == bytes)
            {
                return None;
            }
            *names.get_mut(count)? = name;
            count += 1;
            // `"name":"value",` (the last comma is the closing brace).
            compact += span_len(name) + span_len(value) + 6;
            Some(())
        })?;
        let span = (start as u32, self.at as u32);
        // With no escapes in it, an object of this length has no space
        // either: it is what would be written.
        Some(if !pairs && self.at - start == compact.max(2) {
            Key::Verbatim(span)
        } else {
            Key::Columns { span, pairs }
        })
    }

    /// Each column's name and value of a primary key, to `each`.
    pub fn columns(
        &mut self,
        pairs: bool,
        mut each: impl FnMut(Span, Span) -> Option<()>,
    ) -> Option<()> {
        let (open, close) = if pairs { (b'[', b']') } else { (b'{', b'}') };
        self.items(open, close, |walk| {
            if pairs {
                walk.expect(b'[')?;
                let name = walk.string()?;
                walk.expect(b',')?;
                let value = walk.string()?;
                walk.expect(b']')?;
                each(name, value)
            } else {
                let name = walk.string()?;
                walk.expect(b':')?;
                each(name, walk.string()?)
            }
        })
    }

    /// A span as text, when it is valid UTF-8.
    fn text(&self, span: Span) -> Option<&'a str> {
        std::str::from_utf8(span_bytes(self.line, span)).ok()
    }

    /// An integer within BIGINT range, or a textual LSN that is.
    fn lsn(&mut self) -> Option<i64> {
        self.spaces();
        if self.peek()? == b'"' {
            let span = self.string()?;
            return i64::try_from(parse_text_lsn(self.text(span)?)?).ok();
        }
        self.integer()
    }

    /// A non-negative JSON integer within BIGINT range.
    fn integer(&mut self) -> Option<i64> {
        let (value, end) = integer_at(self.line, self.at)?;
        self.at = end;
        Some(value)
    }

    /// An unknown field's value: a string, an integer, true, false or null.
    fn skip_simple_value(&mut self) -> Option<()> {
        self.spaces();
        let word: &[u8] = match self.peek()? {
            b'"' => return self.any_string().map(drop),
            b'0'..=b'9' => return self.integer().map(drop),
            b't' => b"true",
            b'f' => b"false",
            b'n' => b"null",
            _ => return None,
        };
        self.line[self.at..]
            .starts_with(word)
            .then(|| self.at += word.len())
    }
}

/// What [`Walk::usual_tail`] found.
struct Tail {
    key: Option<Key>,
    lsn: i64,
    timestamp: Option<Span>,
}

impl Tail {
    fn into_fields(self, fields: &mut Fields) {
        fields.seen |= 1 << LSN;
        fields.key = self.key;
        fields.lsn = self.lsn;
        fields.timestamp = self.timestamp;
    }
}
