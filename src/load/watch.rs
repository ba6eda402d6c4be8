//! Waiting for followed files to change: inotify on the directories that
//! hold them where it works, and a short timer where it does not (a
//! directory that does not exist yet, a file system without it, a process
//! out of watches).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often files are looked at when no notification can be had.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// What changes in a directory wake the reader: a file written, created,
/// renamed in or out, deleted, or its metadata changed (truncation).
const EVENTS: u32 = libc::IN_MODIFY
    | libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB;

pub struct Watch {
    /// The inotify instance; None where inotify is not available.
    inotify: Option<OwnedFd>,
    /// Directories not watched yet (missing, or the watch failed).
    unwatched: Vec<PathBuf>,
}

impl Watch {
    /// Watches the directories of `files`.
    pub fn new(files: &[PathBuf]) -> Watch {
        // SAFETY: inotify_init1 takes flags only; a non-negative result is
        // a new descriptor that nothing else owns.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        let inotify = if fd >= 0 {
            // SAFETY: see above.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        } else {
            log::info!(
                "cannot watch files for changes ({}): looking at them every {} ms",
                io::Error::last_os_error(),
                POLL_EVERY.as_millis()
            );
            None
        };
        let mut unwatched: Vec<PathBuf> = files.iter().map(|f| directory_of(f)).collect();
        unwatched.sort();
        unwatched.dedup();
        let mut watch = Watch { inotify, unwatched };
        watch.add_watches();
        watch
    }

    /// Tries again to watch the directories not watched yet.
    fn add_watches(&mut self) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        self.unwatched.retain(|dir| match add_watch(inotify, dir) {
            Ok(()) => false,
            Err(err) => {
                log::debug!("cannot watch {}: {err}", dir.display());
                true
            }
        });
    }

    /// Waits until a followed file may have changed, or `timeout` has
    /// passed; true when told of a change.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        self.add_watches();
        let Some(inotify) = &self.inotify else {
            std::thread::sleep(timeout.min(POLL_EVERY));
            return false;
        };
        let timeout = if self.unwatched.is_empty() {
            timeout
        } else {
            timeout.min(POLL_EVERY)
        };
        let mut poll = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready <= 0 {
            return false;
        }
        drain(inotify);
        true
    }
}

/// The directory a file is in ("." for a bare name).
fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn add_watch(inotify: &OwnedFd, dir: &Path) -> io::Result<()> {
    let name = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid descriptor and a NUL-terminated path, not kept.
    let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), name.as_ptr(), EVENTS) };
    if wd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads and forgets the pending events: what changed is looked at anyway.
fn drain(inotify: &OwnedFd) {
    let mut events = [0u8; 4096];
    loop {
        // SAFETY: reads into a buffer of the size given.
        let read = unsafe {
            libc::read(
                inotify.as_raw_fd(),
                events.as_mut_ptr().cast(),
                events.len(),
            )
        };
        if read <= 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_in_a_watched_directory_wakes_the_waiter() {
        let dir = std::env::temp_dir().join(format!("pgsense-pg-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("findings.jsonl");
        let mut watch = Watch::new(std::slice::from_ref(&file));
        assert!(
            !watch.wait(Duration::from_millis(50)),
            "nothing changed yet"
        );
        std::fs::write(&file, b"{}\n").unwrap();
        let woke = watch.wait(Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(woke || watch.inotify.is_none());
    }

    #[test]
    fn a_bare_name_is_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("f.jsonl")), PathBuf::from("."));
        assert_eq!(directory_of(Path::new("/a/b.jsonl")), PathBuf::from("/a"));
    }
}
