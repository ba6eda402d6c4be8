//! `load --follow`: the reader's loop over files that keep growing, as
//! `tail -F` follows them, until a signal stops it.
//!
//! Each followed name is looked at before each read, which happens when the
//! directory holding it changes ([`Watch`]), and at least twice a second:
//! - a new file under the name (rotation by rename and create) is read from
//!   where the state file says; the file it replaces is read on, before it,
//!   until it has not grown for [`ROTATED_GRACE`], and is then let go of;
//! - a file that shrank or changed before the point read (copy and
//!   truncate) is read again from its start, as a new input;
//! - a name that does not exist (yet) is waited for.
//!
//! Lines are handed to the writers in full batches, or once the first line
//! held has waited for the flush interval. Every file gets an input index of
//! its own, so that the journal and the state file know each by its key.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::guarded::Guarded;
use super::input::Cursor;
use super::reader::{Available, READ_BUFFER, Reader};
use super::turns::PanicGuard;
use super::watch::Watch;
use crate::state::{Known, Positioned, Seen, rotation_suffix};

/// How long a file rotated away is read on after it stopped growing: the
/// scanner may write to it for a moment after the rename.
pub const ROTATED_GRACE: Duration = Duration::from_secs(5);
/// The longest wait for a change: names are looked at, and a signal is
/// noticed, at least this often.
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// How far before a listing of the files beside a followed one the next
/// looks for files written since.
const MTIME_SLACK: Duration = Duration::from_secs(1);
/// How many times the files beside a followed one are listed again, at
/// most, while new ones keep coming.
const RELISTS: usize = 5;
/// Bytes before the point read that tell a file rewritten in place.
const CHECK_BYTES: usize = 32;

/// Follows `paths` until a signal stops the run, the database fails for
/// good or a batch cannot be settled; `own` are the files the run writes,
/// never inputs.
pub fn run(
    mut reader: Reader,
    paths: &[PathBuf],
    at_start: &[Option<(u64, u64)>],
    own: &[PathBuf],
    flush_interval: Duration,
) -> Result<()> {
    let turns = reader.turns();
    let _guard = PanicGuard(&turns);
    // Rotated files waiting to be loaded are held open together.
    super::input::allow_open_files();
    let followed = follow(&mut reader, paths, at_start, own, flush_interval);
    if followed.is_err() {
        // What was read before the failure still goes in.
        reader.flush();
    }
    followed
}

fn follow(
    reader: &mut Reader,
    paths: &[PathBuf],
    at_start: &[Option<(u64, u64)>],
    own: &[PathBuf],
    flush_interval: Duration,
) -> Result<()> {
    let mut watch = Watch::new(paths);
    let mut names: Vec<Name> = paths
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let first = at_start.get(index).copied().flatten();
            Name::new(path.clone(), first, own)
        })
        .collect();
    for index in 0..names.len() {
        let open: Vec<(u64, u64)> = names.iter().flat_map(Name::ids).collect();
        names[index].start(reader, &open)?;
    }
    let mut held_since: Option<Instant> = None;
    loop {
        // Right before reading: a file truncated and written again past
        // the point read must not be read on from there.
        for index in 0..names.len() {
            let open: Vec<(u64, u64)> = names.iter().flat_map(Name::ids).collect();
            names[index].look(reader, &open)?;
        }
        let mut more = false;
        for name in &mut names {
            match name.read(reader)? {
                None => return Ok(()),
                Some(again) => more |= again,
            }
            name.let_go_of_finished(reader);
        }
        for index in 0..names.len() {
            let open: Vec<(u64, u64)> = names.iter().flat_map(Name::ids).collect();
            names[index].rescan(reader, &open)?;
        }
        if reader.control().stopping() || reader.ledger().stalled() {
            reader.stop();
            return Ok(());
        }
        if reader.holds_rows() {
            let since = *held_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= flush_interval {
                if !reader.flush() {
                    return Ok(());
                }
                held_since = None;
            }
        } else {
            held_since = None;
        }
        let timeout = held_since.map_or(IDLE_WAIT, |since| {
            flush_interval.saturating_sub(since.elapsed())
        });
        if !more {
            watch.wait(timeout.min(IDLE_WAIT));
        }
    }
}

/// A followed name, and the files it stood for that are not finished.
struct Name {
    path: PathBuf,
    current: Option<Open>,
    /// Files rotated away (oldest first), read before the current one.
    rotated: Vec<Rotated>,
    /// When the files beside it were last looked at, or the file under it
    /// opened.
    since: Option<SystemTime>,
    /// A rotation was seen: files beside it written since then are looked
    /// at once the rotated files are finished.
    rescan: Option<SystemTime>,
    /// The device and inode of the file under the name when the run
    /// started: renamed away before it was opened (while the run waited for
    /// the database), it is read all the same.
    at_start: Option<(u64, u64)>,
    /// The run's own files (state file, reject file, metrics file...).
    own: Vec<PathBuf>,
    /// Files that could not be opened, said once.
    unreadable: BTreeSet<PathBuf>,
}

/// An open file being read.
struct Open {
    reader: BufReader<Box<dyn Read + Send>>,
    /// A plain file: a handle on it that shares the reader's position. None
    /// for a compressed one, read once to its end.
    file: Option<File>,
    /// A compressed file was read to its end (or to damage).
    exhausted: bool,
    cursor: Cursor,
    /// Device and inode.
    id: (u64, u64),
    /// A point read, and the bytes just before it then.
    before: (u64, Vec<u8>),
    /// The file's first bytes, as read (up to [`CHECK_BYTES`]).
    first: Vec<u8>,
    /// Set when a read found the file's start changed ([`Guarded`]).
    changed: Arc<AtomicBool>,
    /// When the name was last looked at: the point read then, and the
    /// file's modification time.
    looked: Option<(u64, Option<SystemTime>)>,
}

struct Rotated {
    file: Open,
    /// Its length when last looked at.
    len: u64,
    /// When it was rotated away or last grew.
    grew_at: Instant,
}

impl Rotated {
    fn new(file: Open) -> Rotated {
        Rotated {
            len: file.len(),
            file,
            grew_at: Instant::now(),
        }
    }
}

impl Name {
    fn new(path: PathBuf, at_start: Option<(u64, u64)>, own: &[PathBuf]) -> Name {
        Name {
            path,
            at_start,
            current: None,
            rotated: Vec::new(),
            since: None,
            rescan: None,
            own: own.to_vec(),
            unreadable: BTreeSet::new(),
        }
    }

    /// At startup: [`Name::catch_up`], unless the file under the name is
    /// open already, under a name given before it (the same FILE twice, by
    /// another path or through a link): it is read once, under that one.
    fn start(&mut self, reader: &Reader, open_ids: &[(u64, u64)]) -> Result<()> {
        if let Ok(meta) = std::fs::metadata(&self.path)
            && open_ids.contains(&(meta.dev(), meta.ino()))
        {
            log::warn!(
                "{} is read already, under a FILE named before it or as its rotated file: reading it once",
                self.path.display()
            );
            return Ok(());
        }
        self.catch_up(reader, open_ids)
    }

    /// Opens the file under the name, after the files beside it that hold
    /// lines of it not loaded yet, read first ([`Name::siblings`]).
    fn catch_up(&mut self, reader: &Reader, open_ids: &[(u64, u64)]) -> Result<()> {
        // At startup, files written after a file was last loaded under
        // the name.
        let since = self
            .since
            .or_else(|| reader.ledger().knows(&self.path, &self.path).1);
        let listed_at = SystemTime::now();
        let mut paths = self.siblings(reader, open_ids, since);
        for path in &paths {
            log::info!(
                "{}: holds lines of {} not loaded yet: loading them first",
                path.display(),
                self.path.display()
            );
        }
        paths.push(self.path.clone());
        let mut opened = open_all(reader, paths, open_ids, &mut self.unreadable)?;
        self.current = opened.pop().flatten();
        self.rotated
            .extend(opened.into_iter().flatten().map(Rotated::new));
        self.settle_listing(reader, open_ids, since)?;
        // Before the listing, and then some: a file's time is the coarse
        // clock's, a few milliseconds behind.
        self.since = Some(listed_at - MTIME_SLACK);
        Ok(())
    }

    /// Lists the files beside this one again until none is found that is
    /// not open yet: rotations renamed while they were listed (one after
    /// the other, back to back) are taken under their new names.
    fn settle_listing(
        &mut self,
        reader: &Reader,
        open_ids: &[(u64, u64)],
        since: Option<SystemTime>,
    ) -> Result<()> {
        for _ in 0..RELISTS {
            let open: Vec<(u64, u64)> = open_ids.iter().copied().chain(self.ids()).collect();
            let paths = self.siblings(reader, &open, since);
            if paths.is_empty() {
                break;
            }
            for path in &paths {
                log::info!(
                    "{}: rotated from {} while it was looked at: loading it",
                    path.display(),
                    self.path.display()
                );
            }
            let opened = open_all(reader, paths, &open, &mut self.unreadable)?;
            self.rotated
                .extend(opened.into_iter().flatten().map(Rotated::new));
        }
        Ok(())
    }

    /// Rotated files that were never read, once the files rotated away are
    /// finished (their compressed copies are then known as loaded).
    fn rescan(&mut self, reader: &mut Reader, open_ids: &[(u64, u64)]) -> Result<()> {
        if !self.rotated.is_empty() {
            return Ok(());
        }
        let Some(since) = self.rescan.take() else {
            return Ok(());
        };
        // A copy of lines read and not settled yet is known as loaded only
        // once they are: what is found is looked at again then.
        if !self.siblings(reader, open_ids, Some(since)).is_empty()
            && reader.after_settled(|_| ()).is_none()
        {
            return Ok(());
        }
        let paths = self.siblings(reader, open_ids, Some(since));
        // The file read on as the one under the name may have been renamed
        // away (and compressed) since the name was looked at, the reader
        // held back by the database meanwhile: its copy would be loaded
        // from where it is settled up to while it is read on. The next look
        // rotates it, and this one waits until it is finished. Asked after
        // the listing: a copy listed was made after the rename, seen here.
        if !self.current_under_name() {
            self.rescan = Some(since);
            return Ok(());
        }
        for path in &paths {
            log::info!(
                "{}: rotated from {} while it was not looked at: loading it",
                path.display(),
                self.path.display()
            );
        }
        let opened = open_all(reader, paths, open_ids, &mut self.unreadable)?;
        self.rotated
            .extend(opened.into_iter().flatten().map(Rotated::new));
        self.settle_listing(reader, open_ids, Some(since))
    }

    /// Whether the file read as the one under the name still is (true when
    /// none is read).
    fn current_under_name(&self) -> bool {
        let Some(current) = &self.current else {
            return true;
        };
        std::fs::metadata(&self.path).is_ok_and(|meta| (meta.dev(), meta.ino()) == current.id)
    }

    /// The regular files beside this one named as its rotations
    /// ([`rotation_suffix`]), but the run's own, with what the state file
    /// knows of each.
    fn rotation_files(&self, reader: &Reader) -> Vec<(std::fs::Metadata, Known, PathBuf)> {
        let mut rotated = Vec::new();
        for path in self.rotation_paths() {
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.is_file()
                && !self
                    .own
                    .iter()
                    .any(|own| crate::paths::same_file(own, &path))
            {
                let known = reader.ledger().knows(&path, &self.path).0;
                rotated.push((meta, known, path));
            }
        }
        rotated
    }

    /// The paths beside this one named as its rotations.
    fn rotation_paths(&self) -> Vec<PathBuf> {
        let (Some(dir), Some(base)) = (self.path.parent(), self.path.file_name()) else {
            return Vec::new();
        };
        let here = dir.as_os_str().is_empty();
        let Ok(entries) = std::fs::read_dir(if here { Path::new(".") } else { dir }) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| {
                entry
                    .file_name()
                    .as_encoded_bytes()
                    .strip_prefix(base.as_encoded_bytes())
                    .is_some_and(rotation_suffix)
            })
            // Named as the file is, without a `./` it was not given with.
            .map(|entry| match here {
                true => PathBuf::from(entry.file_name()),
                false => entry.path(),
            })
            .collect()
    }

    /// Files beside this one named as its rotations ([`rotation_suffix`])
    /// that hold lines not loaded yet, oldest first: a rotated file a killed
    /// run did not finish (`findings.jsonl.1` after a restart), the copy of
    /// a file truncated since it was read (copytruncate), the file under
    /// the name when the run started, or a file never read that was written
    /// to after `since` or after the oldest rotated file known to be loaded
    /// (rotated while the loader was down, or while it waited for the
    /// database). Files in `open_ids` are read already; empty files hold
    /// nothing yet.
    fn siblings(
        &self,
        reader: &Reader,
        open_ids: &[(u64, u64)],
        since: Option<SystemTime>,
    ) -> Vec<PathBuf> {
        let rotated = self.rotation_files(reader);
        // Where the name is rotated by renaming, the oldest file beside it
        // known to be loaded: the rotations written after it, never read,
        // came and went while the loader did not look (the state file
        // keeps no time of the rotations themselves). Not where it is only
        // copied and truncated: there a copy that a killed run did not
        // record is not known once the file it was copied from has been
        // loaded again, and is no rotation missed.
        let current = std::fs::metadata(&self.path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        let renamed = reader.ledger().renamed_under(&self.path, current);
        let first_known = rotated
            .iter()
            .filter(|(_, known, _)| renamed && *known != Known::Unknown)
            .map(|(meta, ..)| meta.modified().unwrap_or(UNIX_EPOCH))
            .min();
        let mut found: Vec<_> = rotated
            .into_iter()
            .filter(|(meta, known, _)| {
                let written = meta.modified().unwrap_or(UNIX_EPOCH);
                // An empty file holds nothing yet, and is no rotation: one
                // being compressed into may be opened before its first
                // bytes say it is compressed.
                !open_ids.contains(&(meta.dev(), meta.ino()))
                    && meta.len() > 0
                    && match known {
                        Known::Partly => true,
                        Known::Unknown => {
                            self.at_start == Some((meta.dev(), meta.ino()))
                                || [since, first_known]
                                    .into_iter()
                                    .flatten()
                                    .any(|after| written > after)
                        }
                        Known::Loaded => false,
                    }
            })
            .map(|(meta, _, path)| (meta.mtime(), meta.mtime_nsec(), path))
            .collect();
        found.sort();
        found.into_iter().map(|(.., path)| path).collect()
    }

    /// The files open for this name.
    fn ids(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let rotated = self.rotated.iter().map(|r| r.file.id);
        self.current.iter().map(|c| c.id).chain(rotated)
    }

    /// Looks at what the name stands for now; a file in `open` is read
    /// under another name already (a name given twice, or the name a file
    /// was rotated to), and is not opened again.
    fn look(&mut self, reader: &mut Reader, open_ids: &[(u64, u64)]) -> Result<()> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.rotate_named(reader);
                return Ok(());
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot look at {}", self.path.display()));
            }
        };
        let id = (meta.dev(), meta.ino());
        match &self.current {
            Some(current) if current.id == id => {
                if current.rewritten(meta.len()) || current.truncated_unread(&meta) {
                    log::info!(
                        "{}: truncated or rewritten in place (copytruncate?): reading it again \
                         from its start",
                        self.path.display()
                    );
                    let old = self.current.take().map(|open| open.cursor.index);
                    if let Some(index) = old {
                        reader.after_settled(|ledger| ledger.release_input(index));
                    }
                    // Not open any more: by now it may have been renamed
                    // beside the name, where its new lines are found.
                    let open_ids: Vec<_> = open_ids.iter().copied().filter(|&o| o != id).collect();
                    self.catch_up(reader, &open_ids)?;
                }
            }
            _ if !meta.is_file() => {
                anyhow::bail!(
                    "{}: not a regular file: cannot follow it",
                    self.path.display()
                )
            }
            _ => {
                self.rotate_named(reader);
                if open_ids.contains(&id) {
                    log::debug!("{}: read under another name", self.path.display());
                } else {
                    self.current = open_all(
                        reader,
                        vec![self.path.clone()],
                        open_ids,
                        &mut self.unreadable,
                    )?
                    .pop()
                    .flatten();
                    self.since = self.since.or(Some(SystemTime::now()));
                }
            }
        }
        if let Some(current) = &mut self.current {
            current.remember_before();
            if current.id == id {
                current.looked = Some((current.cursor.offset, meta.modified().ok()));
            }
        }
        Ok(())
    }

    /// The current file was rotated away (renamed or deleted): read on,
    /// under the name it was given beside this one, if any, in what is
    /// said of its lines from now on.
    /// The files rotated away before, still read, are named anew too: a
    /// second rotation renames `findings.jsonl.1` to `findings.jsonl.2`.
    fn rotate_named(&mut self, reader: &Reader) {
        if self.current.is_some() {
            let beside: Vec<_> = self
                .rotation_paths()
                .into_iter()
                .filter_map(|path| {
                    let meta = std::fs::metadata(&path).ok()?;
                    Some(((meta.dev(), meta.ino()), path))
                })
                .collect();
            let open = self
                .current
                .iter()
                .chain(self.rotated.iter().map(|r| &r.file));
            for file in open {
                let Some((_, path)) = beside.iter().find(|(id, _)| *id == file.id) else {
                    continue;
                };
                // As FILE was named: relative, or not.
                let name = match path.file_name() {
                    Some(base) => self.path.with_file_name(base),
                    None => path.clone(),
                };
                log::debug!("{}: now {}", self.path.display(), name.display());
                reader
                    .ledger()
                    .rename(file.cursor.index, name.display().to_string());
            }
        }
        self.rotate();
    }

    /// The current file was rotated away (renamed or deleted): read on.
    fn rotate(&mut self) {
        if let Some(file) = self.current.take() {
            self.rotated.push(Rotated::new(file));
            self.rescan = self.rescan.or(self.since);
            self.since = Some(SystemTime::now());
        }
    }

    /// Reads what is new, rotated files first, up to a batch handed over.
    /// None when reading stops; whether more may be there.
    fn read(&mut self, reader: &mut Reader) -> Result<Option<bool>> {
        let mut more = false;
        for rotated in &mut self.rotated {
            let len = rotated.file.len();
            if len != rotated.len {
                rotated.len = len;
                rotated.grew_at = Instant::now();
            }
            // A last line left without its end by a writer gone for good.
            let finished = rotated.grew_at.elapsed() >= ROTATED_GRACE;
            match rotated.file.read(reader, finished)? {
                Available::Stop => return Ok(None),
                // Older lines first: the newer files wait.
                Available::More => return Ok(Some(true)),
                Available::Idle => {}
            }
        }
        if let Some(current) = &mut self.current {
            match current.read(reader, false)? {
                Available::Stop => return Ok(None),
                Available::More => more = true,
                Available::Idle => {}
            }
        }
        Ok(Some(more))
    }

    /// Lets go of the rotated files read to their end that stopped growing,
    /// once their batches are settled.
    fn let_go_of_finished(&mut self, reader: &mut Reader) {
        let (done, kept): (Vec<Rotated>, Vec<Rotated>) = std::mem::take(&mut self.rotated)
            .into_iter()
            .partition(|r| {
                (r.grew_at.elapsed() >= ROTATED_GRACE && r.file.at_end()) || r.file.changed()
            });
        self.rotated = kept;
        for rotated in done {
            let index = rotated.file.cursor.index;
            if rotated.file.changed() {
                log::warn!(
                    "{}: rewritten in place after it was rotated away: what it holds now \
                     is not loaded",
                    reader.ledger().name(index)
                );
            }
            reader.after_settled(|ledger| ledger.release_input(index));
            log::debug!("{}: finished", reader.ledger().name(index));
        }
    }
}

/// Opens `paths` (each that exists) as new inputs, positioned where the
/// state file says, told apart from copies of each other; None for one with
/// nothing to read in it.
/// One that cannot be opened (logrotate created it for another user) is
/// said once, in `unreadable`, and looked at again later. A name may stand
/// for another file by the time it is opened (rotations renamed it): a file
/// open already (`open_ids`), or opened under another of `paths`, is
/// skipped.
fn open_all(
    reader: &Reader,
    paths: Vec<PathBuf>,
    open_ids: &[(u64, u64)],
    unreadable: &mut BTreeSet<PathBuf>,
) -> Result<Vec<Option<Open>>> {
    let mut files = Vec::new();
    let mut ids = Vec::new();
    let mut present = Vec::new();
    for path in paths {
        match File::open(&path) {
            Ok(file) => {
                let meta = file.metadata()?;
                let id = (meta.dev(), meta.ino());
                if open_ids.contains(&id) || ids.contains(&id) {
                    log::debug!("{}: open already, under another name", path.display());
                    present.push(false);
                    continue;
                }
                ids.push(id);
                files.push((path, file));
                present.push(true);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => present.push(false),
            Err(err) => {
                if unreadable.insert(path.clone()) {
                    log::warn!(
                        "cannot open {}: {err}; trying again until it can be read",
                        path.display()
                    );
                }
                present.push(false);
            }
        }
    }
    let mut added = reader.ledger().add_inputs(files)?.into_iter().zip(ids);
    let mut opened = Vec::new();
    for present in present {
        let open = match present.then(|| added.next()).flatten() {
            Some((Some(input), id)) => Some(Open::new(input, id)?),
            _ => None,
        };
        opened.push(open);
    }
    Ok(opened)
}

impl Open {
    fn new(
        (index, mark, input): (usize, crate::state::Mark, Positioned),
        id: (u64, u64),
    ) -> Result<Open> {
        let changed = Arc::new(AtomicBool::new(false));
        let (input, file): (Box<dyn Read + Send>, _) = match input {
            Positioned::File(file) => {
                let handle = file.try_clone().context("cannot duplicate a file handle")?;
                let guarded = Guarded::new(file, Arc::clone(&changed))
                    .context("cannot read the start of a followed file")?;
                (Box::new(guarded), Some(handle))
            }
            Positioned::Content(content) => (content, None),
        };
        let cursor = Cursor {
            index,
            offset: mark.offset,
            line: mark.line,
            may_wait: false,
            compressed: file.is_none(),
            tracked: true,
            seen: Seen::starting_at(mark.offset, mark.head),
            positioned: false,
        };
        log::debug!(
            "reading inode {} from byte {} (line {}) as input {index}",
            id.1,
            cursor.offset,
            cursor.line
        );
        let mut open = Open {
            reader: BufReader::with_capacity(READ_BUFFER, input),
            file,
            exhausted: false,
            cursor,
            id,
            before: (0, Vec::new()),
            first: Vec::new(),
            changed,
            looked: None,
        };
        open.remember_before();
        Ok(open)
    }

    /// Reads what is new; a file `finished` growing has a last line
    /// without its end.
    fn read(&mut self, reader: &mut Reader, finished: bool) -> Result<Available> {
        if self.exhausted {
            return Ok(Available::Idle);
        }
        let rewind = self.file.as_ref().filter(|_| !finished);
        match reader.read_available(&mut self.reader, &mut self.cursor, rewind) {
            // Damage in a compressed file: the lines before it load.
            Err(err) if self.file.is_none() => {
                log::error!("{err:#}");
                self.exhausted = true;
                Ok(Available::Idle)
            }
            Ok(Available::Idle) if self.file.is_none() => {
                self.exhausted = true;
                Ok(Available::Idle)
            }
            read => read,
        }
    }

    fn len(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|file| file.metadata().ok())
            .map_or(0, |meta| meta.len())
    }

    /// Whether a read found the file's start changed.
    fn changed(&self) -> bool {
        self.changed.load(Ordering::SeqCst)
    }

    /// Whether everything in the file was read.
    fn at_end(&self) -> bool {
        match self.file {
            Some(_) => self.len() <= self.cursor.offset,
            None => self.exhausted,
        }
    }

    /// The bytes just before `offset`, as the file holds them now.
    fn bytes_before(&self, offset: u64) -> Vec<u8> {
        let Some(file) = &self.file else {
            return Vec::new();
        };
        let start = offset.saturating_sub(CHECK_BYTES as u64);
        let mut bytes = vec![0; (offset - start) as usize];
        match file.read_exact_at(&mut bytes, start) {
            Ok(()) => bytes,
            Err(_) => Vec::new(),
        }
    }

    fn remember_before(&mut self) {
        let offset = self.cursor.offset;
        self.before = (offset, self.bytes_before(offset));
        if (self.first.len() as u64) < offset.min(CHECK_BYTES as u64) {
            self.first = self.bytes_before(offset.min(CHECK_BYTES as u64));
        }
    }

    /// Whether the file (`meta` now) was written to since it was last
    /// looked at, yet holds nothing past the point read then: what was
    /// written was truncated away before it was read (copied and
    /// truncated, maybe again and again, while the point read was at its
    /// start), and its copies are to be looked for.
    fn truncated_unread(&self, meta: &std::fs::Metadata) -> bool {
        self.file.is_some()
            && self.looked.is_some_and(|(offset, modified)| {
                meta.len() <= offset && meta.modified().ok() != modified
            })
    }

    /// Whether the file, now `len` bytes long, no longer holds what was
    /// read: it shrank, or what preceded a point read has changed.
    fn rewritten(&self, len: u64) -> bool {
        if self.file.is_none() {
            return false;
        }
        let (offset, before) = &self.before;
        self.changed()
            || len < self.cursor.offset
            || self.bytes_before(*offset) != *before
            || self.bytes_before(self.first.len() as u64) != self.first
    }
}

#[cfg(test)]
mod tests;
