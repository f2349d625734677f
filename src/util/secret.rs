//! Secrets (the Consul token, the monitor password): a type that never prints its value, and the
//! one reader for secret files.
//!
//! Every secret file is read the same way: at most 64 KiB (a path like `/dev/zero` must not make
//! start-up read forever), and the secret is the file's first line without its line ending — so
//! `echo secret > file` and editors that add a final newline both work.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A secret value: `Debug` shows `Secret(<redacted>)`, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Largest secret file read.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Why a secret file could not be used. The message is the cause alone; callers say which
/// setting named the file (`cannot read --password-file /x: …`).
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{source}")]
    Read { source: std::io::Error },
    #[error("larger than 64 KiB: not a secret file")]
    TooLarge,
}

/// Reads the secret in `path`: its first line, line ending removed.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    let read_error = |source| SecretFileError::Read { source };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(SecretFileError::TooLarge);
    }
    let first_line = text.lines().next().unwrap_or_default();
    Ok(Secret(first_line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_without_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        for (content, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("with space \nsecond line\n", "with space "),
            ("", ""),
        ] {
            let path = dir.path().join("secret");
            std::fs::write(&path, content).unwrap();
            assert_eq!(read_secret_file(&path).unwrap().expose(), expected);
        }
    }

    #[test]
    fn large_and_missing_files_are_refused() {
        let err = read_secret_file(Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("64 KiB"), "{err}");
        let err = read_secret_file(Path::new("/nonexistent/secret")).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(<redacted>)");
    }
}
