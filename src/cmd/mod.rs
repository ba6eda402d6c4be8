//! The commands, one file each, and what they share.

mod check;
mod init;
mod load;
mod recovery;

use std::time::Duration;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::{self, PgEnv, Settings};
use crate::connect;
use crate::exit::{Status, WithStatus};

/// Runs the command the user asked for; its status, or an error carrying
/// one.
pub fn run(cli: &Cli) -> Result<Status> {
    let settings = config::resolve(&cli.global, &PgEnv::from_process()).status(Status::Config);
    match &cli.command {
        Command::Init => init::run(&settings?),
        Command::Check => check::run(&settings?),
        Command::Load(args) => load::run(settings, args, cli.global.quiet),
    }
}

/// Connects one client for the bootstrap, saying where to; a server that
/// is busy is tried again for up to `retry_for`.
fn connect(
    settings: &Settings,
    retry_for: Duration,
) -> Result<(postgres::Client, connect::Manager)> {
    log::info!("connecting to {}", settings.target());
    connect::connect(settings, retry_for)
        .map_err(|err| err.context(format!("cannot connect to {}", settings.target())))
        .status(Status::Unavailable)
}
