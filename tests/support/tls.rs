//! TLS for the tests: certificates made at test time with the openssl
//! command (a CA, server and client certificates, an expired one, a
//! self-signed one), and throwaway servers with `ssl = on`.
//!
//! Everything lives in the server's own temporary directory, which the
//! harness removes with the server (even for the servers kept in statics,
//! through the watchdog).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use super::pg::{PgServer, private};
use super::process;

/// How long one openssl command may take (an RSA key takes the longest).
const OPENSSL_SECONDS: u64 = 60;

/// Runs openssl in `dir`, ignoring the machine's openssl.cnf so that every
/// certificate has exactly the extensions asked for.
fn openssl(dir: &Path, args: &[&str]) {
    process::run_ok(
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .env("OPENSSL_CONF", "/dev/null"),
        Duration::from_secs(OPENSSL_SECONDS),
        &format!("openssl {}", args.join(" ")),
    );
}

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority made for the test run.
pub struct Ca {
    pub files: CertFiles,
    dir: PathBuf,
}

/// The kind of private key to make.
#[derive(Clone, Copy)]
pub enum Key {
    /// P-256, PKCS#8: fast to make.
    Ec,
    /// RSA 2048 in the PKCS#1 form (`BEGIN RSA PRIVATE KEY`) that libpq
    /// accepts and native-tls does not take as is.
    RsaPkcs1,
}

impl Ca {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                path_str(&files.key),
                "-out",
                path_str(&files.cert),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Ca {
            files,
            dir: dir.to_owned(),
        }
    }

    /// A certificate for `cn`, signed by this CA, valid for `days` (a
    /// negative number makes one that has expired), with `san` (for example
    /// `DNS:localhost`) as its subjectAltName when given.
    pub fn issue(&self, name: &str, cn: &str, san: Option<&str>, days: i32, key: Key) -> CertFiles {
        let files = CertFiles {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        let csr = self.dir.join(format!("{name}.csr"));
        make_key(&self.dir, &files.key, key);
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-key",
                path_str(&files.key),
                "-out",
                path_str(&csr),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        let extensions = self.dir.join(format!("{name}.ext"));
        let mut text = String::from("basicConstraints=CA:FALSE\n");
        if let Some(san) = san {
            text.push_str(&format!("subjectAltName={san}\n"));
        }
        fs::write(&extensions, text).expect("write an extensions file");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                path_str(&csr),
                "-CA",
                path_str(&self.files.cert),
                "-CAkey",
                path_str(&self.files.key),
                "-set_serial",
                &serial(),
                "-days",
                &days.to_string(),
                "-extfile",
                path_str(&extensions),
                "-out",
                path_str(&files.cert),
            ],
        );
        files
    }
}

/// A self-signed certificate for `cn` with `san` as subjectAltName.
pub fn self_signed(dir: &Path, name: &str, cn: &str, san: &str) -> CertFiles {
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            path_str(&files.key),
            "-out",
            path_str(&files.cert),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName={san}"),
        ],
    );
    files
}

fn make_key(dir: &Path, path: &Path, key: Key) {
    match key {
        Key::Ec => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                path_str(path),
            ],
        ),
        Key::RsaPkcs1 => openssl(
            dir,
            &["genrsa", "-traditional", "-out", path_str(path), "2048"],
        ),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod a key");
}

/// Serial numbers unique within the run.
fn serial() -> String {
    super::pg::unique("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

impl PgServer {
    /// Turns TLS on with `server` as the server's certificate and, when
    /// given, `client_ca` as the CA that client certificates (for `cert`
    /// authentication) must come from; returns once a TLS connection works.
    pub fn enable_tls(&self, server: &CertFiles, client_ca: Option<&Path>) {
        let dir = self.socket_dir();
        // The server's user must own its key, which it refuses when others
        // can read it.
        let owner = fs::metadata(dir).expect("the server's directory");
        let install = |from: &Path, name: &str, mode: u32| -> PathBuf {
            let to = dir.join(name);
            fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).expect("chmod");
            std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid()))
                .unwrap_or_else(|e| panic!("chown {}: {e}", to.display()));
            to
        };
        let cert = install(&server.cert, "server.crt", 0o644);
        let key = install(&server.key, "server.key", 0o600);
        let mut settings = vec![
            format!("ssl_cert_file = '{}'", cert.display()),
            format!("ssl_key_file = '{}'", key.display()),
        ];
        if let Some(ca) = client_ca {
            let ca = install(ca, "client-ca.crt", 0o644);
            settings.push(format!("ssl_ca_file = '{}'", ca.display()));
        }
        settings.push("ssl = on".to_owned());
        for setting in settings {
            // One statement each: ALTER SYSTEM refuses to run in the
            // implicit transaction of a multi-statement query.
            self.execute("postgres", &format!("ALTER SYSTEM SET {setting}"));
        }
        self.execute("postgres", "SELECT pg_reload_conf()");
        let mut last = String::new();
        for _ in 0..50 {
            match self.tls_probe() {
                Ok(true) => return,
                Ok(false) => last = "connected without TLS".to_owned(),
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "TLS never came up on port {}: {last}\n--- {} ---\n{}",
            self.port(),
            self.log_file().display(),
            fs::read_to_string(self.log_file()).unwrap_or_default()
        );
    }

    /// Whether a TCP connection as the superuser gets TLS.
    fn tls_probe(&self) -> Result<bool, String> {
        let connector = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true)
            .build()
            .map_err(|e| e.to_string())?;
        let mut client = postgres::Config::new()
            .host(self.host())
            .port(self.port())
            .user("postgres")
            .dbname("postgres")
            .ssl_mode(postgres::config::SslMode::Require)
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres_native_tls::MakeTlsConnector::new(connector))
            .map_err(|e| format!("{e:?}"))?;
        let row = client
            .query_one(
                "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
                &[],
            )
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    }

    /// Adds columns to `pgsense.findings` of `db` that record, for each
    /// row, whether the connection that inserted it used TLS and the
    /// subject of its client certificate, as pg_stat_ssl saw them.
    pub fn record_tls_of_inserts(&self, db: &str) {
        self.execute(
            db,
            "create function public.inserted_over_tls() returns boolean language sql as
                 $$ select ssl from pg_stat_ssl where pid = pg_backend_pid() $$;
             create function public.inserted_with_client_dn() returns text language sql as
                 $$ select client_dn from pg_stat_ssl where pid = pg_backend_pid() $$;
             alter table pgsense.findings
                 add column over_tls boolean default public.inserted_over_tls(),
                 add column client_dn text default public.inserted_with_client_dn();",
        );
    }
}

/// A server with TLS on, `cert` its certificate, `client_ca` the CA of
/// client certificates. Stopped and removed on Drop.
pub fn private_tls(cert: &CertFiles, client_ca: Option<&Path>) -> PgServer {
    let server = private();
    server.enable_tls(cert, client_ca);
    server
}
