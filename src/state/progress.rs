//! How far the inputs of a running load are settled: each batch, in input
//! order, is recorded in the journal before it commits, and the state file
//! is rewritten from time to time (and at the end) with what the journal
//! says.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::content::HEAD;
use super::{Entry, Mark, Resume, StateFile, Trace, Txn, lock, now};

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
    last_save: Instant,
}

impl Progress {
    pub fn new(file: StateFile, inputs: Vec<Option<Resume>>) -> Progress {
        Progress {
            file,
            inputs,
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
        self.release_before(source);
        let (key, mark) = match &self.inputs[source] {
            Some(resume) => (
                Some(resume.key.clone()),
                Some(mark_at(resume, offset, line)?),
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

    /// Frees the decoders of the inputs before `source`: entries come in
    /// input order, so they are done with.
    fn release_before(&self, source: usize) {
        for resume in self.inputs[..source].iter().flatten() {
            lock(&resume.probe).release();
        }
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

/// The mark of an input loaded up to byte `offset`, after `line` lines.
fn mark_at(resume: &Resume, offset: u64, line: u64) -> Result<Mark> {
    let mut content = lock(&resume.probe);
    let context = || format!("{}: shorter than where it was read to", resume.mark.path);
    let tail = content.tail(offset)?.with_context(context)?;
    // The head stays once it is whole.
    let head = match resume.mark.head {
        head if head.len == offset.min(HEAD) => head,
        _ => content.head(offset.min(HEAD))?.with_context(context)?,
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
        seen: now(),
    })
}
