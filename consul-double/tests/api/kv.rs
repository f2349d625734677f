use std::time::Duration;

use base64::Engine;
use consul_double::DoubleConfig;
use serde_json::{Value, json};

use crate::common::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn session(d: &consul_double::ConsulDouble, body: Value) -> String {
    let r = put_ok(d, "/v1/session/create", &body.to_string()).await;
    r.json()["ID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn kv_get_put_delete_and_missing_key_index() {
    let d = start().await;
    let r = get(&d, "/v1/kv/mysql/master/c1").await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    let missing_index = r.index();
    assert!(missing_index > 0);
    assert_eq!(
        get(&d, "/v1/kv/mysql/master/c1").await.index(),
        missing_index,
        "stable"
    );

    // Blocking on the missing key returns when it appears.
    let addr = d.http_addr();
    let path = format!("/v1/kv/mysql/master/c1?index={missing_index}&wait=30s");
    let blocked = tokio::spawn(async move { request(addr, "GET", &path, b"", &[]).await });
    let seen = d.faults().request_count("/v1/kv/mysql");
    wait_requests(&d, "/v1/kv/mysql", seen).await;
    assert_eq!(
        put_ok(&d, "/v1/kv/mysql/master/c1", "10.0.0.1:3306")
            .await
            .json(),
        json!(true)
    );
    let r = blocked.await.unwrap();
    assert_eq!(r.status, 200);
    let e = &r.json()[0];
    assert_eq!(e["Key"], "mysql/master/c1");
    assert_eq!(e["Value"], b64("10.0.0.1:3306"));
    assert_eq!(e["Flags"], 0);
    assert_eq!(e["LockIndex"], 0);
    assert!(e.get("Session").is_none(), "Session omitted when unlocked");
    assert_eq!(e["ModifyIndex"], json!(r.index()));
    assert!(r.index() > missing_index);

    let raw = get(&d, "/v1/kv/mysql/master/c1?raw").await;
    assert_eq!(raw.text(), "10.0.0.1:3306");
    assert!(raw.header("X-Consul-Index").is_some());

    put_ok(&d, "/v1/kv/mysql/master/c1/hostname", "db-a").await;
    put_ok(&d, "/v1/kv/mysql/master/c1/port", "3306").await;
    let rec = get(&d, "/v1/kv/mysql/master/c1?recurse").await.json();
    assert_eq!(rec.as_array().unwrap().len(), 3);
    let keys = get(&d, "/v1/kv/mysql/master/?keys&separator=/")
        .await
        .json();
    assert_eq!(keys, json!(["mysql/master/c1", "mysql/master/c1/"]));

    // An identical write takes no index; an empty value reads back as null.
    let i = get(&d, "/v1/kv/mysql/master/c1").await.index();
    put_ok(&d, "/v1/kv/mysql/master/c1", "10.0.0.1:3306").await;
    assert_eq!(get(&d, "/v1/kv/mysql/master/c1").await.index(), i);
    put_ok(&d, "/v1/kv/empty", "").await;
    assert_eq!(
        get(&d, "/v1/kv/empty").await.json()[0]["Value"],
        Value::Null
    );

    // CAS.
    assert_eq!(put_ok(&d, "/v1/kv/c?cas=0", "a").await.json(), json!(true));
    assert_eq!(put_ok(&d, "/v1/kv/c?cas=0", "b").await.json(), json!(false));
    let ci = get(&d, "/v1/kv/c").await.index();
    assert_eq!(
        put_ok(&d, &format!("/v1/kv/c?cas={}", ci + 1000), "b")
            .await
            .json(),
        json!(false)
    );
    assert_eq!(
        put_ok(&d, &format!("/v1/kv/c?cas={ci}"), "b").await.json(),
        json!(true)
    );
    assert_eq!(put(&d, "/v1/kv/c?cas=1&acquire=x", "b").await.status, 400);

    // Delete leaves a tombstone: the missing key's index moves past the delete.
    let before = get(&d, "/v1/kv/mysql/master/c1/port").await.index();
    assert_eq!(
        delete(&d, "/v1/kv/mysql/master/c1/port").await.json(),
        json!(true)
    );
    let r = get(&d, "/v1/kv/mysql/master/c1/port").await;
    assert_eq!(r.status, 404);
    assert!(r.index() > before);
    delete(&d, "/v1/kv/mysql?recurse").await;
    assert_eq!(get(&d, "/v1/kv/mysql?recurse").await.status, 404);
}

#[tokio::test]
async fn locks_sessions_and_lock_delay() {
    let d = start().await;
    let s1 = session(&d, json!({"Name": "leader-a"})).await;
    let s2 = session(&d, json!({"Name": "leader-b", "LockDelay": "0s"})).await;
    let key = "/v1/kv/service/mysql/leader";

    assert_eq!(
        put_ok(&d, &format!("{key}?acquire={s1}"), "db-a")
            .await
            .json(),
        json!(true)
    );
    assert_eq!(
        put_ok(&d, &format!("{key}?acquire={s2}"), "db-b")
            .await
            .json(),
        json!(false)
    );
    let e = get(&d, key).await.json()[0].clone();
    assert_eq!(e["Session"], json!(s1));
    assert_eq!(e["LockIndex"], 1);
    assert_eq!(e["Value"], b64("db-a"));
    // The holder may re-acquire (updating the value); a plain PUT keeps the session.
    assert_eq!(
        put_ok(&d, &format!("{key}?acquire={s1}"), "db-a2")
            .await
            .json(),
        json!(true)
    );
    put_ok(&d, key, "db-a3").await;
    assert_eq!(get(&d, key).await.json()[0]["Session"], json!(s1));

    assert_eq!(
        put_ok(&d, &format!("{key}?release={s2}"), "").await.json(),
        json!(false)
    );
    assert_eq!(
        put_ok(&d, &format!("{key}?release={s1}"), "db-a")
            .await
            .json(),
        json!(true)
    );
    let e = get(&d, key).await.json()[0].clone();
    assert!(e.get("Session").is_none());
    assert_eq!(
        put_ok(&d, &format!("{key}?acquire={s2}"), "db-b")
            .await
            .json(),
        json!(true)
    );
    assert_eq!(
        get(&d, key).await.json()[0]["LockIndex"],
        1,
        "set reset LockIndex, acquire bumped it"
    );

    // Destroying the holder releases the lock; s2 had no lock-delay, so s1 can take it.
    let i = get(&d, key).await.index();
    assert_eq!(
        put_ok(&d, &format!("/v1/session/destroy/{s2}"), "")
            .await
            .json(),
        json!(true)
    );
    let r = get(&d, key).await;
    assert!(r.json()[0].get("Session").is_none());
    assert!(r.index() > i);
    assert_eq!(
        put_ok(&d, &format!("{key}?acquire={s1}"), "db-a")
            .await
            .json(),
        json!(true)
    );

    // s1 has the default 15 s lock-delay: after it is destroyed nobody else gets the key.
    put_ok(&d, &format!("/v1/session/destroy/{s1}"), "").await;
    let s3 = session(&d, json!({})).await;
    assert_eq!(
        put_ok(&d, &format!("{key}?acquire={s3}"), "x").await.json(),
        json!(false)
    );

    // Unknown sessions are errors, as in Consul.
    let r = put(
        &d,
        &format!("{key}?acquire=00000000-0000-0000-0000-00000000dead"),
        "x",
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("invalid session"), "{}", r.text());
    assert_eq!(put(&d, "/v1/session/renew/nope", "").await.status, 404);
    let renewed = put_ok(&d, &format!("/v1/session/renew/{s3}"), "")
        .await
        .json();
    assert_eq!(renewed[0]["ID"], json!(s3));
    assert_eq!(renewed[0]["LockDelay"], json!(15_000_000_000u64));
    assert_eq!(renewed[0]["NodeChecks"], json!(["serfHealth"]));

    // Behavior=delete deletes the held keys.
    let s4 = session(&d, json!({"Behavior": "delete", "LockDelay": "0s"})).await;
    assert_eq!(
        put_ok(&d, &format!("/v1/kv/eph?acquire={s4}"), "x")
            .await
            .json(),
        json!(true)
    );
    put_ok(&d, &format!("/v1/session/destroy/{s4}"), "").await;
    assert_eq!(get(&d, "/v1/kv/eph").await.status, 404);

    let r = put(&d, "/v1/session/create", r#"{"TTL": "1s"}"#).await;
    assert_eq!(r.status, 500, "TTL below 10s is rejected");
    let r = put(&d, "/v1/session/create", r#"{"Behavior": "explode"}"#).await;
    assert_eq!(r.status, 500);
}

#[tokio::test]
async fn session_ttl_and_node_failure_invalidate() {
    let d = start_with(DoubleConfig {
        session_ttl_multiplier: 0.02,
        ..test_config()
    })
    .await;
    // TTL 10s × 0.02 = 200 ms without a renew.
    let s = session(&d, json!({"TTL": "10s", "LockDelay": "0s"})).await;
    assert_eq!(
        put_ok(&d, &format!("/v1/kv/l?acquire={s}"), "x")
            .await
            .json(),
        json!(true)
    );
    let i = get(&d, "/v1/kv/l").await.index();
    let r = get(&d, &format!("/v1/kv/l?index={i}&wait=5s")).await;
    assert!(r.index() > i);
    assert!(
        r.json()[0].get("Session").is_none(),
        "lock released on TTL expiry"
    );
    assert_eq!(
        put(&d, &format!("/v1/session/renew/{s}"), "").await.status,
        404
    );

    // A node's serfHealth going critical invalidates its sessions.
    let s = session(&d, json!({"LockDelay": "0s"})).await;
    assert_eq!(
        put_ok(&d, &format!("/v1/kv/l?acquire={s}"), "x")
            .await
            .json(),
        json!(true)
    );
    d.faults().set_node_health("consul-double", "critical");
    assert!(get(&d, "/v1/kv/l").await.json()[0].get("Session").is_none());
    let r = put(&d, "/v1/session/create", "{}").await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("critical"), "{}", r.text());
    d.faults().set_node_health("consul-double", "passing");
    session(&d, json!({})).await;
}

#[tokio::test]
async fn kv_put_limits() {
    let d = start().await;
    let big = "x".repeat(512 * 1024 + 1);
    assert_eq!(put(&d, "/v1/kv/big", &big).await.status, 413);
    assert_eq!(put(&d, "/v1/kv/", "v").await.status, 400);
    assert_eq!(get(&d, "/v1/kv/").await.status, 400);
    assert_eq!(
        put_ok(&d, "/v1/kv/f?flags=42", "v").await.json(),
        json!(true)
    );
    assert_eq!(get(&d, "/v1/kv/f").await.json()[0]["Flags"], 42);
    let _ = Duration::ZERO;
}
