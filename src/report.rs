//! What the user sees of a load: per-line drop messages, the closing
//! summary, `--summary json` and `--metrics-file`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exit::Status;
use crate::load::{Counts, Outcome, SHOWN_DROPS, Snapshot, Stopped};

/// What a load did, as the user sees it.
pub struct Report {
    pub counts: Counts,
    pub mode: Mode,
    /// Where reading stopped early, and why.
    pub stopped: Option<String>,
    /// The errors that failed the run, as said on stderr.
    pub errors: Vec<String>,
}

/// Whether the load wrote anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Load,
    /// Nothing is written: "inserted" means "would be inserted".
    DryRun,
}

impl Report {
    /// The report of a run that never got going.
    pub fn empty(mode: Mode) -> Report {
        Report {
            counts: Counts::default(),
            mode,
            stopped: None,
            errors: Vec::new(),
        }
    }

    /// The report of a finished load.
    pub fn of(outcome: &Outcome, mode: Mode) -> Report {
        Report {
            counts: outcome.counts,
            mode,
            stopped: outcome
                .stopped
                .as_ref()
                .map(|stopped| stopped_text(stopped, outcome.counts.set_aside)),
            errors: Vec::new(),
        }
    }

    /// The closing line of a load.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        // A dry run inserts nothing: its rows only would be.
        let inserted = match self.mode {
            Mode::Load => "inserted",
            Mode::DryRun => "would be inserted",
        };
        let mut text = format!(
            "{} read, {} {inserted}, {} dropped ({} invalid, {} refused by the server, {} lost to database failures",
            c.read,
            c.inserted,
            c.dropped(),
            c.invalid,
            c.refused,
            c.lost
        );
        if c.uncertain > 0 {
            text.push_str(&format!(
                ", {} of unknown outcome (maybe in the table)",
                c.uncertain
            ));
        }
        if c.interrupted > 0 {
            text.push_str(&format!(", {} not loaded when interrupted", c.interrupted));
        }
        text.push(')');
        if c.skipped > 0 {
            text.push_str(&format!("; {} skipped by a trigger", c.skipped));
        }
        if c.left > 0 {
            text.push_str(&format!(
                "; {} left in their files for the next run",
                c.left
            ));
        }
        if c.dropped() > SHOWN_DROPS {
            text.push_str(&format!(
                "; {} dropped lines not shown",
                c.dropped() - SHOWN_DROPS
            ));
        }
        text
    }

    /// Prints the summary, and where reading stopped.
    pub fn print_summary(&self) {
        let mut stderr = std::io::stderr().lock();
        if let Some(stopped) = &self.stopped {
            let _ = writeln!(stderr, "pgsense-pg: {stopped}");
        }
        let dry = match self.mode {
            Mode::DryRun => "dry run, nothing written: ",
            Mode::Load => "",
        };
        let _ = writeln!(stderr, "pgsense-pg: {dry}{}", self.summary());
    }
}

/// "interrupted (SIGTERM): stopped reading FILE after line N" (or "before
/// its first line"), and what was set aside.
fn stopped_text(stopped: &Stopped, set_aside: u64) -> String {
    let mut text = if stopped.input.is_empty() {
        // --follow, before the FILE waited for appeared.
        format!("{}: stopped before any input was opened", stopped.reason)
    } else if stopped.line == 0 {
        format!(
            "{}: stopped reading {} before its first line",
            stopped.reason, stopped.input
        )
    } else {
        format!(
            "{}: stopped reading {} after line {}",
            stopped.reason, stopped.input, stopped.line
        )
    };
    if set_aside > 0 {
        text.push_str(&format!(
            "; the {set_aside} lines after it were appended to the reject file as they are, not parsed"
        ));
    }
    text
}

/// Checks, before a load starts, that the metrics file will be writable:
/// what [`replace`] checks, and that its temporary file can be created.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let target = replaced(path)?;
    let temp = temp_path(&target);
    create_temp(&temp)
        .and_then(|_| std::fs::remove_file(&temp))
        .with_context(|| format!("cannot write metrics file {}", path.display()))
}

/// The file that replacing `path` writes: `path`, or the file a symbolic
/// link there leads to (the link stays). An error when `path` is there
/// and is not a regular file: a file put in place of a directory, a named
/// pipe or a device such as /dev/null would be a mistake made worse.
fn replaced(path: &Path) -> anyhow::Result<PathBuf> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    if let Ok(meta) = std::fs::metadata(&target) {
        let what = if meta.is_dir() {
            "it is a directory"
        } else {
            "it is not a regular file (it is replaced whole on every write)"
        };
        anyhow::ensure!(
            meta.is_file(),
            "cannot write metrics file {}: {what}",
            path.display()
        );
    }
    Ok(target)
}

/// The temporary file beside the metrics file, new: one left by a killed
/// run is removed first, and whatever else is there (a named pipe, which
/// would block the open) makes the open fail.
fn create_temp(temp: &Path) -> std::io::Result<File> {
    if std::fs::symlink_metadata(temp).is_ok_and(|meta| meta.is_file()) {
        std::fs::remove_file(temp)?;
    }
    File::options().write(true).create_new(true).open(temp)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    PathBuf::from(temp)
}

/// A finished load, for machines: `--summary json` and `--metrics-file`.
pub struct RunSummary<'a> {
    pub files: Vec<String>,
    pub report: &'a Report,
    pub seconds: f64,
    pub status: Status,
    /// What the metrics file's `pgsense_alerts_total` held before the run.
    pub alerts_before: AlertTotals,
    /// Errors after the report was made (the metrics file's), as said on
    /// stderr.
    pub late_errors: Vec<String>,
}

/// `pgsense_alerts_total` by status: a counter, which must only grow for
/// Prometheus' `increase()` to be right across runs, so each run adds its
/// counts to what the metrics file held.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AlertTotals {
    pub ok: f64,
    pub error: f64,
}

/// How much of a previous metrics file is read: a few kilobytes are
/// written.
const METRICS_READ_LIMIT: u64 = 1 << 20;

/// The alert totals of the metrics file at `path`: none when it is
/// missing or holds none (a counter that starts again, which Prometheus
/// takes as a reset).
pub fn alerts_in(path: &Path) -> AlertTotals {
    let mut totals = AlertTotals::default();
    // Only a regular file, and its start: a named pipe would wait for a
    // writer (opened without waiting, then looked at), a device might
    // never end. Such a path is refused after.
    let mut text = String::new();
    let read = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .and_then(|file| {
            if !file.metadata()?.is_file() {
                return Err(std::io::ErrorKind::InvalidInput.into());
            }
            file.take(METRICS_READ_LIMIT).read_to_string(&mut text)
        });
    if read.is_err() {
        return totals;
    }
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("pgsense_alerts_total{channel=\"postgres\",status=\"")
        else {
            continue;
        };
        let (field, value) = match rest.split_once("\"} ") {
            Some(("ok", value)) => (&mut totals.ok, value),
            Some(("error", value)) => (&mut totals.error, value),
            _ => continue,
        };
        if let Ok(value) = value.trim().parse::<f64>()
            && value.is_finite()
            && value >= 0.0
        {
            *field = value;
        }
    }
    totals
}

impl RunSummary<'_> {
    fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.report.counts.inserted as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// One JSON object; the field names are documented in the man page and
    /// stay stable.
    pub fn to_json(&self) -> String {
        let r = &self.report.counts;
        serde_json::json!({
            "files": self.files,
            "lines_read": r.read,
            "inserted": r.inserted,
            "rejected_invalid": r.invalid,
            "refused_by_server": r.refused,
            "dropped_database_failure": r.lost,
            "dropped_interrupted": r.interrupted,
            "dropped_outcome_unknown": r.uncertain,
            "left_in_files": r.left,
            "skipped_by_trigger": r.skipped,
            "stopped": self.report.stopped,
            "errors": self.report.errors.iter().chain(&self.late_errors).collect::<Vec<_>>(),
            "dry_run": self.report.mode == Mode::DryRun,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "rows_per_second": self.rows_per_second().round(),
            "exit_status": self.status.code(),
        })
        .to_string()
    }

    /// Prometheus text exposition, replaced atomically (temp file + rename)
    /// so node_exporter's textfile collector never reads half a file.
    pub fn write_metrics(&self, path: &Path) -> anyhow::Result<()> {
        let mut text = self.metrics_text();
        push_metric(
            &mut text,
            "pgsense_pg_last_run_exit_status",
            "gauge",
            "Exit status of the last run.",
            &[("", f64::from(self.status.code()))],
        );
        replace(path, &text)
    }

    /// The metrics of a --follow run going on: its counts so far, what it
    /// has not loaded yet and how long ago it last committed.
    pub fn write_following(&self, path: &Path, snapshot: &Snapshot) -> anyhow::Result<()> {
        let mut text = self.metrics_text();
        push_metric(
            &mut text,
            "pgsense_pg_unloaded_bytes",
            "gauge",
            "Bytes of the followed files not loaded yet.",
            &[("", snapshot.unloaded_bytes as f64)],
        );
        let since = snapshot
            .since_last_commit
            .map_or(self.seconds, |d| d.as_secs_f64());
        push_metric(
            &mut text,
            "pgsense_pg_seconds_since_last_commit",
            "gauge",
            "Seconds since a batch last committed (since the start before the first).",
            &[("", since)],
        );
        replace(path, &text)
    }

    fn metrics_text(&self) -> String {
        let r = &self.report.counts;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut text = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            push_metric(&mut text, name, kind, help, samples);
        };
        metric(
            "pgsense_alerts_total",
            "counter",
            "Findings inserted (status=ok) and dropped (status=error), over the runs that wrote this file.",
            &[
                (
                    "{channel=\"postgres\",status=\"ok\"}",
                    self.alerts_before.ok + r.inserted as f64,
                ),
                (
                    "{channel=\"postgres\",status=\"error\"}",
                    self.alerts_before.error + r.dropped() as f64,
                ),
            ],
        );
        metric(
            "pgsense_pg_dropped_lines",
            "gauge",
            "Lines dropped by the last run (with --follow: since it started), by reason.",
            &[
                ("{reason=\"invalid\"}", r.invalid as f64),
                ("{reason=\"refused\"}", r.refused as f64),
                ("{reason=\"database_failure\"}", r.lost as f64),
                ("{reason=\"interrupted\"}", r.interrupted as f64),
                ("{reason=\"outcome_unknown\"}", r.uncertain as f64),
            ],
        );
        metric(
            "pgsense_pg_skipped_by_trigger",
            "gauge",
            "Rows the last run sent (with --follow: since it started) that a BEFORE INSERT trigger returned NULL for.",
            &[("", r.skipped as f64)],
        );
        metric(
            "pgsense_pg_lines_read",
            "gauge",
            "Lines read by the last run (with --follow: since it started).",
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
            "When the last run ended (with --follow: when this was written), in seconds since the Unix epoch.",
            &[("", now)],
        );
        text
    }
}

fn push_metric(text: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value) in samples {
        text.push_str(&format!("{name}{labels} {value}\n"));
    }
}

/// Replaces the file at `path` with `text`, atomically, when it is a
/// regular file or not there yet ([`replaced`]).
fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let target = replaced(path)?;
    let temp = temp_path(&target);
    let context = || format!("cannot write metrics file {}", path.display());
    let mut file = create_temp(&temp).with_context(context)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&temp, &target));
    if written.is_err() {
        // Not left behind half written (a full disk).
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(context)
}
