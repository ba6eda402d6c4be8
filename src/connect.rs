//! Connections: the TLS connector, the first direct connection (which gives
//! the real cause of a failure), and the r2d2 pool of at most two
//! connections. Every wait here is bounded by --connect-timeout.

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use native_tls::{Certificate, TlsConnector};
use postgres::Client;
use postgres::config::SslMode;
use postgres_native_tls::MakeTlsConnector;
use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::r2d2::{self, ManageConnection};

use crate::config::{RootCert, Settings, TlsMode};

/// At most this many connections at once, bootstrap included.
pub const POOL_SIZE: u32 = 2;

pub type Pool = r2d2::Pool<Manager>;
pub type Connection = r2d2::PooledConnection<Manager>;

/// Opens the first connection directly, so that a failure says why
/// (refused, authentication, no such database) instead of r2d2's bare
/// "timed out", then hands that same connection to the pool: the pool never
/// holds more than [`POOL_SIZE`] connections, the first one included.
pub fn connect(settings: &Settings) -> Result<(Client, Manager)> {
    let config = pg_config(settings);
    let tls = tls_connector(settings)?;
    let manager = Manager {
        inner: PostgresConnectionManager::new(config.clone(), tls.clone()),
        config,
        tls,
        seed: Mutex::new(None),
    };
    let client = manager.connect_bounded(settings.connect_timeout)?;
    Ok((client, manager))
}

/// Builds the pool around `manager`, seeded with `first`.
pub fn pool(settings: &Settings, manager: Manager, first: Client) -> Pool {
    *manager.seed.lock().expect("seed lock is never poisoned") = Some(first);
    r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(0))
        .connection_timeout(settings.connect_timeout)
        // Each writer holds its connection for the whole run and notices a
        // broken one by its own failed query: no extra round trip per checkout.
        .test_on_check_out(false)
        .error_handler(Box::new(r2d2::LoggingErrorHandler))
        .build_unchecked(manager)
}

fn pg_config(settings: &Settings) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host(&settings.host)
        .port(settings.port)
        .dbname(&settings.dbname)
        .user(&settings.username)
        .application_name("pgsense-pg")
        // The pool's connections all start with the findings schema first in
        // search_path: set at connection start-up, so it costs no round trip
        // and holds for every checkout.
        .options(&format!("-c search_path=\"{}\"", settings.schema))
        .connect_timeout(settings.connect_timeout)
        // A peer that vanishes mid-run must end the run, not hang it.
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .ssl_mode(match settings.tls {
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::VerifyFull { .. } => SslMode::Require,
        });
    if let Some(password) = &settings.password {
        config.password(password.expose());
    }
    config
}

fn tls_connector(settings: &Settings) -> Result<MakeTlsConnector> {
    let mut builder = TlsConnector::builder();
    match &settings.tls {
        // The scanner's "prefer": encrypt when the server offers it, but do
        // not verify, as libpq's sslmode=prefer.
        TlsMode::Prefer => {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        TlsMode::VerifyFull { root_cert } => {
            if let Some(root) = root_cert {
                let pem = match root {
                    RootCert::Pem(text) => text.clone().into_bytes(),
                    RootCert::Path(path) => std::fs::read(path).with_context(|| {
                        format!("cannot read trusted_root_certs {}", path.display())
                    })?,
                };
                let cert = Certificate::from_pem(&pem)
                    .context("trusted_root_certs is not a PEM certificate")?;
                builder.add_root_certificate(cert);
            }
        }
    }
    let connector = builder.build().context("cannot set up TLS")?;
    Ok(MakeTlsConnector::new(connector))
}

/// The pool's connection manager: hands out the first, already open
/// connection once, then opens new ones.
pub struct Manager {
    inner: PostgresConnectionManager<MakeTlsConnector>,
    /// The same settings as `inner`'s, for the bounded first connect.
    config: postgres::Config,
    tls: MakeTlsConnector,
    seed: Mutex<Option<Client>>,
}

impl Manager {
    /// Connects, giving up after `timeout` even when the server accepted the
    /// TCP connection and then went silent (the driver's own timeout covers
    /// only the TCP connect). An abandoned attempt ends with the process.
    fn connect_bounded(&self, timeout: Duration) -> Result<Client> {
        let (tx, rx) = mpsc::sync_channel(1);
        let (config, tls) = (self.config.clone(), self.tls.clone());
        std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let _ = tx.send(config.connect(tls));
            })
            .context("cannot start a thread")?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(err)) => Err(anyhow!(describe(&err))),
            Err(_) => Err(anyhow!(
                "no answer within {} s (TCP connect, TLS handshake or authentication \
                 did not complete): check that the server is up and reachable, or raise \
                 --connect-timeout",
                timeout.as_secs()
            )),
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
            None => self.inner.connect(),
        }
    }

    fn is_valid(&self, client: &mut Client) -> Result<(), postgres::Error> {
        self.inner.is_valid(client)
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        client.is_closed()
    }
}

/// One line for a driver error: the server's own message and hint when the
/// server sent one, else the driver's text followed by its causes.
pub fn describe(err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => {
            let mut text = err.to_string();
            let mut cause = std::error::Error::source(err);
            while let Some(inner) = cause {
                text.push_str(&format!(": {inner}"));
                cause = inner.source();
            }
            text
        }
    }
}
