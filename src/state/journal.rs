//! The journal beside the state file (`STATE.journal`): one JSON line per
//! settled batch, synced to disk before the batch commits. It holds the
//! transaction id that commits the batch, where the batch ends in its
//! input, and how long the reject file is with the batch's dropped lines in
//! it. A run that was killed leaves it behind; the next run asks the server
//! which of those transactions committed ([`super::StateFile::recover`]).
//!
//! Once the server has acknowledged a batch's COMMIT, a line saying so
//! follows, not synced: it survives a killed run (the system still has it),
//! and saves asking the server, which after a crash of its own cannot
//! always tell. Lost with the system, it only leaves the question to ask.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Mark;
use crate::exit::{Status, WithStatus};

/// A transaction, as the server that ran it knows it: its id, the timeline
/// of that server's WAL (a promoted standby starts a new one, and may hand
/// out the same ids again), and when the server last reset its shared
/// statistics, which it does when it recovers from a crash (and may then
/// hand out again the ids of transactions whose WAL was lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub id: i64,
    pub timeline: Option<String>,
    pub stats_reset: Option<String>,
    /// Its rows were copied under savepoints, and carry their ids.
    pub savepoints: bool,
}

/// What a committed batch leaves in the table, to recognise it there when
/// the server cannot say by its transaction id (after a failover): how many
/// rows carry the transaction's id, the lsn of one of them, and the sum of
/// all their lsns (one lsn alone could be another batch's too: the scanner
/// gives every finding of a scanned transaction the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub rows: u64,
    pub lsn: i64,
    /// None in state files written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn_sum: Option<i128>,
    /// The rows carry the ids of savepoints, not the transaction's: they
    /// cannot be told apart by it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub savepoints: bool,
}

/// One settled batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The transaction that commits the batch; None when the batch has
    /// nothing to commit (its lines are all in the reject file, or blank).
    pub txid: Option<i64>,
    /// The timeline of the server that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<String>,
    /// When that server last reset its statistics (see [`Txn`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_reset: Option<String>,
    /// What it leaves in the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
    /// The input's key in the state file, and where the batch ends in it;
    /// None for an input the state file does not track (standard input).
    pub key: Option<String>,
    pub mark: Option<Mark>,
    /// The reject file's length with the batch's dropped lines in it.
    #[serde(default)]
    pub rejects: Option<u64>,
    /// The server acknowledged the COMMIT of `txid` (read from the line
    /// after, never written with the entry).
    #[serde(skip)]
    pub acknowledged: bool,
}

/// The line saying that the server acknowledged a transaction's COMMIT:
/// the transaction as [`Entry`] has it. (An older version reads it as an
/// entry with nothing to commit, and nowhere to move a mark: harmless.)
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Acknowledged {
    acknowledged: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stats_reset: Option<String>,
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Whether anything was appended since it was last cleared.
    dirty: bool,
}

impl Journal {
    /// Opens (creating) the journal of the state file at `state`, with the
    /// entries a previous run left. A last line cut short by a crash was
    /// never synced, so its batch never committed: it is cut off, so that
    /// nothing appended is glued to it.
    pub fn open(state: &Path) -> Result<(Journal, Vec<Entry>)> {
        let path = super::sibling(state, ".journal");
        let context = || format!("cannot open state journal {}", path.display());
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(context)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).with_context(context)?;
        // Damage is not a file that cannot be created (73): exit 1, as for
        // a damaged state file.
        let entries = parse(&text)
            .with_context(|| format!("state journal {} is damaged", path.display()))
            .status(Status::Failure)?;
        let whole = memchr::memrchr(b'\n', &text).map_or(0, |end| end + 1);
        if whole < text.len() {
            file.set_len(whole as u64)
                .and_then(|()| file.sync_data())
                .with_context(context)?;
        }
        let dirty = !entries.is_empty();
        Ok((Journal { path, file, dirty }, entries))
    }

    /// Appends an entry and syncs it to disk.
    pub fn append(&mut self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(entry).expect("an entry serializes");
        line.push(b'\n');
        let context = || format!("cannot write state journal {}", self.path.display());
        self.dirty = true;
        self.file.write_all(&line).with_context(context)?;
        self.file.sync_data().with_context(context)
    }

    /// Says that the server acknowledged the COMMIT of `entry`'s
    /// transaction, without syncing: a failure to say it only leaves the
    /// server to be asked, and is not an error.
    pub fn acknowledge(&mut self, entry: &Entry) {
        let Some(id) = entry.txid else {
            return;
        };
        let mut line = serde_json::to_vec(&Acknowledged {
            acknowledged: id,
            timeline: entry.timeline.clone(),
            stats_reset: entry.stats_reset.clone(),
        })
        .expect("an acknowledgement serializes");
        line.push(b'\n');
        self.dirty = true;
        if let Err(err) = self.file.write_all(&line) {
            log::debug!(
                "cannot note a commit in state journal {}: {err}",
                self.path.display()
            );
        }
    }

    /// Replaces the journal's entries with `entries`, atomically: a crash
    /// leaves the old ones or the new ones.
    pub fn replace(&mut self, entries: &[Entry]) -> Result<()> {
        let temp = super::sibling(&self.path, ".tmp");
        let context = || format!("cannot rewrite state journal {}", self.path.display());
        let mut text = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut text, entry).expect("an entry serializes");
            text.push(b'\n');
        }
        let mut file = File::create(&temp).with_context(context)?;
        file.write_all(&text).with_context(context)?;
        file.sync_all().with_context(context)?;
        std::fs::rename(&temp, &self.path).with_context(context)?;
        super::sync_parent(&self.path);
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(context)?;
        self.dirty = !entries.is_empty();
        Ok(())
    }

    /// Empties the journal, once the state file holds what it said.
    pub fn clear(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let context = || format!("cannot clear state journal {}", self.path.display());
        self.file.set_len(0).with_context(context)?;
        self.file.sync_data().with_context(context)?;
        self.dirty = false;
        Ok(())
    }
}

/// The entries of a journal's text, each marked acknowledged when a line
/// says so; a last line without its newline is dropped, any other bad line
/// is an error.
fn parse(text: &[u8]) -> Result<Vec<Entry>> {
    let whole = match memchr::memrchr(b'\n', text) {
        Some(end) => &text[..=end],
        None => &[][..],
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut acknowledged = Vec::new();
    for (index, line) in whole
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .enumerate()
    {
        // An entry has no `acknowledged`. (Not an untagged enum: serde
        // cannot buffer the 128-bit sum of a trace.)
        match serde_json::from_slice::<Acknowledged>(line) {
            Ok(ack) => acknowledged.push(ack),
            Err(_) => entries
                .push(serde_json::from_slice(line).with_context(|| format!("line {}", index + 1))?),
        }
    }
    for entry in &mut entries {
        entry.acknowledged = acknowledged.iter().any(|ack| {
            Some(ack.acknowledged) == entry.txid
                && ack.timeline == entry.timeline
                && ack.stats_reset == entry.stats_reset
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(txid: Option<i64>, offset: u64) -> Entry {
        Entry {
            txid,
            timeline: None,
            stats_reset: None,
            trace: None,
            key: Some("1:2".into()),
            mark: Some(Mark {
                path: "/x".into(),
                offset,
                line: offset / 10,
                tail: String::new(),
                head: Default::default(),
                ended: None,
                born: None,
                seen: 0,
                loaded_ns: None,
            }),
            rejects: Some(offset / 2),
            acknowledged: false,
        }
    }

    /// A directory of this test's own, empty.
    fn empty_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgsense-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn an_acknowledgement_marks_the_entry_of_its_transaction_only() {
        let dir = empty_dir("acked");
        let state = dir.join("state");
        let (mut journal, _) = Journal::open(&state).expect("open");
        let mut first = entry(Some(7), 10);
        first.timeline = Some("1".into());
        // The same id on another timeline (a promoted standby gave it
        // again), and another id.
        let mut again = entry(Some(7), 20);
        again.timeline = Some("2".into());
        let other = entry(Some(8), 30);
        for e in [&first, &again, &other] {
            journal.append(e).expect("append");
        }
        journal.acknowledge(&first);
        journal.acknowledge(&other);
        drop(journal);
        let (_, old) = Journal::open(&state).expect("reopen");
        let acknowledged: Vec<bool> = old.iter().map(|e| e.acknowledged).collect();
        assert_eq!(acknowledged, [true, false, true]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let mut text = Vec::new();
        for e in [entry(Some(7), 100), entry(None, 200)] {
            text.extend(serde_json::to_vec(&e).expect("serializes"));
            text.push(b'\n');
        }
        let whole = text.len();
        text.extend_from_slice(br#"{"txid":9,"key":"1:2","ma"#);
        let entries = parse(&text).expect("parses");
        assert_eq!(entries, [entry(Some(7), 100), entry(None, 200)]);
        assert_eq!(parse(&text[..whole - 1]).expect("parses").len(), 1);
        assert!(parse(b"garbage\n{}\n").is_err());
    }

    #[test]
    fn a_trace_keeps_a_sum_of_lsns_past_64_bits_and_reads_without_one() {
        let mut traced = entry(Some(7), 100);
        traced.trace = Some(Trace {
            rows: 5000,
            lsn: i64::MAX,
            lsn_sum: Some(i128::from(i64::MAX) * 5000),
            savepoints: false,
        });
        let mut text = serde_json::to_vec(&traced).expect("serializes");
        text.push(b'\n');
        assert_eq!(parse(&text).expect("parses"), [traced.clone()]);
        let old = b"{\"txid\":7,\"trace\":{\"rows\":2,\"lsn\":9},\"key\":\"1:2\"}\n";
        let read = parse(old).expect("parses");
        assert_eq!(read[0].trace.expect("a trace").lsn_sum, None);
    }

    #[test]
    fn a_torn_line_alone_is_cut_off_before_anything_is_appended() {
        let dir = empty_dir("torn");
        let state = dir.join("state");
        std::fs::write(dir.join("state.journal"), br#"{"txid":9,"key":"1:2","ma"#).expect("write");
        let (mut journal, old) = Journal::open(&state).expect("open");
        assert!(old.is_empty());
        journal.append(&entry(Some(1), 10)).expect("append");
        drop(journal);
        let (_, old) = Journal::open(&state).expect("reopen: not damaged");
        assert_eq!(old, [entry(Some(1), 10)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_survive_reopening_until_cleared() {
        let dir = empty_dir("journal");
        let state = dir.join("state");
        let (mut journal, old) = Journal::open(&state).expect("open");
        assert!(old.is_empty());
        journal.append(&entry(Some(1), 10)).expect("append");
        journal.append(&entry(Some(2), 20)).expect("append");
        drop(journal);
        let (mut journal, old) = Journal::open(&state).expect("reopen");
        assert_eq!(old, [entry(Some(1), 10), entry(Some(2), 20)]);
        journal.clear().expect("clear");
        journal
            .append(&entry(None, 30))
            .expect("append after clear");
        drop(journal);
        let (_, old) = Journal::open(&state).expect("reopen");
        assert_eq!(old, [entry(None, 30)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
