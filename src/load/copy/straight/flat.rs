//! Lines written exactly as the scanner writes them, without a backslash:
//! `{"database":"...",` and the other text fields in the table's order,
//! then `"primary_key":{...},"lsn":N,"timestamp":"..."}` (the key and the
//! timestamp optional). With no backslash, every quote ends or starts a
//! string, so each string's end is read from the list of the line's quotes
//! ([`LineMasks::quotes`]) by its rank: no field waits for the one before
//! it to be found. Anything else is left to the walk, which takes these
//! lines too, to the same fields.

use super::masks::{LineMasks, QUOTE_SLOTS};
use super::{Fields, Key, LSN, MAX_KEY_COLUMNS, PRIMARY_KEY, Span, TIMESTAMP, span_bytes};
use crate::load::record::{integer_at, usual_key_at};

/// Each text field is a name and a value: four quotes.
const TEXT_QUOTES: usize = 4 * 9;

/// The fields of `line` into `fields` (empty), when it is written so.
#[inline(always)]
pub fn fields(
    line: &[u8],
    masks: &LineMasks,
    quotes: &mut [u32; QUOTE_SLOTS],
    fields: &mut Fields,
) -> Option<()> {
    let count = masks.quotes(quotes)?;
    let quotes = &quotes[..count];
    if line.first() != Some(&b'{') || count < TEXT_QUOTES {
        return None;
    }
    let quote = |rank: usize| quotes[rank] as usize;
    let mut at = 1;
    for place in 0..9 {
        // `"name":"`, its three quotes the field's first: the fourth ends
        // the value, and a comma follows.
        let len = usual_key_at(line, at, place)?;
        let (open, end) = (quote(4 * place + 2), quote(4 * place + 3));
        if open != at + len || line.get(end + 1) != Some(&b',') {
            return None;
        }
        fields.text[place] = ((open + 1) as u32, end as u32);
        at = end + 2;
    }
    fields.seen = (1 << 9) - 1;
    let mut rank = TEXT_QUOTES;
    if let Some(len) = usual_key_at(line, at, PRIMARY_KEY) {
        let (key, end, used) = compact_key(line, &quotes[rank + 2..], at + len)?;
        fields.key = Some(key);
        rank += 2 + used;
        if line.get(end) != Some(&b',') {
            return None;
        }
        at = end + 1;
    }
    at += usual_key_at(line, at, LSN)?;
    rank += 2;
    let (lsn, end) = integer_at(line, at)?;
    fields.lsn = lsn;
    fields.seen |= 1 << LSN;
    at = end;
    if line.get(at) == Some(&b',') {
        let open = at + 1 + usual_key_at(line, at + 1, TIMESTAMP)?;
        // The name's two quotes, then the value's.
        let (&value_open, rest) = quotes.get(rank + 2..)?.split_first()?;
        if value_open as usize != open {
            return None;
        }
        let end = *rest.first()? as usize;
        fields.timestamp = Some(((open + 1) as u32, end as u32));
        rank += 4;
        at = end + 1;
    }
    // The object's end is the line's, and every quote was accounted for.
    (at + 1 == line.len() && line[at] == b'}' && rank == count).then_some(())
}

/// A primary key object at `start`, written compact, `quotes` being the
/// line's from its first: the key, where it ends and how many quotes it
/// has. Each column once, at most [`MAX_KEY_COLUMNS`] of them.
#[inline(always)]
fn compact_key(line: &[u8], quotes: &[u32], start: usize) -> Option<(Key, usize, usize)> {
    if line.get(start) != Some(&b'{') {
        return None;
    }
    if line.get(start + 1) == Some(&b'}') {
        return Some((
            Key::Verbatim((start as u32, start as u32 + 2)),
            start + 2,
            0,
        ));
    }
    let mut names: [Span; MAX_KEY_COLUMNS] = [(0, 0); MAX_KEY_COLUMNS];
    let mut at = start + 1;
    for (column, four) in quotes.chunks_exact(4).take(MAX_KEY_COLUMNS).enumerate() {
        let [open, close, value_open, value_end] = [four[0], four[1], four[2], four[3]];
        let (close, value_end) = (close as usize, value_end as usize);
        if open as usize != at
            || line.get(close + 1) != Some(&b':')
            || value_open as usize != close + 2
        {
            return None;
        }
        let name = (open + 1, close as u32);
        let bytes = span_bytes(line, name);
        if names[..column]
            .iter()
            .any(|seen| span_bytes(line, *seen) == bytes)
        {
            return None;
        }
        names[column] = name;
        match line.get(value_end + 1)? {
            b',' => at = value_end + 2,
            b'}' => {
                let end = value_end + 2;
                return Some((
                    Key::Verbatim((start as u32, end as u32)),
                    end,
                    4 * (column + 1),
                ));
            }
            _ => return None,
        }
    }
    None
}
