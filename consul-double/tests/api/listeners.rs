//! Listeners besides plain TCP: a unix socket (Consul `addresses.http = "unix://…"`,
//! agent/agent.go listenSocket) and HTTPS with optional client-certificate verification
//! (Consul `verify_incoming`, tlsutil/config.go commonTLSConfig).

use consul_double::DoubleConfig;

use crate::common::*;

fn temp_socket(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "consul-double-{tag}-{}-{}.sock",
        std::process::id(),
        fastrand::u64(..)
    ))
}

#[tokio::test]
async fn http_on_a_unix_socket_as_well_as_tcp() {
    let path = temp_socket("unix");
    // A stale file at the path is replaced, as Consul does.
    std::fs::write(&path, b"stale").unwrap();
    let d = start_with(DoubleConfig {
        http_unix: Some(path.clone()),
        ..test_config()
    })
    .await;
    assert_eq!(d.unix_socket(), Some(path.as_path()));
    assert_eq!(d.unix_url(), Some(format!("unix://{}", path.display())));
    put_ok(&d, "/v1/kv/over-tcp", "1").await;
    let s = tokio::net::UnixStream::connect(&path).await.unwrap();
    let r = request_on(s, "localhost", "GET", "/v1/kv/over-tcp?raw", b"", &[])
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "1"));
    assert!(r.header("X-Consul-Index").is_some());
    let s = tokio::net::UnixStream::connect(&path).await.unwrap();
    let r = request_on(s, "localhost", "PUT", "/v1/kv/over-unix", b"2", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(get(&d, "/v1/kv/over-unix?raw").await.text(), "2");
    drop(d);
    let _ = std::fs::remove_file(&path);
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use consul_double::{DoubleConfig, TlsConfig};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    use crate::common::*;

    struct Ca {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// (cert PEM, key PEM) signed by `ca`.
    fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client_config(server_ca: &str, client: Option<&(String, String)>) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match client {
            None => b.with_no_client_auth(),
            Some((cert, key)) => b
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        }
    }

    async fn https_get(
        addr: std::net::SocketAddr,
        cfg: rustls::ClientConfig,
        path: &str,
    ) -> Result<Resp, String> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let tls = tokio::time::timeout(
            LIMIT,
            connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp),
        )
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
        tokio::time::timeout(LIMIT, request_on(tls, "127.0.0.1", "GET", path, b"", &[]))
            .await
            .map_err(|_| "request timed out".to_string())?
            .map_err(|e| format!("exchange: {e}"))
    }

    #[tokio::test]
    async fn https_with_and_without_verify_incoming() {
        let server_ca = ca("consul-double test server CA");
        let client_ca = ca("consul-double test client CA");
        let other_ca = ca("some other CA");
        let (cert_pem, key_pem) = leaf(&server_ca, &["127.0.0.1", "localhost"]);
        let good_client = leaf(&client_ca, &["client.dc1.consul"]);
        let bad_client = leaf(&other_ca, &["client.dc1.consul"]);

        // Plain HTTPS: no client certificate asked for.
        let d = start_with(DoubleConfig {
            tls: Some(TlsConfig {
                cert_pem: cert_pem.clone(),
                key_pem: key_pem.clone(),
                ca_pem: None,
                verify_incoming: false,
            }),
            ..test_config()
        })
        .await;
        let addr = d.https_addr().expect("HTTPS listener");
        assert_eq!(d.https_url(), Some(format!("https://{addr}")));
        let r = https_get(
            addr,
            client_config(&server_ca.pem, None),
            "/v1/status/leader",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        // The plain listener is still there.
        assert_eq!(get(&d, "/v1/status/leader").await.status, 200);

        // verify_incoming: only a client certificate from the configured CA gets through.
        let d = start_with(DoubleConfig {
            tls: Some(TlsConfig {
                cert_pem,
                key_pem,
                ca_pem: Some(client_ca.pem.clone()),
                verify_incoming: true,
            }),
            ..test_config()
        })
        .await;
        let addr = d.https_addr().unwrap();
        let r = https_get(
            addr,
            client_config(&server_ca.pem, Some(&good_client)),
            "/v1/kv/x",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 404);
        assert!(r.header("X-Consul-Index").is_some());
        let no_cert = https_get(addr, client_config(&server_ca.pem, None), "/v1/kv/x").await;
        assert!(no_cert.is_err(), "no client certificate: {no_cert:?}");
        let wrong = https_get(
            addr,
            client_config(&server_ca.pem, Some(&bad_client)),
            "/v1/kv/x",
        )
        .await;
        assert!(
            wrong.is_err(),
            "client certificate from another CA: {wrong:?}"
        );
        // A failed handshake does not disturb the listener.
        let r = https_get(
            addr,
            client_config(&server_ca.pem, Some(&good_client)),
            "/v1/status/leader",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }

    #[tokio::test]
    async fn verify_incoming_without_a_ca_is_refused_at_start() {
        let server_ca = ca("server CA");
        let (cert_pem, key_pem) = leaf(&server_ca, &["127.0.0.1"]);
        let r = consul_double::start(DoubleConfig {
            tls: Some(TlsConfig {
                cert_pem,
                key_pem,
                ca_pem: None,
                verify_incoming: true,
            }),
            ..test_config()
        })
        .await;
        assert!(r.is_err());
    }
}
