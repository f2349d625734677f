//! The Consul test helper (`support/consul.rs`) against the double — or a real agent when
//! `CONSUL_BIN` is set: registration, health filtering, TTL/maintenance, KV and locks.

#[path = "support/consul.rs"]
#[allow(dead_code)]
mod consul;

use std::time::Duration;

use consul::{ServiceDef, TestConsul};

#[tokio::test]
async fn helper_registers_and_filters_health() {
    let c = TestConsul::start().await;
    assert!(c.http_url().starts_with("http://127.0.0.1:"));
    for (id, addr, tag) in [
        ("db-a", "127.0.0.2", "primary"),
        ("db-b", "127.0.0.3", "replica"),
    ] {
        let def = ServiceDef::new("mysql")
            .id(id)
            .address(addr)
            .port(3306)
            .tags(&[tag])
            .meta("cluster", "c1")
            .ttl_check(Duration::from_secs(30))
            .status("passing");
        c.register(&def).await;
    }
    let all = c.wait_passing("mysql", None, 2).await;
    assert_eq!(all[0]["Service"]["Meta"]["cluster"], "c1");
    let primary = c.health_passing("mysql", Some("primary")).await;
    assert_eq!(primary.len(), 1);
    assert_eq!(primary[0]["Service"]["Address"], "127.0.0.2");

    c.check_warn("service:db-b").await;
    c.wait_passing("mysql", None, 1).await;
    c.check_pass("service:db-b").await;
    c.wait_passing("mysql", None, 2).await;
    c.maintenance("db-a", true, "switchover in progress").await;
    let left = c.wait_passing("mysql", None, 1).await;
    assert_eq!(left[0]["Service"]["ID"], "db-b");
    c.maintenance("db-a", false, "").await;
    c.check_fail("service:db-b").await;
    c.wait_passing("mysql", None, 1).await;
    c.deregister("db-b").await;
    c.deregister("db-a").await;
    c.wait_passing("mysql", None, 0).await;
}

#[tokio::test]
async fn helper_tcp_and_script_checks() {
    let c = TestConsul::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    c.register(
        &ServiceDef::new("tcp-svc")
            .address("127.0.0.1")
            .port(addr.port())
            .tcp_check(addr, Duration::from_secs(1)),
    )
    .await;
    c.register(
        &ServiceDef::new("script-svc")
            .port(1)
            .script_check(&["sh", "-c", "exit 0"], Duration::from_secs(1)),
    )
    .await;
    c.wait_passing("tcp-svc", None, 1).await;
    c.wait_passing("script-svc", None, 1).await;
}

#[tokio::test]
async fn helper_kv_and_locks() {
    let c = TestConsul::start().await;
    assert!(c.kv_put("mysql/master/c1", "127.0.0.2:3306").await);
    c.kv_delete("mysql/master/c1").await;
    let s1 = c.session_create(Duration::from_secs(15)).await;
    let s2 = c.session_create(Duration::from_secs(15)).await;
    assert!(c.kv_acquire("service/mysql/leader", "db-a", &s1).await);
    assert!(!c.kv_acquire("service/mysql/leader", "db-b", &s2).await);
    assert!(!c.kv_release("service/mysql/leader", &s2).await);
    c.session_destroy(&s1).await;
    assert!(c.kv_acquire("service/mysql/leader", "db-b", &s2).await);
    assert!(c.kv_release("service/mysql/leader", &s2).await);
    c.session_destroy(&s2).await;
}

#[tokio::test]
async fn helper_exposes_faults_only_for_the_double() {
    let c = TestConsul::start().await;
    let Some(faults) = c.faults_or_skip("helper_exposes_faults_only_for_the_double") else {
        return;
    };
    c.register(
        &ServiceDef::new("db")
            .port(1)
            .ttl_check(Duration::from_secs(30))
            .status("passing"),
    )
    .await;
    c.wait_passing("db", None, 1).await;
    assert!(faults.request_count("/v1/health/service/db") >= 1);
    assert!(!c.is_real());
}
