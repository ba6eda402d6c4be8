//! Inputs: opening them before anything connects, and reading them line by
//! line with a bound on line length, without holding a long line whole.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::state::{Resume, StateFile};

/// Whether a state file will track the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    None,
    StateFile,
}

/// An input: a named stream of lines.
pub struct Source {
    /// The path as given, or `-` for standard input.
    pub name: String,
    pub input: Input,
    /// Whether a read may wait for a writer on the other end (a pipe, a
    /// terminal), rather than only for a disk.
    pub may_wait: bool,
    /// With --state-file: the input's key there and where reading starts.
    pub resume: Option<Resume>,
    /// Bytes left to read, for a regular file.
    pub size: Option<u64>,
    /// Device and inode, to tell an input from the files the run writes.
    pub identity: Option<(u64, u64)>,
}

/// Where an input's bytes come from.
pub enum Input {
    /// A regular file, which a state file can position.
    File(PathBuf, File),
    Stream(Box<dyn Read + Send>),
}

impl Input {
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        match self {
            Input::File(_, file) => Box::new(file),
            Input::Stream(stream) => stream,
        }
    }
}

/// Positions each regular file where the state file says the last run
/// stopped, once the state file is settled.
pub fn resume(sources: &mut [Source], state: &StateFile) -> Result<()> {
    for source in sources {
        if let Input::File(path, file) = &mut source.input {
            let resume = state.resume(path, file)?;
            if let Some(size) = &mut source.size {
                *size = size.saturating_sub(resume.mark.offset);
            }
            source.resume = Some(resume);
        }
    }
    Ok(())
}

/// Opens every input before anything connects, so that a missing file costs
/// nothing. No FILE, or `-`, is standard input.
pub fn open_inputs(files: &[PathBuf], tracking: Tracking) -> Result<Vec<Source>> {
    if files.is_empty() {
        return Ok(vec![stdin_source()]);
    }
    files
        .iter()
        .map(|path| {
            if path == Path::new("-") {
                return Ok(stdin_source());
            }
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let meta = file
                .metadata()
                .with_context(|| format!("cannot open {}", path.display()))?;
            anyhow::ensure!(
                !meta.is_dir(),
                "cannot open {}: it is a directory",
                path.display()
            );
            if tracking == Tracking::StateFile && !meta.is_file() {
                log::warn!(
                    "{} is not a regular file: the state file cannot track it",
                    path.display()
                );
            }
            let input = if meta.is_file() && tracking == Tracking::StateFile {
                Input::File(path.clone(), file)
            } else {
                Input::Stream(Box::new(file))
            };
            Ok(Source {
                name: path.display().to_string(),
                input,
                may_wait: !meta.is_file(),
                resume: None,
                size: meta.is_file().then_some(meta.len()),
                identity: Some((meta.dev(), meta.ino())),
            })
        })
        .collect()
}

fn stdin_source() -> Source {
    let stdin = io::stdin();
    let meta = stdin
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|f| f.metadata())
        .ok();
    let is_file = meta.as_ref().is_some_and(|m| m.is_file());
    Source {
        name: "-".into(),
        input: Input::Stream(Box::new(stdin)),
        may_wait: !is_file,
        resume: None,
        size: None,
        identity: meta.map(|m| (m.dev(), m.ino())),
    }
}

/// What [`next_line`] read into the buffer.
pub enum Line {
    /// A line, terminator included, is in the buffer.
    Text,
    /// The line was longer than the limit and was skipped: its length, and
    /// the bytes consumed with its terminator.
    TooLong { length: u64, consumed: u64 },
    /// No more input.
    End,
}

/// Reads one line into `buf`, holding at most `max` bytes of it (plus one
/// read's worth): a longer line is skipped to its end without being kept,
/// and handed to `spill` piece by piece (newline-terminated) instead.
/// `before_wait` runs whenever the next read may block, that is when what
/// was read ahead is used up, except while a long line is being skipped.
pub fn next_line<R: Read>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    max: u64,
    spill: &mut dyn FnMut(&[u8]),
    before_wait: &mut dyn FnMut(),
) -> io::Result<Line> {
    buf.clear();
    loop {
        if reader.buffer().is_empty() {
            before_wait();
        }
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::End
            } else {
                Line::Text
            });
        }
        let (take, terminated) = match memchr::memchr(b'\n', available) {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        let length = (buf.len() + take - usize::from(terminated)) as u64;
        if length > max {
            spill(buf);
            spill(&available[..take]);
            reader.consume(take);
            buf.clear();
            return skip_rest(reader, length, terminated, spill);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if terminated {
            return Ok(Line::Text);
        }
    }
}

/// Skips the rest of a line found too long after `length` bytes, handing it
/// to `spill`.
fn skip_rest(
    reader: &mut impl BufRead,
    mut length: u64,
    mut terminated: bool,
    spill: &mut dyn FnMut(&[u8]),
) -> io::Result<Line> {
    while !terminated {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        let take = match memchr::memchr(b'\n', available) {
            Some(end) => {
                terminated = true;
                end + 1
            }
            None => available.len(),
        };
        spill(&available[..take]);
        length += (take - usize::from(terminated)) as u64;
        reader.consume(take);
    }
    if !terminated {
        spill(b"\n");
    }
    let consumed = length + u64::from(terminated);
    Ok(Line::TooLong { length, consumed })
}

/// The line without its terminator, LF or CRLF.
pub fn trim_line(line: &[u8]) -> &[u8] {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    text.strip_suffix(b"\r").unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_skipped_whole() {
        let input = b"short\n0123456789abcdef\nnext\nlast";
        let mut reader = BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        let mut spilled = Vec::new();
        loop {
            match next_line(
                &mut reader,
                &mut buf,
                8,
                &mut |b| spilled.extend_from_slice(b),
                &mut || {},
            ) {
                Ok(Line::End) => break,
                Ok(Line::TooLong { length, consumed }) => {
                    seen.push(format!("long {length}/{consumed}"))
                }
                Ok(Line::Text) => seen.push(String::from_utf8(trim_line(&buf).to_vec()).unwrap()),
                Err(err) => panic!("{err}"),
            }
            assert!(buf.len() <= 9);
        }
        assert_eq!(seen, ["short", "long 16/17", "next", "last"]);
        assert_eq!(
            spilled, b"0123456789abcdef\n",
            "kept whole for the reject file"
        );
    }

    #[test]
    fn trims_lf_and_crlf() {
        assert_eq!(trim_line(b"{}\r\n"), b"{}");
        assert_eq!(trim_line(b"{}\n"), b"{}");
        assert_eq!(trim_line(b"{}"), b"{}");
    }
}
