//! What a line read is: too long, blank, invalid (with its reason) or a
//! finding.

use crate::load::copy::{Scratch, Usual, Valid};
use crate::load::input::{Line, trim_line};
use crate::load::record::{self, RejectReason};

/// What a line read is.
// One lives at a time, on the stack: boxing the finding would allocate per
// line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Kind<'a> {
    /// Longer than --max-line-bytes: skipped, already in the reject file.
    TooLong {
        length: u64,
    },
    /// Empty or white space only: not a finding, not counted.
    Blank,
    /// Not a valid finding; `raw` is the line as read.
    Invalid {
        raw: &'a [u8],
        reason: RejectReason,
    },
    Finding {
        raw: &'a [u8],
        finding: Valid<'a>,
    },
}

/// Whether a line holds nothing but JSON's white space: a form feed, which
/// is not, makes a line that is not JSON, as a vertical tab does.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Classifies the line [`next_line`] read into `buf`; `at_start` says it
/// is the first line of its input, where a UTF-8 BOM is skipped.
pub fn classify<'a>(next: &Line, buf: &'a [u8], at_start: bool, scratch: &mut Scratch) -> Kind<'a> {
    if let Line::TooLong { length, .. } = next {
        return Kind::TooLong { length: *length };
    }
    let raw = if at_start {
        buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(buf)
    } else {
        buf
    };
    let text = trim_line(raw);
    if let Some(usual) = Usual::scan(text, scratch) {
        return Kind::Finding {
            raw,
            finding: Valid::Usual(usual),
        };
    }
    if is_blank(text) {
        return Kind::Blank;
    }
    match record::parse_line(text) {
        Ok(finding) => Kind::Finding {
            raw,
            finding: Valid::Parsed(Box::new(finding)),
        },
        Err(reason) => Kind::Invalid { raw, reason },
    }
}

/// The reason a line is invalid, with a hint when its line endings are
/// CR alone (old Mac style), which makes the whole file one line.
pub(super) fn with_hint(raw: &[u8], reason: String) -> String {
    let text = trim_line(raw);
    if memchr::memchr(b'\r', text).is_some() {
        format!(
            "{reason} (the line holds carriage returns: if the file ends lines with CR alone, \
             convert it first, e.g. with tr '\\r' '\\n')"
        )
    } else {
        reason
    }
}
