//! `?filter=` on health and catalog reads, and the Enterprise-only scope parameters a CE agent
//! refuses.

use serde_json::json;

use crate::common::*;

fn q(expr: &str) -> String {
    form_urlencoded::byte_serialize(expr.as_bytes()).collect()
}

// Consul: agent/consul/health_endpoint.go, agent/consul/catalog_endpoint.go (bexpr filter after
// the ACL filter; the index is the result's).
#[tokio::test]
async fn filter_narrows_health_and_catalog_by_meta_and_tags() {
    let d = start().await;
    for (id, cluster, tags) in [
        ("a", "main", json!(["primary"])),
        ("b", "other", json!(["primary", "eu"])),
    ] {
        register(
            &d,
            json!({"ID": id, "Name": "db", "Port": 1, "Tags": tags, "Meta": {"cluster": cluster}}),
        )
        .await;
    }
    let all = get(&d, "/v1/health/service/db").await;
    assert_eq!(ids(&all.json()), ["a", "b"]);
    let main = get(
        &d,
        &format!(
            "/v1/health/service/db?filter={}",
            q(r#"Service.Meta.cluster == "main""#)
        ),
    )
    .await;
    assert_eq!(main.status, 200, "{}", main.text());
    assert_eq!(ids(&main.json()), ["a"]);
    assert_eq!(
        main.index(),
        all.index(),
        "the index is the unfiltered result's"
    );
    for (expr, want) in [
        (r#""eu" in Service.Tags"#, vec!["b"]),
        (
            "Service.Tags not contains eu and Node.Node == consul-double",
            vec!["a"],
        ),
        (
            r#"Service.Meta.cluster != "main" or Service.ID == a"#,
            vec!["a", "b"],
        ),
        ("Service.Meta.missing == x", vec![]),
    ] {
        let r = get(&d, &format!("/v1/health/service/db?filter={}", q(expr))).await;
        assert_eq!(r.status, 200, "{expr}: {}", r.text());
        assert_eq!(ids(&r.json()), want, "{expr}");
    }
    let cat = get(
        &d,
        &format!(
            "/v1/catalog/service/db?filter={}",
            q("ServiceMeta.cluster == other")
        ),
    )
    .await;
    let v = cat.json();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v[0]["ServiceID"], "b");

    // A filter that does not compile fails the request.
    let bad = get(
        &d,
        &format!("/v1/health/service/db?filter={}", q("Service.Nope == 1")),
    )
    .await;
    assert_eq!(bad.status, 500);
    assert!(
        bad.text()
            .starts_with("Failed to create boolean expression evaluator"),
        "{}",
        bad.text()
    );
}

// Consul: agent/http_ce.go parseEntMeta, parseEntMetaPartition.
#[tokio::test]
async fn namespaces_and_partitions_are_refused_like_consul_ce() {
    let d = start().await;
    register(&d, json!({"ID": "a", "Name": "db", "Port": 1})).await;
    for (path, want) in [
        (
            "/v1/health/service/db?ns=team",
            r#"Bad request: Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature"#,
        ),
        (
            "/v1/catalog/service/db?partition=p",
            r#"Bad request: Invalid query parameter: "partition" - Partitions are a Consul Enterprise feature"#,
        ),
        (
            "/v1/kv/x?ns=team",
            r#"Bad request: Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature"#,
        ),
    ] {
        let r = get(&d, path).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.text(), want, "{path}");
    }
    let r = request(
        d.http_addr(),
        "GET",
        "/v1/health/service/db",
        b"",
        &[("X-Consul-Namespace", "team")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("X-Consul-Namespace"));
    // Empty values are no scope at all.
    assert_eq!(
        get(&d, "/v1/health/service/db?ns=&partition=").await.status,
        200
    );
}
