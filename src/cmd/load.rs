//! `load`: open the inputs and the output files, connect and bootstrap, run
//! the load, and report how it ended (also for a run that never started).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

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
/// How often --follow rewrites --metrics-file.
const METRICS_EVERY: Duration = Duration::from_secs(5);
/// How often a wait looks for a stop signal.
const STOP_POLL: Duration = Duration::from_millis(100);

pub fn run(settings: Result<Settings>, args: &LoadArgs, quiet: bool) -> Result<Status> {
    let started = Instant::now();
    let result = settings.and_then(|s| load(&s, args, quiet, started));
    if let Err(err) = &result {
        // Monitoring must see a run that never got going, too. When the
        // metrics file cannot be written either, the run's error says so
        // already.
        let report = Report::empty(mode(args));
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
            }
            Some(state)
        }
        _ => None,
    };
    let tracking = match state {
        Some(_) => Tracking::StateFile,
        None => Tracking::None,
    };
    let sources = if args.follow {
        check_followed(&args.files)?;
        Vec::new()
    } else {
        load::open_inputs(&args.files, tracking).status(Status::NoInput)?
    };
    let rejects = match &args.reject_file {
        Some(path) if !args.dry_run => Some(Rejects::open(path).status(Status::CantCreate)?),
        _ => None,
    };
    check_rejects_not_an_input(args, &sources, rejects.as_ref())?;
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

/// The files to follow: named, and regular files where they exist (one
/// that does not is waited for).
fn check_followed(files: &[PathBuf]) -> Result<()> {
    if files.is_empty() {
        return Err(anyhow::anyhow!(
            "--follow needs the FILEs to follow: standard input cannot be followed"
        ))
        .status(Status::Usage);
    }
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
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                log::info!("{} does not exist yet: waiting for it", file.display());
            }
            Err(err) => {
                return Err(
                    anyhow::Error::new(err).context(format!("cannot open {}", file.display()))
                )
                .status(Status::NoInput);
            }
        }
    }
    Ok(())
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
    let (mut client, manager) = if args.follow {
        connect_patiently(settings, tick)?
    } else {
        super::connect(settings, Duration::from_secs(args.retry_for))?
    };
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

/// --follow: connects however long the database takes to be reachable
/// (the files hold the lines meanwhile), keeping --metrics-file written
/// meanwhile: nothing loaded, and no commit since the start. SIGINT or
/// SIGTERM ends the wait (after the connection attempt in progress); a
/// second one ends the process at once.
fn connect_patiently(
    settings: &Settings,
    tick: Option<&mut load::Tick>,
) -> Result<(postgres::Client, connect::Manager)> {
    let stop = StopSignal::catch()?;
    let connected = connect_until_stopped(settings, tick, &stop);
    stop.release();
    connected
}

/// SIGINT or SIGTERM caught while nothing else listens for them.
struct StopSignal {
    caught: Arc<AtomicUsize>,
    ids: Vec<signal_hook::SigId>,
}

impl StopSignal {
    fn catch() -> Result<StopSignal> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let caught = Arc::new(AtomicUsize::new(0));
        let pressed = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for signal in [SIGINT, SIGTERM] {
            let cannot = "cannot install signal handlers";
            let code = 128 + signal;
            ids.push(
                signal_hook::flag::register_conditional_shutdown(
                    signal,
                    code,
                    Arc::clone(&pressed),
                )
                .context(cannot)?,
            );
            ids.push(
                signal_hook::flag::register_usize(signal, Arc::clone(&caught), signal as usize)
                    .context(cannot)?,
            );
            ids.push(signal_hook::flag::register(signal, Arc::clone(&pressed)).context(cannot)?);
        }
        Ok(StopSignal { caught, ids })
    }

    /// The signal caught, as the run's exit status.
    fn caught(&self) -> Option<Status> {
        match self.caught.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(Status::Signal(i32::try_from(signal).unwrap_or(15))),
        }
    }

    /// Hands the signals back to the load, which catches them itself.
    fn release(self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
    }
}

fn interrupted_waiting() -> anyhow::Error {
    anyhow::anyhow!(
        "interrupted while waiting for the database: nothing was loaded, the files keep \
         their lines"
    )
}

fn connect_until_stopped(
    settings: &Settings,
    mut tick: Option<&mut load::Tick>,
    stop: &StopSignal,
) -> Result<(postgres::Client, connect::Manager)> {
    let mut delay = Duration::from_secs(1);
    let mut said = false;
    let mut written: Option<Instant> = None;
    loop {
        match super::connect(settings, load::ENDLESS) {
            Err(err) if exit::status_of(&err) == Status::Unavailable => {
                if !said {
                    log::warn!("{err:#}; trying again until it answers");
                    said = true;
                }
                let until = Instant::now() + delay;
                loop {
                    if let Some(status) = stop.caught() {
                        return Err(interrupted_waiting()).status(status);
                    }
                    if let Some(tick) = tick.as_deref_mut()
                        && written.is_none_or(|at| at.elapsed() >= tick.every)
                    {
                        (tick.call)(&load::Snapshot::default());
                        written = Some(Instant::now());
                    }
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(STOP_POLL));
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            result => {
                if let Some(status) = stop.caught() {
                    return Err(interrupted_waiting()).status(status);
                }
                if said && result.is_ok() {
                    log::warn!("connected: the database answers again");
                }
                return result;
            }
        }
    }
}

fn load(settings: &Settings, args: &LoadArgs, quiet: bool, started: Instant) -> Result<Status> {
    let mut files = open_files(args, quiet)?;
    let mut tick = follow_metrics(args, &names(args), started);
    let sink = connect(settings, args, &mut files, tick.as_mut())?;
    let Files {
        state,
        sources,
        rejects,
    } = files;
    // A progress line is for a person watching a big file being loaded.
    let input_bytes: u64 = sources.iter().filter_map(|s| s.size).sum();
    let progress_of_bytes =
        (!quiet && !args.follow && std::io::stderr().is_terminal() && input_bytes > PROGRESS_FROM)
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
    let (files, inputs) = if args.follow {
        let inputs = load::Inputs::Follow {
            files: args.files.clone(),
            own: own_files(args),
            flush_interval: args.flush_interval,
        };
        (names(args), inputs)
    } else {
        let files = sources.iter().map(|s| s.name.clone()).collect();
        (files, load::Inputs::Sources(sources))
    };
    let outcome = load::load(sink, settings, inputs, options, rejects, state, tick)?;
    let report = Report::of(&outcome, mode(args));
    if !quiet {
        report.print_summary();
    }
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
    let mut said = Vec::new();
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
    Ok(finish_summary(
        args,
        files,
        &report,
        started,
        status,
        Failed::Not,
    ))
}

/// The files a run writes, with their temporary and lock files.
fn own_files(args: &LoadArgs) -> Vec<PathBuf> {
    outputs(args)
        .into_iter()
        .flat_map(|(_, files)| files)
        .collect()
}

/// The files each flag makes a run write, the named one first.
fn outputs(args: &LoadArgs) -> Vec<(&'static str, Vec<PathBuf>)> {
    let mut outputs = Vec::new();
    for (flag, path, suffixes) in [
        (
            "--state-file",
            &args.state_file,
            &[".journal", ".lock", ".tmp"][..],
        ),
        ("--reject-file", &args.reject_file, &[][..]),
        ("--metrics-file", &args.metrics_file, &[".tmp"][..]),
    ] {
        let Some(path) = path else { continue };
        let mut files = vec![path.clone()];
        // The state file puts its own beside the file a link leads to.
        let base = match flag {
            "--state-file" => crate::paths::real(path),
            _ => path.clone(),
        };
        for suffix in suffixes {
            let mut with = base.clone().into_os_string();
            with.push(suffix);
            files.push(with.into());
        }
        outputs.push((flag, files));
    }
    outputs
}

/// Refuses output files that are one another (or one's journal, lock or
/// temporary file): what one is written, the other would destroy.
fn check_distinct(args: &LoadArgs) -> Result<()> {
    let outputs = outputs(args);
    for (index, (flag, files)) in outputs.iter().enumerate() {
        for (other_flag, other_files) in &outputs[index + 1..] {
            for (file, other) in files
                .iter()
                .flat_map(|f| other_files.iter().map(move |o| (f, o)))
            {
                if crate::paths::same_file(file, other) {
                    return Err(anyhow::anyhow!(
                        "{flag} {} and {other_flag} {} would write the same file ({}): \
                         name different files",
                        files[0].display(),
                        other_files[0].display(),
                        crate::paths::real(file).display()
                    ))
                    .status(Status::Usage);
                }
            }
        }
    }
    Ok(())
}

/// Whether a run's error has been said already.
#[derive(Clone, Copy)]
enum Failed {
    Not,
    AlreadySaid,
}

/// Where the run's metrics go: not to `-`, which was refused, nor to a file
/// that is an input or another output, nor from a dry run.
fn metrics_file(args: &LoadArgs) -> Option<&Path> {
    let path = args.metrics_file.as_deref()?;
    if path == Path::new("-") || args.dry_run {
        return None;
    }
    let outputs = outputs(args);
    let (mine, others): (Vec<_>, Vec<_>) = outputs
        .iter()
        .partition(|(flag, _)| *flag == "--metrics-file");
    let others: Vec<&PathBuf> = others
        .iter()
        .flat_map(|(_, files)| files)
        .chain(args.files.iter().filter(|f| f.as_path() != Path::new("-")))
        .collect();
    let collides = mine.iter().flat_map(|(_, files)| files).any(|file| {
        others
            .iter()
            .any(|other| crate::paths::same_file(file, other))
    });
    (!collides).then_some(path)
}

/// Refuses a state or metrics file (or one of theirs) that is also an
/// input: reading it as findings is a mistake, and the run would rewrite
/// it, or take it for a damaged state file.
fn check_outputs_not_inputs(args: &LoadArgs) -> Result<()> {
    for (flag, files) in outputs(args) {
        // A reject file that is an input has its own message, below.
        if flag == "--reject-file" {
            continue;
        }
        let input = args.files.iter().find(|input| {
            input.as_path() != Path::new("-")
                && files
                    .iter()
                    .any(|file| crate::paths::same_file(input, file))
        });
        if let Some(input) = input {
            return Err(anyhow::anyhow!(
                "{flag} {} is also an input ({}): the run writes it; \
                 name another file for {flag}",
                files[0].display(),
                input.display()
            ))
            .status(Status::Usage);
        }
    }
    Ok(())
}

/// A reject file that is also an input would grow while being read: with
/// --follow, each dropped line would be read again and dropped again, for
/// ever.
fn check_rejects_not_an_input(
    args: &LoadArgs,
    sources: &[Source],
    rejects: Option<&Rejects>,
) -> Result<()> {
    // Followed files are opened later: they are told by their names, which
    // may lead to the reject file through a link.
    let input = match (rejects, &args.reject_file) {
        (Some(_), Some(path)) if args.follow => args
            .files
            .iter()
            .find(|file| crate::paths::same_file(file, path))
            .map(|file| file.display().to_string()),
        (Some(rejects), _) => sources
            .iter()
            .find(|s| s.identity.is_some() && s.identity == rejects.identity())
            .map(|s| s.name.clone()),
        _ => None,
    };
    match input {
        Some(input) => Err(anyhow::anyhow!(
            "the reject file is also an input ({input}): it would grow while being read; \
             write rejects to another file, and replay this one without --reject-file or with another"
        ))
        .status(Status::Usage),
        None => Ok(()),
    }
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
fn follow_metrics(args: &LoadArgs, files: &[String], started: Instant) -> Option<load::Tick> {
    let path = args.metrics_file.clone().filter(|_| args.follow)?;
    let files = files.to_vec();
    Some(load::Tick {
        every: METRICS_EVERY,
        call: Box::new(move |snapshot| {
            let report = Report {
                counts: snapshot.counts,
                mode: Mode::Load,
                stopped: None,
            };
            let summary = RunSummary {
                files: files.clone(),
                report: &report,
                seconds: started.elapsed().as_secs_f64(),
                status: Status::Ok,
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
    started: Instant,
    mut status: Status,
    failed: Failed,
) -> Status {
    let mut summary = RunSummary {
        files,
        report,
        seconds: started.elapsed().as_secs_f64(),
        status,
    };
    if let Some(path) = metrics_file(args)
        && let Err(err) = summary.write_metrics(path)
    {
        match failed {
            Failed::Not => {
                exit::print_error(&err);
                status = Status::Failure;
                summary.status = status;
            }
            Failed::AlreadySaid => log::debug!("{err:#}"),
        }
    }
    if args.summary == Some(SummaryFormat::Json) {
        let _ = writeln!(std::io::stdout(), "{}", summary.to_json());
    }
    status
}
