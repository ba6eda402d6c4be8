//! Exit statuses: the [`Status`] a run ends with, the marker error that
//! carries one ([`Exit`]), and [`STATUSES`], the one table that `--help`, the
//! man page and the README are written from.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

/// The exit statuses scripts rely on (sysexits.h values where one fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every finding read was inserted.
    Ok,
    /// Any other failure.
    Failure,
    /// Flags that contradict each other.
    Usage,
    /// Some lines were rejected as bad data.
    DataErr,
    /// An input file could not be opened.
    NoInput,
    /// Could not connect, authenticate or bootstrap.
    Unavailable,
    /// An output file (reject, state, metrics) could not be created.
    CantCreate,
    /// Findings were dropped because the database failed during the run.
    TempFail,
    /// Configuration error.
    Config,
    /// Stopped by this signal: 128 + its number, as shells report it.
    Signal(i32),
}

impl Status {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Failure => 1,
            Status::Usage => 2,
            Status::DataErr => 65,
            Status::NoInput => 66,
            Status::Unavailable => 69,
            Status::CantCreate => 73,
            Status::TempFail => 75,
            Status::Config => 78,
            Status::Signal(signal) => u8::try_from(128 + signal).unwrap_or(1),
        }
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// One documented exit status (or a pair that mean the same thing).
pub struct Documented {
    pub codes: &'static [u8],
    /// One line, for `--help`.
    pub brief: &'static str,
    /// The whole story, for the man page and the README.
    pub detail: &'static str,
}

/// Every exit status, in the order they are documented.
pub const STATUSES: &[Documented] = &[
    Documented {
        codes: &[0],
        brief: "every finding read was inserted",
        detail: "every finding read was inserted (or, for init, the bootstrap succeeded; \
                 for check, a load would succeed)",
    },
    Documented {
        codes: &[2],
        brief: "usage error",
        detail: "usage error: bad flags or arguments, a reject file that is also an input, a state file (or, with one, a reject file) that is not a regular file, or a state file that is a copy or hard link of another still there, or was moved without its journal",
    },
    Documented {
        codes: &[65],
        brief: "some lines were rejected as bad data (by validation or by the server)",
        detail: "the run completed, and some lines were rejected as bad data: by validation, \
                 or refused by the server (a constraint, a trigger, a value it rejects)",
    },
    Documented {
        codes: &[66],
        brief: "an input file could not be opened; nothing loaded",
        detail: "an input FILE could not be opened; checked before connecting, nothing loaded",
    },
    Documented {
        codes: &[69],
        brief: "could not connect, authenticate or bootstrap; nothing loaded",
        detail: "could not connect, authenticate or bootstrap at startup; nothing loaded \
                 (for check: a load would not succeed)",
    },
    Documented {
        codes: &[73],
        brief: "an output file could not be created; nothing loaded",
        detail: "an output file (the reject file, the state file or its lock or journal, \
                 the metrics file) could not be created; checked before connecting, \
                 nothing loaded",
    },
    Documented {
        codes: &[75],
        brief: "some findings were dropped because the database failed during the run",
        detail: "some findings were dropped because the database failed during the run \
                 (connection lost, server shut down...) and retries ran out: retrying later \
                 may succeed; takes precedence over 65. Also: another run holds the state \
                 file; with --follow, a database error that retrying cannot fix, or a batch \
                 whose outcome cannot be learned, ended the run (the lines stay in their files)",
    },
    Documented {
        codes: &[78],
        brief: "configuration error; nothing attempted",
        detail: "configuration error (missing, unreadable or malformed config file, unknown \
                 key, invalid identifier, unreadable password file); nothing attempted",
    },
    Documented {
        codes: &[129, 130, 143],
        brief: "interrupted by SIGHUP, SIGINT or SIGTERM",
        detail: "interrupted by SIGHUP (the terminal closed), SIGINT or SIGTERM: batches \
                 already sent committed, lines read \
                 but not sent were dropped (and written to the reject file); with \
                 --state-file, those of files stay in them for the next run, reject file \
                 or not; with --follow, \
                 the way it stops: lines not committed stay in their files for the next \
                 start (systemd: SuccessExitStatus=129 130 143)",
    },
    Documented {
        codes: &[1],
        brief: "any other failure",
        detail: "any other failure, such as an input file that cannot be read to its end (a \
                 corrupt or truncated compressed file: its lines before the damage and the other \
                 inputs are loaded, and the error names the file and the line), a reject, \
                 state or metrics file that cannot be written, or a batch of a stopped run \
                 whose outcome the server cannot tell (see --settle)",
    },
];

/// The codes of an entry as written everywhere: "130, 143".
pub fn codes_text(entry: &Documented) -> String {
    let codes: Vec<String> = entry.codes.iter().map(u8::to_string).collect();
    codes.join(", ")
}

/// The "Exit status:" block at the end of `--help`.
pub fn long_help() -> String {
    let mut text = String::from("Exit status:");
    let width = STATUSES
        .iter()
        .map(|entry| codes_text(entry).len())
        .max()
        .unwrap_or(0);
    for entry in STATUSES {
        let codes = codes_text(entry);
        text.push_str(&format!("\n  {codes:<width$}  {}", entry.brief));
    }
    text
}

/// Prints an error the way every error of this tool is printed: one line,
/// the whole chain.
pub fn print_error(err: &anyhow::Error) {
    let _ = writeln!(std::io::stderr(), "pgsense-pg: error: {err:#}");
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
    /// An error that already carries a status keeps it: the innermost
    /// decision is the most specific.
    fn status(self, status: Status) -> anyhow::Result<T> {
        self.map_err(|error| {
            if error.is::<Exit>() {
                error
            } else {
                Exit { status, error }.into()
            }
        })
    }
}

/// The exit status for an error that ended the run.
pub fn status_of(err: &anyhow::Error) -> Status {
    match err.downcast_ref::<Exit>() {
        Some(exit) => exit.status,
        None => Status::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_documented_once() {
        let all = [
            Status::Ok,
            Status::Failure,
            Status::Usage,
            Status::DataErr,
            Status::NoInput,
            Status::Unavailable,
            Status::CantCreate,
            Status::TempFail,
            Status::Config,
            Status::Signal(1),
            Status::Signal(2),
            Status::Signal(15),
        ];
        for status in all {
            let found = STATUSES
                .iter()
                .filter(|e| e.codes.contains(&status.code()))
                .count();
            assert_eq!(found, 1, "{status:?} ({})", status.code());
        }
        let documented: usize = STATUSES.iter().map(|e| e.codes.len()).sum();
        assert_eq!(documented, all.len(), "a documented code no Status has");
    }

    #[test]
    fn status_sticks_to_the_innermost_decision() {
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("x"));
        let err = err.status(Status::NoInput).status(Status::Failure);
        assert_eq!(status_of(&err.unwrap_err()), Status::NoInput);
        assert_eq!(status_of(&anyhow::anyhow!("plain")), Status::Failure);
    }
}
