//! Test certificates made with rcgen: a CA, server certificates for the Consul agent's HTTPS
//! listener and client certificates for an agent with `verify_incoming`, written as PEM files
//! the proxy's `consul_*` TLS settings point at.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate (PEM).
    pub pem: String,
}

/// A certificate and its private key (PEM).
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// PEM files of an [`Identity`] on disk.
#[derive(Clone, Debug)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, cn: &str) -> Identity {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate valid for `names` (IP addresses or DNS names).
    pub fn server(&self, names: &[&str]) -> Identity {
        self.sign(names, ExtendedKeyUsagePurpose::ServerAuth, "consul agent")
    }

    /// A client certificate (for an agent with `verify_incoming`).
    pub fn client(&self, cn: &str) -> Identity {
        self.sign(&[cn], ExtendedKeyUsagePurpose::ClientAuth, cn)
    }

    /// Writes the CA certificate to `dir/<name>` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

impl Identity {
    /// Writes `dir/<stem>.pem` and `dir/<stem>-key.pem`.
    pub fn write(&self, dir: &Path, stem: &str) -> IdentityFiles {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        IdentityFiles { cert, key }
    }
}
