//! The HTTPS listener: rustls (ring provider) in front of the same axum app.
//!
//! Follows Consul's incoming HTTPS TLS config (tlsutil/config.go IncomingHTTPSConfig /
//! commonTLSConfig): minimum TLS 1.2 (`tls_min_version` default), the configured
//! certificate, and — only with `verify_incoming` — `tls.RequireAndVerifyClientCert`
//! against the configured CA, so a client without a certificate, or with one that does not
//! chain to that CA, fails the handshake; without `verify_incoming` no client certificate is
//! asked for. ALPN offers `http/1.1` only (Consul also offers `h2`; the double speaks
//! HTTP/1.1).
//!
//! Handshakes run in their own tasks (bounded by a 10 s timeout), so a slow or failing
//! client never holds up the others; finished connections are handed to axum through
//! [`axum::serve::Listener`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::TlsConfig;

/// Bound TLS listener; dropping it stops accepting.
pub(crate) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

fn server_config(cfg: &TlsConfig) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cfg.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("parsing the HTTPS certificate PEM")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in the HTTPS certificate PEM"
    );
    let key = PrivateKeyDer::from_pem_slice(cfg.key_pem.as_bytes())
        .context("parsing the HTTPS private key PEM")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?;
    let builder = if cfg.verify_incoming {
        let ca = cfg
            .ca_pem
            .as_ref()
            .context("verify_incoming needs a CA (TlsConfig::ca_pem)")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.context("parsing the CA PEM")?)?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl TlsListener {
    pub(crate) async fn bind(addr: SocketAddr, cfg: &TlsConfig) -> anyhow::Result<Self> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(cfg)?));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding HTTPS on {addr}"))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let accept_task = tokio::spawn(async move {
            loop {
                let (sock, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            rx,
            addr,
            accept_task,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
