//! Bounded waits on a real condition, polled: a test never sleeps for an
//! interleaving, it waits until what it needs has happened, and fails
//! saying what never did.

use std::thread;
use std::time::{Duration, Instant};

use super::process::send_signal;
use super::run::Started;

/// Waits, polling, until `done`, while `load` runs. Panics with the load's
/// output if it exits first, and when `timeout` passes (killing it).
#[track_caller]
pub fn wait_during(
    load: Started,
    what: &str,
    timeout: Duration,
    done: impl FnMut() -> bool,
) -> Started {
    wait_while_running(load, what, timeout, || {}, done)
}

/// Waits, polling, until `done`, while `load` runs; panics with its output
/// if it exits first, and when `timeout` passes (killing it); `step` runs
/// between polls (a writer that keeps appending while the test waits).
#[track_caller]
pub fn wait_while_running(
    load: Started,
    what: &str,
    timeout: Duration,
    step: impl FnMut(),
    done: impl FnMut() -> bool,
) -> Started {
    wait_while_running_for(load, || what.to_owned(), timeout, step, done)
}

/// [`wait_while_running`], with what it waits for said by `what` when it
/// fails, once `done` has had its last look.
#[track_caller]
pub fn wait_while_running_for(
    mut load: Started,
    what: impl Fn() -> String,
    timeout: Duration,
    mut step: impl FnMut(),
    mut done: impl FnMut() -> bool,
) -> Started {
    let deadline = Instant::now() + timeout;
    while !done() {
        if load.has_exited() {
            let out = load.wait();
            panic!("the loader ended before {}\n{}", what(), out.describe());
        }
        if Instant::now() >= deadline {
            send_signal(load.id(), "KILL");
            let out = load.wait();
            panic!(
                "no {} within {timeout:?} of waiting; killed the loader\n{}",
                what(),
                out.describe()
            );
        }
        step();
        thread::sleep(Duration::from_millis(10));
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
