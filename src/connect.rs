//! Connections: the libpq-style connection settings, the TLS connector for
//! libpq's sslmodes, the first direct connection (which gives the real cause
//! of a failure; [`pg_error`](crate::pg_error) says what to set), and the
//! r2d2 pool of at most two connections. Every wait here is bounded by
//! --connect-timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use native_tls::TlsConnector;
use postgres::Client;
use postgres::Socket;
use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres_native_tls::{MakeTlsConnector, TlsStream};
use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::r2d2::{self, ManageConnection};

use crate::config::{Roots, Settings, SslMode, Tls};
use crate::pg_error::{describe, explain, explain_hosts};

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
    let config = pg_config(settings);
    let tls = LazyTls::new(&settings.tls);
    let manager = Manager {
        inner: PostgresConnectionManager::new(config, tls.clone()),
        hosts: settings
            .endpoints()
            .map(|(host, port)| {
                let mut config = base_config(settings);
                config.host(host).port(port);
                (crate::config::endpoint(host, port), config)
            })
            .collect(),
        tls,
        seed: Mutex::new(None),
        reached: Mutex::new(None),
        attempt: whole_attempt(settings),
    };
    let timeout = manager.attempt;
    let client =
        connect_retrying(&manager, timeout, retry_for).map_err(|failure| match failure {
            ConnectFailure::Driver(failures) => match &failures[..] {
                [(_, err)] => anyhow!(explain(err, settings)),
                _ => anyhow!(explain_hosts(&failures, settings)),
            },
            ConnectFailure::TimedOut => anyhow!(
                "no answer within {} s (TCP connect, TLS handshake or authentication \
                 did not complete): check that the server is up and reachable, or raise \
                 --connect-timeout ({} s per host, from {})",
                timeout.as_secs(),
                settings.connect_timeout.value.as_secs(),
                settings.connect_timeout.origin
            ),
            ConnectFailure::NoThread(err) => anyhow!(err).context("cannot start a thread"),
            ConnectFailure::Stopped => anyhow!("stopped by a signal before connecting"),
        })?;
    Ok((client, manager))
}

/// How long one connection attempt may take: the connect timeout for each
/// host, as libpq applies it, since the hosts are tried one after the other.
fn whole_attempt(settings: &Settings) -> Duration {
    let hosts = u32::try_from(settings.hosts.value.len()).unwrap_or(u32::MAX);
    settings.connect_timeout.value.saturating_mul(hosts.max(1))
}

/// The first connection, tried again for up to `retry_for` while the
/// server says it cannot take one now.
fn connect_retrying(
    manager: &Manager,
    timeout: Duration,
    retry_for: Duration,
) -> Result<Client, ConnectFailure> {
    let started = Instant::now();
    let mut said = None;
    for attempt in 0u32.. {
        let failures = match manager.connect_bounded(timeout) {
            // One host busy is enough: it may take writes in a moment.
            Err(ConnectFailure::Driver(failures)) if failures.iter().any(|(_, err)| busy(err)) => {
                failures
            }
            done => return done,
        };
        let left = retry_for.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(ConnectFailure::Driver(failures));
        }
        if said.is_none_or(|at: Instant| at.elapsed() >= SAY_EVERY) {
            let (_, err) = failures
                .iter()
                .find(|(_, err)| busy(err))
                .expect("a busy host");
            log::warn!(
                "{}; trying again for up to {} s",
                describe(err),
                left.as_secs()
            );
            said = Some(Instant::now());
        }
        let step = Duration::from_millis(100).saturating_mul(1 << attempt.min(6));
        if !sleep_unless_stopped(step.min(Duration::from_secs(5)).min(left)) {
            return Err(ConnectFailure::Stopped);
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
pub fn session_settings(schema: Option<&str>) -> String {
    let mut sql = format!("SET LOCAL lock_timeout = '{}s'", LOCK_TIMEOUT.as_secs());
    if let Some(schema) = schema {
        sql.push_str(&format!(
            "; SET LOCAL search_path = \"{}\", public",
            schema.replace('"', "\"\"")
        ));
    }
    sql
}

/// The settings for every host, tried in order.
fn pg_config(settings: &Settings) -> postgres::Config {
    let mut config = base_config(settings);
    for host in &settings.hosts.value {
        config.host(host);
    }
    for port in &settings.ports.value {
        config.port(*port);
    }
    config
}

/// Every setting but the hosts and ports.
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
    if let Some(password) = &settings.password {
        config.password(password.secret.expose());
    }
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
    inner: PostgresConnectionManager<LazyTls>,
    /// The same settings as `inner`'s, one host each with its `host:port`,
    /// for the bounded first connect: the driver would say only why the
    /// last host failed.
    hosts: Vec<(String, postgres::Config)>,
    tls: LazyTls,
    seed: Mutex<Option<Client>>,
    /// The `host:port` the first connection reached.
    reached: Mutex<Option<String>>,
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

    /// Connects, giving up after `timeout` even when the server accepted the
    /// TCP connection and then went silent, during the TLS handshake or
    /// authentication (the driver's own timeout covers only the TCP
    /// connect). An abandoned attempt ends with the process.
    fn connect_bounded(&self, timeout: Duration) -> Result<Client, ConnectFailure> {
        let (tx, rx) = mpsc::sync_channel(1);
        let (hosts, tls) = (self.hosts.clone(), self.tls.clone());
        std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let mut failures = Vec::new();
                for (host, config) in hosts {
                    match config.connect(tls.clone()) {
                        Ok(client) => {
                            let _ = tx.send(Ok((host, client)));
                            return;
                        }
                        Err(err) => failures.push((host, err)),
                    }
                }
                let _ = tx.send(Err(failures));
            })
            .map_err(ConnectFailure::NoThread)?;
        // A stop signal ends the wait; the attempt, in its own thread, is
        // left to end with the process.
        let until = Instant::now() + timeout;
        let answer = loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(STOP_POLL)) {
                Ok(answer) => break answer,
                Err(mpsc::RecvTimeoutError::Timeout) if crate::stall::stop_asked() => {
                    return Err(ConnectFailure::Stopped);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => return Err(ConnectFailure::TimedOut),
            }
        };
        match answer {
            Ok((host, client)) => {
                *self.reached.lock().unwrap_or_else(|e| e.into_inner()) = Some(host);
                Ok(client)
            }
            Err(failures) => Err(ConnectFailure::Driver(failures)),
        }
    }
}

/// Why the first connection failed.
enum ConnectFailure {
    /// Each host tried, with its error, in order.
    Driver(Vec<(String, postgres::Error)>),
    TimedOut,
    NoThread(std::io::Error),
    /// A stop signal came first.
    Stopped,
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

impl ManageConnection for Manager {
    type Connection = Client;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Client, postgres::Error> {
        let seeded = self
            .seed
            .lock()
            .expect("seed lock is never poisoned")
            .take();
        match seeded {
            Some(client) => Ok(client),
            None => self.inner.connect().inspect_err(|err| {
                let text = describe(err);
                log::debug!("connection attempt failed: {text}");
                *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
                FAILURES.fetch_add(1, Ordering::SeqCst);
            }),
        }
    }

    fn is_valid(&self, client: &mut Client) -> Result<(), postgres::Error> {
        self.inner.is_valid(client)
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        client.is_closed()
    }
}
