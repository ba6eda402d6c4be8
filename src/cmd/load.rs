//! `load`: open the inputs and the output files, connect and bootstrap, run
//! the load, and report how it ended (also for a run that never started).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::recovery;
use crate::bootstrap;
use crate::cli::{LoadArgs, SummaryFormat};
use crate::config::Settings;
use crate::connect;
use crate::exit::{self, Status, WithStatus};
use crate::load::{self, Sink, Source, Tracking, Verbosity};
use crate::rejects::Rejects;
use crate::report::{self, Mode, Report, RunSummary};
use crate::state::{RejectsMark, StateFile};

/// Inputs smaller than this load too fast to need a progress line.
const PROGRESS_FROM: u64 = 4 << 20;

pub fn run(settings: Result<Settings>, args: &LoadArgs, quiet: bool) -> Result<Status> {
    let started = Instant::now();
    let result = settings.and_then(|s| load(&s, args, quiet, started));
    if let Err(err) = &result {
        // Monitoring must see a run that never got going, too.
        let report = Report::empty(mode(args));
        let mut files: Vec<_> = args.files.iter().map(|f| f.display().to_string()).collect();
        if files.is_empty() {
            files.push("-".into());
        }
        finish_summary(args, files, &report, started, exit::status_of(err));
    }
    result
}

/// What a load reads and writes, opened before anything connects.
struct Files {
    state: Option<StateFile>,
    sources: Vec<Source>,
    rejects: Option<Rejects>,
}

/// Opens the state file, the inputs and the reject file, and checks that
/// the metrics file can be written: a mistake in any costs nothing yet.
fn open_files(args: &LoadArgs, quiet: bool) -> Result<Files> {
    for (flag, path) in [
        ("--reject-file", &args.reject_file),
        ("--state-file", &args.state_file),
        ("--metrics-file", &args.metrics_file),
    ] {
        if path.as_deref() == Some(Path::new("-")) {
            return Err(anyhow::anyhow!(
                "{flag} - would write to a file named \"-\", not to standard output: name a file"
            ))
            .status(Status::Usage);
        }
    }
    let state = match &args.state_file {
        Some(path) if !args.dry_run => Some(StateFile::open(path)?),
        _ => None,
    };
    let tracking = match state {
        Some(_) => Tracking::StateFile,
        None => Tracking::None,
    };
    let sources = load::open_inputs(&args.files, tracking).status(Status::NoInput)?;
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
    match &args.metrics_file {
        // The file holds the metrics of the last real run: a dry run's
        // counts there would page someone, or hide a failure.
        Some(path) if args.dry_run => log::warn!(
            "--metrics-file {}: not written by a dry run; it keeps the last real run's metrics",
            path.display()
        ),
        Some(path) => report::check_writable(path).status(Status::CantCreate)?,
        None => {}
    }
    if sources.iter().any(|s| s.name == "-") && std::io::stdin().is_terminal() && !quiet {
        log::warn!("reading findings from the terminal; end with Ctrl-D");
    }
    Ok(Files {
        state,
        sources,
        rejects,
    })
}

/// Connects and bootstraps (unless a dry run), settles what a killed run
/// left, and positions the inputs where the state file says.
fn connect(settings: &Settings, args: &LoadArgs, files: &mut Files) -> Result<Sink> {
    if args.dry_run {
        return Ok(Sink::DryRun);
    }
    let (mut client, manager) = super::connect(settings, Duration::from_secs(args.retry_for))?;
    for line in bootstrap::bootstrap(&mut client, settings).status(Status::Unavailable)? {
        log::info!("{line}");
    }
    if let Some(state) = &mut files.state
        && state.needs_recovery()
    {
        recovery::recover(state, &mut client, &settings.qualified_table())?;
    }
    if let Some(rejects) = &mut files.rejects {
        rejects.cut_fragment().status(Status::CantCreate)?;
    }
    if let Some(state) = &mut files.state {
        load::resume(&mut files.sources, state)?;
        let mark = files.rejects.as_ref().and_then(|rejects| {
            Some(RejectsMark {
                path: rejects.path().to_owned(),
                key: rejects.key()?,
                len: rejects.len(),
            })
        });
        state.watch_rejects(mark)?;
    }
    Ok(Sink::Database(connect::pool(settings, manager, client)))
}

fn load(settings: &Settings, args: &LoadArgs, quiet: bool, started: Instant) -> Result<Status> {
    let mut files = open_files(args, quiet)?;
    let sink = connect(settings, args, &mut files)?;
    let Files {
        state,
        sources,
        rejects,
    } = files;
    // A progress line is for a person watching a big file being loaded.
    let input_bytes: u64 = sources.iter().filter_map(|s| s.size).sum();
    let progress_of_bytes =
        (!quiet && std::io::stderr().is_terminal() && input_bytes > PROGRESS_FROM)
            .then_some(input_bytes);
    let options = load::Options {
        max_line_bytes: args.max_line_bytes,
        batch_rows: usize::try_from(args.batch_rows).unwrap_or(usize::MAX),
        batch_bytes: usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
        retry_for: Duration::from_secs(args.retry_for),
        max_rejects: args.max_rejects,
        progress_of_bytes,
        verbosity: if quiet {
            Verbosity::Quiet
        } else {
            Verbosity::PerLine
        },
    };
    let files: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let outcome = load::load(sink, settings, sources, options, rejects, state)?;
    let report = Report::of(&outcome, mode(args));
    if !quiet {
        report.print_summary();
    }
    let mut status = outcome.counts.status();
    let closed = outcome.rejects.map_or(Ok(()), Rejects::finish);
    for err in [outcome.read_error, closed.err(), outcome.state_error]
        .into_iter()
        .flatten()
    {
        exit::print_error(&err);
        status = Status::Failure;
    }
    if let Some(signal) = outcome.signal {
        status = Status::Signal(signal);
    }
    Ok(finish_summary(args, files, &report, started, status))
}

fn mode(args: &LoadArgs) -> Mode {
    if args.dry_run {
        Mode::DryRun
    } else {
        Mode::Load
    }
}

/// Writes --metrics-file and --summary for a run that ended with `status`;
/// returns the status, made 1 when the metrics file cannot be written.
fn finish_summary(
    args: &LoadArgs,
    files: Vec<String>,
    report: &Report,
    started: Instant,
    mut status: Status,
) -> Status {
    let mut summary = RunSummary {
        files,
        report,
        seconds: started.elapsed().as_secs_f64(),
        status,
    };
    // `-` was refused as a metrics file: nothing is written there; nor by a
    // dry run.
    if let Some(path) = args
        .metrics_file
        .as_deref()
        .filter(|p| *p != Path::new("-") && !args.dry_run)
        && let Err(err) = summary.write_metrics(path)
    {
        exit::print_error(&err);
        status = Status::Failure;
        summary.status = status;
    }
    if args.summary == Some(SummaryFormat::Json) {
        let _ = writeln!(std::io::stdout(), "{}", summary.to_json());
    }
    status
}
