//! A row being written into room made for it beforehand.

use std::mem::MaybeUninit;

use super::Span;

/// Room made for a row beyond the length of its line: what a row has that
/// a line does not (the field count, the lengths, the jsonb version, an
/// lsn as numeric: under 80 bytes), and the 16 bytes a copy may overrun.
pub const ROW_SLACK: usize = 128;

/// A row being written into room made for it, not initialised: each byte
/// before `at` has been written (the bytes past it may have been too).
pub struct Room<'o> {
    pub out: &'o mut [MaybeUninit<u8>],
    pub at: usize,
}

impl Room<'_> {
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].write_copy_of_slice(bytes);
        self.at += bytes.len();
    }

    pub fn length(&mut self, length: usize) {
        let length = u32::try_from(length).expect("a field is shorter than its line");
        self.bytes(&length.to_be_bytes());
    }

    /// Sets the length written at `at` to that of what follows it.
    pub fn length_since(&mut self, at: usize) {
        let length = u32::try_from(self.at - at - 4).expect("a field is shorter than its line");
        self.out[at..at + 4].write_copy_of_slice(&length.to_be_bytes());
    }

    pub fn field(&mut self, value: &[u8]) {
        self.length(value.len());
        self.bytes(value);
    }

    /// A span of `line`, sixteen bytes at a time: fields are short, and a
    /// copy of a length not known in advance would cost a call each. The
    /// bytes written past the span are overwritten or trimmed.
    pub fn span(&mut self, line: &[u8], (start, end): Span) {
        let (start, end) = (start as usize, end as usize);
        let mut from = start;
        while from < end {
            let to = self.at + from - start;
            match (line.get(from..from + 16), self.out.get_mut(to..to + 16)) {
                (Some(chunk), Some(room)) => {
                    room.write_copy_of_slice(chunk);
                }
                _ => {
                    self.out[to..to + end - from].write_copy_of_slice(&line[from..end]);
                    break;
                }
            }
            from += 16;
        }
        self.at += end - start;
    }

    /// A span of `line` that holds escapes, unescaped.
    pub fn unescaped(&mut self, line: &[u8], (start, end): Span) {
        let end = end as usize;
        let mut from = start as usize;
        while let Some(escape) = memchr::memchr(b'\\', &line[from..end]).map(|at| from + at) {
            self.span(line, (from as u32, escape as u32));
            self.bytes(&[match line[escape + 1] {
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                // A quote, a backslash or a slash.
                same => same,
            }]);
            from = escape + 2;
        }
        self.span(line, (from as u32, end as u32));
    }

    /// A string without anything to escape, as JSON.
    pub fn quoted(&mut self, line: &[u8], span: Span) {
        self.bytes(b"\"");
        self.span(line, span);
        self.bytes(b"\"");
    }
}
