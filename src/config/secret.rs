//! Secrets: the redacted [`Secret`], and the warning for a secret file that
//! other users can read.

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
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & bits != 0 {
        log::warn!(
            "{origin}: {} is readable by {who} (mode {mode:04o}): chmod 600 {}",
            path.display(),
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "Secret(..)");
    }
}
