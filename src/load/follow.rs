//! `load --follow`: the reader's loop over files that keep growing, as
//! `tail -F` follows them, until a signal stops it.
//!
//! Each followed name is looked at when the directory holding it changes
//! ([`Watch`]), and at least every second:
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

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::input::Cursor;
use super::reader::{Available, Reader};
use super::turns::PanicGuard;
use super::watch::Watch;

/// How long a file rotated away is read on after it stopped growing: the
/// scanner may write to it for a moment after the rename.
pub const ROTATED_GRACE: Duration = Duration::from_secs(5);
/// How often names are looked at without a notification.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Bytes before the point read that tell a file rewritten in place.
const CHECK_BYTES: usize = 32;
/// Buffer per open file.
const BUFFER: usize = 64 * 1024;

/// Follows `paths` until a signal stops the run, the database fails for
/// good or a batch cannot be settled.
pub fn run(mut reader: Reader, paths: &[PathBuf], flush_interval: Duration) -> Result<()> {
    let turns = reader.turns();
    let _guard = PanicGuard(&turns);
    let followed = follow(&mut reader, paths, flush_interval);
    if followed.is_err() {
        // What was read before the failure still goes in.
        reader.flush();
    }
    followed
}

fn follow(reader: &mut Reader, paths: &[PathBuf], flush_interval: Duration) -> Result<()> {
    let mut watch = Watch::new(paths);
    let mut names: Vec<Name> = paths.iter().map(|p| Name::new(p.clone())).collect();
    for name in &mut names {
        name.find_unfinished(reader)?;
    }
    let mut held_since: Option<Instant> = None;
    let mut looked_at: Option<Instant> = None;
    loop {
        if looked_at.is_none_or(|at| at.elapsed() >= LOOK_EVERY) {
            for index in 0..names.len() {
                let open: Vec<(u64, u64)> = names.iter().flat_map(Name::ids).collect();
                names[index].look(reader, &open)?;
            }
            looked_at = Some(Instant::now());
        }
        for name in &mut names {
            if !name.read(reader)? {
                return Ok(());
            }
            name.let_go_of_finished(reader);
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
        let timeout = held_since.map_or(LOOK_EVERY, |since| {
            flush_interval.saturating_sub(since.elapsed())
        });
        // A signal is noticed within this.
        if watch.wait(timeout.min(Duration::from_millis(200))) {
            looked_at = None;
        }
    }
}

/// A followed name, and the files it stood for that are not finished.
struct Name {
    path: PathBuf,
    current: Option<Open>,
    /// Files rotated away (oldest first), read before the current one.
    rotated: Vec<Rotated>,
}

/// An open file being read.
struct Open {
    reader: BufReader<File>,
    cursor: Cursor,
    /// Device and inode.
    id: (u64, u64),
    /// A point read, and the bytes just before it then.
    before: (u64, Vec<u8>),
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
    fn new(path: PathBuf) -> Name {
        Name {
            path,
            current: None,
            rotated: Vec::new(),
        }
    }

    /// Rotated files of this name that the state file tracks and a killed
    /// run did not finish (`findings.jsonl.1` after a restart): read first.
    fn find_unfinished(&mut self, reader: &Reader) -> Result<()> {
        let (Some(dir), Some(base)) = (self.path.parent(), self.path.file_name()) else {
            return Ok(());
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let sibling = name.as_encoded_bytes();
            if sibling.len() > base.len() && sibling.starts_with(base.as_encoded_bytes()) {
                let path = entry.path();
                if let Ok(meta) = std::fs::metadata(&path)
                    && meta.is_file()
                    && reader.ledger().unfinished(&meta)
                {
                    found.push((meta.mtime(), path));
                }
            }
        }
        found.sort();
        for (_, path) in found {
            log::info!(
                "{}: rotated from {} and not loaded to its end: loading the rest first",
                path.display(),
                self.path.display()
            );
            self.rotated.push(Rotated::new(open(reader, &path)?));
        }
        Ok(())
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
                self.rotate();
                return Ok(());
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot look at {}", self.path.display()));
            }
        };
        let id = (meta.dev(), meta.ino());
        match &self.current {
            Some(current) if current.id == id => {
                if current.rewritten(meta.len()) {
                    log::warn!(
                        "{}: truncated or rewritten in place: loading it again from its start",
                        self.path.display()
                    );
                    let old = self.current.take().map(|open| open.cursor.index);
                    if let Some(index) = old {
                        reader.after_settled(|ledger| ledger.release_input(index));
                    }
                    self.current = Some(open(reader, &self.path)?);
                }
            }
            _ if !meta.is_file() => {
                anyhow::bail!(
                    "{}: not a regular file: cannot follow it",
                    self.path.display()
                )
            }
            _ => {
                self.rotate();
                if open_ids.contains(&id) {
                    log::debug!("{}: read under another name", self.path.display());
                } else {
                    self.current = Some(open(reader, &self.path)?);
                }
            }
        }
        if let Some(current) = &mut self.current {
            current.remember_before();
        }
        Ok(())
    }

    /// The current file was rotated away (renamed or deleted): read on.
    fn rotate(&mut self) {
        if let Some(file) = self.current.take() {
            self.rotated.push(Rotated::new(file));
        }
    }

    /// Reads what is new, rotated files first. False when reading stops.
    fn read(&mut self, reader: &mut Reader) -> Result<bool> {
        for rotated in &mut self.rotated {
            let len = rotated.file.len();
            if len != rotated.len {
                rotated.len = len;
                rotated.grew_at = Instant::now();
            }
            // A last line left without its end by a writer gone for good.
            let finished = rotated.grew_at.elapsed() >= ROTATED_GRACE;
            if let Available::Stop = rotated.file.read(reader, finished)? {
                return Ok(false);
            }
        }
        if let Some(current) = &mut self.current
            && let Available::Stop = current.read(reader, false)?
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Lets go of the rotated files read to their end that stopped growing,
    /// once their batches are settled.
    fn let_go_of_finished(&mut self, reader: &mut Reader) {
        let (done, kept): (Vec<Rotated>, Vec<Rotated>) = std::mem::take(&mut self.rotated)
            .into_iter()
            .partition(|r| r.grew_at.elapsed() >= ROTATED_GRACE && r.file.at_end());
        self.rotated = kept;
        for rotated in done {
            let index = rotated.file.cursor.index;
            reader.after_settled(|ledger| ledger.release_input(index));
            log::debug!("{}: finished", reader.ledger().name(index));
        }
    }
}

/// Opens `path` as a new input, positioned where the state file says.
fn open(reader: &Reader, path: &Path) -> Result<Open> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file.metadata()?;
    let name = path.display().to_string();
    let (index, mark) = reader.ledger().add_input(name, path, &mut file)?;
    let cursor = Cursor {
        index,
        offset: mark.offset,
        line: mark.line,
        may_wait: false,
        tracked: true,
    };
    let mut open = Open {
        reader: BufReader::with_capacity(BUFFER, file),
        cursor,
        id: (meta.dev(), meta.ino()),
        before: (0, Vec::new()),
    };
    open.remember_before();
    Ok(open)
}

impl Open {
    fn read(&mut self, reader: &mut Reader, finished: bool) -> Result<Available> {
        reader.read_available(&mut self.reader, &mut self.cursor, finished)
    }

    fn len(&self) -> u64 {
        self.reader
            .get_ref()
            .metadata()
            .map_or(0, |meta| meta.len())
    }

    /// Whether everything in the file was read.
    fn at_end(&self) -> bool {
        self.len() <= self.cursor.offset
    }

    /// The bytes just before `offset`, as the file holds them now.
    fn bytes_before(&self, offset: u64) -> Vec<u8> {
        let start = offset.saturating_sub(CHECK_BYTES as u64);
        let mut bytes = vec![0; (offset - start) as usize];
        match self.reader.get_ref().read_exact_at(&mut bytes, start) {
            Ok(()) => bytes,
            Err(_) => Vec::new(),
        }
    }

    fn remember_before(&mut self) {
        let offset = self.cursor.offset;
        self.before = (offset, self.bytes_before(offset));
    }

    /// Whether the file, now `len` bytes long, no longer holds what was
    /// read: it shrank, or what preceded a point read has changed.
    fn rewritten(&self, len: u64) -> bool {
        let (offset, before) = &self.before;
        len < self.cursor.offset || self.bytes_before(*offset) != *before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn opened(path: &Path, offset: u64) -> Open {
        let file = File::open(path).unwrap();
        let mut open = Open {
            reader: BufReader::new(file),
            cursor: Cursor {
                index: 0,
                offset,
                line: 1,
                may_wait: false,
                tracked: true,
            },
            id: (0, 0),
            before: (0, Vec::new()),
        };
        open.remember_before();
        open
    }

    #[test]
    fn growth_is_not_a_rewrite_but_truncation_and_copying_over_are() {
        let dir = std::env::temp_dir().join(format!("pgsense-pg-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("findings.jsonl");
        std::fs::write(&path, "{\"lsn\":1}\n").unwrap();
        let open = opened(&path, 10);
        let mut appender = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        appender.write_all(b"{\"lsn\":2}\n").unwrap();
        assert!(!open.rewritten(20), "appended to");
        // Copied and truncated, then written again past the point read.
        std::fs::write(&path, "{\"lsn\":3}\n{\"lsn\":4}\n").unwrap();
        assert!(open.rewritten(20), "rewritten in place");
        std::fs::write(&path, "").unwrap();
        assert!(open.rewritten(0), "truncated");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
