//! Where batches go: the database through the pool, or nowhere in a dry run.

use crate::connect::Pool;

/// The destination of a load.
#[derive(Clone)]
pub enum Sink {
    /// `--dry-run`: rows are counted as if inserted, nothing connects.
    DryRun,
    Database(Pool),
}

impl Sink {
    /// How many writer threads it takes: one connection each.
    pub fn writers(&self) -> u32 {
        match self {
            Sink::DryRun => 1,
            Sink::Database(_) => crate::connect::POOL_SIZE,
        }
    }
}
