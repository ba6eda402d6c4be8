//! A connection attempt, host after host, each bounded by the connect
//! timeout as libpq bounds it: from the TCP connect to the end of
//! authentication. The driver's own timeout covers only the TCP connect,
//! so a server that accepts the connection and then never answers (a
//! frozen machine, a proxy with no backend) would hold the attempt, and
//! the hosts after it, forever.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use postgres::Client;

use super::LazyTls;

/// How often a wait for a host looks for a stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Why one host was not connected to.
pub enum HostFailure {
    /// What the driver or the server said.
    Driver(postgres::Error),
    /// No answer within the connect timeout, or an attempt given up on
    /// before still waits for one there.
    NoAnswer,
}

/// Why no host was connected to.
pub enum Failure {
    /// Each host tried, in order, and why it failed.
    Hosts(Vec<(String, HostFailure)>),
    NoThread(std::io::Error),
    /// A stop came first.
    Stopped,
}

/// The hosts where an attempt given up on is still waiting for an answer,
/// in a thread of its own: no other is started there meanwhile, so a
/// server frozen for hours holds one thread, not one per attempt.
static WAITING_ON: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn waiting_on() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    WAITING_ON.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects to the first of `hosts` (`host:port` and its settings) that
/// takes the connection, giving each `per_host`; `stopped` ends the wait.
pub fn first_host(
    hosts: &[(String, postgres::Config)],
    tls: &LazyTls,
    per_host: Duration,
    stopped: &dyn Fn() -> bool,
) -> Result<(String, Client), Failure> {
    let mut failures = Vec::new();
    for (host, config) in hosts {
        match one_host(host, config, tls, per_host, stopped)? {
            Ok(client) => return Ok((host.clone(), client)),
            Err(failure) => failures.push((host.clone(), failure)),
        }
    }
    Err(Failure::Hosts(failures))
}

/// One attempt at `host`, in a thread of its own, waited for up to
/// `timeout`.
fn one_host(
    host: &str,
    config: &postgres::Config,
    tls: &LazyTls,
    timeout: Duration,
    stopped: &dyn Fn() -> bool,
) -> Result<Result<Client, HostFailure>, Failure> {
    if !waiting_on().insert(host.to_owned()) {
        log::debug!("{host}: an attempt given up on still waits for an answer there");
        return Ok(Err(HostFailure::NoAnswer));
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let (name, config, tls) = (host.to_owned(), config.clone(), tls.clone());
    let spawned = std::thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let connected = config.connect(tls);
            waiting_on().remove(&name);
            // Given up on meanwhile: the connection closes here.
            let _ = tx.send(connected);
        });
    if let Err(err) = spawned {
        waiting_on().remove(host);
        return Err(Failure::NoThread(err));
    }
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(STOP_POLL)) {
            Ok(connected) => return Ok(connected.map_err(HostFailure::Driver)),
            Err(RecvTimeoutError::Timeout) if stopped() => return Err(Failure::Stopped),
            Err(RecvTimeoutError::Timeout) if !left.is_zero() => {}
            Err(_) => return Ok(Err(HostFailure::NoAnswer)),
        }
    }
}
