use consul_double::DoubleConfig;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn acl_token_required() {
    let d = start_with(DoubleConfig {
        acl_token: Some("s3cret".into()),
        ..test_config()
    })
    .await;
    let a = d.http_addr();
    let body = json!({"ID": "db1", "Name": "db", "Port": 1}).to_string();

    // Wrong token: 403 ACL not found, everywhere.
    let r = request(
        a,
        "GET",
        "/v1/health/service/db",
        b"",
        &[("X-Consul-Token", "nope")],
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    let r = request(a, "PUT", "/v1/kv/k", b"v", &[("X-Consul-Token", "nope")]).await;
    assert_eq!(r.status, 403);

    // No token: writes are denied...
    let r = request(a, "PUT", "/v1/agent/service/register", body.as_bytes(), &[]).await;
    assert_eq!(r.status, 403);
    assert!(r.text().starts_with("Permission denied"), "{}", r.text());
    let r = request(a, "PUT", "/v1/kv/k", b"v", &[]).await;
    assert_eq!(r.status, 403);

    // The right token, as header, bearer or query parameter.
    let r = request(
        a,
        "PUT",
        "/v1/agent/service/register",
        body.as_bytes(),
        &[("X-Consul-Token", "s3cret")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        a,
        "GET",
        "/v1/health/service/db",
        b"",
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.header("X-Consul-Default-ACL-Policy"), Some("deny"));
    let r = request(a, "GET", "/v1/health/service/db?token=s3cret", b"", &[]).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert!(r.header("X-Consul-Results-Filtered-By-ACLs").is_none());

    // ...and reads without a token are filtered to nothing, as for Consul's anonymous token;
    // the filtered flag is masked for a request without a token (Consul: agent/consul/rpc.go
    // maskResultsFilteredByACLs).
    let r = request(a, "GET", "/v1/health/service/db", b"", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([]));
    assert_eq!(r.header("X-Consul-Results-Filtered-By-ACLs"), None);
    let r = request(a, "GET", "/v1/kv/k", b"", &[]).await;
    assert_eq!(r.status, 403);

    // Status endpoints need no token.
    assert_eq!(
        request(a, "GET", "/v1/status/leader", b"", &[])
            .await
            .status,
        200
    );
}

/// A token with `service:read` but no `node:read`: health and catalog answer 200 with the
/// entries on readable nodes only and `X-Consul-Results-Filtered-By-ACLs: true` (Consul:
/// agent/structs/aclfilter/filter.go filterCheckServiceNodes, agent/http.go
/// setResultsFilteredByACLs). Missing `service:read` filters too. The header is only sent when
/// something was filtered, and never on the streaming path.
#[tokio::test]
async fn limited_token_filters_health_by_node_and_service_read() {
    use consul_double::{AclToken, Policy, Resource};
    let d = start_with(DoubleConfig {
        acl_token: Some("root".into()),
        acl_tokens: vec![
            AclToken::service_read_only("svc-only"),
            AclToken::new("web-nodes")
                .rule(Resource::Service, "", Policy::Read)
                .rule(Resource::Node, "web-", Policy::Read),
            AclToken::new("nodes-only").rule(Resource::Node, "", Policy::Read),
            AclToken::new("all-read")
                .rule(Resource::Service, "", Policy::Read)
                .rule(Resource::Node, "", Policy::Read),
        ],
        ..test_config()
    })
    .await;
    let a = d.http_addr();
    for (id, node, ip) in [("db1", "web-1", "127.0.0.2"), ("db2", "db-1", "127.0.0.3")] {
        let body = json!({"ID": id, "Name": "db", "Port": 1}).to_string();
        let r = request(
            a,
            "PUT",
            &format!("/v1/agent/service/register?node={node}&node_address={ip}"),
            body.as_bytes(),
            &[("X-Consul-Token", "root")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let get_as = |token: &'static str, path: &'static str| async move {
        request(a, "GET", path, b"", &[("X-Consul-Token", token)]).await
    };
    let f = "X-Consul-Results-Filtered-By-ACLs";
    // service:read, no node:read: everything filtered.
    let r = get_as("svc-only", "/v1/health/service/db").await;
    assert_eq!((r.status, r.json()), (200, json!([])));
    assert_eq!(r.header(f), Some("true"));
    let r = get_as("svc-only", "/v1/catalog/service/db").await;
    assert_eq!((r.status, r.json()), (200, json!([])));
    assert_eq!(r.header(f), Some("true"));
    // node:read on web-* only: the db-1 entry is dropped.
    let r = get_as("web-nodes", "/v1/health/service/db").await;
    assert_eq!(ids(&r.json()), vec!["db1"]);
    assert_eq!(r.header(f), Some("true"));
    // node:read but no service:read: filtered too.
    let r = get_as("nodes-only", "/v1/health/service/db").await;
    assert_eq!((r.status, r.json()), (200, json!([])));
    assert_eq!(r.header(f), Some("true"));
    // Nothing filtered: no header at all.
    let r = get_as("all-read", "/v1/health/service/db").await;
    assert_eq!(ids(&r.json()), vec!["db1", "db2"]);
    assert_eq!(r.header(f), None);
    let r = get_as("web-nodes", "/v1/health/service/nothing-here").await;
    assert_eq!(r.header(f), None);
    // A blocking query goes through the streaming backend, which never sends the header.
    let r = request(
        a,
        "GET",
        "/v1/health/service/db?index=1&wait=1s",
        b"",
        &[("X-Consul-Token", "web-nodes")],
    )
    .await;
    assert_eq!(ids(&r.json()), vec!["db1"]);
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("streaming"));
    assert_eq!(r.header(f), None);
    // A limited token cannot write: 403 naming its accessor and the permission.
    let body = json!({"ID": "x", "Name": "x", "Port": 1}).to_string();
    let r = request(
        a,
        "PUT",
        "/v1/agent/service/register",
        body.as_bytes(),
        &[("X-Consul-Token", "svc-only")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(
        r.text()
            .contains("lacks permission 'service:write' on \"x\""),
        "{}",
        r.text()
    );
    // KV needs key rules: none here.
    let r = get_as("svc-only", "/v1/kv/k").await;
    assert_eq!(r.status, 403);
    // `?token=` wins over the header (Consul: agent/http.go parseTokenInternal).
    let r = request(
        a,
        "GET",
        "/v1/health/service/db?token=all-read",
        b"",
        &[("X-Consul-Token", "svc-only")],
    )
    .await;
    assert_eq!(ids(&r.json()), vec!["db1", "db2"]);
}

/// KV reads with key rules (Consul: agent/consul/kvs_endpoint.go; aclfilter filterDirEnt,
/// filterKeys) and TTL updates needing `service:write` on the check's service (agent/agent.go
/// vetCheckUpdateWithAuthorizer).
#[tokio::test]
async fn key_rules_and_check_update_permissions() {
    use consul_double::{AclToken, Policy, Resource};
    let d = start_with(DoubleConfig {
        acl_token: Some("root".into()),
        acl_tokens: vec![
            AclToken::new("kv-app")
                .rule(Resource::Key, "app/", Policy::Read)
                .rule(Resource::Key, "app/own/", Policy::Write),
            AclToken::new("db-writer").rule(Resource::Service, "db", Policy::Write),
        ],
        ..test_config()
    })
    .await;
    let a = d.http_addr();
    let root = [("X-Consul-Token", "root")];
    for k in ["app/a", "app/own/b", "other/c"] {
        let r = request(a, "PUT", &format!("/v1/kv/{k}"), b"v", &root).await;
        assert_eq!(r.status, 200);
    }
    let kv = [("X-Consul-Token", "kv-app")];
    assert_eq!(
        request(a, "GET", "/v1/kv/app/a", b"", &kv).await.status,
        200
    );
    assert_eq!(
        request(a, "GET", "/v1/kv/other/c", b"", &kv).await.status,
        403
    );
    let r = request(a, "GET", "/v1/kv/?recurse", b"", &kv).await;
    let keys: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, vec!["app/a", "app/own/b"]);
    let r = request(a, "GET", "/v1/kv/?keys", b"", &kv).await;
    assert_eq!(r.json(), json!(["app/a", "app/own/b"]));
    assert_eq!(
        request(a, "PUT", "/v1/kv/app/own/x", b"1", &kv)
            .await
            .status,
        200
    );
    let r = request(a, "PUT", "/v1/kv/app/x", b"1", &kv).await;
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("'key:write' on \"app/x\""),
        "{}",
        r.text()
    );

    for (id, name) in [("db1", "db"), ("web1", "web")] {
        let body = json!({"ID": id, "Name": name, "Port": 1, "Check": {"TTL": "60s"}});
        let r = request(
            a,
            "PUT",
            "/v1/agent/service/register",
            body.to_string().as_bytes(),
            &root,
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let w = [("X-Consul-Token", "db-writer")];
    let r = request(a, "PUT", "/v1/agent/check/pass/service:db1", b"", &w).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(a, "PUT", "/v1/agent/check/pass/service:web1", b"", &w).await;
    assert_eq!(r.status, 403);
    assert!(
        r.text().contains("'service:write' on \"web\""),
        "{}",
        r.text()
    );
    // Node checks need node:write.
    let r = request(a, "PUT", "/v1/agent/maintenance?enable=true", b"", &w).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("'node:write'"), "{}", r.text());
}
