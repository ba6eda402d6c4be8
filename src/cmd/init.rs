//! `init`: the bootstrap alone, one line per thing found or created.

use anyhow::Result;

use crate::bootstrap;
use crate::config::Settings;
use crate::exit::{Status, WithStatus};

pub fn run(settings: &Settings) -> Result<Status> {
    let (mut client, _) = super::connect(settings, std::time::Duration::ZERO)?;
    let done = bootstrap::bootstrap(&mut client, settings).status(Status::Unavailable)?;
    for line in done {
        super::say(format_args!("{line}"))?;
    }
    Ok(Status::Ok)
}
