//! Batches: a run of consecutive lines of one input, settled as one. Its
//! findings are COPY binary rows in two parts (with and without
//! `detected_at`: two COPY statements, so the column default applies to
//! the untimed rows), each row with the line it came from; the lines the
//! reader rejected are kept as read, for the reject file.

use std::ops::Range;
use std::sync::Mutex;

use super::copy::Valid;
use super::lock;
use crate::state::Seen;
use crate::table::{self, Wire};

/// Whether rows carry `detected_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Timed,
    Untimed,
}

impl Timing {
    pub fn of(finding: &Valid<'_>) -> Timing {
        if finding.is_timed() {
            Timing::Timed
        } else {
            Timing::Untimed
        }
    }
}

/// How big a batch may grow.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rows: usize,
    pub bytes: usize,
}

/// Where a row's line is: input index, line number, and the byte offset of
/// the line's start in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub source: usize,
    pub line: u64,
    pub offset: u64,
}

/// Rows for one COPY statement, with the lines they came from.
pub struct Rows {
    pub timing: Timing,
    data: Vec<u8>,
    /// The lines as read, for the reject file.
    raw: Vec<u8>,
    pub rows: Vec<Row>,
}

/// One row; it starts where the previous one ends, in `data` and in `raw`.
pub struct Row {
    pub origin: Origin,
    /// The finding's lsn, to recognise the row in the table.
    pub lsn: i64,
    end: usize,
    raw_end: usize,
}

impl Rows {
    fn new(timing: Timing, limits: Limits) -> Rows {
        Rows {
            timing,
            data: Vec::with_capacity(limits.bytes / 2 + 4096),
            raw: Vec::new(),
            rows: Vec::with_capacity(limits.rows.min(100_000)),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The COPY binary rows of some rows (without the header and trailer
    /// of a COPY).
    pub fn row_bytes(&self, rows: Range<usize>) -> &[u8] {
        let start = match rows.start {
            0 => 0,
            n => self.rows[n - 1].end,
        };
        &self.data[start..self.rows[rows.end - 1].end]
    }

    /// A row's line as read, newline-terminated (empty when lines are not
    /// kept).
    pub fn raw_line(&self, row: usize) -> &[u8] {
        let start = match row {
            0 => 0,
            n => self.rows[n - 1].raw_end,
        };
        &self.raw[start..self.rows[row].raw_end]
    }

    fn clear(&mut self) {
        self.data.clear();
        self.raw.clear();
        self.rows.clear();
    }
}

/// Consecutive lines of one input, settled together.
pub struct Batch {
    /// Batches are settled in this order.
    pub seq: u64,
    pub source: usize,
    /// Where the batch ends in its input: byte offset and lines before it.
    pub end: (u64, u64),
    /// The fingerprints of what was read up to `end`.
    pub seen: Seen,
    /// Lines the batch covers (blank and rejected ones included).
    pub lines: u64,
    pub timed: Rows,
    pub untimed: Rows,
    /// The lines the reader rejected, as read, each newline-terminated.
    pub rejects: Vec<u8>,
    /// How many lines the reader rejected as invalid (kept in `rejects`
    /// when there is a reject file).
    pub invalid: u64,
    /// The binary forms of the table's columns.
    wire: Wire,
}

impl Batch {
    fn new(limits: Limits) -> Batch {
        Batch {
            seq: 0,
            source: 0,
            end: (0, 0),
            seen: Seen::default(),
            lines: 0,
            timed: Rows::new(Timing::Timed, limits),
            untimed: Rows::new(Timing::Untimed, limits),
            rejects: Vec::new(),
            invalid: 0,
            wire: table::wire(),
        }
    }

    /// Rows with a finding.
    pub fn rows(&self) -> usize {
        self.timed.len() + self.untimed.len()
    }

    pub fn part(&self, timing: Timing) -> &Rows {
        match timing {
            Timing::Timed => &self.timed,
            Timing::Untimed => &self.untimed,
        }
    }

    pub fn parts(&self) -> [&Rows; 2] {
        [&self.timed, &self.untimed]
    }

    /// Every row, as its part and its index there, in input order (each
    /// part is, and the two are merged).
    pub fn in_input_order(&self) -> impl Iterator<Item = (&Rows, usize)> {
        let (mut timed, mut untimed) = (0, 0);
        std::iter::from_fn(move || {
            let line = |rows: &Rows, index: usize| rows.rows.get(index).map(|r| r.origin.line);
            let take_timed = match (line(&self.timed, timed), line(&self.untimed, untimed)) {
                (None, None) => return None,
                (Some(a), Some(b)) => a < b,
                (a, _) => a.is_some(),
            };
            Some(if take_timed {
                timed += 1;
                (&self.timed, timed - 1)
            } else {
                untimed += 1;
                (&self.untimed, untimed - 1)
            })
        })
    }

    pub fn is_full(&self, limits: Limits) -> bool {
        self.rows() >= limits.rows
            || self.timed.data.len() + self.untimed.data.len() + self.rejects.len() >= limits.bytes
    }

    /// Adds a finding as a row; `raw`, the line as read, is kept for the
    /// reject file when given.
    pub fn push(&mut self, finding: &Valid<'_>, origin: Origin, raw: Option<&[u8]>) {
        let rows = match Timing::of(finding) {
            Timing::Timed => &mut self.timed,
            Timing::Untimed => &mut self.untimed,
        };
        finding.encode(&mut rows.data, self.wire);
        if let Some(raw) = raw {
            push_line(&mut rows.raw, raw);
        }
        rows.rows.push(Row {
            origin,
            lsn: finding.lsn(),
            end: rows.data.len(),
            raw_end: rows.raw.len(),
        });
    }

    /// Keeps a rejected line for the reject file.
    pub fn reject(&mut self, raw: &[u8]) {
        push_line(&mut self.rejects, raw);
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.timed.clear();
        self.untimed.clear();
        self.rejects.clear();
        self.invalid = 0;
        self.lines = 0;
    }
}

/// Appends a line, newline-terminated.
fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    if !line.ends_with(b"\n") {
        out.push(b'\n');
    }
}

/// Written batches, emptied, for the reader to fill again: memory stays
/// flat and the allocator is not asked for megabytes per batch.
pub struct Spares {
    batches: Mutex<Vec<Batch>>,
    keep: usize,
    limits: Limits,
}

impl Spares {
    pub fn new(keep: usize, limits: Limits) -> Spares {
        Spares {
            batches: Mutex::new(Vec::new()),
            keep,
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Returns a written batch for reuse.
    pub fn recycle(&self, mut batch: Batch) {
        batch.clear();
        let mut spare = lock(&self.batches);
        if spare.len() < self.keep {
            spare.push(batch);
        }
    }

    /// An empty batch, reused when one is spare.
    pub fn take(&self) -> Batch {
        let spare = lock(&self.batches).pop();
        spare.unwrap_or_else(|| Batch::new(self.limits))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::load::record::parse_line;

    /// A valid finding line with this lsn.
    pub fn line(lsn: u64) -> String {
        format!(
            r#"{{"database":"d","rule_id":"r","description":"x","category":"c","severity":"high","schema_name":"s","table_name":"t","column_name":"c","masked_sample":"m","lsn":{lsn}}}"#
        )
    }

    /// A batch of findings with these lsns, as lines 1.. of input 0; odd
    /// lsns carry detected_at.
    pub fn batch_of(lsns: &[u64]) -> Batch {
        let mut batch = Batch::new(Limits {
            rows: 10,
            bytes: 1 << 20,
        });
        let mut offset = 0;
        for (index, lsn) in lsns.iter().enumerate() {
            let mut text = line(*lsn);
            if lsn % 2 == 1 {
                text.insert_str(text.len() - 1, r#","detected_at":"2024-01-01T00:00:00Z""#);
            }
            text.push('\n');
            let finding = Valid::Parsed(Box::new(
                parse_line(text.trim_end().as_bytes()).expect("valid finding"),
            ));
            let origin = Origin {
                source: 0,
                line: index as u64 + 1,
                offset,
            };
            batch.push(&finding, origin, Some(text.as_bytes()));
            offset += text.len() as u64;
            batch.lines += 1;
        }
        batch.end = (offset, lsns.len() as u64);
        batch
    }

    #[test]
    fn rows_are_split_by_timing_and_sliced_back_out() {
        let batch = batch_of(&[2, 4, 5, 6]);
        assert_eq!(
            (batch.timed.len(), batch.untimed.len(), batch.rows()),
            (1, 3, 4)
        );
        assert_eq!(
            batch.untimed.raw_line(1),
            format!("{}\n", line(4)).as_bytes()
        );
        let copy = batch.untimed.row_bytes(1..3);
        let row = |lsn: i64| {
            let mut row = Vec::new();
            let line = line(lsn as u64);
            let finding = parse_line(line.as_bytes()).expect("valid finding");
            crate::load::copy::encode(&finding, &mut row, Wire::CREATED);
            row
        };
        assert_eq!(copy, [row(4), row(6)].concat());
        assert_eq!(batch.timed.rows[0].origin.line, 3);
        let limits = |rows, bytes| Limits { rows, bytes };
        assert!(!batch.is_full(limits(5, 1 << 20)));
        assert!(batch.is_full(limits(4, 1 << 20)));
        assert!(batch.is_full(limits(9, 10)));
    }

    #[test]
    fn rows_of_both_parts_come_back_in_input_order() {
        for lsns in [&[2, 4, 1, 3, 6, 5, 7][..], &[1, 3], &[2], &[]] {
            let batch = batch_of(lsns);
            let ordered: Vec<(u64, i64)> = batch
                .in_input_order()
                .map(|(rows, index)| (rows.rows[index].origin.line, rows.rows[index].lsn))
                .collect();
            let expected: Vec<(u64, i64)> = (1..).zip(lsns.iter().map(|&lsn| lsn as i64)).collect();
            assert_eq!(ordered, expected);
        }
    }

    #[test]
    fn rejected_lines_are_kept_newline_terminated() {
        let mut batch = batch_of(&[]);
        batch.reject(b"{bad");
        batch.reject(b"{worse\n");
        assert_eq!(batch.rejects, b"{bad\n{worse\n");
        batch.clear();
        assert!(batch.rejects.is_empty() && batch.rows() == 0 && batch.lines == 0);
    }

    #[test]
    fn spares_are_emptied_and_bounded() {
        let spares = Spares::new(
            1,
            Limits {
                rows: 10,
                bytes: 100,
            },
        );
        spares.recycle(batch_of(&[1]));
        spares.recycle(batch_of(&[2]));
        assert_eq!(spares.take().rows(), 0);
        assert!(lock(&spares.batches).is_empty(), "only one kept");
    }
}
