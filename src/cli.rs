//! The command line: commands, flags and their help text, as clap derive
//! definitions only. The help text here is also the man page and the shell
//! completions, which are generated from it. Nothing in this file does I/O;
//! `config` turns these raw flags into validated settings.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Load pgsense findings (newline-delimited JSON) into a PostgreSQL table.
///
/// pgsense-pg reads the findings that the pgsense scanner writes through its
/// JSONL channel, one JSON object per line, and inserts them into a findings
/// table, creating the schema and the table first when they are missing.
/// Every line read ends up either inserted or reported on stderr with its file,
/// line number and reason; the exit status says which happened.
#[derive(Debug, Parser)]
#[command(name = "pgsense-pg", version, about, long_about, max_term_width = 100)]
#[command(args_override_self = true)]
#[command(after_long_help = crate::exit::long_help())]
// -h is the host, as for psql and every PostgreSQL client; -? is help.
#[command(disable_help_flag = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: GlobalArgs,
}

impl Cli {
    /// The command line, as clap parses it, with the environment it
    /// reads: an empty PGSENSE_PG_CONFIG is no config file, as an empty
    /// PG* variable is no value (clap would take it for a missing value).
    pub fn from_command_line() -> Cli {
        if std::env::var_os("PGSENSE_PG_CONFIG").is_some_and(|value| value.is_empty()) {
            // SAFETY: called first thing in main: no other thread runs yet
            // to read the environment.
            unsafe { std::env::remove_var("PGSENSE_PG_CONFIG") };
        }
        Cli::parse()
    }
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the schema and table if missing, then insert findings from
    /// FILEs or stdin.
    Load(LoadArgs),
    /// Create the schema and table if missing, and report what was found or
    /// created; loads nothing.
    Init,
    /// Check, without writing anything, that a load would succeed: the
    /// connection, the table and its columns, and the grants; prints the
    /// GRANT that fixes what is missing.
    Check,
}

/// Options for `load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Files of findings, read in order; `-` or no FILE reads standard input.
    /// gzip and zstd data is decoded (told by its first bytes).
    #[arg(value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub files: Vec<PathBuf>,

    /// Reject lines longer than this many bytes (the \r of a CRLF ending
    /// and a UTF-8 BOM before a file's first line count, the \n does not),
    /// without holding them in memory whole.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_line_bytes: u64,

    /// Append every dropped line there, byte for byte as read, so that
    /// `pgsense-pg load PATH` replays them once the cause is fixed.
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub reject_file: Option<PathBuf>,

    /// Parse and validate the input with the rules of a real load, report
    /// the same way (the lines a real load would insert as "would be
    /// inserted"), and connect to nothing (--state-file, --reject-file and
    /// --metrics-file are left untouched).
    #[arg(long)]
    pub dry_run: bool,

    /// At the end, print a summary on stdout in this format.
    #[arg(long, value_name = "FORMAT")]
    pub summary: Option<SummaryFormat>,

    /// Write the run's counters to PATH in Prometheus text format, atomically
    /// (for node_exporter's textfile collector).
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub metrics_file: Option<PathBuf>,

    /// Stop reading (exit 65) once more than N lines have been rejected
    /// (rows the server refuses count once their batch commits, when the
    /// batches already read are loaded too).
    #[arg(long, value_name = "N")]
    pub max_rejects: Option<u64>,

    /// Remember in PATH how far each FILE has been loaded, and start after
    /// that point next time (for cron over a file that keeps growing); a
    /// replaced or truncated file is loaded from its start, and an
    /// unterminated last line of a plain file is left for the next run.
    /// Each batch is recorded in PATH.journal before it commits, so that
    /// the run after a crash loads nothing twice (PATH.lock keeps two runs
    /// apart; a symbolic link is followed to the file it leads to).
    #[arg(long, value_name = "PATH", value_hint = clap::ValueHint::FilePath)]
    pub state_file: Option<PathBuf>,

    /// Settle by hand a batch of a stopped run whose outcome the server
    /// cannot tell (the error names its transaction and lines): `committed`
    /// when its findings are in the table, `aborted` when they are not, and
    /// the run goes on from there. Only for that transaction, and only when
    /// the server cannot answer; may be given more than once.
    #[arg(long, value_name = "TXID=committed|aborted", requires = "state_file",
          value_parser = parse_settle, value_hint = clap::ValueHint::Other)]
    pub settle: Vec<Settle>,

    /// Keep running after the end of each FILE, loading lines as they are
    /// appended, as `tail -F` does: a FILE replaced by rotation (rename and
    /// create, or copy and truncate) is followed by name, after the lines
    /// left in the old one; a FILE that does not exist yet is waited for.
    /// Needs --state-file. The database is retried for as long as it takes
    /// (the files hold the lines meanwhile). Stop with SIGTERM or SIGINT.
    #[arg(long, requires = "state_file", conflicts_with = "dry_run")]
    pub follow: bool,

    /// With --follow, commit lines at most this many seconds after they
    /// were appended (lines that come faster go in full batches anyway).
    #[arg(long, value_name = "SECONDS", default_value = "0.5", requires = "follow",
          value_parser = parse_interval)]
    pub flush_interval: std::time::Duration,

    /// Retry a failing database (connection lost, server restarting, too
    /// many connections, deadlock) for up to this many seconds before
    /// dropping the findings it holds; 0 disables retries. --follow retries
    /// without a limit.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub retry_for: u64,

    /// Send at most this many rows in one transaction.
    #[arg(long, value_name = "ROWS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_rows: u64,

    /// Send at most about this many bytes of row data in one transaction.
    #[arg(long, value_name = "BYTES", default_value_t = 2 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub batch_bytes: u64,
}

/// Options accepted before or after the command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Read [alerts.postgres] from this TOML file (the scanner's own config
    /// file works unchanged).
    #[arg(short, long, global = true, value_name = "FILE", env = "PGSENSE_PG_CONFIG",
          value_hint = clap::ValueHint::FilePath)]
    pub config: Option<PathBuf>,

    /// Log more: -v for info, -vv for debug, -vvv for trace (RUST_LOG, when
    /// set, takes precedence).
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only errors: no per-line reasons, no summary.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print help.
    #[arg(short = '?', long, global = true, action = ArgAction::HelpLong)]
    pub help: Option<bool>,

    /// Server host name, IP address, or Unix socket directory; a comma-separated
    /// list is tried in order, as libpq does, and an empty entry is the default
    /// [config: host, env: PGHOST, default: localhost].
    #[arg(short, long, global = true, value_name = "HOST[,HOST...]",
          value_hint = clap::ValueHint::Hostname)]
    pub host: Option<String>,

    /// Server port, or one port per host, comma-separated; an empty entry is
    /// the default [config: port, env: PGPORT, default: 5432].
    #[arg(short, long, global = true, value_name = "PORT[,PORT...]", value_parser = parse_ports)]
    pub port: Option<Ports>,

    /// Database holding the findings table, or a libpq connection string
    /// (`host=db dbname=findings`) or URI (`postgresql://user@db/findings`),
    /// as psql takes; the other flags override its parts [config: dbname, env:
    /// PGDATABASE, default: postgres].
    #[arg(short, long, global = true, value_name = "NAME|CONNINFO")]
    pub dbname: Option<String>,

    /// A service of libpq's pg_service.conf whose settings are used (after
    /// the flags, the config file and --dbname's) [env: PGSERVICE].
    #[arg(long, global = true, value_name = "NAME")]
    pub service: Option<String>,

    /// Role to connect as [config: username, env: PGUSER, default: postgres].
    #[arg(short = 'U', long, global = true, value_name = "NAME")]
    pub username: Option<String>,

    /// Read the password from this file (trailing whitespace trimmed)
    /// [config: password, env: PGPASSWORD, then PGPASSFILE or ~/.pgpass].
    #[arg(long, global = true, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub password_file: Option<PathBuf>,

    /// TLS mode, as libpq's sslmode; `allow` acts as `prefer` [config:
    /// tls.mode or tls.enabled, env: PGSSLMODE, default: prefer].
    #[arg(long, global = true, value_name = "MODE", value_enum)]
    pub sslmode: Option<SslMode>,

    /// CA certificates (PEM) that verify-ca and verify-full trust instead of
    /// the system's; `system` for the system's [config:
    /// tls.trusted_root_certs, env: PGSSLROOTCERT, default: system].
    #[arg(long, global = true, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub sslrootcert: Option<PathBuf>,

    /// Client certificate (PEM) to present, for `cert` authentication
    /// [config: tls.client_cert, env: PGSSLCERT].
    #[arg(long, global = true, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub sslcert: Option<PathBuf>,

    /// Private key of --sslcert (PEM: PKCS#8, or PKCS#1 RSA) [config:
    /// tls.client_key, env: PGSSLKEY].
    #[arg(long, global = true, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub sslkey: Option<PathBuf>,

    /// Schema of the findings table [config: schema, default: pgsense].
    #[arg(long, global = true, value_name = "NAME")]
    pub schema: Option<String>,

    /// Name of the findings table [config: table, default: findings].
    #[arg(long, global = true, value_name = "NAME")]
    pub table: Option<String>,

    /// Give up connecting (TCP, TLS and authentication) to a host after this
    /// many seconds [env: PGCONNECT_TIMEOUT, default: 10].
    #[arg(long, global = true, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: Option<u64>,

    /// Give up on a server that leaves one statement unanswered this many
    /// seconds: cancel it, then shut the connection down (a stopped server
    /// never answers a cancel) and go on as after a lost connection.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
}

/// An operator's word on a transaction of a stopped run (--settle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    pub txid: i64,
    pub committed: bool,
}

/// `123=committed` or `123=aborted`.
fn parse_settle(text: &str) -> Result<Settle, String> {
    let (txid, outcome) = text
        .split_once('=')
        .ok_or_else(|| format!("expected TXID=committed or TXID=aborted: {text}"))?;
    let txid = txid
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|txid| *txid > 0)
        .ok_or_else(|| format!("not a transaction id: {txid}"))?;
    let committed = match outcome.trim() {
        "committed" => true,
        "aborted" => false,
        other => return Err(format!("expected committed or aborted, not {other:?}")),
    };
    Ok(Settle { txid, committed })
}

/// A duration in seconds, decimals allowed, from 0.01 to 3600.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("not a number of seconds: {text}"))?;
    if !(0.01..=3600.0).contains(&seconds) {
        return Err(format!("must be from 0.01 to 3600 seconds: {text}"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// Ports, one for every host or one per host; as libpq, an empty entry is
/// the default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

/// The default port.
pub const DEFAULT_PORT: u16 = 5432;

/// `5432`, `5432,5433`, `,5433`: libpq's port list. Port 0 is refused (the
/// kernel would pick any port).
pub fn parse_ports(text: &str) -> Result<Ports, String> {
    text.split(',')
        .map(|entry| match entry.trim() {
            "" => Ok(DEFAULT_PORT),
            entry => match entry.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!(
                    "{entry:?} is not a port: ports are numbers from 1 to 65535"
                )),
                Ok(port) => Ok(port),
            },
        })
        .collect::<Result<_, _>>()
        .map(Ports)
}

/// libpq's sslmode values. The raw flag value and the resolved setting are
/// the same type: `config.rs` also parses PGSSLMODE and `tls.mode` into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// The same as prefer (libpq tries without TLS first, then with it).
    Allow,
    /// TLS when the server offers it; its certificate is not checked.
    Prefer,
    /// TLS required; the server's certificate is not checked.
    Require,
    /// TLS required; the server's certificate must come from a trusted CA
    /// (the host name is not checked).
    VerifyCa,
    /// TLS required; the server's certificate must come from a trusted CA
    /// and name the host (DNS name or IP address).
    VerifyFull,
}

/// Formats of `load --summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    /// One JSON object.
    Json,
}
