//! Bounded waits on a real condition, polled: a test never sleeps for an
//! interleaving, it waits until what it needs has happened, and fails
//! saying what never did.

use std::thread;
use std::time::{Duration, Instant};

use super::run::Started;

/// Waits, polling, until `done`, while `load` runs. Panics with the load's
/// output if it exits first, and when `timeout` passes.
#[track_caller]
pub fn wait_during(
    mut load: Started,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> Started {
    let deadline = Instant::now() + timeout;
    while !done() {
        if load.has_exited() {
            let out = load.wait();
            panic!("the load ended before {what}\n{}", out.describe());
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?} of waiting"
        );
        thread::sleep(Duration::from_millis(20));
    }
    load
}

/// Waits, polling, until `done`; panics saying `what` never happened when
/// `timeout` passes.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?} of waiting"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
