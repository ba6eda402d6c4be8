//! Running the pgsense-pg binary the way a user does, in a scrubbed
//! environment: only PATH survives, so no PG* variable, RUST_LOG, HOME or
//! PGSENSE_PG_CONFIG of the developer's shell can change what a test sees.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::pg::PgServer;
use super::process::{self, Stdin};

/// How long one run of the binary may take before the test fails.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A pgsense-pg command line being put together.
pub struct Pgsense {
    cmd: Command,
    stdin: Option<Stdin>,
    stdout: Option<File>,
    timeout: Duration,
}

/// pgsense-pg with no arguments and a scrubbed environment.
pub fn pgsense() -> Pgsense {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgsense-pg"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    Pgsense {
        cmd,
        stdin: None,
        stdout: None,
        timeout: DEFAULT_TIMEOUT,
    }
}

impl PgServer {
    /// pgsense-pg with connection flags (before the command) pointing at
    /// database `db` of this server as the superuser, over TCP.
    pub fn pgsense(&self, db: &str) -> Pgsense {
        self.pgsense_as(db, "postgres")
    }

    /// pgsense-pg connecting to `db` of this server as `user`, over TCP.
    pub fn pgsense_as(&self, db: &str, user: &str) -> Pgsense {
        pgsense()
            .args(["--host", self.host()])
            .args(["--port", &self.port().to_string()])
            .args(["--dbname", db, "--username", user])
    }
}

impl Pgsense {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Bytes for standard input (closed after them). Without this, stdin is
    /// /dev/null.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Stdin::Bytes(bytes.into()));
        self
    }

    /// Standard input from an open file (or directory, or device).
    pub fn stdin_file(mut self, file: File) -> Self {
        self.stdin = Some(Stdin::File(file));
        self
    }

    /// Standard output to an open file instead of captured.
    pub fn stdout_file(mut self, file: File) -> Self {
        self.stdout = Some(file);
        self
    }

    /// Runs it with these soft and hard limits of open files (ulimit -n).
    pub fn open_files_limit(mut self, soft: u64, hard: u64) -> Self {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: between fork and exec the closure only calls setrlimit,
        // which is async-signal-safe, on a struct it owns.
        unsafe {
            self.cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        self
    }

    /// Runs it with SIGHUP ignored, as nohup does.
    pub fn ignoring_hangups(mut self) -> Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure only calls signal,
        // which is async-signal-safe.
        unsafe {
            self.cmd.pre_exec(|| {
                if libc::signal(libc::SIGHUP, libc::SIG_IGN) == libc::SIG_ERR {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs to completion (bounded by the timeout).
    pub fn run(self) -> Outcome {
        self.spawn().wait()
    }

    /// Starts the process and returns at once; the caller waits.
    pub fn spawn(mut self) -> Started {
        let stdin = self.stdin.take().unwrap_or(Stdin::Null);
        let description = format!("{:?}", self.cmd);
        Started {
            running: process::spawn_with_stdout(
                &mut self.cmd,
                stdin,
                self.stdout.take(),
                "pgsense-pg",
            ),
            timeout: self.timeout,
            description,
        }
    }

    /// Starts the process with a stdin pipe the test writes to in steps
    /// ([`Started::stdin`]).
    pub fn spawn_piped(mut self) -> Started {
        let description = format!("{:?}", self.cmd);
        Started {
            running: process::spawn(&mut self.cmd, Stdin::Piped, "pgsense-pg"),
            timeout: self.timeout,
            description,
        }
    }
}

/// A pgsense-pg process started by [`Pgsense::spawn`].
pub struct Started {
    running: process::Running,
    timeout: Duration,
    description: String,
}

impl Started {
    /// The open stdin pipe of a [`Pgsense::spawn_piped`] process.
    pub fn stdin(&mut self) -> &mut std::process::ChildStdin {
        self.running
            .stdin
            .as_mut()
            .expect("spawned with spawn_piped and stdin not closed yet")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.running.id()
    }

    /// The process's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.id()))
            .expect("read /proc/PID/status of a running child");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in /proc status:\n{status}"));
        kib * 1024
    }

    /// Whether the process has exited, without waiting for it.
    pub fn has_exited(&mut self) -> bool {
        self.running.has_exited()
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        drop(self.running.stdin.take());
    }

    /// Waits (bounded by the timeout) for the process to exit.
    pub fn wait(self) -> Outcome {
        let finished = self.running.wait(self.timeout);
        Outcome {
            code: finished.status.code(),
            stdout: finished.stdout,
            stderr: finished.stderr,
            elapsed: finished.elapsed,
            command: self.description,
        }
    }
}

/// What a user sees of one run.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (None when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    command: String,
}

impl Outcome {
    /// Panics, showing everything the run printed, unless it exited `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "expected stderr to contain {needle:?}\n{}",
            self.describe()
        );
        self
    }

    /// Panics unless stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "expected stdout to contain {needle:?}\n{}",
            self.describe()
        );
        self
    }

    /// The command, exit code and output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nexit code: {:?} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    /// stderr lines reporting a dropped line: `pgsense-pg: FILE:LINE: ...`.
    pub fn reject_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| {
                line.strip_prefix("pgsense-pg: ")
                    .and_then(|rest| rest.split_once(':'))
                    .and_then(|(_, rest)| rest.split_once(':'))
                    .is_some_and(|(number, _)| {
                        !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
                    })
            })
            .collect()
    }

    /// The line numbers of `file` reported as dropped, in order.
    pub fn rejected_line_numbers(&self, file: &str) -> Vec<u64> {
        let prefix = format!("pgsense-pg: {file}:");
        self.stderr
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_once(':'))
            .filter_map(|(number, _)| number.parse().ok())
            .collect()
    }

    /// The one stderr line reporting line `line` of `file`, or a panic.
    #[track_caller]
    pub fn reject_reason(&self, file: &str, line: u64) -> &str {
        let prefix = format!("pgsense-pg: {file}:{line}: ");
        let found: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected exactly one stderr line starting {prefix:?}\n{}",
            self.describe()
        );
        &found[0][prefix.len()..]
    }
}

impl Outcome {
    /// (read, inserted, dropped) from the summary line, or a panic.
    #[track_caller]
    pub fn summary(&self) -> (u64, u64, u64) {
        let parsed = self.stderr.lines().rev().find_map(|line| {
            let rest = line.strip_prefix("pgsense-pg: ")?;
            let mut numbers = rest.split(", ").map(|part| part.split_once(' '));
            let mut take = |label: &str| -> Option<u64> {
                let (number, word) = numbers.next()??;
                word.starts_with(label).then_some(number.parse().ok()?)
            };
            Some((take("read")?, take("inserted")?, take("dropped")?))
        });
        parsed.unwrap_or_else(|| panic!("no summary line on stderr\n{}", self.describe()))
    }
}

/// Creates the schema and table in `db`, so that a test can count rows
/// while a load runs.
pub fn init(server: &PgServer, db: &str) {
    server.pgsense(db).arg("init").run().assert_code(0);
}
