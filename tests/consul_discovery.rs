//! Consul discovery end to end: a real MariaDB pair registered in Consul (the double, or a real
//! agent when CONSUL_BIN is set), the proxy in each discovery mode, failovers, stickiness, split
//! brain, and Consul misbehaving.

mod support;

use std::time::{Duration, Instant};

use support::backends::closed_port;
use support::consul::{ServiceDef, TestConsul};
use support::mariadb::{MariaDbPair, StopHow, port_via, wait_routed_to};
use support::proxy::{Proxy, ProxyArgs};
use support::refusal::refused_message;

const T: Duration = Duration::from_secs(30);

/// A script check that passes only on a writable server (what the classic setups register).
fn writable_check(port: u16) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "test \"$(mysql -h 127.0.0.1 -P {port} -u admin -padmin -N -B -e 'SELECT @@global.read_only')\" = 0"
        ),
    ]
}

fn consul_proxy(consul: &TestConsul, extra: &[&str]) -> Proxy {
    ProxyArgs::consul(consul.http_url())
        .with(&["--hold-timeout", "20s"])
        .with(extra)
        .start()
}

/// Waits with blocking queries until the only passing `mysql` instance tagged `tag` is `port`.
async fn wait_only_passing_port(consul: &TestConsul, tag: &str, port: u16) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/v1/health/service/mysql", consul.http_url());
    let start = Instant::now();
    let mut index = 0u64;
    loop {
        let mut query = vec![("passing", "true".to_owned()), ("tag", tag.to_owned())];
        if index > 0 {
            query.extend([("index", index.to_string()), ("wait", "5s".to_owned())]);
        }
        let r = http.get(&url).query(&query).send().await.unwrap();
        let new_index = r.headers()["X-Consul-Index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let entries: Vec<serde_json::Value> = r.json().await.unwrap();
        if entries.len() == 1 && entries[0]["Service"]["Port"] == port {
            return;
        }
        assert!(
            start.elapsed() < T,
            "port {port} never became the only passing instance"
        );
        index = if new_index < index { 0 } else { new_index };
    }
}

#[tokio::test]
async fn health_mode_routes_to_the_writable_primary_and_follows_a_failover() {
    let mut pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    for (id, node, db) in [
        ("mysql-a", "db-a", &pair.primary),
        ("mysql-b", "db-b", &pair.replica),
    ] {
        let args = writable_check(db.port());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        consul
            .register(
                &ServiceDef::new("mysql")
                    .id(id)
                    .tags(&["db"])
                    .address("127.0.0.1")
                    .port(db.port())
                    .script_check(&args, Duration::from_millis(300))
                    .on_node(node, "127.0.0.1"),
            )
            .await;
    }
    consul.wait_passing("mysql", Some("db"), 1).await;
    let proxy = consul_proxy(&consul, &["--discovery", "consul-health", "--tag", "db"]);
    assert_eq!(port_via(proxy.addr()).await, pair.primary.port());

    let new_port = pair.replica.port();
    pair.promote(StopHow::Kill9).await;
    let promoted = Instant::now();
    wait_only_passing_port(&consul, "db", new_port).await;
    let consul_changed = promoted.elapsed();
    let switch = wait_routed_to(&proxy, new_port).await;
    eprintln!(
        "health failover: Consul check saw the promotion after {consul_changed:?}; proxy routed to the new primary {switch:?} after the Consul change"
    );
    assert!(switch < Duration::from_secs(10), "switch took {switch:?}");
    assert!(proxy.log.text().contains("primary changed"));
}

#[tokio::test]
async fn catalog_mode_follows_the_tag_moved_by_the_failover_tool() {
    let pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    let register = |id: &'static str, port: u16, tag: &'static str| {
        ServiceDef::new("mysql")
            .id(id)
            .tags(&[tag])
            .address("127.0.0.1")
            .port(port)
            .ttl_check(Duration::from_secs(60))
    };
    consul
        .register(&register("mysql-a", pair.primary.port(), "primary"))
        .await;
    consul
        .register(&register("mysql-b", pair.replica.port(), "replica"))
        .await;
    // The catalog ignores health: TTL checks left critical do not matter here.
    let proxy = consul_proxy(&consul, &["--discovery", "consul-catalog"]);
    assert_eq!(port_via(proxy.addr()).await, pair.primary.port());

    // The failover tool tags b first (two primaries for a moment: sticky keeps a), then untags a.
    consul
        .register(&register("mysql-b", pair.replica.port(), "primary"))
        .await;
    assert_eq!(port_via(proxy.addr()).await, pair.primary.port());
    let moved = Instant::now();
    consul
        .register(&register("mysql-a", pair.primary.port(), "replica"))
        .await;
    let switch = wait_routed_to(&proxy, pair.replica.port()).await;
    eprintln!(
        "catalog tag move: routed to the new primary {switch:?} after the change ({:?} incl. registration)",
        moved.elapsed()
    );
}

#[tokio::test]
async fn kv_mode_leader_key_with_session_and_orchestrator_value() {
    let pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    let a = format!("127.0.0.1:{}", pair.primary.port());
    let b = format!("127.0.0.1:{}", pair.replica.port());
    let key = "service/mysql/leader";
    let session_a = consul.session_create(Duration::from_secs(30)).await;
    assert!(consul.kv_acquire(key, &a, &session_a).await);
    let proxy = consul_proxy(
        &consul,
        &[
            "--discovery",
            "consul-kv",
            "--kv-key",
            key,
            "--kv-require-session",
            "--hold-timeout",
            "2s",
        ],
    );
    assert_eq!(port_via(proxy.addr()).await, pair.primary.port());

    // The leader releases the lock: no primary; a new client is held, then refused with why.
    let mark = proxy.log.len();
    assert!(consul.kv_release(key, &session_a).await);
    proxy.wait_for_log_from(mark, "primary lost", T).await;
    let msg = refused_message(proxy.addr()).await;
    assert!(msg.contains("not held by a session"), "{msg}");

    let session_b = consul.session_create(Duration::from_secs(30)).await;
    let changed = Instant::now();
    assert!(consul.kv_acquire(key, &b, &session_b).await);
    let switch = wait_routed_to(&proxy, pair.replica.port()).await;
    eprintln!(
        "KV leader key: routed to the new leader {switch:?} after acquire ({:?} incl. PUT)",
        changed.elapsed()
    );

    // orchestrator's key: a plain host:port value, no session.
    let orch_key = "mysql/master/cluster1";
    assert!(consul.kv_put(orch_key, &b).await);
    let orch = consul_proxy(&consul, &["--discovery", "consul-kv", "--kv-key", orch_key]);
    assert_eq!(port_via(orch.addr()).await, pair.replica.port());
    assert!(
        consul
            .kv_put(
                orch_key,
                &format!(
                    "{{\"host\":\"127.0.0.1\",\"port\":{}}}",
                    pair.primary.port()
                )
            )
            .await
    );
    wait_routed_to(&orch, pair.primary.port()).await;
}

#[tokio::test]
async fn recovered_old_primary_does_not_steal_traffic_and_two_primaries_are_refused() {
    let pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    let def = |id: &str, port: u16| {
        ServiceDef::new("mysql")
            .id(id)
            .tags(&["primary"])
            .address("127.0.0.1")
            .port(port)
            .ttl_check(Duration::from_secs(600))
    };
    consul.register(&def("mysql-a", pair.primary.port())).await;
    consul.register(&def("mysql-b", pair.replica.port())).await;
    consul.check_pass("service:mysql-b").await;
    consul.wait_passing("mysql", Some("primary"), 1).await;
    let proxy = consul_proxy(&consul, &["--hold-timeout", "2s"]);
    assert_eq!(port_via(proxy.addr()).await, pair.replica.port());

    // a comes back healthy: both pass, the current one (b) stays (nopreempt).
    consul.check_pass("service:mysql-a").await;
    consul.wait_passing("mysql", Some("primary"), 2).await;
    for _ in 0..5 {
        assert_eq!(port_via(proxy.addr()).await, pair.replica.port());
    }

    // A proxy that starts now has no current primary: refuse names the split brain.
    let fresh = consul_proxy(&consul, &["--hold-timeout", "1s"]);
    let msg = refused_message(fresh.addr()).await;
    assert!(msg.contains("split brain"), "{msg}");
    assert!(
        msg.contains(&pair.primary.port().to_string())
            && msg.contains(&pair.replica.port().to_string()),
        "{msg}"
    );
    // With on_multiple = first, the highest priority wins (none set: node name, then address).
    let first = consul_proxy(&consul, &["--on-multiple", "first"]);
    let picked = port_via(first.addr()).await;
    assert!(picked == pair.primary.port() || picked == pair.replica.port());
    let again = consul_proxy(&consul, &["--on-multiple", "first"]);
    assert_eq!(
        port_via(again.addr()).await,
        picked,
        "every proxy instance picks the same node"
    );
}

#[tokio::test]
async fn consul_misbehaving_keeps_the_last_primary_and_recovery_follows_changes() {
    let pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    let Some(faults) = consul.faults_or_skip("consul_misbehaving_keeps_the_last_primary") else {
        return;
    };
    let def = |id: &str, port: u16| {
        ServiceDef::new("mysql")
            .id(id)
            .tags(&["primary"])
            .address("127.0.0.1")
            .port(port)
            .ttl_check(Duration::from_secs(600))
    };
    consul.register(&def("mysql-a", pair.primary.port())).await;
    consul.register(&def("mysql-b", pair.replica.port())).await;
    consul.check_pass("service:mysql-a").await;
    consul.wait_passing("mysql", Some("primary"), 1).await;
    let proxy = consul_proxy(&consul, &["--consul-wait", "1s"]);
    assert_eq!(port_via(proxy.addr()).await, pair.primary.port());

    let before = faults.request_count("/v1/health/service/mysql");
    let faults_start = Instant::now();
    faults.fail_with(Some((500, "No cluster leader".into())));
    proxy.wait_for_log("No cluster leader", T).await;
    assert_eq!(
        port_via(proxy.addr()).await,
        pair.primary.port(),
        "500s: last primary kept"
    );
    faults.fail_with(Some((403, "Permission denied".into())));
    let mark = proxy.log.len();
    proxy.wait_for_log_from(mark, "Permission denied", T).await;
    assert_eq!(
        port_via(proxy.addr()).await,
        pair.primary.port(),
        "403: last primary kept"
    );
    faults.fail_with(None);
    faults.garbage(true);
    let mark = proxy.log.len();
    proxy
        .wait_for_log_from(mark, "invalid health answer", T)
        .await;
    assert_eq!(
        port_via(proxy.addr()).await,
        pair.primary.port(),
        "garbage: last primary kept"
    );
    faults.garbage(false);
    let requests = faults.request_count("/v1/health/service/mysql") - before;
    let secs = faults_start.elapsed().as_secs_f64();
    eprintln!("{requests} Consul requests in {secs:.1}s of faults");
    assert!(
        (requests as f64) < 10.0 * secs + 5.0,
        "hot loop: {requests} requests in {secs:.1}s"
    );

    faults.pause();
    let paused = proxy.log.len();
    assert_eq!(
        port_via(proxy.addr()).await,
        pair.primary.port(),
        "paused: last primary kept"
    );
    faults.resume();
    faults.reset_index();
    let mark = proxy.log.len().max(paused);
    proxy.wait_for_log_from(mark, "index reset", T).await;

    // Consul works again: a real change is followed.
    consul.check_fail("service:mysql-a").await;
    consul.check_pass("service:mysql-b").await;
    wait_routed_to(&proxy, pair.replica.port()).await;
    let metrics_hint = proxy.log.text();
    assert!(
        metrics_hint.contains("discovery recovered"),
        "{metrics_hint}"
    );
}

#[tokio::test]
async fn acl_token_is_sent_never_logged_and_a_dead_agent_is_skipped() {
    let pair = MariaDbPair::start().await;
    let token = "t0k3n-that-must-not-leak";
    let consul = TestConsul::start_double(consul_double::DoubleConfig {
        acl_token: Some(token.into()),
        ..Default::default()
    })
    .await;
    // The test's own client must present the token too.
    let url = consul.http_url();
    let dead = format!("http://{}", closed_port());
    let agents = format!("{dead},{url}");
    let register = ServiceDef::new("mysql")
        .id("mysql-a")
        .tags(&["primary"])
        .address("127.0.0.1")
        .port(pair.primary.port())
        .status("passing");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .put(format!("{url}/v1/agent/service/register"))
        .header("X-Consul-Token", token)
        .body(register.to_json().to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let proxy = ProxyArgs::consul(agents.as_str())
        .with(&["--log-level", "debug"])
        .start_with_env(&[("CONSUL_HTTP_TOKEN", token)]);
    assert_eq!(port_via(proxy.addr()).await, pair.primary.port());
    let wrong = ProxyArgs::consul(url.as_str())
        .with(&["--hold-timeout", "1s"])
        .start_with_env(&[("CONSUL_HTTP_TOKEN", "wrong-token")]);
    wrong.wait_for_log("403", T).await;
    let logs = format!("{}\n{}", proxy.log.text(), wrong.log.text());
    assert!(!logs.contains(token), "token leaked into logs");
    assert!(!logs.contains("wrong-token"), "token leaked into logs");
}

#[tokio::test]
async fn stale_after_drops_the_primary_when_consul_stays_silent() {
    let pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    let Some(faults) = consul.faults_or_skip("stale_after_drops_the_primary") else {
        return;
    };
    assert!(
        consul
            .kv_put(KEY_LEADER, &pair.primary.addr().to_string())
            .await
    );
    let proxy = consul_proxy(
        &consul,
        &[
            "--discovery",
            "consul-kv",
            "--kv-key",
            KEY_LEADER,
            "--consul-wait",
            "500ms",
            "--consul-stale-after",
            "1500ms",
            "--hold-timeout",
            "1s",
        ],
    );
    assert_eq!(port_via(proxy.addr()).await, pair.primary.port());
    // Consul stops answering: the primary is kept at first, then dropped after stale_after.
    let mark = proxy.log.len();
    faults.pause();
    let paused = Instant::now();
    proxy
        .wait_for_log_from(mark, "(consul_stale_after)", T)
        .await;
    let dropped = paused.elapsed();
    assert!(
        dropped >= Duration::from_millis(1000),
        "dropped too early: {dropped:?}"
    );
    let msg = refused_message(proxy.addr()).await;
    assert!(
        msg.contains("no usable answer from discovery for 1s 500ms"),
        "{msg}"
    );
    faults.resume();
    wait_routed_to(&proxy, pair.primary.port()).await;
    eprintln!("stale_after 1.5s: primary dropped {dropped:?} after Consul went silent");
}

#[tokio::test]
async fn an_unknown_datacenter_is_an_error_not_an_empty_answer() {
    let pair = MariaDbPair::start().await;
    let consul = TestConsul::start().await;
    assert!(
        consul
            .kv_put(KEY_LEADER, &pair.primary.addr().to_string())
            .await
    );
    let proxy = consul_proxy(
        &consul,
        &[
            "--discovery",
            "consul-kv",
            "--kv-key",
            KEY_LEADER,
            "--dc",
            "nowhere",
            "--hold-timeout",
            "1s",
        ],
    );
    let line = proxy.wait_for_log("discovery unavailable", T).await;
    assert!(line.contains("No path to datacenter"), "{line}");
    let (code, _) = proxy.admin_get("/readyz").await;
    assert_eq!(code, 503);
}

const KEY_LEADER: &str = "service/mysql/leader";
