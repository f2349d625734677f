//! Consul over HTTPS: the proxy verifies the agent with `consul_ca_cert` (a test CA made with
//! rcgen; a TLS terminator in front of the Consul double), refuses an agent it cannot verify
//! (keeping no primary and saying why), and rejects a bad CA file at start-up.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::backends::{EchoBackend, greeted};
use support::consul::TestConsul;
use support::proxy::{ProxyArgs, run_to_exit};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(30);

/// A CA (PEM) and a server config for 127.0.0.1 signed by it.
fn test_pki() -> (String, rustls::ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "consul-mysql-proxy test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    (ca_cert.pem(), config)
}

/// Terminates TLS on a free port and forwards to `plain` (the double's HTTP address).
async fn tls_front(
    config: rustls::ServerConfig,
    plain: std::net::SocketAddr,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(plain).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_agent_is_verified_with_the_configured_ca() {
    let consul = TestConsul::start_double(Default::default()).await;
    let backend = EchoBackend::start().await;
    assert!(
        consul
            .kv_put("service/mysql/leader", &backend.addr.to_string())
            .await
    );
    let (ca_pem, server_config) = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let plain: std::net::SocketAddr = consul
        .http_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let https = format!("https://{}", tls_front(server_config, plain).await);
    let kv = ProxyArgs::consul_kv(https.as_str(), "service/mysql/leader")
        .with(&["--hold-timeout", "1s"]);

    let proxy = kv
        .clone()
        .with(&["--consul-ca-cert", ca_file.to_str().unwrap()])
        .start();
    proxy.wait_for_log("primary changed", T).await;
    greeted(proxy.addr()).await;

    // Without our CA the agent's certificate is not trusted: no primary, and the log says why.
    let untrusted = kv.start();
    let line = untrusted.wait_for_log("discovery unavailable", T).await;
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    let (code, body) = untrusted.admin_get("/readyz").await;
    assert_eq!(code, 503, "{body}");
}

#[test]
fn a_bad_ca_file_is_rejected_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let (status, err) = run_to_exit(
        &[
            "--consul",
            "https://127.0.0.1:8501",
            "--consul-ca-cert",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("`consul_ca_cert`") && err.contains("holds no certificate"),
        "{err}"
    );
}
