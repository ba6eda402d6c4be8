//! Secrets: the redacted [`Secret`], and the warnings for a secret file, or
//! a config file holding a password, that other users can read.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A password; its Debug and Display never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Warns when a secret file's mode grants any of `bits` (the group and
/// others bits that are too many), naming `who` can read it.
pub fn warn_if_readable_by_others(path: &Path, origin: &str, bits: u32, who: &str) {
    if let Some(mode) = mode_granting(path, bits) {
        log::warn!(
            "{origin}: {} is readable by {who} (mode {mode:04o}): chmod 600 {}",
            path.display(),
            path.display()
        );
    }
}

/// Warns when a config or service file that holds a password inline can
/// be read by group or others: the file is often shared or copied, the
/// password with it.
pub fn warn_if_inline_password_readable(file: &str, path: &Path, place: &str) {
    if let Some(mode) = mode_granting(path, 0o077) {
        log::warn!(
            "{file} {} holds a password (password in {place}) and is readable by group or others \
             (mode {mode:04o}): chmod 600 {}, or keep the password in a file of its own that \
             only you can read (--password-file, or password = {{ file = \"PATH\" }} in \
             the config file)",
            path.display(),
            path.display()
        );
    }
}

/// The permission bits of `path` when they grant any of `bits`.
fn mode_granting(path: &Path, bits: u32) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & bits != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "Secret(..)");
    }
}
