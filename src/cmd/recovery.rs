//! Settling what a killed run left in the state journal: the server says
//! which of its transactions committed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cli::Settle;
use crate::exit::{Status, WithStatus};
use crate::load::{TxnState, txn_state};
use crate::state::{StateFile, Trace, TxStatus, Txn};

/// How long a transaction of a killed run may stay in progress: its
/// backend notices the lost connection at once, unless the host died.
const IN_PROGRESS_FOR: Duration = Duration::from_secs(30);

/// Settles the batches in `state`'s journal; a question the server leaves
/// unanswered for `stall` is given up. A batch the server cannot tell of
/// is settled as `settled` says (--settle), when it names it.
pub fn recover(
    state: &mut StateFile,
    client: &mut postgres::Client,
    table: &str,
    stall: Duration,
    settled: &[Settle],
) -> Result<Vec<i64>> {
    let mut used = Vec::new();
    let applied = state.recover(|txn, trace, acknowledged| {
        let status = status(client, txn, trace, acknowledged, table, stall)?;
        Ok(match status {
            TxStatus::Unknowable(why) => match settled.iter().find(|s| s.txid == txn.id) {
                Some(settle) => {
                    used.push(txn.id);
                    log::warn!(
                        "transaction {} of the last run: {why}; settled as {} (--settle)",
                        txn.id,
                        if settle.committed {
                            "committed"
                        } else {
                            "aborted"
                        }
                    );
                    match settle.committed {
                        true => TxStatus::Committed,
                        false => TxStatus::Aborted,
                    }
                }
                None => TxStatus::Unknowable(why),
            },
            status => status,
        })
    })?;
    if applied > 0 {
        let batches = if applied == 1 { "batch" } else { "batches" };
        log::info!("settled {applied} {batches} recorded by a run that was stopped");
    }
    Ok(used)
}

/// Says which --settle named no batch the server could not tell of (`used`
/// are those that did).
pub fn unused_settles(settled: &[Settle], used: &[i64]) {
    for settle in settled.iter().filter(|s| !used.contains(&s.txid)) {
        log::warn!(
            "--settle {}: no batch of that transaction was left to settle by hand; ignored",
            settle.txid
        );
    }
}

/// What became of transaction `txn` (`acknowledged`: the journal says its
/// COMMIT was), waiting while it is in progress.
fn status(
    client: &mut postgres::Client,
    txn: &Txn,
    trace: Option<&Trace>,
    acknowledged: bool,
    table: &str,
    stall: Duration,
) -> Result<TxStatus> {
    let started = Instant::now();
    let id = txn.id;
    loop {
        let deadline = crate::stall::Deadline::start(stall, "settling the last run");
        let state = txn_state(client, txn, trace, acknowledged, table);
        drop(deadline);
        let state = state
            .with_context(|| {
                format!("cannot ask the server whether transaction {id} of the last run committed")
            })
            .status(Status::Unavailable)?;
        match state {
            TxnState::Committed => return Ok(TxStatus::Committed),
            TxnState::Aborted => return Ok(TxStatus::Aborted),
            TxnState::Unknowable(why) => return Ok(TxStatus::Unknowable(why)),
            // A stop signal (caught in --follow) ends the wait.
            TxnState::InProgress if crate::load::caught_signal().is_some() => {
                return Err(anyhow::anyhow!(
                    "interrupted while transaction {id} of a run that was stopped was still in \
                     progress: nothing was loaded"
                ));
            }
            TxnState::InProgress if started.elapsed() < IN_PROGRESS_FOR => {
                std::thread::sleep(Duration::from_millis(200));
            }
            TxnState::InProgress => {
                return Err(anyhow::anyhow!(
                    "transaction {id} of a run that was stopped is still in progress after {} s: \
                     try again once it has ended",
                    IN_PROGRESS_FOR.as_secs()
                ))
                .status(Status::TempFail);
            }
            TxnState::Forgotten => {
                return Ok(TxStatus::Unknowable(
                    "the server no longer knows the transaction (too old)".into(),
                ));
            }
        }
    }
}
