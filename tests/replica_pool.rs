//! Replica routes (`role = replica`) against a real primary with two GTID replicas, registered in
//! Consul (the double, or a real agent with `CONSUL_BIN`) with tags `primary` / `replica`:
//! 8 clients spread by `balance`, a stopped replica leaving the pool within one Consul change,
//! a lagging replica (service check in `warning`) used only when the other is gone, and no
//! healthy replica: the client is held, then refused with an ERR packet saying why; a DNS replica
//! route (every SRV record is a member); settings that do not apply to replicas exit 64.
//! `SELECT @@server_id` tells which server a connection reached.

mod support;

use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use support::consul::TestConsul;
use support::proxy::{Proxy, ProxyArgs, run_to_exit};
use support::refusal::refused_within;
use support::replica_set::{ReplicaSet, server_id_via};

/// Bound of every wait in this file.
const LIMIT: Duration = Duration::from_secs(30);
const CLIENTS: usize = 8;

/// A replica route over `consul`'s `mysql` instances tagged `replica`.
fn replica_route(consul: &TestConsul, extra: &[&str]) -> Proxy {
    ProxyArgs::consul(consul.http_url())
        .with(&[
            "--service",
            "mysql",
            "--tag",
            "replica",
            "--role",
            "replica",
        ])
        .with(extra)
        .start()
}

/// A client that reached a server through the proxy, with the replica index it reached.
fn on_replica(set: &ReplicaSet, reached: anyhow::Result<(Conn, u32)>) -> (Conn, usize) {
    let (conn, id) = reached.unwrap_or_else(|e| panic!("client through the proxy: {e:#}"));
    let replica = set
        .replica_with(id)
        .unwrap_or_else(|| panic!("server_id {id} is not a replica (the primary?)"));
    (conn, replica)
}

/// Opens `n` clients through `proxy` one after the other, each kept open.
async fn open_clients(proxy: &Proxy, set: &ReplicaSet, n: usize) -> Vec<(Conn, usize)> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(on_replica(set, server_id_via(proxy.addr()).await));
    }
    clients
}

/// Opens `n` clients through `proxy` at the same time (each its own task).
async fn open_clients_at_once(proxy: &Proxy, set: &ReplicaSet, n: usize) -> Vec<(Conn, usize)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(server_id_via(proxy.addr())))
        .collect();
    let mut clients = Vec::with_capacity(n);
    for task in tasks {
        clients.push(on_replica(set, task.await.expect("client task")));
    }
    clients
}

/// How many of `clients` are on each replica.
fn per_replica(clients: &[(Conn, usize)], replicas: usize) -> Vec<usize> {
    (0..replicas)
        .map(|r| clients.iter().filter(|(_, on)| *on == r).count())
        .collect()
}

/// Polls `/status` until `discovery.pool` has `members` members; returns the pool.
async fn wait_pool(proxy: &Proxy, members: usize) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (_, body) = proxy.admin_get("/status").await;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let pool = &status["discovery"]["pool"];
        if pool["members"].as_array().map(Vec::len) == Some(members) {
            return pool.clone();
        }
        assert!(
            start.elapsed() < LIMIT,
            "pool never had {members} members; last /status pool: {pool}; log:\n{}",
            proxy.log.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each member's open connections as `/status` reports them, by replica index.
fn status_connections(pool: &serde_json::Value, set: &ReplicaSet) -> Vec<u64> {
    set.replicas
        .iter()
        .map(|r| {
            pool["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["address"] == r.addr().to_string())
                .and_then(|m| m["connections"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

/// 8 clients opened at once, then 4 of those on replica 0 close and 4 new clients come: what each
/// replica holds after each step.
async fn balance_run(balance: &str) -> (Vec<usize>, Vec<usize>) {
    let consul = TestConsul::start().await;
    let set = ReplicaSet::start(2).await;
    set.register(&consul).await;
    let proxy = replica_route(&consul, &["--balance", balance]);
    wait_pool(&proxy, 2).await;

    let clients = open_clients_at_once(&proxy, &set, CLIENTS).await;
    let first = per_replica(&clients, 2);
    let pool = wait_pool(&proxy, 2).await;
    let reported: Vec<usize> = status_connections(&pool, &set)
        .into_iter()
        .map(|n| n as usize)
        .collect();
    assert_eq!(reported, first, "/status counts each member's connections");
    let (_, body) = proxy.admin_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    for (r, db) in set.replicas.iter().enumerate() {
        let gauge = &status["connections"]["per_backend"][db.addr().to_string()];
        assert_eq!(
            gauge.as_u64(),
            Some(first[r] as u64),
            "per-backend gauge: {status}"
        );
    }
    println!("balance = {balance}: {CLIENTS} clients opened at once → per replica {first:?}");

    let (on_0, mut kept): (Vec<_>, Vec<_>) = clients.into_iter().partition(|(_, r)| *r == 0);
    for (conn, _) in on_0 {
        conn.disconnect().await.expect("disconnect");
    }
    // The proxy sees the close when the relay ends: wait until it counts only the rest.
    let start = Instant::now();
    while status_connections(&wait_pool(&proxy, 2).await, &set)[0] != 0 {
        assert!(start.elapsed() < LIMIT, "closed clients still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kept.extend(open_clients(&proxy, &set, 4).await);
    let second = per_replica(&kept, 2);
    println!(
        "balance = {balance}: after the 4 clients of replica 1 closed and 4 new ones came → {second:?}"
    );
    (first, second)
}

#[tokio::test]
async fn least_connections_spreads_eight_clients_and_refills_the_emptier_replica() {
    let (first, second) = balance_run("least-connections").await;
    assert_eq!(first, vec![4, 4]);
    assert_eq!(
        second,
        vec![4, 4],
        "the 4 new clients all went to the emptied replica"
    );
}

#[tokio::test]
async fn round_robin_alternates_whatever_the_connection_counts() {
    let (first, second) = balance_run("round-robin").await;
    assert_eq!(first, vec![4, 4]);
    assert_eq!(second, vec![2, 6], "the 4 new clients alternated");
}

#[tokio::test]
async fn a_stopped_replica_leaves_the_pool_and_its_clients_go_to_the_other() {
    let consul = TestConsul::start().await;
    let set = ReplicaSet::start(2).await;
    set.register(&consul).await;
    let proxy = replica_route(&consul, &[]);
    wait_pool(&proxy, 2).await;
    let clients = open_clients(&proxy, &set, CLIENTS).await;
    assert_eq!(per_replica(&clients, 2), vec![4, 4]);

    // Replica 0's check goes critical (one Consul change) and the server stops. The check first,
    // so that what closes its clients is the proxy's on_failover, not the dead server.
    let from = proxy.log.len();
    let health = "/v1/health/service/mysql";
    let asked_before = consul.requests(health).map(|r| r.len());
    let changed = Instant::now();
    consul.check_fail(&ReplicaSet::check_id(0)).await;
    let left = proxy
        .wait_for_log_from(from, "replica left the pool", LIMIT)
        .await;
    let took = changed.elapsed();
    assert!(left.contains(&set.replicas[0].addr().to_string()), "{left}");
    assert!(left.contains("closed_connections=4"), "{left}");
    println!("replica left the pool {took:?} after its check went critical");
    if let (Some(before), Some(after)) = (asked_before, consul.requests(health).map(|r| r.len())) {
        // The blocking query in flight answered the change; at most the next one was sent since.
        assert!(
            after - before <= 1,
            "{} health requests to see one change",
            after - before
        );
    }
    let pool = wait_pool(&proxy, 1).await;
    assert_eq!(status_connections(&pool, &set), vec![0, 4]);
    set.replicas[0].kill9();

    // The clients of the stopped replica were closed (on_failover = close); reconnecting, they
    // reach the other one.
    let mut reconnected = Vec::new();
    for (mut conn, on) in clients {
        if on == 0 {
            assert!(
                conn.query_drop("SELECT 1").await.is_err(),
                "a client of the stopped replica was left open"
            );
            reconnected.extend(open_clients(&proxy, &set, 1).await);
        } else {
            conn.query_drop("SELECT 1")
                .await
                .expect("a client of the other replica is untouched");
            reconnected.push((conn, on));
        }
    }
    assert_eq!(per_replica(&reconnected, 2), vec![0, 8]);

    // Deregistered (its agent forgot it) is the same: the last replica leaves too.
    let from = proxy.log.len();
    consul.deregister(&ReplicaSet::service_id(1)).await;
    proxy
        .wait_for_log_from(from, "replica left the pool", LIMIT)
        .await;
    wait_pool(&proxy, 0).await;
}

#[tokio::test]
async fn a_lagging_replica_is_used_only_when_the_other_is_gone() {
    let consul = TestConsul::start().await;
    let set = ReplicaSet::start(2).await;
    set.register(&consul).await;
    // Replica 1 lags: `check --role replica` exits 1 (warning) above --max-lag.
    consul.check_warn(&ReplicaSet::check_id(1)).await;
    let proxy = replica_route(&consul, &[]);
    let start = Instant::now();
    loop {
        let pool = wait_pool(&proxy, 2).await;
        let lagging = pool["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["address"] == set.replicas[1].addr().to_string())
            .map(|m| m["lagging"] == true);
        if lagging == Some(true) {
            break;
        }
        assert!(start.elapsed() < LIMIT, "replica 1 never lagging: {pool}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clients = open_clients(&proxy, &set, CLIENTS).await;
    assert_eq!(
        per_replica(&clients, 2),
        vec![CLIENTS, 0],
        "all on the replica that does not lag"
    );

    consul.check_fail(&ReplicaSet::check_id(0)).await;
    wait_pool(&proxy, 1).await;
    let clients = open_clients(&proxy, &set, 2).await;
    assert_eq!(
        per_replica(&clients, 2),
        vec![0, 2],
        "the lagging one, now alone"
    );
}

#[tokio::test]
async fn no_healthy_replica_holds_the_client_then_refuses_it_with_why() {
    let consul = TestConsul::start().await;
    let set = ReplicaSet::start(2).await;
    set.register(&consul).await;
    for i in 0..2 {
        consul.check_fail(&ReplicaSet::check_id(i)).await;
    }
    let proxy = replica_route(&consul, &["--hold-timeout", "1500ms"]);
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 503, "{body}");

    // Held, not refused: a replica coming back within hold_timeout serves the client.
    let held = tokio::spawn(server_id_via(proxy.addr()));
    proxy
        .wait_for_metric("consul_mysql_proxy_connections_held", 1.0, LIMIT)
        .await;
    consul.check_pass(&ReplicaSet::check_id(1)).await;
    let (_conn, id) = held
        .await
        .expect("task")
        .expect("the held client was served");
    assert_eq!(set.replica_with(id), Some(1));

    consul.check_fail(&ReplicaSet::check_id(1)).await;
    wait_pool(&proxy, 0).await;
    let asked = Instant::now();
    let (code, message) = refused_within(proxy.addr(), LIMIT).await;
    let waited = asked.elapsed();
    assert_eq!(code, 1105);
    assert!(
        message.contains("no healthy replica for service \"mysql\" after 1s 500ms"),
        "{message}"
    );
    assert!(waited >= Duration::from_millis(1400), "held {waited:?}");
    assert_eq!(
        proxy
            .metric("consul_mysql_proxy_err_packets_total{reason=\"no_replica\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_dns_replica_route_spreads_over_every_record() {
    let consul = TestConsul::start().await;
    let set = ReplicaSet::start(2).await;
    set.register(&consul).await;
    let proxy = ProxyArgs::dns(consul.dns_addr(), "replica.mysql.service.consul")
        .with(&["--role", "replica", "--dns-interval", "200ms"])
        .start();
    wait_pool(&proxy, 2).await;
    let clients = open_clients_at_once(&proxy, &set, CLIENTS).await;
    assert_eq!(per_replica(&clients, 2), vec![4, 4]);
    consul.check_fail(&ReplicaSet::check_id(0)).await;
    let pool = wait_pool(&proxy, 1).await;
    assert_eq!(status_connections(&pool, &set), vec![0, 4], "{pool}");
}

#[test]
fn replica_settings_that_do_not_apply_exit_64_naming_the_field() {
    for (args, field) in [
        (
            &[
                "--role",
                "replica",
                "--verify-writable",
                "--monitor-user",
                "m",
            ][..],
            "`verify_writable`",
        ),
        (
            &["--role", "replica", "--fallback", "main-rw"][..],
            "`fallback`",
        ),
        (
            &["--role", "replica", "--balance", "random"][..],
            "--balance",
        ),
    ] {
        let args: Vec<&str> = ["--backend", "127.0.0.1:1"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        let (status, err) = run_to_exit(&args, &[]);
        assert_eq!(status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(field), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn eight_clients_reconnecting_split_their_connections_evenly() {
    const ROUNDS: usize = 25;
    let consul = TestConsul::start().await;
    let set = ReplicaSet::start(2).await;
    set.register(&consul).await;
    for balance in ["least-connections", "round-robin"] {
        let proxy = replica_route(&consul, &["--balance", balance]);
        wait_pool(&proxy, 2).await;
        let started = Instant::now();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let addr = proxy.addr();
                tokio::spawn(async move {
                    let mut ids = Vec::with_capacity(ROUNDS);
                    for _ in 0..ROUNDS {
                        let (conn, id) = server_id_via(addr).await?;
                        conn.disconnect().await?;
                        ids.push(id);
                    }
                    anyhow::Ok(ids)
                })
            })
            .collect();
        let mut per = [0usize; 2];
        for task in tasks {
            for id in task.await.expect("client task").expect("a client's round") {
                per[set.replica_with(id).expect("a replica answered")] += 1;
            }
        }
        println!(
            "balance = {balance}: {CLIENTS} clients x {ROUNDS} connections in {:?} → per replica {per:?}",
            started.elapsed()
        );
        let total = CLIENTS * ROUNDS;
        assert_eq!(per[0] + per[1], total);
        if balance == "round-robin" {
            assert_eq!(per, [total / 2, total / 2], "strict alternation");
        } else {
            assert!(per.iter().all(|&n| n >= total * 2 / 5), "{per:?}");
        }
    }
}

#[tokio::test]
async fn a_leaving_replicas_clients_follow_on_failover_drain() {
    let consul = TestConsul::start().await;
    let set = ReplicaSet::start(2).await;
    set.register(&consul).await;
    let proxy = replica_route(&consul, &["--on-failover", "drain", "--drain-grace", "2s"]);
    wait_pool(&proxy, 2).await;
    let clients = open_clients(&proxy, &set, 4).await;
    let from = proxy.log.len();
    consul.check_fail(&ReplicaSet::check_id(0)).await;
    let left = proxy
        .wait_for_log_from(from, "replica left the pool", LIMIT)
        .await;
    let at = Instant::now();
    assert!(left.contains("policy=Drain"), "{left}");
    let (mut draining, mut staying): (Vec<_>, Vec<_>) =
        clients.into_iter().partition(|(_, r)| *r == 0);
    assert_eq!(draining.len(), 2);
    // Within drain_grace they still work; after it the proxy closes them.
    for (conn, _) in &mut draining {
        conn.query_drop("SELECT 1")
            .await
            .expect("still open while draining");
    }
    for (conn, _) in &mut draining {
        while conn.query_drop("SELECT 1").await.is_ok() {
            assert!(at.elapsed() < LIMIT, "never closed after drain_grace");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let closed_after = at.elapsed();
    println!("drained clients closed {closed_after:?} after the replica left");
    assert!(
        closed_after >= Duration::from_millis(1500),
        "{closed_after:?}"
    );
    for (conn, _) in &mut staying {
        conn.query_drop("SELECT 1")
            .await
            .expect("the other replica's clients stay");
    }
}
