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

/// A scratch directory for a script check's files, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("double-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    /// The runs so far: `f` for the one failed run, `p` for each passing one.
    fn runs(&self) -> String {
        std::fs::read_to_string(self.0.join("runs")).unwrap_or_default()
    }
    /// The next run (only that one) fails.
    fn fail_once(&self) {
        std::fs::write(self.0.join("fail"), "").unwrap();
    }
    /// A check that passes, except once after [`Scratch::fail_once`]; logs each run.
    fn args(&self) -> Value {
        let d = self.0.display();
        json!([
            "sh",
            "-c",
            format!(
                "if rm {d}/fail 2>/dev/null; then echo f >> {d}/runs; echo failed; exit 2; fi; echo p >> {d}/runs; echo ok"
            )
        ])
    }
    /// Waits (bounded) until the runs log, after its first `f`, has `passes` passing runs.
    async fn wait_passes_after_failure(&self, passes: usize) {
        tokio::time::timeout(LIMIT, async {
            loop {
                let runs = self.runs();
                if let Some(i) = runs.find('f')
                    && runs[i..].matches('p').count() >= passes
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("check runs");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_modify_index(result: &Value, check_id: &str) -> u64 {
    result.as_array().unwrap()[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == check_id)
        .and_then(|c| c["ModifyIndex"].as_u64())
        .expect("check ModifyIndex")
}

// Consul: agent/checks/check.go StatusHandler; agent/agent.go addCheck (FailuresBeforeWarning
// defaults to FailuresBeforeCritical).
#[tokio::test]
async fn run_thresholds_delay_status_changes_like_the_status_handler() {
    let d = start().await;
    let (once, twice) = (Scratch::new("fbc1"), Scratch::new("fbc2"));
    for (id, scratch, extra) in [
        ("fbc-unset", &once, json!({})),
        ("fbc-2", &twice, json!({"FailuresBeforeCritical": 2})),
    ] {
        let mut check = json!({"Args": scratch.args(), "Interval": "300ms"});
        check
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        register(&d, json!({"ID": id, "Name": id, "Port": 1, "Check": check})).await;
    }
    for id in ["fbc-unset", "fbc-2"] {
        wait_health(&d, id, |v| {
            check_status(v, &format!("service:{id}")).as_deref() == Some("passing")
        })
        .await;
    }
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for id in ["fbc-unset", "fbc-2"] {
            let r = get(&d, &format!("/v1/health/service/{id}")).await.json();
            v.push(check_modify_index(&r, &format!("service:{id}")));
        }
        v
    };
    // One failed run between passing ones.
    once.fail_once();
    twice.fail_once();
    let seen_critical = wait_health(&d, "fbc-unset", |v| {
        check_status(v, "service:fbc-unset").as_deref() == Some("critical")
    })
    .await;
    assert_eq!(
        check_output(&seen_critical, "service:fbc-unset").unwrap(),
        "failed\n"
    );
    once.wait_passes_after_failure(1).await;
    twice.wait_passes_after_failure(2).await;
    let unset = wait_health(&d, "fbc-unset", |v| {
        check_status(v, "service:fbc-unset").as_deref() == Some("passing")
    })
    .await;
    assert!(check_modify_index(&unset, "service:fbc-unset") > before[0]);
    // FailuresBeforeCritical 2: the single failure changed nothing, not even the output (and
    // no warning in between: FailuresBeforeWarning defaults to FailuresBeforeCritical).
    let two = get(&d, "/v1/health/service/fbc-2").await.json();
    assert_eq!(
        check_status(&two, "service:fbc-2").as_deref(),
        Some("passing")
    );
    assert_eq!(check_output(&two, "service:fbc-2").unwrap(), "ok\n");
    assert_eq!(check_modify_index(&two, "service:fbc-2"), before[1]);
}

#[tokio::test]
async fn success_before_passing_needs_that_many_passes_after_a_failure() {
    let d = start().await;
    let s = Scratch::new("sbp2");
    register(
        &d,
        json!({"ID": "sbp", "Name": "sbp", "Port": 1, "Check": {
            "Args": s.args(), "Interval": "500ms", "SuccessBeforePassing": 2}}),
    )
    .await;
    // The counters start at the thresholds: the first passing run counts at once.
    wait_health(&d, "sbp", |v| {
        check_status(v, "service:sbp").as_deref() == Some("passing")
    })
    .await;
    s.fail_once();
    wait_health(&d, "sbp", |v| {
        check_status(v, "service:sbp").as_deref() == Some("critical")
    })
    .await;
    wait_health(&d, "sbp", |v| {
        check_status(v, "service:sbp").as_deref() == Some("passing")
    })
    .await;
    let runs = s.runs();
    let after = &runs[runs.find('f').unwrap()..];
    assert!(
        after.matches('p').count() >= 2,
        "passing again after only one passing run: {runs:?}"
    );
}

// Consul: agent/agent.go addCheck — an HTTP API registration is a remote source.
#[tokio::test]
async fn api_script_registration_names_enable_script_checks_only() {
    let d = start_with(DoubleConfig::default()).await;
    let r = put(
        &d,
        "/v1/agent/service/register",
        &json!({"Name": "x", "Check": {"Args": ["true"], "Interval": "1s"}}).to_string(),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.text(),
        "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true"
    );
}
