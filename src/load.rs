//! Reading, batching, writing and accounting.
//!
//! The calling thread reads and parses lines and encodes each valid finding
//! straight into a batch of COPY text rows; two writer threads, one pool
//! connection each, send batches with `COPY ... FROM STDIN`. A bounded queue
//! between them keeps memory flat whatever the input size, and lets parsing
//! and the network overlap.
//!
//! A batch the server refuses is split: PostgreSQL names the failing line
//! of a COPY, so the rows before and after it are sent again and only that
//! row is dropped; without a line number the batch is bisected. A failure of
//! the database itself (connection lost, server shut down, permission
//! revoked) drops the batch, and the run stops reading.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::connect::{Connection, POOL_SIZE, Pool, describe};
use crate::record::{self, Finding};
use crate::report::{Dropped, LoadReport};

/// An input: a named stream of lines.
pub struct Source {
    /// The path as given, or `-` for standard input.
    pub name: String,
    input: Box<dyn Read + Send>,
}

/// Opens every input before anything connects, so that a missing file costs
/// nothing. No FILE, or `-`, is standard input.
pub fn open_inputs(files: &[PathBuf]) -> Result<Vec<Source>> {
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
            Ok(Source {
                name: path.display().to_string(),
                input: Box::new(file),
            })
        })
        .collect()
}

fn stdin_source() -> Source {
    Source {
        name: "-".into(),
        input: Box::new(io::stdin()),
    }
}

/// Batch limits and line limits for a load.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line_bytes: u64,
    pub batch_rows: usize,
    pub batch_bytes: usize,
}

/// The columns every row has; `detected_at` is added only for rows that
/// carry a timestamp, so the column default applies to the others.
const COLUMNS: &str = "database, rule_id, description, category, severity, schema_name, \
                       table_name, column_name, masked_sample, primary_key, lsn";

/// Rows encoded as COPY text, with where each came from.
struct Batch {
    /// Whether the rows carry detected_at.
    timed: bool,
    data: Vec<u8>,
    rows: Vec<Row>,
}

/// One row of a batch.
struct Row {
    source: u32,
    line: u64,
    /// Its end offset in `Batch::data`; it starts where the previous one ends.
    end: usize,
}

impl Batch {
    fn new(timed: bool, limits: &Limits) -> Batch {
        Batch {
            timed,
            data: Vec::with_capacity(limits.batch_bytes + 4096),
            rows: Vec::with_capacity(limits.batch_rows),
        }
    }

    fn is_full(&self, limits: &Limits) -> bool {
        self.rows.len() >= limits.batch_rows || self.data.len() >= limits.batch_bytes
    }

    fn row_bytes(&self, rows: Range<usize>) -> &[u8] {
        let start = match rows.start {
            0 => 0,
            n => self.rows[n - 1].end,
        };
        &self.data[start..self.rows[rows.end - 1].end]
    }
}

/// State shared by the reader and the writers.
struct Shared<'a> {
    report: &'a Mutex<LoadReport>,
    names: Vec<String>,
    copy_timed: String,
    copy_untimed: String,
    /// Set when the database failed: stop reading, drop what is queued.
    failed: AtomicBool,
}

impl Shared<'_> {
    fn report(&self) -> std::sync::MutexGuard<'_, LoadReport> {
        // A writer that panicked leaves counts that are still meaningful.
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_rows(&self, batch: &Batch, rows: Range<usize>, kind: Dropped, reason: &str) {
        let mut report = self.report();
        for row in &batch.rows[rows] {
            report.drop_line(kind, &self.names[row.source as usize], row.line, &reason);
        }
    }
}

/// Loads every source through the pool, accounting for every line in
/// `report`. Returns an error only when an input could not be read.
pub fn load(
    pool: &Pool,
    settings: &Settings,
    sources: Vec<Source>,
    limits: Limits,
    report: &Mutex<LoadReport>,
) -> Result<()> {
    let table = settings.qualified_table();
    let shared = Shared {
        report,
        names: sources.iter().map(|s| s.name.clone()).collect(),
        copy_timed: format!("COPY {table} ({COLUMNS}, detected_at) FROM STDIN"),
        copy_untimed: format!("COPY {table} ({COLUMNS}) FROM STDIN"),
        failed: AtomicBool::new(false),
    };
    // Two batches queued at most: enough to keep both writers busy while the
    // reader fills the next ones, and memory bounded.
    let (sender, receiver) = sync_channel::<Batch>(POOL_SIZE as usize);
    let receiver = Arc::new(Mutex::new(receiver));
    std::thread::scope(|scope| {
        for index in 0..POOL_SIZE {
            let receiver = Arc::clone(&receiver);
            let shared = &shared;
            std::thread::Builder::new()
                .name(format!("writer-{index}"))
                .spawn_scoped(scope, move || write_batches(pool, shared, receiver))
                .expect("cannot start a writer thread");
        }
        drop(receiver);
        read_sources(sources, limits, sender, &shared)
    })
}

/// The reader: lines -> findings -> batches, until the input ends or the
/// database fails.
fn read_sources(
    sources: Vec<Source>,
    limits: Limits,
    sender: SyncSender<Batch>,
    shared: &Shared<'_>,
) -> Result<()> {
    let mut timed = Batch::new(true, &limits);
    let mut untimed = Batch::new(false, &limits);
    let mut line = Vec::with_capacity(64 * 1024);
    let mut scratch = Vec::with_capacity(1024);
    let send = |batch: &mut Batch| -> bool {
        let full = std::mem::replace(batch, Batch::new(batch.timed, &limits));
        match sender.send(full) {
            Ok(()) => true,
            Err(returned) => {
                // Only possible if every writer died: nothing may vanish.
                let batch = returned.0;
                shared.drop_rows(&batch, 0..batch.rows.len(), Dropped::Lost, "no writer left");
                false
            }
        }
    };
    for (index, source) in sources.into_iter().enumerate() {
        let name = &shared.names[index];
        let mut reader = BufReader::with_capacity(256 * 1024, source.input);
        let mut number = 0u64;
        loop {
            if shared.failed.load(Ordering::Relaxed) {
                shared.report().stopped = Some(format!(
                    "stopped reading at {name}:{} after a database failure",
                    number + 1
                ));
                return Ok(());
            }
            let next = next_line(&mut reader, &mut line, limits.max_line_bytes)
                .with_context(|| format!("cannot read {name} at line {}", number + 1))?;
            number += 1;
            let text = match next {
                Line::End => break,
                Line::TooLong(length) => {
                    let mut report = shared.report();
                    report.read += 1;
                    let reason = format!(
                        "line of {length} bytes is longer than --max-line-bytes ({})",
                        limits.max_line_bytes
                    );
                    report.drop_line(Dropped::Invalid, name, number, &reason);
                    continue;
                }
                Line::Text => trim_line(&line, number == 1),
            };
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match record::parse_line(text) {
                Ok(finding) => {
                    let batch = if finding.detected_at.is_some() {
                        &mut timed
                    } else {
                        &mut untimed
                    };
                    encode(&finding, &mut batch.data, &mut scratch);
                    batch.rows.push(Row {
                        source: index as u32,
                        line: number,
                        end: batch.data.len(),
                    });
                    shared.report().read += 1;
                    if batch.is_full(&limits) && !send(batch) {
                        return Ok(());
                    }
                }
                Err(reason) => {
                    let mut report = shared.report();
                    report.read += 1;
                    report.drop_line(Dropped::Invalid, name, number, &reason);
                }
            }
        }
    }
    for batch in [&mut timed, &mut untimed] {
        if !batch.rows.is_empty() && !send(batch) {
            break;
        }
    }
    Ok(())
}

/// What [`next_line`] read into the buffer.
enum Line {
    /// A line, terminator included, is in the buffer.
    Text,
    /// The line was longer than the limit and was skipped; its length.
    TooLong(u64),
    /// No more input.
    End,
}

/// Reads one line into `buf`, holding at most `max + 1` bytes of it: a
/// longer line is skipped to its end without being kept.
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: u64) -> io::Result<Line> {
    buf.clear();
    let read = reader.by_ref().take(max + 1).read_until(b'\n', buf)?;
    if read == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') || (read as u64) <= max {
        return Ok(Line::Text);
    }
    let mut length = read as u64;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(end) => {
                length += end as u64;
                reader.consume(end + 1);
                break;
            }
            None => {
                let n = available.len();
                length += n as u64;
                reader.consume(n);
            }
        }
    }
    Ok(Line::TooLong(length))
}

/// The line without its terminator (LF or CRLF) and, on a file's first line,
/// without a UTF-8 byte-order mark.
fn trim_line(line: &[u8], first: bool) -> &[u8] {
    let mut text = line.strip_suffix(b"\n").unwrap_or(line);
    text = text.strip_suffix(b"\r").unwrap_or(text);
    if first {
        text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    }
    text
}

/// Appends one finding as a row of COPY text format.
fn encode(finding: &Finding<'_>, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    for field in [
        &finding.database,
        &finding.rule_id,
        &finding.description,
        &finding.category,
    ] {
        copy_escape(field.as_bytes(), out);
        out.push(b'\t');
    }
    out.extend_from_slice(finding.severity.as_str().as_bytes());
    out.push(b'\t');
    for field in [
        &finding.schema_name,
        &finding.table_name,
        &finding.column_name,
        &finding.masked_sample,
    ] {
        copy_escape(field.as_bytes(), out);
        out.push(b'\t');
    }
    scratch.clear();
    scratch.push(b'{');
    for (index, (name, value)) in finding.primary_key.iter().enumerate() {
        if index > 0 {
            scratch.push(b',');
        }
        serde_json::to_writer(&mut *scratch, name).expect("writing JSON to memory cannot fail");
        scratch.push(b':');
        serde_json::to_writer(&mut *scratch, value).expect("writing JSON to memory cannot fail");
    }
    scratch.push(b'}');
    copy_escape(scratch, out);
    out.push(b'\t');
    write!(out, "{}", finding.lsn).expect("writing to memory cannot fail");
    if let Some(at) = &finding.detected_at {
        out.push(b'\t');
        copy_escape(at.as_bytes(), out);
    }
    out.push(b'\n');
}

/// Escapes a value for COPY text format: backslash, and the characters that
/// would end a column or a row.
fn copy_escape(value: &[u8], out: &mut Vec<u8>) {
    if !value
        .iter()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'))
    {
        out.extend_from_slice(value);
        return;
    }
    for &byte in value {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(byte),
        }
    }
}

/// A writer: takes batches off the queue until the reader is done.
fn write_batches(pool: &Pool, shared: &Shared<'_>, receiver: Arc<Mutex<Receiver<Batch>>>) {
    let mut connection: Option<Connection> = None;
    loop {
        let next = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(batch) = next else { return };
        let all = 0..batch.rows.len();
        if shared.failed.load(Ordering::Relaxed) {
            shared.drop_rows(
                &batch,
                all,
                Dropped::Lost,
                "not sent: the database failed earlier in this run",
            );
            continue;
        }
        let client = match &mut connection {
            Some(client) => client,
            None => match pool.get() {
                Ok(client) => connection.insert(client),
                Err(err) => {
                    let reason = format!("not sent: cannot connect: {err}");
                    log::error!("{reason}");
                    shared.failed.store(true, Ordering::Relaxed);
                    shared.drop_rows(&batch, all, Dropped::Lost, &reason);
                    continue;
                }
            },
        };
        if let Err(reason) = write_batch(client, shared, &batch) {
            log::error!("{reason}");
            shared.failed.store(true, Ordering::Relaxed);
            if client.is_closed() {
                connection = None;
            }
        }
    }
}

/// How a COPY failed.
enum CopyError {
    /// The server refused one row (its 1-based line in the COPY) or, when it
    /// does not say which, some row of the batch.
    Row { line: Option<usize>, reason: String },
    /// The database failed: nothing more can be written.
    Database(String),
}

/// Writes every row of `batch`, isolating rows the server refuses. Returns
/// the reason when the database failed; the rows not written are then
/// already accounted as lost.
fn write_batch(client: &mut Connection, shared: &Shared<'_>, batch: &Batch) -> Result<(), String> {
    let sql = if batch.timed {
        &shared.copy_timed
    } else {
        &shared.copy_untimed
    };
    let mut pending = Vec::from([0..batch.rows.len()]);
    while let Some(rows) = pending.pop() {
        if rows.is_empty() {
            continue;
        }
        match copy_rows(client, sql, batch.row_bytes(rows.clone())) {
            Ok(()) => shared.report().inserted += rows.len() as u64,
            Err(CopyError::Row { line, reason }) => {
                let bad = match line {
                    Some(line) if (1..=rows.len()).contains(&line) => rows.start + line - 1,
                    _ if rows.len() > 1 => {
                        let middle = rows.start + rows.len() / 2;
                        pending.push(middle..rows.end);
                        pending.push(rows.start..middle);
                        continue;
                    }
                    _ => rows.start,
                };
                let reason = format!("refused by the server: {reason}");
                shared.drop_rows(batch, bad..bad + 1, Dropped::Refused, &reason);
                // COPY stops at the first bad row, so the rest is untested:
                // when bad rows are dense, resending all of it after each one
                // would be quadratic; probe with a chunk sized by how far the
                // last attempt got.
                let probe = (bad + 1 + 2 * (bad - rows.start).max(8)).min(rows.end);
                pending.push(probe..rows.end);
                pending.push(bad + 1..probe);
                pending.push(rows.start..bad);
            }
            Err(CopyError::Database(reason)) => {
                let reason = format!("not inserted: database failure: {reason}");
                shared.drop_rows(batch, rows, Dropped::Lost, &reason);
                for rest in pending {
                    shared.drop_rows(batch, rest, Dropped::Lost, &reason);
                }
                return Err(reason);
            }
        }
    }
    Ok(())
}

/// One COPY statement: atomic on its own, so the rows are either all in or
/// none.
fn copy_rows(client: &mut Connection, sql: &str, data: &[u8]) -> Result<(), CopyError> {
    let mut writer = client.copy_in(sql).map_err(|e| classify(&e))?;
    if let Err(err) = writer.write_all(data) {
        // The driver wraps its own error in an io::Error.
        return Err(
            match err
                .get_ref()
                .and_then(|e| e.downcast_ref::<postgres::Error>())
            {
                Some(pg) => classify(pg),
                None => CopyError::Database(err.to_string()),
            },
        );
    }
    writer.finish().map(drop).map_err(|e| classify(&e))
}

/// Tells a refused row from a failed database, by SQLSTATE class.
fn classify(err: &postgres::Error) -> CopyError {
    let Some(db) = err.as_db_error() else {
        return CopyError::Database(describe(err));
    };
    let code = db.code().code();
    let reason = format!("{} (SQLSTATE {code})", db.message());
    // Data exceptions, integrity violations, trigger and routine exceptions,
    // program limits (such as an over-long index entry): the row is at fault.
    let row_classes = ["22", "23", "P0", "2F", "38", "39", "54"];
    if row_classes.iter().any(|class| code.starts_with(class)) {
        let line = db.where_().and_then(copy_line);
        CopyError::Row { line, reason }
    } else {
        CopyError::Database(describe(err))
    }
}

/// The line number in a COPY error's context, "COPY findings, line 3, ...".
fn copy_line(context: &str) -> Option<usize> {
    context
        .lines()
        .rev()
        .find(|l| l.starts_with("COPY "))
        .and_then(|l| l.split(", line ").nth(1))
        .and_then(|rest| {
            let digits: &str = &rest[..rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len())];
            digits.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_line_numbers() {
        assert_eq!(
            copy_line("COPY findings, line 3, column lsn: \"x\""),
            Some(3)
        );
        assert_eq!(
            copy_line("PL/pgSQL function f() line 4 at RAISE\nCOPY findings, line 12"),
            Some(12)
        );
        assert_eq!(copy_line("SQL statement \"SELECT 1\""), None);
    }

    #[test]
    fn escapes_copy_text() {
        let mut out = Vec::new();
        copy_escape(b"a\\b\tc\nd\re", &mut out);
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re");
    }

    #[test]
    fn long_lines_are_skipped_whole() {
        let input = b"short\n0123456789abcdef\nnext\nlast";
        let mut reader = BufReader::with_capacity(4, &input[..]);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        loop {
            match next_line(&mut reader, &mut buf, 8).unwrap() {
                Line::End => break,
                Line::TooLong(n) => seen.push(format!("long {n}")),
                Line::Text => {
                    seen.push(String::from_utf8(trim_line(&buf, false).to_vec()).unwrap())
                }
            }
            assert!(buf.len() <= 9);
        }
        assert_eq!(seen, ["short", "long 16", "next", "last"]);
    }

    #[test]
    fn trims_crlf_and_bom() {
        assert_eq!(trim_line(b"\xEF\xBB\xBF{}\r\n", true), b"{}");
        assert_eq!(trim_line(b"\xEF\xBB\xBF{}\r\n", false), b"\xEF\xBB\xBF{}");
    }
}
