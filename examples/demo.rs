//! The demo (`scripts/demo.sh`): a live failover under write load, on one machine.
//!
//! Starts a MariaDB primary and a GTID replica, the Consul API double with both nodes
//! registered using `consul-mysql-proxy check` script checks, the proxy (consul-health
//! discovery), and 8 writers inserting through the proxy. Then, as an operator and an
//! orchestrator would:
//!
//! 1. a planned switchover (old primary read-only, replica caught up and promoted);
//! 2. a crash: the new primary is killed with `kill -9`; Consul's check turns critical; the
//!    other node is promoted.
//!
//! It prints a timeline (Consul check states, the proxy's decisions, writes stopping and
//! resuming) and a summary: write outage, client errors, acknowledged rows lost. Everything it
//! starts is stopped when it ends. It reuses the integration tests' helpers (tests/support).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::consul::TestConsul;
use support::mariadb::{MariaDbPair, StopHow};
use support::proxy::{Proxy, binary};
use support::workload::{CREATE_TABLE, ErrorKind, Report, Writers, rows_on};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);
const LOAD: Duration = Duration::from_secs(3);

struct Clock(Instant);

impl Clock {
    fn say(&self, what: impl AsRef<str>) {
        println!(
            "[{:>6.2}s] {}",
            self.0.elapsed().as_secs_f64(),
            what.as_ref()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clock = Clock(Instant::now());
    let _ = rustls::crypto::ring::default_provider().install_default();
    clock.say("starting a MariaDB primary and a GTID replica on free loopback ports");
    let mut pair = MariaDbPair::start().await;
    pair.primary.admin_exec(CREATE_TABLE).await;
    pair.wait_replicated().await;
    let (a, b) = (pair.primary.addr(), pair.replica.addr());
    clock.say(format!(
        "  mysql-a = {a} (primary), mysql-b = {b} (replica, read_only=ON)"
    ));

    let consul = TestConsul::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("monitor.pw");
    std::fs::write(&password_file, "admin\n").expect("password file");
    clock.say(format!("Consul API double at {}; registering both nodes with `consul-mysql-proxy check --role primary` (interval 1s)", consul.http_url()));
    for (id, addr) in [("mysql-a", a), ("mysql-b", b)] {
        register_with_check(&consul, id, addr, &password_file).await;
    }
    let watcher = CancellationToken::new();
    tokio::spawn(watch_consul(
        consul.http_url(),
        watcher.clone(),
        Clock(clock.0),
    ));
    consul.wait_passing("mysql", Some("primary"), 1).await;

    let url = consul.http_url();
    let proxy = Proxy::start(&[
        "--consul",
        &url,
        "--discovery",
        "consul-health",
        "--tag",
        "primary",
        "--hold-timeout",
        "15s",
        "--log-level",
        "info",
    ]);
    proxy.wait_for_log("primary changed", LIMIT).await;
    clock.say(format!(
        "proxy listening on {} (admin {}), routing to mysql-a",
        proxy.addr(),
        proxy.admin()
    ));
    let mut proxy_log = proxy.log.len();

    clock.say("8 writers start inserting (writer, seq) rows through the proxy");
    let writers = Writers::start(proxy.addr(), 8);
    tokio::time::sleep(LOAD).await;

    // Phase 1: planned switchover a → b.
    clock.say(
        "PLANNED SWITCHOVER: mysql-a read_only=ON, wait for mysql-b to catch up, promote mysql-b",
    );
    let switch_start = Instant::now();
    pair.switchover().await;
    clock.say("  mysql-b promoted (read_only=OFF); its check will pass, mysql-a's will fail");
    proxy_log = follow_proxy(&proxy, proxy_log, "failover timeline", &clock).await;
    tokio::time::sleep(LOAD).await;

    // Phase 2: crash of the new primary b; a is made a replica of b first so it can take over.
    pair.repoint_old_primary_as_replica().await;
    pair.wait_replicated().await;
    clock.say("mysql-a now replicates from mysql-b");
    tokio::time::sleep(Duration::from_secs(1)).await;
    clock.say(format!(
        "CRASH: kill -9 mysql-b (pid {})",
        pair.primary.pid()
    ));
    let crash = Instant::now();
    pair.primary.kill9();
    let passing_none = wait_passing_count(&consul, 0).await;
    clock.say(format!("  Consul: no passing primary any more ({passing_none:?} after the kill); orchestrator promotes mysql-a"));
    pair.promote(StopHow::Kill9).await;
    clock.say("  mysql-a promoted (STOP SLAVE; RESET SLAVE ALL; read_only=OFF)");
    follow_proxy(&proxy, proxy_log, "failover timeline", &clock).await;
    tokio::time::sleep(LOAD).await;
    clock.say("stopping the writers");
    let report = writers.stop().await;
    watcher.cancel();

    let on_a = rows_on(a).await;
    summary(&report, switch_start, crash, &on_a);
    drop(proxy);
    drop(pair);
    clock.say("done: everything stopped and removed");
}

/// Registers `id` using the service definition `consul-mysql-proxy check` prints.
async fn register_with_check(
    consul: &TestConsul,
    id: &str,
    addr: std::net::SocketAddr,
    password_file: &std::path::Path,
) {
    let out = std::process::Command::new(binary())
        .args([
            "check",
            "--print-service-definition",
            "--host",
            "127.0.0.1",
            "--port",
            &addr.port().to_string(),
        ])
        .args(["--user", "admin", "--role", "primary", "--password-file"])
        .arg(password_file)
        .args([
            "--service",
            "mysql",
            "--id",
            id,
            "--tags",
            "primary",
            "--interval",
            "1s",
            "--timeout",
            "1s",
        ])
        .output()
        .expect("run consul-mysql-proxy check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let r = client
        .put(format!("{}/v1/agent/service/register", consul.http_url()))
        .body(out.stdout)
        .send()
        .await
        .expect("register");
    assert!(r.status().is_success(), "register {id}: {}", r.status());
}

/// Prints every change of a check's status (with its output), via blocking queries.
async fn watch_consul(base: String, stop: CancellationToken, clock: Clock) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let mut index = 0u64;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    while !stop.is_cancelled() {
        let url = format!("{base}/v1/health/service/mysql?index={index}&wait=5s");
        let answer = tokio::select! {
            r = client.get(&url).send() => r,
            () = stop.cancelled() => return,
        };
        let Ok(r) = answer else { return };
        let new_index = r
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let entries: Vec<Value> = r.json().await.unwrap_or_default();
        for e in entries {
            let id = e["Service"]["ID"].as_str().unwrap_or("?").to_owned();
            for c in e["Checks"].as_array().into_iter().flatten() {
                if c["CheckID"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("service:"))
                {
                    let status = c["Status"].as_str().unwrap_or("?").to_owned();
                    if seen.get(&id) != Some(&status) {
                        let output = c["Output"].as_str().unwrap_or("").trim().to_owned();
                        clock.say(format!("  Consul: {id} check {status}: {output}"));
                        seen.insert(id.clone(), status);
                    }
                }
            }
        }
        index = if new_index < index { 0 } else { new_index };
    }
}

/// Echoes the proxy's failover log lines from line `from` on until one contains `until`;
/// returns the index of the line after it.
async fn follow_proxy(proxy: &Proxy, from: usize, until: &str, clock: &Clock) -> usize {
    const TARGET: &str = "consul_mysql_proxy::control::failover: ";
    let mut at = from;
    let deadline = Instant::now() + LIMIT;
    loop {
        let lines: Vec<String> = proxy.log.text().lines().map(str::to_owned).collect();
        for (i, line) in lines.iter().enumerate().skip(at) {
            at = i + 1;
            let Some((_, text)) = line.split_once(TARGET) else {
                continue;
            };
            clock.say(format!("  proxy: {text}"));
            if line.contains(until) {
                return at;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no proxy log line with {until:?} within {LIMIT:?}; log:\n{}",
            proxy.log.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_passing_count(consul: &TestConsul, count: usize) -> Duration {
    let start = Instant::now();
    consul.wait_passing("mysql", Some("primary"), count).await;
    start.elapsed()
}

fn summary(report: &Report, switch_start: Instant, crash: Instant, on_final: &HashSet<(u32, u64)>) {
    let acked_before_crash: Vec<_> = report.acked.iter().filter(|a| a.2 < crash).collect();
    let lost_switchover = acked_before_crash
        .iter()
        .filter(|(w, s, _)| !on_final.contains(&(*w, *s)))
        .count();
    let lost_total = report
        .acked
        .iter()
        .filter(|(w, s, _)| !on_final.contains(&(*w, *s)))
        .count();
    println!();
    println!("summary");
    println!("  acknowledged inserts:        {}", report.acked.len());
    println!(
        "  write outage, switchover:    {:?}",
        gap_between(report, switch_start, crash)
    );
    println!(
        "  write outage, crash:         {:?}",
        report.longest_gap_after(crash)
    );
    println!(
        "  client errors:               {} connection lost, {} read-only (1290), {} proxy refused, {} ambiguous commits, {} other",
        report.count(ErrorKind::ConnectionLost),
        report.count(ErrorKind::ReadOnly),
        report.count(ErrorKind::ProxyRefused),
        report.count(ErrorKind::AlreadyApplied),
        report.count(ErrorKind::Other)
    );
    println!(
        "  rows lost, switchover:       {lost_switchover} (0 expected: nothing is lost in a clean switchover)"
    );
    println!(
        "  rows lost, crash:            {} (asynchronous replication: a kill -9 can lose the last acknowledged writes; the proxy adds none)",
        lost_total - lost_switchover
    );
}

/// The longest gap between acknowledged writes in [from, to).
fn gap_between(report: &Report, from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = report
        .acked
        .iter()
        .map(|a| a.2)
        .filter(|t| *t >= from && *t < to)
        .collect();
    times.sort();
    let mut prev = from;
    let mut longest = Duration::ZERO;
    for t in times {
        longest = longest.max(t - prev);
        prev = t;
    }
    longest
}
