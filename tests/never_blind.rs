//! Never blind: after Consul answers that cannot be used — an error body of non-ASCII text,
//! garbage (not JSON, JSON of the wrong shape, an answer cut in half), a stalled agent — the
//! proxy keeps the last primary, stays ready, never restarts a panicked task, and follows the
//! next real primary change within 2 s. (A source that panics is restarted by the supervisor:
//! `src/control/supervisor.rs` tests that with a panicking task.)

mod support;

use std::time::{Duration, Instant};

use support::backends::EchoBackend;
use support::consul::{ServiceDef, TestConsul};
use support::proxy::{Proxy, ProxyArgs};

const FOLLOW_WITHIN: Duration = Duration::from_secs(2);

struct Bed {
    consul: TestConsul,
    a: EchoBackend,
    b: EchoBackend,
    proxy: Proxy,
}

async fn bed() -> Bed {
    let consul = TestConsul::start_double(Default::default()).await;
    let (a, b) = (EchoBackend::start().await, EchoBackend::start().await);
    for (id, addr, status) in [
        ("mysql-a", a.addr, "passing"),
        ("mysql-b", b.addr, "critical"),
    ] {
        consul
            .register(
                &ServiceDef::new("mysql")
                    .id(id)
                    .tags(&["primary"])
                    .address(&addr.ip().to_string())
                    .port(addr.port())
                    .ttl_check(Duration::from_secs(600))
                    .status(status),
            )
            .await;
    }
    consul.wait_passing("mysql", Some("primary"), 1).await;
    let proxy = ProxyArgs::consul(consul.http_url())
        .with(&["--consul-wait", "2s"])
        .start();
    wait_primary(&proxy, &a.addr.to_string(), Duration::from_secs(30)).await;
    Bed {
        consul,
        a,
        b,
        proxy,
    }
}

/// Polls `/status` until the published primary is `addr`; returns how long that took.
async fn wait_primary(proxy: &Proxy, addr: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (_, body) = proxy.admin_get("/status").await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status["primary"]["address"] == addr {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "primary never became {addr} within {limit:?}: {status}\nlog:\n{}",
            proxy.log.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `fault` while Consul's answer changes (so the proxy asks and gets the bad answers),
/// until the double has served `bad_answers` more requests, then clears it, makes the real
/// change (A fails, B passes) and asserts it is followed within 2 s.
async fn survives(
    name: &str,
    fault: impl FnOnce(&consul_double::Faults),
    bad_answers: u64,
    logs_unavailable: bool,
) {
    let bed = bed().await;
    let faults = bed.consul.faults().expect("the double");
    let path = "/v1/health/service/mysql";
    let mark = bed.proxy.log.len();
    let before = faults.request_count(path);
    fault(faults);
    // A change the proxy must read (its answers are now the fault's). Made through the double's
    // own switches: its HTTP API answers with the fault too.
    assert!(faults.force_check(None, "service:mysql-b", "warning", "warming up"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while faults.request_count(path) < before + bad_answers {
        assert!(
            Instant::now() < deadline,
            "{name}: the proxy stopped asking"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if logs_unavailable {
        bed.proxy
            .wait_for_log_from(mark, "discovery unavailable", Duration::from_secs(30))
            .await;
    }
    let (code, ready) = bed.proxy.admin_get("/readyz").await;
    assert_eq!(
        code, 200,
        "{name}: still ready on the last primary: {ready}"
    );
    faults.clear();
    assert!(faults.release_check(None, "service:mysql-b"));

    bed.consul.check_fail("service:mysql-a").await;
    bed.consul.check_pass("service:mysql-b").await;
    let followed = wait_primary(&bed.proxy, &bed.b.addr.to_string(), Duration::from_secs(30)).await;
    eprintln!("[never blind] {name}: real change followed {followed:?} after the fault cleared");
    assert!(
        followed <= FOLLOW_WITHIN,
        "{name}: followed after {followed:?}"
    );
    assert_eq!(
        bed.proxy
            .metric("consul_mysql_proxy_discovery_restarts_total")
            .await,
        Some(0.0),
        "{name}: no task died"
    );
    drop(bed.a);
}

#[tokio::test]
async fn non_ascii_error_bodies() {
    let body = format!("{}: 内部エラー — no cluster leader ✗", "é".repeat(250));
    survives(
        "non-ASCII 500 body",
        |f| f.fail_with(Some((500, body))),
        2,
        true,
    )
    .await;
}

#[tokio::test]
async fn garbage_and_truncated_answers() {
    // The double cycles: not JSON, JSON of the wrong shape, the real answer cut in half.
    survives(
        "garbage and truncated answers",
        |f| f.garbage(true),
        3,
        true,
    )
    .await;
}

#[tokio::test]
async fn a_stalled_agent() {
    // A stalled agent answers nothing, not even errors: the blocking query just waits.
    survives("stalled agent", |f| f.pause(), 0, false).await;
}
