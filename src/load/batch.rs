//! Batches: rows encoded as COPY text, each with the line it came from, sent
//! in one transaction; and the spare batches kept for reuse.

use std::ops::Range;
use std::sync::Mutex;

use super::copy::encode;
use super::lock;
use super::record::Finding;

/// Whether the rows of a batch carry `detected_at`: the two kinds go to two
/// COPY statements, so the column default applies to the untimed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Timed,
    Untimed,
}

impl Timing {
    pub fn of(finding: &Finding<'_>) -> Timing {
        if finding.detected_at.is_some() {
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

/// Rows encoded as COPY text, with the lines they came from.
pub struct Batch {
    pub timing: Timing,
    data: Vec<u8>,
    /// The lines as read, for the reject file.
    raw: Vec<u8>,
    pub rows: Vec<Row>,
}

/// Where a row's line is: input index, line number, and the byte offset of
/// the line's start in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub source: usize,
    pub line: u64,
    pub offset: u64,
}

/// One row of a batch; it starts where the previous one ends, in `data` and
/// in `raw`.
pub struct Row {
    pub origin: Origin,
    end: usize,
    raw_end: usize,
}

impl Batch {
    pub fn new(timing: Timing, limits: Limits) -> Batch {
        Batch {
            timing,
            data: Vec::with_capacity(limits.bytes + 4096),
            raw: Vec::new(),
            rows: Vec::with_capacity(limits.rows.min(100_000)),
        }
    }

    pub fn is_full(&self, limits: Limits) -> bool {
        self.rows.len() >= limits.rows || self.data.len() >= limits.bytes
    }

    /// Adds a finding as a row; `raw`, the line as read, is kept for the
    /// reject file when given.
    pub fn push(
        &mut self,
        finding: &Finding<'_>,
        origin: Origin,
        raw: Option<&[u8]>,
        scratch: &mut Vec<u8>,
    ) {
        encode(finding, &mut self.data, scratch);
        if let Some(raw) = raw {
            self.raw.extend_from_slice(raw);
            if !raw.ends_with(b"\n") {
                self.raw.push(b'\n');
            }
        }
        self.rows.push(Row {
            origin,
            end: self.data.len(),
            raw_end: self.raw.len(),
        });
    }

    /// The COPY text of some rows.
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

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.data.clear();
        self.raw.clear();
        self.rows.clear();
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
    pub fn take(&self, timing: Timing) -> Batch {
        let spare = lock(&self.batches).pop();
        match spare {
            Some(mut batch) => {
                batch.timing = timing;
                batch
            }
            None => Batch::new(timing, self.limits),
        }
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

    /// A batch of findings with these lsns, as lines 1.. of input 0.
    pub fn batch_of(lsns: &[u64]) -> Batch {
        let mut batch = Batch::new(
            Timing::Untimed,
            Limits {
                rows: 10,
                bytes: 1 << 20,
            },
        );
        let mut scratch = Vec::new();
        let mut offset = 0;
        for (index, lsn) in lsns.iter().enumerate() {
            let text = line(*lsn) + "\n";
            let finding = parse_line(text.trim_end().as_bytes()).expect("valid finding");
            let origin = Origin {
                source: 0,
                line: index as u64 + 1,
                offset,
            };
            batch.push(&finding, origin, Some(text.as_bytes()), &mut scratch);
            offset += text.len() as u64;
        }
        batch
    }

    #[test]
    fn rows_and_lines_are_sliced_back_out() {
        let batch = batch_of(&[1, 22, 333]);
        assert_eq!(batch.rows.len(), 3);
        assert_eq!(batch.raw_line(1), format!("{}\n", line(22)).as_bytes());
        let copy = String::from_utf8(batch.row_bytes(1..3).to_vec()).expect("utf-8");
        assert_eq!(copy.lines().count(), 2);
        assert!(
            copy.starts_with("d\tr\t") && copy.ends_with("\t333\n"),
            "{copy}"
        );
        assert!(!batch.is_full(Limits {
            rows: 4,
            bytes: 1 << 20
        }));
        assert!(batch.is_full(Limits {
            rows: 3,
            bytes: 1 << 20
        }));
        assert!(batch.is_full(Limits { rows: 9, bytes: 10 }));
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
        let batch = spares.take(Timing::Timed);
        assert!(batch.rows.is_empty() && batch.timing == Timing::Timed);
        assert!(lock(&spares.batches).is_empty(), "only one kept");
    }
}
