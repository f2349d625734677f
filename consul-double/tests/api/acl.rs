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

    // ...and reads without a token are filtered to nothing, as for Consul's anonymous token.
    let r = request(a, "GET", "/v1/health/service/db", b"", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([]));
    assert_eq!(r.header("X-Consul-Results-Filtered-By-ACLs"), Some("true"));
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
