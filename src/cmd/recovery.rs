//! Settling what a killed run left in the state journal: the server says
//! which of its transactions committed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::exit::{Status, WithStatus};
use crate::state::{StateFile, TxStatus};

/// How long a transaction of a killed run may stay in progress: its
/// backend notices the lost connection at once, unless the host died.
const IN_PROGRESS_FOR: Duration = Duration::from_secs(30);

pub fn recover(state: &mut StateFile, client: &mut postgres::Client) -> Result<()> {
    let applied = state.recover(|txid| status(client, txid))?;
    log::info!("settled {applied} batches recorded by a run that was stopped");
    Ok(())
}

/// What became of transaction `txid`, waiting while it is in progress.
fn status(client: &mut postgres::Client, txid: i64) -> Result<TxStatus> {
    let started = Instant::now();
    loop {
        let status = crate::load::txid_status(client, txid)
            .with_context(|| {
                format!(
                    "cannot ask the server whether transaction {txid} of the last run committed"
                )
            })
            .status(Status::Unavailable)?;
        match status.as_deref() {
            Some("committed") => return Ok(TxStatus::Committed),
            Some("aborted") => return Ok(TxStatus::Aborted),
            Some(_) if started.elapsed() < IN_PROGRESS_FOR => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(_) => {
                return Err(anyhow::anyhow!(
                    "transaction {txid} of a run that was stopped is still in progress after {} s: \
                     try again once it has ended",
                    IN_PROGRESS_FOR.as_secs()
                ))
                .status(Status::TempFail);
            }
            None => {
                return Err(anyhow::anyhow!(
                    "the server no longer knows transaction {txid} of the run that was stopped \
                     (too old): the state file cannot tell whether its batch was loaded; check \
                     the table and remove the state file's journal to go on"
                ))
                .status(Status::Failure);
            }
        }
    }
}
