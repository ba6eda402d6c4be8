//! What the user sees: per-line drop messages, the closing summary, and the
//! exit status, decided in one place.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

/// The exit statuses scripts rely on (sysexits.h values where one fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every finding read was inserted.
    Ok = 0,
    /// Any other failure.
    Failure = 1,
    /// Some lines were rejected as bad data.
    DataErr = 65,
    /// An input file could not be opened.
    NoInput = 66,
    /// Could not connect, authenticate or bootstrap.
    Unavailable = 69,
    /// Findings were dropped because the database failed during the run.
    TempFail = 75,
    /// Configuration error.
    Config = 78,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

/// An error that carries its exit status; everything else exits 1.
#[derive(Debug)]
pub struct Exit {
    pub status: Status,
    pub error: anyhow::Error,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Exit {}

/// Adds an exit status to a result's error.
pub trait WithStatus<T> {
    fn status(self, status: Status) -> anyhow::Result<T>;
}

impl<T> WithStatus<T> for anyhow::Result<T> {
    fn status(self, status: Status) -> anyhow::Result<T> {
        self.map_err(|error| Exit { status, error }.into())
    }
}

/// The exit status for an error that ended the run.
pub fn status_of(err: &anyhow::Error) -> Status {
    match err.downcast_ref::<Exit>() {
        Some(exit) => exit.status,
        None => Status::Failure,
    }
}

/// How a dropped line was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The line is not a valid finding.
    Invalid,
    /// The server refused the row (constraint, trigger, value).
    Refused,
    /// The database failed while the row was being written.
    Lost,
}

/// Per-line messages shown before the rest are only counted.
const SHOWN_DROPS: u64 = 100;

/// The run's accounting, shared by the reader and the writers.
#[derive(Debug, Default)]
pub struct LoadReport {
    quiet: bool,
    /// Non-blank lines read.
    pub read: u64,
    pub inserted: u64,
    pub invalid: u64,
    pub refused: u64,
    pub lost: u64,
    /// Where reading stopped early, and why.
    pub stopped: Option<String>,
}

impl LoadReport {
    pub fn new(quiet: bool) -> Self {
        LoadReport {
            quiet,
            ..Default::default()
        }
    }

    pub fn dropped(&self) -> u64 {
        self.invalid + self.refused + self.lost
    }

    /// Records a dropped line and says so on stderr, until the first
    /// [`SHOWN_DROPS`] have been shown.
    pub fn drop_line(&mut self, kind: Dropped, source: &str, line: u64, reason: &dyn fmt::Display) {
        match kind {
            Dropped::Invalid => self.invalid += 1,
            Dropped::Refused => self.refused += 1,
            Dropped::Lost => self.lost += 1,
        }
        if !self.quiet && self.dropped() <= SHOWN_DROPS {
            let _ = writeln!(std::io::stderr(), "pgsense-pg: {source}:{line}: {reason}");
        }
    }

    /// The closing line of a load.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} read, {} inserted, {} dropped ({} invalid, {} refused by the server, {} lost to database failures)",
            self.read,
            self.inserted,
            self.dropped(),
            self.invalid,
            self.refused,
            self.lost
        );
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
        let _ = writeln!(stderr, "pgsense-pg: {}", self.summary());
    }

    /// The exit status the accounting calls for.
    pub fn status(&self) -> Status {
        if self.lost > 0 {
            Status::TempFail
        } else if self.invalid + self.refused > 0 {
            Status::DataErr
        } else {
            Status::Ok
        }
    }
}
