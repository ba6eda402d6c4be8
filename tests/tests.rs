//! The integration tests, as one binary so it links once. Each module tests
//! one part of the contract (issue 2) against a real throwaway PostgreSQL
//! that the suite starts itself (see `support`).
//!
//! The modules live under suite/ rather than next to this file because
//! cargo builds every tests/*.rs file as a test binary of its own.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

#[path = "suite/harness.rs"]
mod harness;

#[path = "suite/generated.rs"]
mod generated;

#[path = "suite/cli.rs"]
mod cli;
#[path = "suite/config.rs"]
mod config;
#[path = "suite/connection.rs"]
mod connection;
#[path = "suite/faults.rs"]
mod faults;
#[path = "suite/init.rs"]
mod init;
#[path = "suite/load.rs"]
mod load;
#[path = "suite/operator.rs"]
mod operator;
#[path = "suite/resources.rs"]
mod resources;
#[path = "suite/tls.rs"]
mod tls;

#[path = "suite/isolation.rs"]
mod isolation;
