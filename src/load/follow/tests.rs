use super::*;
use std::io::Write;

#[test]
fn rotations_are_told_by_their_names() {
    for rotated in [
        ".1",
        ".12",
        ".2.gz",
        ".3.zst",
        "-20261206",
        "-20261206.gz",
        "-2026120610",
        ".2026-12-06",
        ".2026-12-06_10-00",
    ] {
        assert!(rotation_suffix(rotated.as_bytes()), "{rotated}");
    }
    for other in [
        "",
        "~",
        ".rej",
        ".test-data",
        ".bak",
        ".1.tmp",
        ".swp",
        ".gz",
        "-",
        ".",
        "1",
        ".a1",
        "-x.gz",
        ".1 copy",
    ] {
        assert!(!rotation_suffix(other.as_bytes()), "{other}");
    }
}

fn opened(path: &Path, offset: u64) -> Open {
    let file = File::open(path).unwrap();
    let handle = file.try_clone().unwrap();
    let mut open = Open {
        reader: BufReader::new(Box::new(file)),
        file: Some(handle),
        exhausted: false,
        cursor: Cursor {
            index: 0,
            offset,
            line: 1,
            may_wait: false,
            compressed: false,
            tracked: true,
            seen: Seen::default(),
            positioned: false,
        },
        id: (0, 0),
        before: (0, Vec::new()),
        first: Vec::new(),
        changed: Arc::default(),
        looked: None,
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

/// Read to its end at the last look; written to and truncated back since,
/// nothing of it read: what was written was copied away (or lost). Grown
/// since, it was only appended to.
#[test]
fn written_and_truncated_back_unread_is_told_from_growth() {
    let dir = std::env::temp_dir().join(format!("pgsense-pg-unread-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("findings.jsonl");
    std::fs::write(&path, "").unwrap();
    let mut open = opened(&path, 0);
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(then).unwrap();
    open.looked = Some((0, Some(then)));
    let meta = || std::fs::metadata(&path).unwrap();
    assert!(!open.truncated_unread(&meta()), "untouched");
    std::fs::write(&path, "{\"lsn\":1}\n").unwrap();
    assert!(!open.truncated_unread(&meta()), "appended to");
    std::fs::write(&path, "").unwrap();
    assert!(open.truncated_unread(&meta()), "written, then truncated");
    std::fs::remove_dir_all(&dir).unwrap();
}
