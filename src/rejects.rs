//! The reject file: every dropped line, byte for byte as read. It only
//! ever holds whole lines: a line cut short by a killed run is cut off
//! before anything is appended.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The reject file: every dropped line, byte for byte as read, so that
/// `pgsense-pg load PATH` replays it once the cause is fixed.
#[derive(Default)]
pub struct Rejects {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// The first write error: from then on nothing is written, and the run
    /// fails saying so.
    failed: Option<io::Error>,
    /// The file's length with everything appended so far.
    len: u64,
    /// Whether it is a regular file, which can be synced and cut back; not
    /// a pipe (`>(gzip > rejects.gz)`) or /dev/null.
    regular: bool,
}

impl Rejects {
    /// Opens PATH for appending, creating it when missing.
    pub fn open(path: &Path) -> anyhow::Result<Rejects> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .with_context(|| format!("cannot open reject file {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot open reject file {}", path.display()))?;
        Ok(Rejects {
            path: path.to_owned(),
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            failed: None,
            len: meta.len(),
            regular: meta.is_file(),
        })
    }

    /// Whether it is a regular file: lines appended to anything else (a
    /// pipe, a device) cannot be taken back.
    pub fn is_regular(&self) -> bool {
        self.regular
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length with everything appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Cuts off a last line without its newline (what a killed run was
    /// writing), so that nothing is glued to it; takes the file's length as
    /// it is now (a recovery may have cut it).
    pub fn cut_fragment(&mut self) -> anyhow::Result<()> {
        let context = || {
            format!(
                "cannot check the end of reject file {}",
                self.path.display()
            )
        };
        let Some(file) = self.file.as_mut().filter(|_| self.regular) else {
            return Ok(());
        };
        file.flush().with_context(context)?;
        let file = file.get_ref();
        let len = file.metadata().with_context(context)?.len();
        let whole = whole_lines(file, len).with_context(context)?;
        if whole < len {
            log::warn!(
                "{}: cutting {} bytes of a last line without its end (a run stopped while writing it)",
                self.path.display(),
                len - whole
            );
            file.set_len(whole)
                .and_then(|()| file.sync_data())
                .with_context(context)?;
        }
        self.len = whole;
        Ok(())
    }

    /// Cuts the file back to `len` bytes: lines appended for a transaction
    /// that then did not commit.
    pub fn cut_to(&mut self, len: u64) -> anyhow::Result<()> {
        // A pipe or a device keeps what it was given: the lines of a batch
        // sent again are there twice (with --state-file, which counts on
        // taking lines back, such a reject file is refused).
        if !self.regular {
            if len < self.len {
                log::warn!(
                    "reject file {} is not a regular file: the lines written for a batch that \
                     did not commit cannot be taken back, and are written again with it",
                    self.path.display()
                );
            }
            return match &self.failed {
                Some(err) => Err(self.error(err)),
                None => Ok(()),
            };
        }
        if let (Some(file), None) = (&mut self.file, &self.failed)
            && let Err(err) = file.flush().and_then(|()| file.get_ref().set_len(len))
        {
            self.failed = Some(err);
        }
        self.len = len;
        match &self.failed {
            Some(err) => Err(self.error(err)),
            None => Ok(()),
        }
    }

    /// The file's device and inode as the state file records them.
    pub fn key(&self) -> Option<String> {
        self.identity().map(|(dev, ino)| format!("{dev}:{ino}"))
    }

    /// The file's device and inode, to tell it from the inputs.
    pub fn identity(&self) -> Option<(u64, u64)> {
        let meta = self.file.as_ref()?.get_ref().metadata().ok()?;
        Some((meta.dev(), meta.ino()))
    }

    /// Appends bytes; a failure is remembered and reported by [`sync`] and
    /// [`finish`].
    ///
    /// [`sync`]: Rejects::sync
    /// [`finish`]: Rejects::finish
    pub fn append(&mut self, bytes: &[u8]) {
        if let (Some(file), None) = (&mut self.file, &self.failed) {
            match file.write_all(bytes) {
                Ok(()) => self.len += bytes.len() as u64,
                Err(err) => self.failed = Some(err),
            }
        }
    }

    /// Hands what was appended so far to the kernel. Fails, now and ever
    /// after, once a write has failed.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if self.failed.is_none()
            && let Some(file) = &mut self.file
            && let Err(err) = file.flush()
        {
            self.failed = Some(err);
        }
        match &self.failed {
            Some(err) => Err(self.error(err)),
            None => Ok(()),
        }
    }

    /// Flushes and fsyncs what was appended so far: afterwards those lines
    /// are on disk (a pipe or a device is only written to). Fails, now and
    /// ever after, once a write has failed.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        let regular = self.regular;
        if self.failed.is_none()
            && let Some(file) = &mut self.file
            && let Err(err) = file.flush().and_then(|()| match regular {
                true => file.get_ref().sync_data(),
                false => Ok(()),
            })
        {
            self.failed = Some(err);
        }
        match &self.failed {
            Some(err) => Err(self.error(err)),
            None => Ok(()),
        }
    }

    /// Flushes and fsyncs, so the lines are on disk before the run exits.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.sync()
    }

    fn error(&self, err: &io::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot write reject file {}: {err}: dropped lines reported on stderr are missing from it",
            self.path.display()
        )
    }
}

/// The length of the whole lines at the start of a file `len` bytes long.
fn whole_lines(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = vec![0; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let piece = &mut chunk[..(end - start) as usize];
        file.read_exact_at(piece, start)?;
        if let Some(newline) = memchr::memrchr(b'\n', piece) {
            return Ok(start + newline as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_is_cut_and_whole_lines_kept() {
        let dir = std::env::temp_dir().join(format!("pgsense-rejects-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("r");
        std::fs::write(&path, "one\ntwo\nthr").expect("write");
        let mut rejects = Rejects::open(&path).expect("open");
        assert_eq!(rejects.len(), 11);
        rejects.cut_fragment().expect("cut");
        assert_eq!(rejects.len(), 8);
        rejects.append(b"three\n");
        let before = rejects.len();
        rejects.append(b"four\n");
        rejects.cut_to(before).expect("cut back");
        rejects.finish().expect("sync");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "one\ntwo\nthree\n"
        );
        std::fs::write(&path, "no newline at all").expect("write");
        let mut rejects = Rejects::open(&path).expect("open");
        rejects.cut_fragment().expect("cut");
        assert_eq!(std::fs::read(&path).expect("read"), b"");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
