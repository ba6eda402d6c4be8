//! The test harness: a throwaway PostgreSQL server ([`pg`]) and a PgBouncer
//! in front of one ([`pgbouncer`]), the binary run in a scrubbed
//! environment ([`run`]), made-up findings and the rows they must become
//! ([`findings`]), findings with markers for the fault tests ([`markers`]),
//! bounded child processes ([`process`]) and waits ([`wait`]), what a run
//! reports ([`report`], [`prometheus`]), a proxy that cuts a COMMIT
//! ([`proxy`]), TLS material ([`tls`]), a small disk to fill ([`tmpfs`]),
//! a primary with a synchronous standby to fail over to ([`standby`]), a
//! writer that appends to and rotates a followed file ([`follow`]) and
//! a state file's journal to read and doctor ([`journal`]), and scratch
//! directories for input and config files ([`Scratch`]).

// The harness is an API for all test modules, present and to come: a helper
// not called by today's tests is not dead.
#![allow(dead_code)]

pub mod findings;
pub mod follow;
pub mod journal;
pub mod markers;
pub mod pg;
pub mod pgbouncer;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod report;
pub mod run;
pub mod standby;
pub mod tls;
pub mod tmpfs;
pub mod wait;

use std::fs;
use std::path::{Path, PathBuf};

pub use findings::{Finding, Shape};
pub use pg::{PgServer, private, private_with, shared};
pub use run::pgsense;

/// The findings table, where the tests leave schema and table at their
/// defaults.
pub const TABLE: &str = "pgsense.findings";

/// A temporary directory for a test's input, config and password files,
/// removed on Drop.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = std::env::temp_dir().join(pg::unique("pgsense-pg-scratch-"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port on 127.0.0.1 whose connections the kernel accepts but nobody
/// ever answers: a server that hangs. It also tells whether anything tried
/// to connect, for tests that must fail before connecting.
pub struct SilentServer {
    listener: std::net::TcpListener,
}

impl SilentServer {
    pub fn new() -> SilentServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on a listener");
        SilentServer { listener }
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("bound listener").port()
    }

    /// Whether any connection came in so far (each is queued by the kernel
    /// until accepted, even after the client gave up).
    pub fn was_contacted(&self) -> bool {
        self.listener.accept().is_ok()
    }
}
