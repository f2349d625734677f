//! Operations: the admin endpoint (/healthz, /readyz, /status, /metrics) across a failover,
//! the `healthcheck` subcommand, and SIGHUP reloads (good, bad, listen change).

mod support;

use std::process::Command;
use std::time::Duration;

use support::backends::{EchoBackend, echoes, greeted};
use support::consul::TestConsul;
use support::mariadb::{MariaDbPair, app_opts, port_via};
use support::proxy::{Proxy, ProxyArgs, binary};

const T: Duration = Duration::from_secs(30);
const KEY: &str = "service/mysql/leader";

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn healthcheck(admin: &str) -> (i32, String) {
    let out = Command::new(binary())
        .args(["healthcheck", "--admin", admin, "--timeout", "2s"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn admin_endpoints_and_metrics_follow_a_failover() {
    let pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    let proxy = ProxyArgs::consul_kv(consul.http_url(), KEY)
        .with(&["--hold-timeout", "1s"])
        .start();
    let admin = proxy.admin().to_string();

    // No key yet: alive but not ready, and the reason says why.
    let (code, body) = proxy.admin_get("/healthz").await;
    assert_eq!(code, 200, "{body}");
    proxy.wait_for_log("does not exist", T).await;
    let (code, body) = proxy.admin_get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("does not exist"), "{body}");
    assert_eq!(healthcheck(&admin).0, 1);
    // A client in the gap gets the ERR packet, counted by reason.
    assert!(
        mysql_async::Conn::new(app_opts(proxy.addr()))
            .await
            .is_err()
    );
    assert_eq!(
        proxy
            .metric("consul_mysql_proxy_err_packets_total{reason=\"no_primary\"}")
            .await,
        Some(1.0)
    );

    let a = pair.primary.addr().to_string();
    assert!(consul.kv_put(KEY, &a).await);
    proxy.wait_for_log("primary changed", T).await;
    let (code, body) = proxy.admin_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    let (code, out) = healthcheck(&admin);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&a), "{out}");

    let mut open = mysql_async::Conn::new(app_opts(proxy.addr()))
        .await
        .unwrap();
    let (_, body) = proxy.admin_get("/status").await;
    let status = json(&body);
    assert_eq!(status["primary"]["address"], a.as_str(), "{status}");
    assert_eq!(status["epoch"], 1);
    assert_eq!(status["connections"]["active"], 1, "{status}");
    assert_eq!(status["connections"]["per_backend"][&a], 1, "{status}");
    assert!(
        status["discovery"]["source"]
            .as_str()
            .unwrap()
            .contains(KEY)
    );
    assert!(status["discovery"]["last_success"].is_string());
    assert!(
        status["discovery"]["consul_index"].as_i64().unwrap() > 0,
        "{status}"
    );
    assert_eq!(status["config"]["discovery"]["kind"], "consul-kv");
    assert_eq!(status["config"]["discovery"]["token"], "unset");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    let primary_a = format!("consul_mysql_proxy_primary_info{{address=\"{a}\",name=\"{a}\"}}");
    assert_eq!(proxy.metric(&primary_a).await, Some(1.0));
    let backend_a = format!("consul_mysql_proxy_backend_connections{{backend=\"{a}\"}}");
    assert_eq!(proxy.metric(&backend_a).await, Some(1.0));

    // Failover to b: the open connection is closed, counters move, the info gauge follows.
    let b = pair.replica.addr().to_string();
    let mark = proxy.log.len();
    assert!(consul.kv_put(KEY, &b).await);
    proxy.wait_for_log_from(mark, "primary changed", T).await;
    assert!(
        mysql_async::prelude::Queryable::query_drop(&mut open, "SELECT 1")
            .await
            .is_err()
    );
    assert_eq!(port_via(proxy.addr()).await, pair.replica.port());
    // The timeline line is written once the first client reached the new primary.
    let timeline = proxy.wait_for_log_from(mark, "failover timeline", T).await;
    assert!(timeline.contains("closed_connections=1"), "{timeline}");
    let m = |name: &'static str| {
        let proxy = &proxy;
        async move {
            proxy
                .metric(name)
                .await
                .unwrap_or_else(|| panic!("metric {name} missing"))
        }
    };
    assert_eq!(m("consul_mysql_proxy_failovers_total").await, 1.0);
    assert_eq!(
        m("consul_mysql_proxy_connections_closed_by_failover_total").await,
        1.0
    );
    assert_eq!(
        m("consul_mysql_proxy_failover_gap_seconds_count").await,
        1.0
    );
    assert!(m("consul_mysql_proxy_connections_accepted_total").await >= 3.0);
    assert_eq!(m("consul_mysql_proxy_connections_active").await, 0.0);
    assert!(m("consul_mysql_proxy_relayed_bytes_total{direction=\"upstream\"}").await > 0.0);
    assert!(m("consul_mysql_proxy_relayed_bytes_total{direction=\"downstream\"}").await > 0.0);
    assert!(m("consul_mysql_proxy_discovery_requests_total{result=\"ok\"}").await >= 2.0);
    assert!(m("consul_mysql_proxy_discovery_last_success_timestamp_seconds").await > 1.7e9);
    assert_eq!(
        proxy.metric(&primary_a).await,
        None,
        "old primary no longer listed"
    );
    let primary_b = format!("consul_mysql_proxy_primary_info{{address=\"{b}\",name=\"{b}\"}}");
    assert_eq!(proxy.metric(&primary_b).await, Some(1.0));
    let (_, body) = proxy.admin_get("/status").await;
    assert_eq!(json(&body)["epoch"], 2);
}

#[tokio::test]
async fn healthcheck_fails_when_nothing_answers() {
    let port = support::backends::closed_port();
    let (code, out) = healthcheck(&port.to_string());
    assert_eq!(code, 1);
    assert!(out.contains("cannot ask"), "{out}");
}

#[test]
fn admin_can_be_turned_off() {
    let backend = support::backends::closed_port().to_string();
    let proxy = Proxy::start(&["--backend", &backend, "--admin", "off"]);
    assert!(
        !proxy.log.text().contains("admin endpoint"),
        "{}",
        proxy.log.text()
    );
    let (status, err) =
        support::proxy::run_to_exit(&["--backend", &backend, "--admin", "localhost"], &[]);
    assert_eq!(status.code(), Some(64));
    assert!(err.contains("`admin`"), "{err}");
}

#[tokio::test]
async fn sighup_reloads_without_dropping_connections_and_rejects_bad_files() {
    let a = EchoBackend::start().await;
    let b = EchoBackend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    let write = |body: String| std::fs::write(&file, body).unwrap();
    write(format!(
        "backend = \"{}\"\nhold_timeout = \"3s\"\nmax_connections = 10\n",
        a.addr
    ));
    let proxy = Proxy::start(&["--config", file.to_str().unwrap()]);
    let mut open = greeted(proxy.addr()).await;

    // Timeouts, limits and the log level change; the open connection is untouched.
    write(format!(
        "backend = \"{}\"\nhold_timeout = \"7s\"\nmax_connections = 20\nlog_level = \"debug\"\n",
        a.addr
    ));
    let mark = proxy.log.len();
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_for_log_from(mark, "configuration reloaded", T)
        .await;
    assert!(echoes(&mut open).await, "connection survived the reload");
    let (_, body) = proxy.admin_get("/status").await;
    let status = json(&body);
    assert_eq!(status["config"]["hold_timeout_s"], 7.0, "{status}");
    assert_eq!(status["config"]["max_connections"], 20);

    // A broken file is rejected with the reason; the running configuration stays.
    write("backend = \"nonsense\"\nhold_timout = \"1s\"\n".into());
    let mark = proxy.log.len();
    proxy.signal(libc::SIGHUP);
    let line = proxy.wait_for_log_from(mark, "reload rejected", T).await;
    assert!(line.contains("proxy.toml"), "{line}");
    assert!(echoes(&mut open).await);
    let (_, body) = proxy.admin_get("/status").await;
    assert_eq!(json(&body)["config"]["hold_timeout_s"], 7.0);

    // A new worker count (like a new listen address) needs a restart: said so, and the proxy
    // keeps serving as it was. (The harness passes --listen as a flag, which wins over the file.)
    write(format!("backend = \"{}\"\nworkers = 2\n", b.addr));
    let mark = proxy.log.len();
    proxy.signal(libc::SIGHUP);
    proxy.wait_for_log_from(mark, "needs a restart", T).await;
    proxy
        .wait_for_log_from(mark, "configuration reloaded", T)
        .await;
    // The discovery change (backend a → b) is applied: new clients reach b.
    let mut fresh = greeted(proxy.addr()).await;
    assert!(echoes(&mut fresh).await);
    let (_, body) = proxy.admin_get("/status").await;
    let status = json(&body);
    assert_eq!(
        status["primary"]["address"],
        b.addr.to_string().as_str(),
        "{status}"
    );
    assert_eq!(status["config"]["workers"], 1);
}

/// Every `CONSUL_MYSQL_PROXY_*` variable named in deploy/, the README and the Dockerfile is one
/// the binary reads (docs match code).
#[test]
fn documented_env_vars_exist() {
    let help = Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut known: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next().map(str::to_owned))
        .collect();
    known.extend(
        [
            "CONSUL_MYSQL_PROXY_MONITOR_PASSWORD",
            "CONSUL_MYSQL_PROXY_BIN",
        ]
        .map(String::from),
    );
    assert!(
        known.iter().any(|k| k == "CONSUL_MYSQL_PROXY_HOLD_TIMEOUT"),
        "{help}"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // deploy/ and its subfolders (deploy/grafana/ …).
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut dirs = vec![root.join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.extend([root.join("README.md"), root.join("Dockerfile")]);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("CONSUL_MYSQL_PROXY_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.ends_with('_') {
                continue; // the prefix itself, as in `CONSUL_MYSQL_PROXY_<FIELD>`
            }
            assert!(
                known.contains(&name),
                "{} names {name}, which the binary does not read",
                file.display()
            );
        }
    }
}
