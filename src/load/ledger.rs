//! The accounting of a load: every line read ends as exactly one of
//! inserted or dropped (by reason). [`Ledger`] is the only place the counts
//! change. It settles batches, in turn: writes their dropped lines to the
//! reject file, records their progress in the state journal before they
//! commit, and says on stderr which lines were dropped, after letting go of
//! its locks.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result};

use super::batch::{Batch, Origin, Timing};
use super::lock;
use super::turns::Turn;
use crate::crash;
use crate::rejects::Rejects;
use crate::state::{Entry, Known, Mark, Positioned, Progress, Seen, Settled, Trace, Txn};
pub use counts::{Counts, Dropped};

mod counts;

/// The reason for lines not sent because the database had failed for good.
pub const FAILED_EARLIER: &str = "not sent: the database failed earlier in this run";
/// The reason for lines read but not written because a signal stopped the run.
pub const INTERRUPTED: &str = "not inserted: interrupted";

/// Per-line messages shown before the rest are only counted (with
/// --follow: in each [`SHOWN_WINDOW`]).
pub const SHOWN_DROPS: u64 = 100;
const SHOWN_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether dropped lines are reported one by one on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    PerLine,
}

/// A row the server refused: which part of its batch, which row, why.
#[derive(Clone)]
pub struct Refused {
    pub timing: Timing,
    pub index: usize,
    pub reason: String,
}

/// What [`Ledger::prepare`] did, to be confirmed or undone.
pub struct Prepared {
    /// The reject file's length before the batch's lines.
    rejects_before: Option<u64>,
    entry: Option<Entry>,
    /// Rows sent that the server did not take (a trigger skipped them).
    skipped: u64,
}

/// The accounting, shared by the reader and the writers. The methods that
/// take a [`Turn`] settle batches, in input order.
pub struct Ledger {
    counts: Mutex<Counts>,
    /// Findings read, beyond `counts.read`: counted apart from the other
    /// counts, as the reader adds them often.
    findings_read: AtomicU64,
    verbosity: Verbosity,
    /// Input names by index, for messages; --follow adds inputs as files
    /// are rotated.
    names: Mutex<Vec<String>>,
    /// With --follow, lines not loaded because the run stops (or the
    /// database failed for good) stay in their files for the next run
    /// instead of going to the reject file: the files are the buffer.
    leave_in_inputs: bool,
    /// When a batch last committed.
    last_commit: Mutex<Option<std::time::Instant>>,
    /// --follow: when the hour of shown drops began, and how many.
    shown_window: Mutex<(std::time::Instant, u64)>,
    rejects: Option<Mutex<Rejects>>,
    /// With --state-file: the journal and the marks.
    progress: Option<Mutex<Progress>>,
    /// A batch's outcome could not be learned.
    unknown_outcome: AtomicBool,
    /// The first failure to record progress: the run fails with it.
    record_error: Mutex<Option<anyhow::Error>>,
}

/// A dropped line to report once the locks are released.
struct Shown {
    source: usize,
    line: u64,
}

impl Ledger {
    pub fn new(
        names: Vec<String>,
        verbosity: Verbosity,
        rejects: Option<Rejects>,
        progress: Option<Progress>,
    ) -> Ledger {
        Ledger {
            counts: Mutex::new(Counts::default()),
            findings_read: AtomicU64::new(0),
            verbosity,
            names: Mutex::new(names),
            leave_in_inputs: false,
            last_commit: Mutex::new(None),
            shown_window: Mutex::new((std::time::Instant::now(), 0)),
            rejects: rejects.map(Mutex::new),
            progress: progress.map(Mutex::new),
            unknown_outcome: AtomicBool::new(false),
            record_error: Mutex::new(None),
        }
    }

    /// Whether rows of input `source` not loaded for `kind` stay in it for
    /// the next run, rather than being dropped: those a stop or a database
    /// failure kept out, with --follow; with a state file that tracks the
    /// input (the state stops before them), those a stop kept out, and
    /// those a database failure did when there is no reject file (with
    /// one, they go there with the rest of the input, set aside).
    /// Standard input and pipes keep nothing.
    fn leaves(&self, source: usize, kind: Dropped) -> bool {
        match kind {
            Dropped::Interrupted => self.leave_in_inputs || self.tracked(source),
            Dropped::Lost => {
                self.leave_in_inputs || (self.rejects.is_none() && self.tracked(source))
            }
            _ => false,
        }
    }

    /// Whether the state file tracks input `source`: rows of it kept out
    /// of the table after a gap stay in it, and the next run loads them.
    fn tracked(&self, source: usize) -> bool {
        self.progress
            .as_ref()
            .is_some_and(|progress| lock(progress).tracks(source))
    }

    /// Lines not loaded when the run stops stay in their inputs (--follow).
    pub fn leaving_in_inputs(mut self) -> Ledger {
        self.leave_in_inputs = true;
        self
    }

    /// The name of input `source`.
    pub fn name(&self, source: usize) -> String {
        lock(&self.names).get(source).cloned().unwrap_or_default()
    }

    /// Names input `source` by the name it was rotated to, for what is
    /// said of the lines read from it from now on.
    pub fn rename(&self, source: usize, name: String) {
        if let Some(slot) = lock(&self.names).get_mut(source) {
            *slot = name;
        }
    }

    /// Adds an input (a file found while following), tracked by the state
    /// file from where it says: its index and where to start reading.
    /// None for a file with nothing to read in it. Files added together
    /// are told apart from copies of each other.
    pub fn add_inputs(
        &self,
        files: Vec<(PathBuf, File)>,
    ) -> Result<Vec<Option<(usize, Mark, Positioned)>>> {
        let progress = self
            .progress
            .as_ref()
            .context("following files needs a state file")?;
        let mut names = lock(&self.names);
        let paths: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        let added = lock(progress).add_inputs(files)?;
        for (name, added) in paths.into_iter().zip(&added) {
            if let Some((index, ..)) = added {
                match names.get_mut(*index) {
                    Some(slot) => *slot = name,
                    None => names.push(name),
                }
            }
        }
        Ok(added)
    }

    /// Whether a file other than `current` (device and inode) was loaded
    /// under the name `name`: it was rotated by renaming.
    pub fn renamed_under(&self, name: &Path, current: Option<(u64, u64)>) -> bool {
        self.progress
            .as_ref()
            .is_some_and(|progress| lock(progress).renamed_under(name, current))
    }

    /// What the state file knows of the file at `path`, and when a file
    /// was last loaded under the name `name`.
    pub fn knows(&self, path: &Path, name: &Path) -> (Known, Option<std::time::SystemTime>) {
        match &self.progress {
            Some(progress) => {
                let mut progress = lock(progress);
                (progress.knows(path), progress.last_loaded(name))
            }
            None => (Known::Unknown, None),
        }
    }

    /// Input `source` is done with, every batch of it settled: its file
    /// handle is let go of.
    pub fn release_input(&self, source: usize) {
        if let Some(progress) = &self.progress {
            lock(progress).release_input(source);
        }
    }

    /// Bytes of the tracked inputs not loaded yet, as far as is known.
    pub fn unloaded_bytes(&self) -> u64 {
        self.progress
            .as_ref()
            .map_or(0, |progress| lock(progress).unloaded_bytes())
    }

    /// How long ago a batch last committed; None before the first.
    pub fn since_last_commit(&self) -> Option<std::time::Duration> {
        lock(&self.last_commit).map(|at| at.elapsed())
    }

    /// Whether nothing more can commit in this run: a batch's outcome is
    /// unknown, or progress could not be recorded.
    pub fn stalled(&self) -> bool {
        self.unknown_outcome.load(Ordering::SeqCst) || lock(&self.record_error).is_some()
    }

    /// Whether lines as read are kept, for a reject file.
    pub fn keeps_lines(&self) -> bool {
        self.rejects.is_some()
    }

    pub fn counts(&self) -> Counts {
        let mut counts = *lock(&self.counts);
        // Loaded after the others: every finding they count was read.
        counts.read += self.findings_read.load(Ordering::Acquire);
        counts
    }

    /// Lines with findings were read: counted by the reader now and then
    /// (an atomic add per line cost 1% of its time), and always before
    /// any of them is settled.
    pub fn read(&self, findings: u64) {
        self.findings_read.fetch_add(findings, Ordering::Release);
    }

    /// A line read and rejected at once (its bytes go to the reject file
    /// with its batch).
    pub fn drop_read(&self, source: usize, line: u64, kind: Dropped, reason: &dyn fmt::Display) {
        let leaves = self.leaves(source, kind);
        let shown = {
            let mut counts = lock(&self.counts);
            counts.read += 1;
            if leaves {
                counts.left += 1;
                return;
            }
            self.count_drop(&mut counts, kind)
        };
        if shown {
            self.say(&Shown { source, line }, reason);
        }
    }

    /// Findings copied unread to the reject file after the database failed:
    /// read, and lost.
    pub fn set_aside(&self, findings: u64) {
        let mut counts = lock(&self.counts);
        counts.read += findings;
        counts.lost += findings;
        counts.set_aside += findings;
    }

    /// The reject file, held so that pieces of one long line are not split
    /// by other dropped lines.
    pub fn hold_rejects(&self) -> Option<MutexGuard<'_, Rejects>> {
        self.rejects.as_ref().map(lock)
    }

    /// Before COMMIT: appends the batch's rejected lines and refused rows
    /// to the reject file and records the batch (committed by `txid`) in the
    /// journal, both on disk.
    pub fn prepare(
        &self,
        batch: &Batch,
        refused: &[Refused],
        skipped: u64,
        txn: Option<&Txn>,
        _turn: &Turn<'_>,
    ) -> Result<Prepared> {
        let mut rejects_before = None;
        if let Some(rejects) = &self.rejects {
            let mut rejects = lock(rejects);
            rejects_before = Some(rejects.len());
            if crash::due("rejects-half-written") {
                rejects.append(&batch.rejects[..batch.rejects.len() / 2]);
                let _ = rejects.sync();
                crash::die();
            }
            rejects.append(&batch.rejects);
            for r in refused {
                rejects.append(batch.part(r.timing).raw_line(r.index));
            }
            // Written before the batch commits: on disk when a state file
            // relies on it.
            if self.progress.is_some() {
                rejects.sync()?;
            } else if !batch.rejects.is_empty() || !refused.is_empty() {
                rejects.flush()?;
            }
        }
        crash::at("rejects-written");
        let entry = self.journal(
            batch.source,
            batch.end,
            Some(&batch.seen),
            txn.map(|t| (t, trace(batch, refused, t.savepoints))),
        )?;
        crash::at("journaled");
        Ok(Prepared {
            rejects_before,
            entry,
            skipped,
        })
    }

    /// After COMMIT: the rows are in, but for the refused ones and those a
    /// trigger skipped.
    pub fn committed(&self, batch: &Batch, refused: &[Refused], prepared: Prepared) {
        let skipped = prepared.skipped as usize;
        self.inserted(batch.rows() - refused.len() - skipped);
        if skipped > 0 {
            self.skipped(batch, skipped);
        }
        *lock(&self.last_commit) = Some(std::time::Instant::now());
        let mut shown = Vec::new();
        {
            let mut counts = lock(&self.counts);
            for r in refused {
                if self.count_drop(&mut counts, Dropped::Refused) {
                    let origin = batch.part(r.timing).rows[r.index].origin;
                    shown.push((origin, format!("refused by the server: {}", r.reason)));
                }
            }
        }
        for (origin, reason) in shown {
            self.say(&origin.into(), &reason);
        }
        self.apply(prepared.entry);
    }

    /// Rows of `batch` the server did not take though it refused none: a
    /// trigger skipped them (BEFORE INSERT returning NULL). How many is all
    /// that is known, not which.
    fn skipped(&self, batch: &Batch, rows: usize) {
        let told = {
            let mut counts = lock(&self.counts);
            counts.skipped += rows as u64;
            counts.skipped_batches += 1;
            counts.skipped_batches
        };
        if told > SHOWN_SKIPPED_BATCHES {
            return;
        }
        let (first, last) = (batch.end.1 + 1 - batch.lines, batch.end.1);
        let lines = match first == last {
            true => format!("line {last}"),
            false => format!("lines {first} to {last}"),
        };
        let rows = match rows {
            1 => "1 row".to_owned(),
            rows => format!("{rows} rows"),
        };
        let further = match told == SHOWN_SKIPPED_BATCHES {
            true => "; further batches' are counted only",
            false => "",
        };
        log::warn!(
            "{}: {lines}: {rows} not taken by the table: a BEFORE INSERT trigger returned NULL \
             for them (it dropped them, or wrote them elsewhere, as trigger-based partitioning \
             does){further}",
            self.name(batch.source)
        );
    }

    /// COMMIT failed for sure: what was appended to the reject file for the
    /// batch goes, so that a retry appends it once.
    pub fn unprepare(&self, prepared: Prepared) {
        if let (Some(rejects), Some(len)) = (&self.rejects, prepared.rejects_before)
            && let Err(err) = lock(rejects).cut_to(len)
        {
            log::error!("{err:#}");
        }
        if let (Some(progress), Some(entry)) = (&self.progress, &prepared.entry) {
            lock(progress).forget(entry);
        }
    }

    /// COMMIT's outcome could not be learned. With a state file what was
    /// written for the batch stands: the journal counts on it, and the next
    /// run settles the batch. Without one it is undone: the whole batch
    /// goes to the reject file ([`Ledger::unknown_outcome`]), its rejected
    /// lines with it, once.
    pub fn unresolved(&self, prepared: Prepared) {
        if self.progress.is_none() {
            self.unprepare(prepared);
        }
    }

    /// Counts rows that were inserted without a batch (a dry run).
    pub fn inserted(&self, rows: usize) {
        lock(&self.counts).inserted += rows as u64;
    }

    /// Settles a batch none of whose rows are in the table: they are
    /// dropped as `kind`, or left in their input ([`Ledger::leaves`]).
    /// With a reject file they go there, with the lines already rejected,
    /// and the state moves past them; without one, a state file stops
    /// before them.
    pub fn dropped(&self, batch: &Batch, kind: Dropped, reason: &str, turn: &Turn<'_>) {
        if self.leaves(batch.source, kind) {
            self.left(batch);
            turn.open_gap();
            return;
        }
        self.count_rows(batch, kind, reason);
        let Some(rejects) = &self.rejects else {
            if self.progress.is_some() {
                turn.open_gap();
            }
            return;
        };
        {
            let mut rejects = lock(rejects);
            rejects.append(&batch.rejects);
            for (rows, index) in batch.in_input_order() {
                rejects.append(rows.raw_line(index));
            }
        }
        self.written(batch.source, batch.end, Some(&batch.seen), turn);
    }

    /// Settles a batch sent with a COMMIT whose outcome could not be
    /// learned. With a state file the journal keeps it, for the next run to
    /// ask the server, and no later batch may commit; without one, its lines
    /// go to the reject file (they may also be in the table).
    pub fn unknown_outcome(&self, batch: &Batch, reason: &str, turn: &Turn<'_>) {
        if self.progress.is_some() {
            self.count_rows(batch, Dropped::Uncertain, reason);
            self.unknown_outcome.store(true, Ordering::SeqCst);
            turn.open_gap();
        } else {
            self.dropped(batch, Dropped::Uncertain, reason, turn);
        }
    }

    /// Settles a batch after a gap: nothing is written, the next run loads
    /// it again.
    pub fn left_for_next_run(&self, batch: &Batch, kind: Dropped) {
        // After a gap the state file stops before the batch: a file it
        // tracks keeps the lines for the next run (standard input does not).
        if self.leave_in_inputs || self.tracked(batch.source) {
            self.left(batch);
            return;
        }
        self.count_rows(batch, kind, LEFT_FOR_NEXT_RUN);
    }

    /// Counts a batch's lines as left in their file: its rows, and the
    /// invalid lines among them, which were said and counted when read
    /// but are read again (and said again) by the next run.
    fn left(&self, batch: &Batch) {
        let mut counts = lock(&self.counts);
        counts.left += batch.rows() as u64 + batch.invalid;
        counts.invalid = counts.invalid.saturating_sub(batch.invalid);
    }

    /// Settles lines written to the reject file (by the reader itself: a
    /// long line, input set aside; or a dropped batch), up to `end` of input
    /// `source`: on disk, then in the journal.
    pub fn written(&self, source: usize, end: (u64, u64), seen: Option<&Seen>, turn: &Turn<'_>) {
        if turn.gap() {
            return;
        }
        let synced = match (&self.rejects, &self.progress) {
            (Some(rejects), Some(_)) => lock(rejects).sync(),
            _ => Ok(()),
        };
        match synced.and_then(|()| self.journal(source, end, seen, None)) {
            Ok(entry) => self.apply(entry),
            Err(err) => self.cannot_record(err, turn),
        }
    }

    /// The end of the run: the final counts, the reject file to close, and
    /// the final save of the state file (or the first failure to record).
    pub fn close(&self) -> (Counts, Option<Rejects>, Result<()>) {
        let mut saved = match lock(&self.record_error).take() {
            Some(err) => Err(err),
            None => Ok(()),
        };
        if let (Some(progress), Ok(())) = (&self.progress, &saved) {
            let settled = if self.unknown_outcome.load(Ordering::SeqCst) {
                Settled::OutcomeUnknown
            } else {
                Settled::All
            };
            saved = self
                .sync_rejects()
                .and_then(|()| lock(progress).close(settled));
        }
        let rejects = self
            .rejects
            .as_ref()
            .map(|rejects| std::mem::take(&mut *lock(rejects)));
        (self.counts(), rejects, saved)
    }

    fn sync_rejects(&self) -> Result<()> {
        match &self.rejects {
            Some(rejects) => lock(rejects)
                .sync()
                .context("the state file is not updated past lines the reject file may not hold"),
            None => Ok(()),
        }
    }

    /// Writes the journal entry of a batch ending at `end` of `source`
    /// (with the fingerprints of what was read, when known).
    fn journal(
        &self,
        source: usize,
        end: (u64, u64),
        seen: Option<&Seen>,
        txn: Option<(&Txn, Option<Trace>)>,
    ) -> Result<Option<Entry>> {
        let Some(progress) = &self.progress else {
            return Ok(None);
        };
        let rejects = self.rejects.as_ref().map(|r| lock(r).len());
        let mut progress = lock(progress);
        let entry = progress.entry(source, end, txn, rejects, seen)?;
        if let Some(entry) = &entry {
            progress.journal(entry)?;
        }
        Ok(entry)
    }

    /// Between batches: the state file catches up with what is applied
    /// (see [`crate::state::Progress::save_if_idle`]).
    pub fn save_if_idle(&self) {
        if let Some(progress) = &self.progress
            && let Err(err) = lock(progress).save_if_idle()
        {
            log::error!("{err:#}");
        }
    }

    fn apply(&self, entry: Option<Entry>) {
        if let (Some(progress), Some(entry)) = (&self.progress, entry) {
            let saved = lock(progress).apply(&entry);
            if let Err(err) = saved {
                log::error!("{err:#}");
            }
        }
    }

    /// Progress could not be recorded: nothing after this may commit. The
    /// first error is the run's, said at its end; a different later one is
    /// said now.
    pub fn cannot_record(&self, err: anyhow::Error, turn: &Turn<'_>) {
        turn.open_gap();
        let mut first = lock(&self.record_error);
        match &*first {
            None => *first = Some(err),
            Some(said) if format!("{said:#}") == format!("{err:#}") => {}
            Some(_) => log::error!("{err:#}"),
        }
    }

    /// Counts every row of a batch as dropped.
    fn count_rows(&self, batch: &Batch, kind: Dropped, reason: &str) {
        let mut shown = Vec::new();
        {
            let mut counts = lock(&self.counts);
            for (rows, index) in batch.in_input_order() {
                if self.count_drop(&mut counts, kind) {
                    shown.push(Shown::from(rows.rows[index].origin));
                }
            }
        }
        for line in &shown {
            self.say(line, &reason);
        }
    }

    /// Counts a dropped line; whether it is to be shown.
    fn count_drop(&self, counts: &mut Counts, kind: Dropped) -> bool {
        counts.drop_one(kind);
        if self.verbosity != Verbosity::PerLine {
            return false;
        }
        if !self.leave_in_inputs {
            return counts.dropped() <= SHOWN_DROPS;
        }
        // A run that follows files for days shows some every hour.
        let mut window = lock(&self.shown_window);
        if window.0.elapsed() >= SHOWN_WINDOW {
            *window = (std::time::Instant::now(), 0);
        }
        window.1 += 1;
        window.1 <= SHOWN_DROPS
    }

    fn say(&self, shown: &Shown, reason: &dyn fmt::Display) {
        let name = self.name(shown.source);
        let _ = writeln!(
            std::io::stderr(),
            "pgsense-pg: {name}:{}: {reason}",
            shown.line
        );
    }
}

impl From<Origin> for Shown {
    fn from(origin: Origin) -> Shown {
        Shown {
            source: origin.source,
            line: origin.line,
        }
    }
}

/// How many batches say what a trigger skipped of them.
const SHOWN_SKIPPED_BATCHES: u64 = 10;

/// What a batch leaves in the table once committed: its rows but those the
/// server refused, one of them by its lsn, the sum of their lsns, and
/// whether they were copied under savepoints. None when it leaves nothing.
/// Rows a trigger skipped are counted in: such a trigger may have written
/// them to another table under the same transaction (trigger-based
/// partitioning into children of the table), where the check finds them;
/// when it dropped them, the check finds too few and the outcome is not
/// guessed.
pub fn trace(batch: &Batch, refused: &[Refused], savepoints: bool) -> Option<Trace> {
    if refused.is_empty() {
        // Every row, summed as it lies: the usual batch, at every commit.
        let lsns = || {
            batch
                .parts()
                .into_iter()
                .flat_map(|rows| &rows.rows)
                .map(|row| row.lsn)
        };
        return Some(Trace {
            rows: batch.rows() as u64,
            lsn: lsns().next()?,
            lsn_sum: Some(lsns().map(i128::from).sum()),
            savepoints,
        });
    }
    let kept = |rows: &super::batch::Rows, index: usize| {
        !refused
            .iter()
            .any(|r| r.timing == rows.timing && r.index == index)
    };
    let lsns = || {
        batch.parts().into_iter().flat_map(move |rows| {
            (0..rows.len())
                .filter(move |&index| kept(rows, index))
                .map(|index| rows.rows[index].lsn)
        })
    };
    let lsn = lsns().next()?;
    Some(Trace {
        rows: (batch.rows() - refused.len()) as u64,
        lsn,
        lsn_sum: Some(lsns().map(i128::from).sum()),
        savepoints,
    })
}

/// Why rows after a batch that could not be settled are not loaded.
pub const LEFT_FOR_NEXT_RUN: &str = "not loaded: an earlier batch could not be settled (the same command with --state-file loads it again)";

#[cfg(test)]
mod tests;
