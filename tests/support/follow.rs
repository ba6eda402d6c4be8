//! Following a file that keeps growing (issue 11): a writer that appends
//! findings with markers ([`super::markers`]) in pieces of random size at
//! random pauses and rotates its file as logrotate does (rename + create,
//! or copytruncate); the `load --follow` command line; the table as seen by
//! a test polling it; and what /proc tells of the running loader (open
//! files, CPU time).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use postgres::Client;

use super::markers::finding;
use super::process::send_signal;
use super::run::{Outcome, Pgsense, Started, init};
use super::{PgServer, Scratch, TABLE};

/// How long a following loader may run before the harness kills it: longer
/// than any test, so that only a hang ends it.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(600);

/// How soon after SIGTERM or SIGINT a following loader must have exited:
/// "within a few seconds", with a margin for a busy machine.
pub const STOP_BOUND: Duration = Duration::from_secs(10);

/// A small xorshift generator: the tests need varied sizes and pauses, not
/// good randomness. The seed is printed so that a failure can be replayed
/// with PGSENSE_TEST_SEED.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let seed = std::env::var("PGSENSE_TEST_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("the clock is after 1970")
                    .as_nanos();
                (nanos as u64) ^ (u64::from(std::process::id()) << 32)
            });
        eprintln!("random seed: {seed} (PGSENSE_TEST_SEED={seed} replays it)");
        Rng(seed | 1)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low + 1)
    }

    /// A pause of up to `max`.
    pub fn pause(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.range(0, max.as_millis() as u64))
    }
}

/// The scanner, as far as the loader can tell: it appends findings 1, 2,
/// 3... (the marker is the lsn) to its file, a line sometimes split over
/// several writes, and its file gets rotated under it.
pub struct Appender {
    path: PathBuf,
    /// The file the writer has open: `path`, or a rotated file it has not
    /// let go of yet.
    file: File,
    /// The marker of the next line.
    next: u64,
    /// Rotated files so far: `path.1` is the newest.
    rotations: u64,
    pub rng: Rng,
}

impl Appender {
    /// A writer appending to `path`, created if missing.
    pub fn new(path: &Path) -> Appender {
        Appender::starting_at(path, 1)
    }

    /// A writer whose first line has marker `first` (two writers to two
    /// files need markers of their own).
    pub fn starting_at(path: &Path, first: u64) -> Appender {
        Appender {
            path: path.to_owned(),
            file: open_append(path),
            next: first,
            rotations: 0,
            rng: Rng::new(),
        }
    }

    /// The marker of the last whole line written, so the test expects
    /// findings `1..=written()` (of a writer that started at 1).
    pub fn written(&self) -> u64 {
        self.next - 1
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `k`th newest rotated file (`path.k`).
    pub fn rotated(&self, k: u64) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push(format!(".{k}"));
        PathBuf::from(name)
    }

    /// How many rotations so far.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Appends `count` whole lines in one write.
    pub fn append_lines(&mut self, count: u64) {
        let text: String = (self.next..self.next + count)
            .map(|m| finding(m) + "\n")
            .collect();
        self.write(text.as_bytes());
        self.next += count;
    }

    /// Appends `count` whole lines as pieces of 1 to `max_piece` bytes, so
    /// that lines are split across writes, with a pause of up to
    /// `max_pause` after each piece but the last: the loader sees half lines
    /// at the end of the file while it waits.
    pub fn append_in_pieces(&mut self, count: u64, max_piece: u64, max_pause: Duration) {
        let text: String = (self.next..self.next + count)
            .map(|m| finding(m) + "\n")
            .collect();
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            let size = (self.rng.range(1, max_piece) as usize).min(rest.len());
            let (piece, after) = rest.split_at(size);
            self.write(piece);
            rest = after;
            if !rest.is_empty() {
                thread::sleep(self.rng.pause(max_pause));
            }
        }
        self.next += count;
    }

    /// Keeps appending a few lines at a time, in pieces, with pauses of up
    /// to `max_pause`, until `stop` is set; ends on a whole line.
    pub fn append_until(&mut self, stop: &AtomicBool, max_pause: Duration) {
        while !stop.load(Ordering::SeqCst) {
            let count = self.rng.range(1, 3);
            self.append_in_pieces(count, 400, max_pause);
            thread::sleep(self.rng.pause(max_pause));
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.file
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("append to {}: {e}", self.path.display()));
    }

    /// logrotate's rename + create: the rotated files shift up one
    /// (`path.1` becomes `path.2`...), `path` becomes `path.1`, and an empty
    /// `path` is created. The writer, like a scanner that reopens its file
    /// only when told, keeps appending to the renamed file for `linger`
    /// before it opens the new one.
    pub fn rename_and_create(&mut self, linger: Duration) {
        self.shift_rotated();
        fs::rename(&self.path, self.rotated(1))
            .unwrap_or_else(|e| panic!("rename {}: {e}", self.path.display()));
        File::create(&self.path).unwrap_or_else(|e| panic!("create {}: {e}", self.path.display()));
        let renamed = Instant::now();
        while renamed.elapsed() < linger {
            self.append_in_pieces(1, 400, Duration::from_millis(10));
            thread::sleep(Duration::from_millis(20));
        }
        self.file = open_append(&self.path);
    }

    /// logrotate's copytruncate: the rotated files shift up one, `path` is
    /// copied to `path.1`, then truncated in place; the writer keeps its
    /// O_APPEND descriptor and goes on at the new end. It does not write
    /// between the copy and the truncate (it is the same thread): lines
    /// written there would be lost whatever the loader does, which logrotate
    /// documents.
    pub fn copytruncate(&mut self) {
        self.shift_rotated();
        fs::copy(&self.path, self.rotated(1))
            .unwrap_or_else(|e| panic!("copy {}: {e}", self.path.display()));
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|file| file.set_len(0))
            .unwrap_or_else(|e| panic!("truncate {}: {e}", self.path.display()));
    }

    /// logrotate's rename + create with `compress` and `delaycompress`:
    /// the rotated files shift up one, `path.2` (rotated the time before)
    /// is compressed into `path.2.gz` and removed, then `path` becomes
    /// `path.1` and an empty `path` is created; the writer opens it at
    /// once. With `reuse`, the new `path` gets the inode `path.2` had, as
    /// ext4 gives a freed inode to a file made soon after beside it.
    pub fn delaycompress(&mut self, reuse: bool) {
        self.shift_rotated();
        let plain = self.rotated(2);
        let freed = fs::metadata(&plain).ok().map(|meta| meta.ino());
        if freed.is_some() {
            compress(&plain, &self.compressed(2));
        }
        fs::rename(&self.path, self.rotated(1))
            .unwrap_or_else(|e| panic!("rename {}: {e}", self.path.display()));
        match freed.filter(|_| reuse) {
            Some(ino) => create_on_inode(&self.path, ino),
            None => drop(
                File::create(&self.path)
                    .unwrap_or_else(|e| panic!("create {}: {e}", self.path.display())),
            ),
        }
        self.file = open_append(&self.path);
    }

    /// The `k`th newest rotated file, compressed (`path.k.gz`).
    pub fn compressed(&self, k: u64) -> PathBuf {
        let mut name = self.rotated(k).into_os_string();
        name.push(".gz");
        PathBuf::from(name)
    }

    fn shift_rotated(&mut self) {
        for k in (1..=self.rotations).rev() {
            let (from, to) = match self.rotated(k).exists() {
                true => (self.rotated(k), self.rotated(k + 1)),
                false => (self.compressed(k), self.compressed(k + 1)),
            };
            fs::rename(&from, to).unwrap_or_else(|e| panic!("rename {}: {e}", from.display()));
        }
        self.rotations += 1;
    }
}

/// gzip's `gzip FILE`: `plain` compressed into `gz`, which keeps its time
/// of last change, and removed.
fn compress(plain: &Path, gz: &Path) {
    let text = fs::read(plain).unwrap_or_else(|e| panic!("read {}: {e}", plain.display()));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&text).expect("gzip in memory");
    let changed = fs::metadata(plain)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|e| panic!("look at {}: {e}", plain.display()));
    let file = File::create(gz).unwrap_or_else(|e| panic!("create {}: {e}", gz.display()));
    (&file)
        .write_all(&encoder.finish().expect("gzip in memory"))
        .and_then(|()| file.set_modified(changed))
        .unwrap_or_else(|e| panic!("write {}: {e}", gz.display()));
    fs::remove_file(plain).unwrap_or_else(|e| panic!("remove {}: {e}", plain.display()));
}

/// Creates the empty file `path` on inode `ino`, just freed: files named as
/// no rotation are made beside it until the file system gives one that
/// inode (ext4 mostly does at once), which is renamed to `path`.
fn create_on_inode(path: &Path, ino: u64) {
    let dir = path.parent().expect("a file in a directory");
    let mut spares = Vec::new();
    let found = (0..10_000).find_map(|n| {
        let spare = dir.join(format!("spare-{n}"));
        let file =
            File::create(&spare).unwrap_or_else(|e| panic!("create {}: {e}", spare.display()));
        let got = file.metadata().expect("a file's metadata").ino();
        spares.push(spare);
        (got == ino).then(|| spares.pop().expect("just made"))
    });
    for spare in spares {
        fs::remove_file(&spare).unwrap_or_else(|e| panic!("remove {}: {e}", spare.display()));
    }
    let found = found.unwrap_or_else(|| {
        panic!(
            "the file system never gave inode {ino} back to a new file in {} (tmpfs does not \
             reuse inodes): this needs one that does, such as ext4",
            dir.display()
        )
    });
    fs::rename(&found, path).unwrap_or_else(|e| panic!("rename {}: {e}", found.display()));
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} to append: {e}", path.display()))
}

/// A database with the findings table, a scratch directory, the followed
/// file's path (not created) and the state file's.
pub struct Followed {
    pub scratch: Scratch,
    pub db: String,
    pub input: PathBuf,
    pub state: PathBuf,
}

impl Followed {
    pub fn new(server: &PgServer) -> Followed {
        let db = server.new_database();
        init(server, &db);
        let scratch = Scratch::new();
        let input = scratch.path().join("findings.jsonl");
        let state = scratch.path().join("pgsense-pg.state");
        Followed {
            scratch,
            db,
            input,
            state,
        }
    }

    /// `load --follow --state-file STATE FILE`; more flags may follow.
    pub fn command(&self, server: &PgServer) -> Pgsense {
        self.command_on(server, &self.input)
    }

    /// [`Followed::command`] following `file` instead of FILE.
    pub fn command_on(&self, server: &PgServer, file: impl AsRef<std::ffi::OsStr>) -> Pgsense {
        server
            .pgsense(&self.db)
            .arg("load")
            .arg("--follow")
            .arg("--state-file")
            .arg(&self.state)
            .arg(file)
            .timeout(FOLLOW_TIMEOUT)
    }
}

/// A connection kept open for polling the findings table.
pub struct Table {
    client: Client,
}

impl Table {
    pub fn new(server: &PgServer, db: &str) -> Table {
        Table {
            client: server.client(db),
        }
    }

    /// Whether every finding `1..=last` is in the table (at least once:
    /// duplicates are the final check's business).
    pub fn holds_through(&mut self, last: u64) -> bool {
        self.holds(1..=last)
    }

    /// Whether every finding of `markers` is in the table.
    pub fn holds(&mut self, markers: std::ops::RangeInclusive<u64>) -> bool {
        let bound = |m: u64| i64::try_from(m).expect("markers fit a BIGINT");
        let (first, last) = (bound(*markers.start()), bound(*markers.end()));
        let sql = format!(
            "select count(distinct lsn) from {TABLE} where lsn between $1::bigint and $2::bigint"
        );
        let found: i64 = self
            .client
            .query_one(&sql, &[&first, &last])
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0);
        found == last - first + 1
    }

    /// The first (up to 20) findings of `1..=last` not in the table.
    pub fn missing(&mut self, last: u64) -> Vec<u64> {
        let last = i64::try_from(last).expect("markers fit a BIGINT");
        let sql = format!(
            "select m from generate_series(1, $1::bigint) m \
             where not exists (select 1 from {TABLE} where lsn = m) order by m limit 20"
        );
        self.client
            .query(&sql, &[&last])
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .map(|row| u64::try_from(row.get::<_, i64>(0)).expect("a marker"))
            .collect()
    }

    /// How many distinct findings the table holds.
    pub fn distinct(&mut self) -> u64 {
        let sql = format!("select count(distinct lsn) from {TABLE}");
        let found: i64 = self
            .client
            .query_one(&sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0);
        u64::try_from(found).expect("a count")
    }
}

/// Sends `signal` (TERM, INT) and waits for the exit: it must come within
/// [`STOP_BOUND`], with `code`.
#[track_caller]
pub fn stop(mut load: Started, signal: &str, code: i32) -> Outcome {
    let signalled = Instant::now();
    send_signal(load.id(), signal);
    while !load.has_exited() && signalled.elapsed() < STOP_BOUND {
        thread::sleep(Duration::from_millis(20));
    }
    let exited = load.has_exited();
    let took = signalled.elapsed();
    if !exited {
        send_signal(load.id(), "KILL");
    }
    let out = load.wait();
    assert!(
        exited,
        "SIG{signal} did not end the loader within {STOP_BOUND:?}; killed it\n{}",
        out.describe()
    );
    out.assert_code(code);
    eprintln!("SIG{signal} ended the loader in {took:?}");
    out
}

/// kill -9, and the wait for it.
#[track_caller]
pub fn kill(load: Started) -> Outcome {
    send_signal(load.id(), "KILL");
    let out = load.wait();
    assert_eq!(out.code, None, "expected a kill\n{}", out.describe());
    out
}

/// What the descriptors of process `pid` point to.
pub fn open_files(pid: u32) -> Vec<PathBuf> {
    let dir = format!("/proc/{pid}/fd");
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .collect()
}

/// Whether process `pid` has the file at `path` (that inode) open.
pub fn holds_open(pid: u32, path: &Path) -> bool {
    let Ok(wanted) = fs::metadata(path) else {
        return false;
    };
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = fs::read_dir(&dir) else {
        return false;
    };
    entries
        .filter_map(|entry| fs::metadata(entry.ok()?.path()).ok())
        .any(|open| open.dev() == wanted.dev() && open.ino() == wanted.ino())
}

/// CPU time (user + system, all threads) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    // The command name, in parentheses, may hold spaces: fields are counted
    // after its closing parenthesis, where field 3 (state) comes first.
    let (_, after) = stat
        .rsplit_once(')')
        .unwrap_or_else(|| panic!("{path}: {stat}"));
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| -> u64 {
        fields[index - 3]
            .parse()
            .unwrap_or_else(|e| panic!("{path} field {index}: {e}: {stat}"))
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).expect("CLK_TCK is positive");
    Duration::from_millis((ticks(14) + ticks(15)) * 1000 / per_second)
}
