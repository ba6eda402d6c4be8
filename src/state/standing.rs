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
//! however the files were rotated.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::content::{HEAD, Head, Positioned};
use super::{Content, Mark, Resume, StateFile, now};

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
    /// A copy of the file whose key is `of`, loaded up to `mark`.
    Copy { of: String, mark: Mark },
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
        for input in inputs {
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

    /// Where `input` starts, as its standing says.
    fn start(&mut self, mut input: Input) -> Result<Start> {
        let path = input.path.display().to_string();
        let mark = match std::mem::replace(&mut input.standing, Standing::New(None)) {
            Standing::Tracked(old) => old,
            Standing::Copy { of, mark } => {
                let origin = self.origin(&of);
                log::info!(
                    "{path}: a copy of {origin} (rotated, compressed or copied), which was loaded \
                     up to line {}: loading it from line {}",
                    mark.line,
                    mark.line + 1
                );
                mark
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
        let mut mark = Mark {
            path: name,
            seen: now(),
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
            self.contents.files.insert(key.to_owned(), mark.clone());
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
    /// A file under the very name another was loaded under is not its
    /// copy: that one was renamed away (or removed), and this is the new
    /// file that rotation created, whatever its first lines (findings can
    /// repeat). A copy has a name of its own (`findings.jsonl.1`, `.2.gz`).
    fn copy(&self, key: &str, name: &str, content: &mut Content) -> Result<Option<Standing>> {
        let mut marks: Vec<(&String, &Mark)> = self
            .contents
            .files
            .iter()
            .filter(|(k, m)| k.as_str() != key && m.path != name && m.head.len > 0)
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
                None => return Ok(Some(Standing::Within { of: other.clone() })),
                Some(tail) if tail == mark.tail => found = Some((other, mark)),
                Some(_) => {}
            }
        }
        Ok(found.map(|(of, mark)| Standing::Copy {
            of: of.clone(),
            mark: mark.clone(),
        }))
    }
}

/// The name a mark keeps for the file at `path`: its canonical path. The
/// name may be gone since the file was opened (rotated away while
/// followed): it is only a label.
fn name_of(path: &Path) -> String {
    fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// Whether `content` is still what `mark` was taken of.
fn still(mark: &Mark, content: &mut Content) -> Result<bool> {
    let head_matches = mark.head.len == 0 || content.head(mark.head.len)? == Some(mark.head);
    if content.format().is_compressed() && mark.ended == Some(content.file_len()?) {
        return Ok(head_matches);
    }
    Ok(head_matches && content.tail(mark.offset)?.as_deref() == Some(mark.tail.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir()
                .join(format!("pgsense-standing-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("temp dir");
            Dir(dir)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, bytes).expect("write");
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn lines(range: std::ops::Range<u32>) -> Vec<u8> {
        range
            .map(|n| format!("{{\"lsn\":{n},\"padding\":\"{}\"}}\n", "x".repeat(40)))
            .collect::<String>()
            .into_bytes()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    /// Records that the file at `path` is loaded up to `offset`, as a run
    /// would.
    fn loaded(state: &mut StateFile, path: &Path, offset: u64, line: u64) {
        let file = File::open(path).expect("open");
        let meta = file.metadata().expect("stat");
        let mut content = Content::new(Arc::new(file)).expect("content");
        let mark = Mark {
            path: path.display().to_string(),
            offset,
            line,
            tail: content.tail(offset).expect("tail").expect("long enough"),
            head: content
                .head(offset.min(HEAD))
                .expect("head")
                .expect("long enough"),
            ended: None,
            seen: now(),
            loaded_ns: None,
        };
        let key = format!("{}:{}", meta.dev(), meta.ino());
        state.contents.files.insert(key, mark);
    }

    #[test]
    fn knows_tracked_files_and_their_copies() {
        let dir = Dir::new("knows");
        let mut state = StateFile::open(&dir.0.join("state")).expect("state");
        let text = lines(0..200);
        let live = dir.write("findings.jsonl", &text);
        assert_eq!(state.knows(&live).expect("knows"), Known::Unknown);
        loaded(&mut state, &live, text.len() as u64, 200);
        assert_eq!(state.knows(&live).expect("knows"), Known::Loaded);

        // Copies, compressed or not, of what was loaded.
        let copy = dir.write("findings.jsonl.1", &text);
        let packed = dir.write("findings.jsonl.2.gz", &gzip(&text));
        assert_eq!(state.knows(&copy).expect("knows"), Known::Loaded);
        assert_eq!(state.knows(&packed).expect("knows"), Known::Loaded);
        // A compressed copy still being written: what it holds is loaded.
        let whole = gzip(&text);
        let cut = dir.write("cut.gz", &whole[..whole.len() / 2]);
        assert_eq!(state.knows(&cut).expect("knows"), Known::Loaded);

        // More than what was loaded.
        let more = [text.clone(), lines(200..210)].concat();
        let longer = dir.write("longer.gz", &gzip(&more));
        assert_eq!(state.knows(&longer).expect("knows"), Known::Partly);
        append(&live, &lines(200..201));
        assert_eq!(state.knows(&live).expect("knows"), Known::Partly);

        // Other content, and what is not a regular file.
        let other = dir.write("other.jsonl", &lines(500..600));
        assert_eq!(state.knows(&other).expect("knows"), Known::Unknown);
        assert_eq!(
            state.knows(Path::new("/dev/null")).expect("knows"),
            Known::Unknown
        );
        assert!(state.knows(&dir.0.join("missing")).is_err());
    }

    #[test]
    fn a_copy_found_loaded_stays_loaded_once_its_original_is_loaded_anew() {
        let dir = Dir::new("copied");
        let mut state = StateFile::open(&dir.0.join("state")).expect("state");
        let text = lines(0..100);
        let live = dir.write("findings.jsonl", &text);
        loaded(&mut state, &live, text.len() as u64, 100);
        // copytruncate: the copy, then the same file truncated and written
        // to again, and its new lines loaded under its key.
        let copy = dir.write("findings.jsonl.1", &text);
        assert_eq!(state.knows(&copy).expect("knows"), Known::Loaded);
        let again = lines(100..110);
        dir.write("findings.jsonl", &again);
        loaded(&mut state, &live, again.len() as u64, 10);
        assert_eq!(
            state.knows(&copy).expect("knows"),
            Known::Loaded,
            "the copy of what was loaded before the truncation"
        );
    }

    fn append(path: &Path, bytes: &[u8]) {
        fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(bytes))
            .expect("append");
    }

    /// Where each input starts, or None when it is skipped.
    fn starts(state: &mut StateFile, paths: &[&PathBuf]) -> Vec<Option<(u64, u64)>> {
        let files = paths
            .iter()
            .map(|p| ((*p).clone(), File::open(p).expect("open")))
            .collect();
        state
            .resume(files)
            .expect("resume")
            .into_iter()
            .map(|start| match start {
                Start::Read { resume, .. } => Some((resume.mark.offset, resume.mark.line)),
                Start::Skip => None,
            })
            .collect()
    }

    #[test]
    fn a_copy_resumes_where_its_original_was_loaded_unless_the_original_is_read_too() {
        let dir = Dir::new("resume");
        let mut state = StateFile::open(&dir.0.join("state")).expect("state");
        let text = lines(0..100);
        let original = dir.write("findings.jsonl.1", &text);
        let half = lines(0..50).len() as u64;
        loaded(&mut state, &original, half, 50);
        let packed = dir.write("findings.jsonl.2.gz", &gzip(&text));
        let fresh = dir.write("findings.jsonl", &lines(100..110));
        assert_eq!(
            starts(&mut state, &[&fresh, &original, &packed]),
            [Some((0, 0)), Some((half, 50)), None]
        );
        fs::remove_file(&original).expect("remove");
        assert_eq!(starts(&mut state, &[&packed]), [Some((half, 50))]);
        // The copy is now known by its own key, read to the offset.
        let key = {
            let meta = fs::metadata(&packed).expect("stat");
            format!("{}:{}", meta.dev(), meta.ino())
        };
        assert_eq!(state.contents.files[&key].offset, half);
    }

    #[test]
    fn a_compressed_file_read_to_its_end_is_not_decoded_again() {
        let dir = Dir::new("ended");
        let mut state = StateFile::open(&dir.0.join("state")).expect("state");
        let text = lines(0..100);
        let packed = dir.write("f.gz", &gzip(&text));
        loaded(&mut state, &packed, text.len() as u64, 100);
        assert_eq!(
            starts(&mut state, &[&packed]),
            [Some((text.len() as u64, 100))]
        );
        let size = fs::metadata(&packed).expect("stat").len();
        let mark = state.contents.files.values().next().expect("a mark");
        assert_eq!(mark.ended, Some(size));
        // Its end is not decoded again: a checksum spoilt there goes unseen
        // (same size, same head: nothing new).
        let mut bytes = fs::read(&packed).expect("read");
        let n = bytes.len();
        bytes[n - 8..].fill(0);
        fs::OpenOptions::new()
            .write(true)
            .open(&packed)
            .and_then(|mut f| f.write_all(&bytes))
            .expect("rewrite");
        assert_eq!(state.knows(&packed).expect("knows"), Known::Loaded);
    }

    #[test]
    fn marks_of_older_versions_load() {
        let old = r#"{"files":{"1:2":{"path":"/x","offset":10,"line":1,"tail":"0a","seen":5}}}"#;
        let contents: super::super::Contents = serde_json::from_str(old).expect("loads");
        let mark = &contents.files["1:2"];
        assert_eq!((mark.head, mark.ended), (Head::default(), None));
    }
}
