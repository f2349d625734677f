//! PEM certificate files (a Consul agent's CA): read, parsed and checked non-empty at start-up, so
//! a wrong path is a configuration error, not a TLS failure minutes later.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a CA file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read CA file {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("invalid PEM in CA file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("CA file {} holds no certificate", path.display())]
    Empty { path: PathBuf },
}

/// Every certificate in the PEM file at `path`; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| PemError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Invalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(
            load_certs(&empty)
                .unwrap_err()
                .to_string()
                .contains("holds no certificate")
        );
        let missing = dir.path().join("missing.pem");
        assert!(
            load_certs(&missing)
                .unwrap_err()
                .to_string()
                .contains("cannot read CA file")
        );
    }
}
