//! An input file's content as the loader reads it (decoded, for a
//! compressed file), and the fingerprints taken of it: its first bytes
//! ([`Head`]) and the bytes just before an offset (the tail).
//!
//! A plain file is read where asked (pread). A compressed one can only be
//! decoded from its start: it is decoded forward, keeping its first bytes
//! and the last ones before where it got to, and from its start again only
//! when asked for an offset behind that.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::compressed::{Damaged, Format};

/// Bytes before an offset kept as a fingerprint.
pub const TAIL: u64 = 32;
/// The most bytes the head fingerprint covers.
pub const HEAD: u64 = 4096;
/// Bytes kept before the decoding position: a tail, and the bytes
/// [`Content::ends_at`] read past it.
const KEPT: usize = 2 * TAIL as usize;

/// A fingerprint of a file's first bytes: how many, and their FNV-1a hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub len: u64,
    pub fnv: u64,
}

impl Head {
    pub fn of(bytes: &[u8]) -> Head {
        Head {
            len: bytes.len() as u64,
            fnv: fnv1a(bytes),
        }
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms, unlike std's
/// hasher, and plenty to tell files apart (the tail is checked too).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(0xcbf2_9ce4_8422_2325, bytes)
}

/// FNV-1a of what was hashed to `hash`, followed by `bytes`.
fn fnv1a_from(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The fingerprints of what the reader read up to an offset, taken as it
/// reads: a file truncated before its lines are settled (copytruncate)
/// still gets its marks' head and tail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// The head so far, when reading covered everything from the start
    /// (or the state file's head, whole up to where reading started).
    head: Option<Head>,
    tail: [u8; TAIL as usize],
    tail_len: usize,
}

impl Seen {
    /// Reading starts at `offset`, where the state file had `head`.
    pub fn starting_at(offset: u64, head: Head) -> Seen {
        let head = match offset {
            0 => Some(Head::of(&[])),
            _ => (head.len == offset.min(HEAD)).then_some(head),
        };
        Seen {
            head,
            ..Seen::default()
        }
    }

    /// `read` was read right after what was seen.
    pub fn push(&mut self, read: &[u8]) {
        if let Some(head) = &mut self.head
            && head.len < HEAD
        {
            let take = read.len().min((HEAD - head.len) as usize);
            head.fnv = fnv1a_from(head.fnv, &read[..take]);
            head.len += take as u64;
        }
        let keep = TAIL as usize;
        if read.len() >= keep {
            self.tail.copy_from_slice(&read[read.len() - keep..]);
            self.tail_len = keep;
            return;
        }
        let total = self.tail_len + read.len();
        if total > keep {
            self.tail.copy_within(total - keep..self.tail_len, 0);
            self.tail_len = keep - read.len();
        }
        self.tail[self.tail_len..self.tail_len + read.len()].copy_from_slice(read);
        self.tail_len += read.len();
    }

    /// Something was read that was not seen.
    pub fn forget(&mut self) {
        self.head = None;
        self.tail_len = 0;
    }

    /// The bytes before `offset`, when all were seen (every byte read
    /// since the input's start or the last 32).
    pub fn tail_before(&self, offset: u64) -> Option<&[u8]> {
        (self.tail_len as u64 == offset.min(TAIL)).then(|| &self.tail[..self.tail_len])
    }

    /// The head fingerprint at `offset`, when it was seen whole.
    pub fn head_at(&self, offset: u64) -> Option<Head> {
        self.head.filter(|head| head.len == offset.min(HEAD))
    }
}

/// The bytes in hexadecimal, as tails are written in the state file.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An input file's content, read forward for fingerprints.
pub struct Content {
    file: Arc<File>,
    format: Format,
    decoded: Option<Decoded>,
}

/// Where decoding a compressed file got to.
struct Decoded {
    stream: Box<dyn Read + Send>,
    /// Decoded bytes so far.
    pos: u64,
    /// The first [`HEAD`] bytes.
    head: Vec<u8>,
    /// The last bytes before `pos`, at most [`KEPT`].
    last: Vec<u8>,
    /// The content ended at `pos`.
    ended: bool,
    /// Why it ended there, when its data is damaged: handed to the reader
    /// when it gets there.
    damage: Option<io::Error>,
}

impl Content {
    pub fn new(file: Arc<File>) -> Result<Content> {
        let format = Format::of_file(&file).context("cannot read the input's first bytes")?;
        Ok(Content {
            file,
            format,
            decoded: None,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// The size of the file as it is on disk (compressed).
    /// When the file was created (Unix nanoseconds), when the file system
    /// keeps it.
    pub fn born(&self) -> Option<u64> {
        let created = self.file.metadata().ok()?.created().ok()?;
        let since = created.duration_since(std::time::UNIX_EPOCH).ok()?;
        u64::try_from(since.as_nanos()).ok()
    }

    pub fn file_len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .context("cannot read the input's size")?
            .len())
    }

    /// The head fingerprint of the first `len` bytes; None when the content
    /// is shorter.
    pub fn head(&mut self, len: u64) -> Result<Option<Head>> {
        let len = len.min(HEAD);
        if !self.format.is_compressed() {
            return Ok(self.pread(0, len)?.map(|b| Head::of(&b)));
        }
        let decoded = self.decoded_to(len)?;
        Ok((decoded.head.len() as u64 >= len).then(|| Head::of(&decoded.head[..len as usize])))
    }

    /// The [`TAIL`] bytes before `offset`, in hexadecimal; None when the
    /// content is shorter than `offset`.
    pub fn tail(&mut self, offset: u64) -> Result<Option<String>> {
        let start = offset.saturating_sub(TAIL);
        if !self.format.is_compressed() {
            return Ok(self.pread(start, offset - start)?.map(|b| hex(&b)));
        }
        let decoded = self.decoded_to(offset)?;
        if decoded.pos < offset {
            return Ok(None);
        }
        if offset <= HEAD && (decoded.head.len() as u64) >= offset {
            return Ok(Some(hex(&decoded.head[start as usize..offset as usize])));
        }
        let first = decoded.pos - decoded.last.len() as u64;
        let from = (start - first) as usize;
        Ok(Some(hex(
            &decoded.last[from..from + (offset - start) as usize]
        )))
    }

    /// Whether the content ends exactly at `offset` (read to there).
    pub fn ends_at(&mut self, offset: u64) -> Result<bool> {
        if !self.format.is_compressed() {
            return Ok(self.file_len()? == offset);
        }
        let decoded = self.decoded_to(offset)?;
        if decoded.pos != offset {
            return Ok(false);
        }
        decoded.read(1).context("cannot read the input")?;
        Ok(decoded.ended && decoded.damage.is_none() && decoded.pos == offset)
    }

    /// The content from `offset` on, for the reader; None when the content
    /// is shorter. A plain file is returned as the file itself, positioned.
    pub fn into_reader(mut self, offset: u64) -> Result<Option<Positioned>> {
        if !self.format.is_compressed() {
            let len = self.file_len()?;
            if len < offset {
                return Ok(None);
            }
            let mut file = (*self.file)
                .try_clone()
                .context("cannot duplicate a file handle")?;
            file.seek(SeekFrom::Start(offset))
                .context("cannot seek in the input")?;
            return Ok(Some(Positioned::File(file)));
        }
        // Decoded past what it kept before `offset` (to compare heads with
        // the marks' for a file that starts early in the content, say): from
        // the start again, to there.
        let decoded = self.decoded_to(offset)?;
        if decoded.pos - decoded.last.len() as u64 > offset {
            self.decoded = None;
        }
        let decoded = self.decoded_to(offset)?;
        if decoded.pos < offset {
            return Ok(None);
        }
        let Some(decoded) = self.decoded.take() else {
            unreachable!("decoded just above");
        };
        // Bytes read past `offset` (by ends_at) go first.
        let first = decoded.pos - decoded.last.len() as u64;
        let ahead = io::Cursor::new(decoded.last[(offset - first) as usize..].to_vec());
        Ok(Some(Positioned::Content(match decoded.damage {
            Some(damage) => Box::new(ahead.chain(Failing(Some(damage)))),
            None => Box::new(ahead.chain(decoded.stream)),
        })))
    }

    /// Whether the content is damaged (corrupt or cut short) before
    /// `offset`, or at it.
    pub fn damaged_by(&mut self, offset: u64) -> Result<bool> {
        if !self.format.is_compressed() {
            return Ok(false);
        }
        let decoded = self.decoded_to(offset)?;
        Ok(decoded.damage.is_some())
    }

    /// Frees the decoder, until it is needed again.
    pub fn release(&mut self) {
        self.decoded = None;
    }

    /// `len` bytes at `start` of a plain file; None when it is shorter.
    fn pread(&self, start: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let mut bytes = vec![0; len as usize];
        match self.file.read_exact_at(&mut bytes, start) {
            Ok(()) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(err) => Err(err).context("cannot read the input to take its fingerprint"),
        }
    }

    /// The decoder, at `offset` or further (or at the content's end, when
    /// it is shorter), started again from the beginning when it is past
    /// what it kept of `offset`.
    fn decoded_to(&mut self, offset: u64) -> Result<&mut Decoded> {
        let behind = self.decoded.as_ref().is_some_and(|d| {
            let first = d.pos - d.last.len() as u64;
            offset.saturating_sub(TAIL) < first && offset > HEAD.min(d.head.len() as u64)
        });
        if behind {
            self.decoded = None;
        }
        if self.decoded.is_none() {
            let raw: Box<dyn Read + Send> = Box::new(Pread {
                file: Arc::clone(&self.file),
                pos: 0,
            });
            let stream = self.format.decode(raw).context("cannot start decoding")?;
            self.decoded = Some(Decoded {
                stream,
                pos: 0,
                head: Vec::new(),
                last: Vec::new(),
                ended: false,
                damage: None,
            });
        }
        let decoded = self.decoded.as_mut().expect("set just above");
        while decoded.pos < offset && !decoded.ended {
            decoded
                .read(offset - decoded.pos)
                .context("cannot decode the input to check where it was loaded up to")?;
        }
        Ok(decoded)
    }
}

impl Decoded {
    /// Decodes up to `most` more bytes.
    fn read(&mut self, most: u64) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        let want = most.min(buf.len() as u64) as usize;
        let n = loop {
            match self.stream.read(&mut buf[..want]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if Damaged::of(&err).is_some() => {
                    self.ended = true;
                    self.damage = Some(err);
                    return Ok(());
                }
                other => break other?,
            }
        };
        if n == 0 {
            self.ended = true;
            return Ok(());
        }
        let bytes = &buf[..n];
        let room = (HEAD as usize).saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(n)]);
        self.last
            .extend_from_slice(&bytes[n.saturating_sub(KEPT)..]);
        let extra = self.last.len().saturating_sub(KEPT);
        self.last.drain(..extra);
        self.pos += n as u64;
        Ok(())
    }
}

/// Where reading an input starts.
pub enum Positioned {
    /// A plain file, its position at the offset.
    File(File),
    /// A compressed file's decoded content from the offset.
    Content(Box<dyn Read + Send>),
}

/// A reader that fails with the damage found where it starts.
struct Failing(Option<io::Error>);

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        self.0.take().map_or(Ok(0), Err)
    }
}

/// A file read with pread, from a shared handle whose position it leaves
/// alone.
struct Pread {
    file: Arc<File>,
    pos: u64,
}

impl Read for Pread {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn what_was_seen_gives_the_fingerprints_of_the_file() {
        let text = b"{\"lsn\":1}\n\n{\"lsn\":22}\n{\"lsn\":333}\n{\"lsn\":4444}\n";
        let mut seen = Seen::starting_at(0, Head::default());
        let mut offset = 0;
        for line in text.split_inclusive(|&b| b == b'\n') {
            seen.push(line);
            offset += line.len() as u64;
            let start = offset.saturating_sub(TAIL) as usize;
            assert_eq!(
                seen.tail_before(offset),
                Some(&text[start..offset as usize])
            );
            assert_eq!(
                seen.head_at(offset),
                Some(Head::of(&text[..offset as usize]))
            );
        }
        // Started after the beginning: the tail is unknown until 32 bytes
        // were seen, the head unless the state file's was whole.
        let mut late = Seen::starting_at(200, Head::of(&[b'a'; 100]));
        late.push(b"{\"lsn\":5}\n");
        assert_eq!(late.tail_before(211), None);
        assert_eq!(late.head_at(211), None);
        late.push(&[b'x'; 40]);
        assert_eq!(late.tail_before(251), Some(&[b'x'; 32][..]));
        late.forget();
        assert_eq!(late.tail_before(251), None);
        let big = vec![b'y'; 5000];
        let mut whole = Seen::starting_at(5000, Head::of(&big[..4096]));
        whole.push(b"z\n");
        assert_eq!(whole.head_at(5002), Some(Head::of(&big[..4096])));
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    fn temp(name: &str, bytes: &[u8]) -> Arc<File> {
        let dir = std::env::temp_dir().join(format!("pgsense-content-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        Arc::new(File::open(&path).expect("open"))
    }

    fn text() -> Vec<u8> {
        (0..3000)
            .map(|n| format!("line {n}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text).expect("encodes");
        encoder.finish().expect("encodes")
    }

    #[test]
    fn a_compressed_file_has_the_fingerprints_of_its_content() {
        let text = text();
        let mut plain = Content::new(temp("plain", &text)).expect("plain");
        let mut packed = Content::new(temp("gz", &gzip(&text))).expect("gz");
        let zst = zstd::encode_all(&text[..], 3).expect("encodes");
        let mut zst = Content::new(temp("zst", &zst)).expect("zst");
        assert_eq!(packed.format(), Format::Gzip);
        let len = text.len() as u64;
        // Forward, backward (from the start again), within the head, at
        // the end and past it.
        for offset in [10, 5000, 20_000, 700, 4096, 4097, 40, len, len + 1, 0, 33] {
            let expected = plain.tail(offset).expect("tail");
            assert_eq!(packed.tail(offset).expect("tail"), expected, "{offset}");
            assert_eq!(zst.tail(offset).expect("tail"), expected, "{offset}");
            for len in [offset, 100] {
                let head = plain.head(len).expect("head");
                assert_eq!(packed.head(len).expect("head"), head, "{len}");
            }
        }
        assert_eq!(
            plain.head(9000).expect("head"),
            Some(Head::of(&text[..4096]))
        );
        assert_eq!(plain.tail(5).expect("tail"), Some(hex(b"line ")));
        for content in [&mut plain, &mut packed, &mut zst] {
            assert!(!content.ends_at(len - 1).expect("ends"));
            assert!(content.ends_at(len).expect("ends"));
            assert!(!content.ends_at(100).expect("ends"));
        }
    }

    #[test]
    fn the_reader_starts_at_the_offset_even_after_looking_past_it() {
        let text = text();
        for (name, bytes) in [("plain2", text.clone()), ("gz2", gzip(&text))] {
            let mut content = Content::new(temp(name, &bytes)).expect("open");
            assert!(!content.ends_at(5000).expect("ends"));
            let Some(positioned) = content.into_reader(5000).expect("reader") else {
                panic!("shorter than 5000");
            };
            let mut rest = Vec::new();
            match positioned {
                Positioned::File(mut file) => file.read_to_end(&mut rest),
                Positioned::Content(mut stream) => stream.read_to_end(&mut rest),
            }
            .expect("reads");
            assert_eq!(rest, &text[5000..], "{name}");
        }
    }
}
