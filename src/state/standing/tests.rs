use super::*;
use std::io::Write;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("pgsense-standing-{name}-{}", std::process::id()));
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
        born: None,
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

/// A file made again under the name of one loaded, that got its inode back
/// and starts with the same bytes, is told apart by its birth time (where
/// the file system keeps one): it is not resumed from the old mark.
#[test]
fn a_file_born_again_under_the_same_inode_is_new() {
    let dir = Dir::new("born");
    let mut state = StateFile::open(&dir.0.join("state")).expect("state");
    let text = lines(0..200);
    let live = dir.write("findings.jsonl", &text);
    let born = File::open(&live)
        .and_then(|file| file.metadata())
        .and_then(|meta| meta.created());
    if born.is_err() {
        // No birth times here: nothing to tell the files apart by.
        return;
    }
    loaded(&mut state, &live, text.len() as u64, 200);
    let content = Content::new(Arc::new(File::open(&live).expect("open"))).expect("content");
    for mark in state.contents.files.values_mut() {
        mark.born = content.born();
    }
    assert_eq!(state.knows(&live).expect("knows"), Known::Loaded);
    // The same inode, the same bytes, another birth: as if deleted and
    // made again.
    for mark in state.contents.files.values_mut() {
        mark.born = mark.born.map(|ns| ns - 1);
    }
    assert_eq!(state.knows(&live).expect("knows"), Known::Unknown);
    // Shorter than what was loaded of the old one: a new file, not one
    // truncated (no warning saying so).
    File::options()
        .write(true)
        .open(&live)
        .and_then(|file| file.set_len(10))
        .expect("shorten");
    let meta = fs::metadata(&live).expect("stat");
    let key = format!("{}:{}", meta.dev(), meta.ino());
    let mut content = Content::new(Arc::new(File::open(&live).expect("open"))).expect("content");
    let standing = state
        .standing(&key, "findings.jsonl", &mut content)
        .expect("standing");
    let warning = match standing {
        Standing::New(warning) => warning,
        _ => panic!("not a new file"),
    };
    assert_eq!(warning, None);
}
