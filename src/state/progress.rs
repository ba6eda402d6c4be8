//! How far the inputs of a running load are settled: each batch, in input
//! order, is recorded in the journal before it commits, and the state file
//! is rewritten from time to time (and at the end) with what the journal
//! says.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::content::{HEAD, Seen, hex};
use super::{
    Entry, Known, Mark, Positioned, Resume, Start, StateFile, Trace, Txn, lock, now, now_ns,
};

/// Whether every batch of a run was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    All,
    /// A batch's COMMIT outcome could not be learned.
    OutcomeUnknown,
}

/// How often the state file is rewritten during a run (the journal covers
/// what happens in between).
const SAVE_EVERY: Duration = Duration::from_secs(1);

pub struct Progress {
    file: StateFile,
    /// Per input (by index): its key and handle; None for an input the
    /// state file does not track.
    inputs: Vec<Option<Resume>>,
    /// Indexes of inputs let go of, for the next added ones: a run that
    /// follows files for months keeps as many as it has open.
    free: Vec<usize>,
    /// Inputs are added as files are followed.
    following: bool,
    last_save: Instant,
    /// Entries applied since the state file was last written.
    unsaved: bool,
    /// Entries journaled since the last one applied: of the batch between
    /// its journal and its commit, or whose commit's outcome is unknown
    /// (with those of its attempts that failed).
    in_doubt: Vec<Entry>,
    /// While rewrites of the state file fail: how many entries were
    /// journaled since the first failure, and the last error.
    failing: Option<(usize, String)>,
}

/// How many batches may be journaled while the state file cannot be
/// rewritten: the journal grows until it is, and a next run would settle
/// every entry of it.
const MAX_JOURNALED_UNSAVED: usize = 1000;

impl Progress {
    pub fn new(file: StateFile, inputs: Vec<Option<Resume>>) -> Progress {
        Progress {
            file,
            inputs,
            free: Vec::new(),
            following: false,
            last_save: Instant::now(),
            unsaved: false,
            in_doubt: Vec::new(),
            failing: None,
        }
    }

    /// Whether the state file tracks input `source` (a file, not standard
    /// input or a pipe).
    pub fn tracks(&self, source: usize) -> bool {
        self.inputs.get(source).is_some_and(Option::is_some)
    }

    /// The journal entry saying that input `source` is settled up to byte
    /// `offset` (after `line` lines), by transaction `txn` when there is
    /// one, with the reject file `rejects` bytes long. None when there is
    /// nothing to record.
    pub fn entry(
        &self,
        source: usize,
        (offset, line): (u64, u64),
        txn: Option<(&Txn, Option<Trace>)>,
        rejects: Option<u64>,
        seen: Option<&Seen>,
    ) -> Result<Option<Entry>> {
        self.release_before(source);
        let (key, mark) = match &self.inputs[source] {
            Some(resume) => (
                Some(resume.key.clone()),
                Some(mark_at(resume, offset, line, seen)?),
            ),
            None if rejects.is_none() => return Ok(None),
            None => (None, None),
        };
        Ok(Some(Entry {
            txid: txn.map(|(t, _)| t.id),
            timeline: txn.and_then(|(t, _)| t.timeline.clone()),
            stats_reset: txn.and_then(|(t, _)| t.stats_reset.clone()),
            trace: txn.and_then(|(_, trace)| trace),
            key,
            mark,
            rejects,
            acknowledged: false,
        }))
    }

    /// Frees the decoders of the inputs before `source`: entries come in
    /// input order, so they are done with.
    fn release_before(&self, source: usize) {
        if self.following {
            // Inputs are added and let go of in no order.
            return;
        }
        for resume in self.inputs[..source].iter().flatten() {
            lock(&resume.probe).release();
        }
    }

    /// Writes an entry to the journal and syncs it: before the commit it
    /// stands for.
    pub fn journal(&mut self, entry: &Entry) -> Result<()> {
        if let Some((journaled, error)) = &mut self.failing {
            if *journaled >= MAX_JOURNALED_UNSAVED {
                anyhow::bail!(
                    "{error}; {journaled} batches were committed since it last could be, \
                     recorded in its journal only: nothing more is, until it can be rewritten"
                );
            }
            *journaled += 1;
        }
        self.file.journal(entry)?;
        self.in_doubt.push(entry.clone());
        Ok(())
    }

    /// The batch of `entry` did not commit, for sure (it is tried again):
    /// nothing to settle of it.
    pub fn forget(&mut self, entry: &Entry) {
        if let Some(at) = self.in_doubt.iter().rposition(|e| e == entry) {
            self.in_doubt.remove(at);
        }
    }

    /// The batch of `entry` is settled (its transaction, if any, committed:
    /// the journal says so): the state file may say so.
    pub fn apply(&mut self, entry: &Entry) -> Result<()> {
        self.file.acknowledge(entry);
        self.file.apply(entry);
        self.unsaved = true;
        // Batches are journaled, committed and applied one at a time, in
        // input order: nothing journaled before is in doubt any more.
        self.in_doubt.clear();
        self.save_if_due()
    }

    /// Rewrites the state file when a second has passed since the last time.
    pub fn save_if_due(&mut self) -> Result<()> {
        if self.last_save.elapsed() < SAVE_EVERY {
            return Ok(());
        }
        self.save()
    }

    /// Between batches (a followed file that stopped growing): rewrites the
    /// state file, and empties the journal, when batches were applied
    /// since the last time and none is in doubt. Otherwise a run that sits
    /// idle keeps its last batches in the journal only, for the next run
    /// to settle after a kill.
    pub fn save_if_idle(&mut self) -> Result<()> {
        if !self.unsaved || !self.in_doubt.is_empty() {
            return Ok(());
        }
        let saved = self.save_if_due();
        // Said once: the journal still covers it, and the next batch or
        // the end of the run tries again.
        self.unsaved &= saved.is_ok();
        saved
    }

    pub fn save(&mut self) -> Result<()> {
        self.last_save = Instant::now();
        self.unsaved = false;
        let saved = self.file.save();
        match &saved {
            Ok(()) => self.failing = None,
            Err(err) => {
                let journaled = self.failing.take().map_or(0, |(journaled, _)| journaled);
                self.failing = Some((journaled, format!("{err:#}")));
            }
        }
        saved
    }

    /// Tracks more inputs (--follow found them): their indexes, and where to
    /// start reading it, after positioning `file` there.
    /// None for a file with nothing to read in it. Files passed together
    /// are told apart from copies of each other.
    pub fn add_inputs(
        &mut self,
        files: Vec<(PathBuf, File)>,
    ) -> Result<Vec<Option<(usize, Mark, Positioned)>>> {
        self.following = true;
        let starts = self.file.resume(files)?;
        Ok(starts
            .into_iter()
            .map(|start| match start {
                Start::Read { resume, input } => {
                    let mark = resume.mark.clone();
                    Some((self.slot(resume), mark, input))
                }
                Start::Skip => None,
            })
            .collect())
    }

    /// Where to keep a new input: its index.
    fn slot(&mut self, resume: Resume) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.inputs[index] = Some(resume);
                index
            }
            None => {
                self.inputs.push(Some(resume));
                self.inputs.len() - 1
            }
        }
    }

    /// What the state file knows of the file at `path` (Unknown when it
    /// cannot be read).
    pub fn knows(&mut self, path: &Path) -> Known {
        self.file.knows(path).unwrap_or(Known::Unknown)
    }

    /// Whether the name was rotated by renaming ([`StateFile::renamed_under`]).
    pub fn renamed_under(&self, name: &Path, current: Option<(u64, u64)>) -> bool {
        self.file.renamed_under(name, current)
    }

    /// When a file was last loaded under the name `path`.
    pub fn last_loaded(&self, path: &Path) -> Option<SystemTime> {
        let name = std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .ok()?;
        let name = name.to_string_lossy();
        self.file
            .contents
            .files
            .values()
            .filter(|mark| mark.path == name)
            .map(|mark| {
                let at = match mark.loaded_ns {
                    Some(ns) => Duration::from_nanos(ns),
                    None => Duration::from_secs(mark.seen + 1),
                };
                UNIX_EPOCH + at
            })
            .max()
    }

    /// Input `source` has no batch left to settle: its file handle goes,
    /// and its index may serve another.
    pub fn release_input(&mut self, source: usize) {
        if let Some(input) = self.inputs.get_mut(source)
            && input.take().is_some()
        {
            self.free.push(source);
        }
    }

    /// Bytes of the tracked inputs beyond what is loaded.
    /// (A compressed file's size says nothing of its content's: it counts
    /// for nothing.)
    pub fn unloaded_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .flatten()
            .map(|input| {
                let content = lock(&input.probe);
                if content.format().is_compressed() {
                    return 0;
                }
                let len = content.file_len().unwrap_or(0);
                let loaded = self
                    .file
                    .contents
                    .files
                    .get(&input.key)
                    .map_or(input.mark.offset, |mark| mark.offset);
                len.saturating_sub(loaded)
            })
            .sum()
    }

    /// The end of a run. With every batch settled, nothing is left to cut
    /// from the reject file next time; otherwise the journal keeps the
    /// batch whose outcome only the server knows.
    pub fn close(&mut self, settled: Settled) -> Result<()> {
        self.last_save = Instant::now();
        match settled {
            Settled::All => self.file.watch_rejects(None),
            // Only the batch in doubt stays for the next run to settle:
            // the state file covers those before it.
            Settled::OutcomeUnknown => self.file.save_keeping_journal(&self.in_doubt),
        }
    }
}

/// The mark of an input loaded up to byte `offset`, after `line` lines.
/// Its fingerprints are those `seen` by the reader when it has them, else
/// read again.
fn mark_at(resume: &Resume, offset: u64, line: u64, seen: Option<&Seen>) -> Result<Mark> {
    let mut content = lock(&resume.probe);
    let context = || format!("{}: shorter than where it was read to", resume.mark.path);
    let tail = match seen.and_then(|seen| seen.tail_before(offset)) {
        Some(bytes) => hex(bytes),
        None => content.tail(offset)?.with_context(context)?,
    };
    // The head stays once it is whole; one that cannot be read any more
    // (the file was truncated since) stays as it was.
    let head = match (resume.mark.head, seen.and_then(|seen| seen.head_at(offset))) {
        (head, _) if head.len == offset.min(HEAD) => head,
        (_, Some(head)) => head,
        (head, None) => content.head(offset.min(HEAD))?.unwrap_or(head),
    };
    let ended = match content.format().is_compressed() && content.ends_at(offset)? {
        true => Some(content.file_len()?),
        false => None,
    };
    Ok(Mark {
        path: resume.mark.path.clone(),
        offset,
        line,
        tail,
        head,
        ended,
        born: resume.mark.born.or_else(|| content.born()),
        seen: now(),
        loaded_ns: Some(now_ns()),
    })
}
