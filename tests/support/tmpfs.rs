//! A small tmpfs of a test's own, to fill a disk on purpose without
//! touching any other: mounted on a fresh directory, unmounted and removed
//! on Drop. Mounting takes root, which CI has; elsewhere a test that needs
//! one is skipped with a note, and under CI not being root is a failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::pg::unique;
use super::process::{self, installed};

/// A mounted tmpfs.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as mount(8) takes it: "8m") on a new
    /// directory. None, after a note, when not root outside CI.
    #[track_caller]
    pub fn mount(size: &str) -> Option<Tmpfs> {
        installed("mount", "mount")?;
        let uid = process::run_ok(Command::new("id").arg("-u"), Duration::from_secs(10), "id");
        if uid.stdout.trim() != "0" {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "mounting a tmpfs takes root, and CI is set: a test that cannot fill a \
                     disk there is a failure; .ci/run must run the tests as root"
                );
            }
            eprintln!("note: not root, so no tmpfs can be mounted to fill: test skipped");
            return None;
        }
        let dir = std::env::temp_dir().join(unique("pgsense-pg-tmpfs-"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let tmpfs = Tmpfs { dir };
        process::run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
                .arg("tmpfs")
                .arg(&tmpfs.dir),
            Duration::from_secs(10),
            "mount -t tmpfs",
        );
        Some(tmpfs)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily if busy: a process the test failed to end must not leave
        // the mount behind.
        let unmounted = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&self.dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        let _ = unmounted(false) || unmounted(true);
        // Fails, leaving it alone, while anything is still mounted there.
        let _ = fs::remove_dir(&self.dir);
    }
}
