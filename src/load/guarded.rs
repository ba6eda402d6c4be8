//! A file a state file tracks, read on only while its start is what it was.
//!
//! A file truncated and written again past the point read (copytruncate,
//! then the scanner's next lines) between two reads must not be read on
//! from that point: lines of the new content would pass for lines of the
//! old, and the marks taken of them would say the copy is loaded. A read is
//! the old content's only if the file still starts as it did once the read
//! is done; if it does not, the read gives nothing and says so. With
//! --follow the file is then read again from its start as a new input;
//! otherwise the next run reads the rest from the copy and the new content
//! from its start, as the state file tells them apart.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::state::HEAD;

pub struct Guarded {
    file: File,
    /// The file's first bytes (up to [`HEAD`]), as read or as found when
    /// reading started further on.
    head: Vec<u8>,
    /// The same bytes as the file holds them now.
    now: Vec<u8>,
    /// Set once the file no longer starts with `head`.
    changed: Arc<AtomicBool>,
}

impl Guarded {
    /// Reads `file` from where it is positioned; `changed` is set when its
    /// start changes.
    pub fn new(mut file: File, changed: Arc<AtomicBool>) -> io::Result<Guarded> {
        let at = file.stream_position()?;
        let mut head = vec![0; at.min(HEAD) as usize];
        match file.read_exact_at(&mut head, 0) {
            Ok(()) => {}
            // Shorter than where reading was to start: truncated already.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                changed.store(true, Ordering::SeqCst);
            }
            Err(err) => return Err(err),
        }
        Ok(Guarded {
            file,
            head,
            now: Vec::new(),
            changed,
        })
    }

    /// Whether the file still starts with the first `len` bytes of `head`.
    fn starts_as_it_did(&mut self, len: usize) -> io::Result<bool> {
        self.now.resize(len, 0);
        match self.file.read_exact_at(&mut self.now, 0) {
            Ok(()) => Ok(self.now == self.head[..len]),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(err) => Err(err),
        }
    }
}

impl Read for Guarded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.changed.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let at = self.file.stream_position()?;
        let read = self.file.read(buf)?;
        if read == 0 {
            return Ok(0);
        }
        // What was read before the start changed is the old content's.
        let known = self.head.len().min(at as usize);
        if known > 0 && !self.starts_as_it_did(known)? {
            self.changed.store(true, Ordering::SeqCst);
            return Ok(0);
        }
        // The part of the start this read holds and `head` does not yet
        // (reading goes back to the start of a line left without its end).
        let have = self.head.len() as u64;
        if at <= have && have < HEAD && have < at + read as u64 {
            let from = (have - at) as usize;
            let to = read.min((HEAD - at) as usize);
            self.head.extend_from_slice(&buf[from..to]);
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Lines alike in their first and last 32 bytes, as findings of one
    /// rule often are.
    fn lines(markers: std::ops::Range<u32>) -> String {
        markers
            .map(|m| format!("{{\"database\":\"primary/orders\",\"lsn\":{m},\"at\":\"12:00\"}}\n"))
            .collect()
    }

    /// The file under `writer` truncated, then `text` appended, as the
    /// scanner goes on after logrotate's copytruncate.
    fn copytruncated(writer: &File, path: &std::path::Path, text: &str) {
        writer.set_len(0).unwrap();
        let mut append = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        append.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_file_truncated_and_written_again_past_the_point_read_gives_nothing_more() {
        let dir = std::env::temp_dir().join(format!("pgsense-guarded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("findings.jsonl");
        let mut writer = File::create(&path).unwrap();
        writer.write_all(lines(10..13).as_bytes()).unwrap();
        let changed = Arc::new(AtomicBool::new(false));
        let mut guarded = Guarded::new(File::open(&path).unwrap(), Arc::clone(&changed)).unwrap();
        let mut buf = vec![0; 4096];
        let read = guarded.read(&mut buf).unwrap();
        assert_eq!(&buf[..read], lines(10..13).as_bytes());
        writer.write_all(lines(13..14).as_bytes()).unwrap();
        assert_eq!(
            guarded.read(&mut buf).unwrap(),
            lines(13..14).len(),
            "growth is read"
        );
        // Truncated, then the scanner's next lines past the point read:
        // the same length, the same first and last bytes.
        copytruncated(&writer, &path, &lines(20..26));
        assert_eq!(guarded.read(&mut buf).unwrap(), 0);
        assert!(changed.load(Ordering::SeqCst));
        assert_eq!(guarded.read(&mut buf).unwrap(), 0, "nothing more after");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_first_line_read_in_part_then_again_whole_is_all_in_the_start() {
        let dir = std::env::temp_dir().join(format!("pgsense-guarded-part-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("findings.jsonl");
        let text = lines(10..30);
        let mut writer = File::create(&path).unwrap();
        writer.write_all(&text.as_bytes()[..20]).unwrap();
        let file = File::open(&path).unwrap();
        let mut rewind = file.try_clone().unwrap();
        let changed = Arc::new(AtomicBool::new(false));
        let mut guarded = Guarded::new(file, Arc::clone(&changed)).unwrap();
        let mut buf = vec![0; 4096];
        assert_eq!(guarded.read(&mut buf).unwrap(), 20);
        // A line without its end is read again from its start.
        rewind.seek(io::SeekFrom::Start(0)).unwrap();
        writer.write_all(&text.as_bytes()[20..]).unwrap();
        assert_eq!(guarded.read(&mut buf).unwrap(), text.len());
        copytruncated(&writer, &path, &lines(40..80));
        assert_eq!(guarded.read(&mut buf).unwrap(), 0);
        assert!(changed.load(Ordering::SeqCst));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reading_from_further_on_takes_the_start_as_found() {
        let dir = std::env::temp_dir().join(format!("pgsense-guarded-on-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("findings.jsonl");
        std::fs::write(&path, lines(10..14)).unwrap();
        let mut file = File::open(&path).unwrap();
        let offset = lines(10..12).len() as u64;
        file.seek(io::SeekFrom::Start(offset)).unwrap();
        let changed = Arc::new(AtomicBool::new(false));
        let mut guarded = Guarded::new(file, Arc::clone(&changed)).unwrap();
        let mut rest = String::new();
        guarded.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, lines(12..14));
        std::fs::write(&path, lines(30..36)).unwrap();
        let mut more = Vec::new();
        guarded.read_to_end(&mut more).unwrap();
        assert!(more.is_empty() && changed.load(Ordering::SeqCst));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
