//! A server that stops answering: a backend stopped (SIGSTOP, a paused
//! machine, storage that hangs) keeps its TCP connection acknowledged by
//! the kernel, so neither keepalives nor the TCP user timeout end a
//! statement waiting for its answer, and a cancel request is never acted
//! on. The last resort is to shut the database connections down from this
//! side: the statement in flight then fails as on a lost connection, and
//! the run goes on as it does after one (retries, an unknown COMMIT
//! outcome settled by asking the server, or the next run).

use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Set by a stop signal, once the handlers are installed.
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// How long work under a [`Deadline`] may go on after a stop signal.
const AFTER_STOP: Duration = Duration::from_secs(3);

/// How often a [`Deadline`] looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Makes every [`Deadline`] end a few seconds after `flag` is set.
pub fn stop_on(flag: Arc<AtomicBool>) {
    let _ = STOP.set(flag);
}

/// Whether a stop signal came, once the handlers are installed.
pub fn stop_asked() -> bool {
    STOP.get().is_some_and(|flag| flag.load(Ordering::SeqCst))
}

/// The sockets this process was started with, as /proc names them
/// (`socket:[INODE]`).
static INHERITED: OnceLock<BTreeSet<String>> = OnceLock::new();

/// Notes the sockets this process was started with: its standard streams
/// may be sockets (a systemd service's go to the journal), and a parent
/// may leave others open. [`close_connections`] leaves them alone. Called
/// first thing, before any connection is opened.
pub fn spare_inherited_sockets() {
    INHERITED.get_or_init(|| open_sockets().into_iter().map(|(_, name)| name).collect());
}

/// The open descriptors that are sockets, with their names in /proc.
fn open_sockets() -> Vec<(RawFd, String)> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let name = target.to_str()?;
            name.starts_with("socket:").then(|| (fd, name.to_owned()))
        })
        .collect()
}

/// Shuts down every socket this process opened that is connected to a
/// named peer: the database connections (TCP, or a server's Unix socket).
/// A socket pair, whose peer has no name (as signal handling uses), and
/// the sockets the process was started with are left alone. The
/// descriptors stay open, so none is reused under the driver. Returns how
/// many were shut down.
pub fn close_connections() -> usize {
    let inherited = INHERITED.get();
    open_sockets()
        .into_iter()
        .filter(|(_, name)| !inherited.is_some_and(|sockets| sockets.contains(name)))
        .map(|(fd, _)| fd)
        .filter(|&fd| connected_to_a_named_peer(fd))
        // SAFETY: shutdown(2) only changes the state of the socket `fd`
        // names; it neither closes nor frees anything.
        .filter(|&fd| unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } == 0)
        .count()
}

/// Whether `fd` is a socket with a peer that has an address: an IP one,
/// or a Unix path.
fn connected_to_a_named_peer(fd: RawFd) -> bool {
    // SAFETY: a zeroed sockaddr_storage is a valid value, and getpeername
    // writes at most `len` bytes into it.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `peer` and `len` are valid for writes of the sizes given.
    let got = unsafe { libc::getpeername(fd, (&raw mut peer).cast(), &raw mut len) };
    if got != 0 {
        return false;
    }
    match i32::from(peer.ss_family) {
        libc::AF_INET | libc::AF_INET6 => true,
        // An unnamed peer's address is the family alone.
        libc::AF_UNIX => len as usize > std::mem::size_of::<libc::sa_family_t>(),
        _ => false,
    }
}

/// While it lives, the database connections are shut down if it lives
/// longer than a limit, or a few seconds past a stop signal: for work on
/// the main thread (the bootstrap, settling a killed run) that has no
/// watchdog of its own.
pub struct Deadline {
    _done: SyncSender<()>,
}

impl Deadline {
    /// Starts the clock for `what`.
    pub fn start(limit: Duration, what: &'static str) -> Deadline {
        let (done, wait) = mpsc::sync_channel::<()>(0);
        let spawned = std::thread::Builder::new()
            .name("deadline".into())
            .spawn(move || watch(&wait, limit, what));
        if let Err(err) = spawned {
            log::debug!("cannot watch {what} for a stalled server: {err}");
        }
        Deadline { _done: done }
    }
}

/// Until `done` is dropped: shuts the connections down past `limit`, or
/// [`AFTER_STOP`] past a stop signal.
fn watch(done: &mpsc::Receiver<()>, limit: Duration, what: &str) {
    let started = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    loop {
        match done.recv_timeout(POLL) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if stop_asked() {
            let at = *stopped_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= AFTER_STOP {
                log::warn!("{what}: still going after the stop signal: closing the connection");
                close_connections();
                return;
            }
        }
        if started.elapsed() >= limit {
            log::warn!(
                "{what}: the server has not answered for {} s (--stall-timeout): \
                 closing the connection",
                limit.as_secs()
            );
            close_connections();
            return;
        }
    }
}
