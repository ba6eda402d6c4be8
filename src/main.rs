//! pgsense-pg: loads pgsense findings (NDJSON) into PostgreSQL.

mod bootstrap;
mod cli;
mod config;
mod connect;
mod load;
mod record;
mod report;
mod state;
mod write;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command, GlobalArgs, LoadArgs};
use crate::config::{PgEnv, Settings};
use crate::report::{LoadReport, Rejects, Status, WithStatus};
use crate::state::StateFile;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    match run(&cli) {
        Ok(status) => status.into(),
        Err(err) => {
            report::print_error(&err);
            report::status_of(&err).into()
        }
    }
}

/// -q shows errors only, -v info, -vv debug, -vvv trace; RUST_LOG, when set,
/// takes precedence.
fn init_logging(args: &GlobalArgs) {
    let level = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|out, record| writeln!(out, "pgsense-pg: {}: {}", record.level(), record.args()))
        .init();
}

fn run(cli: &Cli) -> Result<Status> {
    let settings = config::resolve(&cli.global, &PgEnv::from_process()).status(Status::Config)?;
    match &cli.command {
        Command::Init => init(&settings),
        Command::Load(args) => load(&settings, args, cli.global.quiet),
    }
}

fn init(settings: &Settings) -> Result<Status> {
    let (mut client, _) = connect(settings)?;
    let done = bootstrap::bootstrap(&mut client, settings).status(Status::Unavailable)?;
    let mut stdout = std::io::stdout().lock();
    for line in done {
        writeln!(stdout, "{line}")?;
    }
    Ok(Status::Ok)
}

fn load(settings: &Settings, args: &LoadArgs, quiet: bool) -> Result<Status> {
    let state = match &args.state_file {
        Some(path) => Some(StateFile::open(path).status(Status::Failure)?),
        None => None,
    };
    let sources = load::open_inputs(&args.files, state.as_ref()).status(Status::NoInput)?;
    let rejects = match &args.reject_file {
        Some(path) => Some(Rejects::open(path).status(Status::CantCreate)?),
        None => None,
    };
    if sources.iter().any(|s| s.name == "-") && std::io::stdin().is_terminal() && !quiet {
        log::warn!("reading findings from the terminal; end with Ctrl-D");
    }
    let (mut client, manager) = connect(settings)?;
    for line in bootstrap::bootstrap(&mut client, settings).status(Status::Unavailable)? {
        log::info!("{line}");
    }
    let pool = connect::pool(settings, manager, client);
    let options = load::Options {
        max_line_bytes: args.max_line_bytes,
        batch_rows: usize::try_from(args.batch_rows).unwrap_or(usize::MAX),
        batch_bytes: usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
        retry_for: Duration::from_secs(args.retry_for),
    };
    let outcome = load::load(
        pool,
        settings,
        sources,
        options,
        LoadReport::new(quiet),
        rejects,
        state,
    )?;
    outcome.report.print_summary();
    let closed = outcome.rejects.map_or(Ok(()), Rejects::finish);
    if let Some(signal) = outcome.signal {
        if let Err(err) = closed {
            report::print_error(&err);
        }
        return Ok(Status::Signal(signal));
    }
    if let Some(err) = outcome.read_error {
        if let Err(err) = closed {
            report::print_error(&err);
        }
        return Err(err);
    }
    closed?;
    if let Some(err) = outcome.state_error {
        return Err(err);
    }
    Ok(outcome.report.status())
}

fn connect(settings: &Settings) -> Result<(postgres::Client, connect::Manager)> {
    log::info!("connecting to {}", settings.target());
    connect::connect(settings)
        .map_err(|err| err.context(format!("cannot connect to {}", settings.target())))
        .status(Status::Unavailable)
}
