//! Connections: the libpq-style connection settings, the TLS connector for
//! libpq's sslmodes, the first direct connection (which gives the real cause
//! of a failure; [`pg_error`](crate::pg_error) says what to set), and the
//! r2d2 pool of at most two connections. Every wait here is bounded by
//! --connect-timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use native_tls::TlsConnector;
use postgres::Client;
use postgres::Socket;
use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres_native_tls::{MakeTlsConnector, TlsStream};
use r2d2_postgres::r2d2::{self, ManageConnection};

use crate::config::{Roots, Settings, SslMode, Tls};
use crate::pg_error::{RefusedForGood, describe, explain, explain_hosts, refused_for_good};
use attempt::{Failure, HostFailure};

mod attempt;

/// How long a statement may wait for a lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// At most this many connections at once, bootstrap included.
pub const POOL_SIZE: u32 = 2;

/// The pool, and how long one attempt at a connection may take.
#[derive(Clone)]
pub struct Pool {
    inner: r2d2::Pool<Manager>,
    attempt: Duration,
}
pub type Connection = r2d2::PooledConnection<Manager>;

/// Opens the first connection directly, so that a failure says why
/// (refused, authentication, no such database) instead of r2d2's bare
/// "timed out", then hands that same connection to the pool: the pool never
/// holds more than [`POOL_SIZE`] connections, the first one included.
///
/// A server that is starting up, shutting down or has too many clients is
/// tried again, with backoff, for up to `retry_for`.
pub fn connect(settings: &Settings, retry_for: Duration) -> Result<(Client, Manager)> {
    let tls = LazyTls::new(&settings.tls);
    let manager = Manager {
        hosts: settings
            .endpoints()
            .enumerate()
            .map(|(index, (host, port))| {
                let mut config = base_config(settings);
                config.host(host).port(port);
                if let Some(password) = settings.password.for_host(index) {
                    config.password(password.secret.expose());
                }
                (crate::config::endpoint(host, port), config)
            })
            .collect(),
        tls,
        seed: Mutex::new(None),
        reached: Mutex::new(None),
        per_host: settings.connect_timeout.value,
        attempt: whole_attempt(settings),
    };
    let client = connect_retrying(&manager, retry_for).map_err(|failure| match failure {
        Failure::Hosts(failures)
            if failures.iter().all(
                |(_, failure)| matches!(failure, HostFailure::Driver(err) if refused_for_good(err)),
            ) =>
        {
            anyhow::Error::new(RefusedForGood(explain_failures(&failures, settings)))
        }
        Failure::Hosts(failures) => anyhow!(explain_failures(&failures, settings)),
        Failure::NoThread(err) => anyhow!(err).context("cannot start a thread"),
        Failure::Stopped => anyhow!("stopped by a signal before connecting"),
    })?;
    Ok((client, manager))
}

/// Why no host took the first connection, in one line.
fn explain_failures(failures: &[(String, HostFailure)], settings: &Settings) -> String {
    let said: Vec<(&str, &postgres::Error)> = failures
        .iter()
        .filter_map(|(host, failure)| match failure {
            HostFailure::Driver(err) => Some((host.as_str(), err)),
            HostFailure::NoAnswer => None,
        })
        .collect();
    if said.len() == failures.len() {
        let hosts = settings.hosts.value.len();
        return match &said[..] {
            [(_, err)] if hosts == 1 => explain(err, settings),
            _ => explain_hosts(&said, settings),
        } + match failures.len() < hosts {
            true => {
                " (the hosts after it were not tried: as in libpq, only a host that cannot be \
                 reached, or is read-only, passes on to the next)"
            }
            false => "",
        };
    }
    // The advice goes with the hosts that did not answer, not after another
    // host's error of its own.
    let timeout = settings.connect_timeout.value.as_secs();
    let no_answer = format!(
        "no answer within {timeout} s (name lookup, TCP connect, TLS handshake or \
         authentication did not complete): check that the server is up and reachable, or \
         raise --connect-timeout ({timeout} s per host, from {})",
        settings.connect_timeout.origin
    );
    match failures {
        [_] => no_answer,
        _ => failures
            .iter()
            .map(|(host, failure)| match failure {
                HostFailure::Driver(err) => format!("{host}: {}", explain(err, settings)),
                HostFailure::NoAnswer => format!("{host}: {no_answer}"),
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// How long one connection attempt may take: the connect timeout for each
/// host, as libpq applies it, since the hosts are tried one after the other.
fn whole_attempt(settings: &Settings) -> Duration {
    let hosts = u32::try_from(settings.hosts.value.len()).unwrap_or(u32::MAX);
    settings.connect_timeout.value.saturating_mul(hosts.max(1))
}

/// The first connection, tried again for up to `retry_for` while the
/// server says it cannot take one now.
fn connect_retrying(manager: &Manager, retry_for: Duration) -> Result<Client, Failure> {
    let started = Instant::now();
    let mut said = None;
    for attempt in 0u32.. {
        let failures = match manager.connect_bounded() {
            // One host busy is enough: it may take writes in a moment.
            Err(Failure::Hosts(failures)) if failures.iter().any(|(_, f)| is_busy(f)) => failures,
            done => return done,
        };
        let left = retry_for.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(Failure::Hosts(failures));
        }
        if said.is_none_or(|at: Instant| at.elapsed() >= SAY_EVERY) {
            let err = failures
                .iter()
                .find_map(|(_, failure)| match failure {
                    HostFailure::Driver(err) if busy(err) => Some(err),
                    _ => None,
                })
                .expect("a busy host");
            match retry_for {
                ENDLESS => log::warn!("{}; trying again until it answers", describe(err)),
                _ => log::warn!(
                    "{}; trying again for up to {} s",
                    describe(err),
                    left.as_secs().max(1)
                ),
            }
            said = Some(Instant::now());
        }
        let step = Duration::from_millis(100).saturating_mul(1 << attempt.min(6));
        if !sleep_unless_stopped(step.min(Duration::from_secs(5)).min(left)) {
            return Err(Failure::Stopped);
        }
    }
    unreachable!("the loop above returns")
}

/// Sleeps for `length`, or less when a stop signal comes: false then.
fn sleep_unless_stopped(length: Duration) -> bool {
    let until = Instant::now() + length;
    loop {
        if crate::stall::stop_asked() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(STOP_POLL));
    }
}

/// How often a wait for a connection looks for a stop signal.
const STOP_POLL: Duration = Duration::from_millis(100);

fn is_busy(failure: &HostFailure) -> bool {
    matches!(failure, HostFailure::Driver(err) if busy(err))
}

/// What "without end" means to a clock.
pub const ENDLESS: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How often a failure that goes on is said again.
pub const SAY_EVERY: Duration = Duration::from_secs(5);

/// Whether the server refused a connection only for now: too many clients,
/// starting up, shutting down; or cut one it had accepted, before the
/// session began (a server going down under it).
fn busy(err: &postgres::Error) -> bool {
    if let Some(db) = err.as_db_error() {
        return matches!(
            db.code().code(),
            "53300" | "53000" | "57P03" | "57P01" | "57P02"
        );
    }
    let cut = std::error::Error::source(err)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
            )
        });
    err.is_closed() || cut
}

/// The longest the pool waits between its own attempts at a connection.
const POOL_RETRY_CAP: Duration = Duration::from_secs(1);

/// Builds the pool around `manager`, seeded with `first`.
pub fn pool(manager: Manager, first: Client) -> Pool {
    *manager.seed.lock().expect("seed lock is never poisoned") = Some(first);
    let attempt = manager.attempt;
    let inner = r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(0))
        // r2d2 retries a failed connect by itself, waiting up to half of
        // this in between: a server back from a restart must not wait
        // seconds for it. (A checkout waits for the whole attempt: see
        // `checkout`.)
        .connection_timeout(POOL_RETRY_CAP * 2)
        // A writer notices a broken connection by its own failed query: no
        // extra round trip per checkout.
        .test_on_check_out(false)
        // Failed attempts are retried by the writers, which say why (see
        // Manager::last_error); r2d2's own handler would log each attempt
        // as an error without its cause.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(manager);
    Pool { inner, attempt }
}

/// The settings every transaction makes for itself, with SET LOCAL: no
/// startup option (PgBouncer refuses them) and nothing that outlives the
/// transaction (a pooler hands the server connection to others). A lock
/// held by someone else (a long ALTER, a LOCK TABLE) must not hold the run
/// forever: waiting fails after a while, and the batch is retried within
/// --retry-for. With `schema`, the findings schema comes first in
/// search_path, for triggers and defaults that name things unqualified.
pub fn session_settings(schema: Option<&str>, lock_timeout: Duration) -> String {
    let mut sql = format!("SET LOCAL lock_timeout = '{}ms'", lock_timeout.as_millis());
    if let Some(schema) = schema {
        sql.push_str(&format!(
            "; SET LOCAL search_path = \"{}\", public",
            schema.replace('"', "\"\"")
        ));
    }
    sql
}

/// Every setting but the hosts, ports and passwords.
fn base_config(settings: &Settings) -> postgres::Config {
    let mut config = postgres::Config::new();
    if let Some(options) = &settings.options {
        config.options(&options.value);
    }
    config
        .dbname(&settings.dbname.value)
        .user(&settings.username.value)
        .application_name(&settings.application_name.value)
        .target_session_attrs(settings.target_session_attrs.value)
        .connect_timeout(settings.connect_timeout.value)
        // A peer that vanishes mid-run must end the run, not hang it: data
        // left unacknowledged (mid-COPY, where keepalives are not sent), or
        // an idle connection that stops answering.
        .tcp_user_timeout(Duration::from_secs(30))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .ssl_mode(driver_ssl_mode(settings));
    config
}

/// The driver knows disable, prefer and require only: verify-ca and
/// verify-full are require plus the checks [`tls_connector`] turns on.
fn driver_ssl_mode(settings: &Settings) -> postgres::config::SslMode {
    use postgres::config::SslMode as Driver;
    let mode = settings.tls.mode.value;
    if settings.is_unix_socket() {
        // As libpq: the server never offers TLS on a Unix socket, and the
        // socket never leaves the machine.
        if mode != SslMode::Disable {
            log::info!(
                "sslmode {mode} does not apply to the Unix socket in {}: connecting without TLS",
                settings.hosts.value.join(",")
            );
        }
        return Driver::Disable;
    }
    match mode {
        SslMode::Disable => Driver::Disable,
        // libpq's allow tries without TLS first and with TLS when refused;
        // prefer's order is the better one, and the driver offers no other.
        SslMode::Allow | SslMode::Prefer => Driver::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
    }
}

/// A connector that checks what the sslmode checks, and no more: native-tls
/// verifies the chain and the host name unless told otherwise, while
/// libpq's prefer and require encrypt without checking anything (a server
/// with a self-signed certificate must stay reachable under them).
fn tls_connector(tls: &Tls) -> Result<MakeTlsConnector> {
    let mut builder = TlsConnector::builder();
    match tls.mode.value {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyCa => {
            builder.danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyFull => {}
    }
    if let Roots::Only { certificates, .. } = &tls.roots {
        builder.disable_built_in_roots(true);
        for certificate in certificates {
            builder.add_root_certificate(certificate.clone());
        }
    }
    if let Some(client) = &tls.client {
        builder.identity(client.identity.clone());
    }
    let connector = builder.build().context("cannot set up TLS")?;
    Ok(MakeTlsConnector::new(connector))
}

/// The TLS connector, built the first time a server agrees to TLS: loading
/// the system's CA bundle costs tens of milliseconds, which a connection
/// without TLS (a Unix socket, a server without ssl, sslmode=disable) need
/// not pay.
#[derive(Clone)]
pub struct LazyTls {
    tls: Arc<Tls>,
    built: Arc<OnceLock<Result<MakeTlsConnector, String>>>,
}

impl LazyTls {
    fn new(tls: &Tls) -> LazyTls {
        LazyTls {
            tls: Arc::new(tls.clone()),
            built: Arc::new(OnceLock::new()),
        }
    }
}

type TlsError = Box<dyn std::error::Error + Send + Sync>;

impl MakeTlsConnect<Socket> for LazyTls {
    type Stream = TlsStream<Socket>;
    type TlsConnect = LazyConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<LazyConnect, TlsError> {
        Ok(LazyConnect {
            lazy: self.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// One TLS handshake to come, with the host name it checks.
pub struct LazyConnect {
    lazy: LazyTls,
    domain: String,
}

impl TlsConnect<Socket> for LazyConnect {
    type Stream = TlsStream<Socket>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<Socket>, TlsError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let built = self
            .lazy
            .built
            .get_or_init(|| tls_connector(&self.lazy.tls).map_err(|e| format!("{e:#}")));
        let handshake = match built {
            Ok(make) => MakeTlsConnect::<Socket>::make_tls_connect(&mut make.clone(), &self.domain)
                .map_err(TlsError::from),
            Err(message) => Err(message.clone().into()),
        };
        Box::pin(async move { handshake?.connect(stream).await.map_err(TlsError::from) })
    }
}

/// The pool's connection manager: hands out the first, already open
/// connection once, then opens new ones.
pub struct Manager {
    /// The settings of each host, with its `host:port`, tried in order:
    /// the driver, given them all, would say only why the last one failed,
    /// and would wait forever on one that accepted the connection and
    /// went silent.
    hosts: Vec<(String, postgres::Config)>,
    tls: LazyTls,
    seed: Mutex<Option<Client>>,
    /// The `host:port` the first connection reached.
    reached: Mutex<Option<String>>,
    /// How long each host may take to take a connection.
    per_host: Duration,
    /// How long one attempt at a connection may take, all hosts tried.
    attempt: Duration,
}

impl Manager {
    /// The `host:port` the first connection reached, of those given.
    pub fn reached(&self) -> Option<String> {
        self.reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connects to the first host that takes the connection, each given
    /// the connect timeout even when it accepted the TCP connection and
    /// then went silent ([`attempt`]); a stop signal ends the wait.
    fn connect_bounded(&self) -> Result<Client, Failure> {
        let (host, client) = attempt::first_host(
            &self.hosts,
            &self.tls,
            self.per_host,
            &crate::stall::stop_asked,
        )?;
        *self.reached.lock().unwrap_or_else(|e| e.into_inner()) = Some(host);
        Ok(client)
    }
}

/// Why the pool's last connection attempt failed: r2d2 itself reports only
/// that it timed out. One pool per process, so one slot.
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);
/// How many of the pool's connection attempts failed.
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Why the pool's last connection attempt failed, if one did.
pub fn last_error() -> Option<String> {
    LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How many of the pool's attempts to open a connection failed so far: a
/// writer that sees it grow while it waits knows another one cannot get a
/// connection.
pub fn failed_attempts() -> u64 {
    FAILURES.load(Ordering::SeqCst)
}

/// A connection from the pool, after at most one attempt to open one: r2d2
/// alone would retry for --connect-timeout, outside --retry-for. The error
/// says why the attempt failed. Waiting ends early once `stopping` says so
/// (a signal came: a connect timeout must not delay the stop).
pub fn checkout(pool: &Pool, stopping: &dyn Fn() -> bool) -> Result<Connection, String> {
    let failed_before = FAILURES.load(Ordering::SeqCst);
    let started = Instant::now();
    loop {
        match pool.inner.get_timeout(Duration::from_millis(50)) {
            Ok(connection) => return Ok(connection),
            Err(_) if FAILURES.load(Ordering::SeqCst) > failed_before => {
                let cause = last_error().unwrap_or_else(|| "unknown error".into());
                return Err(format!("cannot connect: {cause}"));
            }
            Err(_) if stopping() => return Err("cannot connect: stopping".into()),
            Err(_) if started.elapsed() >= pool.attempt => {
                return Err(format!(
                    "cannot connect: no answer within {} s",
                    pool.attempt.as_secs()
                ));
            }
            Err(_) => {}
        }
    }
}

/// Why the pool could not open a connection, in words.
#[derive(Debug)]
pub struct PoolError(String);

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PoolError {}

impl ManageConnection for Manager {
    type Connection = Client;
    type Error = PoolError;

    fn connect(&self) -> Result<Client, PoolError> {
        let seeded = self
            .seed
            .lock()
            .expect("seed lock is never poisoned")
            .take();
        if let Some(client) = seeded {
            return Ok(client);
        }
        // Not ended by a stop: the writers give up waiting for it then.
        attempt::first_host(&self.hosts, &self.tls, self.per_host, &|| false)
            .map(|(_, client)| client)
            .map_err(|failure| {
                let text = match failure {
                    Failure::Hosts(failures) if failures.len() == 1 => match &failures[0].1 {
                        HostFailure::Driver(err) => describe(err),
                        HostFailure::NoAnswer => {
                            format!("no answer within {} s", self.per_host.as_secs())
                        }
                    },
                    Failure::Hosts(failures) => failures
                        .iter()
                        .map(|(host, failure)| match failure {
                            HostFailure::Driver(err) => format!("{host}: {}", describe(err)),
                            HostFailure::NoAnswer => {
                                format!("{host}: no answer within {} s", self.per_host.as_secs())
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    Failure::NoThread(err) => format!("cannot start a thread: {err}"),
                    Failure::Stopped => "stopped".to_owned(),
                };
                log::debug!("connection attempt failed: {text}");
                *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(text.clone());
                FAILURES.fetch_add(1, Ordering::SeqCst);
                PoolError(text)
            })
    }

    fn is_valid(&self, client: &mut Client) -> Result<(), PoolError> {
        client
            .simple_query("")
            .map(drop)
            .map_err(|err| PoolError(describe(&err)))
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        client.is_closed()
    }
}
