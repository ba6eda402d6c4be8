//! TLS as resolved: the sslmode, the root certificates a verifying mode
//! trusts and the client certificate, each from a flag, the config file's
//! `[alerts.postgres.tls]` or a PG* variable. The PEM files are read and
//! checked here, so that a missing or malformed one is a configuration
//! error before anything connects.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use native_tls::{Certificate, Identity};

use super::file::TlsSection;
use super::pem;
use super::secret::warn_if_readable_by_others;
use super::setting::{self, Setting};
use super::source::{Origin, Precedence, Sourced};
use super::{Parts, PgEnv};
use crate::cli::{GlobalArgs, SslMode};

/// TLS as resolved: libpq's sslmode and the certificates it uses.
#[derive(Clone)]
pub struct Tls {
    /// The mode, and which setting chose it (for messages).
    pub mode: Sourced<SslMode>,
    /// What verify-ca and verify-full trust; unused by the other modes.
    pub roots: Roots,
    /// The certificate the client presents, for `cert` authentication.
    pub client: Option<ClientCert>,
}

/// The certificate authorities a verifying mode trusts.
#[derive(Clone)]
pub enum Roots {
    /// The system's trusted roots (the scanner's behaviour, and libpq's
    /// `sslrootcert=system`).
    System,
    /// Only these certificates, as libpq does with `sslrootcert`: a private
    /// CA must not be diluted by every public one.
    Only {
        certificates: Vec<Certificate>,
        origin: String,
    },
}

impl Roots {
    /// Where the trusted roots come from, for messages.
    pub fn origin(&self) -> &str {
        match self {
            Roots::System => "the system's trusted roots",
            Roots::Only { origin, .. } => origin,
        }
    }
}

/// A client certificate with its key, and where they came from.
#[derive(Clone)]
pub struct ClientCert {
    pub identity: Identity,
    pub origin: String,
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self
            .to_possible_value()
            .expect("every sslmode is a possible value");
        f.write_str(value.get_name())
    }
}

/// Resolves the TLS settings and loads the files they name.
pub fn resolve(
    args: &GlobalArgs,
    section: TlsSection,
    parts: &Parts,
    env: &PgEnv,
    over_tcp: bool,
) -> Result<Tls> {
    let TlsSection {
        enabled,
        mode,
        trusted_root_certs,
        client_cert,
        client_key,
    } = section;
    let mode = sslmode(args.sslmode, mode, enabled, parts, env)?;
    log::debug!("sslmode {mode} (from {})", mode.origin);
    let root = PemSetting::pick(
        &setting::SSLROOTCERT,
        parts,
        args.sslrootcert.as_ref(),
        trusted_root_certs,
        env.sslrootcert.as_ref(),
    );
    let roots = roots(root, mode, over_tcp)?;
    let cert = PemSetting::pick(
        &setting::SSLCERT,
        parts,
        args.sslcert.as_ref(),
        client_cert,
        env.sslcert.as_ref(),
    );
    let key = PemSetting::pick(
        &setting::SSLKEY,
        parts,
        args.sslkey.as_ref(),
        client_key,
        env.sslkey.as_ref(),
    );
    let client = client(cert, key, mode.value)?;
    Ok(Tls {
        mode,
        roots,
        client,
    })
}

/// `--sslmode`, then `mode`, then the scanner's `enabled`, then PGSSLMODE.
fn sslmode(
    flag: Option<SslMode>,
    mode: Option<String>,
    enabled: Option<bool>,
    parts: &Parts,
    env: &PgEnv,
) -> Result<Sourced<SslMode>> {
    // The scanner's enabled = true is verify-full. Its false, in every
    // sample config, is prefer: the default, which asks for nothing, so a
    // mode set in a connection string, a service or PGSSLMODE still applies
    // (rather than being weakened to prefer without a word).
    let enabled = enabled
        .filter(|enabled| *enabled)
        .map(|_| SslMode::VerifyFull);
    Ok(Precedence::of(&setting::SSLMODE)
        .flag(flag)
        .try_part(parts.flag.as_ref(), parse_sslmode)?
        .try_file(mode, parse_sslmode)?
        .file_key("enabled", enabled)
        .try_part(parts.file.as_ref(), parse_sslmode)?
        .try_part(parts.service.as_ref(), parse_sslmode)?
        .try_env(env.sslmode.clone(), parse_sslmode)?
        .or_default(SslMode::Prefer))
}

fn parse_sslmode(text: String, origin: Origin) -> Result<SslMode> {
    let ignore_case = false;
    SslMode::from_str(&text, ignore_case).map_err(|_| {
        anyhow::anyhow!(
            "{} is not an sslmode: use one of disable, allow, prefer, require, \
             verify-ca, verify-full",
            origin.show_quoted(&text)
        )
    })
}

/// What a verifying mode trusts: the root certificates are read only when
/// the mode uses them. Over Unix sockets alone (`over_tcp` false), where
/// TLS does not apply, verify-ca needs none.
fn roots(root: Option<PemSetting>, mode: Sourced<SslMode>, over_tcp: bool) -> Result<Roots> {
    let verifies = matches!(mode.value, SslMode::VerifyCa | SslMode::VerifyFull);
    let roots = match root {
        Some(root) if root.is_system() => Roots::System,
        Some(root) if verifies => read_roots(&root)?,
        Some(root) => {
            warn_unused_root(&root, mode);
            Roots::System
        }
        None => Roots::System,
    };
    if over_tcp && mode.value == SslMode::VerifyCa && matches!(roots, Roots::System) {
        bail!(
            "sslmode verify-ca (from {}) needs the certificate of the CA that signed the \
             server's: set {}. Against the system's roots, which vouch for any public host, \
             only verify-full is safe",
            mode.origin,
            setting::SSLROOTCERT.one_of()
        );
    }
    Ok(roots)
}

/// libpq turns require into verify-ca when it finds a root certificate;
/// here require never verifies, so say so.
fn warn_unused_root(root: &PemSetting, mode: Sourced<SslMode>) {
    let unused = format!(
        "{} is not used: sslmode {mode} (from {}) does not verify the server's certificate; \
         set {} verify-full (or verify-ca) to verify it",
        root.origin,
        mode.origin,
        setting::SSLMODE.flag
    );
    if mode.value == SslMode::Require {
        log::warn!("{unused}");
    } else {
        log::info!("{unused}");
    }
}

/// The client certificate, when both it and its key are set.
fn client(
    cert: Option<PemSetting>,
    key: Option<PemSetting>,
    mode: SslMode,
) -> Result<Option<ClientCert>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), None) => bail!(
            "{} is set without its private key: set {}",
            cert.origin,
            setting::SSLKEY.one_of()
        ),
        (None, Some(key)) => bail!(
            "{} is set without its certificate: set {}",
            key.origin,
            setting::SSLCERT.one_of()
        ),
        (Some(_), Some(_)) if mode == SslMode::Disable => {
            log::info!("the client certificate is not used: sslmode is disable");
            Ok(None)
        }
        (Some(cert), Some(key)) => read_client_cert(&cert, &key).map(Some),
    }
}

/// A PEM value: a file, or (in the config file only) the PEM text itself.
enum Pem {
    Path(PathBuf),
    Text(String),
}

impl Pem {
    /// The scanner's docs call trusted_root_certs a path and its code reads
    /// PEM text: accept both, told apart by the PEM armour. A value of
    /// several lines is text too (a key pasted without its armour, say):
    /// taken for a file's name, it would be shown in messages.
    fn from_config(value: String) -> Pem {
        if value.contains("-----BEGIN ") || value.contains('\n') {
            Pem::Text(value)
        } else {
            Pem::Path(PathBuf::from(value))
        }
    }
}

/// A PEM value and the setting it came from.
struct PemSetting {
    pem: Pem,
    /// The setting with its value, for messages: "--sslcert /c.pem".
    origin: String,
}

impl PemSetting {
    /// The first of the flag, the config key and the variable that is set.
    fn pick(
        setting: &'static Setting,
        parts: &Parts,
        flag: Option<&PathBuf>,
        config: Option<String>,
        env: Option<&String>,
    ) -> Option<PemSetting> {
        let path = |text: String| Pem::Path(PathBuf::from(text));
        let chosen = parts
            .text(
                Precedence::of(setting),
                flag.cloned().map(Pem::Path),
                config.map(Pem::from_config),
                path,
            )
            .env(env.map(PathBuf::from).map(Pem::Path))
            .get()?;
        let origin = match (&chosen.value, chosen.origin) {
            (Pem::Path(path), origin) => origin.show(&path.display().to_string()),
            (Pem::Text(_), Origin::File { key, section }) => {
                format!("{key} (inline PEM) in {section}")
            }
            (Pem::Text(_), origin) => format!("{origin} (inline PEM)"),
        };
        Some(PemSetting {
            pem: chosen.value,
            origin,
        })
    }

    /// `system` in place of a root certificate file, as libpq spells the
    /// system's trusted roots.
    fn is_system(&self) -> bool {
        matches!(&self.pem, Pem::Path(path) if path.as_os_str() == "system")
    }

    fn read(&self) -> Result<String> {
        match &self.pem {
            Pem::Text(text) => Ok(text.clone()),
            Pem::Path(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", self.origin)),
        }
    }

    /// The file name for the openssl commands of messages.
    fn file_for_commands(&self) -> String {
        match &self.pem {
            Pem::Path(path) => path.display().to_string(),
            Pem::Text(_) => "client.key".into(),
        }
    }
}

fn read_roots(root: &PemSetting) -> Result<Roots> {
    let text = root.read()?;
    let blocks = pem::certificate_blocks(&text);
    if blocks.is_empty() {
        bail!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            root.origin
        );
    }
    let certificates = blocks
        .iter()
        .map(|block| Certificate::from_pem(block.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds a malformed certificate", root.origin))?;
    log::debug!(
        "trusting {} certificate(s) from {}",
        certificates.len(),
        root.origin
    );
    Ok(Roots::Only {
        certificates,
        origin: root.origin.clone(),
    })
}

fn read_client_cert(cert: &PemSetting, key: &PemSetting) -> Result<ClientCert> {
    if let Pem::Path(path) = &key.pem {
        warn_if_readable_by_others(path, &key.origin, 0o077, "group or others");
    }
    let cert_text = cert.read()?;
    if pem::certificate_blocks(&cert_text).is_empty() {
        bail!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert.origin
        );
    }
    let key_text = pem::pkcs8_key(&key.read()?, &key.origin, &key.file_for_commands())?;
    let identity = Identity::from_pkcs8(cert_text.as_bytes(), key_text.as_bytes())
        .with_context(|| format!("cannot use {} with {}", cert.origin, key.origin))?;
    // A key that does not belong to the certificate is only noticed when a
    // connector is built: build one now, so it is a configuration error.
    native_tls::TlsConnector::builder()
        .identity(identity.clone())
        .build()
        .with_context(|| {
            format!(
                "{} does not go with {}: they must be a certificate and its own private key",
                cert.origin, key.origin
            )
        })?;
    Ok(ClientCert {
        identity,
        origin: cert.origin.clone(),
    })
}
