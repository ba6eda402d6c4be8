//! The reader: input lines -> findings -> batches for the writers, until
//! every input is read, the database fails or a signal stops the run.
//!
//! Each line is first classified ([`classify`]) and then handled by one
//! method per kind. While the reader waits for input from a pipe it holds
//! no rows (it hands over everything before it waits), so the writers can
//! end the run without it. Files followed (--follow) are read by
//! [`Reader::read_available`], a batch at a time; the loop in `follow.rs`
//! decides when the rows held are handed over.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use anyhow::Result;

use super::batch::Origin;
use super::control::Control;
use super::copy::Scratch;
use super::input::{AtEnd, Cursor, Input, Line, Opened, Source, next_line, read_error, would_wait};
use super::ledger::{Dropped, Ledger};
use super::pending::Pending;
use super::set_aside::{Unread, set_aside};
use super::turns::{PanicGuard, Turn};
use crate::rejects::Rejects;
use line::with_hint;
pub use line::{Kind, classify, is_blank};
pub use position::Position;

/// How much of an input is read at a time: small enough to stay in the
/// cache between the kernel's copy into it and the parse, large enough
/// that the copy costs little per byte (reading a 350 MB file from the
/// page cache took 69 ms of CPU in 64 KiB reads, 59 ms in 128 KiB or 256
/// KiB ones).
pub const READ_BUFFER: usize = 128 * 1024;

mod line;
mod position;

/// How long a pipe that ran dry may take to get more before the rows read
/// are handed over: a writer streaming into it refills it within
/// microseconds, and batches then stay full (handed over at each dry
/// moment, they were half as big, twice as many commits).
const PIPE_GRACE: Duration = Duration::from_millis(20);

/// How the reader reads.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    pub max_line_bytes: u64,
    /// Stop reading once more lines than this were rejected.
    pub max_rejects: Option<u64>,
}

/// How reading a followed file ended.
pub enum Available {
    /// At its end, or at a line not finished yet.
    Idle,
    /// A batch was handed over (which may have waited for the database):
    /// the file is to be looked at again before reading on.
    More,
    /// Stop reading.
    Stop,
}

/// How reading one input ended.
enum Flow {
    /// Read to its end (or to an unfinished last line): go on.
    Next,
    /// Could not be read to its end (damaged compressed data, say): the
    /// lines before were taken; go on with the next input.
    Failed(anyhow::Error),
    /// Stop reading.
    Stop,
    /// The database failed for good: set the rest aside.
    SetAside(Unread),
}

/// Why reading stops before the next line.
enum Halt {
    Stop,
    /// The database failed for good: copy what is left to the reject file.
    SetAside,
}

pub struct Reader {
    options: ReadOptions,
    ledger: Arc<Ledger>,
    control: Arc<Control>,
    position: Arc<Position>,
    pending: Pending,
    line: Vec<u8>,
    /// How long reads of the input being read waited for the end of a line
    /// to leave for the next run, in all.
    left_line_waited: Duration,
    /// Kept from line to line by the straight path.
    scratch: Box<Scratch>,
}

impl Reader {
    pub fn new(
        options: ReadOptions,
        pending: Pending,
        ledger: Arc<Ledger>,
        control: Arc<Control>,
        position: Arc<Position>,
    ) -> Reader {
        Reader {
            options,
            ledger,
            control,
            position,
            pending,
            line: Vec::with_capacity(64 * 1024),
            left_line_waited: Duration::ZERO,
            scratch: Box::new(Scratch::new()),
        }
    }

    /// Reads every source in turn. An input that cannot be read to its end
    /// does not keep the others from being read: the error is returned at
    /// the end (the last one; any before it is printed), or printed when
    /// reading stops early for another reason, which the summary then
    /// gives.
    pub fn run(mut self, sources: Vec<Source>) -> Result<()> {
        let turns = self.pending.turns();
        let _guard = PanicGuard(&turns);
        let mut failed: Option<anyhow::Error> = None;
        let mut sources = sources.into_iter().enumerate();
        while let Some((index, source)) = sources.next() {
            match self.read_input(index, source)? {
                Flow::Next => {}
                Flow::Failed(err) => {
                    if let Some(earlier) = failed.replace(err) {
                        crate::exit::print_error(&earlier);
                    }
                }
                Flow::Stop => return stopped_early(failed),
                Flow::SetAside(current) => {
                    let rest = sources.filter_map(|(index, source)| Unread::new(index, source));
                    let turns = self.pending.turns();
                    let turn = turns.wait(self.pending.take_seq());
                    set_aside(
                        std::iter::once(current).chain(rest),
                        &self.ledger,
                        &self.control,
                        &turn,
                    );
                    return stopped_early(failed);
                }
            }
        }
        if self.pending.flush() {
            self.control.read_all();
        }
        failed.map_or(Ok(()), Err)
    }

    fn read_input(&mut self, index: usize, source: Source) -> Result<Flow> {
        let mut cursor = Cursor::start(index, &source);
        self.left_line_waited = Duration::ZERO;
        let as_opened = AsOpened::of(&cursor, &source);
        // A file a state file tracks is read on only while it starts as it
        // did: a copytruncate mid-run must not pass new lines for old ones.
        let changed = cursor.tracked.then(Arc::<AtomicBool>::default);
        let (input, fd) = match self.open(&cursor, source, changed.as_ref()) {
            Some(Ok(input)) => input,
            Some(Err(err)) => return Ok(Flow::Failed(err)),
            None => return Ok(Flow::Stop),
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, input);
        self.position.set(index, cursor.line);
        self.pending
            .start_input(index, (cursor.offset, cursor.line));
        loop {
            match self.must_stop() {
                Some(Halt::Stop) => return Ok(Flow::Stop),
                Some(Halt::SetAside) => return Ok(Flow::SetAside(Unread::new_at(reader, cursor))),
                None => {}
            }
            match self.advance_buffered(&mut reader, &mut cursor) {
                Some(true) => continue,
                Some(false) => return Ok(Flow::Stop),
                None => {}
            }
            // The scanner may be writing the last line right now: a run
            // that keeps its place leaves it for the next run. (Compressed
            // data that ended properly is whole: its last line can never
            // get an end.)
            let leaves_unfinished = cursor.tracked && cursor.at_end() == AtEnd::MayGrow;
            let next = match self.next_of_input(&mut reader, &cursor, leaves_unfinished, fd)? {
                Ok(next) => next,
                Err(flow) => return Ok(flow),
            };
            match next {
                Line::End => break,
                // The writer of a pipe was stopped mid-line with the run.
                Line::Text
                    if self.line.last() != Some(&b'\n') && self.interrupted_mid_line(&cursor) =>
                {
                    self.drop_interrupted_line(&cursor);
                    return Ok(Flow::Stop);
                }
                _ if leaves_unfinished && next.unfinished(&self.line) => {
                    // Said, not only logged: a line that never gets its
                    // end (its writer died mid-line) is never loaded.
                    log::warn!(
                        "{}:{}: the file ends in this line, which has no newline yet \
                         ({} bytes): left for the next run, which loads it once it ends",
                        self.ledger.name(index),
                        cursor.line + 1,
                        next.length(&self.line)
                    );
                    break;
                }
                Line::Text | Line::TooLong { .. } => {}
            }
            if !self.advance(&next, &mut cursor) {
                return Ok(Flow::Stop);
            }
        }
        if changed.is_some_and(|changed| changed.load(Ordering::SeqCst)) {
            self.say_changed(&cursor);
        }
        self.say_if_shrunk(&cursor, &as_opened);
        // A batch holds lines of one input.
        Ok(if self.pending.flush() {
            Flow::Next
        } else {
            Flow::Stop
        })
    }

    /// The content of `source`; None when nothing more may be sent.
    /// Opening a named pipe waits for its writer, as long as it takes: the
    /// rows read before go first, and a stop does not wait for it.
    fn open(
        &mut self,
        cursor: &Cursor,
        source: Source,
        changed: Option<&Arc<AtomicBool>>,
    ) -> Option<Result<Opened>> {
        if matches!(source.input, Input::Fifo(_)) {
            self.position.set(cursor.index, cursor.line);
            if !self.pending.flush() {
                return None;
            }
            self.control.set_reader_idle(true);
        }
        // A compressed file's progress is its file's bytes read.
        let raw_read =
            (source.compressed && source.size.is_some()).then(|| Arc::clone(&self.position));
        let opened = source.input.into_reader(changed, raw_read);
        self.control.set_reader_idle(false);
        Some(opened.map_err(|err| anyhow::anyhow!("cannot open {}: {err}", source.name)))
    }

    /// The next line of the input `cursor` is in, or how reading it ends.
    fn next_of_input<R: Read>(
        &mut self,
        reader: &mut BufReader<R>,
        cursor: &Cursor,
        leaves_unfinished: bool,
        fd: Option<RawFd>,
    ) -> Result<Result<Line, Flow>> {
        match self.next_line(reader, cursor, cursor.at_end(), leaves_unfinished, fd) {
            Ok(Some(next)) => Ok(Ok(next)),
            Ok(None) => Ok(Err(Flow::Stop)),
            Err(err) if self.stopped_mid_line(&err) => Ok(Err(Flow::Stop)),
            Err(err) => {
                let err = read_error(err, &self.ledger.name(cursor.index), cursor.line);
                match self.pending.flush() {
                    true => Ok(Err(Flow::Failed(err))),
                    false => Err(err),
                }
            }
        }
    }

    /// The line after `cursor` was cut short by the signal that stops the
    /// run: it is dropped, with what was read and not sent.
    fn drop_interrupted_line(&mut self, cursor: &Cursor) {
        let reason = "not loaded: interrupted in the middle of the line";
        // Read, if not whole: where reading stopped says so too.
        self.position.set(cursor.index, cursor.line + 1);
        self.ledger
            .drop_read(cursor.index, cursor.line + 1, Dropped::Interrupted, &reason);
        self.pending.drop_unsent();
    }

    /// The file under `cursor` was copied and truncated, or rewritten,
    /// while it was read: reading it stopped there.
    fn say_if_shrunk(&self, cursor: &Cursor, opened: &AsOpened) {
        let Some(size) = opened.size.filter(|&size| cursor.offset < size) else {
            return;
        };
        // The size now, as long as the name is still the file's.
        let now = std::fs::metadata(&opened.name)
            .ok()
            .filter(|meta| Some((meta.dev(), meta.ino())) == opened.identity)
            .map(|meta| meta.len());
        let offset = cursor.offset;
        log::warn!(
            "{}: shrank while it was read, from {size} to {} bytes (truncated by another \
             process?): read up to byte {offset}, line {}; its last line read may have been \
             cut",
            self.ledger.name(cursor.index),
            now.unwrap_or(offset),
            cursor.line
        );
    }

    fn say_changed(&self, cursor: &Cursor) {
        log::warn!(
            "{}: truncated or rewritten while it was read (copytruncate?): read up to line \
             {}; the next run loads the rest from its copy, and the new lines",
            self.ledger.name(cursor.index),
            cursor.line
        );
    }

    /// Reads the lines of a followed file up to its end, or up to a line
    /// not finished yet, left unread until it is: `rewind`, the file under
    /// `reader`, is positioned back at its start. Without one (the file is
    /// done growing) such a line is the last. Batches are handed over when
    /// full only: the caller flushes.
    pub fn read_available<R: Read>(
        &mut self,
        reader: &mut BufReader<R>,
        cursor: &mut Cursor,
        rewind: Option<&File>,
    ) -> Result<Available> {
        if self.pending.source() != Some(cursor.index) {
            if !self.pending.flush() {
                return Ok(Available::Stop);
            }
            self.pending
                .start_input(cursor.index, (cursor.offset, cursor.line));
        }
        if !std::mem::replace(&mut cursor.positioned, true) {
            self.position.set(cursor.index, cursor.line);
        }
        loop {
            if self.must_stop().is_some() {
                return Ok(Available::Stop);
            }
            let batches = self.pending.batches();
            match self.advance_buffered(reader, cursor) {
                Some(false) => return Ok(Available::Stop),
                Some(true) if self.pending.batches() != batches => return Ok(Available::More),
                Some(true) => continue,
                None => {}
            }
            // A line without its end yet is read again from its start
            // next time, not waited for: the file may be truncated and
            // written again meanwhile.
            let next = match self.next_line(reader, cursor, AtEnd::Final, rewind.is_some(), None) {
                Ok(Some(next)) => next,
                Ok(None) => return Ok(Available::Stop),
                Err(err) if self.stopped_mid_line(&err) => return Ok(Available::Stop),
                Err(err) => {
                    let name = self.ledger.name(cursor.index);
                    return Err(read_error(err, &name, cursor.line));
                }
            };
            match next {
                Line::End => return Ok(Available::Idle),
                _ if rewind.is_some() && next.unfinished(&self.line) => {
                    let ahead = reader.buffer().len();
                    reader.consume(ahead);
                    if let Some(mut file) = rewind {
                        file.seek(SeekFrom::Start(cursor.offset))?;
                    }
                    return Ok(Available::Idle);
                }
                Line::Text | Line::TooLong { .. } => {}
            }
            let batches = self.pending.batches();
            if !self.advance(&next, cursor) {
                return Ok(Available::Stop);
            }
            if self.pending.batches() != batches {
                return Ok(Available::More);
            }
        }
    }

    /// The run stops: what was read and not handed over is dropped (with
    /// --follow, left in its file).
    pub fn stop(&mut self) {
        self.pending.drop_unsent();
    }

    pub fn turns(&self) -> std::sync::Arc<super::turns::Turns> {
        self.pending.turns()
    }

    /// Hands over what was read. False when nothing more may be sent.
    pub fn flush(&mut self) -> bool {
        self.pending.flush()
    }

    /// Whether rows read wait to be handed over.
    pub fn holds_rows(&self) -> bool {
        self.pending.holds_lines()
    }

    /// Waits until every batch handed over so far is settled, then runs
    /// `then` in that turn (after flushing what was read).
    pub fn after_settled<T>(&mut self, then: impl FnOnce(&Ledger) -> T) -> Option<T> {
        if !self.pending.flush() {
            return None;
        }
        let turns = self.pending.turns();
        let turn = turns.wait(self.pending.take_seq());
        (!turn.gap()).then(|| then(&self.ledger))
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Whether an input that ended mid-line was cut by the signal that
    /// stops the run: a Ctrl-C reaches the writer of a pipe and the loader
    /// together, and the end of the pipe may come first.
    fn interrupted_mid_line(&self, cursor: &Cursor) -> bool {
        if cursor.may_wait && !self.control.interrupted() {
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        self.control.interrupted()
    }

    /// Whether reading must stop before the next line, and how.
    /// Whether reading stopped in the middle of a line for a stop signal
    /// ([`super::input::stopped_mid_line`]): the line is not taken, and
    /// the stop says where reading stopped.
    fn stopped_mid_line(&mut self, err: &io::Error) -> bool {
        let stopped = err.kind() == io::ErrorKind::Interrupted && self.control.stopping();
        if stopped {
            self.pending.drop_unsent();
        }
        stopped
    }

    fn must_stop(&mut self) -> Option<Halt> {
        if let Some(max) = self.options.max_rejects
            && self.ledger.counts().rejected() > max
        {
            self.control.hit_limit();
            self.pending.flush();
            return Some(Halt::Stop);
        }
        if self.control.stopping() {
            self.pending.drop_unsent();
            if self.control.failed() && !self.control.interrupted() {
                return Some(Halt::SetAside);
            }
            return Some(Halt::Stop);
        }
        None
    }

    /// Reads the next line into `self.line`. None when the rows read could
    /// not be handed over before a wait: nothing more may be sent.
    ///
    /// A line too long to hold goes to the reject file in pieces as it is
    /// read, in a turn of the reader's own (after every batch before it),
    /// holding the reject file until its end so that no other line lands in
    /// between; unless the input ends in it and `leaves_unfinished` (the
    /// next read, or the next run, takes it whole).
    fn next_line<R: Read>(
        &mut self,
        reader: &mut BufReader<R>,
        cursor: &Cursor,
        at_end: AtEnd,
        leaves_unfinished: bool,
        fd: Option<RawFd>,
    ) -> io::Result<Option<Line>> {
        // What was read so far is counted before a read that may wait.
        self.pending.count_read();
        let ledger = Arc::clone(&self.ledger);
        let control = &*self.control;
        let turns = self.pending.turns();
        let pending = RefCell::new(&mut self.pending);
        let mut spill: Option<Spill<'_>> = None;
        let handed_over = Cell::new(true);
        // A line that would be left for the next run is waited for up to
        // LINE_END_WAIT in all: its writer may end the file mid-line again,
        // and again, for as long as it writes. Any other, each up to that.
        let mut line_waited = Duration::ZERO;
        let waited = match leaves_unfinished {
            true => &mut self.left_line_waited,
            false => &mut line_waited,
        };
        let next = next_line(
            reader,
            &mut self.line,
            self.options.max_line_bytes,
            (at_end, waited),
            &mut |bytes| {
                if !ledger.keeps_lines() {
                    return;
                }
                let spill = spill.get_or_insert_with(|| {
                    let mut pending = pending.borrow_mut();
                    handed_over.set(pending.flush() && handed_over.get());
                    let turn = turns.wait(pending.take_seq());
                    // After a batch that could not be settled, nothing more
                    // is written: the next run reads the line again.
                    let rejects = (!turn.gap()).then(|| ledger.hold_rejects()).flatten();
                    let before = rejects.as_ref().map_or(0, |r| r.len());
                    Spill {
                        turn,
                        rejects,
                        before,
                    }
                });
                if let Some(rejects) = &mut spill.rejects {
                    rejects.append(bytes);
                }
            },
            // About to wait for a writer on the other end of a pipe, or for
            // the end of a file's last line: hand over every row read so
            // far, so none waits in memory, and say so, so that a stop need
            // not wait for more input.
            &mut |waits| {
                if waits || (cursor.may_wait && fd.is_none_or(|fd| would_wait(fd, PIPE_GRACE))) {
                    handed_over.set(pending.borrow_mut().send() && handed_over.get());
                    control.set_reader_idle(true);
                }
            },
        );
        control.set_reader_idle(false);
        settle_spill(spill, &next, cursor, leaves_unfinished, &ledger);
        if !handed_over.get() {
            self.pending.drop_unsent();
            return Ok(None);
        }
        next.map(Some)
    }

    /// Moves `cursor` past the line just read, and takes it. False when
    /// nothing more may be sent.
    fn advance(&mut self, next: &Line, cursor: &mut Cursor) -> bool {
        let line = std::mem::take(&mut self.line);
        let more = self.advance_over(next, &line, cursor);
        self.line = line;
        more
    }

    /// Takes the next line straight from `reader`'s buffer when the buffer
    /// holds it whole, as it mostly does, sparing a copy. None: it is to be
    /// read with [`Reader::next_line`]; else whether more may be sent.
    fn advance_buffered<R: Read>(
        &mut self,
        reader: &mut BufReader<R>,
        cursor: &mut Cursor,
    ) -> Option<bool> {
        let buffer = reader.buffer();
        let end = memchr::memchr(b'\n', buffer)?;
        if end as u64 > self.options.max_line_bytes {
            return None;
        }
        let more = self.advance_over(&Line::Text, &buffer[..=end], cursor);
        reader.consume(end + 1);
        Some(more)
    }

    /// [`Reader::advance`] over `line`, the line read.
    fn advance_over(&mut self, next: &Line, line: &[u8], cursor: &mut Cursor) -> bool {
        let start = cursor.offset;
        match next {
            Line::TooLong { consumed, .. } => {
                cursor.offset += consumed;
                cursor.seen.forget();
            }
            _ => {
                cursor.offset += line.len() as u64;
                // Only the state file's marks need what was seen.
                if cursor.tracked {
                    cursor.seen.push(line);
                }
            }
        }
        if !cursor.compressed {
            self.position.add_bytes(cursor.offset - start);
        }
        cursor.line += 1;
        self.position.set(cursor.index, cursor.line);
        self.take(next, line, cursor, start)
    }

    /// Takes `line`, just read, which started at byte `start`. False when
    /// nothing more may be sent.
    fn take(&mut self, next: &Line, line: &[u8], cursor: &Cursor, start: u64) -> bool {
        let (index, number) = (cursor.index, cursor.line);
        let end = (cursor.offset, cursor.line);
        self.pending.seen(cursor.seen);
        match classify(next, line, start == 0, &mut self.scratch) {
            Kind::TooLong { length } => {
                let reason = format!(
                    "line of {length} bytes is longer than --max-line-bytes ({})",
                    self.options.max_line_bytes
                );
                self.ledger
                    .drop_read(index, number, Dropped::Invalid, &reason);
                if self.ledger.keeps_lines() {
                    // Settled as it was written to the reject file.
                    self.pending.settled_to(end);
                } else {
                    self.pending.invalid(end);
                }
            }
            Kind::Blank => self.pending.skip(end),
            Kind::Invalid { raw, reason } => {
                let reason = with_hint(raw, reason.0);
                self.ledger
                    .drop_read(index, number, Dropped::Invalid, &reason);
                self.pending.reject(raw, end);
            }
            Kind::Finding { raw, finding } => {
                let origin = Origin {
                    source: index,
                    line: number,
                    offset: start,
                };
                return self.pending.add(&finding, origin, end, raw);
            }
        }
        true
    }
}

/// After a line too long to hold went to the reject file piece by piece:
/// settled when it was whole, else taken back (the next read, or the next
/// run, takes it whole).
fn settle_spill(
    spill: Option<Spill<'_>>,
    next: &io::Result<Line>,
    cursor: &Cursor,
    leaves_unfinished: bool,
    ledger: &Ledger,
) {
    let Some(Spill {
        turn,
        rejects: Some(mut rejects),
        before,
    }) = spill
    else {
        return;
    };
    match next {
        Ok(Line::TooLong {
            consumed,
            terminated,
            ..
        }) if *terminated || !leaves_unfinished => {
            drop(rejects);
            let end = (cursor.offset + consumed, cursor.line + 1);
            ledger.written(cursor.index, end, None, &turn);
        }
        _ => {
            if let Err(err) = rejects.cut_to(before) {
                log::error!("{err:#}");
            }
        }
    }
}

/// Reading stopped early (the summary says why): the error of an input
/// that could not be read to its end before is printed, not returned, so
/// that it does not stand for the reason.
fn stopped_early(failed: Option<anyhow::Error>) -> Result<()> {
    if let Some(err) = failed {
        crate::exit::print_error(&err);
    }
    Ok(())
}

/// A long line being written to the reject file, in the reader's turn
/// (not written after a batch that could not be settled).
struct Spill<'t> {
    turn: Turn<'t>,
    rejects: Option<MutexGuard<'t, Rejects>>,
    /// The reject file's length before the line.
    before: u64,
}

#[cfg(test)]
mod tests;

/// A plain file nothing tracks, as it was when opened: less is read of it
/// when another process truncated it meanwhile.
struct AsOpened {
    size: Option<u64>,
    name: String,
    identity: Option<(u64, u64)>,
}

impl AsOpened {
    fn of(cursor: &Cursor, source: &Source) -> AsOpened {
        AsOpened {
            size: source
                .size
                .filter(|_| !cursor.tracked && !cursor.compressed),
            name: source.name.clone(),
            identity: source.identity,
        }
    }
}
