//! --follow at startup: waiting for a database that does not answer yet,
//! until it does or a stop signal comes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::Settings;
use crate::connect;
use crate::exit::{self, Status, WithStatus};
use crate::load;

/// How often a wait looks for a stop signal.
const STOP_POLL: Duration = Duration::from_millis(100);

/// --follow: connects however long the database takes to be reachable
/// (the files hold the lines meanwhile), keeping --metrics-file written
/// meanwhile: nothing loaded, no commit since the start, and the bytes of
/// the files beyond what the state file says is loaded. SIGINT or
/// SIGTERM ends the wait (after the connection attempt in progress); a
/// second one ends the process at once.
///
/// `between_attempts` runs after each failed attempt and before each
/// metrics write: it says how many bytes are not loaded, and may note
/// what appeared meanwhile (the FILEs created while the run waits).
pub(super) fn connect_patiently(
    settings: &Settings,
    tick: Option<&mut load::Tick>,
    between_attempts: &mut dyn FnMut() -> u64,
) -> Result<(postgres::Client, connect::Manager)> {
    let stop = StopSignal(load::stop_flags()?);
    connect_until_stopped(settings, tick, between_attempts, &stop)
}

/// SIGINT or SIGTERM caught, by the handlers the load goes on with.
struct StopSignal(load::StopFlags);

impl StopSignal {
    /// The signal caught, as the run's exit status.
    fn caught(&self) -> Option<Status> {
        match self.0.signal.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(Status::Signal(i32::try_from(signal).unwrap_or(15))),
        }
    }
}

pub(super) fn interrupted_waiting() -> anyhow::Error {
    anyhow::anyhow!(
        "interrupted while waiting for the database: nothing was loaded, the files keep \
         their lines"
    )
}

fn connect_until_stopped(
    settings: &Settings,
    mut tick: Option<&mut load::Tick>,
    between_attempts: &mut dyn FnMut() -> u64,
    stop: &StopSignal,
) -> Result<(postgres::Client, connect::Manager)> {
    let mut delay = Duration::from_secs(1);
    let mut said = false;
    let mut written: Option<Instant> = None;
    loop {
        match crate::cmd::connect(settings, load::ENDLESS) {
            // A password refused, a database that does not exist: no wait
            // mends it, and a service that ends says so to its manager.
            Err(err) if crate::pg_error::is_refused_for_good(&err) => return Err(err),
            Err(err) if exit::status_of(&err) == Status::Unavailable => {
                if let Some(status) = stop.caught() {
                    return Err(interrupted_waiting()).status(status);
                }
                if !said {
                    log::warn!("{err:#}; trying again until it answers");
                    said = true;
                }
                between_attempts();
                let until = Instant::now() + delay;
                loop {
                    if let Some(status) = stop.caught() {
                        return Err(interrupted_waiting()).status(status);
                    }
                    if let Some(tick) = tick.as_deref_mut()
                        && written.is_none_or(|at| at.elapsed() >= tick.every)
                    {
                        (tick.call)(&load::Snapshot {
                            unloaded_bytes: between_attempts(),
                            ..load::Snapshot::default()
                        });
                        written = Some(Instant::now());
                    }
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(STOP_POLL));
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            result => {
                if let Some(status) = stop.caught() {
                    return Err(interrupted_waiting()).status(status);
                }
                if said && result.is_ok() {
                    log::warn!("connected: the database answers again");
                }
                return result;
            }
        }
    }
}
