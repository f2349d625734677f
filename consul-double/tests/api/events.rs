//! Node-side events (agent leave / restart / crash / partition, forced check, maintenance),
//! the streaming health backend, and `?stale` against a server that lost its leader.

use std::time::Duration;

use consul_double::{DoubleConfig, ServerState};
use serde_json::{Value, json};

use crate::common::*;

fn entry<'a>(result: &'a Value, service_id: &str) -> &'a Value {
    result
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Service"]["ID"] == service_id)
        .unwrap_or_else(|| panic!("no entry {service_id} in {result:#}"))
}

fn check<'a>(e: &'a Value, check_id: &str) -> &'a Value {
    e["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == check_id)
        .unwrap_or_else(|| panic!("no check {check_id} in {e:#}"))
}

async fn two_nodes(d: &consul_double::ConsulDouble) {
    for (id, node, ip) in [
        ("db-a", "node-a", "127.0.0.2"),
        ("db-b", "node-b", "127.0.0.3"),
    ] {
        put_ok(
            d,
            &format!("/v1/agent/service/register?node={node}&node_address={ip}"),
            &json!({"ID": id, "Name": "db", "Port": 3306, "Tags": ["primary"],
                    "Check": {"TTL": "600s", "Status": "passing", "Notes": "ttl from orchestrator"}})
            .to_string(),
        )
        .await;
    }
}

/// Without `?passing` every instance comes back with its full Checks array, node checks
/// first (serfHealth, `_node_maintenance`), then the service's (Consul:
/// agent/consul/state/catalog.go parseCheckServiceNodes), each with the fields of
/// agent/structs/structs.go HealthCheck.
#[tokio::test]
async fn health_returns_every_instance_with_all_checks_and_fields() {
    let d = start().await;
    two_nodes(&d).await;
    assert!(d.faults().node_maintenance("node-b", true, ""));
    assert!(
        d.faults()
            .service_maintenance(None, "db-b", true, "reindex")
    );
    let r = get(&d, "/v1/health/service/db").await;
    let v = r.json();
    assert_eq!(ids(&v), vec!["db-a", "db-b"]);
    let b = entry(&v, "db-b");
    let order: Vec<&str> = b["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![
            "_node_maintenance",
            "serfHealth",
            "_service_maintenance:db-b",
            "service:db-b"
        ]
    );
    let fields = [
        "Node",
        "CheckID",
        "Name",
        "Status",
        "Notes",
        "Output",
        "ServiceID",
        "ServiceName",
        "ServiceTags",
        "Type",
        "Interval",
        "Timeout",
        "ExposedPort",
        "Definition",
        "CreateIndex",
        "ModifyIndex",
    ];
    for c in b["Checks"].as_array().unwrap() {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        for f in fields {
            assert!(keys.contains(&f), "{f} missing in {c}");
        }
        assert_eq!(c["Node"], "node-b");
    }
    // Consul: agent/agent.go EnableNodeMaintenance.
    let nm = check(b, "_node_maintenance");
    assert_eq!(nm["Name"], "Node Maintenance Mode");
    assert_eq!(nm["Status"], "critical");
    assert_eq!(nm["Type"], "maintenance");
    assert_eq!(nm["ServiceID"], "");
    assert_eq!(nm["ServiceTags"], json!([]));
    assert_eq!(
        nm["Notes"],
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
    );
    // Consul: agent/agent.go EnableServiceMaintenance.
    let sm = check(b, "_service_maintenance:db-b");
    assert_eq!(sm["Name"], "Service Maintenance Mode");
    assert_eq!(sm["Notes"], "reindex");
    assert_eq!(sm["Output"], "");
    assert_eq!(sm["Type"], "maintenance");
    assert_eq!(sm["ServiceName"], "db");
    assert_eq!(sm["ServiceTags"], json!(["primary"]));
    // Consul: agent/structs/catalog.go SerfCheck* constants.
    let serf = check(b, "serfHealth");
    assert_eq!(serf["Name"], "Serf Health Status");
    assert_eq!(serf["Output"], "Agent alive and reachable");
    assert_eq!(serf["Type"], "");
    let svc = check(b, "service:db-b");
    assert_eq!(svc["Notes"], "ttl from orchestrator");
    assert_eq!(svc["Type"], "ttl");
    // ?passing drops node-b (node maintenance alone is enough).
    let r = get(&d, "/v1/health/service/db?passing").await;
    assert_eq!(ids(&r.json()), vec!["db-a"]);
    // Node maintenance over HTTP, as Consul's /v1/agent/maintenance.
    let r = put(&d, "/v1/agent/maintenance?enable=false&node=node-b", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put(&d, "/v1/agent/maintenance", "").await;
    assert_eq!(
        (r.status, r.text()),
        (400, "Missing value for enable".into())
    );
    let r = put(&d, "/v1/agent/maintenance?enable", "").await;
    assert_eq!(
        (r.status, r.text()),
        (400, "Invalid value for enable: \"\"".into())
    );
    let r = put(
        &d,
        "/v1/agent/maintenance?enable=true&reason=kernel%20patch",
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let v = get(&d, "/v1/health/service/consul").await.json();
    assert_eq!(check(&v[0], "_node_maintenance")["Notes"], "kernel patch");
    // Unknown service: Consul's EnableServiceMaintenance error, 404.
    let r = put(&d, "/v1/agent/service/maintenance/nope?enable=true", "").await;
    assert_eq!(
        (r.status, r.text()),
        (404, "No service registered with ID \"nope\"".into())
    );
}

/// Graceful leave: node, services and checks leave the catalog; restart: back, with checks
/// at their initial status until the first run.
#[tokio::test]
async fn agent_leave_and_restart() {
    let d = start().await;
    put_ok(
        &d,
        "/v1/agent/service/register?node=node-c&node_address=127.0.0.4",
        &json!({"ID": "db-c", "Name": "db", "Port": 3306, "Check": {"TTL": "600s"}}).to_string(),
    )
    .await;
    put_ok(&d, "/v1/agent/check/pass/service:db-c?note=fine", "").await;
    two_nodes(&d).await;
    assert!(
        d.faults()
            .service_maintenance(None, "db-a", true, "upgrade")
    );
    let idx = get(&d, "/v1/health/service/db").await.index();

    assert!(d.faults().agent_leave("node-a"));
    let r = get(&d, &format!("/v1/health/service/db?index={idx}&wait=5s")).await;
    assert!(r.index() > idx);
    assert_eq!(ids(&r.json()), vec!["db-b", "db-c"]);
    let r = get(&d, "/v1/catalog/service/db").await;
    let v = r.json();
    let nodes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Node"].as_str().unwrap())
        .collect();
    assert!(!nodes.contains(&"node-a"), "{nodes:?}");
    // The node's own checks went too: no serfHealth for it left anywhere.
    assert!(!d.faults().set_node_health("node-a", "critical"));
    assert!(!d.faults().agent_crash("node-a"));

    assert!(d.faults().agent_restart("node-a"));
    let v = get(&d, "/v1/health/service/db").await.json();
    let a = entry(&v, "db-a");
    assert_eq!(check(a, "serfHealth")["Status"], "passing");
    // The definition said Status passing, so that is the initial status again (agent/agent.go
    // addServiceInternal); output is empty until the first update.
    assert_eq!(check(a, "service:db-a")["Status"], "passing");
    assert_eq!(check(a, "service:db-a")["Output"], "");
    // The maintenance check is persisted by the agent and comes back.
    assert_eq!(check(a, "_service_maintenance:db-a")["Notes"], "upgrade");

    // A check registered without Status restarts critical (Consul's default), and passes
    // again on its next update.
    assert!(d.faults().agent_restart("node-c"));
    let v = get(&d, "/v1/health/service/db").await.json();
    let c = entry(&v, "db-c");
    assert_eq!(check(c, "service:db-c")["Status"], "critical");
    assert_eq!(check(c, "service:db-c")["Output"], "");
    put_ok(&d, "/v1/agent/check/pass/service:db-c", "").await;
    let v = get(&d, "/v1/health/service/db?passing").await.json();
    assert_eq!(ids(&v), vec!["db-b", "db-c"]);

    // Over HTTP too.
    let r = get(&d, "/_double/fault/agent?node=node-b&event=leave").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        ids(&get(&d, "/v1/health/service/db").await.json()),
        vec!["db-a", "db-c"]
    );
    let r = get(&d, "/_double/fault/agent?node=node-b&event=restart").await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&get(&d, "/v1/health/service/db").await.json()).len(), 3);
    let r = get(&d, "/_double/fault/agent?node=nope&event=crash").await;
    assert_eq!(r.status, 404);
}

/// Leave removes the node's sessions (Consul: state/catalog.go deleteNodeTxn) and so
/// releases their locks.
#[tokio::test]
async fn agent_leave_invalidates_the_nodes_sessions() {
    let d = start().await;
    two_nodes(&d).await;
    let r = put_ok(
        &d,
        "/v1/session/create",
        &json!({"Node": "node-a", "LockDelay": "0s"}).to_string(),
    )
    .await;
    let sid = r.json()["ID"].as_str().unwrap().to_string();
    let r = put_ok(
        &d,
        &format!("/v1/kv/service/db/leader?acquire={sid}"),
        "node-a",
    )
    .await;
    assert_eq!(r.json(), json!(true));
    assert!(d.faults().agent_leave("node-a"));
    let v = get(&d, "/v1/kv/service/db/leader").await.json();
    assert!(v[0].get("Session").is_none(), "{v}");
}

/// Crash or partition: serfHealth critical with Consul's text, services and their last
/// results stay (agent/consul/leader_registrator_v1.go HandleFailedMember). A crashed agent
/// syncs nothing; a partitioned one syncs its held results when the partition heals.
#[tokio::test]
async fn agent_crash_and_partition_keep_services_with_serf_critical() {
    let d = start().await;
    two_nodes(&d).await;
    assert!(d.faults().agent_crash("node-a"));
    let v = get(&d, "/v1/health/service/db").await.json();
    assert_eq!(ids(&v), vec!["db-a", "db-b"]);
    let a = entry(&v, "db-a");
    assert_eq!(check(a, "serfHealth")["Status"], "critical");
    assert_eq!(
        check(a, "serfHealth")["Output"],
        "Agent not live or unreachable"
    );
    assert_eq!(check(a, "service:db-a")["Status"], "passing");
    assert_eq!(
        ids(&get(&d, "/v1/health/service/db?passing").await.json()),
        vec!["db-b"]
    );
    // Updates from the dead agent never reach the catalog.
    put_ok(&d, "/v1/agent/check/fail/service:db-a", "").await;
    let v = get(&d, "/v1/health/service/db").await.json();
    assert_eq!(
        check(entry(&v, "db-a"), "service:db-a")["Status"],
        "passing"
    );

    assert!(d.faults().agent_partition("node-b"));
    put_ok(
        &d,
        "/v1/agent/check/warn/service:db-b?note=replica%20lag",
        "",
    )
    .await;
    let v = get(&d, "/v1/health/service/db").await.json();
    let b = entry(&v, "db-b");
    assert_eq!(check(b, "serfHealth")["Status"], "critical");
    assert_eq!(check(b, "service:db-b")["Status"], "passing");
    assert!(d.faults().agent_heal("node-b"));
    let v = get(&d, "/v1/health/service/db").await.json();
    let b = entry(&v, "db-b");
    assert_eq!(check(b, "serfHealth")["Status"], "passing");
    assert_eq!(check(b, "service:db-b")["Status"], "warning");
    assert_eq!(check(b, "service:db-b")["Output"], "replica lag");
}

/// A check forced critical (e.g. cannot reach the DB while the proxy can) stays so whatever
/// its own runs report, until released.
#[tokio::test]
async fn forced_check_ignores_its_runner() {
    let d = start().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    register(
        &d,
        json!({"ID": "db1", "Name": "db", "Port": port, "Address": "127.0.0.1",
               "Check": {"TCP": format!("127.0.0.1:{port}"), "Interval": "50ms"}}),
    )
    .await;
    wait_health(&d, "db", |v| {
        check_status(v, "service:db1").as_deref() == Some("passing")
    })
    .await;
    assert!(
        d.faults()
            .force_check(None, "service:db1", "critical", "dial tcp: i/o timeout")
    );
    let v = get(&d, "/v1/health/service/db").await.json();
    assert_eq!(check_status(&v, "service:db1").as_deref(), Some("critical"));
    assert_eq!(
        check_output(&v, "service:db1").as_deref(),
        Some("dial tcp: i/o timeout")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = get(&d, "/v1/health/service/db").await.json();
    assert_eq!(check_status(&v, "service:db1").as_deref(), Some("critical"));
    assert!(d.faults().release_check(None, "service:db1"));
    wait_health(&d, "db", |v| {
        check_status(v, "service:db1").as_deref() == Some("passing")
    })
    .await;
    // Over HTTP.
    let r = get(
        &d,
        "/_double/fault/check?check_id=service:db1&status=warning&output=slow",
    )
    .await;
    assert_eq!(r.status, 200);
    let v = get(&d, "/v1/health/service/db").await.json();
    assert_eq!(check_status(&v, "service:db1").as_deref(), Some("warning"));
    assert_eq!(
        get(&d, "/_double/fault/check?check_id=service:db1")
            .await
            .status,
        200
    );
    assert_eq!(
        get(&d, "/_double/fault/check?check_id=nope&status=critical")
            .await
            .status,
        404
    );
}

/// Health blocking queries go through the streaming backend by default (Consul:
/// agent/rpcclient/health/health.go; `use_streaming_backend` default true in
/// agent/config/builder.go); its headers are those of agent/rpcclient/health/view.go
/// HealthView.Result through agent/http.go setMeta. Non-blocking reads stay on the RPC
/// backend, and `use_streaming_backend = false` keeps everything there.
#[tokio::test]
async fn health_streaming_backend_headers() {
    let d = start().await;
    two_nodes(&d).await;
    let r = get(&d, "/v1/health/service/db").await;
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("blocking-query"));
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
    let idx = r.index();
    let r = get(
        &d,
        &format!("/v1/health/service/db?index={}&wait=100ms", idx - 1),
    )
    .await;
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("streaming"));
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("false"));
    assert_eq!(r.header("X-Consul-LastContact"), Some("0"));
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("leader"));
    assert_eq!(r.index(), idx);
    // ?cached selects it too (UseCache); ?cached with ?consistent is a 400.
    let r = get(&d, "/v1/health/service/db?cached").await;
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("streaming"));
    let r = get(&d, "/v1/health/service/db?cached&consistent").await;
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            "Cannot specify ?cached with ?consistent, conflicting semantics.".into()
        )
    );
    // ?near forces the RPC backend (Source.Node set).
    let r = get(
        &d,
        &format!("/v1/health/service/db?index={}&near=_agent", idx - 1),
    )
    .await;
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("blocking-query"));
    // Catalog and KV have no streaming backend.
    let r = get(&d, "/v1/catalog/service/db?index=1").await;
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("blocking-query"));

    let rpc = start_with(DoubleConfig {
        use_streaming_backend: false,
        ..test_config()
    })
    .await;
    two_nodes(&rpc).await;
    let r = get(&rpc, "/v1/health/service/db?index=1&wait=100ms").await;
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("blocking-query"));
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
}

/// A server that lost its leader: default reads fail with 500 `No cluster leader`, `?stale`
/// reads are answered with `X-Consul-KnownLeader: false` and the time since the last contact
/// (Consul: agent/consul/rpc.go forward / setQueryMeta); `max_stale` retries too-old stale
/// answers as default reads.
#[tokio::test]
async fn stale_reads_from_a_follower_that_lost_its_leader() {
    let d = start().await;
    two_nodes(&d).await;
    put_ok(&d, "/v1/kv/mysql/master/c1", "127.0.0.2:3306").await;
    d.faults()
        .set_server_state(ServerState::leader_lost(Duration::from_secs(3600)));
    for path in [
        "/v1/kv/mysql/master/c1",
        "/v1/catalog/service/db",
        "/v1/health/service/db",
    ] {
        let r = get(&d, path).await;
        assert_eq!(
            (r.status, r.text()),
            (500, "No cluster leader".into()),
            "{path}"
        );
        let r = get(&d, &format!("{path}?consistent")).await;
        assert_eq!(r.status, 500, "{path}");
        let r = get(&d, &format!("{path}?stale")).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("X-Consul-KnownLeader"), Some("false"), "{path}");
        assert_eq!(r.header("X-Consul-LastContact"), Some("3600000"), "{path}");
        assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("stale"));
        let r = get(&d, &format!("{path}?stale&max_stale=10s")).await;
        assert_eq!(
            r.status, 500,
            "{path}: too stale, retried as a default read"
        );
        let r = get(&d, &format!("{path}?max_stale=2h")).await;
        assert_eq!(r.status, 200, "{path}: max_stale implies stale");
    }
    assert_eq!(get(&d, "/v1/status/leader").await.json(), json!(""));
    // A follower that still knows its leader forwards default reads.
    d.faults().set_server_state(ServerState::Follower {
        known_leader: true,
        last_contact: Duration::from_millis(250),
    });
    let r = get(&d, "/v1/kv/mysql/master/c1").await;
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(r.header("X-Consul-LastContact"), Some("0"));
    let r = get(&d, "/v1/kv/mysql/master/c1?stale").await;
    assert_eq!(r.header("X-Consul-LastContact"), Some("250"));
    // Over HTTP.
    let r = get(
        &d,
        "/_double/fault/leader?known_leader=false&last_contact_ms=5000",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(&d, "/v1/kv/mysql/master/c1?stale").await;
    assert_eq!(r.header("X-Consul-LastContact"), Some("5000"));
    assert_eq!(get(&d, "/v1/kv/mysql/master/c1").await.status, 500);
    get(&d, "/_double/fault/leader?state=leader").await;
    assert_eq!(get(&d, "/v1/kv/mysql/master/c1").await.status, 200);
    assert_eq!(d.faults().server_state(), ServerState::Leader);
}
