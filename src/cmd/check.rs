//! `check`: whether a load would succeed, without writing anything.

use anyhow::Result;

use crate::bootstrap;
use crate::config::Settings;
use crate::exit::{Status, WithStatus};

pub fn run(settings: &Settings) -> Result<Status> {
    let (mut client, manager) = super::connect(settings, std::time::Duration::ZERO)?;
    // Of several hosts, the one reached is said.
    let reached = manager
        .reached()
        .filter(|_| settings.endpoints().nth(1).is_some());
    let checks = bootstrap::preflight(&mut client, settings, reached.as_deref())
        .status(Status::Unavailable)?;
    let mut status = Status::Ok;
    for check in checks {
        match check.problem {
            None => super::say(format_args!("ok       {}", check.what))?,
            Some(problem) => {
                status = Status::Unavailable;
                super::say(format_args!("{:<8} {}: {problem}", check.label, check.what))?;
            }
        }
    }
    Ok(status)
}
