use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::common::*;

#[tokio::test]
async fn blocking_query_returns_on_change_and_times_out() {
    let d = start().await;
    register(
        &d,
        json!({"ID": "a1", "Name": "a", "Port": 1, "Check": {"TTL": "30s"}}),
    )
    .await;
    let r = get(&d, "/v1/health/service/a").await;
    let ia = r.index();
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(r.header("X-Consul-LastContact"), Some("0"));
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("leader"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));

    // Times out after wait (+ jitter up to wait/16) with the unchanged result.
    let t0 = Instant::now();
    let r = get(&d, &format!("/v1/health/service/a?index={ia}&wait=200ms")).await;
    let took = t0.elapsed();
    assert_eq!(r.index(), ia);
    assert!(
        took >= Duration::from_millis(200),
        "returned early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "returned late: {took:?}"
    );

    // Returns as soon as the result changes.
    let addr = d.http_addr();
    let path = format!("/v1/health/service/a?index={ia}&wait=30s");
    let blocked = tokio::spawn(async move {
        let t0 = Instant::now();
        (request(addr, "GET", &path, b"", &[]).await, t0.elapsed())
    });
    let before = d.faults().request_count("/v1/health/service/a");
    wait_requests(&d, "/v1/health/service/a", before).await;
    // Unrelated changes do not release it...
    put_ok(&d, "/v1/kv/x", "1").await;
    register(&d, json!({"ID": "b1", "Name": "b", "Port": 2})).await;
    // ...its own service's change does.
    put_ok(&d, "/v1/agent/check/pass/service:a1", "").await;
    let (r, took) = blocked.await.unwrap();
    assert!(r.index() > ia);
    assert!(took < Duration::from_secs(5));
    assert_eq!(
        check_status(&r.json(), "service:a1").as_deref(),
        Some("passing")
    );

    // An index ahead of the result: blocks until wait, as Consul does.
    let r = get(&d, "/v1/health/service/a?index=999999&wait=50ms").await;
    assert!(r.index() < 999999);
}

#[tokio::test]
async fn query_option_errors() {
    let d = start().await;
    let r = get(&d, "/v1/health/service/a?stale&consistent").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "Cannot specify ?stale with ?consistent, conflicting semantics."
    );
    assert_eq!(get(&d, "/v1/health/service/a?wait=10").await.status, 400);
    assert_eq!(get(&d, "/v1/health/service/a?index=abc").await.status, 400);
    let r = get(&d, "/v1/health/service/a?dc=dc2").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "No path to datacenter");
    assert_eq!(get(&d, "/v1/health/service/a?dc=dc1").await.status, 200);
    let r = get(
        &d,
        "/v1/health/service/a?stale&near=_agent&filter=Service.Port%20%3D%3D%201&unknown=1",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("stale"));
    let r = get(&d, "/v1/health/service/a?consistent").await;
    assert_eq!(
        r.header("X-Consul-Effective-Consistency"),
        Some("consistent")
    );
}

#[tokio::test]
async fn snapshot_restore_drops_indexes_and_releases_blocked_queries() {
    let d = start().await;
    for i in 0..5 {
        register(&d, json!({"ID": format!("a{i}"), "Name": "a", "Port": i})).await;
        put_ok(&d, &format!("/v1/kv/k{i}"), "v").await;
    }
    let r = get(&d, "/v1/health/service/a").await;
    let ia = r.index();
    let ik = get(&d, "/v1/kv/k4").await.index();
    let addr = d.http_addr();
    let path = format!("/v1/health/service/a?index={ia}&wait=30s");
    let blocked = tokio::spawn(async move { request(addr, "GET", &path, b"", &[]).await });
    let before = d.faults().request_count("/v1/health/service/a");
    wait_requests(&d, "/v1/health/service/a", before).await;
    d.faults().reset_index();
    let r = tokio::time::timeout(LIMIT, blocked)
        .await
        .expect("released")
        .unwrap();
    assert!(r.index() < ia, "index went backwards: {} < {ia}", r.index());
    assert!(r.index() > 0);
    let k = get(&d, "/v1/kv/k4").await;
    assert!(k.index() < ik && k.index() > 0);
    // Writes after the restore continue from the low index.
    put_ok(&d, "/v1/kv/k4", "w").await;
    assert!(get(&d, "/v1/kv/k4").await.index() < ik);

    // Over HTTP too.
    let before = d.faults().raft_index();
    assert_eq!(put(&d, "/_double/fault/reset_index", "").await.status, 200);
    assert!(d.faults().raft_index() <= before);
}
