use std::time::Duration;

use consul_double::DoubleConfig;
use serde_json::{Value, json};

use crate::common::*;

fn statuses_of(v: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["Checks"].as_array().unwrap().iter())
        .filter(|c| c["CheckID"] != "serfHealth")
        .map(|c| {
            (
                c["CheckID"].as_str().unwrap().to_string(),
                c["Status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn script_check_exit_codes_map_to_statuses() {
    let d = start().await;
    for (id, code) in [("s0", 0), ("s1", 1), ("s2", 2)] {
        register(
            &d,
            json!({"ID": id, "Name": "script", "Port": 1, "Check": {
            "Args": ["sh", "-c", format!("echo out-{id}; echo err-{id} >&2; exit {code}")],
            "Interval": "50ms"}}),
        )
        .await;
    }
    register(
        &d,
        json!({"ID": "slow", "Name": "script", "Port": 1, "Check": {
        "Args": ["sleep", "5"], "Interval": "50ms", "Timeout": "100ms", "Status": "passing"}}),
    )
    .await;
    let want = [
        ("service:s0", "passing"),
        ("service:s1", "warning"),
        ("service:s2", "critical"),
        ("service:slow", "critical"),
    ];
    let v = wait_health(&d, "script", |v| {
        want.iter()
            .all(|(id, st)| check_status(v, id).as_deref() == Some(*st))
            && check_output(v, "service:slow").is_some_and(|o| !o.is_empty())
            && check_output(v, "service:s2").is_some_and(|o| !o.is_empty())
    })
    .await;
    let out = check_output(&v, "service:s1").unwrap();
    assert!(
        out.contains("out-s1") && out.contains("err-s1"),
        "stdout and stderr captured: {out:?}"
    );
    assert_eq!(
        check_output(&v, "service:slow").unwrap(),
        "Timed out (100ms) running check"
    );
    let c = v.as_array().unwrap()[0]["Checks"][1].clone();
    assert_eq!(c["Type"], "script");
    assert_eq!(c["Interval"], "50ms");
}

#[tokio::test]
async fn script_output_is_capped_at_4k_keeping_the_tail() {
    let d = start().await;
    register(
        &d,
        json!({"ID": "big", "Name": "big", "Port": 1, "Check": {
        "Args": ["sh", "-c", "i=0; while [ $i -lt 600 ]; do echo line-$i-xxxx; i=$((i+1)); done"],
        "Interval": "50ms"}}),
    )
    .await;
    let v = wait_health(&d, "big", |v| {
        check_status(v, "service:big").as_deref() == Some("passing")
    })
    .await;
    let out = check_output(&v, "service:big").unwrap();
    assert!(out.starts_with("Captured 4096 of "), "{}", &out[..60]);
    assert!(out.ends_with("line-599-xxxx\n"));
    assert!(out.len() <= 4096 + 40);

    // TTL output is capped Consul's TTL way: head kept, note appended.
    register(
        &d,
        json!({"ID": "t", "Name": "ttlbig", "Port": 1, "Check": {"TTL": "30s"}}),
    )
    .await;
    let note = "n".repeat(5000);
    put_ok(
        &d,
        "/v1/agent/check/update/service:t",
        &json!({"Status": "passing", "Output": note}).to_string(),
    )
    .await;
    let v = get(&d, "/v1/health/service/ttlbig").await.json();
    let out = check_output(&v, "service:t").unwrap();
    assert!(
        out.ends_with(" ... (captured 4096 of 5000 bytes)"),
        "{}",
        &out[4000..]
    );
}

#[tokio::test]
async fn script_checks_are_off_unless_enabled() {
    let d = start_with(DoubleConfig::default()).await;
    let r = put(
        &d,
        "/v1/agent/service/register",
        &json!({"Name": "x", "Check": {
        "Args": ["true"], "Interval": "1s"}})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("enable_script_checks"));
}

#[tokio::test]
async fn tcp_check_against_open_and_closed_ports() {
    let d = start().await;
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_addr = open.local_addr().unwrap();
    let closed_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    register(
        &d,
        json!({"ID": "open", "Name": "tcp", "Port": open_addr.port(),
        "Check": {"TCP": open_addr.to_string(), "Interval": "50ms", "Timeout": "1s"}}),
    )
    .await;
    register(
        &d,
        json!({"ID": "closed", "Name": "tcp", "Port": closed_addr.port(),
        "Check": {"TCP": closed_addr.to_string(), "Interval": "50ms", "Status": "passing"}}),
    )
    .await;
    let v = wait_health(&d, "tcp", |v| {
        check_status(v, "service:open").as_deref() == Some("passing")
            && check_status(v, "service:closed").as_deref() == Some("critical")
    })
    .await;
    assert_eq!(
        check_output(&v, "service:open").unwrap(),
        format!("TCP connect {open_addr}: Success")
    );
    assert_eq!(
        check_output(&v, "service:closed").unwrap(),
        format!("dial tcp {closed_addr}: connect: connection refused")
    );
    let passing = get(&d, "/v1/health/service/tcp?passing").await.json();
    assert_eq!(ids(&passing), ["open"]);

    // Closing the listener turns the check critical on a later run.
    drop(open);
    wait_health(&d, "tcp", |v| {
        check_status(v, "service:open").as_deref() == Some("critical")
    })
    .await;
}

#[tokio::test]
async fn ttl_checks_expire_and_accept_updates() {
    let d = start().await;
    register(
        &d,
        json!({"ID": "t", "Name": "ttl", "Port": 1,
        "Check": {"TTL": "300ms", "Status": "passing", "Notes": "heartbeat"}}),
    )
    .await;
    let v = get(&d, "/v1/health/service/ttl").await.json();
    assert_eq!(check_status(&v, "service:t").as_deref(), Some("passing"));
    assert_eq!(v[0]["Checks"][1]["Notes"], "heartbeat");
    assert_eq!(v[0]["Checks"][1]["Type"], "ttl");
    let v = wait_health(&d, "ttl", |v| {
        check_status(v, "service:t").as_deref() == Some("critical")
    })
    .await;
    assert_eq!(check_output(&v, "service:t").unwrap(), "TTL expired");

    put_ok(&d, "/v1/agent/check/pass/service:t?note=alive", "").await;
    let v = get(&d, "/v1/health/service/ttl").await.json();
    assert_eq!(check_status(&v, "service:t").as_deref(), Some("passing"));
    assert_eq!(check_output(&v, "service:t").as_deref(), Some("alive"));
    let v = wait_health(&d, "ttl", |v| {
        check_status(v, "service:t").as_deref() == Some("critical")
    })
    .await;
    assert_eq!(
        check_output(&v, "service:t").unwrap(),
        "TTL expired (last output before timeout follows): alive"
    );

    put_ok(
        &d,
        "/v1/agent/check/update/service:t",
        r#"{"Status": "warning", "Output": "lagging"}"#,
    )
    .await;
    let v = get(&d, "/v1/health/service/ttl").await.json();
    assert_eq!(check_status(&v, "service:t").as_deref(), Some("warning"));
    assert_eq!(
        put(
            &d,
            "/v1/agent/check/update/service:t",
            r#"{"Status": "bad"}"#
        )
        .await
        .status,
        400
    );
    let r = put(&d, "/v1/agent/check/pass/nope", "").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "CheckID \"nope\" does not have associated TTL");
}

#[tokio::test]
async fn check_ids_and_reregistration_keeps_status() {
    let d = start().await;
    register(
        &d,
        json!({"ID": "m", "Name": "multi", "Port": 1,
        "Check": {"TTL": "30s"},
        "Checks": [{"TTL": "30s"}, {"TTL": "30s", "CheckID": "custom", "Name": "mine"}]}),
    )
    .await;
    let v = get(&d, "/v1/health/service/multi").await.json();
    assert_eq!(
        statuses_of(&v),
        [
            ("custom".to_string(), "critical".to_string()),
            ("service:m:1".to_string(), "critical".to_string()),
            ("service:m:2".to_string(), "critical".to_string()),
        ]
    );
    register(
        &d,
        json!({"ID": "one", "Name": "single", "Port": 1, "Check": {"TTL": "30s"}}),
    )
    .await;
    put_ok(&d, "/v1/agent/check/pass/service:one", "").await;
    let v = get(&d, "/v1/health/service/single").await.json();
    assert_eq!(v[0]["Checks"][1]["Name"], "Service 'single' check");
    // Re-registering keeps the check's status (Consul snapshots check state).
    register(
        &d,
        json!({"ID": "one", "Name": "single", "Port": 1, "Check": {"TTL": "30s"}}),
    )
    .await;
    let v = get(&d, "/v1/health/service/single").await.json();
    assert_eq!(check_status(&v, "service:one").as_deref(), Some("passing"));
    // Dropping the check on re-registration removes it.
    register(&d, json!({"ID": "one", "Name": "single", "Port": 1})).await;
    let v = get(&d, "/v1/health/service/single").await.json();
    assert_eq!(v[0]["Checks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn output_only_changes_are_deferred() {
    let d = start_with(DoubleConfig {
        check_update_interval: Duration::from_secs(600),
        ..test_config()
    })
    .await;
    register(
        &d,
        json!({"ID": "t", "Name": "ttl", "Port": 1, "Check": {"TTL": "30s"}}),
    )
    .await;
    put_ok(&d, "/v1/agent/check/pass/service:t?note=a", "").await;
    let r = get(&d, "/v1/health/service/ttl").await;
    assert_eq!(check_output(&r.json(), "service:t").as_deref(), Some("a"));
    // Same status, new output: not synced yet, index unchanged.
    put_ok(&d, "/v1/agent/check/pass/service:t?note=b", "").await;
    let r2 = get(&d, "/v1/health/service/ttl").await;
    assert_eq!(check_output(&r2.json(), "service:t").as_deref(), Some("a"));
    assert_eq!(r2.index(), r.index());
    // A status change syncs at once, with the latest output.
    put_ok(&d, "/v1/agent/check/warn/service:t?note=c", "").await;
    let r3 = get(&d, "/v1/health/service/ttl").await;
    assert_eq!(check_output(&r3.json(), "service:t").as_deref(), Some("c"));
    assert!(r3.index() > r.index());
}

#[tokio::test]
async fn critical_services_are_reaped() {
    let d = start_with(DoubleConfig {
        check_reap_interval: Duration::from_millis(50),
        check_deregister_interval_min: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    register(
        &d,
        json!({"ID": "doomed", "Name": "reap", "Port": 1,
        "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "100ms"}}),
    )
    .await;
    register(
        &d,
        json!({"ID": "kept", "Name": "reap", "Port": 2,
        "Check": {"TTL": "30s", "Status": "passing", "DeregisterCriticalServiceAfter": "100ms"}}),
    )
    .await;
    let v = wait_health(&d, "reap", |v| v.as_array().unwrap().len() == 1).await;
    assert_eq!(ids(&v), ["kept"]);
}
