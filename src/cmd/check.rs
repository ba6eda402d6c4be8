//! `check`: whether a load would succeed, without writing anything.

use std::io::Write;

use anyhow::Result;

use crate::bootstrap;
use crate::config::Settings;
use crate::exit::{Status, WithStatus};

pub fn run(settings: &Settings) -> Result<Status> {
    let (mut client, _) = super::connect(settings, std::time::Duration::ZERO)?;
    let checks = bootstrap::preflight(&mut client, settings).status(Status::Unavailable)?;
    let mut stdout = std::io::stdout().lock();
    let mut status = Status::Ok;
    for check in checks {
        match check.problem {
            None => writeln!(stdout, "ok       {}", check.what)?,
            Some(problem) => {
                status = Status::Unavailable;
                writeln!(stdout, "missing  {}: {problem}", check.what)?;
            }
        }
    }
    Ok(status)
}
