//! How an input file stands against the state file, and so where reading it
//! starts: at its own mark, at the mark of the file it is a copy of, or at
//! its start.
//!
//! A copy is recognised by its content: it starts with a mark's head and
//! has that mark's tail just before the mark's offset. That is what
//! logrotate leaves: with `copytruncate` a copy of the file being written,
//! with `compress` a `findings.jsonl.2.gz` whose content is
//! `findings.jsonl.1`'s. A copy resumes where its original was loaded up
//! to, so `load --state-file S findings.jsonl*` loads each line once
//! however the files were rotated. So does a file replaced under its name
//! by a copy with more lines (rsync, scp, cp then mv: a new inode), unless
//! the file it replaced is read too, renamed: that was a rotation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::content::{HEAD, Head, Positioned};
use super::{Content, Mark, Resume, StateFile, now, now_ns};

/// What the state file knows of a file (see [`StateFile::knows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Neither tracked nor a copy of a tracked file: a load reads it from
    /// its start.
    Unknown,
    /// Everything in it is loaded.
    Loaded,
    /// A tracked file, or a copy of one, with lines not loaded yet: a load
    /// reads it from where its mark says.
    Partly,
}

/// Where reading one input file starts.
pub enum Start {
    /// Read from `resume.mark`, where `input` is positioned.
    Read { resume: Resume, input: Positioned },
    /// Nothing to read in it (why was logged).
    Skip,
}

/// How a file stands against the marks.
enum Standing {
    /// Its own mark, which its content still matches.
    Tracked(Mark),
    /// A copy of the file whose key is `of`, loaded up to `mark`; under
    /// that file's name when `replaced`.
    Copy {
        of: String,
        mark: Mark,
        replaced: bool,
    },
    /// Its content starts as the file `of` does, but ends (or is damaged)
    /// before where that file was loaded up to: all of it is loaded, as far
    /// as it goes (a compressed copy still being written, say).
    Within { of: String },
    /// Read from the start; the warning saying why, when it was tracked.
    New(Option<String>),
}

/// An input file being resumed.
struct Input {
    path: PathBuf,
    name: String,
    key: String,
    content: Content,
    standing: Standing,
}

impl StateFile {
    /// Bytes of the files at `paths` beyond what this state file says is
    /// loaded of them, before any is read: what --follow counts as not
    /// loaded while the database is not reachable yet. A file it does not
    /// know, or no longer as it was, counts whole; a compressed one, one
    /// that cannot be read, and one named again count for nothing.
    pub fn unloaded_bytes(&self, paths: &[PathBuf]) -> u64 {
        let mut counted = BTreeSet::new();
        paths
            .iter()
            .filter_map(|path| {
                let meta = fs::metadata(path).ok().filter(|meta| meta.is_file())?;
                let key = format!("{}:{}", meta.dev(), meta.ino());
                if !counted.insert(key.clone()) {
                    return None;
                }
                let mut content = Content::new(Arc::new(File::open(path).ok()?)).ok()?;
                if content.format().is_compressed() {
                    return None;
                }
                let loaded = match self.contents.files.get(&key) {
                    Some(mark) if still(mark, &mut content).unwrap_or(false) => mark.offset,
                    _ => 0,
                };
                Some(meta.len().saturating_sub(loaded))
            })
            .sum()
    }

    /// --follow, at startup: each FILE there under a name nothing was
    /// loaded under yet, and not a copy of a file loaded, is recorded as
    /// loaded up to its start, as of now, and the state file is written
    /// (its journal is left for the settling of a killed run). So a run
    /// stopped or killed before it recorded anything (the database
    /// unreachable) leaves its next run knowing the file: renamed away or
    /// copied and truncated meanwhile, its lines are still loaded, as those
    /// of a file loaded before are.
    pub fn note_followed(&mut self, paths: &[PathBuf]) -> Result<()> {
        let mut noted = false;
        for path in paths {
            // Not opened unless a regular file: opening a named pipe waits.
            if !fs::metadata(path).is_ok_and(|meta| meta.is_file()) {
                continue;
            }
            let Ok(file) = File::open(path) else {
                continue;
            };
            let meta = file.metadata()?;
            let key = format!("{}:{}", meta.dev(), meta.ino());
            self.inputs.insert(key.clone());
            let name = name_of(path);
            if self.contents.files.contains_key(&key)
                || self.contents.files.values().any(|mark| mark.path == name)
            {
                continue;
            }
            // A copy is resumed where its original was loaded up to. A file
            // that cannot be read now is said so when it is read.
            let standing = Content::new(Arc::new(file)).and_then(|mut content| {
                let standing = self.standing(&key, &name, &mut content)?;
                Ok((standing, content))
            });
            let content = match standing {
                Ok((Standing::New(_), content)) => content,
                Ok(_) => continue,
                Err(err) => {
                    log::debug!("{}: not noted as followed: {err:#}", path.display());
                    continue;
                }
            };
            log::debug!("{}: followed from its start, as of now", path.display());
            let mark = Mark {
                path: name,
                offset: 0,
                line: 0,
                tail: String::new(),
                head: Head::default(),
                ended: None,
                born: content.born(),
                seen: now(),
                loaded_ns: Some(now_ns()),
            };
            self.contents.files.insert(key, mark);
            noted = true;
        }
        if noted {
            self.write()?;
        }
        Ok(())
    }

    /// Where each input file starts, in order. Each is resumed at its own
    /// mark, or at the mark of the file it is a copy of (logged), or read
    /// from its start (with a warning when it was tracked but changed).
    /// A copy is skipped when its original, or another copy of it, is read
    /// in this run too: the same lines would be loaded twice.
    pub fn resume(&mut self, files: Vec<(PathBuf, File)>) -> Result<Vec<Start>> {
        let mut inputs = Vec::new();
        for (path, file) in files {
            let name = name_of(&path);
            let meta = file.metadata()?;
            let key = format!("{}:{}", meta.dev(), meta.ino());
            self.inputs.insert(key.clone());
            let mut content = Content::new(Arc::new(file))
                .with_context(|| format!("cannot read {}", path.display()))?;
            let standing = self
                .standing(&key, &name, &mut content)
                .with_context(|| format!("{}", path.display()))?;
            inputs.push(Input {
                path,
                name,
                key,
                content,
                standing,
            });
        }
        let read_whole: BTreeSet<String> = inputs
            .iter()
            .filter(|i| matches!(i.standing, Standing::Tracked(_)))
            .map(|i| i.key.clone())
            .collect();
        let mut copied = BTreeSet::new();
        let mut starts = Vec::new();
        for mut input in inputs {
            // The file it took the name of is read too, under another name:
            // renamed by a rotation, and this is the new file, whatever its
            // first lines (findings can repeat).
            if let Standing::Copy {
                of, replaced: true, ..
            } = &input.standing
                && read_whole.contains(of)
            {
                input.standing = Standing::New(None);
            }
            let start = match &input.standing {
                Standing::Copy { of, .. }
                    if read_whole.contains(of) || !copied.insert(of.clone()) =>
                {
                    log::info!(
                        "{}: a copy of {}, which this run reads too: skipping it",
                        input.path.display(),
                        self.origin(of)
                    );
                    Start::Skip
                }
                _ => self
                    .start(input)
                    .context("cannot position an input where it was loaded up to")?,
            };
            starts.push(start);
        }
        Ok(starts)
    }

    /// Says that the file at `path`, named `name`, is read from where the
    /// file `of` it is a copy of was loaded up to (`mark`); under that
    /// file's name when `replaced`.
    fn say_copy(&self, path: &str, name: &str, of: &str, mark: &Mark, replaced: bool) {
        let (line, next) = (mark.line, mark.line + 1);
        if replaced {
            log::info!(
                "{path}: a new file since the last run, with the lines loaded from the file it \
                 replaced (rsync, scp, cp then mv?), up to line {line}: loading it from line \
                 {next}"
            );
            return;
        }
        let origin = self.origin(of);
        let copy = format!(
            "{path}: a copy of {origin} (rotated, compressed or copied), which was loaded up to \
             line {line}: loading it from line {next}"
        );
        // A rotation is expected; the same lines under a name of their own,
        // named on the command line, may be a surprise.
        if self.following || is_rotation_of(name, &origin) {
            log::info!("{copy}");
        } else {
            log::warn!("{copy}");
        }
    }

    /// Where `input` starts, as its standing says.
    fn start(&mut self, mut input: Input) -> Result<Start> {
        let path = input.path.display().to_string();
        let mark = match std::mem::replace(&mut input.standing, Standing::New(None)) {
            Standing::Tracked(old) => old,
            Standing::Copy { of, mark, replaced } => {
                self.say_copy(&path, &input.name, &of, &mark, replaced);
                // Its own birth, not its original's.
                Mark { born: None, ..mark }
            }
            Standing::Within { of } => {
                let origin = self.origin(&of);
                let damaged = input.content.damaged_by(u64::MAX)?;
                let why = if damaged {
                    "it is corrupt or truncated (still being written?)"
                } else {
                    "it ends before where that file was loaded up to"
                };
                log::warn!(
                    "{path}: starts as {origin} does, whose lines are loaded, but {why}: \
                     nothing read from it in this run"
                );
                return Ok(Start::Skip);
            }
            Standing::New(warning) => {
                // Following, rotations and truncations are expected.
                if let Some(warning) = warning {
                    match self.following {
                        true => log::info!("{path}: {warning}"),
                        false => log::warn!("{path}: {warning}"),
                    }
                } else if !self.following
                    && self.contents.files.values().any(|m| m.path == input.name)
                {
                    log::warn!(
                        "{path}: a new file since the last run (rotated?): loading it from the \
                         start; lines added to the old file after the last run are loaded too \
                         if the rotated file (such as {path}.1) is passed as well"
                    );
                }
                Mark {
                    path: input.name.clone(),
                    offset: 0,
                    line: 0,
                    tail: String::new(),
                    head: Head::default(),
                    ended: None,
                    born: None,
                    seen: now(),
                    loaded_ns: None,
                }
            }
        };
        self.position(input, mark)
    }

    /// Records under `key` that the file named `name`, whose content is
    /// `content`, is loaded up to `mark`, its own or its original's. A copy,
    /// or a compressed file found read to its end, is then known by its own
    /// key without decoding it, and still once its original's mark is gone
    /// (a file copied and truncated gets a mark of its new lines under the
    /// same key).
    fn remember(
        &mut self,
        key: &str,
        name: String,
        mark: Mark,
        content: &mut Content,
    ) -> Result<Mark> {
        // A copy's mark is its original's, but for its name and birth.
        let mut mark = Mark {
            path: name,
            seen: now(),
            born: content.born(),
            ..mark
        };
        let size = content.file_len()?;
        let done = content.format().is_compressed() && mark.ended == Some(size);
        if mark.offset > 0 {
            // A mark of an older version has no head yet.
            let head_len = mark.offset.min(HEAD);
            if mark.head.len < head_len && !done {
                mark.head = content.head(head_len)?.unwrap_or(mark.head);
            }
            if content.format().is_compressed() && !done {
                mark.ended = content.ends_at(mark.offset)?.then_some(size);
            }
            self.set_mark(key, mark.clone());
        }
        Ok(mark)
    }

    /// Positions `input` at `mark`, remembering that the file is loaded up
    /// to there ([`StateFile::remember`]).
    fn position(&mut self, input: Input, mark: Mark) -> Result<Start> {
        let Input {
            name,
            key,
            mut content,
            ..
        } = input;
        let mark = self.remember(&key, name, mark, &mut content)?;
        let size = content.file_len()?;
        let probe = Arc::new(Mutex::new(Content::new(Arc::clone(content.file()))?));
        let input = if mark.ended == Some(size) {
            Positioned::Content(Box::new(std::io::empty()))
        } else {
            content
                .into_reader(mark.offset)?
                .context("the input is shorter than where it was loaded up to")?
        };
        Ok(Start::Read {
            resume: Resume { key, mark, probe },
            input,
        })
    }

    /// The name the file with `key` was last loaded under.
    fn origin(&self, key: &str) -> String {
        self.contents
            .files
            .get(key)
            .map_or_else(|| key.to_owned(), |m| m.path.clone())
    }

    /// What the state file knows of the file at `path`, for a run that
    /// follows files and must decide whether a rotated sibling is worth
    /// reading. A file that is not a regular file is [`Known::Unknown`]: a
    /// state file does not track it. A copy found loaded is remembered as
    /// loaded under its own key: the file it is a copy of may be truncated
    /// and loaded again (copytruncate) before the copy is looked at next.
    /// Whether a file was loaded under the name `name` other than the one
    /// under it now (`current`, device and inode): the name was rotated by
    /// renaming, not only by copying and truncating.
    pub fn renamed_under(&self, name: &Path, current: Option<(u64, u64)>) -> bool {
        let name = name_of(name);
        let current = current.map(|(dev, ino)| format!("{dev}:{ino}"));
        self.contents
            .files
            .iter()
            .any(|(key, mark)| mark.path == name && Some(key) != current.as_ref())
    }

    pub fn knows(&mut self, path: &Path) -> Result<Known> {
        let context = || format!("cannot read {}", path.display());
        let meta = fs::metadata(path).with_context(context)?;
        if !meta.is_file() {
            return Ok(Known::Unknown);
        }
        let file = File::open(path).with_context(context)?;
        let key = format!("{}:{}", meta.dev(), meta.ino());
        let mut content = Content::new(Arc::new(file)).with_context(context)?;
        let name = name_of(path);
        let (mark, copy) = match self
            .standing(&key, &name, &mut content)
            .with_context(context)?
        {
            Standing::Tracked(mark) => (mark, false),
            Standing::Copy { mark, .. } => (mark, true),
            Standing::Within { .. } => return Ok(Known::Loaded),
            Standing::New(_) => return Ok(Known::Unknown),
        };
        let done = content.format().is_compressed() && mark.ended == Some(content.file_len()?);
        if !done && !content.ends_at(mark.offset)? {
            return Ok(Known::Partly);
        }
        if copy && let Err(err) = self.remember(&key, name, mark, &mut content) {
            // Loaded all the same, as its original's mark says for now.
            log::debug!("{}: cannot remember it as loaded: {err:#}", path.display());
        }
        Ok(Known::Loaded)
    }

    /// How the file with `key`, named `name`, whose content is `content`,
    /// stands.
    fn standing(&self, key: &str, name: &str, content: &mut Content) -> Result<Standing> {
        let old = self.contents.files.get(key);
        if let Some(old) = old
            && still(old, content)?
        {
            return Ok(Standing::Tracked(old.clone()));
        }
        if let Some(copy) = self.copy(key, name, content)? {
            return Ok(copy);
        }
        let warning = match old {
            // Another file with the inode number of one loaded and deleted
            // since: nothing of it was loaded.
            Some(old) if reborn(old, content) => None,
            Some(old) if content.tail(old.offset)?.is_none() => Some(
                "loading from the start: it is shorter than what was loaded (truncated)".into(),
            ),
            Some(_) => Some(
                "loading from the start: what was loaded has changed (rewritten in place, or \
                 copied and truncated)"
                    .into(),
            ),
            None => None,
        };
        Ok(Standing::New(warning))
    }

    /// The mark, of another file, that `content` is a copy of: the one
    /// loaded furthest. Within one when the content starts like a marked
    /// file but ends before its offset.
    ///
    /// A file under the very name another was loaded under is a copy of
    /// it only when it holds all that was loaded of it: it replaced it
    /// (rsync, scp, cp then mv). One that starts the same but holds less
    /// is a new file.
    fn copy(&self, key: &str, name: &str, content: &mut Content) -> Result<Option<Standing>> {
        let mut marks: Vec<(&String, &Mark)> = self
            .contents
            .files
            .iter()
            .filter(|(k, m)| k.as_str() != key && m.head.len > 0)
            .collect();
        // Forward through the content: a compressed one is decoded once.
        marks.sort_by_key(|(_, m)| m.offset);
        let mut heads: BTreeMap<u64, Option<Head>> = BTreeMap::new();
        let mut found = None;
        for (other, mark) in marks {
            let head = match heads.get(&mark.head.len) {
                Some(head) => *head,
                None => *heads
                    .entry(mark.head.len)
                    .or_insert(content.head(mark.head.len)?),
            };
            if head != Some(mark.head) {
                continue;
            }
            match content.tail(mark.offset)? {
                None if mark.path == name => {}
                None => return Ok(Some(Standing::Within { of: other.clone() })),
                Some(tail) if tail == mark.tail => found = Some((other, mark)),
                Some(_) => {}
            }
        }
        Ok(found.map(|(of, mark)| Standing::Copy {
            of: of.clone(),
            mark: mark.clone(),
            replaced: mark.path == name,
        }))
    }
}

/// The name a mark keeps for the file at `path`: its canonical path. The
/// name may be gone since the file was opened (rotated away while
/// followed): it is only a label.
/// Whether the file `name` is named as a rotation of `origin`
/// (`findings.jsonl.1`, `findings.jsonl-20261201.gz` of `findings.jsonl`).
fn is_rotation_of(name: &str, origin: &str) -> bool {
    let file_name = |path: &str| Path::new(path).file_name().map(|n| n.to_os_string());
    match (file_name(name), file_name(origin)) {
        (Some(name), Some(origin)) => name
            .as_encoded_bytes()
            .strip_prefix(origin.as_encoded_bytes())
            .is_some_and(rotation_suffix),
        _ => false,
    }
}

/// Whether `suffix`, what a name has beyond the followed file's, is one
/// that log rotation gives: a dot or a dash, a digit, then digits, dots,
/// dashes and underscores, perhaps with the extension of a compressed
/// file: `.1`, `.2.gz`, `-20261206`, `-20261206.zst`, `.2026-12-06_10`.
/// Other files beside it (`findings.jsonl~`, `findings.jsonl.rej`,
/// `findings.jsonl.test`) are not its lines.
pub fn rotation_suffix(suffix: &[u8]) -> bool {
    let suffix = [".gz", ".zst"]
        .iter()
        .find_map(|ext| suffix.strip_suffix(ext.as_bytes()))
        .unwrap_or(suffix);
    match suffix {
        [b'.' | b'-', first, rest @ ..] => {
            first.is_ascii_digit()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
        }
        _ => false,
    }
}

fn name_of(path: &Path) -> String {
    fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// Whether `content` is still what `mark` was taken of.
/// Whether the file is not the one `mark` was made of, though it has its
/// inode: it was created since.
fn reborn(mark: &Mark, content: &Content) -> bool {
    matches!((mark.born, content.born()), (Some(then), Some(now)) if then != now)
}

fn still(mark: &Mark, content: &mut Content) -> Result<bool> {
    if reborn(mark, content) {
        return Ok(false);
    }
    let head_matches = mark.head.len == 0 || content.head(mark.head.len)? == Some(mark.head);
    if content.format().is_compressed() && mark.ended == Some(content.file_len()?) {
        return Ok(head_matches);
    }
    Ok(head_matches && content.tail(mark.offset)?.as_deref() == Some(mark.tail.as_str()))
}

#[cfg(test)]
mod tests;
