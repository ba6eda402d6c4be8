//! The progress line: one updating line on stderr, for a person watching a
//! big file being loaded.

use std::io::Write;
use std::time::{Duration, Instant};

use super::control::Control;
use super::ledger::Ledger;
use super::reader::Position;

/// How much input there is to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Bytes(u64),
    /// Standard input or a pipe among the inputs: no share done, no ETA.
    Unknown,
}

/// Shows bytes and lines done, rows/s and an ETA, out of `total` input
/// bytes, until the writers are done; `done` says what happened to the
/// rows ("inserted", or "checked" in a dry run).
pub fn show(ledger: &Ledger, control: &Control, position: &Position, total: Total, done: &str) {
    let started = Instant::now();
    let mut stderr = std::io::stderr();
    while !control.is_done() {
        std::thread::sleep(Duration::from_millis(250));
        let bytes = position.bytes();
        let counts = ledger.counts();
        let rows = (counts.inserted, done);
        let line = line(bytes, total, counts.read, rows, started.elapsed());
        let _ = write!(stderr, "\r\x1b[K{line}");
    }
    let _ = write!(stderr, "\r\x1b[K");
}

/// The progress line; `rows`: how many, and what happened to them.
fn line(done: u64, total: Total, read: u64, rows: (u64, &str), elapsed: Duration) -> String {
    let (inserted, what) = rows;
    let seconds = elapsed.as_secs_f64().max(0.001);
    let Total::Bytes(total) = total else {
        return format!(
            "{:.1} MB  {read} read  {inserted} {what}  {:.0} rows/s",
            done as f64 / 1e6,
            inserted as f64 / seconds,
        );
    };
    let eta = if done > 0 && done < total {
        format!("{:.0} s", seconds * (total - done) as f64 / done as f64)
    } else {
        "-".into()
    };
    format!(
        "{:.1}/{:.1} MB ({:.0}%)  {read} read  {inserted} {what}  {:.0} rows/s  ETA {eta}",
        done as f64 / 1e6,
        total as f64 / 1e6,
        100.0 * done as f64 / total.max(1) as f64,
        inserted as f64 / seconds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halfway_after_ten_seconds_has_ten_seconds_left() {
        let text = line(
            5_000_000,
            Total::Bytes(10_000_000),
            400,
            (300, "inserted"),
            Duration::from_secs(10),
        );
        assert_eq!(
            text,
            "5.0/10.0 MB (50%)  400 read  300 inserted  30 rows/s  ETA 10 s"
        );
        assert!(line(0, Total::Bytes(10), 0, (0, "checked"), Duration::ZERO).ends_with("ETA -"));
        assert_eq!(
            line(
                2_500_000,
                Total::Unknown,
                400,
                (300, "inserted"),
                Duration::from_secs(10)
            ),
            "2.5 MB  400 read  300 inserted  30 rows/s"
        );
    }
}
