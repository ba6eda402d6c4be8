//! A connection attempt, host after host, each bounded by the connect
//! timeout as libpq bounds it: from the TCP connect to the end of
//! authentication. The driver's own timeout covers only the TCP connect,
//! so a server that accepts the connection and then never answers (a
//! frozen machine, a proxy with no backend) would hold the attempt, and
//! the hosts after it, forever.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::config::SslMode;
use postgres::error::SqlState;

use super::{LazyTls, STOP_POLL};

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
/// in a thread of its own, with the attempt's number: no other is started
/// there meanwhile, so a server frozen for hours holds one thread, not one
/// per attempt. (Attempts not given up on may run side by side: the pool
/// opens its connections at once.)
static GIVEN_UP: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Numbers attempts.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);

fn given_up() -> std::sync::MutexGuard<'static, BTreeMap<String, u64>> {
    GIVEN_UP.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects to the first of `hosts` (`host:port` and its settings) that
/// takes the connection, giving each `per_host`; `stopped` ends the wait.
/// As in libpq, a host that answered with an error of its own (a password
/// refused, no such database, too many connections) ends the attempt: the
/// next host is tried only when one could not be reached, or is read-only.
pub fn first_host(
    hosts: &[(String, postgres::Config)],
    tls: &LazyTls,
    per_host: Duration,
    stopped: &dyn Fn() -> bool,
) -> Result<(String, Client), Failure> {
    let mut failures = Vec::new();
    for (host, config) in hosts {
        match prefer_tls(host, config, tls, per_host, stopped)? {
            Ok(client) => return Ok((host.clone(), client)),
            Err(HostFailure::Driver(err)) if err.as_db_error().is_some() => {
                failures.push((host.clone(), HostFailure::Driver(err)));
                break;
            }
            Err(failure) => failures.push((host.clone(), failure)),
        }
    }
    Err(Failure::Hosts(failures))
}

/// One attempt at `host`; with sslmode prefer, as in libpq, a second one
/// without TLS when the server refused the connection over TLS (a
/// pg_hba.conf with `hostnossl` lines only for the role).
fn prefer_tls(
    host: &str,
    config: &postgres::Config,
    tls: &LazyTls,
    timeout: Duration,
    stopped: &dyn Fn() -> bool,
) -> Result<Result<Client, HostFailure>, Failure> {
    let outcome = one_host(host, config, tls, timeout, stopped)?;
    match &outcome {
        Err(HostFailure::Driver(err))
            if config.get_ssl_mode() == SslMode::Prefer
                && err.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) =>
        {
            log::debug!("{host}: refused, maybe over TLS: trying without, as sslmode prefer does");
            let mut plain = config.clone();
            plain.ssl_mode(SslMode::Disable);
            match one_host(host, &plain, tls, timeout, stopped)? {
                // Refused either way: the first refusal, over TLS, is said.
                Err(HostFailure::Driver(again))
                    if again.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION) =>
                {
                    Ok(outcome)
                }
                retried => Ok(retried),
            }
        }
        _ => Ok(outcome),
    }
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
    if given_up().contains_key(host) {
        log::debug!("{host}: an attempt given up on still waits for an answer there");
        return Ok(Err(HostFailure::NoAnswer));
    }
    let number = ATTEMPTS.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::sync_channel(1);
    let (name, config, tls) = (host.to_owned(), config.clone(), tls.clone());
    std::thread::Builder::new()
        .name("connect".into())
        .spawn(move || {
            let connected = config.connect(tls);
            // Under the lock: a waiter giving up looks for the answer
            // under it too, so it never marks the host after this.
            let mut given_up = given_up();
            if given_up.get(&name) == Some(&number) {
                given_up.remove(&name);
            }
            // Given up on: the connection closes here.
            let _ = tx.send(connected);
        })
        .map_err(Failure::NoThread)?;
    let until = Instant::now() + timeout;
    let stop = loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(STOP_POLL)) {
            Ok(connected) => return Ok(connected.map_err(HostFailure::Driver)),
            Err(RecvTimeoutError::Timeout) if stopped() => break true,
            Err(RecvTimeoutError::Timeout) if !left.is_zero() => {}
            Err(_) => break false,
        }
    };
    let mut given_up = given_up();
    if let Ok(connected) = rx.try_recv() {
        drop(given_up);
        return Ok(connected.map_err(HostFailure::Driver));
    }
    given_up.insert(host.to_owned(), number);
    match stop {
        true => Err(Failure::Stopped),
        false => Ok(Err(HostFailure::NoAnswer)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::cli::SslMode;
    use crate::config::{Origin, Roots, Sourced, Tls};

    fn plain() -> LazyTls {
        LazyTls::new(&Tls {
            mode: Sourced {
                value: SslMode::Disable,
                origin: Origin::Default,
            },
            roots: Roots::System,
            client: None,
        })
    }

    /// A server that takes each connection, says nothing for `silence`,
    /// then closes it: its host and port.
    fn closing_after(silence: Duration) -> (String, postgres::Config) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                std::thread::spawn(move || {
                    std::thread::sleep(silence);
                    drop(stream);
                });
            }
        });
        let mut config = postgres::Config::new();
        config.host("127.0.0.1").port(port).user("x");
        (format!("127.0.0.1:{port}"), config)
    }

    fn outcome(result: Result<(String, Client), Failure>) -> &'static str {
        match result {
            Ok(_) => "connected",
            Err(Failure::Hosts(failures)) => match failures[0].1 {
                HostFailure::Driver(_) => "answered",
                HostFailure::NoAnswer => "no answer",
            },
            Err(_) => "other",
        }
    }

    /// Attempts at one host at once (the pool's two connections) do not
    /// take each other for one given up on.
    #[test]
    fn attempts_at_once_at_one_host_each_get_their_answer() {
        let hosts = [closing_after(Duration::from_millis(300))];
        let tls = plain();
        let results: Vec<&str> = std::thread::scope(|scope| {
            let attempts: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        outcome(first_host(&hosts, &tls, Duration::from_secs(5), &|| false))
                    })
                })
                .collect();
            attempts
                .into_iter()
                .map(|a| a.join().expect("joined"))
                .collect()
        });
        assert_eq!(results, ["answered", "answered"]);
    }

    /// An attempt given up on keeps the host passed over at once until it
    /// ends; then the host is tried again.
    #[test]
    fn a_host_given_up_on_is_passed_over_until_its_attempt_ends() {
        let hosts = [closing_after(Duration::from_millis(800))];
        let tls = plain();
        let timeout = Duration::from_millis(200);
        let tried = |_| outcome(first_host(&hosts, &tls, timeout, &|| false));
        assert_eq!(tried(()), "no answer");
        let started = Instant::now();
        assert_eq!(tried(()), "no answer");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "waited again"
        );
        std::thread::sleep(Duration::from_millis(900));
        assert!(!given_up().contains_key(&hosts[0].0));
        assert_eq!(tried(()), "no answer");
    }
}
