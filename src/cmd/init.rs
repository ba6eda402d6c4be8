//! `init`: the bootstrap alone, one line per thing found or created.

use std::io::Write;

use anyhow::Result;

use crate::bootstrap;
use crate::config::Settings;
use crate::exit::{Status, WithStatus};

pub fn run(settings: &Settings) -> Result<Status> {
    let (mut client, _) = super::connect(settings, std::time::Duration::ZERO)?;
    let done = bootstrap::bootstrap(&mut client, settings).status(Status::Unavailable)?;
    let mut stdout = std::io::stdout().lock();
    for line in done {
        writeln!(stdout, "{line}")?;
    }
    Ok(Status::Ok)
}
