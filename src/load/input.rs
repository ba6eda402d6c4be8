//! Inputs: opening them before anything connects, and reading them line by
//! line with a bound on line length, without holding a long line whole.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};

use super::guarded::Guarded;
use super::reader::Position;
use crate::compressed::{Damaged, Format, Sniffing};
use crate::state::{Head, Positioned, Resume, Seen, Start, StateFile};

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
    /// A regular file (or standard input redirected from one) of gzip or
    /// zstd data: its decoder tells a stream that ended from one cut
    /// short, so an end it reaches without an error is final.
    pub compressed: bool,
    /// With --state-file: the input's key there and where reading starts.
    pub resume: Option<Resume>,
    /// Bytes left to read, for a regular file (a compressed one's whole,
    /// unless a state file positioned it).
    pub size: Option<u64>,
    /// Device and inode, to tell an input from the files the run writes.
    pub identity: Option<(u64, u64)>,
}

/// Whether a read of `fd` may wait for a writer, rather than return data,
/// the end of the input or an error within `grace` (a writer streaming
/// into a pipe refills it within microseconds). When poll itself fails (a
/// signal), it may.
pub fn would_wait(fd: std::os::fd::RawFd, grace: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(grace.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd, valid for the call.
    unsafe { libc::poll(&mut poll, 1, millis) != 1 }
}

/// An input's bytes, and the descriptor that tells whether a read of them
/// would wait (for a pipe or a terminal).
pub type Opened = (Box<dyn Read + Send>, Option<RawFd>);

/// Where an input's bytes come from. Whatever it is, gzip or zstd data is
/// decoded: it is recognised by its first bytes, not by the name.
pub enum Input {
    /// A regular file, which a state file can position (plain, or
    /// compressed while it is not positioned yet).
    File(PathBuf, File),
    /// A named pipe, opened when its turn comes.
    Fifo(PathBuf),
    /// Bytes, compressed or not, and the descriptor they are read from
    /// when a read of it may wait (a pipe, a terminal).
    Stream(Box<dyn Read + Send>, Option<RawFd>),
    /// A compressed file's decoded content, from where a state file
    /// positioned it.
    Content(Box<dyn Read + Send>),
}

impl Input {
    /// The content, opening a named pipe (which waits for its writer), and
    /// the descriptor that tells whether a read would wait. A plain file
    /// read with `guard` gives nothing more once its start changes, and
    /// sets `guard` ([`Guarded`]).
    /// The bytes read of a compressed file (not decoded) are added to
    /// `raw_read`, when given.
    pub fn into_reader(
        self,
        guard: Option<&Arc<AtomicBool>>,
        raw_read: Option<Arc<Position>>,
    ) -> io::Result<Opened> {
        let counted = |raw: Box<dyn Read + Send>| -> Box<dyn Read + Send> {
            match raw_read {
                Some(position) => Box::new(Counted { raw, position }),
                None => raw,
            }
        };
        Ok(match self {
            Input::File(_, file) => {
                let format = Format::of_file(&file)?;
                let raw: Box<dyn Read + Send> = match guard {
                    Some(changed) if !format.is_compressed() => {
                        Box::new(Guarded::new(file, Arc::clone(changed))?)
                    }
                    _ => counted(Box::new(file)),
                };
                (format.decode(raw)?, None)
            }
            Input::Fifo(path) => {
                let pipe = File::open(path)?;
                let fd = pipe.as_raw_fd();
                (Box::new(Sniffing::new(Box::new(pipe))), Some(fd))
            }
            Input::Stream(stream, fd) => (Box::new(Sniffing::new(counted(stream))), fd),
            Input::Content(content) => (content, None),
        })
    }
}

/// A compressed file's bytes, counted as they are read for the progress
/// line (decoded, they would be more than the file holds).
struct Counted {
    raw: Box<dyn Read + Send>,
    position: Arc<Position>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.raw.read(buf)?;
        self.position.add_bytes(n as u64);
        Ok(n)
    }
}

/// Positions each regular file where the state file says the last run
/// stopped (or the file it is a copy of), once the state file is settled.
pub fn resume(sources: &mut [Source], state: &mut StateFile) -> Result<()> {
    let mut files = Vec::new();
    let mut tracked = Vec::new();
    for source in sources.iter_mut() {
        if let Input::File(..) = source.input {
            let Input::File(path, file) = std::mem::replace(&mut source.input, nothing()) else {
                unreachable!("matched just above");
            };
            files.push((path.clone(), file));
            tracked.push((source, path));
        }
    }
    for ((source, path), start) in tracked.into_iter().zip(state.resume(files)?) {
        match start {
            Start::Read { resume, input } => {
                source.input = match input {
                    Positioned::File(file) => Input::File(path, file),
                    Positioned::Content(content) => {
                        // Decoded already: its file's bytes are not seen.
                        source.size = None;
                        Input::Content(content)
                    }
                };
                if let Some(size) = &mut source.size {
                    *size = size.saturating_sub(resume.mark.offset);
                }
                source.resume = Some(resume);
            }
            Start::Skip => source.size = Some(0),
        }
    }
    Ok(())
}

/// An input with nothing in it.
fn nothing() -> Input {
    Input::Content(Box::new(io::empty()))
}

/// The error for an input that could not be read to its end, after `line`
/// lines: damaged compressed data says so, naming the file and the line.
pub fn read_error(err: io::Error, name: &str, line: u64) -> anyhow::Error {
    if line == 0 {
        return match Damaged::of(&err) {
            Some(damage) => anyhow::anyhow!(
                "{name}: corrupt or truncated {} data before its first line ({}): nothing of \
                 it was read",
                damage.format,
                damage.cause()
            ),
            None => anyhow::Error::new(err).context(format!("cannot read {name}")),
        };
    }
    match Damaged::of(&err) {
        // A checksum is checked where the data it covers ends: the damage
        // may be anywhere before.
        Some(damage) if damage.cause().to_string().contains("checksum") => anyhow::anyhow!(
            "{name}: corrupt {} data, found after line {line} ({}): the lines before it were \
             read, and the damage may be in them (the checksum covers all the data before it)",
            damage.format,
            damage.cause()
        ),
        Some(damage) => anyhow::anyhow!(
            "{name}: corrupt or truncated {} data after line {line} ({}): the lines before it \
             were read",
            damage.format,
            damage.cause()
        ),
        None => anyhow::Error::new(err).context(format!("cannot read {name} after line {line}")),
    }
}

/// Opens every input before anything connects, so that a missing file costs
/// nothing. No FILE, or `-`, is standard input. A named pipe is only checked
/// here, and opened when its turn comes: its writer may be waiting for an
/// earlier one to be read. A file named twice (by another path, a hard
/// link or a symbolic link) is read once. The soft limit of open files is
/// raised to the hard one first.
pub fn open_inputs(files: &[PathBuf], tracking: Tracking) -> Result<Vec<Source>> {
    if files.is_empty() {
        return Ok(vec![stdin_source()]);
    }
    allow_open_files();
    let mut sources: Vec<Source> = Vec::new();
    for path in files {
        let source = if path == Path::new("-") {
            stdin_source()
        } else {
            open_path(path, tracking)?
        };
        if let Some(first) = sources
            .iter()
            .find(|s| s.identity.is_some() && s.identity == source.identity)
        {
            log::warn!(
                "{} is the same file as {}: reading it once",
                source.name,
                first.name
            );
            continue;
        }
        sources.push(source);
    }
    Ok(sources)
}

/// Raises this process's soft limit of open files to its hard limit, as
/// far as it goes: every input is held open from the start, and the usual
/// soft limit (1024) is below a backlog of daily files. Returns the limit
/// now in force, when it can be read.
pub fn allow_open_files() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

fn open_path(path: &Path, tracking: Tracking) -> Result<Source> {
    open_path_as(path, tracking).map_err(|err| {
        let too_many = err.chain().any(|cause| {
            cause
                .downcast_ref::<io::Error>()
                .is_some_and(|e| e.raw_os_error() == Some(libc::EMFILE))
        });
        if !too_many {
            return err;
        }
        let limit = allow_open_files().map_or_else(|| "?".to_owned(), |n| n.to_string());
        anyhow::anyhow!(
            "cannot open {}: more inputs than this process may hold open at once \
             (at most {limit} open files, ulimit -n): load them in several runs, \
             or raise the hard limit",
            path.display()
        )
    })
}

fn open_path_as(path: &Path, tracking: Tracking) -> Result<Source> {
    let context = || format!("cannot open {}", path.display());
    let meta = std::fs::metadata(path).with_context(context)?;
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
    if meta.file_type().is_fifo() {
        check_readable(path).with_context(context)?;
        return Ok(Source {
            name: path.display().to_string(),
            input: Input::Fifo(path.to_owned()),
            may_wait: true,
            compressed: false,
            resume: None,
            size: None,
            identity: Some((meta.dev(), meta.ino())),
        });
    }
    let file = File::open(path).with_context(context)?;
    let meta = file.metadata().with_context(context)?;
    // What is read of a compressed file is its content, of unknown size.
    let compressed = meta.is_file()
        && Format::of_file(&file)
            .with_context(context)?
            .is_compressed();
    let input = if meta.is_file() && tracking == Tracking::StateFile {
        Input::File(path.to_owned(), file)
    } else {
        let fd = (!meta.is_file()).then(|| file.as_raw_fd());
        Input::Stream(Box::new(file), fd)
    };
    Ok(Source {
        name: path.display().to_string(),
        input,
        may_wait: !meta.is_file(),
        compressed,
        resume: None,
        size: meta.is_file().then_some(meta.len()),
        identity: Some((meta.dev(), meta.ino())),
    })
}

/// Whether this process may open `path` for reading, without opening it
/// (opening a named pipe waits for its writer).
fn check_readable(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: access() reads a NUL-terminated path and keeps no pointer.
    match unsafe { libc::access(name.as_ptr(), libc::R_OK) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn stdin_source() -> Source {
    let stdin = io::stdin();
    let file = stdin.as_fd().try_clone_to_owned().map(File::from).ok();
    let meta = file.as_ref().and_then(|f| f.metadata().ok());
    let is_file = meta.as_ref().is_some_and(|m| m.is_file());
    // Only how long its last line is waited for depends on it: standard
    // input is never tracked.
    let compressed = is_file
        && file
            .as_ref()
            .and_then(|f| Format::of_file(f).ok())
            .is_some_and(Format::is_compressed);
    Source {
        name: "-".into(),
        input: Input::Stream(Box::new(stdin), (!is_file).then(|| io::stdin().as_raw_fd())),
        may_wait: !is_file,
        compressed,
        resume: None,
        size: None,
        identity: meta.map(|m| (m.dev(), m.ino())),
    }
}

/// Where reading is in one input.
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    pub index: usize,
    /// Byte offset of the next line, and lines before it.
    pub offset: u64,
    pub line: u64,
    /// Reads may wait for a writer on the other end (a pipe).
    pub may_wait: bool,
    /// Compressed: where its stream ends properly, its content does.
    pub compressed: bool,
    /// The state file tracks it.
    pub tracked: bool,
    /// The fingerprints of what was read up to `offset`.
    pub seen: Seen,
    /// Said to be where reading is, once: a file followed is polled
    /// again and again, and one with nothing new does not take the
    /// place of the file last read from.
    pub positioned: bool,
}

impl Cursor {
    /// How a read that ends mid-line is taken: a pipe's last line is its
    /// last, and so is that of compressed data whose stream ended properly
    /// (one cut short is an error, not an end); a plain file's may be
    /// being written.
    pub fn at_end(&self) -> AtEnd {
        if self.may_wait || self.compressed {
            AtEnd::Final
        } else {
            AtEnd::MayGrow
        }
    }

    pub fn start(index: usize, source: &Source) -> Cursor {
        let (offset, line, head) = source.resume.as_ref().map_or((0, 0, Head::default()), |r| {
            (r.mark.offset, r.mark.line, r.mark.head)
        });
        Cursor {
            index,
            offset,
            line,
            may_wait: source.may_wait,
            compressed: source.compressed,
            tracked: source.resume.is_some(),
            seen: Seen::starting_at(offset, head),
            positioned: false,
        }
    }
}

/// What [`next_line`] read into the buffer.
pub enum Line {
    /// A line, terminator included (unless the input ended in it), is in
    /// the buffer.
    Text,
    /// The line was longer than the limit and was skipped: its length, the
    /// bytes consumed with its terminator, and whether it had one (else
    /// the input ended in it).
    TooLong {
        length: u64,
        consumed: u64,
        terminated: bool,
    },
    /// No more input.
    End,
}

/// How long a file that ends mid-line is given to grow to the line's end
/// (the scanner may be writing it right now), in steps.
pub const LINE_END_WAIT: Duration = Duration::from_secs(1);
const LINE_END_STEP: Duration = Duration::from_millis(25);

/// How [`next_line`] treats an input that ends mid-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEnd {
    /// The end is final (a pipe whose writer closed it).
    Final,
    /// A file that may still grow: wait up to [`LINE_END_WAIT`] for the
    /// rest of the line before taking it as it is.
    MayGrow,
}

/// Reads one line into `buf`, holding at most `max` bytes of it (plus one
/// read's worth): a longer line is skipped to its end without being kept,
/// and handed to `spill` piece by piece (newline-terminated) instead.
/// `before_wait` runs whenever the next read may block, that is when what
/// was read ahead is used up, except while a long line is being skipped;
/// with true when it will (a file's last line is waited for).
/// A read that ends mid-line never splits a line in two: what follows is
/// read into the same line. `waited` is how long reads waited for a
/// line's end so far, up to [`LINE_END_WAIT`].
pub fn next_line<R: Read>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    max: u64,
    (at_end, waited): (AtEnd, &mut Duration),
    spill: &mut dyn FnMut(&[u8]),
    before_wait: &mut dyn FnMut(bool),
) -> io::Result<Line> {
    buf.clear();
    let mut waits = false;
    loop {
        if reader.buffer().is_empty() {
            before_wait(false);
        }
        let available = reader.fill_buf()?;
        if available.is_empty() {
            if buf.is_empty() {
                return Ok(Line::End);
            }
            if at_end == AtEnd::MayGrow && *waited < LINE_END_WAIT {
                if !std::mem::replace(&mut waits, true) {
                    before_wait(true);
                }
                std::thread::sleep(LINE_END_STEP);
                *waited += LINE_END_STEP;
                continue;
            }
            return Ok(Line::Text);
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

/// The error [`next_line`] gives when a stop signal came while it skipped
/// a line too long to hold, which may never end (`/dev/zero`).
pub fn stopped_mid_line() -> io::Error {
    io::Error::new(
        io::ErrorKind::Interrupted,
        "stopped in the middle of a line longer than --max-line-bytes",
    )
}

/// Skips the rest of a line found too long after `length` bytes, handing it
/// to `spill`; a stop signal ends it ([`stopped_mid_line`]).
fn skip_rest(
    reader: &mut impl BufRead,
    mut length: u64,
    mut terminated: bool,
    spill: &mut dyn FnMut(&[u8]),
) -> io::Result<Line> {
    while !terminated {
        if crate::stall::stop_asked() {
            return Err(stopped_mid_line());
        }
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
    Ok(Line::TooLong {
        length,
        consumed,
        terminated,
    })
}

impl Line {
    /// Whether the input ended in the line read into `buf`, before its
    /// terminator.
    pub fn unfinished(&self, buf: &[u8]) -> bool {
        match self {
            Line::Text => buf.last() != Some(&b'\n'),
            Line::TooLong { terminated, .. } => !terminated,
            Line::End => false,
        }
    }

    /// How many bytes the line read into `buf` has.
    pub fn length(&self, buf: &[u8]) -> u64 {
        match self {
            Line::TooLong { length, .. } => *length,
            _ => buf.len() as u64,
        }
    }
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
        let mut waited = Duration::ZERO;
        loop {
            match next_line(
                &mut reader,
                &mut buf,
                8,
                (AtEnd::Final, &mut waited),
                &mut |b| spilled.extend_from_slice(b),
                &mut |_| {},
            ) {
                Ok(Line::End) => break,
                Ok(Line::TooLong {
                    length, consumed, ..
                }) => seen.push(format!("long {length}/{consumed}")),
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

    /// A reader that hands out its parts one read at a time; an empty part
    /// is an end of input for now.
    struct Trickle(std::collections::VecDeque<&'static [u8]>);

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let Some(part) = self.0.pop_front() else {
                return Ok(0);
            };
            out[..part.len()].copy_from_slice(part);
            Ok(part.len())
        }
    }

    fn lines(parts: &[&'static [u8]], at_end: AtEnd) -> Vec<String> {
        let mut reader = BufReader::new(Trickle(parts.iter().copied().collect()));
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        loop {
            let mut waited = Duration::ZERO;
            let next = next_line(
                &mut reader,
                &mut buf,
                100,
                (at_end, &mut waited),
                &mut |_| {},
                &mut |_| {},
            );
            let Line::Text = next.expect("reads") else {
                break;
            };
            seen.push(String::from_utf8(buf.clone()).expect("utf-8"));
        }
        seen
    }

    #[test]
    fn a_read_that_ends_mid_line_does_not_split_it() {
        let parts: &[&[u8]] = &[b"{\"a\":", b"", b"1}\n{\"b\"", b"", b":2}\n"];
        assert_eq!(lines(parts, AtEnd::MayGrow), ["{\"a\":1}\n", "{\"b\":2}\n"]);
        assert_eq!(lines(&[b"last"], AtEnd::MayGrow), ["last"]);
        assert_eq!(
            lines(&[b"x\ny", b"", b"z\n"], AtEnd::Final),
            ["x\n", "y", "z\n"]
        );
    }

    #[test]
    fn trims_lf_and_crlf() {
        assert_eq!(trim_line(b"{}\r\n"), b"{}");
        assert_eq!(trim_line(b"{}\n"), b"{}");
        assert_eq!(trim_line(b"{}"), b"{}");
    }

    #[test]
    fn a_pipe_waits_only_when_empty_and_open() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let (reader, mut writer) = io::pipe().expect("a pipe");
        let fd = reader.as_raw_fd();
        assert!(would_wait(fd, Duration::ZERO), "empty");
        writer.write_all(b"{}\n").expect("write");
        assert!(!would_wait(fd, Duration::ZERO), "data");
        let mut rest = Vec::new();
        drop(writer);
        BufReader::new(reader.try_clone().expect("clone"))
            .read_to_end(&mut rest)
            .expect("read");
        assert!(!would_wait(fd, Duration::ZERO), "ended");
    }
}
