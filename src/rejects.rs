//! The reject file: every dropped line, byte for byte as read.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
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
}

impl Rejects {
    /// Opens PATH for appending, creating it when missing.
    pub fn open(path: &Path) -> anyhow::Result<Rejects> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open reject file {}", path.display()))?;
        Ok(Rejects {
            path: path.to_owned(),
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            failed: None,
        })
    }

    /// The file's device and inode, to tell it from the inputs.
    pub fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.as_ref()?.get_ref().metadata().ok()?;
        Some((meta.dev(), meta.ino()))
    }

    /// Appends bytes; a failure is remembered and reported by [`sync`] and
    /// [`finish`].
    ///
    /// [`sync`]: Rejects::sync
    /// [`finish`]: Rejects::finish
    pub fn append(&mut self, bytes: &[u8]) {
        if let (Some(file), None) = (&mut self.file, &self.failed)
            && let Err(err) = file.write_all(bytes)
        {
            self.failed = Some(err);
        }
    }

    /// Flushes and fsyncs what was appended so far: afterwards those lines
    /// are on disk. Fails, now and ever after, once a write has failed.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if self.failed.is_none()
            && let Some(file) = &mut self.file
            && let Err(err) = file.flush().and_then(|()| file.get_ref().sync_data())
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
