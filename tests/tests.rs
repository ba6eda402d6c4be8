//! The integration tests, as one binary so it links once (`autotests =
//! false` and one `[[test]]` in Cargo.toml, as ripgrep does). Each module
//! tests one part of the contract against a real throwaway PostgreSQL that
//! the suite starts itself; the harness (servers, proxies, parsers, waits)
//! is in `support`.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

mod harness;

mod exit_status;
mod generated;

mod cli;
mod config;
mod connection;
mod init;
mod libpq;
mod load;
mod pgbouncer;
mod resources;
mod tls;

// Faults: nothing lost, nothing twice.
mod commit_outcome;
mod compressed;
mod crash;
mod failover;
mod follow;
mod inputs;
mod permanent_errors;
mod reject_file;
mod restart;
mod retry;
mod signals;
mod stall;
mod state_file;

// The operator's tools.
mod check;
mod completions;
mod dry_run;
mod max_rejects;
mod progress;
mod summary;

mod isolation;
mod messages;
