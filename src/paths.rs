//! Where paths really lead: the files a run writes are known by where they
//! are, whatever names lead to them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How many symbolic links are followed before giving up, as the kernel
/// does.
const MAX_LINKS: usize = 40;

/// Where the file at `path` really is, whether it exists or not: symbolic
/// links followed (also one to a file not created yet) and its directory
/// made canonical. As given when that cannot be worked out.
pub fn real(path: &Path) -> PathBuf {
    let mut path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    for _ in 0..MAX_LINKS {
        let Ok(target) = fs::read_link(&path) else {
            break;
        };
        path = match path.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
    }
    match (path.parent().map(fs::canonicalize), path.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => path,
    }
}

/// Whether `a` and `b` name the same file, existing or not (a hard link
/// included).
pub fn same_file(a: &Path, b: &Path) -> bool {
    if real(a) == real(b) {
        return true;
    }
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_lead_where_they_point_existing_or_not() {
        let dir = std::env::temp_dir().join(format!("pgsense-paths-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).expect("dirs");
        let target = dir.join("sub/state");
        // A link to a file not created yet, and a link to that link.
        std::os::unix::fs::symlink("sub/state", dir.join("link")).expect("link");
        std::os::unix::fs::symlink(dir.join("link"), dir.join("link2")).expect("link");
        assert_eq!(real(&dir.join("link2")), real(&target));
        assert!(same_file(&dir.join("link"), &dir.join("sub/../sub/state")));
        fs::write(&target, b"{}").expect("write");
        fs::hard_link(&target, dir.join("hard")).expect("hard link");
        assert!(same_file(&dir.join("hard"), &dir.join("link2")));
        assert!(!same_file(&dir.join("hard"), &dir.join("other")));
        assert!(!same_file(&dir.join("state.lock"), &dir.join("sub/state")));
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
