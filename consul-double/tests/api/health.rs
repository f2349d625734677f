use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn passing_filter_drops_warning_and_maintenance() {
    let d = start().await;
    for (id, port) in [("db1", 3306), ("db2", 3307), ("db3", 3308)] {
        register(
            &d,
            json!({"ID": id, "Name": "db", "Port": port, "Address": "127.0.0.2",
            "Check": {"TTL": "30s", "Status": "passing"}}),
        )
        .await;
    }
    let all = get(&d, "/v1/health/service/db?passing").await;
    assert_eq!(ids(&all.json()), ["db1", "db2", "db3"]);

    put_ok(&d, "/v1/agent/check/warn/service:db2?note=slow", "").await;
    put_ok(
        &d,
        "/v1/agent/service/maintenance/db3?enable=true&reason=upgrade",
        "",
    )
    .await;

    let passing = get(&d, "/v1/health/service/db?passing").await.json();
    assert_eq!(ids(&passing), ["db1"]);
    let passing_true = get(&d, "/v1/health/service/db?passing=true").await.json();
    assert_eq!(ids(&passing_true), ["db1"]);
    let unfiltered = get(&d, "/v1/health/service/db?passing=false").await.json();
    assert_eq!(ids(&unfiltered), ["db1", "db2", "db3"]);
    assert_eq!(
        check_status(&unfiltered, "service:db2").as_deref(),
        Some("warning")
    );
    assert_eq!(
        check_output(&unfiltered, "service:db2").as_deref(),
        Some("slow")
    );

    let bad = get(&d, "/v1/health/service/db?passing=maybe").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.text(), "Invalid value for ?passing");

    // Entry shape: Tags [] not null, node checks first, maintenance check as Consul names it.
    let db3 = unfiltered
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Service"]["ID"] == "db3")
        .unwrap();
    assert_eq!(db3["Service"]["Tags"], json!([]));
    assert_eq!(
        db3["Service"]["Weights"],
        json!({"Passing": 1, "Warning": 1})
    );
    assert_eq!(
        db3["Service"]["TaggedAddresses"]["lan_ipv4"],
        json!({"Address": "127.0.0.2", "Port": 3308})
    );
    assert_eq!(db3["Node"]["Node"], "consul-double");
    assert_eq!(db3["Node"]["Datacenter"], "dc1");
    let checks = db3["Checks"].as_array().unwrap();
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    let maint = checks
        .iter()
        .find(|c| c["CheckID"] == "_service_maintenance:db3")
        .expect("maintenance check");
    assert_eq!(maint["Status"], "critical");
    assert_eq!(maint["Notes"], "upgrade");
    assert_eq!(maint["ServiceTags"], json!([]));

    put_ok(&d, "/v1/agent/service/maintenance/db3?enable=false", "").await;
    let passing = get(&d, "/v1/health/service/db?passing").await.json();
    assert_eq!(ids(&passing), ["db1", "db3"]);
    assert_eq!(
        put(&d, "/v1/agent/service/maintenance/nope?enable=true", "")
            .await
            .status,
        404
    );
    assert_eq!(
        put(&d, "/v1/agent/service/maintenance/db3", "")
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn tag_filter_is_case_insensitive_and_all_must_match() {
    let d = start().await;
    register(
        &d,
        json!({"ID": "db1", "Name": "db", "Tags": ["primary", "v8"], "Port": 1}),
    )
    .await;
    register(
        &d,
        json!({"ID": "db2", "Name": "db", "Tags": ["replica", "V8"], "Port": 2}),
    )
    .await;
    register(&d, json!({"ID": "db3", "Name": "db", "Port": 3})).await;
    let q = async |query: &str| {
        ids(&get(&d, &format!("/v1/health/service/db?{query}"))
            .await
            .json())
    };
    assert_eq!(q("tag=PRIMARY").await, ["db1"]);
    assert_eq!(q("tag=v8").await, ["db1", "db2"]);
    assert_eq!(q("tag=v8&tag=Replica").await, ["db2"]);
    assert!(q("tag=v8&tag=nope").await.is_empty());
    assert_eq!(q("").await, ["db1", "db2", "db3"]);
    // Service names match case-insensitively as well.
    assert_eq!(
        ids(&get(&d, "/v1/health/service/DB?tag=primary").await.json()),
        ["db1"]
    );

    let cat = get(&d, "/v1/catalog/service/db?tag=V8").await;
    assert_eq!(cat.status, 200);
    let entries = cat.json();
    let mut sids: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ServiceID"].as_str().unwrap())
        .collect();
    sids.sort();
    assert_eq!(sids, ["db1", "db2"]);
    let e = &entries[0];
    for f in [
        "Node",
        "Address",
        "Datacenter",
        "ServiceName",
        "ServiceTags",
        "ServiceAddress",
        "ServicePort",
        "ServiceMeta",
        "ServiceWeights",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(e.get(f).is_some(), "catalog entry lacks {f}: {e}");
    }
    assert_eq!(e["ServiceAddress"], "");
    assert_eq!(e["Address"], "127.0.0.1");
}

#[tokio::test]
async fn index_is_per_result() {
    let d = start().await;
    register(
        &d,
        json!({"ID": "a1", "Name": "a", "Port": 1, "Check": {"TTL": "30s"}}),
    )
    .await;
    register(
        &d,
        json!({"ID": "b1", "Name": "b", "Port": 2, "Check": {"TTL": "30s"}}),
    )
    .await;
    let ia = get(&d, "/v1/health/service/a").await.index();
    let ib = get(&d, "/v1/health/service/b").await.index();
    assert!(ia > 0 && ib > ia);

    // Another service's changes do not move a's index.
    put_ok(&d, "/v1/agent/check/pass/service:b1", "").await;
    register(&d, json!({"ID": "b2", "Name": "b", "Port": 3})).await;
    put_ok(&d, "/v1/kv/some/key", "v").await;
    assert_eq!(get(&d, "/v1/health/service/a").await.index(), ia);
    assert!(get(&d, "/v1/health/service/b").await.index() > ib);
    assert_eq!(get(&d, "/v1/catalog/service/a").await.index(), ia);

    // An identical re-registration or an unchanged check result takes no index.
    register(
        &d,
        json!({"ID": "a1", "Name": "a", "Port": 1, "Check": {"TTL": "30s"}}),
    )
    .await;
    put_ok(&d, "/v1/agent/check/fail/service:a1", "").await;
    assert_eq!(get(&d, "/v1/health/service/a").await.index(), ia);

    // Its own check changing does.
    put_ok(&d, "/v1/agent/check/pass/service:a1", "").await;
    let ia2 = get(&d, "/v1/health/service/a").await.index();
    assert!(ia2 > ia);
    // ModifyIndex of the check follows.
    let v = get(&d, "/v1/health/service/a").await.json();
    assert_eq!(v[0]["Checks"][1]["ModifyIndex"], json!(ia2));

    // A missing service still has an index > 0; deregistering the last instance of a service
    // sets the extinction index, which missing services report.
    let missing = get(&d, "/v1/health/service/nope").await;
    assert_eq!(missing.status, 200);
    assert_eq!(missing.json(), json!([]));
    assert!(missing.index() > 0);
    put_ok(&d, "/v1/agent/service/deregister/a1", "").await;
    let gone = get(&d, "/v1/health/service/a").await;
    assert_eq!(gone.json(), json!([]));
    assert!(gone.index() > ia2);
    assert_eq!(
        get(&d, "/v1/health/service/nope").await.index(),
        gone.index()
    );
    assert_eq!(
        put(&d, "/v1/agent/service/deregister/a1", "").await.status,
        404
    );
}

#[tokio::test]
async fn other_nodes_and_consul_service() {
    let d = start().await;
    register(&d, json!({"ID": "db", "Name": "db", "Port": 3306})).await;
    put_ok(
        &d,
        "/v1/agent/service/register?node=db-2&node_address=127.0.0.5",
        &json!({"ID": "db", "Name": "db", "Port": 3306}).to_string(),
    )
    .await;
    let v = get(&d, "/v1/health/service/db").await.json();
    let mut nodes: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["Node"]["Node"].as_str().unwrap().into(),
                e["Node"]["Address"].as_str().unwrap().into(),
            )
        })
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        [
            ("consul-double".into(), "127.0.0.1".into()),
            ("db-2".into(), "127.0.0.5".into())
        ]
    );

    // The dev agent's own `consul` service is there, as on a real `consul agent -dev`.
    let consul = get(&d, "/v1/health/service/consul").await.json();
    assert_eq!(consul[0]["Service"]["Port"], 8300);

    // Node failure on db-2 only affects db-2's entry and bumps the index.
    let i = get(&d, "/v1/health/service/db").await.index();
    assert!(d.faults().set_node_health("db-2", "critical"));
    let r = get(&d, "/v1/health/service/db?passing").await;
    assert!(r.index() > i);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.json()[0]["Node"]["Node"], "consul-double");
    assert!(d.faults().set_node_health("db-2", "passing"));
    assert_eq!(
        get(&d, "/v1/health/service/db?passing")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    put_ok(&d, "/v1/agent/service/deregister/db?node=db-2", "").await;
    assert_eq!(
        get(&d, "/v1/health/service/db")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn registration_validation_and_status_endpoints() {
    let d = start().await;
    assert_eq!(
        put(&d, "/v1/agent/service/register", "{\"Port\": 1}")
            .await
            .status,
        400
    );
    assert_eq!(
        put(&d, "/v1/agent/service/register", "not json")
            .await
            .status,
        400
    );
    let r = put(
        &d,
        "/v1/agent/service/register",
        &json!({"Name": "x", "Check": {"TCP": "127.0.0.1:1"}}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "TCP check without interval");
    let r = put(
        &d,
        "/v1/agent/service/register",
        &json!({"Name": "x", "Check": {"TTL": "5s", "Status": "ok"}}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(get(&d, "/v1/agent/service/register").await.status, 405);
    // Field names are matched case-insensitively, as Go's JSON decoder does.
    put_ok(
        &d,
        "/v1/agent/service/register",
        r#"{"name":"lower","port":5,"tags":["T"]}"#,
    )
    .await;
    assert_eq!(
        get(&d, "/v1/health/service/lower").await.json()[0]["Service"]["Tags"],
        json!(["T"])
    );

    let leader = get(&d, "/v1/status/leader").await;
    assert_eq!(leader.json(), json!("127.0.0.1:8300"));
    let me = get(&d, "/v1/agent/self").await.json();
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["NodeName"], "consul-double");
    assert_eq!(get(&d, "/v1/nope").await.status, 404);
}
