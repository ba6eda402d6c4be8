//! Compressed inputs: gzip and zstd, recognised by their first bytes (not by
//! the name), decoded as a stream so that memory stays bounded whatever the
//! size. Both the reader (`load`) and the state file (`state`, which takes
//! fingerprints of the decoded content) use it.
//!
//! A gzip file may hold several members (`cat a.gz b.gz`), and a zstd file
//! several frames: all are read. Data that cannot be decoded, or that ends
//! before its stream does (a file cut short, or still being written), is a
//! [`Damaged`] error, told apart from an error of the file itself.

use std::error::Error;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::GzDecoder;
use std::os::unix::fs::FileExt;

/// How an input's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// A zstd skippable frame's magic, 0x184D2A5?, but for its first byte
/// (0x50 to 0x5f): pzstd starts its files with one.
const ZSTD_SKIPPABLE: &[u8] = &[0x50, 0x2a, 0x4d, 0x18];

/// Whether `start` begins a zstd frame, or a skippable frame (0x18 is a
/// control character: text never starts so).
fn is_zstd(start: &[u8]) -> bool {
    start.starts_with(ZSTD_MAGIC)
        || (start.len() >= MAGIC_LEN
            && start[0] & 0xf0 == 0x50
            && start[1..MAGIC_LEN] == ZSTD_SKIPPABLE[1..])
}
/// Bytes needed to tell the format.
const MAGIC_LEN: usize = 4;

/// Compressed formats recognised by their first bytes only to be refused
/// with words that say what to do, not read as text line by line. (The
/// digit after bzip2's `BZh` is checked too: text may start so.)
const UNSUPPORTED: &[(&[u8], &str)] = &[
    (b"BZh", "bzip2"),
    (&[0xfd, b'7', b'z', b'X'], "xz"),
    (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
    (&[0x1f, 0x9d], "compress (.Z)"),
    (b"LZIP", "lzip"),
];

/// The compressed format `start` begins, when it is one of [`UNSUPPORTED`].
fn unsupported(start: &[u8]) -> Option<&'static str> {
    UNSUPPORTED
        .iter()
        .find(|(magic, name)| {
            start.starts_with(magic)
                && (*name != "bzip2" || start.get(3).is_some_and(u8::is_ascii_digit))
        })
        .map(|(_, name)| *name)
}

/// The error of an input in a compressed format this does not read.
fn refuse(start: &[u8]) -> io::Result<()> {
    match unsupported(start) {
        Some(name) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "compressed with {name}, which pgsense-pg does not read (gzip and zstd only): \
                 decompress it first"
            ),
        )),
        None => Ok(()),
    }
}

impl Format {
    /// The format of a stream that starts with `start` (at least
    /// [`MAGIC_LEN`] bytes of it, or all of it when it is shorter). Text
    /// never starts with these bytes: 1f is a control character, and
    /// 28 b5 is not UTF-8.
    pub fn of(start: &[u8]) -> Format {
        if start.starts_with(GZIP_MAGIC) {
            Format::Gzip
        } else if is_zstd(start) {
            Format::Zstd
        } else {
            Format::Plain
        }
    }

    /// The format of a regular file, from its first bytes (read without
    /// moving its position).
    pub fn of_file(file: &File) -> io::Result<Format> {
        let mut start = [0; MAGIC_LEN];
        let mut read = 0;
        while read < MAGIC_LEN {
            match file.read_at(&mut start[read..], read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        refuse(&start[..read])?;
        Ok(Format::of(&start[..read]))
    }

    pub fn is_compressed(self) -> bool {
        self != Format::Plain
    }

    /// The decoded content of `raw`.
    pub fn decode(self, raw: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
        if self == Format::Plain {
            return Ok(raw);
        }
        let raw = Raw(raw);
        Ok(match self {
            Format::Plain => unreachable!("returned above"),
            Format::Gzip => Box::new(Checked {
                format: self,
                decoder: Members {
                    decoder: Some(GzDecoder::new(BufReader::new(raw))),
                },
            }),
            Format::Zstd => Box::new(Checked {
                format: self,
                decoder: zstd::stream::read::Decoder::new(raw)?,
            }),
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Plain => "plain",
            Format::Gzip => "gzip",
            Format::Zstd => "zstd",
        })
    }
}

/// The decoded content of a stream whose format its first bytes tell, found
/// at the first read: a pipe's writer may not have written anything yet
/// when the input is opened, and the reader may need to say it is waiting.
pub struct Sniffing {
    state: State,
}

enum State {
    Unknown(Box<dyn Read + Send>),
    Known(Box<dyn Read + Send>),
    /// Telling the format failed; the error was returned.
    Failed,
}

impl Sniffing {
    pub fn new(raw: Box<dyn Read + Send>) -> Sniffing {
        Sniffing {
            state: State::Unknown(raw),
        }
    }

    fn decoder(&mut self) -> io::Result<&mut Box<dyn Read + Send>> {
        if let State::Unknown(_) = self.state {
            let State::Unknown(mut raw) = std::mem::replace(&mut self.state, State::Failed) else {
                unreachable!("checked just above");
            };
            let start = read_start(&mut raw)?;
            refuse(&start)?;
            let format = Format::of(&start);
            let whole: Box<dyn Read + Send> = Box::new(io::Cursor::new(start).chain(raw));
            self.state = State::Known(format.decode(whole)?);
        }
        match &mut self.state {
            State::Known(decoder) => Ok(decoder),
            _ => Err(io::Error::other("the input's format could not be told")),
        }
    }
}

impl Read for Sniffing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder()?.read(buf)
    }
}

/// The first bytes of a stream: [`MAGIC_LEN`] of them, or fewer at its
/// end, or as soon as they cannot be the start of a magic number (a person
/// typing at a terminal is not kept waiting for a fourth byte).
fn read_start(raw: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut start = [0; MAGIC_LEN];
    let mut len = 0;
    while len < MAGIC_LEN
        && [GZIP_MAGIC, ZSTD_MAGIC]
            .into_iter()
            .chain(UNSUPPORTED.iter().map(|(magic, _)| *magic))
            .any(|m| could_start(m, &start[..len]))
        || could_start_skippable(&start[..len])
    {
        match raw.read(&mut start[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(start[..len].to_vec())
}

/// Whether `bytes`, fewer than [`MAGIC_LEN`], may be the first bytes of a
/// stream starting with `magic`: more are to be read to tell.
fn could_start_skippable(bytes: &[u8]) -> bool {
    bytes.len() < MAGIC_LEN
        && bytes.first().is_none_or(|first| first & 0xf0 == 0x50)
        && bytes.get(1..).unwrap_or_default() == &ZSTD_SKIPPABLE[1..bytes.len().max(1)]
}

fn could_start(magic: &[u8], bytes: &[u8]) -> bool {
    let n = magic.len().min(bytes.len());
    magic[..n] == bytes[..n] && bytes.len() < MAGIC_LEN
}

/// Compressed data that could not be decoded: corrupt, or cut short.
#[derive(Debug)]
pub struct Damaged {
    pub format: Format,
    cause: io::Error,
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt or truncated {} data ({})",
            self.format, self.cause
        )
    }
}

impl Error for Damaged {}

impl Damaged {
    /// What the decoder said.
    pub fn cause(&self) -> &io::Error {
        &self.cause
    }

    /// The damage an I/O error stands for, if it is one.
    pub fn of(err: &io::Error) -> Option<&Damaged> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<Damaged>())
    }
}

/// An error of the file under a decoder, which the decoder passes on: not
/// damage.
#[derive(Debug)]
struct RawError(io::Error);

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for RawError {}

/// The bytes under a decoder, with their errors marked as the file's.
struct Raw(Box<dyn Read + Send>);

impl Read for Raw {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|err| io::Error::new(err.kind(), RawError(err)))
    }
}

/// The gzip members of a stream one after the other (`cat a.gz b.gz`).
/// Zeros after the last member (a file padded to a block size) end it, as
/// gzip takes them; anything else after a member must be another one.
struct Members<R: BufRead> {
    /// None once the stream ended.
    decoder: Option<GzDecoder<R>>,
}

impl<R: BufRead> Read for Members<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = &mut self.decoder else {
                return Ok(0);
            };
            let read = decoder.read(buf)?;
            if read > 0 || buf.is_empty() {
                return Ok(read);
            }
            let Some(decoder) = self.decoder.take() else {
                return Ok(0);
            };
            let mut raw = decoder.into_inner();
            if another_member(&mut raw)? {
                self.decoder = Some(GzDecoder::new(raw));
            }
        }
    }
}

/// After a member: whether another starts (its header is checked by its
/// decoder); false at the stream's end, or when only zeros are left
/// (consumed).
fn another_member(raw: &mut impl BufRead) -> io::Result<bool> {
    let mut zeros = false;
    loop {
        let available = raw.fill_buf()?;
        if available.is_empty() {
            return Ok(false);
        }
        match available.iter().position(|&byte| byte != 0) {
            None => {
                zeros = true;
                let len = available.len();
                raw.consume(len);
            }
            Some(0) if !zeros => return Ok(true),
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after the zeros that follow the last member",
                ));
            }
        }
    }
}

/// A decoder whose own errors become [`Damaged`], while the file's pass
/// through as they were.
struct Checked<D> {
    format: Format,
    decoder: D,
}

impl<D: Read> Read for Checked<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.decoder.read(buf).map_err(|err| {
            if err.get_ref().is_some_and(|inner| inner.is::<RawError>()) {
                let kind = err.kind();
                match err.into_inner().map(|inner| inner.downcast::<RawError>()) {
                    Some(Ok(raw)) => raw.0,
                    _ => io::Error::from(kind),
                }
            } else {
                let kind = match err.kind() {
                    io::ErrorKind::UnexpectedEof => io::ErrorKind::UnexpectedEof,
                    _ => io::ErrorKind::InvalidData,
                };
                io::Error::new(
                    kind,
                    Damaged {
                        format: self.format,
                        cause: err,
                    },
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text).expect("encodes");
        encoder.finish().expect("encodes")
    }

    fn zstd(text: &[u8]) -> Vec<u8> {
        zstd::encode_all(text, 3).expect("encodes")
    }

    fn decoded(bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Sniffing::new(Box::new(io::Cursor::new(bytes))).read_to_end(&mut out)?;
        Ok(out)
    }

    fn text(lines: u32) -> Vec<u8> {
        (0..lines)
            .map(|n| format!("{{\"line\":{n},\"pad\":\"{}\"}}\n", n * 7919))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn the_format_is_told_by_the_first_bytes() {
        assert_eq!(Format::of(b"{\"a\":1}\n"), Format::Plain);
        assert_eq!(Format::of(b""), Format::Plain);
        assert_eq!(Format::of(&gzip(b"x")), Format::Gzip);
        assert_eq!(Format::of(&zstd(b"x")), Format::Zstd);
        assert_eq!(Format::of(&[0x28, 0xb5]), Format::Plain);
        // pzstd's files start with a skippable frame.
        assert_eq!(Format::of(&skippable(zstd(b"x"))), Format::Zstd);
        assert_eq!(Format::of(b"P*M"), Format::Plain);
    }

    /// `frames` after a skippable frame of four bytes, as pzstd writes.
    fn skippable(frames: Vec<u8>) -> Vec<u8> {
        let mut bytes = vec![0x5e, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        bytes.extend(frames);
        bytes
    }

    #[test]
    fn other_formats_are_told_to_be_refused() {
        assert_eq!(unsupported(b"BZh91AY&SY"), Some("bzip2"));
        assert_eq!(unsupported(b"\xfd7zXZ\x00"), Some("xz"));
        // Text that starts as bzip2 does, but for its digit.
        assert_eq!(unsupported(b"BZhello"), None);
        assert_eq!(unsupported(b"{\"a\":1}"), None);
        assert_eq!(unsupported(&gzip(b"x")), None);
        assert!(refuse(b"LZIP\x01").is_err());
    }

    #[test]
    fn every_member_and_frame_is_read() {
        let text = text(2000);
        let (a, b) = text.split_at(1234);
        for encode in [gzip, zstd] {
            assert_eq!(decoded(encode(&text)).expect("decodes"), text);
            let mut two = encode(a);
            two.extend(encode(b));
            assert_eq!(decoded(two).expect("decodes"), text);
        }
        assert_eq!(decoded(skippable(zstd(&text))).expect("decodes"), text);
        assert_eq!(decoded(b"ab".to_vec()).expect("plain"), b"ab");
        assert_eq!(decoded(Vec::new()).expect("empty"), b"");
    }

    /// Zeros after the last gzip member (a file padded to a block size)
    /// end it, as gzip takes them; anything after the zeros, or a member
    /// that does not start as one, is damage.
    #[test]
    fn zeros_after_the_last_gzip_member_end_it() {
        let text = text(300);
        let (a, b) = text.split_at(999);
        let mut padded = gzip(a);
        padded.extend(gzip(b));
        padded.extend([0; 70_000]);
        assert_eq!(decoded(padded.clone()).expect("decodes"), text);
        for after in [&b"x"[..], &b"\x1f\x8b"[..]] {
            let mut garbage = padded.clone();
            garbage.extend(after);
            let err = decoded(garbage).expect_err("data after the zeros");
            assert!(Damaged::of(&err).is_some(), "{err}");
        }
        let mut garbage = gzip(a);
        garbage.extend(b"not gzip");
        let err = decoded(garbage).expect_err("not a member");
        assert!(Damaged::of(&err).is_some(), "{err}");
    }

    #[test]
    fn cut_or_corrupt_data_is_damage() {
        let text = text(5000);
        for (encode, format) in [(gzip as fn(&[u8]) -> Vec<u8>, "gzip"), (zstd, "zstd")] {
            let whole = encode(&text);
            let cut = whole[..whole.len() / 2].to_vec();
            let err = decoded(cut).expect_err("cut short");
            let damage = Damaged::of(&err).expect("damage");
            assert!(
                damage
                    .to_string()
                    .starts_with(&format!("corrupt or truncated {format} data"))
            );
            let mut corrupt = whole.clone();
            for byte in &mut corrupt[20..60] {
                *byte ^= 0x5a;
            }
            let err = decoded(corrupt).expect_err("corrupt");
            assert!(Damaged::of(&err).is_some(), "{err}");
        }
    }

    #[test]
    fn an_error_of_the_file_is_not_damage() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let gz = gzip(&text(10));
        let raw: Box<dyn Read + Send> = Box::new(io::Cursor::new(gz[..10].to_vec()).chain(Failing));
        let mut out = Vec::new();
        let err = Sniffing::new(raw).read_to_end(&mut out).expect_err("fails");
        assert!(Damaged::of(&err).is_none());
        assert_eq!(err.to_string(), "disk on fire");
    }
}
