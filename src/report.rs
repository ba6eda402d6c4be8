//! What the user sees of a load: per-line drop messages, the closing
//! summary, `--summary json` and `--metrics-file`.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exit::Status;

/// How a dropped line was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The line is not a valid finding.
    Invalid,
    /// The server refused the row (constraint, trigger, value).
    Refused,
    /// The database failed while the row was being written.
    Lost,
    /// Read, but not written because a signal stopped the run.
    Interrupted,
    /// Sent with a COMMIT whose outcome could not be learned: maybe in the
    /// table, maybe not.
    Uncertain,
}

/// The reason for lines not sent because the database had failed for good.
pub const FAILED_EARLIER: &str = "not sent: the database failed earlier in this run";
/// The reason for lines read but not written because a signal stopped the run.
pub const INTERRUPTED: &str = "not inserted: interrupted";

/// Per-line messages shown before the rest are only counted.
const SHOWN_DROPS: u64 = 100;

/// The run's accounting, shared by the reader and the writers.
#[derive(Debug, Default)]
pub struct LoadReport {
    quiet: bool,
    /// Nothing is written: "inserted" means "would be inserted".
    pub dry_run: bool,
    /// Non-blank lines read.
    pub read: u64,
    pub inserted: u64,
    pub invalid: u64,
    pub refused: u64,
    pub lost: u64,
    pub interrupted: u64,
    pub uncertain: u64,
    /// Where reading stopped early, and why.
    pub stopped: Option<String>,
}

impl LoadReport {
    pub fn new(quiet: bool, dry_run: bool) -> Self {
        LoadReport {
            quiet,
            dry_run,
            ..Default::default()
        }
    }

    pub fn dropped(&self) -> u64 {
        self.invalid + self.refused + self.lost + self.interrupted + self.uncertain
    }

    /// Records a dropped line and says so on stderr, until the first
    /// [`SHOWN_DROPS`] have been shown.
    pub fn drop_line(&mut self, kind: Dropped, source: &str, line: u64, reason: &dyn fmt::Display) {
        match kind {
            Dropped::Invalid => self.invalid += 1,
            Dropped::Refused => self.refused += 1,
            Dropped::Lost => self.lost += 1,
            Dropped::Interrupted => self.interrupted += 1,
            Dropped::Uncertain => self.uncertain += 1,
        }
        if !self.quiet && self.dropped() <= SHOWN_DROPS {
            let _ = writeln!(std::io::stderr(), "pgsense-pg: {source}:{line}: {reason}");
        }
    }

    /// The closing line of a load.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} read, {} inserted, {} dropped ({} invalid, {} refused by the server, {} lost to database failures",
            self.read,
            self.inserted,
            self.dropped(),
            self.invalid,
            self.refused,
            self.lost
        );
        if self.uncertain > 0 {
            text.push_str(&format!(
                ", {} of unknown outcome (maybe in the table)",
                self.uncertain
            ));
        }
        if self.interrupted > 0 {
            text.push_str(&format!(
                ", {} not loaded when interrupted",
                self.interrupted
            ));
        }
        text.push(')');
        if self.dropped() > SHOWN_DROPS {
            text.push_str(&format!(
                "; {} dropped lines not shown",
                self.dropped() - SHOWN_DROPS
            ));
        }
        text
    }

    /// Prints the summary (and where reading stopped) unless quiet.
    pub fn print_summary(&self) {
        if self.quiet {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        if let Some(stopped) = &self.stopped {
            let _ = writeln!(stderr, "pgsense-pg: {stopped}");
        }
        let dry = if self.dry_run {
            "dry run, nothing written: "
        } else {
            ""
        };
        let _ = writeln!(stderr, "pgsense-pg: {dry}{}", self.summary());
    }

    /// The exit status the accounting calls for.
    pub fn status(&self) -> Status {
        if self.lost + self.uncertain > 0 {
            Status::TempFail
        } else if self.invalid + self.refused > 0 {
            Status::DataErr
        } else {
            Status::Ok
        }
    }
}

/// A finished load, for machines: `--summary json` and `--metrics-file`.
pub struct RunSummary<'a> {
    pub files: Vec<String>,
    pub report: &'a LoadReport,
    pub seconds: f64,
    pub status: Status,
}

impl RunSummary<'_> {
    fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.report.inserted as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// One JSON object; the field names are documented in the man page and
    /// stay stable.
    pub fn to_json(&self) -> String {
        let r = self.report;
        serde_json::json!({
            "files": self.files,
            "lines_read": r.read,
            "inserted": r.inserted,
            "rejected_invalid": r.invalid,
            "refused_by_server": r.refused,
            "dropped_database_failure": r.lost,
            "dropped_interrupted": r.interrupted,
            "dropped_outcome_unknown": r.uncertain,
            "stopped": r.stopped,
            "dry_run": r.dry_run,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "rows_per_second": self.rows_per_second().round(),
            "exit_status": self.status.code(),
        })
        .to_string()
    }

    /// Prometheus text exposition, replaced atomically (temp file + rename)
    /// so node_exporter's textfile collector never reads half a file.
    pub fn write_metrics(&self, path: &Path) -> anyhow::Result<()> {
        let r = self.report;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                text.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        metric(
            "pgsense_alerts_total",
            "counter",
            "Findings inserted (status=ok) and dropped (status=error) by the last run.",
            &[
                ("{channel=\"postgres\",status=\"ok\"}", r.inserted as f64),
                (
                    "{channel=\"postgres\",status=\"error\"}",
                    r.dropped() as f64,
                ),
            ],
        );
        metric(
            "pgsense_pg_dropped_lines",
            "gauge",
            "Lines dropped by the last run, by reason.",
            &[
                ("{reason=\"invalid\"}", r.invalid as f64),
                ("{reason=\"refused\"}", r.refused as f64),
                ("{reason=\"database_failure\"}", r.lost as f64),
                ("{reason=\"interrupted\"}", r.interrupted as f64),
                ("{reason=\"outcome_unknown\"}", r.uncertain as f64),
            ],
        );
        metric(
            "pgsense_pg_lines_read",
            "gauge",
            "Lines read by the last run.",
            &[("", r.read as f64)],
        );
        metric(
            "pgsense_pg_last_run_duration_seconds",
            "gauge",
            "Wall time of the last run.",
            &[("", self.seconds)],
        );
        metric(
            "pgsense_pg_last_run_timestamp_seconds",
            "gauge",
            "When the last run ended, in seconds since the Unix epoch.",
            &[("", now)],
        );
        metric(
            "pgsense_pg_last_run_exit_status",
            "gauge",
            "Exit status of the last run.",
            &[("", f64::from(self.status.code()))],
        );
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let context = || format!("cannot write metrics file {}", path.display());
        let mut file = File::create(&temp).with_context(context)?;
        file.write_all(text.as_bytes()).with_context(context)?;
        file.sync_all().with_context(context)?;
        std::fs::rename(&temp, path).with_context(context)
    }
}
