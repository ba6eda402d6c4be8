//! The files a load writes (state, reject, metrics, and theirs): none may
//! be another, nor an input.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::LoadArgs;
use crate::exit::{Status, WithStatus};
use crate::load::Source;
use crate::rejects::Rejects;

/// The files a run writes, with their temporary and lock files.
pub(super) fn own_files(args: &LoadArgs) -> Vec<PathBuf> {
    outputs(args)
        .into_iter()
        .flat_map(|(_, files)| files)
        .collect()
}

/// The files each flag makes a run write, the named one first.
pub(super) fn outputs(args: &LoadArgs) -> Vec<(&'static str, Vec<PathBuf>)> {
    let mut outputs = Vec::new();
    for (flag, path, suffixes) in [
        (
            "--state-file",
            &args.state_file,
            &[".journal", ".journal.tmp", ".lock", ".tmp"][..],
        ),
        ("--reject-file", &args.reject_file, &[][..]),
        ("--metrics-file", &args.metrics_file, &[".tmp"][..]),
    ] {
        let Some(path) = path else { continue };
        let mut files = vec![path.clone()];
        // The state file puts its own beside the file a link leads to.
        let base = match flag {
            "--state-file" => crate::paths::real(path),
            _ => path.clone(),
        };
        for suffix in suffixes {
            let mut with = base.clone().into_os_string();
            with.push(suffix);
            files.push(with.into());
        }
        outputs.push((flag, files));
    }
    outputs
}

/// Refuses output files that are one another (or one's journal, lock or
/// temporary file): what one is written, the other would destroy.
pub(super) fn check_distinct(args: &LoadArgs) -> Result<()> {
    let outputs = outputs(args);
    for (index, (flag, files)) in outputs.iter().enumerate() {
        for (other_flag, other_files) in &outputs[index + 1..] {
            for (file, other) in files
                .iter()
                .flat_map(|f| other_files.iter().map(move |o| (f, o)))
            {
                if crate::paths::same_file(file, other) {
                    return Err(anyhow::anyhow!(
                        "{flag} {} and {other_flag} {} would write the same file ({}): \
                         name different files",
                        files[0].display(),
                        other_files[0].display(),
                        crate::paths::real(file).display()
                    ))
                    .status(Status::Usage);
                }
            }
        }
    }
    Ok(())
}

/// Where the run's metrics go: not to `-`, which was refused, nor to a file
/// that is an input or another output, nor from a dry run.
pub(super) fn metrics_file(args: &LoadArgs) -> Option<&Path> {
    let path = args.metrics_file.as_deref()?;
    if path == Path::new("-") || args.dry_run {
        return None;
    }
    let outputs = outputs(args);
    let (mine, others): (Vec<_>, Vec<_>) = outputs
        .iter()
        .partition(|(flag, _)| *flag == "--metrics-file");
    let others: Vec<&PathBuf> = others
        .iter()
        .flat_map(|(_, files)| files)
        .chain(args.files.iter().filter(|f| f.as_path() != Path::new("-")))
        .collect();
    let collides = mine.iter().flat_map(|(_, files)| files).any(|file| {
        others
            .iter()
            .any(|other| crate::paths::same_file(file, other))
    });
    (!collides).then_some(path)
}

/// Refuses a state or metrics file (or one of theirs) that is also an
/// input: reading it as findings is a mistake, and the run would rewrite
/// it, or take it for a damaged state file.
pub(super) fn check_outputs_not_inputs(args: &LoadArgs) -> Result<()> {
    for (flag, files) in outputs(args) {
        // A reject file that is an input has its own message, below.
        if flag == "--reject-file" {
            continue;
        }
        let input = args.files.iter().find(|input| {
            input.as_path() != Path::new("-")
                && files
                    .iter()
                    .any(|file| crate::paths::same_file(input, file))
        });
        if let Some(input) = input {
            return Err(anyhow::anyhow!(
                "{flag} {} is also an input ({}): the run writes it; \
                 name another file for {flag}",
                files[0].display(),
                input.display()
            ))
            .status(Status::Usage);
        }
    }
    Ok(())
}

/// A reject file that is also an input would grow while being read: with
/// --follow, each dropped line would be read again and dropped again, for
/// ever.
pub(super) fn check_rejects_not_an_input(
    args: &LoadArgs,
    sources: &[Source],
    rejects: Option<&Rejects>,
) -> Result<()> {
    // Followed files are opened later: they are told by their names, which
    // may lead to the reject file through a link.
    let input = match (rejects, &args.reject_file) {
        (Some(_), Some(path)) if args.follow => args
            .files
            .iter()
            .find(|file| crate::paths::same_file(file, path))
            .map(|file| file.display().to_string()),
        (Some(rejects), _) => sources
            .iter()
            .find(|s| s.identity.is_some() && s.identity == rejects.identity())
            .map(|s| s.name.clone()),
        _ => None,
    };
    match input {
        Some(input) => Err(anyhow::anyhow!(
            "the reject file is also an input ({input}): it would grow while being read; \
             write rejects to another file, and replay this one without --reject-file or with another"
        ))
        .status(Status::Usage),
        None => Ok(()),
    }
}

/// With a state file, the reject file must be a regular file: a killed
/// run's lines are taken back from it by the next run.
pub(super) fn check_rejects_regular(args: &LoadArgs, rejects: Option<&Rejects>) -> Result<()> {
    match rejects {
        Some(rejects) if args.state_file.is_some() && !rejects.is_regular() => {
            Err(anyhow::anyhow!(
                "--reject-file {} is not a regular file: with --state-file, the lines of a batch \
             whose COMMIT did not happen are taken back from it, which a pipe or a device \
             cannot do; name a file, or leave --reject-file out",
                rejects.path().display()
            ))
            .status(Status::Usage)
        }
        _ => Ok(()),
    }
}
