//! pgsense-pg: loads pgsense findings (NDJSON) into PostgreSQL.
//!
//! Data flows one way: [`cli`] flags -> `config` (validated settings) ->
//! `connect` -> `load` (input lines -> records -> batches -> database) ->
//! `report`. [`cmd`] holds one file per command; [`exit`] owns the exit
//! statuses; [`stall`] gives up on a server that stops answering.

pub mod cli;
pub mod cmd;
pub mod exit;
pub mod stall;

mod bootstrap;
mod compressed;
mod config;
mod connect;
mod crash;
mod load;
mod paths;
mod pg_error;
mod rejects;
mod report;
mod state;
mod table;
