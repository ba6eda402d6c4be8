//! Reading, batching and accounting, and the threads of a load.
//!
//! A reader thread reads and parses lines and encodes each valid finding
//! straight into a batch of COPY text rows; two writer threads (`write.rs`),
//! one pool connection each, write the batches. A bounded queue between
//! them keeps memory flat whatever the input size, and lets parsing and the
//! network overlap.
//!
//! Every line read ends as exactly one of: inserted, or dropped (counted,
//! reported, and appended to the reject file when there is one).
//!
//! SIGINT and SIGTERM stop the reading; batches already handed to the
//! writers are committed, and what was read but not handed over is dropped
//! as interrupted. While the reader waits for input from a pipe it holds no
//! rows (it hands over everything before it waits), so the writers can end
//! the run without it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

mod copy;
mod input;
mod record;
mod sink;
mod writer;

use crate::config::Settings;
use crate::connect::POOL_SIZE;
use crate::rejects::Rejects;
use crate::report::{Dropped, FAILED_EARLIER, INTERRUPTED, LoadReport};
use crate::state::{StateFile, Tracker};
use crate::table;
use copy::encode;
use input::{Line, next_line, trim_line};
use writer::write_batches;

pub use input::{Source, open_inputs};
pub use sink::Sink;

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
    /// Show progress on stderr, out of this many input bytes.
    pub progress_of_bytes: Option<u64>,
}

/// Rows encoded as COPY text, with the lines they came from.
pub struct Batch {
    /// Whether the rows carry detected_at.
    pub timed: bool,
    data: Vec<u8>,
    /// The lines as read, for the reject file.
    raw: Vec<u8>,
    pub rows: Vec<Row>,
}

/// One row of a batch; it starts where the previous one ends, in `data` and
/// in `raw`.
pub struct Row {
    source: u32,
    line: u64,
    /// Where the line starts in its input.
    offset: u64,
    end: usize,
    raw_end: usize,
}

impl Batch {
    fn new(timed: bool, options: &Options) -> Batch {
        Batch {
            timed,
            data: Vec::with_capacity(options.batch_bytes + 4096),
            raw: Vec::new(),
            rows: Vec::with_capacity(options.batch_rows.min(100_000)),
        }
    }

    fn is_full(&self, options: &Options) -> bool {
        self.rows.len() >= options.batch_rows || self.data.len() >= options.batch_bytes
    }

    /// The COPY text of some rows.
    pub fn row_bytes(&self, rows: Range<usize>) -> &[u8] {
        let start = match rows.start {
            0 => 0,
            n => self.rows[n - 1].end,
        };
        &self.data[start..self.rows[rows.end - 1].end]
    }

    fn raw_line(&self, row: usize) -> &[u8] {
        let start = match row {
            0 => 0,
            n => self.rows[n - 1].raw_end,
        };
        &self.raw[start..self.rows[row].raw_end]
    }
}

/// State shared by the reader, the writers and the thread that waits for
/// them.
pub struct Shared {
    report: Mutex<LoadReport>,
    rejects: Option<Mutex<Rejects>>,
    names: Vec<String>,
    copy_timed: String,
    copy_untimed: String,
    pub retry_for: Duration,
    /// Set when the database failed for good: stop reading, drop what is
    /// queued.
    pub failed: AtomicBool,
    /// Set by SIGINT or SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// The signal that set `stop`.
    signal: Arc<AtomicUsize>,
    /// Set while the reader waits for input holding no rows.
    pub reader_idle: AtomicBool,
    /// Set when the reader has read every input to its end.
    finished: AtomicBool,
    /// Set when the writers are done: ends the progress line and the
    /// canceller.
    finished_all: AtomicBool,
    /// Set when the reader stopped because of --max-rejects.
    limit_hit: AtomicBool,
    /// Lines copied unread to the reject file after the database failed.
    set_aside: AtomicU64,
    /// Input bytes read so far, for progress.
    bytes_read: AtomicU64,
    /// Cancel tokens of the writers' connections.
    cancels: Mutex<Vec<postgres::CancelToken>>,
    /// With --state-file: which lines are done.
    tracker: Option<Mutex<Tracker>>,
    /// Written batches, emptied, for the reader to fill again: memory stays
    /// flat and the allocator is not asked for megabytes per batch.
    spare: Mutex<Vec<Batch>>,
    /// Where the reader is: source index and lines read from it.
    at_source: AtomicUsize,
    at_line: AtomicU64,
}

impl Shared {
    pub fn report(&self) -> MutexGuard<'_, LoadReport> {
        // A thread that panicked leaves counts that are still meaningful.
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn copy_sql(&self, timed: bool) -> &str {
        if timed {
            &self.copy_timed
        } else {
            &self.copy_untimed
        }
    }

    /// Accounts for rows of a batch that will not be inserted.
    pub fn drop_rows(&self, batch: &Batch, rows: Range<usize>, kind: Dropped, reason: &str) {
        let mut report = self.report();
        let mut rejects = self
            .rejects
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()));
        for index in rows {
            let row = &batch.rows[index];
            report.drop_line(kind, &self.names[row.source as usize], row.line, &reason);
            if let Some(rejects) = &mut rejects {
                rejects.append(batch.raw_line(index));
            }
        }
    }

    /// Accounts for a batch whose rows are all inserted or dropped; with
    /// `lost_from`, rows from that index on were lost (database failure or
    /// interruption).
    pub fn finish_batch(&self, batch: &Batch, lost_from: Option<usize>) {
        let (Some(tracker), Some(first)) = (&self.tracker, batch.rows.first()) else {
            return;
        };
        let mut tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
        tracker.close_batch(first.source as usize, first.offset);
        if let (Some(lost), None) = (lost_from, &self.rejects) {
            // Lines lost and recorded nowhere: the next run starts at them
            // again.
            let row = &batch.rows[lost];
            tracker.open_batch(row.source as usize, row.offset, row.line - 1);
        }
        if tracker.due()
            && let Err(err) = self.save_state(&mut tracker)
        {
            log::error!("{err:#}");
        }
    }

    /// Saves the state file, once the reject file holds on disk every line
    /// the new marks pass over; never after the reject file failed.
    fn save_state(&self, tracker: &mut Tracker) -> Result<()> {
        if let Some(rejects) = &self.rejects {
            rejects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sync()
                .context("the state file is not updated past lines the reject file may not hold")?;
        }
        tracker.save()
    }

    /// Drops every row of a batch that will not be sent.
    pub fn give_up(&self, batch: &Batch, kind: Dropped, reason: &str) {
        self.drop_rows(batch, 0..batch.rows.len(), kind, reason);
        self.finish_batch(batch, Some(0));
    }

    fn tracker(&self) -> Option<MutexGuard<'_, Tracker>> {
        self.tracker
            .as_ref()
            .map(|t| t.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Remembers how to cancel what a writer's connection is doing, for a
    /// stop that in-flight statements would otherwise delay.
    pub fn on_stop_cancel(&self, token: postgres::CancelToken) {
        self.cancels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token);
    }

    /// Whether the run is over although the reader may still be waiting for
    /// input: a signal or a database failure came while it held no rows.
    pub fn stopped_while_waiting(&self) -> bool {
        (self.stop.load(Ordering::SeqCst) || self.failed.load(Ordering::SeqCst))
            && self.reader_idle.load(Ordering::SeqCst)
    }

    /// Returns a written batch for reuse.
    pub fn recycle(&self, mut batch: Batch) {
        batch.data.clear();
        batch.raw.clear();
        batch.rows.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < POOL_SIZE as usize {
            spare.push(batch);
        }
    }

    fn spare_batch(&self, timed: bool, options: &Options) -> Batch {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match spare {
            Some(mut batch) => {
                batch.timed = timed;
                batch
            }
            None => Batch::new(timed, options),
        }
    }

    fn reject_raw(&self, bytes: &[u8]) {
        if let Some(rejects) = &self.rejects {
            rejects
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(bytes);
        }
    }
}

/// What a load did.
pub struct Outcome {
    pub report: LoadReport,
    /// The signal that interrupted it.
    pub signal: Option<i32>,
    /// An input that could not be read to its end.
    pub read_error: Option<anyhow::Error>,
    /// The reject file, to be closed by the caller.
    pub rejects: Option<Rejects>,
    /// The state file could not be saved at the end.
    pub state_error: Option<anyhow::Error>,
}

/// Loads every source into the sink.
pub fn load(
    sink: Sink,
    settings: &Settings,
    sources: Vec<Source>,
    options: Options,
    report: LoadReport,
    rejects: Option<Rejects>,
    state: Option<StateFile>,
) -> Result<Outcome> {
    let table = settings.qualified_table();
    let tracker = state.map(|file| {
        let inputs = sources.iter().map(|s| s.resume.clone()).collect();
        Mutex::new(Tracker::new(file, inputs))
    });
    let shared = Arc::new(Shared {
        report: Mutex::new(report),
        rejects: rejects.map(Mutex::new),
        names: sources.iter().map(|s| s.name.clone()).collect(),
        copy_timed: table::copy_sql(&table, true),
        copy_untimed: table::copy_sql(&table, false),
        retry_for: options.retry_for,
        failed: AtomicBool::new(false),
        stop: Arc::new(AtomicBool::new(false)),
        signal: Arc::new(AtomicUsize::new(0)),
        reader_idle: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        finished_all: AtomicBool::new(false),
        limit_hit: AtomicBool::new(false),
        bytes_read: AtomicU64::new(0),
        set_aside: AtomicU64::new(0),
        at_source: AtomicUsize::new(0),
        at_line: AtomicU64::new(0),
        spare: Mutex::new(Vec::new()),
        cancels: Mutex::new(Vec::new()),
        tracker,
    });
    for signal in [SIGINT, SIGTERM] {
        // The second signal ends the process at once; the first asks for a
        // clean stop. Handlers run in the order they were registered.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(&shared.stop),
        )
        .context("cannot install signal handlers")?;
        signal_hook::flag::register_usize(signal, Arc::clone(&shared.signal), signal as usize)
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&shared.stop))
            .context("cannot install signal handlers")?;
    }

    // Two batches queued at most: enough to keep both writers busy while the
    // reader fills the next ones, and memory bounded.
    let (sender, receiver) = sync_channel::<Batch>(POOL_SIZE as usize);
    let writer_count = sink.writers();
    let receiver = Arc::new(Mutex::new(receiver));
    let mut writers = Vec::new();
    for index in 0..writer_count {
        let (sink, shared, receiver) = (sink.clone(), Arc::clone(&shared), Arc::clone(&receiver));
        writers.push(
            std::thread::Builder::new()
                .name(format!("writer-{index}"))
                .spawn(move || write_batches(sink, shared, receiver))
                .context("cannot start a writer thread")?,
        );
    }
    drop(receiver);
    let (done, reader_done) = std::sync::mpsc::channel();
    let reader_shared = Arc::clone(&shared);
    // Not joined when it waits for input after a signal: it holds no rows
    // then, and the process ends without it.
    std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || {
            let result = read_sources(sources, options, sender, &reader_shared);
            let _ = done.send(result);
        })
        .context("cannot start the reader thread")?;

    let progress = options.progress_of_bytes.map(|total| {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || show_progress(&shared, total))
    });
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || cancel_after_stop(&shared));
    }
    for writer in writers {
        if writer.join().is_err() {
            anyhow::bail!("a writer thread panicked");
        }
    }
    let stopped = shared.stopped_while_waiting();
    let read_result = if stopped {
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

    shared.finished_all.store(true, Ordering::SeqCst);
    if let Some(progress) = progress {
        let _ = progress.join();
    }
    let signal = match shared.signal.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n as i32),
    };
    let mut report = std::mem::take(&mut *shared.report());
    if !shared.finished.load(Ordering::SeqCst) {
        let name = &shared.names[shared.at_source.load(Ordering::SeqCst)];
        let line = shared.at_line.load(Ordering::SeqCst);
        let limit = format!(
            "more than {} lines were rejected (--max-rejects)",
            options.max_rejects.unwrap_or(0)
        );
        let why = match signal {
            Some(SIGINT) => "interrupted (SIGINT)",
            Some(_) => "interrupted (SIGTERM)",
            None if read_result.is_err() => "the input could not be read",
            None if shared.limit_hit.load(Ordering::SeqCst) => &limit,
            None => "the database failed",
        };
        let mut stopped = format!("{why}: stopped reading {name} after line {line}");
        let set_aside = shared.set_aside.load(Ordering::SeqCst);
        if set_aside > 0 {
            stopped.push_str(&format!(
                "; the {set_aside} findings not read were appended to the reject file as they are"
            ));
        }
        report.stopped = Some(stopped);
    }
    let state_error = shared
        .tracker()
        .and_then(|mut tracker| shared.save_state(&mut tracker).err());
    let rejects = shared
        .rejects
        .as_ref()
        .map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|e| e.into_inner())));
    Ok(Outcome {
        report,
        signal,
        read_error: read_result.err(),
        rejects,
        state_error,
    })
}

/// The rows read but not yet handed to a writer.
struct Pending {
    timed: Batch,
    untimed: Batch,
}

impl Pending {
    /// Hands a full batch (or, with `force`, any non-empty one) to the
    /// writers. False when nothing more may be sent.
    fn send(
        &mut self,
        timed: bool,
        force: bool,
        sender: &SyncSender<Batch>,
        shared: &Shared,
        options: &Options,
    ) -> bool {
        let batch = if timed {
            &mut self.timed
        } else {
            &mut self.untimed
        };
        if batch.rows.is_empty() || !(force || batch.is_full(options)) {
            return true;
        }
        let batch = std::mem::replace(batch, shared.spare_batch(timed, options));
        if shared.stop.load(Ordering::SeqCst) {
            shared.give_up(&batch, Dropped::Interrupted, INTERRUPTED);
            return false;
        }
        if shared.failed.load(Ordering::SeqCst) {
            let reason = FAILED_EARLIER;
            shared.give_up(&batch, Dropped::Lost, reason);
            return false;
        }
        match sender.send(batch) {
            Ok(()) => true,
            Err(returned) => {
                // Only possible if every writer died: nothing may vanish.
                shared.give_up(&returned.0, Dropped::Lost, "not sent: no writer left");
                false
            }
        }
    }

    fn send_all(&mut self, sender: &SyncSender<Batch>, shared: &Shared, options: &Options) -> bool {
        self.send(true, true, sender, shared, options)
            && self.send(false, true, sender, shared, options)
    }

    /// Drops what was read and not sent, when the run stops early.
    fn abandon(&mut self, shared: &Shared) {
        let (kind, reason) = if shared.stop.load(Ordering::SeqCst) {
            (Dropped::Interrupted, INTERRUPTED)
        } else {
            (Dropped::Lost, FAILED_EARLIER)
        };
        for batch in [&mut self.timed, &mut self.untimed] {
            shared.give_up(batch, kind, reason);
            batch.rows.clear();
        }
    }
}

/// The reader: lines -> findings -> batches, until the input ends, the
/// database fails or a signal stops the run.
fn read_sources(
    sources: Vec<Source>,
    options: Options,
    sender: SyncSender<Batch>,
    shared: &Shared,
) -> Result<()> {
    let mut pending = Pending {
        timed: Batch::new(true, &options),
        untimed: Batch::new(false, &options),
    };
    let mut line = Vec::with_capacity(64 * 1024);
    let mut scratch = Vec::with_capacity(1024);
    // Lines as read are kept only for the reject file.
    let keep_raw = shared.rejects.is_some();
    let stopping = || shared.stop.load(Ordering::SeqCst) || shared.failed.load(Ordering::SeqCst);
    let mut sources = sources.into_iter().enumerate();
    while let Some((index, source)) = sources.next() {
        let name = &shared.names[index];
        let may_wait = source.may_wait;
        let mut reader = BufReader::with_capacity(256 * 1024, source.input);
        let tracked = source.resume.is_some();
        let (mut offset, mut number) = source
            .resume
            .as_ref()
            .map_or((0, 0), |r| (r.mark.offset, r.mark.line));
        shared.at_source.store(index, Ordering::SeqCst);
        shared.at_line.store(number, Ordering::SeqCst);
        if let Some(mut tracker) = shared.tracker() {
            tracker.start_input(index);
        }
        loop {
            if let Some(max) = options.max_rejects {
                let report = shared.report();
                if report.invalid + report.refused > max {
                    drop(report);
                    shared.limit_hit.store(true, Ordering::SeqCst);
                    if !pending.send_all(&sender, shared, &options) {
                        pending.abandon(shared);
                    }
                    return Ok(());
                }
            }
            if stopping() {
                pending.abandon(shared);
                if shared.failed.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst) {
                    let current = Unread {
                        index,
                        reader,
                        offset,
                        line: number,
                        may_wait,
                        tracked,
                    };
                    let rest = sources.map(|(index, source)| {
                        let (offset, line) = source
                            .resume
                            .as_ref()
                            .map_or((0, 0), |r| (r.mark.offset, r.mark.line));
                        Unread {
                            index,
                            reader: BufReader::new(source.input),
                            offset,
                            line,
                            may_wait: source.may_wait,
                            tracked: source.resume.is_some(),
                        }
                    });
                    set_aside(std::iter::once(current).chain(rest), shared);
                }
                return Ok(());
            }
            let mut held = None;
            let mut handed_over = true;
            let next = next_line(
                &mut reader,
                &mut line,
                options.max_line_bytes,
                // A long line goes to the reject file in pieces: hold the
                // file until its end, so no other line lands in between.
                &mut |bytes| {
                    if let Some(rejects) = &shared.rejects {
                        held.get_or_insert_with(|| {
                            rejects.lock().unwrap_or_else(|e| e.into_inner())
                        })
                        .append(bytes);
                    }
                },
                // About to wait for a writer on the other end of a pipe: hand
                // over every row read so far, so none waits in memory, and
                // say so, so that a stop need not wait for more input.
                &mut || {
                    if may_wait {
                        handed_over &= pending.send_all(&sender, shared, &options);
                        shared.reader_idle.store(true, Ordering::SeqCst);
                    }
                },
            );
            drop(held.take());
            shared.reader_idle.store(false, Ordering::SeqCst);
            if !handed_over {
                pending.abandon(shared);
                return Ok(());
            }
            let next = match next {
                Ok(next) => next,
                Err(err) => {
                    if !pending.send_all(&sender, shared, &options) {
                        pending.abandon(shared);
                    }
                    return Err(err)
                        .with_context(|| format!("cannot read {name} after line {number}"));
                }
            };
            let start = offset;
            match next {
                Line::End => break,
                // The scanner may be writing this line right now: leave it
                // for the next run.
                Line::Text if tracked && line.last() != Some(&b'\n') => {
                    log::info!(
                        "{name}: line {} has no end yet: left for the next run",
                        number + 1
                    );
                    break;
                }
                Line::Text => offset += line.len() as u64,
                Line::TooLong { consumed, .. } => offset += consumed,
            }
            shared
                .bytes_read
                .fetch_add(offset - start, Ordering::Relaxed);
            number += 1;
            shared.at_line.store(number, Ordering::SeqCst);
            if let Line::TooLong { length, .. } = next {
                let mut report = shared.report();
                report.read += 1;
                let reason = format!(
                    "line of {length} bytes is longer than --max-line-bytes ({})",
                    options.max_line_bytes
                );
                report.drop_line(Dropped::Invalid, name, number, &reason);
                drop(report);
                if let Some(mut tracker) = shared.tracker() {
                    tracker.read_to(index, offset, number);
                }
                continue;
            }
            let raw = if start == 0 {
                line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&line)
            } else {
                &line[..]
            };
            let text = trim_line(raw);
            if text.iter().all(u8::is_ascii_whitespace) {
                if let Some(mut tracker) = shared.tracker() {
                    tracker.read_to(index, offset, number);
                }
                continue;
            }
            match record::parse_line(text) {
                Ok(finding) => {
                    let timed = finding.detected_at.is_some();
                    let batch = if timed {
                        &mut pending.timed
                    } else {
                        &mut pending.untimed
                    };
                    encode(&finding, &mut batch.data, &mut scratch);
                    if keep_raw {
                        batch.raw.extend_from_slice(raw);
                        if !raw.ends_with(b"\n") {
                            batch.raw.push(b'\n');
                        }
                    }
                    if let (Some(mut tracker), true) = (shared.tracker(), batch.rows.is_empty()) {
                        tracker.open_batch(index, start, number - 1);
                    }
                    batch.rows.push(Row {
                        source: index as u32,
                        line: number,
                        offset: start,
                        end: batch.data.len(),
                        raw_end: batch.raw.len(),
                    });
                    shared.report().read += 1;
                    if let Some(mut tracker) = shared.tracker() {
                        tracker.read_to(index, offset, number);
                    }
                    if !pending.send(timed, false, &sender, shared, &options) {
                        pending.abandon(shared);
                        return Ok(());
                    }
                }
                Err(reason) => {
                    let mut report = shared.report();
                    report.read += 1;
                    report.drop_line(Dropped::Invalid, name, number, &reason);
                    drop(report);
                    shared.reject_raw(raw);
                    if !raw.ends_with(b"\n") {
                        shared.reject_raw(b"\n");
                    }
                    if let Some(mut tracker) = shared.tracker() {
                        tracker.read_to(index, offset, number);
                    }
                }
            }
        }
        if let Some(mut tracker) = shared.tracker() {
            tracker.end_input(index, offset, number);
        }
    }
    if pending.send_all(&sender, shared, &options) {
        shared.finished.store(true, Ordering::SeqCst);
    } else {
        pending.abandon(shared);
    }
    Ok(())
}

/// An input not read to its end when the database failed for good.
struct Unread {
    index: usize,
    reader: BufReader<Box<dyn Read + Send>>,
    /// Where reading stopped: byte offset and lines before it.
    offset: u64,
    line: u64,
    may_wait: bool,
    tracked: bool,
}

/// After a database failure that retries could not outlast, copies the
/// input not read yet to the reject file as it is, without parsing it, so
/// that replaying the reject file completes the table. Inputs that may wait
/// for a writer (pipes) are left alone: they may never end.
fn set_aside(rest: impl Iterator<Item = Unread>, shared: &Shared) {
    let Some(rejects) = &shared.rejects else {
        return;
    };
    for Unread {
        index,
        mut reader,
        offset,
        line: number,
        may_wait,
        tracked,
    } in rest
    {
        if may_wait {
            continue;
        }
        let name = &shared.names[index];
        let (mut bytes, mut lines) = (0u64, 0u64);
        // What follows the last newline seen: copied once its line ends.
        let mut partial = Vec::new();
        // Taken after the report's lock, as everywhere, and released before
        // taking it again.
        let mut rejects = rejects.lock().unwrap_or_else(|e| e.into_inner());
        // Lines with content: blank ones are not findings, as when reading.
        let mut findings = 0u64;
        let mut count = |line: &[u8]| {
            lines += 1;
            findings += u64::from(line.iter().any(|b| !b.is_ascii_whitespace()));
        };
        let copied = loop {
            if shared.stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            let chunk = match reader.fill_buf() {
                Ok([]) => break Ok(()),
                Ok(chunk) => chunk,
                Err(err) => break Err(err),
            };
            match memchr::memrchr(b'\n', chunk) {
                Some(end) => {
                    rejects.append(&partial);
                    rejects.append(&chunk[..=end]);
                    bytes += (partial.len() + end + 1) as u64;
                    let mut start = 0;
                    for newline in memchr::memchr_iter(b'\n', &chunk[..=end]) {
                        if start == 0 && !partial.is_empty() {
                            partial.extend_from_slice(&chunk[..newline]);
                            count(&partial);
                        } else {
                            count(&chunk[start..newline]);
                        }
                        start = newline + 1;
                    }
                    partial.clear();
                    partial.extend_from_slice(&chunk[end + 1..]);
                }
                None => partial.extend_from_slice(chunk),
            }
            let n = chunk.len();
            reader.consume(n);
        };
        // An unterminated last line of a tracked file may be mid-write: it is
        // left for the next run, as when reading normally.
        if !partial.is_empty() && !tracked && !shared.stop.load(Ordering::SeqCst) {
            rejects.append(&partial);
            rejects.append(b"\n");
            bytes += partial.len() as u64;
            count(&partial);
        }
        drop(rejects);
        if let Err(err) = copied {
            log::error!("cannot read {name} after line {}: {err}", number + lines);
        }
        {
            let mut report = shared.report();
            report.read += findings;
            report.lost += findings;
        }
        if let Some(mut tracker) = shared.tracker() {
            tracker.end_input(index, offset + bytes, number + lines);
        }
        shared.set_aside.fetch_add(findings, Ordering::SeqCst);
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
    }
}

/// Once a signal has asked for a stop, gives statements in flight a few
/// seconds to finish, then cancels them (a COPY waiting on a lock, say):
/// their batches roll back and count as interrupted.
fn cancel_after_stop(shared: &Shared) {
    const GRACE: Duration = Duration::from_secs(3);
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.finished_all.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(GRACE);
    if shared.finished_all.load(Ordering::SeqCst) {
        return;
    }
    let tokens = std::mem::take(&mut *shared.cancels.lock().unwrap_or_else(|e| e.into_inner()));
    for token in tokens {
        if let Err(err) = token.cancel_query(postgres::NoTls) {
            log::debug!("cannot cancel a statement in flight: {err}");
        }
    }
}

/// Shows one updating line on stderr: bytes and lines done, rows/s, ETA.
fn show_progress(shared: &Shared, total: u64) {
    let started = std::time::Instant::now();
    let mut stderr = io::stderr();
    while !shared.finished_all.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let done = shared.bytes_read.load(Ordering::Relaxed);
        let (read, inserted) = {
            let report = shared.report();
            (report.read, report.inserted)
        };
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        let eta = if done > 0 && done < total {
            format!("{:.0} s", seconds * (total - done) as f64 / done as f64)
        } else {
            "-".into()
        };
        let _ = write!(
            stderr,
            "\r\x1b[K{:.1}/{:.1} MB ({:.0}%)  {read} lines  {inserted} inserted  {:.0} rows/s  ETA {eta}",
            done as f64 / 1e6,
            total as f64 / 1e6,
            100.0 * done as f64 / total.max(1) as f64,
            inserted as f64 / seconds,
        );
    }
    let _ = write!(stderr, "\r\x1b[K");
}
