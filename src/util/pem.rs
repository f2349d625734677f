//! PEM certificate files (a Consul agent's CA): read, parsed and checked non-empty at start-up, so
//! a wrong path is a configuration error, not a TLS failure minutes later.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a CA file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("invalid PEM in {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{} holds no certificate", path.display())]
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

/// Every certificate in the PEM files of directory `dir` (as Consul's `CONSUL_CAPATH`); at least
/// one. Files that hold no certificate are skipped.
pub fn load_cert_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PemError::Read {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    let mut certs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            match load_certs(&path) {
                Ok(mut found) => certs.append(&mut found),
                Err(PemError::Empty { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if certs.is_empty() {
        return Err(PemError::Empty {
            path: dir.to_owned(),
        });
    }
    Ok(certs)
}

/// A client certificate chain and its private key, for TLS client authentication.
pub fn load_client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PemError> {
    let chain = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| PemError::Invalid {
        path: key.to_owned(),
        reason: format!("no usable private key: {e}"),
    })?;
    Ok((chain, key))
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
                .contains("cannot read")
        );
    }
}
