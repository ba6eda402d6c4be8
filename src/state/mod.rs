//! The state file of `load --state-file`: for each input file, how far it
//! has been loaded (committed byte offset and line number), so that cron can
//! run the loader over a file the scanner keeps appending to.
//!
//! Files are known by device and inode, not by name: after a rotation the
//! renamed file (`findings.jsonl.1`) still resumes where it stopped, so the
//! lines appended just before the rotation are not lost when it is passed
//! too. A few bytes before the offset are kept as a fingerprint, which tells
//! a file rewritten in place (copied and truncated, then grown again) from
//! one that only grew; the first bytes are kept too, so that a copy of a
//! tracked file (logrotate's copytruncate, or a compressed `.2.gz`) is
//! recognised by its content and resumed where the original was loaded up
//! to ([`standing`]). Offsets of a compressed file count its decoded bytes
//! ([`content`]).
//!
//! The file is JSON, replaced atomically (temp file, fsync, rename) and only
//! with offsets that committed transactions cover. Between two saves each
//! batch is recorded in a journal beside it ([`journal`]) before it
//! commits, so that a run killed at any moment is settled exactly by the
//! next one ([`StateFile::recover`]). A lock file beside it keeps a second
//! run from loading the same lines at the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::exit::{Status, WithStatus};

mod content;
mod journal;
mod progress;
mod standing;

use content::Content;
pub use content::{HEAD, Head, Positioned, Seen};
pub use journal::{Entry, Trace, Txn};
pub use progress::{Progress, Settled};
pub use standing::Known;
pub use standing::{Start, rotation_suffix};

/// Where one input file stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The name it was last loaded under, for people and for telling that a
    /// name now stands for another file.
    pub path: String,
    /// Bytes loaded: the start of the first line not yet loaded (counted in
    /// the decoded content, for a compressed file).
    pub offset: u64,
    /// Lines before `offset`, so line numbers stay those of the file.
    pub line: u64,
    /// The last bytes before `offset`, in hexadecimal.
    pub tail: String,
    /// The first bytes of the content (up to 4 KiB, none past `offset`): a
    /// copy of the file starts with them too. Absent from state files
    /// written before copies were recognised.
    #[serde(default)]
    pub head: Head,
    /// A compressed file read to its end: its size on disk then. While it
    /// keeps that size, a run need not decode it to know it holds nothing
    /// new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<u64>,
    /// When the file was created (Unix nanoseconds), where the file system
    /// says: a file deleted and made again can get the same inode back, and
    /// even start with the same bytes, but not this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born: Option<u64>,
    /// When it was last loaded or seen (Unix seconds); marks unseen for long
    /// are forgotten.
    pub seen: u64,
    /// When a batch of it last settled (Unix nanoseconds): files rotated
    /// from its name while the loader was down are those written after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_ns: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    /// "device:inode" -> mark; "device:inode@born" (its creation time) for
    /// a file whose inode another file has since.
    files: BTreeMap<String, Mark>,
    /// While a run is loading: the reject file and how long it is with every
    /// line the marks pass over in it. What a killed run appended beyond
    /// that is cut off by the next run. None once a run ended cleanly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejects: Option<RejectsMark>,
    /// The path the file was written to, links followed: under another
    /// name it is a copy, a hard link, or a move ([`check_moved`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    written_as: Option<PathBuf>,
}

/// The length a reject file is known to have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectsMark {
    pub path: PathBuf,
    /// "device:inode", to be sure it is the same file.
    pub key: String,
    pub len: u64,
}

/// What the server says of a transaction of a killed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    Committed,
    Aborted,
    /// The server cannot tell (it is another primary since a failover):
    /// why.
    Unknowable(String),
}

/// Marks of files not seen for this long are dropped.
const FORGET_AFTER: u64 = 90 * 24 * 3600;
/// The most marks kept: beyond, those seen least recently are dropped (the
/// file is rewritten every second during a run).
const MOST_MARKS: usize = 1000;

/// An open, locked state file.
pub struct StateFile {
    path: PathBuf,
    contents: Contents,
    journal: journal::Journal,
    /// Entries a killed run left in the journal, to be settled.
    unsettled: Vec<Entry>,
    /// Held for the whole run; the lock goes with it.
    _lock: File,
    /// --follow: a new file under a known name is a rotation, not news.
    following: bool,
    /// The keys of this run's inputs: their marks are kept whatever their
    /// number, or the next run given the same files would load them again.
    inputs: BTreeSet<String>,
}

/// Where to start reading one input.
#[derive(Clone)]
pub struct Resume {
    /// The key of the input in the state file.
    pub key: String,
    /// The mark to start from (offset 0 for a new, truncated or rewritten
    /// file).
    pub mark: Mark,
    /// The file's content, to take fingerprints when saving, whatever its
    /// name is by then (decoded apart from the reader's, for a compressed
    /// file).
    pub(crate) probe: Arc<Mutex<Content>>,
}

impl StateFile {
    /// Opens and locks PATH; a missing file is an empty state. A symbolic
    /// link is followed: the lock, the journal and the file written are
    /// those of the file it leads to, whatever name a run is given.
    pub fn open(path: &Path) -> Result<StateFile> {
        let path = &crate::paths::real(path);
        if let Ok(meta) = fs::metadata(path)
            && !meta.is_file()
        {
            let what = match meta.is_dir() {
                true => "a directory",
                false => "not a regular file",
            };
            return Err(anyhow::anyhow!(
                "state file {} is {what}: name a file (it need not exist yet)",
                path.display()
            ))
            .status(Status::Usage);
        }
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open lock file {}", lock_path.display()))
            .status(Status::CantCreate)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(anyhow::anyhow!(
                    "another pgsense-pg is loading with state file {}: not loading the same lines twice; try again later",
                    path.display()
                ))
                .status(Status::TempFail);
            }
            Err(fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        let contents = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "state file {} is damaged: fix or remove it (removing it reloads every input from the start)",
                    path.display()
                )
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot read state file {}", path.display()));
            }
        };
        check_moved(path, &contents)?;
        // The file is replaced through a temporary file beside it: a
        // directory that takes none is found now, not at the first save.
        let temp = sibling(path, ".tmp");
        File::create(&temp)
            .and_then(|_| fs::remove_file(&temp))
            .with_context(|| {
                format!(
                    "cannot write state file {}: cannot create {} beside it",
                    path.display(),
                    temp.display()
                )
            })
            .status(Status::CantCreate)?;
        let (journal, unsettled) = journal::Journal::open(path).status(Status::CantCreate)?;
        Ok(StateFile {
            path: path.to_owned(),
            contents,
            journal,
            unsettled,
            _lock: lock,
            following: false,
            inputs: BTreeSet::new(),
        })
    }

    /// Files will be followed (--follow): rotations are expected.
    pub fn follow(&mut self) {
        self.following = true;
    }

    /// Whether a file was loaded under the name `path` (which need not
    /// exist any more).
    pub fn loaded_under(&self, path: &Path) -> bool {
        let name = match (path.parent(), path.file_name()) {
            (Some(dir), Some(file)) => fs::canonicalize(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
            .map(|dir| dir.join(file)),
            _ => std::path::absolute(path),
        };
        let Ok(name) = name else {
            return false;
        };
        let name = name.to_string_lossy();
        self.contents.files.values().any(|mark| mark.path == name)
    }

    /// Whether a killed run left batches to settle.
    pub fn needs_recovery(&self) -> bool {
        !self.unsettled.is_empty() || self.contents.rejects.is_some()
    }

    /// Settles what a killed run left: each journal entry whose transaction
    /// committed (by `status`, told whether the journal says the server
    /// acknowledged its COMMIT), or that had nothing to commit, moves its
    /// mark; the reject file is cut back to the length the last of them
    /// recorded. Saves the result and empties the journal. Nothing changes
    /// until `status` has answered for every entry: a failure can be tried
    /// again.
    pub fn recover(
        &mut self,
        mut status: impl FnMut(&Txn, Option<&Trace>, bool) -> Result<TxStatus>,
    ) -> Result<usize> {
        let mut settled = Vec::with_capacity(self.unsettled.len());
        let mut unknowable = Vec::new();
        for (index, entry) in self.unsettled.iter().enumerate() {
            if let Some(id) = entry.txid {
                let txn = Txn {
                    id,
                    timeline: entry.timeline.clone(),
                    stats_reset: entry.stats_reset.clone(),
                    savepoints: entry.trace.is_some_and(|trace| trace.savepoints),
                };
                match status(&txn, entry.trace.as_ref(), entry.acknowledged)? {
                    TxStatus::Committed => {}
                    TxStatus::Aborted => continue,
                    TxStatus::Unknowable(why) => {
                        unknowable.push(self.unknowable(index, &why));
                        continue;
                    }
                }
            }
            settled.push(index);
        }
        // All at once: an operator settles them with one more run.
        if !unknowable.is_empty() {
            return Err(anyhow::anyhow!(
                "{}. The files may have been rotated or truncated since: go by the table, not \
                 the files. Then run the same command with, for each of these transactions, \
                 `--settle TXID=committed` if its batch is in the table, or \
                 `--settle TXID=aborted` if not",
                unknowable.join("; ")
            ));
        }
        let entries = std::mem::take(&mut self.unsettled);
        for &index in &settled {
            self.apply(&entries[index]);
        }
        let applied = settled.len();
        if let Some(rejects) = self.contents.rejects.take() {
            cut_rejects(&rejects)?;
        }
        self.save()?;
        Ok(applied)
    }

    /// What to say of the batch of unsettled entry `index`, whose outcome
    /// no server can tell: which lines to look for in the table, and how to
    /// settle it. The batch starts where the entry before it of the same input
    /// ended, else where the state file says.
    fn unknowable(&self, index: usize, why: &str) -> String {
        let entry = &self.unsettled[index];
        let lines = match (&entry.key, &entry.mark) {
            (Some(key), Some(mark)) => {
                // Not an earlier attempt at the same batch, which ends
                // where it does.
                let before = self.unsettled[..index]
                    .iter()
                    .rev()
                    .filter(|e| e.key.as_ref() == Some(key))
                    .filter_map(|e| e.mark.as_ref())
                    .find(|m| m.line < mark.line)
                    .or_else(|| self.contents.files.get(key));
                match before.map_or(0, |m| m.line) {
                    from if from < mark.line => {
                        format!("lines {}-{} of {}", from + 1, mark.line, mark.path)
                    }
                    _ => format!("lines up to {} of {}", mark.line, mark.path),
                }
            }
            _ => "lines of standard input".into(),
        };
        let txid = entry.txid.unwrap_or_default();
        format!(
            "whether the batch of {lines} (transaction {txid}) was loaded cannot be learned: \
             {why} (`--settle {txid}=committed` or `--settle {txid}=aborted`)"
        )
    }

    /// Applies a settled entry in memory: the next save writes it.
    pub fn apply(&mut self, entry: &Entry) {
        if let (Some(key), Some(mark)) = (&entry.key, &entry.mark) {
            self.set_mark(key, mark.clone());
        }
        if let (Some(len), Some(rejects)) = (entry.rejects, &mut self.contents.rejects) {
            rejects.len = len;
        }
    }

    /// Records `mark` under `key`. The mark there of content the file no
    /// longer has is kept under another key, where copies of that content
    /// are still known by it:
    /// - of another file, created before it (deleted since, and its inode
    ///   given to this one): under its key and creation time, for a copy
    ///   compressed before it was removed (`findings.jsonl.2.gz`);
    /// - of the same file before it was truncated and read again from its
    ///   start (copytruncate): under its key, creation time and offset,
    ///   for the copy made before the truncation, even when a stop came
    ///   before the copy was recorded as loaded itself.
    fn set_mark(&mut self, key: &str, mark: Mark) {
        if let Some(old) = self.contents.files.get(key) {
            let kept = match (old.born, mark.born) {
                (Some(then), Some(born)) if then != born => Some(format!("{key}@{then}")),
                // Read again from its start, and past where it was before
                // with other first bytes: copied and truncated, then
                // written again as much (rotations back to back).
                _ if mark.offset < old.offset
                    || (mark.head.len == old.head.len && mark.head.fnv != old.head.fnv) =>
                {
                    Some(format!("{key}@{}+{}", old.born.unwrap_or(0), old.offset))
                }
                _ => None,
            };
            if let Some(kept) = kept {
                let old = old.clone();
                self.contents.files.insert(kept, old);
            }
        }
        self.contents.files.insert(key.to_owned(), mark);
    }

    /// Says in the journal, not synced, that the server acknowledged the
    /// COMMIT of `entry`'s transaction.
    pub fn acknowledge(&mut self, entry: &Entry) {
        self.journal.acknowledge(entry);
    }

    /// Records a batch in the journal (synced), before its commit.
    pub fn journal(&mut self, entry: &Entry) -> Result<()> {
        self.journal.append(entry)
    }

    /// From now on, the reject file's length is recorded with each batch.
    pub fn watch_rejects(&mut self, mark: Option<RejectsMark>) -> Result<()> {
        self.contents.rejects = mark;
        self.save()
    }

    /// Replaces the file atomically with what is applied, then empties the
    /// journal.
    pub fn save(&mut self) -> Result<()> {
        self.write()?;
        self.journal.clear()
    }

    /// Replaces the file, then the journal with `in_doubt`: a batch whose
    /// outcome only the server knows, for the next run to settle.
    pub fn save_keeping_journal(&mut self, in_doubt: &[Entry]) -> Result<()> {
        self.write()?;
        self.journal.replace(in_doubt)
    }

    fn write(&mut self) -> Result<()> {
        forget_old(&mut self.contents.files, now(), &self.inputs);
        self.contents.written_as = Some(self.path.clone());
        let temp = sibling(&self.path, ".tmp");
        let context = || format!("cannot write state file {}", self.path.display());
        let mut file = File::create(&temp).with_context(context)?;
        serde_json::to_writer_pretty(&mut file, &self.contents).with_context(context)?;
        file.write_all(b"\n").with_context(context)?;
        file.sync_all().with_context(context)?;
        crate::crash::at("state-written");
        fs::rename(&temp, &self.path).with_context(context)?;
        sync_parent(&self.path);
        Ok(())
    }
}

/// Makes a rename to `path` durable: syncs the directory it is in, as far
/// as the file system lets it.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
}

/// Drops the marks not seen for [`FORGET_AFTER`], and beyond
/// [`MOST_MARKS`] those seen least recently; never those of `inputs`.
fn forget_old(files: &mut BTreeMap<String, Mark>, now: u64, inputs: &BTreeSet<String>) {
    files.retain(|key, mark| inputs.contains(key) || now.saturating_sub(mark.seen) < FORGET_AFTER);
    if files.len() > MOST_MARKS {
        let mut by_age: Vec<(u64, String)> = files
            .iter()
            .filter(|(key, _)| !inputs.contains(*key))
            .map(|(k, m)| (m.seen, k.clone()))
            .collect();
        // Most recently seen first.
        by_age.sort_unstable_by(|a, b| b.cmp(a));
        let room = MOST_MARKS.saturating_sub(files.len() - by_age.len());
        for (_, key) in by_age.drain(room.min(by_age.len())..) {
            files.remove(&key);
        }
    }
}

/// Now, in Unix nanoseconds.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Cuts the reject file back to the length recorded, when it is still the
/// same file: what is beyond was appended by a run that was killed before
/// it recorded it, and is written again by this one.
fn cut_rejects(mark: &RejectsMark) -> Result<()> {
    let file = match OpenOptions::new().write(true).open(&mark.path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot open reject file {}", mark.path.display()));
        }
    };
    let meta = file.metadata()?;
    if format!("{}:{}", meta.dev(), meta.ino()) != mark.key {
        return Ok(());
    }
    if meta.len() > mark.len {
        log::warn!(
            "{}: cutting {} bytes written by a run that was stopped before recording them",
            mark.path.display(),
            meta.len() - mark.len
        );
        file.set_len(mark.len)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot cut reject file {}", mark.path.display()))?;
    }
    Ok(())
}

/// Locks a mutex; a thread that panicked while holding a content probe left
/// it usable (at worst, it decodes again from the start).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Refuses a state file last written under another name when the file of
/// that name is still there (a copy or a hard link of it: two state files
/// for the same inputs, which two runs, or runs by turns, would load twice),
/// or when it was moved without its journal, which holds batches of a
/// killed run that are not settled yet.
fn check_moved(path: &Path, contents: &Contents) -> Result<()> {
    let Some(old) = contents.written_as.as_deref().filter(|old| *old != path) else {
        return Ok(());
    };
    let (shown, old_shown) = (path.display(), old.display());
    // The same directory under another name (a bind mount): the same lock.
    if crate::paths::same_file(&sibling(old, ".lock"), &sibling(path, ".lock")) {
        return Ok(());
    }
    if fs::metadata(old).is_ok_and(|meta| meta.is_file()) {
        return Err(anyhow::anyhow!(
            "state file {shown} was last written as {old_shown}, which is still there: it is a \
             copy or a hard link of that one, and two state files for the same inputs load \
             lines twice. Use --state-file {old_shown}, or remove one of the two (to move a \
             state file, move its .journal with it)"
        ))
        .status(Status::Usage);
    }
    let journal = sibling(old, ".journal");
    if fs::metadata(&journal).is_ok_and(|meta| meta.len() > 0) {
        return Err(anyhow::anyhow!(
            "state file {shown} was moved from {old_shown} without its journal {}, which \
             holds batches of a run that was stopped dead, not settled yet: move it to \
             {shown}.journal (loading without it would load those batches again)",
            journal.display()
        ))
        .status(Status::Usage);
    }
    log::info!("state file {shown} was moved from {old_shown}");
    Ok(())
}

pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(seen: u64) -> Mark {
        Mark {
            path: format!("/{seen}"),
            offset: 1,
            line: 1,
            tail: "0a".into(),
            head: Head::default(),
            ended: None,
            born: None,
            seen,
            loaded_ns: None,
        }
    }

    /// A batch tried twice is journaled twice, ending at the same line: the
    /// lines named for the second are those of the batch, not "up to" its
    /// end.
    #[test]
    fn a_batch_that_cannot_be_settled_is_named_by_its_own_lines() {
        let dir = std::env::temp_dir().join(format!("pgsense-unknowable-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let mut state = StateFile::open(&dir.join("state")).expect("open");
        let at = |line| Mark {
            path: "/in.ndjson".into(),
            line,
            ..mark(1)
        };
        state.contents.files.insert("1:2".into(), at(1500));
        let entry = |txid| Entry {
            txid: Some(txid),
            timeline: None,
            stats_reset: None,
            trace: None,
            key: Some("1:2".into()),
            mark: Some(at(2000)),
            rejects: None,
            acknowledged: false,
        };
        state.unsettled = vec![entry(100), entry(101)];
        let err = state
            .recover(|txn, _, _| {
                Ok(match txn.id {
                    100 => TxStatus::Aborted,
                    _ => TxStatus::Unknowable("why".into()),
                })
            })
            .expect_err("101 cannot be settled");
        let text = format!("{err:#}");
        assert!(
            text.contains("lines 1501-2000 of /in.ndjson (transaction 101)"),
            "{text}"
        );
        drop(state);
        fs::remove_dir_all(&dir).expect("clean up");
    }

    /// A file removed, its inode given to a new one: the new file's mark
    /// leaves the old one's under its creation time, where its copies are
    /// still found; the same file's next mark replaces its own.
    #[test]
    fn the_mark_of_a_file_whose_inode_went_to_another_is_kept() {
        let dir = std::env::temp_dir().join(format!("pgsense-reused-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let mut state = StateFile::open(&dir.join("state")).expect("open");
        let at = |born, line| Entry {
            txid: None,
            timeline: None,
            stats_reset: None,
            trace: None,
            key: Some("1:2".into()),
            mark: Some(Mark {
                born: Some(born),
                line,
                ..mark(1)
            }),
            rejects: None,
            acknowledged: false,
        };
        state.apply(&at(10, 100));
        state.apply(&at(20, 5));
        state.apply(&at(20, 7));
        let lines = |state: &StateFile, key: &str| state.contents.files.get(key).map(|m| m.line);
        assert_eq!(lines(&state, "1:2@10"), Some(100));
        assert_eq!(lines(&state, "1:2"), Some(7));
        assert_eq!(state.contents.files.len(), 2);
        // Truncated and read again from its start: the content loaded
        // before keeps its mark, under its offset.
        let mut truncated = at(20, 2);
        truncated.mark.as_mut().expect("a mark").offset = 0;
        let before = state.contents.files["1:2"].offset;
        state.apply(&truncated);
        assert_eq!(lines(&state, &format!("1:2@20+{before}")), Some(7));
        assert_eq!(lines(&state, "1:2"), Some(2));
        assert_eq!(state.contents.files.len(), 3);
        drop(state);
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn old_and_least_recently_seen_marks_are_forgotten() {
        let now = 1_000_000_000;
        let mut files: BTreeMap<String, Mark> = (0..1005)
            .map(|n| (format!("1:{n}"), mark(now - 1005 + n)))
            .collect();
        files.insert("2:0".into(), mark(now - FORGET_AFTER));
        forget_old(&mut files, now, &BTreeSet::new());
        assert_eq!(files.len(), MOST_MARKS);
        assert!(!files.contains_key("2:0"), "unseen for 90 days");
        for n in 0..5 {
            assert!(!files.contains_key(&format!("1:{n}")), "the oldest go");
        }
        assert!(files.contains_key("1:5") && files.contains_key("1:1004"));
    }

    #[test]
    fn the_marks_of_the_inputs_of_a_run_are_all_kept() {
        let now = 1_000_000_000;
        let mut files: BTreeMap<String, Mark> = (0..1500)
            .map(|n| (format!("1:{n}"), mark(now - 1500 + n)))
            .collect();
        files.insert("2:0".into(), mark(now - 2 * FORGET_AFTER));
        files.insert("2:1".into(), mark(now - 10_000));
        let mut inputs: BTreeSet<String> = (0..1200).map(|n| format!("1:{n}")).collect();
        inputs.insert("2:0".into());
        forget_old(&mut files, now, &inputs);
        assert_eq!(files.len(), 1201, "all the inputs' marks, and no more");
        assert!(inputs.iter().all(|key| files.contains_key(key)));
        assert!(!files.contains_key("2:1") && !files.contains_key("1:1200"));
    }
}
