//! `consul-mysql-proxy status`: the binary asked about a running proxy that follows the Consul
//! double — not ready (no primary: exit 1), ready (exit 0) with the primary and every instance,
//! after a failover (the timeline line), `--json` (the `/status` document), and a proxy that
//! cannot be reached (exit 1).

mod support;

use std::process::Command;
use std::time::Duration;

use support::backends::{EchoBackend, closed_port};
use support::consul::{ServiceDef, TestConsul};
use support::proxy::{Proxy, binary};

const T: Duration = Duration::from_secs(30);

/// Asserts that `text` contains `needle`, showing `text` when it does not.
#[track_caller]
fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// Runs `status --admin <admin> extra…`: (exit code, stdout, stderr).
fn status(admin: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(["status", "--admin", admin, "--timeout", "5s"])
        .args(extra)
        .output()
        .expect("run consul-mysql-proxy status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_summarises_the_proxy_and_exits_by_readiness() {
    let (a, b) = (EchoBackend::start().await, EchoBackend::start().await);
    let consul = TestConsul::start_double(Default::default()).await;
    let url = consul.http_url();
    let proxy = Proxy::start(&["--consul", &url, "--discovery", "consul-health"]);
    let admin = proxy.admin().to_string();

    // Nothing registered: no primary, not ready.
    proxy.wait_for_log("no primary", T).await;
    let (code, out, err) = status(&admin, &[]);
    assert_eq!(code, 1, "{out}{err}");
    has(&out, "NOT READY   not ready: no primary");
    has(&out, "primary     none: new clients are held");
    has(&out, "(the last answer named no instance)");
    let (code, out, _) = status(&admin, &["--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["ready"], false, "{json}");
    assert!(json["primary"].is_null(), "{json}");

    // a passing, b critical: ready, a is the primary, both instances listed with why.
    for (id, node, addr) in [("mysql-a", "db-a", a.addr), ("mysql-b", "db-b", b.addr)] {
        let def = ServiceDef::ttl_primary(id, addr).on_node(node, "127.0.0.1");
        consul.register(&def.status("critical")).await;
    }
    consul.check_pass("service:mysql-a").await;
    proxy.wait_for_log("primary changed", T).await;
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let mut out = String::new();
    for _ in 0..100 {
        // The instance list follows Consul's next answer: wait until both are in it.
        let (code, text, err) = status(&admin, &[]);
        assert_eq!(code, 0, "{text}{err}");
        out = text;
        if out.contains(&b_addr) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    has(
        &out,
        &format!("READY       ready: primary {a_addr} (db-a/mysql-a)"),
    );
    has(&out, &format!("primary     {a_addr}  db-a/mysql-a"));
    has(&out, "epoch 1");
    has(&out, "watching  yes");
    has(
        &out,
        &format!("* {a_addr}  db-a/mysql-a  candidate    chosen: single candidate"),
    );
    has(
        &out,
        &format!("  {b_addr}  db-b/mysql-b  critical     not a candidate"),
    );
    has(&out, "failovers   0 since start");
    let (code, out, _) = status(&admin, &["--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["primary"]["address"], a_addr.as_str(), "{json}");

    // A failover shows on the timeline.
    let mark = proxy.log.len();
    consul.check_fail("service:mysql-a").await;
    consul.check_pass("service:mysql-b").await;
    proxy.wait_for_log_from(mark, "primary changed", T).await;
    let (code, out, _) = status(&admin, &[]);
    assert_eq!(code, 0, "{out}");
    has(&out, &format!("primary     {b_addr}  db-b/mysql-b"));
    has(
        &out,
        &format!("{a_addr} (db-a/mysql-a) → {b_addr} (db-b/mysql-b)"),
    );
    has(&out, "on_failover close");

    // Nobody there: exit 1, and stderr says why.
    let (code, out, err) = status(&closed_port().to_string(), &[]);
    assert_eq!(code, 1, "{out}");
    has(&err, "cannot ask");
}
