//! pgsense-pg: parse the command line, set up logging, run the command and
//! turn its outcome into an exit status.

use std::io::Write;
use std::process::ExitCode;

use pgsense_pg::cli::{Cli, GlobalArgs};
use pgsense_pg::exit::Status;
use pgsense_pg::{cmd, exit};

fn main() -> ExitCode {
    let cli = Cli::from_command_line();
    pgsense_pg::stall::spare_inherited_sockets();
    init_logging(&cli.global);
    match cmd::run(&cli) {
        Ok(status) => status.into(),
        Err(err) => {
            let status = exit::status_of(&err);
            match status {
                // A stop asked for is said, not called an error.
                Status::Signal(_) => eprintln!("pgsense-pg: {err:#}"),
                _ => exit::print_error(&err),
            }
            status.into()
        }
    }
}

/// -q shows errors only, -v info, -vv debug, -vvv trace; RUST_LOG, when set,
/// takes precedence.
fn init_logging(args: &GlobalArgs) {
    let level = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|out, record| writeln!(out, "pgsense-pg: {}: {}", record.level(), record.args()))
        .init();
}
