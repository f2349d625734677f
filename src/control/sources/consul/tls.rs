//! TLS toward a Consul agent, set up as Consul's own client does (`api/api.go`
//! `SetupTLSConfig`): roots from `consul_ca_cert` and/or `consul_ca_path` (else the system
//! store), a client certificate for agents with `verify_incoming`, a server name to check instead
//! of the address's host (`CONSUL_TLS_SERVER_NAME`), and — only when asked, loudly —
//! no verification at all (`CONSUL_HTTP_SSL_VERIFY=false`).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::ConsulTls;
use crate::util::pem::{load_cert_dir, load_certs, load_client_identity};

/// rustls (ring provider) configured from `tls`. The error is one line naming the file.
pub fn client_config(tls: &ConsulTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let roots = Arc::new(roots(tls)?);
    let verifier: Arc<dyn ServerCertVerifier> = if tls.skip_verify {
        Arc::new(NoVerification(provider))
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| e.to_string())?;
        match &tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| format!("consul_tls_server_name `{name}`: {e}"))?;
                Arc::new(FixedName {
                    inner: webpki,
                    name,
                })
            }
            None => webpki,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.client_cert {
        Some((cert, key)) => {
            let (chain, key) = load_client_identity(cert, key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn roots(tls: &ConsulTls) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut given: Vec<CertificateDer<'static>> = Vec::new();
    if let Some(path) = &tls.ca_cert {
        given.extend(load_certs(path).map_err(|e| e.to_string())?);
    }
    if let Some(dir) = &tls.ca_path {
        given.extend(load_cert_dir(dir).map_err(|e| e.to_string())?);
    }
    if given.is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            // A broken system certificate must not stop the proxy; it is simply not trusted.
            let _ = roots.add(cert);
        }
    }
    for cert in given {
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// Verifies the agent's certificate for a configured name instead of the URL's host.
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `consul_tls_skip_verify`: any certificate is accepted (the handshake signatures are still
/// checked, so the connection is encrypted to *someone*).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
