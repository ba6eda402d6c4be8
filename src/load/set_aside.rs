//! After a database failure that retries could not outlast, the input not
//! read yet is copied to the reject file as it is, without parsing it, so
//! that replaying the reject file completes the table. Inputs that may wait
//! for a writer (pipes) are left alone: they may never end.

use std::io::{BufRead, BufReader, Read};

use super::control::Control;
use super::input::{AtEnd, Cursor, Source};
use super::ledger::Ledger;
use super::turns::Turn;
use crate::rejects::Rejects;

/// An input not read to its end when the database failed for good.
pub struct Unread {
    reader: BufReader<Box<dyn Read + Send>>,
    /// Where reading stopped.
    cursor: Cursor,
}

impl Unread {
    /// An input not started; None for one that may wait for a writer,
    /// which is left alone.
    pub fn new(index: usize, source: Source) -> Option<Unread> {
        let cursor = Cursor::start(index, &source);
        if cursor.may_wait {
            return None;
        }
        let (reader, _) = source.input.into_reader(None, None).ok()?;
        Some(Unread {
            reader: BufReader::new(reader),
            cursor,
        })
    }

    /// An input read up to `cursor`.
    pub fn new_at(reader: BufReader<Box<dyn Read + Send>>, cursor: Cursor) -> Unread {
        Unread { reader, cursor }
    }
}

/// Copies each input's rest to the reject file, until a signal says stop.
pub fn set_aside(
    rest: impl Iterator<Item = Unread>,
    ledger: &Ledger,
    control: &Control,
    turn: &Turn<'_>,
) {
    if !ledger.keeps_lines() || turn.gap() {
        return;
    }
    for unread in rest {
        if unread.cursor.may_wait {
            continue;
        }
        set_aside_one(unread, ledger, control, turn);
        if control.interrupted() {
            break;
        }
    }
}

/// What was copied of one input.
#[derive(Default)]
struct Copied {
    bytes: u64,
    lines: u64,
    /// Lines with content: blank ones are not findings, as when reading.
    findings: u64,
    /// What follows the last newline seen: copied once its line ends.
    partial: Vec<u8>,
}

impl Copied {
    fn count(&mut self, line: &[u8]) {
        self.lines += 1;
        self.findings += u64::from(!super::reader::is_blank(line));
    }

    /// Copies whole lines of `chunk` (with the partial line before them).
    fn chunk(&mut self, chunk: &[u8], rejects: &mut Rejects) {
        let Some(end) = memchr::memrchr(b'\n', chunk) else {
            self.partial.extend_from_slice(chunk);
            return;
        };
        rejects.append(&self.partial);
        rejects.append(&chunk[..=end]);
        self.bytes += (self.partial.len() + end + 1) as u64;
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', &chunk[..=end]) {
            if start == 0 && !self.partial.is_empty() {
                let mut first = std::mem::take(&mut self.partial);
                first.extend_from_slice(&chunk[..newline]);
                self.count(&first);
            } else {
                self.count(&chunk[start..newline]);
            }
            start = newline + 1;
        }
        self.partial.clear();
        self.partial.extend_from_slice(&chunk[end + 1..]);
    }
}

fn set_aside_one(mut unread: Unread, ledger: &Ledger, control: &Control, turn: &Turn<'_>) {
    let cursor = unread.cursor;
    let mut copied = Copied::default();
    let result = {
        let mut held = ledger.hold_rejects();
        let Some(rejects) = held.as_deref_mut() else {
            return;
        };
        let result = match cursor.offset {
            // Not copied, as when reading: mid-file it would make the line
            // invalid on replay.
            0 => skip_bom(&mut unread.reader, &mut copied),
            _ => Ok(()),
        }
        .and_then(|()| copy_rest(&mut unread.reader, &mut copied, rejects, control));
        // An unterminated last line of a tracked plain file may be
        // mid-write: it is left for the next run, as when reading normally
        // (that of compressed data read to its proper end is whole).
        let whole = !cursor.tracked || (cursor.at_end() == AtEnd::Final && result.is_ok());
        if !copied.partial.is_empty() && whole && !control.interrupted() {
            let partial = std::mem::take(&mut copied.partial);
            rejects.append(&partial);
            rejects.append(b"\n");
            copied.bytes += partial.len() as u64;
            copied.count(&partial);
        }
        result
    };
    if let Err(err) = result {
        log::error!(
            "cannot read {} after line {}: {err}",
            ledger.name(cursor.index),
            cursor.line + copied.lines
        );
    }
    ledger.set_aside(copied.findings);
    let end = (cursor.offset + copied.bytes, cursor.line + copied.lines);
    ledger.written(cursor.index, end, None, turn);
}

/// Skips the UTF-8 BOM an input starts with, counting its bytes as copied.
fn skip_bom(reader: &mut impl BufRead, copied: &mut Copied) -> std::io::Result<()> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    if reader.fill_buf()?.starts_with(BOM) {
        reader.consume(BOM.len());
        copied.bytes += BOM.len() as u64;
    }
    Ok(())
}

fn copy_rest(
    reader: &mut impl BufRead,
    copied: &mut Copied,
    rejects: &mut Rejects,
    control: &Control,
) -> std::io::Result<()> {
    loop {
        if control.interrupted() {
            return Ok(());
        }
        let chunk = match reader.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(chunk) => chunk,
            Err(err) => return Err(err),
        };
        copied.chunk(chunk, rejects);
        let n = chunk.len();
        reader.consume(n);
    }
}
