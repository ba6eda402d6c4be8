//! The progress line: one updating line on stderr, for a person watching a
//! big file being loaded.

use std::io::Write;
use std::time::{Duration, Instant};

use super::control::Control;
use super::ledger::Ledger;
use super::reader::Position;

/// Shows bytes and lines done, rows/s and an ETA, out of `total` input
/// bytes, until the writers are done.
pub fn show(ledger: &Ledger, control: &Control, position: &Position, total: u64) {
    let started = Instant::now();
    let mut stderr = std::io::stderr();
    while !control.is_done() {
        std::thread::sleep(Duration::from_millis(250));
        let done = position.bytes();
        let counts = ledger.counts();
        let line = line(done, total, counts.read, counts.inserted, started.elapsed());
        let _ = write!(stderr, "\r\x1b[K{line}");
    }
    let _ = write!(stderr, "\r\x1b[K");
}

fn line(done: u64, total: u64, read: u64, inserted: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let eta = if done > 0 && done < total {
        format!("{:.0} s", seconds * (total - done) as f64 / done as f64)
    } else {
        "-".into()
    };
    format!(
        "{:.1}/{:.1} MB ({:.0}%)  {read} lines  {inserted} inserted  {:.0} rows/s  ETA {eta}",
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
        let text = line(5_000_000, 10_000_000, 400, 300, Duration::from_secs(10));
        assert_eq!(
            text,
            "5.0/10.0 MB (50%)  400 lines  300 inserted  30 rows/s  ETA 10 s"
        );
        assert!(line(0, 10, 0, 0, Duration::ZERO).ends_with("ETA -"));
    }
}
