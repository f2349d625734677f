use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::common::*;

#[tokio::test]
async fn fail_with_garbage_latency_and_counts() {
    let d = start().await;
    register(&d, json!({"ID": "db", "Name": "db", "Port": 1})).await;
    d.faults()
        .fail_with(Some((500, "No cluster leader".into())));
    let r = get(&d, "/v1/health/service/db").await;
    assert_eq!((r.status, r.text().as_str()), (500, "No cluster leader"));
    d.faults()
        .fail_with(Some((429, "rate limit exceeded".into())));
    assert_eq!(get(&d, "/v1/kv/x").await.status, 429);
    d.faults().fail_with(None);
    assert_eq!(get(&d, "/v1/health/service/db").await.status, 200);

    d.faults().garbage(true);
    let r1 = get(&d, "/v1/health/service/db").await;
    let r2 = get(&d, "/v1/health/service/db").await;
    d.faults().garbage(false);
    assert_eq!((r1.status, r2.status), (200, 200));
    assert!(
        serde_json::from_slice::<serde_json::Value>(&r1.body).is_err(),
        "first is not JSON"
    );
    let shape: serde_json::Value = serde_json::from_slice(&r2.body).expect("second is JSON");
    assert!(!shape.is_array(), "but not the array a client expects");
    assert!(r1.header("X-Consul-Index").is_some());

    d.faults().latency(Duration::from_millis(150));
    let t0 = Instant::now();
    get(&d, "/v1/status/leader").await;
    assert!(t0.elapsed() >= Duration::from_millis(150));
    d.faults().latency(Duration::ZERO);

    let before = d.faults().request_count("/v1/health/");
    for _ in 0..3 {
        get(&d, "/v1/health/service/db").await;
    }
    assert_eq!(d.faults().request_count("/v1/health/") - before, 3);
    assert_eq!(
        d.faults().request_count("/v1/health/service/db") - before,
        3
    );
}

#[tokio::test]
async fn pause_holds_requests_until_resume() {
    let d = start().await;
    d.faults().pause();
    let addr = d.http_addr();
    let mut pending =
        tokio::spawn(async move { request(addr, "GET", "/v1/status/leader", b"", &[]).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err(),
        "no answer while paused"
    );
    d.faults().resume();
    let r = tokio::time::timeout(LIMIT, pending).await.unwrap().unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn control_endpoints_over_http() {
    let d = start().await;
    put_ok(
        &d,
        "/_double/fault/fail_with?status=403&body=Permission%20denied",
        "",
    )
    .await;
    let r = get(&d, "/v1/health/service/db").await;
    assert_eq!((r.status, r.text().as_str()), (403, "Permission denied"));
    put_ok(&d, "/_double/fault/fail_with", "").await;
    assert_eq!(get(&d, "/v1/health/service/db").await.status, 200);
    put_ok(&d, "/_double/fault/latency?ms=10", "").await;
    put_ok(&d, "/_double/fault/garbage?on=false", "").await;
    put_ok(&d, "/_double/fault/dns_servfail?on=false", "").await;
    put_ok(
        &d,
        "/_double/fault/node_health?node=consul-double&status=critical",
        "",
    )
    .await;
    let v = get(&d, "/v1/health/service/consul?passing").await.json();
    assert_eq!(v, json!([]));
    put_ok(&d, "/_double/fault/clear", "").await;
    put_ok(
        &d,
        "/_double/fault/node_health?node=consul-double&status=passing",
        "",
    )
    .await;
    assert_eq!(
        put(
            &d,
            "/_double/fault/node_health?node=ghost&status=critical",
            ""
        )
        .await
        .status,
        404
    );
    let c = get(&d, "/_double/requests?prefix=/v1/health/service/")
        .await
        .json();
    assert_eq!(c["count"], 3);
    put_ok(&d, "/_double/fault/pause", "").await;
    put_ok(&d, "/_double/fault/resume", "").await;
    assert_eq!(get(&d, "/v1/status/leader").await.status, 200);
}

#[tokio::test]
async fn shutdown_releases_blocked_queries() {
    let d = start().await;
    let i = get(&d, "/v1/kv/x").await.index();
    let addr = d.http_addr();
    let path = format!("/v1/kv/x?index={i}&wait=5m");
    let blocked = tokio::spawn(async move {
        let s = tokio::net::TcpStream::connect(addr).await;
        drop(s);
        request(addr, "GET", &path, b"", &[]).await
    });
    let seen = d.faults().request_count("/v1/kv/x");
    wait_requests(&d, "/v1/kv/x", seen).await;
    tokio::time::timeout(LIMIT, d.shutdown())
        .await
        .expect("shutdown completes");
    let r = tokio::time::timeout(LIMIT, blocked)
        .await
        .expect("blocked query released")
        .unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn request_log_keeps_paths_and_queries() {
    let d = start().await;
    get(
        &d,
        "/v1/health/service/db?index=7&wait=90000ms&filter=Service.ID%20%3D%3D%20a&stale",
    )
    .await;
    get(&d, "/v1/kv/x").await;
    get(&d, "/_double/requests?prefix=/v1").await;
    let seen = d.faults().requests("/v1/");
    assert_eq!(seen.len(), 2, "control endpoints are not logged: {seen:?}");
    let h = &seen[0];
    assert_eq!(h.path, "/v1/health/service/db");
    assert_eq!(h.param("wait"), Some("90000ms"));
    assert_eq!(h.param("index"), Some("7"));
    assert_eq!(h.param("filter"), Some("Service.ID == a"));
    assert_eq!(h.param("stale"), Some(""));
    assert!(h.raw_query.contains("wait=90000ms"));
    assert_eq!(d.faults().requests("/v1/kv/")[0].path, "/v1/kv/x");
}
