//! The routes demo (`scripts/demo.sh`, second part): read-write and read-only ports in one proxy.
//!
//! Starts a MariaDB primary with two GTID replicas, registers them in the Consul API double
//! (tags `primary` / `replica`), and one proxy with two routes: `main-rw` (the primary) and
//! `main-ro` (a least-connections pool over the replicas, falling back to `main-rw`'s primary).
//! 8 writers insert through RW while 8 readers hold sessions on RO. Then:
//!
//! 1. a replica stops (its check critical, then `kill -9`): it leaves the pool, its readers
//!    reconnect to the other replica;
//! 2. the primary crashes (`kill -9`) and the remaining replica is promoted and re-registered as
//!    `primary`: RW follows it, and RO, with no replica left, falls back to it.
//!
//! It prints where the readers are after each step and the writers' summary. Everything it
//! starts is stopped when it ends. It reuses the integration tests' helpers (tests/support).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use support::consul::{ServiceDef, TestConsul};
use support::proxy::Proxy;
use support::replica_set::{ReplicaSet, server_id_via};
use support::timeline::Clock;
use support::workload::{CREATE_TABLE, Writers, rows_on};

const LIMIT: Duration = Duration::from_secs(60);
const LOAD: Duration = Duration::from_secs(2);
const READERS: usize = 8;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clock = Clock::start();
    clock.say("ROUTES DEMO: starting a MariaDB primary and two GTID replicas");
    let set = ReplicaSet::start(2).await;
    set.primary.admin_exec(CREATE_TABLE).await;
    set.wait_replicated().await;
    let names: BTreeMap<u32, String> = [(set.primary.server_id(), "primary".to_owned())]
        .into_iter()
        .chain(
            set.replicas
                .iter()
                .enumerate()
                .map(|(i, r)| (r.server_id(), ReplicaSet::service_id(i))),
        )
        .collect();

    let consul = TestConsul::start().await;
    set.register(&consul).await;
    clock.say(format!(
        "Consul double at {}: mysql-primary (tag primary), mysql-r1 and mysql-r2 (tag replica)",
        consul.http_url()
    ));

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("routes.toml");
    std::fs::write(
        &file,
        format!(
            "consul = [\"{}\"]\nservice = \"mysql\"\nhold_timeout = \"15s\"\n\n\
             [[route]]\nname = \"main-rw\"\ntag = [\"primary\"]\nrole = \"primary\"\n\n\
             [[route]]\nname = \"main-ro\"\ntag = [\"replica\"]\nrole = \"replica\"\n\
             balance = \"least-connections\"\nfallback = \"main-rw\"\n",
            consul.http_url()
        ),
    )
    .expect("config file");
    let proxy = Proxy::start(&["--config", file.to_str().unwrap(), "--log-level", "info"]);
    let (rw, ro) = (
        route_addr(&proxy, "main-rw").await,
        route_addr(&proxy, "main-ro").await,
    );
    clock.say(format!(
        "proxy: main-rw on {rw} (the primary), main-ro on {ro} (least-connections over the replicas, fallback main-rw)"
    ));
    wait_until(|| async { server_id_via(rw).await.is_ok() }).await;
    wait_until(|| async {
        server_id_via(ro)
            .await
            .is_ok_and(|(_, id)| id != set.primary.server_id())
    })
    .await;

    clock.say("8 writers insert through main-rw; 8 readers open sessions on main-ro");
    let writers = Writers::start(rw, 8);
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(server_id_via(ro).await.expect("reader"));
    }
    clock.say(format!(
        "  readers per server: {}",
        spread(&readers, &names)
    ));
    tokio::time::sleep(LOAD).await;

    // 1. A replica stops.
    clock.say("REPLICA STOPS: mysql-r1's check goes critical, then kill -9");
    let mark = proxy.log.len();
    consul.check_fail(&ReplicaSet::check_id(0)).await;
    let left = proxy
        .wait_for_log_from(mark, "replica left the pool", LIMIT)
        .await;
    clock.say(format!("  proxy: {}", after_target(&left)));
    set.replicas[0].kill9();
    readers = reconnect_lost(readers, ro).await;
    clock.say(format!(
        "  readers per server after reconnecting: {}",
        spread(&readers, &names)
    ));
    tokio::time::sleep(LOAD).await;

    // 2. The primary crashes; mysql-r2 is promoted and becomes Consul's primary.
    clock.say(format!(
        "PRIMARY CRASH: kill -9 the primary (pid {})",
        set.primary.pid()
    ));
    set.primary.kill9();
    let crash = Instant::now();
    let promoted = &set.replicas[1];
    for sql in [
        "STOP SLAVE",
        "RESET SLAVE ALL",
        "SET GLOBAL read_only = OFF",
    ] {
        promoted.admin_exec(sql).await;
    }
    let mark = proxy.log.len();
    consul.check_fail("service:mysql-primary").await;
    let addr = promoted.addr();
    consul
        .register(
            &ServiceDef::new("mysql")
                .id(&ReplicaSet::service_id(1))
                .tags(&["primary"])
                .address(&addr.ip().to_string())
                .port(addr.port())
                .ttl_check(Duration::from_secs(600))
                .status("passing"),
        )
        .await;
    consul.check_pass(&ReplicaSet::check_id(1)).await;
    clock.say("  mysql-r2 promoted (STOP SLAVE; RESET SLAVE ALL; read_only=OFF) and re-registered with tag primary");
    let changed = proxy
        .wait_for_log_from(mark, "primary changed", LIMIT)
        .await;
    clock.say(format!("  main-rw: {}", after_target(&changed)));
    let fallback = proxy
        .wait_for_log_from(mark, "no healthy replica", LIMIT)
        .await;
    clock.say(format!("  main-ro: {}", after_target(&fallback)));
    readers = reconnect_lost(readers, ro).await;
    clock.say(format!(
        "  readers per server after reconnecting: {} (the fallback: main-rw's primary)",
        spread(&readers, &names)
    ));
    tokio::time::sleep(LOAD).await;

    let report = writers.stop().await;
    let on_new = rows_on(promoted.addr()).await;
    let after_crash = report.acked.iter().filter(|(_, _, t)| *t >= crash).count();
    let lost_after = report
        .acked
        .iter()
        .filter(|(w, s, t)| *t >= crash && !on_new.contains(&(*w, *s)))
        .count();
    println!();
    println!("routes demo summary");
    println!(
        "  writers: {} acknowledged inserts, {} after the crash, of those {} missing on the new primary (0 expected)",
        report.acked.len(),
        after_crash,
        lost_after
    );
    println!(
        "  readers: {READERS} on main-ro; final spread {}",
        spread(&readers, &names)
    );
    drop(readers);
    drop(proxy);
    clock.say("routes demo done: everything stopped and removed");
}

/// The bound address of route `name`, from `/status`.
async fn route_addr(proxy: &Proxy, name: &str) -> SocketAddr {
    let (_, body) = proxy.admin_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    status["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name)
        .and_then(|r| r["listen"].as_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("route {name} not in /status: {status}"))
}

/// Polls `ok` (bounded by LIMIT).
async fn wait_until<F, Fut>(mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < LIMIT, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps the readers whose session still answers; reconnects the others through `ro`.
async fn reconnect_lost(readers: Vec<(Conn, u32)>, ro: SocketAddr) -> Vec<(Conn, u32)> {
    let mut kept = Vec::with_capacity(readers.len());
    for (mut conn, id) in readers {
        if conn.query_drop("SELECT 1").await.is_ok() {
            kept.push((conn, id));
            continue;
        }
        let start = Instant::now();
        loop {
            match server_id_via(ro).await {
                Ok(fresh) => {
                    kept.push(fresh);
                    break;
                }
                Err(e) => assert!(start.elapsed() < LIMIT, "reader cannot reconnect: {e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    kept
}

/// `mysql-r1 4, mysql-r2 4`.
fn spread(readers: &[(Conn, u32)], names: &BTreeMap<u32, String>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, id) in readers {
        let name = names.get(id).map_or("?", String::as_str);
        *counts.entry(name).or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A log line from its message on (drops the timestamp, span and target).
fn after_target(line: &str) -> &str {
    let target = line.find("consul_mysql_proxy::").unwrap_or(0);
    line[target..]
        .find(": ")
        .map_or(line, |i| &line[target + i + 2..])
        .trim()
}
