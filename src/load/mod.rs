//! A load: one reader thread parses lines and encodes each valid finding
//! straight into a batch of COPY rows; writer threads, one pool connection
//! each, write the batches. A bounded queue between them keeps memory flat
//! whatever the input size, and lets parsing and the network overlap.
//!
//! - [`reader`]: lines -> findings -> batches ([`pending`], [`batch`]);
//!   [`set_aside`] after a database failure.
//! - [`writer`]: batches -> the [`Sink`].
//! - [`ledger`]: every line read ends as exactly one of inserted or dropped.
//! - [`control`]: why reading stopped; signals.
//!
//! SIGINT and SIGTERM stop the reading; batches already handed to the
//! writers are committed, and what was read but not handed over is dropped
//! as interrupted.

mod batch;
mod control;
mod copy;
mod follow;
mod guarded;
mod input;
mod ledger;
mod pending;
pub mod progress;
mod reader;
mod record;
mod set_aside;
mod sink;
mod turns;
mod watch;
mod writer;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::rejects::Rejects;
use crate::state::{Progress, StateFile};
use batch::{Batch, Limits, Spares};
use control::Control;
use ledger::Ledger;
use pending::{Pending, Pipeline};
use reader::{Position, ReadOptions, Reader};
use turns::Turns;
use writer::{Copy, Shares};

pub use control::{StopFlags, StopReason, caught_signal, stop_flags};
pub use input::{Source, Tracking, open_inputs, resume};
pub use ledger::{Counts, SHOWN_DROPS, Verbosity};
pub use sink::Sink;
pub use writer::{ENDLESS, TxnState, txn_state};

/// What a load reads.
pub enum Inputs {
    /// Each to its end, in order.
    Sources(Vec<Source>),
    /// These files, as they grow, until a signal stops the run (--follow).
    Follow {
        files: Vec<PathBuf>,
        /// Each FILE's device and inode when the run started: renamed away
        /// while the run waited for the database, it is read all the same.
        at_start: Vec<Option<(u64, u64)>>,
        /// Files the run writes (state, reject and metrics files), never
        /// taken for rotated inputs.
        own: Vec<PathBuf>,
        flush_interval: Duration,
    },
}

/// What is known of a running load, for --metrics-file.
#[derive(Default)]
pub struct Snapshot {
    pub counts: Counts,
    /// Bytes of the files followed not loaded yet.
    pub unloaded_bytes: u64,
    pub since_last_commit: Option<Duration>,
}

/// Something to do every so often while the load runs.
pub struct Tick {
    pub every: Duration,
    pub call: Box<dyn FnMut(&Snapshot) + Send>,
}

/// How a load runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub max_line_bytes: u64,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    /// How long to retry a transient database failure; zero disables.
    pub retry_for: Duration,
    /// Stop reading once more lines than this were rejected.
    pub max_rejects: Option<u64>,
    /// Show progress on stderr, out of this many input bytes when known.
    pub progress: Option<progress::Total>,
    pub verbosity: Verbosity,
}

/// What a load did.
pub struct Outcome {
    pub counts: Counts,
    /// Why reading stopped early, and where.
    pub stopped: Option<Stopped>,
    /// An input that could not be read to its end.
    pub read_error: Option<anyhow::Error>,
    /// The reject file, to be closed by the caller.
    pub rejects: Option<Rejects>,
    /// The state file could not be saved at the end.
    pub state_error: Option<anyhow::Error>,
    /// The signal that interrupted it.
    pub signal: Option<i32>,
    /// What failed the database's part of the run, as said on stderr.
    pub failures: Vec<String>,
}

/// Where reading stopped early, and why.
pub struct Stopped {
    pub reason: StopReason,
    /// The input, and the lines read from it.
    pub input: String,
    pub line: u64,
}

/// The threads of a running load, and what they share.
struct Threads {
    ledger: Arc<Ledger>,
    control: Arc<Control>,
    position: Arc<Position>,
    writers: Vec<JoinHandle<()>>,
    reader_done: Receiver<Result<()>>,
    progress: Option<JoinHandle<()>>,
    /// Joined before the end, so that none of its writes comes after the
    /// last one.
    ticks: Option<JoinHandle<()>>,
}

/// Loads every source into the sink.
pub fn load(
    sink: Sink,
    settings: &Settings,
    inputs: Inputs,
    options: Options,
    rejects: Option<Rejects>,
    state: Option<StateFile>,
    tick: Option<Tick>,
) -> Result<Outcome> {
    let ledger = match &inputs {
        Inputs::Sources(sources) => {
            let progress = state.map(|file| {
                Progress::new(file, sources.iter().map(|s| s.resume.clone()).collect())
            });
            let names = sources.iter().map(|s| s.name.clone()).collect();
            Ledger::new(names, options.verbosity, rejects, progress)
        }
        Inputs::Follow { .. } => {
            let progress = state.map(|file| Progress::new(file, Vec::new()));
            Ledger::new(Vec::new(), options.verbosity, rejects, progress).leaving_in_inputs()
        }
    };
    let ledger = Arc::new(ledger);
    let control = Arc::new(Control::catching_signals()?);
    control.stall_after(settings.stall_timeout);
    let mut threads = start(sink, settings, inputs, options, ledger, control)?;
    if let Some(tick) = tick {
        let (ledger, control) = (Arc::clone(&threads.ledger), Arc::clone(&threads.control));
        threads.ticks = Some(std::thread::spawn(move || ticks(tick, &ledger, &control)));
    }
    finish(threads, options)
}

/// Calls `tick` every so often until the writers are done.
fn ticks(mut tick: Tick, ledger: &Ledger, control: &Control) {
    let mut last = std::time::Instant::now();
    while !control.is_done() {
        std::thread::sleep(control::POLL);
        if last.elapsed() >= tick.every && !control.is_done() {
            (tick.call)(&Snapshot {
                counts: ledger.counts(),
                unloaded_bytes: ledger.unloaded_bytes(),
                since_last_commit: ledger.since_last_commit(),
            });
            last = std::time::Instant::now();
        }
    }
}

fn start(
    sink: Sink,
    settings: &Settings,
    inputs: Inputs,
    options: Options,
    ledger: Arc<Ledger>,
    control: Arc<Control>,
) -> Result<Threads> {
    let limits = Limits {
        rows: options.batch_rows,
        bytes: options.batch_bytes,
    };
    let writer_count = sink.writers();
    // Batches in the queue, in the writers, and the one being filled.
    let spares = Arc::new(Spares::new(2 * writer_count as usize + 1, limits));
    let turns = Arc::new(Turns::default());
    // One batch queued per writer at most: enough to keep the writers busy
    // while the reader fills the next ones, and memory bounded.
    let (sender, receiver) = sync_channel::<Batch>(crate::connect::POOL_SIZE as usize);
    let receiver = Arc::new(Mutex::new(receiver));
    let shares = Shares {
        ledger: Arc::clone(&ledger),
        control: Arc::clone(&control),
        spares: Arc::clone(&spares),
        turns: Arc::clone(&turns),
    };
    let retry_for = match inputs {
        Inputs::Sources(_) => Some(options.retry_for),
        Inputs::Follow { .. } => None,
    };
    let copy = Copy::new(settings, retry_for);
    let writers = spawn_writers(&sink, &copy, &shares, &receiver)?;
    let position = Arc::new(Position::default());
    let read_options = ReadOptions {
        max_line_bytes: options.max_line_bytes,
        max_rejects: options.max_rejects,
    };
    let pending = Pending::new(Pipeline {
        sender,
        ledger: Arc::clone(&ledger),
        control: Arc::clone(&control),
        spares,
        turns,
    });
    let reader = Reader::new(
        read_options,
        pending,
        Arc::clone(&ledger),
        Arc::clone(&control),
        Arc::clone(&position),
    );
    let reader_done = spawn_reader(reader, inputs)?;
    let done = match sink {
        Sink::DryRun => "checked",
        Sink::Database(_) => "inserted",
    };
    let progress = options.progress.map(|total| {
        let (ledger, control, position) = (
            Arc::clone(&ledger),
            Arc::clone(&control),
            Arc::clone(&position),
        );
        std::thread::spawn(move || progress::show(&ledger, &control, &position, total, done))
    });
    {
        let control = Arc::clone(&control);
        std::thread::spawn(move || control.watch());
    }
    Ok(Threads {
        ledger,
        control,
        position,
        writers,
        reader_done,
        progress,
        ticks: None,
    })
}

/// The reader thread; what it ends with comes on the receiver. Not joined
/// when it waits for input after a stop: it holds no rows then, and the
/// process ends without it.
fn spawn_reader(reader: Reader, inputs: Inputs) -> Result<Receiver<Result<()>>> {
    let (done, reader_done) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || {
            let _ = done.send(match inputs {
                Inputs::Sources(sources) => reader.run(sources),
                Inputs::Follow {
                    files,
                    at_start,
                    own,
                    flush_interval,
                } => follow::run(reader, &files, &at_start, &own, flush_interval),
            });
        })
        .context("cannot start the reader thread")?;
    Ok(reader_done)
}

/// One writer thread per connection of the sink.
fn spawn_writers(
    sink: &Sink,
    copy: &Copy,
    shares: &Shares,
    receiver: &Arc<Mutex<Receiver<Batch>>>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut writers = Vec::new();
    for index in 0..sink.writers() {
        let shares = shares.clone();
        let (sink, copy, receiver) = (sink.clone(), copy.clone(), Arc::clone(receiver));
        writers.push(
            std::thread::Builder::new()
                .name(format!("writer-{index}"))
                .spawn(move || writer::run(index as usize, sink, copy, &shares, &receiver))
                .context("cannot start a writer thread")?,
        );
    }
    Ok(writers)
}

/// Waits for the writers (and the reader, unless it waits for input after
/// a stop), and gathers the outcome.
fn finish(threads: Threads, options: Options) -> Result<Outcome> {
    let Threads {
        ledger,
        control,
        position,
        writers,
        reader_done,
        progress,
        ticks,
    } = threads;
    for writer in writers {
        if writer.join().is_err() {
            anyhow::bail!("a writer thread panicked");
        }
    }
    let read_result = if control.stopped_while_waiting() {
        match reader_done.try_recv() {
            Err(TryRecvError::Disconnected) => Err(anyhow::anyhow!("the reader thread failed")),
            Err(TryRecvError::Empty) => Ok(()),
            Ok(result) => result,
        }
    } else {
        reader_done
            .recv()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the reader thread failed")))
    };
    control.writers_done();
    for thread in [progress, ticks].into_iter().flatten() {
        let _ = thread.join();
    }
    let stopped = control
        .stop_reason(read_result.is_err(), options.max_rejects)
        .map(|reason| {
            let (source, line) = position.at();
            Stopped {
                reason,
                input: ledger.name(source),
                line,
            }
        });
    let (counts, rejects, saved) = ledger.close();
    Ok(Outcome {
        counts,
        stopped,
        read_error: read_result.err(),
        rejects,
        state_error: saved.err(),
        signal: control.signal(),
        failures: control.failures(),
    })
}

/// Locks a mutex; a thread that panicked while holding it leaves data that
/// is still meaningful (counts, a file, a list), so the poison is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
