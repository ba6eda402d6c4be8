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

/// Writes a line to standard output. A reader that went away (`| head`,
/// `| true`) is not a failure of the command: its exit status still says
/// how the work went.
fn say(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written,
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
