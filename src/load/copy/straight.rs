//! Lines of the usual shape straight to COPY rows, without building a
//! [`Finding`](crate::load::record::Finding): the fields are found as spans
//! of the line and copied from it once, into the row.
//!
//! A string's end is found in a bit mask of the quotes and backslashes of
//! each 64 bytes, made in one pass ([`masks`]): the next quote ends the
//! string, and a backslash before it starts one of JSON's short escapes,
//! which is stepped over. A line it does not take (a `\u` escape, a control
//! character, a field twice, a float, an unknown field holding an object,
//! anything wrong) goes through the record path, which says what is
//! wrong. So whatever it takes, the record path
//! would have taken too and written the same row: a unit test holds the two
//! to that, line by line, over thousands of shapes and mutations.

mod flat;
mod masks;
mod room;
mod walk;

use super::{JSONB_VERSION, put_numeric};
use crate::load::record::{Severity, timestamp_micros};
use crate::table::{LsnType, PrimaryKeyType, Wire};
use masks::{LineMasks, QUOTE_SLOTS};
use room::{ROW_SLACK, Room};
use walk::Walk;

/// A byte range of the line.
type Span = (u32, u32);

/// What the straight path keeps from line to line, so as not to make it
/// anew for each: the masks of the line, and the places of its quotes.
pub struct Scratch {
    masks: LineMasks,
    quotes: [u32; QUOTE_SLOTS],
    /// Whether the processor counts and finds bits in one instruction
    /// each (as every one with AVX2 does), which the scan is then
    /// compiled to use: x86-64 itself has neither.
    #[cfg(target_arch = "x86_64")]
    bit_instructions: bool,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            masks: LineMasks::new(),
            quotes: [0; QUOTE_SLOTS],
            #[cfg(target_arch = "x86_64")]
            bit_instructions: std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("bmi1")
                && std::arch::is_x86_feature_detected!("bmi2")
                && std::arch::is_x86_feature_detected!("lzcnt")
                && std::arch::is_x86_feature_detected!("popcnt"),
        }
    }
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch::new()
    }
}

#[cfg(target_arch = "x86_64")]
mod bit_instructions {
    use super::{Scratch, Usual};

    /// [`Usual::scan`] with the instructions that count and find bits.
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
    pub fn scan<'a>(line: &'a [u8], scratch: &mut Scratch) -> Option<Usual<'a>> {
        Usual::scan_with(line, scratch)
    }
}

/// Primary key columns beyond this many are left to the record path.
const MAX_KEY_COLUMNS: usize = 8;

/// Fields by place: the text fields in the table's order, then the others.
const PRIMARY_KEY: usize = 9;
const PRIMARY_KEYS: usize = 10;
const LSN: usize = 11;
const TIMESTAMP: usize = 12;

/// A valid finding, as spans of its line.
#[derive(Debug)]
pub struct Usual<'a> {
    line: &'a [u8],
    text: [Span; 9],
    /// The text fields with escapes, a bit each.
    escaped: u16,
    severity: Severity,
    key: Key,
    lsn: i64,
    /// `detected_at` in microseconds since 2000-01-01, when given.
    micros: Option<i64>,
}

/// The primary key.
#[derive(Debug, PartialEq)]
enum Key {
    None,
    /// A compact object, `{"id":"42"}`: written as it is.
    Verbatim(Span),
    /// Any other object, or the pairs of the older shape (in `span`):
    /// walked again to be written as a compact object.
    Columns {
        span: Span,
        pairs: bool,
    },
}

impl<'a> Usual<'a> {
    /// The finding in `line` (without its terminator), when it has the
    /// usual shape and is valid; None leaves it to the record path.
    pub fn scan(line: &'a [u8], scratch: &mut Scratch) -> Option<Usual<'a>> {
        #[cfg(target_arch = "x86_64")]
        if scratch.bit_instructions {
            // SAFETY: the processor has them, as Scratch::new asked.
            return unsafe { bit_instructions::scan(line, scratch) };
        }
        Usual::scan_with(line, scratch)
    }

    /// [`Usual::scan`], compiled where it is inlined.
    #[inline(always)]
    fn scan_with(line: &'a [u8], scratch: &mut Scratch) -> Option<Usual<'a>> {
        let mut fields = Fields::default();
        let masks = &mut scratch.masks;
        // None for a line too long for the masks, so spans fit in u32.
        masks.make(line)?;
        if flat::fields(line, masks, &mut scratch.quotes, &mut fields).is_none() {
            fields = Fields::default();
            let mut walk = Walk::new(line, masks);
            walk.object(&mut fields)?;
            walk.spaces();
            if walk.at != line.len() {
                return None;
            }
        }
        // The bytes over 0x7f are all between the first and the last, with
        // ASCII (or nothing) on either side, so the line is UTF-8 when
        // those bytes are.
        if let Some((first, last)) = masks.high
            && std::str::from_utf8(&line[first..=last]).is_err()
        {
            return None;
        }
        fields.into_usual(line)
    }

    pub fn lsn(&self) -> i64 {
        self.lsn
    }

    pub fn is_timed(&self) -> bool {
        self.micros.is_some()
    }

    /// Appends the finding as a row of COPY binary format, byte for byte
    /// what [`super::encode`] writes for it.
    pub fn encode(&self, out: &mut Vec<u8>, wire: Wire) {
        let start = out.len();
        // Each field is a part of the line, or a number: the room is made
        // once, and the row is what was written into it.
        let room = self.line.len() + ROW_SLACK;
        out.reserve(room);
        let mut room = Room {
            out: &mut out.spare_capacity_mut()[..room],
            at: 0,
        };
        self.write(&mut room, wire);
        let written = room.at;
        // SAFETY: the room is `out`'s capacity past its length, and a Room
        // writes every byte before `at` (see `Room`): the row's bytes.
        unsafe { out.set_len(start + written) };
    }

    fn write(&self, room: &mut Room<'_>, wire: Wire) {
        let fields: u16 = if self.micros.is_some() { 12 } else { 11 };
        room.bytes(&fields.to_be_bytes());
        for (place, span) in self.text.iter().enumerate() {
            if place == 4 {
                room.field(self.severity.as_str().as_bytes());
            } else if self.escaped & 1 << place != 0 {
                let length_at = room.at;
                room.bytes(&[0; 4]);
                room.unescaped(self.line, *span);
                room.length_since(length_at);
            } else {
                room.length(span_len(*span));
                room.span(self.line, *span);
            }
        }
        let length_at = room.at;
        room.bytes(&[0; 4]);
        if wire.primary_key == PrimaryKeyType::Jsonb {
            room.bytes(&[JSONB_VERSION]);
        }
        match &self.key {
            Key::None => room.bytes(b"{}"),
            Key::Verbatim(span) => room.span(self.line, *span),
            Key::Columns { span, pairs } => {
                room.bytes(b"{");
                let mut masks = LineMasks::new();
                masks.make(self.line).expect("the line was walked before");
                let mut walk = Walk::new(self.line, &masks);
                walk.at = span.0 as usize;
                let mut first = true;
                walk.columns(*pairs, |name, value| {
                    if !std::mem::take(&mut first) {
                        room.bytes(b",");
                    }
                    room.quoted(self.line, name);
                    room.bytes(b":");
                    room.quoted(self.line, value);
                    Some(())
                })
                .expect("the key was walked before");
                room.bytes(b"}");
            }
        }
        room.length_since(length_at);
        match wire.lsn {
            LsnType::Bigint => room.field(&self.lsn.to_be_bytes()),
            LsnType::Numeric => {
                let mut numeric = Vec::with_capacity(32);
                put_numeric(&mut numeric, self.lsn);
                room.field(&numeric);
            }
        }
        if let Some(micros) = self.micros {
            room.field(&micros.to_be_bytes());
        }
    }
}

fn span_len((start, end): Span) -> usize {
    (end - start) as usize
}

fn span_bytes(line: &[u8], (start, end): Span) -> &[u8] {
    &line[start as usize..end as usize]
}

/// What the walk found, by field.
#[derive(Default, Debug, PartialEq)]
struct Fields {
    /// Places seen, a bit each.
    seen: u32,
    text: [Span; 9],
    /// The text fields with escapes, a bit each.
    escaped: u16,
    key: Option<Key>,
    lsn: i64,
    timestamp: Option<Span>,
}

impl Fields {
    /// The finding, when every field it needs is there and valid.
    fn into_usual(self, line: &[u8]) -> Option<Usual<'_>> {
        let bytes = |(start, end): Span| &line[start as usize..end as usize];
        const NEEDED: u32 = ((1 << 9) - 1) | (1 << LSN);
        if self.seen & NEEDED != NEEDED {
            return None;
        }
        if self.escaped & 1 << 4 != 0 {
            return None;
        }
        let severity = Severity::parse(bytes(self.text[4]))?;
        let micros = match self.timestamp {
            None => None,
            Some(span) => Some(timestamp_micros(bytes(span)).ok()?),
        };
        Some(Usual {
            line,
            text: self.text,
            escaped: self.escaped,
            severity,
            key: self.key.unwrap_or(Key::None),
            lsn: self.lsn,
            micros,
        })
    }
}

#[cfg(test)]
mod tests;
