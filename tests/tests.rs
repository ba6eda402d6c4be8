//! The integration tests, as one binary so it links once (`autotests =
//! false` and one `[[test]]` in Cargo.toml, as ripgrep does). Each module
//! tests one part of the contract against a real throwaway PostgreSQL that
//! the suite starts itself; the harness (servers, proxies, parsers, waits)
//! is in `support`.

mod support;

mod harness;

mod generated;

mod cli;
mod config;
mod connection;
mod faults;
mod init;
mod load;
mod operator;
mod resources;
mod tls;

mod isolation;
