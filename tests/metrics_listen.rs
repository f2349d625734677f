//! `metrics_listen`: a second, read-only HTTP address for scrapers and dashboards. It serves
//! `/`, `/status`, `/metrics`, `/healthz` and `/readyz` and nothing that changes state (the
//! admin router's own test checks that an admin-only route answers 404 there); off by default.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::backends::EchoBackend;
use support::proxy::{Proxy, parse_field};

/// `method path` on `addr`: (status, body).
async fn request(method: reqwest::Method, addr: SocketAddr, path: &str) -> (u16, String) {
    // reqwest is built with `rustls-no-provider`: a provider must exist even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{addr}{path}");
    let r = client
        .request(method, &url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn the_read_only_routes_answer_on_metrics_listen() {
    let backend = EchoBackend::start().await;
    let backend = backend.addr.to_string();
    // Set by its environment variable, as the deploy/ examples do.
    let proxy = Proxy::start_with_env(
        &["--backend", &backend],
        &[("CONSUL_MYSQL_PROXY_METRICS_LISTEN", "127.0.0.1:0")],
    );
    let line = proxy
        .wait_for_log("read-only endpoint listening", Duration::from_secs(10))
        .await;
    let addr: SocketAddr = parse_field(&line, "addr=").expect("addr= in the line");
    assert_ne!(addr, proxy.admin());

    let (code, metrics) = request(reqwest::Method::GET, addr, "/metrics").await;
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("consul_mysql_proxy_connections_accepted_total"),
        "{metrics}"
    );
    for (path, wanted) in [
        ("/", "consul-mysql-proxy"),
        ("/status", "\"primary\""),
        ("/healthz", "ok"),
        ("/readyz", "ready: primary"),
    ] {
        let (code, body) = request(reqwest::Method::GET, addr, path).await;
        assert_eq!(code, 200, "{path}: {body}");
        assert!(body.contains(wanted), "{path}: {body}");
    }
    // Only reads: no other method, no other path.
    let (code, _) = request(reqwest::Method::POST, addr, "/status").await;
    assert_eq!(code, 405);
    let (code, _) = request(reqwest::Method::GET, addr, "/switchover").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn metrics_listen_is_off_by_default() {
    let backend = EchoBackend::start().await;
    let proxy = Proxy::start(&["--backend", &backend.addr.to_string()]);
    let (code, _) = proxy.admin_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        !proxy.log.text().contains("read-only endpoint listening"),
        "{}",
        proxy.log.text()
    );
}
