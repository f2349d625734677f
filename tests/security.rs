//! Secrets stay secret: the Consul ACL token and the MySQL monitor password never appear in the
//! proxy's logs (text or JSON, at debug level), `/status`, `/metrics`, `/readyz`, the ERR
//! packets clients get, or the process's command line (`ps`) — across normal operation, a
//! failover, a fenced (read-only) primary and Consul errors. The admin endpoint is on loopback
//! by default.

mod support;

use std::time::Duration;

use support::consul::TestConsul;
use support::mariadb::{MariaDbPair, app_opts, port_via};
use support::proxy::ProxyArgs;

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "acl-9f8e7d6c-secret-token";
const MONITOR_PASSWORD: &str = "m0nitor-S3cret-pw";

async fn put(consul: &TestConsul, path: &str, body: String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .put(format!("{}{path}", consul.http_url()))
        .header("X-Consul-Token", TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

#[tokio::test]
async fn token_and_monitor_password_never_leak() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pair = MariaDbPair::start().await;
    for db in [&pair.primary, &pair.replica] {
        db.admin_exec(&format!(
            "CREATE USER IF NOT EXISTS 'monitor'@'%' IDENTIFIED BY '{MONITOR_PASSWORD}'"
        ))
        .await;
    }
    let consul = TestConsul::start_double(consul_double::DoubleConfig {
        acl_token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await;
    let key = "service/mysql/leader";
    put(
        &consul,
        &format!("/v1/kv/{key}"),
        pair.primary.addr().to_string(),
    )
    .await;
    let env = [
        ("CONSUL_HTTP_TOKEN", TOKEN),
        ("CONSUL_MYSQL_PROXY_MONITOR_PASSWORD", MONITOR_PASSWORD),
    ];
    let args = ProxyArgs::consul_kv(consul.http_url(), key).with(&[
        "--verify-writable",
        "--monitor-user",
        "monitor",
        "--verify-interval",
        "200ms",
        "--hold-timeout",
        "1s",
        "--log-level",
        "trace",
        "--consul-wait",
        "1s",
    ]);
    let text = args.start_with_env(&env);
    let json = args
        .clone()
        .with(&["--log-format", "json"])
        .start_with_env(&env);

    let mut outputs = Vec::new();
    for proxy in [&text, &json] {
        assert_eq!(port_via(proxy.addr()).await, pair.primary.port());
        // The admin endpoint listens on loopback unless told otherwise (the default is 127.0.0.1:9306).
        assert!(proxy.admin().ip().is_loopback());
    }
    // Fenced: the primary turns read-only; clients are refused with the reason.
    let mark = text.log.len();
    pair.primary.admin_exec("SET GLOBAL read_only = ON").await;
    text.wait_for_log_from(mark, "refused as primary", T).await;
    let err = mysql_async::Conn::new(app_opts(text.addr()))
        .await
        .expect_err("refused");
    outputs.push(err.to_string());
    // Failover to the replica.
    pair.replica
        .admin_exec("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
        .await;
    put(
        &consul,
        &format!("/v1/kv/{key}"),
        pair.replica.addr().to_string(),
    )
    .await;
    for proxy in [&text, &json] {
        let start = std::time::Instant::now();
        while support::mariadb::try_port_via(proxy.addr()).await.ok() != Some(pair.replica.port()) {
            assert!(start.elapsed() < T, "no failover");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Consul rejects a request (403): the error is logged without the token.
    let faults = consul.faults().expect("double");
    faults.fail_with(Some((403, "Permission denied".into())));
    text.wait_for_log("Permission denied", T).await;
    faults.fail_with(None);

    for proxy in [&text, &json] {
        for path in ["/status", "/metrics", "/readyz", "/healthz"] {
            outputs.push(proxy.admin_get(path).await.1);
        }
        outputs.push(proxy.log.text());
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", proxy.pid())).unwrap();
        outputs.push(String::from_utf8_lossy(&cmdline).into_owned());
    }
    let all = outputs.join("\n");
    assert!(
        all.contains("monitor"),
        "the outputs were collected: {}",
        &all[..all.len().min(500)]
    );
    assert!(!all.contains(TOKEN), "the Consul token leaked");
    assert!(
        !all.contains(MONITOR_PASSWORD),
        "the monitor password leaked"
    );
    let status: serde_json::Value =
        serde_json::from_str(&text.admin_get("/status").await.1).unwrap();
    assert_eq!(status["config"]["discovery"]["token"], "set");
}
