//! pgsense-pg: loads pgsense findings (NDJSON) into PostgreSQL.

mod bootstrap;
mod cli;
mod config;
mod connect;
mod copy;
mod input;
mod load;
mod record;
mod report;
mod state;
mod write;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command, GlobalArgs, LoadArgs, SummaryFormat};
use crate::config::{PgEnv, Settings};
use crate::report::{LoadReport, Rejects, RunSummary, Status, WithStatus};
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
    let settings = config::resolve(&cli.global, &PgEnv::from_process()).status(Status::Config);
    match &cli.command {
        Command::Init => init(&settings?),
        Command::Check => check(&settings?),
        Command::Load(args) => {
            let started = Instant::now();
            let result = settings.and_then(|s| load(&s, args, cli.global.quiet, started));
            if let Err(err) = &result {
                // Monitoring must see a run that never got going, too.
                let report = LoadReport::new(true, args.dry_run);
                let mut files: Vec<_> =
                    args.files.iter().map(|f| f.display().to_string()).collect();
                if files.is_empty() {
                    files.push("-".into());
                }
                finish_summary(args, files, &report, started, report::status_of(err));
            }
            result
        }
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

fn check(settings: &Settings) -> Result<Status> {
    let (mut client, _) = connect(settings)?;
    let checks = bootstrap::preflight(&mut client, settings).status(Status::Unavailable)?;
    let mut stdout = std::io::stdout().lock();
    let mut status = Status::Ok;
    for check in checks {
        match check.problem {
            None => writeln!(stdout, "ok       {}", check.what)?,
            Some(problem) => {
                status = Status::Unavailable;
                writeln!(stdout, "missing  {}: {problem}", check.what)?;
            }
        }
    }
    Ok(status)
}

fn load(settings: &Settings, args: &LoadArgs, quiet: bool, started: Instant) -> Result<Status> {
    let state = match &args.state_file {
        Some(path) if !args.dry_run => Some(StateFile::open(path).status(Status::Failure)?),
        _ => None,
    };
    let sources = input::open_inputs(&args.files, state.as_ref()).status(Status::NoInput)?;
    let rejects = match &args.reject_file {
        Some(path) if !args.dry_run => Some(Rejects::open(path).status(Status::CantCreate)?),
        _ => None,
    };
    if let Some(rejects) = &rejects
        && let Some(input) = sources
            .iter()
            .find(|s| s.identity.is_some() && s.identity == rejects.identity())
    {
        return Err(anyhow::anyhow!(
            "the reject file is also an input ({}): it would grow while being read; \
             write rejects to another file, and replay this one without --reject-file or with another",
            input.name
        ))
        .status(Status::Usage);
    }
    if sources.iter().any(|s| s.name == "-") && std::io::stdin().is_terminal() && !quiet {
        log::warn!("reading findings from the terminal; end with Ctrl-D");
    }
    let pool = if args.dry_run {
        None
    } else {
        let (mut client, manager) = connect(settings)?;
        for line in bootstrap::bootstrap(&mut client, settings).status(Status::Unavailable)? {
            log::info!("{line}");
        }
        Some(connect::pool(settings, manager, client))
    };
    // A progress line is for a person watching a big file being loaded.
    let input_bytes: u64 = sources.iter().filter_map(|s| s.size).sum();
    let progress = (!quiet && std::io::stderr().is_terminal() && input_bytes > PROGRESS_FROM)
        .then_some(input_bytes);
    let options = load::Options {
        max_line_bytes: args.max_line_bytes,
        batch_rows: usize::try_from(args.batch_rows).unwrap_or(usize::MAX),
        batch_bytes: usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
        retry_for: Duration::from_secs(args.retry_for),
        max_rejects: args.max_rejects,
        progress,
    };
    let files: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let outcome = load::load(
        pool,
        settings,
        sources,
        options,
        LoadReport::new(quiet, args.dry_run),
        rejects,
        state,
    )?;
    outcome.report.print_summary();
    let mut status = outcome.report.status();
    let closed = outcome.rejects.map_or(Ok(()), Rejects::finish);
    for err in [outcome.read_error, closed.err(), outcome.state_error]
        .into_iter()
        .flatten()
    {
        report::print_error(&err);
        status = Status::Failure;
    }
    if let Some(signal) = outcome.signal {
        status = Status::Signal(signal);
    }
    Ok(finish_summary(
        args,
        files,
        &outcome.report,
        started,
        status,
    ))
}

/// Writes --metrics-file and --summary for a run that ended with `status`;
/// returns the status, made 1 when the metrics file cannot be written.
fn finish_summary(
    args: &LoadArgs,
    files: Vec<String>,
    report: &LoadReport,
    started: Instant,
    mut status: Status,
) -> Status {
    let mut summary = RunSummary {
        files,
        report,
        seconds: started.elapsed().as_secs_f64(),
        status,
    };
    if let Some(path) = &args.metrics_file
        && let Err(err) = summary.write_metrics(path)
    {
        report::print_error(&err);
        status = Status::Failure;
        summary.status = status;
    }
    if args.summary == Some(SummaryFormat::Json) {
        let _ = writeln!(std::io::stdout(), "{}", summary.to_json());
    }
    status
}

/// Inputs smaller than this load too fast to need a progress line.
const PROGRESS_FROM: u64 = 4 << 20;

fn connect(settings: &Settings) -> Result<(postgres::Client, connect::Manager)> {
    log::info!("connecting to {}", settings.target());
    connect::connect(settings)
        .map_err(|err| err.context(format!("cannot connect to {}", settings.target())))
        .status(Status::Unavailable)
}
