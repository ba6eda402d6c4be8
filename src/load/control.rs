//! Why a load stops: the events that end reading (a signal, a database that
//! failed for good, --max-rejects, an unreadable input) are recorded here,
//! and [`Control::stop_reason`] alone decides what the run reports.
//!
//! SIGINT and SIGTERM ask for a clean stop, and so does SIGHUP (the
//! terminal of a run by hand was closed); a second one ends the process at
//! once. After a stop, statements still in flight get a few seconds, then
//! are cancelled. A statement the server leaves unanswered for
//! --stall-timeout is cancelled too; when a cancelled statement still gets
//! no answer, the connections are shut down from this side
//! ([`crate::stall`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::lock;

/// Why reading ended before every input was read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT, SIGTERM or SIGHUP.
    Signal(i32),
    /// An input could not be read.
    ReadError,
    /// More lines than --max-rejects were rejected.
    MaxRejects(u64),
    /// The database failed and retries could not outlast it.
    DatabaseFailed,
    /// Progress could not be recorded: the state or reject file could not
    /// be written.
    RecordFailed,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Signal(SIGINT) => f.write_str("interrupted (SIGINT)"),
            StopReason::Signal(SIGHUP) => f.write_str("interrupted (SIGHUP)"),
            StopReason::Signal(_) => f.write_str("interrupted (SIGTERM)"),
            StopReason::ReadError => f.write_str("the input could not be read"),
            StopReason::MaxRejects(max) => {
                write!(f, "more than {max} lines were rejected (--max-rejects)")
            }
            StopReason::DatabaseFailed => f.write_str("the database failed"),
            StopReason::RecordFailed => {
                f.write_str("the state file or the reject file could not be written")
            }
        }
    }
}

/// The run's stop events, shared by the reader, the writers and the thread
/// that waits for them.
#[derive(Default)]
pub struct Control {
    /// Set by SIGINT or SIGTERM.
    interrupted: Arc<AtomicBool>,
    /// The signal that set `interrupted`.
    signal: Arc<AtomicUsize>,
    /// The database failed for good: stop reading, drop what is queued.
    failed: AtomicBool,
    /// What failed, as said on stderr, each once.
    failures: Mutex<Vec<String>>,
    /// What failed for good was recording progress, not the database.
    record_failed: AtomicBool,
    /// The reader stopped because of --max-rejects.
    limit_hit: AtomicBool,
    /// The reader waits for input holding no rows.
    reader_idle: AtomicBool,
    /// The reader read every input to its end and handed everything over.
    read_all: AtomicBool,
    /// The writers are done: ends the progress line and the canceller.
    writers_done: AtomicBool,
    /// A stop was asked more than [`GRACE`] ago: no batch starts any more.
    grace_over: AtomicBool,
    /// The database has been failing since a writer said so (--follow).
    outage: AtomicBool,
    /// Cancel tokens of the writers' connections, by writer.
    cancels: Mutex<BTreeMap<usize, postgres::CancelToken>>,
    /// When each writer's statement in flight was sent, by writer.
    calls: Mutex<BTreeMap<usize, Instant>>,
    /// How long a statement may go unanswered: --stall-timeout.
    stall_after: Mutex<Option<Duration>>,
    /// The transactions the writers began, oldest first: (writer, id), the
    /// last [`BEGUN_KEPT`] of them.
    began: Mutex<std::collections::VecDeque<(usize, i64)>>,
}

/// A writer's statement in flight, from [`Control::in_call`] until dropped.
pub struct Call<'a> {
    control: &'a Control,
    writer: usize,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        lock(&self.control.calls).remove(&self.writer);
    }
}

/// What SIGINT, SIGTERM and SIGHUP set.
#[derive(Clone)]
pub struct StopFlags {
    /// Set by either.
    pub interrupted: Arc<AtomicBool>,
    /// Which one.
    pub signal: Arc<AtomicUsize>,
}

/// Makes SIGINT, SIGTERM and SIGHUP set the flags returned, and a second one end
/// the process at once. The handlers are installed once for the process
/// and never removed: the wait for the database at startup and the load
/// share them, so no signal falls between the two (signal-hook ignores a
/// signal whose handlers were all removed).
pub fn stop_flags() -> Result<StopFlags> {
    let mut installed = lock(&FLAGS);
    if let Some(flags) = &*installed {
        return Ok(flags.clone());
    }
    let flags = StopFlags {
        interrupted: Arc::default(),
        signal: Arc::default(),
    };
    // Under nohup, SIGHUP is ignored, and stays so.
    let hangup = (!ignored(SIGHUP)).then_some(SIGHUP);
    for signal in [Some(SIGINT), Some(SIGTERM), hangup].into_iter().flatten() {
        // Handlers run in the order they were registered: the second
        // signal's sees the flag as the previous signal left it.
        exit_on_second(signal, Arc::clone(&flags.interrupted))?;
        signal_hook::flag::register_usize(signal, Arc::clone(&flags.signal), signal as usize)
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&flags.interrupted))
            .context("cannot install signal handlers")?;
    }
    *installed = Some(flags.clone());
    // Work on the main thread under a deadline (the bootstrap) ends soon
    // after a stop too.
    crate::stall::stop_on(Arc::clone(&flags.interrupted));
    Ok(flags)
}

/// Ends the process at once, saying so, on `signal` once `stopping` is
/// set: a second signal, for someone who will not wait for the batches in
/// flight.
fn exit_on_second(signal: i32, stopping: Arc<AtomicBool>) -> Result<()> {
    const SAID: &[u8] = b"pgsense-pg: a second signal: exiting now; the batches not yet \
        committed roll back, and their lines are neither reported nor in the reject file \
        (with --state-file, the next run loads them)\n";
    let action = move || {
        if stopping.load(Ordering::SeqCst) {
            // SAFETY: write(2) and _exit(2) are async-signal-safe, and SAID
            // is a static buffer of its length.
            unsafe {
                libc::write(libc::STDERR_FILENO, SAID.as_ptr().cast(), SAID.len());
                libc::_exit(128 + signal);
            }
        }
    };
    // SAFETY: the action only loads an atomic and makes async-signal-safe
    // calls.
    unsafe { signal_hook::low_level::register(signal, action) }
        .context("cannot install signal handlers")?;
    Ok(())
}

/// Whether `signal` is ignored, as the process was started (nohup ignores
/// SIGHUP).
fn ignored(signal: i32) -> bool {
    // SAFETY: a null action only reads the current one, into `current`,
    // which is zeroed memory of the type sigaction fills in.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    }
}

/// The stop flags, once installed.
static FLAGS: Mutex<Option<StopFlags>> = Mutex::new(None);

/// The signal that asked for a stop, when the flags are installed and one
/// did.
pub fn caught_signal() -> Option<i32> {
    let installed = lock(&FLAGS);
    match installed.as_ref()?.signal.load(Ordering::SeqCst) {
        0 => None,
        n => i32::try_from(n).ok(),
    }
}

/// How many begun transactions [`Control::began_again_elsewhere`] looks
/// through: more than the writers begin while one waits for its answer.
const BEGUN_KEPT: usize = 4096;

/// How long statements in flight may run on after a stop before they are
/// cancelled.
const GRACE: Duration = Duration::from_secs(3);
/// How long a cancelled statement may stay unanswered before the
/// connections are shut down.
const UNANSWERED: Duration = Duration::from_secs(5);
/// How often waiting threads look at the flags.
pub const POLL: Duration = Duration::from_millis(100);

impl Control {
    /// A control whose stop is asked by SIGINT and SIGTERM ([`stop_flags`]).
    pub fn catching_signals() -> Result<Control> {
        let flags = stop_flags()?;
        Ok(Control {
            interrupted: flags.interrupted,
            signal: flags.signal,
            ..Control::default()
        })
    }

    /// Whether a signal asked for a stop.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// The signal that asked for a stop.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => i32::try_from(n).ok(),
        }
    }

    /// The database failed for good.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// The database failed for good, for `reason`: said now, and kept for
    /// the summary.
    pub fn fail_because(&self, reason: &str) {
        log::error!("{reason}");
        let mut failures = lock(&self.failures);
        if !failures.iter().any(|said| said == reason) {
            failures.push(reason.to_owned());
        }
        drop(failures);
        self.fail();
    }

    /// What [`Control::fail_because`] was given, each once, in order.
    pub fn failures(&self) -> Vec<String> {
        lock(&self.failures).clone()
    }

    /// Progress could not be recorded: stop as for a failed database, but
    /// say what failed.
    pub fn fail_to_record(&self) {
        self.record_failed.store(true, Ordering::SeqCst);
        self.fail();
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Whether reading must stop: interrupted, or the database failed.
    pub fn stopping(&self) -> bool {
        self.interrupted() || self.failed()
    }

    /// Whether this failure is the first of an outage (to be said once).
    pub fn outage_began(&self) -> bool {
        !self.outage.swap(true, Ordering::SeqCst)
    }

    /// Whether an outage that was said has just ended.
    pub fn outage_over(&self) -> bool {
        self.outage.swap(false, Ordering::SeqCst)
    }

    pub fn hit_limit(&self) {
        self.limit_hit.store(true, Ordering::SeqCst);
    }

    pub fn set_reader_idle(&self, idle: bool) {
        self.reader_idle.store(idle, Ordering::SeqCst);
    }

    pub fn read_all(&self) {
        self.read_all.store(true, Ordering::SeqCst);
    }

    pub fn writers_done(&self) {
        self.writers_done.store(true, Ordering::SeqCst);
    }

    pub fn is_done(&self) -> bool {
        self.writers_done.load(Ordering::SeqCst)
    }

    /// Whether a stop was asked long enough ago that what is still in
    /// flight is being cancelled: a batch not begun yet is not begun.
    pub fn grace_over(&self) -> bool {
        self.grace_over.load(Ordering::SeqCst)
    }

    /// Whether the run is over although the reader may still be waiting for
    /// input: a signal or a database failure came while it held no rows.
    pub fn stopped_while_waiting(&self) -> bool {
        self.stopping() && self.reader_idle.load(Ordering::SeqCst)
    }

    /// Why reading ended early, or None when every input was read to its
    /// end. A signal outranks everything; an unreadable input, the
    /// --max-rejects limit, then a database failure follow.
    pub fn stop_reason(&self, read_failed: bool, max_rejects: Option<u64>) -> Option<StopReason> {
        if self.read_all.load(Ordering::SeqCst) {
            return None;
        }
        Some(match self.signal() {
            Some(signal) => StopReason::Signal(signal),
            None if read_failed => StopReason::ReadError,
            None if self.limit_hit.load(Ordering::SeqCst) => {
                StopReason::MaxRejects(max_rejects.unwrap_or(0))
            }
            None if self.record_failed.load(Ordering::SeqCst) => StopReason::RecordFailed,
            None => StopReason::DatabaseFailed,
        })
    }

    /// Remembers how to cancel what a writer's connection is doing, for a
    /// stop that in-flight statements would otherwise delay.
    pub fn on_stop_cancel(&self, writer: usize, token: postgres::CancelToken) {
        lock(&self.cancels).insert(writer, token);
    }

    /// Writer `writer` began transaction `id`.
    pub fn began(&self, writer: usize, id: i64) {
        let mut began = lock(&self.began);
        if began.len() == BEGUN_KEPT {
            began.pop_front();
        }
        began.push_back((writer, id));
    }

    /// Whether another writer than `writer` began a transaction with the
    /// id of `writer`'s transaction `id` after it. Ids are never handed out
    /// twice (they count on over the server's life) but after a crash that
    /// lost the WAL of the transaction that had it: then that one did not
    /// commit, whatever the server says of the id now.
    pub fn began_again_elsewhere(&self, writer: usize, id: i64) -> bool {
        let began = lock(&self.began);
        let Some(mine) = began.iter().rposition(|&b| b == (writer, id)) else {
            return false;
        };
        began
            .iter()
            .skip(mine + 1)
            .any(|&(other, began)| other != writer && began == id)
    }

    /// Statements unanswered for this long are cancelled, then their
    /// connections shut down.
    pub fn stall_after(&self, limit: Duration) {
        *lock(&self.stall_after) = Some(limit);
    }

    /// Marks `writer`'s statement as in flight until the result is dropped.
    pub fn in_call(&self, writer: usize) -> Call<'_> {
        lock(&self.calls).insert(writer, Instant::now());
        Call {
            control: self,
            writer,
        }
    }

    /// Runs until the writers are done, watching their statements. Once a
    /// signal has asked for a stop, it gives statements in flight a few
    /// seconds from the stop to finish, then cancels them (a COPY waiting
    /// on a lock, say): their batches roll back and count as interrupted,
    /// and the batches queued behind them are not begun. A statement
    /// unanswered for --stall-timeout is cancelled as well. A statement
    /// still unanswered a few seconds after its cancel (a server that is
    /// stopped, not slow) has its connection shut down.
    pub fn watch(&self) {
        let mut stopped_at = None;
        // The statements cancelled and still in flight, by writer: when
        // each was sent, when it was cancelled, and whether the
        // connections were shut down for it.
        let mut cancelled: BTreeMap<usize, (Instant, Instant, bool)> = BTreeMap::new();
        while !self.is_done() {
            if self.interrupted() && stopped_at.get_or_insert_with(Instant::now).elapsed() >= GRACE
            {
                self.grace_over.store(true, Ordering::SeqCst);
            }
            let stall = *lock(&self.stall_after);
            let calls: Vec<(usize, Instant)> = lock(&self.calls)
                .iter()
                .map(|(w, sent)| (*w, *sent))
                .collect();
            cancelled.retain(|writer, (sent, ..)| calls.contains(&(*writer, *sent)));
            for (writer, sent) in calls {
                if cancelled.contains_key(&writer) {
                    continue;
                }
                // In flight GRACE after the stop, or unanswered for
                // --stall-timeout.
                let stopped = self.grace_over();
                let stalled = stall.is_some_and(|limit| sent.elapsed() >= limit);
                if stalled && !stopped {
                    log::warn!(
                        "the server has not answered a statement for {} s (--stall-timeout): \
                         cancelling it",
                        sent.elapsed().as_secs()
                    );
                }
                if stalled || stopped {
                    self.cancel(writer);
                    cancelled.insert(writer, (sent, Instant::now(), false));
                }
            }
            let unanswered = cancelled
                .values()
                .any(|(_, at, closed)| !closed && at.elapsed() >= UNANSWERED);
            if unanswered {
                log::warn!(
                    "a cancelled statement got no answer for {} s: shutting the database \
                     connections down",
                    UNANSWERED.as_secs()
                );
                crate::stall::close_connections();
                for (.., closed) in cancelled.values_mut() {
                    *closed = true;
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends a cancel request for `writer`'s statement, from a thread of
    /// its own: a stopped server may never answer it.
    fn cancel(&self, writer: usize) {
        let tokens: Vec<postgres::CancelToken> = lock(&self.cancels)
            .get(&writer)
            .cloned()
            .into_iter()
            .collect();
        for token in tokens {
            let sent = std::thread::Builder::new()
                .name("cancel".into())
                .spawn(move || {
                    if let Err(err) = token.cancel_query(postgres::NoTls) {
                        log::debug!("cannot cancel a statement in flight: {err}");
                    }
                });
            if let Err(err) = sent {
                log::debug!("cannot cancel a statement in flight: {err}");
            }
        }
    }

    /// Sleeps for `delay`, waking early when the run is interrupted.
    pub fn sleep(&self, delay: Duration) {
        let until = std::time::Instant::now() + delay;
        while !self.interrupted() {
            let now = std::time::Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(POLL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a crash the server may give an id again: the transaction that
    /// had it first lost it, whichever writer began it.
    #[test]
    fn an_id_begun_again_by_the_other_writer_was_lost_by_the_first() {
        let control = Control::default();
        control.began(0, 41);
        control.began(1, 42);
        control.began(0, 42);
        control.began(0, 43);
        // Writer 1's 42 was begun again by writer 0: it was lost.
        assert!(control.began_again_elsewhere(1, 42));
        // Writer 0's 42 is the later one: nothing is known of it so.
        assert!(!control.began_again_elsewhere(0, 42));
        assert!(!control.began_again_elsewhere(0, 41));
        // An id this writer never began.
        assert!(!control.began_again_elsewhere(1, 43));
        for id in 100..100 + BEGUN_KEPT as i64 {
            control.began(0, id);
        }
        assert!(!control.began_again_elsewhere(1, 42), "forgotten");
    }

    #[test]
    fn no_reason_once_everything_was_read() {
        let control = Control::default();
        control.fail();
        control.read_all();
        assert_eq!(control.stop_reason(true, None), None);
    }

    #[test]
    fn a_signal_outranks_every_other_reason() {
        let control = Control::default();
        control.fail();
        control.hit_limit();
        control.signal.store(15, Ordering::SeqCst);
        control.interrupted.store(true, Ordering::SeqCst);
        assert_eq!(
            control.stop_reason(true, Some(3)),
            Some(StopReason::Signal(15))
        );
        assert_eq!(StopReason::Signal(15).to_string(), "interrupted (SIGTERM)");
        assert_eq!(StopReason::Signal(2).to_string(), "interrupted (SIGINT)");
        assert_eq!(StopReason::Signal(1).to_string(), "interrupted (SIGHUP)");
    }

    #[test]
    fn read_error_then_limit_then_database() {
        let control = Control::default();
        control.fail();
        assert_eq!(
            control.stop_reason(false, None),
            Some(StopReason::DatabaseFailed)
        );
        control.hit_limit();
        assert_eq!(
            control.stop_reason(false, Some(7)),
            Some(StopReason::MaxRejects(7))
        );
        assert_eq!(
            StopReason::MaxRejects(7).to_string(),
            "more than 7 lines were rejected (--max-rejects)"
        );
        assert_eq!(
            control.stop_reason(true, Some(7)),
            Some(StopReason::ReadError)
        );
    }

    #[test]
    fn waiting_reader_ends_the_run_only_after_a_stop() {
        let control = Control::default();
        control.set_reader_idle(true);
        assert!(!control.stopped_while_waiting());
        control.fail();
        assert!(control.stopped_while_waiting());
        control.set_reader_idle(false);
        assert!(!control.stopped_while_waiting());
    }
}
