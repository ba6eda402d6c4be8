//! Named points where the test suite can stop the process dead, as kill -9
//! would, to check that the next run settles exactly what was done:
//! `PGSENSE_PG_CRASH_AT=POINT[:N]` stops the N-th time (default the first)
//! the run reaches POINT. `POINT:N:freeze` stops it with SIGSTOP instead,
//! its connections left open as by a host that hangs, until the test kills
//! it. Without the variable this does nothing.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable that arms a point.
const VARIABLE: &str = "PGSENSE_PG_CRASH_AT";

struct Armed {
    point: String,
    nth: u64,
    freeze: bool,
    reached: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var(VARIABLE).ok()?;
            // Only the test suite sets it: a typo must not disarm a test.
            let malformed = || -> ! { panic!("{VARIABLE}={value:?} is not POINT[:N[:freeze]]") };

            let mut parts = value.split(':');
            let point = parts.next().unwrap_or_default().to_owned();
            let nth = parts
                .next()
                .map_or(Some(1), |nth| nth.parse().ok())
                .unwrap_or_else(|| malformed());
            let freeze = match parts.next() {
                None => false,
                Some("freeze") => true,
                Some(_) => malformed(),
            };
            Some(Armed {
                point,
                nth,
                freeze,
                reached: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Whether the run stops at this point, this time.
pub fn due(point: &str) -> bool {
    armed().is_some_and(|armed| {
        armed.point == point && armed.reached.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth
    })
}

/// Stops the process with SIGKILL when the point is due.
pub fn at(point: &str) {
    if due(point) {
        die();
    }
}

/// Stops the process with SIGKILL (or freezes it, see the module): no
/// destructor runs, nothing is flushed.
pub fn die() -> ! {
    if armed().is_some_and(|armed| armed.freeze) {
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGSTOP);
    }
    let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
    std::process::abort()
}
