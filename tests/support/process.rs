//! Child processes with a bounded wait: every process a test starts is
//! waited for with a deadline, killed when it passes it, and the test fails
//! with what the process printed. A hung child must never hang the suite.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a finished child process left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Time from spawn to exit.
    pub elapsed: Duration,
}

/// A running child whose stdout and stderr are drained by threads (so a
/// chatty child never blocks on a full pipe), waited for with a deadline.
pub struct Running {
    child: Child,
    what: String,
    started: Instant,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    feeder: Option<JoinHandle<()>>,
    /// The child's stdin, when it was spawned with `Stdin::Piped`; tests
    /// that feed input in steps write here, and drop it to close.
    pub stdin: Option<ChildStdin>,
}

/// What the child's standard input is.
pub enum Stdin {
    /// /dev/null.
    Null,
    /// These bytes, written by a thread, then closed.
    Bytes(Vec<u8>),
    /// A pipe left open in [`Running::stdin`] for the test to write.
    Piped,
    /// This file (or directory, or device).
    File(std::fs::File),
}

/// Starts `cmd` with stdout and stderr captured. `what` names it in failures.
pub fn spawn(cmd: &mut Command, stdin: Stdin, what: &str) -> Running {
    spawn_with_stdout(cmd, stdin, None, what)
}

/// [`spawn`], with stdout sent to `stdout` instead of captured when given.
pub fn spawn_with_stdout(
    cmd: &mut Command,
    stdin: Stdin,
    stdout: Option<std::fs::File>,
    what: &str,
) -> Running {
    cmd.stdout(stdout.map_or_else(Stdio::piped, Stdio::from))
        .stderr(Stdio::piped());
    let stdin = match stdin {
        Stdin::Null => {
            cmd.stdin(Stdio::null());
            Stdin::Null
        }
        Stdin::File(file) => {
            cmd.stdin(file);
            Stdin::Null
        }
        other => {
            cmd.stdin(Stdio::piped());
            other
        }
    };
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let mut pipe = child.stdin.take();
    let feeder = match stdin {
        Stdin::Bytes(bytes) => {
            let mut pipe = pipe.take().expect("stdin was piped");
            // The child may exit without reading everything (a usage error,
            // say): a broken pipe here is the child's business, not ours.
            Some(thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    Running {
        child,
        what: what.to_owned(),
        started,
        stdout,
        stderr,
        feeder,
        stdin: pipe,
    }
}

fn drain<R: Read + Send + 'static>(mut from: R) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

impl Running {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has exited, without waiting for it.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits at most `timeout` for the child to exit; on expiry kills it and
    /// panics with everything it printed so far.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        drop(self.stdin.take());
        let deadline = self.started + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => break None,
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("cannot wait for {}: {e}", self.what),
            }
        };
        let elapsed = self.started.elapsed();
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
        let stdout = collect(self.stdout.take());
        let stderr = collect(self.stderr.take());
        match status {
            Some(status) => Finished {
                status,
                stdout,
                stderr,
                elapsed,
            },
            None => panic!(
                "{} did not finish within {timeout:?}; killed it.\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                self.what
            ),
        }
    }
}

impl Drop for Running {
    /// A test that panics while a child runs must not leave the child behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(handle: Option<JoinHandle<Vec<u8>>>) -> String {
    let bytes = handle
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs `cmd` to completion within `timeout` and panics unless it succeeds.
pub fn run_ok(cmd: &mut Command, timeout: Duration, what: &str) -> Finished {
    let finished = spawn(cmd, Stdin::Null, what).wait(timeout);
    assert!(
        finished.status.success(),
        "{what} failed ({}).\n--- stdout ---\n{}\n--- stderr ---\n{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
    finished
}

/// Sends a signal (TERM, INT) to a process, with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    run_ok(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
        Duration::from_secs(10),
        "kill",
    );
}

/// None (and a note) when `program` is not installed outside CI; under CI
/// a missing program is a failure, naming the package .ci/run installs.
#[track_caller]
pub fn installed(program: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{program} is not installed, and CI is set: a missing {program} is a failure \
                 there; .ci/run must install it (apt-get install {package})"
            );
        }
        eprintln!("note: {program} is not installed: test skipped (apt-get install {package})");
    }
    found
}

/// Where process `pid` is in the file at `path` (that inode): the offset
/// of the first of its descriptors open on it, as /proc tells.
pub fn read_offset(pid: u32, path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let wanted = std::fs::metadata(path).ok()?;
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let open = std::fs::metadata(entry.path()).ok()?;
        if open.dev() != wanted.dev() || open.ino() != wanted.ino() {
            return None;
        }
        let fd = entry.file_name();
        let info =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy())).ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("pos:"))?
            .trim()
            .parse()
            .ok()
    })
}
