//! How far the inputs of a running load are settled: each batch, in input
//! order, is recorded in the journal before it commits, and the state file
//! is rewritten from time to time (and at the end) with what the journal
//! says.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Entry, Mark, Resume, StateFile, Trace, Txn, now, tail};

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
    last_save: Instant,
}

impl Progress {
    pub fn new(file: StateFile, inputs: Vec<Option<Resume>>) -> Progress {
        Progress {
            file,
            inputs,
            free: Vec::new(),
            last_save: Instant::now(),
        }
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
    ) -> Result<Option<Entry>> {
        let (key, mark) = match &self.inputs[source] {
            Some(resume) => (
                Some(resume.key.clone()),
                Some(Mark {
                    path: resume.mark.path.clone(),
                    offset,
                    line,
                    tail: tail(&resume.probe, offset)?,
                    seen: now(),
                }),
            ),
            None if rejects.is_none() => return Ok(None),
            None => (None, None),
        };
        Ok(Some(Entry {
            txid: txn.map(|(t, _)| t.id),
            timeline: txn.and_then(|(t, _)| t.timeline.clone()),
            trace: txn.and_then(|(_, trace)| trace),
            key,
            mark,
            rejects,
        }))
    }

    /// Writes an entry to the journal and syncs it: before the commit it
    /// stands for.
    pub fn journal(&mut self, entry: &Entry) -> Result<()> {
        self.file.journal(entry)
    }

    /// The batch of `entry` is settled: the state file may say so.
    pub fn apply(&mut self, entry: &Entry) -> Result<()> {
        self.file.apply(entry);
        self.save_if_due()
    }

    /// Rewrites the state file when a second has passed since the last time.
    pub fn save_if_due(&mut self) -> Result<()> {
        if self.last_save.elapsed() < SAVE_EVERY {
            return Ok(());
        }
        self.save()
    }

    pub fn save(&mut self) -> Result<()> {
        self.last_save = Instant::now();
        self.file.save()
    }

    /// Tracks one more input (--follow found it): its index, and where to
    /// start reading it, after positioning `file` there.
    pub fn add_input(&mut self, path: &Path, file: &mut File) -> Result<(usize, Mark)> {
        let resume = self.file.resume(path, file)?;
        let mark = resume.mark.clone();
        match self.free.pop() {
            Some(index) => {
                self.inputs[index] = Some(resume);
                Ok((index, mark))
            }
            None => {
                self.inputs.push(Some(resume));
                Ok((self.inputs.len() - 1, mark))
            }
        }
    }

    /// Whether the file of `meta` is one the state file tracks, with bytes
    /// beyond what is loaded (a rotated file a killed run did not finish).
    pub fn unfinished(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        let key = format!("{}:{}", meta.dev(), meta.ino());
        self.file
            .contents
            .files
            .get(&key)
            .is_some_and(|mark| mark.offset < meta.len())
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
    pub fn unloaded_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .flatten()
            .map(|input| {
                let len = input.probe.metadata().map_or(0, |m| m.len());
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
            Settled::OutcomeUnknown => self.file.save_keeping_journal(),
        }
    }
}
