//! `load`: open the inputs and the output files, connect and bootstrap, run
//! the load, and report how it ended (also for a run that never started).

use std::fs;
use std::io::{ErrorKind, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::recovery;
use outputs::{
    check_distinct, check_outputs_not_inputs, check_rejects_not_an_input, check_rejects_regular,
    metrics_file, own_files,
};
use waiting::connect_patiently;

mod outputs;
mod waiting;
use crate::bootstrap;
use crate::cli::{LoadArgs, SummaryFormat};
use crate::config::Settings;
use crate::connect;
use crate::exit::{self, Status, WithStatus};
use crate::load::{self, Sink, Source, Tracking, Verbosity};
use crate::rejects::Rejects;
use crate::report::{self, AlertTotals, Mode, Report, RunSummary};
use crate::state::{RejectsMark, StateFile};

/// The exit status of a load that ran: its counts', unless the database
/// failed, a file could not be read or written (each error said once), or
/// a signal stopped it.
fn status_of(outcome: load::Outcome) -> (Status, Vec<String>) {
    let mut status = outcome.counts.status();
    // --follow leaves what it could not load in the files, dropping
    // nothing: the stop itself says the database failed.
    if status == Status::Ok
        && outcome
            .stopped
            .as_ref()
            .is_some_and(|s| s.reason == load::StopReason::DatabaseFailed)
    {
        status = Status::TempFail;
    }
    let closed = outcome.rejects.map_or(Ok(()), Rejects::finish);
    // Said by the writers as they happened.
    let mut said = outcome.failures;
    for err in [outcome.read_error, closed.err(), outcome.state_error]
        .into_iter()
        .flatten()
    {
        // A reject file that cannot be written fails its closing and the
        // state's update alike: one message.
        let text = format!("{err:#}");
        if !said.contains(&text) {
            exit::print_error(&err);
            said.push(text);
        }
        status = Status::Failure;
    }
    if let Some(signal) = outcome.signal {
        status = Status::Signal(signal);
    }
    (status, said)
}

/// Whether a run's error has been said already.
#[derive(Clone, Copy)]
enum Failed {
    Not,
    AlreadySaid,
}

/// Inputs smaller than this load too fast to need a progress line.
const PROGRESS_FROM: u64 = 4 << 20;
/// How often --follow rewrites --metrics-file.
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// When the run began, and the alert totals its metrics file held then.
#[derive(Clone, Copy)]
struct Begun {
    at: Instant,
    alerts: AlertTotals,
}

pub fn run(settings: Result<Settings>, args: &LoadArgs, quiet: bool) -> Result<Status> {
    let started = Begun {
        at: Instant::now(),
        alerts: metrics_file(args)
            .map(report::alerts_in)
            .unwrap_or_default(),
    };
    let mut result = settings.and_then(|s| load(&s, args, quiet, started));
    // Work cut short by a stop signal (the bootstrap, given up a few
    // seconds after it) ends as the signal says.
    if let (Err(_), Some(signal)) = (&result, load::caught_signal()) {
        result = result.map_err(|err| {
            let error = match err.downcast::<exit::Exit>() {
                Ok(exit) => exit.error,
                Err(err) => err,
            };
            exit::Exit {
                status: Status::Signal(signal),
                error,
            }
            .into()
        });
    }
    if let Err(err) = &result {
        // Monitoring must see a run that never got going, too. When the
        // metrics file cannot be written either, the run's error says so
        // already.
        let mut report = Report::empty(mode(args));
        report.errors.push(format!("{err:#}"));
        let status = exit::status_of(err);
        finish_summary(
            args,
            names(args),
            &report,
            started,
            status,
            Failed::AlreadySaid,
        );
    }
    result
}

/// What a load reads and writes, opened before anything connects.
struct Files {
    state: Option<StateFile>,
    sources: Vec<Source>,
    rejects: Option<Rejects>,
    /// With --follow: the device and inode of each FILE when the run
    /// started, if it existed.
    followed: Vec<Option<(u64, u64)>>,
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
    check_distinct(args)?;
    check_outputs_not_inputs(args)?;
    if let Some(path) = &args.state_file
        && args.dry_run
    {
        log::warn!(
            "--state-file {}: not read by a dry run, which reads every input from its start \
             (what a run without a state file would load)",
            path.display()
        );
    }
    let state = match &args.state_file {
        Some(path) if !args.dry_run => {
            let mut state = StateFile::open(path)?;
            if args.follow {
                state.follow();
                state.note_followed(&args.files)?;
            }
            Some(state)
        }
        _ => None,
    };
    let tracking = match state {
        Some(_) => Tracking::StateFile,
        None => Tracking::None,
    };
    let mut followed = Vec::new();
    let sources = if args.follow {
        followed = check_followed(&args.files)?;
        Vec::new()
    } else {
        let files = still_there(&args.files, state.as_ref());
        match files.is_empty() && !args.files.is_empty() {
            // Not standard input: every FILE named is gone.
            true => Vec::new(),
            false => load::open_inputs(&files, tracking).status(Status::NoInput)?,
        }
    };
    let rejects = match &args.reject_file {
        Some(path) if !args.dry_run => Some(Rejects::open(path).status(Status::CantCreate)?),
        _ => None,
    };
    check_rejects_not_an_input(args, &sources, rejects.as_ref())?;
    check_rejects_regular(args, rejects.as_ref())?;
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
    warn_of_standard_input(&sources, state.is_some(), quiet);
    Ok(Files {
        state,
        sources,
        rejects,
        followed,
    })
}

/// Says what a user reading standard input may not expect: a terminal
/// waits for Ctrl-D; a file given as standard input (`load --state-file S
/// < FILE` in a crontab) is loaded again by every run. Standard input that
/// may wait is a pipe or a terminal: new lines each run.
fn warn_of_standard_input(sources: &[load::Source], tracked: bool, quiet: bool) {
    if sources.iter().any(|s| s.name == "-") && std::io::stdin().is_terminal() && !quiet {
        log::warn!("reading findings from the terminal; end with Ctrl-D");
    }
    if tracked && sources.iter().any(|s| s.name == "-" && !s.may_wait) {
        log::warn!(
            "standard input is a file, and --state-file does not track standard input: \
             its lines are loaded again by every run that reads it; name the file instead \
             (pgsense-pg load --state-file STATE FILE)"
        );
    }
}

/// The FILEs but those gone since they were named whose name the state
/// file knows: a rotation deleted or renamed them between the shell's glob
/// and now. A renamed one is found by its content under its new name; the
/// others must open.
fn still_there(files: &[PathBuf], state: Option<&StateFile>) -> Vec<PathBuf> {
    let Some(state) = state else {
        return files.to_vec();
    };
    files
        .iter()
        .filter(|path| {
            let gone = path.as_os_str() != "-"
                && fs::symlink_metadata(path).is_err_and(|e| e.kind() == ErrorKind::NotFound)
                && state.loaded_under(path);
            if gone {
                log::warn!(
                    "{}: gone since it was named (rotated away); loaded before, so skipped",
                    path.display()
                );
            }
            !gone
        })
        .cloned()
        .collect()
}

/// The files to follow: named, and regular files where they exist (one
/// that does not is waited for).
fn check_followed(files: &[PathBuf]) -> Result<Vec<Option<(u64, u64)>>> {
    if files.is_empty() {
        return Err(anyhow::anyhow!(
            "--follow needs the FILEs to follow: standard input cannot be followed"
        ))
        .status(Status::Usage);
    }
    let mut ids = Vec::new();
    for file in files {
        if file == Path::new("-") {
            return Err(anyhow::anyhow!(
                "--follow cannot follow standard input (-): name files"
            ))
            .status(Status::Usage);
        }
        match std::fs::metadata(file) {
            Ok(meta) if !meta.is_file() => {
                return Err(anyhow::anyhow!(
                    "cannot follow {}: not a regular file",
                    file.display()
                ))
                .status(Status::NoInput);
            }
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                ids.push(Some((meta.dev(), meta.ino())));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                ids.push(None);
                // Said without -v: a misspelt path in a service's command
                // line would otherwise wait unseen.
                match file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                    Some(dir) if !dir.is_dir() => log::warn!(
                        "{} does not exist yet, nor its directory {}: waiting for them",
                        file.display(),
                        dir.display()
                    ),
                    _ => log::warn!("{} does not exist yet: waiting for it", file.display()),
                }
            }
            Err(err) => {
                return Err(
                    anyhow::Error::new(err).context(format!("cannot open {}", file.display()))
                )
                .status(Status::NoInput);
            }
        }
    }
    Ok(ids)
}

/// Connects and bootstraps (unless a dry run), settles what a killed run
/// left, and positions the inputs where the state file says.
fn connect(
    settings: &Settings,
    args: &LoadArgs,
    files: &mut Files,
    tick: Option<&mut load::Tick>,
) -> Result<Sink> {
    if args.dry_run {
        return Ok(Sink::DryRun);
    }
    let (client, manager) = reach(settings, args, files, tick).map_err(|err| {
        // Whatever the stop cut short (a connection attempt, the
        // bootstrap) is not the run's error.
        if load::caught_signal().is_none() {
            return err;
        }
        log::debug!("stopped: {err:#}");
        match args.follow {
            true => waiting::interrupted_waiting(),
            false => anyhow::anyhow!("stopped by a signal before reading: nothing was loaded"),
        }
    })?;
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
    Ok(Sink::Database(connect::pool(manager, client)))
}

/// The first connection, with the bootstrap and the settling of a killed
/// run done on it. A connection lost to a restart meanwhile is opened
/// again, within --retry-for (in --follow, without end), as a load does.
fn reach(
    settings: &Settings,
    args: &LoadArgs,
    files: &mut Files,
    mut tick: Option<&mut load::Tick>,
) -> Result<(postgres::Client, connect::Manager)> {
    let retry_for = match args.follow {
        true => load::ENDLESS,
        false => Duration::from_secs(args.retry_for),
    };
    // From here a stop signal is caught, not fatal: the connection
    // attempts and the bootstrap end soon after it, and the run says so.
    load::stop_flags()?;
    let mut first_failure: Option<Instant> = None;
    let mut said: Option<Instant> = None;
    loop {
        let connected = if args.follow {
            let mut state = files.state.as_mut();
            // A FILE created while the run waits is noted as one there
            // at startup is.
            let mut between_attempts = || {
                let Some(state) = state.as_deref_mut() else {
                    return 0;
                };
                if let Err(err) = state.note_followed(&args.files) {
                    log::warn!("{err:#}");
                }
                state.unloaded_bytes(&args.files)
            };
            connect_patiently(settings, tick.as_deref_mut(), &mut between_attempts)
        } else {
            let since = first_failure.map_or(Duration::ZERO, |at| at.elapsed());
            super::connect(settings, retry_for.saturating_sub(since))
        };
        let err = match connected {
            // Refused while the server restarts, once it was reached (in
            // --follow, connecting waits for the database by itself).
            Err(err) if first_failure.is_some() && !args.follow => err,
            Err(err) => return Err(err),
            Ok((mut client, manager)) => match start_up(settings, args, &mut client, files) {
                Ok(()) => return Ok((client, manager)),
                Err(err) if crate::pg_error::lost_connection(&err) => err,
                Err(err) => return Err(err),
            },
        };
        let since = *first_failure.get_or_insert_with(Instant::now);
        let left = retry_for.saturating_sub(since.elapsed());
        if left.is_zero() || load::caught_signal().is_some() {
            return Err(err);
        }
        if said.is_none_or(|at| at.elapsed() >= connect::SAY_EVERY) {
            match args.follow {
                true => log::warn!("{err:#}; trying again until the database is back"),
                false => log::warn!(
                    "{err:#}; trying again for up to {} s",
                    left.as_secs().max(1)
                ),
            }
            said = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_secs(1).min(left));
    }
}

/// The work before loading on the first connection: the bootstrap, and
/// settling what a killed run left.
fn start_up(
    settings: &Settings,
    args: &LoadArgs,
    client: &mut postgres::Client,
    files: &mut Files,
) -> Result<()> {
    for line in bootstrap::bootstrap(client, settings).status(Status::Unavailable)? {
        log::info!("{line}");
    }
    let mut used = Vec::new();
    if let Some(state) = &mut files.state
        && state.needs_recovery()
    {
        used = recovery::recover(
            state,
            client,
            &settings.qualified_table(),
            settings.stall_timeout,
            &args.settle,
        )?;
    }
    recovery::unused_settles(&args.settle, &used);
    Ok(())
}

fn load(settings: &Settings, args: &LoadArgs, quiet: bool, started: Begun) -> Result<Status> {
    let mut files = open_files(args, quiet)?;
    let mut tick = follow_metrics(args, &names(args), started);
    let sink = connect(settings, args, &mut files, tick.as_mut())?;
    let Files {
        state,
        sources,
        rejects,
        followed,
    } = files;
    // A progress line is for a person watching a big input being loaded:
    // a big file, or standard input or a pipe, of a size not known.
    let input_bytes: Option<u64> = sources.iter().map(|s| s.size).sum();
    let progress = match input_bytes {
        _ if quiet || args.follow || !std::io::stderr().is_terminal() => None,
        Some(total) => (total > PROGRESS_FROM).then_some(load::progress::Total::Bytes(total)),
        None => Some(load::progress::Total::Unknown),
    };
    let options = load::Options {
        max_line_bytes: args.max_line_bytes,
        batch_rows: usize::try_from(args.batch_rows).unwrap_or(usize::MAX),
        batch_bytes: usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
        retry_for: Duration::from_secs(args.retry_for),
        max_rejects: args.max_rejects,
        progress,
        verbosity: if quiet {
            Verbosity::Quiet
        } else {
            Verbosity::PerLine
        },
    };
    let (files, inputs) = if args.follow {
        let inputs = load::Inputs::Follow {
            files: args.files.clone(),
            at_start: followed,
            own: own_files(args),
            flush_interval: args.flush_interval,
        };
        (names(args), inputs)
    } else {
        let files = sources.iter().map(|s| s.name.clone()).collect();
        (files, load::Inputs::Sources(sources))
    };
    let outcome = load::load(sink, settings, inputs, options, rejects, state, tick)?;
    let mut report = Report::of(&outcome, mode(args));
    if !quiet {
        report.print_summary();
    }
    let (status, errors) = status_of(outcome);
    report.errors = errors;
    Ok(finish_summary(
        args,
        files,
        &report,
        started,
        status,
        Failed::Not,
    ))
}

/// The inputs as named on the command line.
fn names(args: &LoadArgs) -> Vec<String> {
    let mut files: Vec<_> = args.files.iter().map(|f| f.display().to_string()).collect();
    if files.is_empty() {
        files.push("-".into());
    }
    files
}

/// With --follow, --metrics-file is rewritten every few seconds.
fn follow_metrics(args: &LoadArgs, files: &[String], started: Begun) -> Option<load::Tick> {
    let path = args.metrics_file.clone().filter(|_| args.follow)?;
    let files = files.to_vec();
    Some(load::Tick {
        every: METRICS_EVERY,
        call: Box::new(move |snapshot| {
            let report = Report {
                counts: snapshot.counts,
                mode: Mode::Load,
                stopped: None,
                errors: Vec::new(),
            };
            let summary = RunSummary {
                files: files.clone(),
                report: &report,
                seconds: started.at.elapsed().as_secs_f64(),
                status: Status::Ok,
                alerts_before: started.alerts,
                late_errors: Vec::new(),
            };
            if let Err(err) = summary.write_following(&path, snapshot) {
                log::warn!("{err:#}");
            }
        }),
    })
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
    started: Begun,
    mut status: Status,
    failed: Failed,
) -> Status {
    let mut summary = RunSummary {
        files,
        report,
        seconds: started.at.elapsed().as_secs_f64(),
        alerts_before: started.alerts,
        status,
        late_errors: Vec::new(),
    };
    if let Some(path) = metrics_file(args)
        && let Err(err) = summary.write_metrics(path)
    {
        match failed {
            Failed::Not => {
                exit::print_error(&err);
                status = Status::Failure;
                summary.status = status;
                summary.late_errors.push(format!("{err:#}"));
            }
            Failed::AlreadySaid => log::debug!("{err:#}"),
        }
    }
    if args.summary == Some(SummaryFormat::Json) {
        // A full standard output (a redirect to a full disk): whoever
        // reads the summary must not take its absence for success. A
        // reader that went away reads nothing.
        if let Err(err) = super::say(format_args!("{}", summary.to_json())) {
            exit::print_error(&anyhow::anyhow!(
                "cannot write the JSON summary to standard output: {err}"
            ));
            if status == Status::Ok {
                status = Status::Failure;
            }
        }
    }
    status
}
