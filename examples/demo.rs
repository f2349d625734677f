//! The demo (`scripts/demo.sh`): a live failover under write load, on one machine.
//!
//! Starts a MariaDB primary and a GTID replica, the Consul API double with both nodes
//! registered using `consul-mysql-proxy check` script checks, the proxy (consul-health
//! discovery, `on_failover = idle`), and 8 writers inserting through the proxy, each from a
//! pool that validates its connection (`COM_PING`) before use. Then, as an operator and an
//! orchestrator would:
//!
//! 1. a planned switchover, classic runbook (old primary read-only, replica caught up and
//!    promoted, Consul follows);
//! 2. a planned switchover, sequenced (README "Planned switchover"): Consul maintenance on the
//!    primary first — the proxy holds new clients and closes each old connection at its first
//!    idle moment — then, once the primary has no application session left, read-only,
//!    catch-up, promotion;
//! 3. a crash: the primary is killed with `kill -9`; Consul's check turns critical; the other
//!    node is promoted.
//!
//! It prints a timeline (Consul check states, the proxy's decisions, writes stopping and
//! resuming) and a summary per phase: write outage, client errors, acknowledged rows lost.
//! Everything it starts is stopped when it ends. It reuses the integration tests' helpers
//! (tests/support).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::consul::TestConsul;
use support::mariadb::{MariaDbPair, StopHow};
use support::proxy::{Proxy, binary};
use support::timeline::Clock;
use support::workload::{CREATE_TABLE, During, ErrorKind, Report, Style, Writers, rows_on};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);
const LOAD: Duration = Duration::from_secs(3);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clock = Clock::start();
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
        "--on-failover",
        "idle",
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

    clock.say("8 writers start inserting (writer, seq) rows through the proxy (validating pool: COM_PING before each use)");
    let writers = Writers::start_styled(proxy.addr(), 8, Style::Validating);
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

    // Phase 2: sequenced switchover b → a; a is made a replica of b first.
    pair.repoint_old_primary_as_replica().await;
    pair.wait_replicated().await;
    clock.say("mysql-a now replicates from mysql-b");
    tokio::time::sleep(Duration::from_secs(1)).await;
    clock.say("SEQUENCED SWITCHOVER: Consul maintenance on mysql-b (the proxy holds new clients and closes each connection to mysql-b at its first idle moment)");
    let sequenced = Instant::now();
    consul
        .maintenance("mysql-b", true, "switchover to mysql-a")
        .await;
    proxy_log = follow_proxy(&proxy, proxy_log, "idle drain finished", &clock).await;
    let drained = pair
        .primary
        .wait_no_sessions_of("app", Duration::from_secs(10))
        .await;
    clock.say(format!(
        "  mysql-b has no application session left ({drained}); read_only=ON, wait for mysql-a to catch up, promote mysql-a"
    ));
    pair.switchover().await;
    clock.say("  mysql-a promoted (read_only=OFF); its check will pass");
    proxy_log = follow_proxy(&proxy, proxy_log, "failover timeline", &clock).await;
    // Only now: while mysql-b's check may still say "passing" (it runs every second), ending
    // its maintenance earlier could offer it as a candidate again.
    consul.maintenance("mysql-b", false, "").await;
    clock.say("  maintenance off on mysql-b (read-only now: its check fails; mysql-a stays)");
    tokio::time::sleep(LOAD).await;

    // Phase 3: crash of the primary a; b is made a replica of a first so it can take over.
    pair.repoint_old_primary_as_replica().await;
    pair.wait_replicated().await;
    clock.say("mysql-b now replicates from mysql-a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    clock.say(format!(
        "CRASH: kill -9 mysql-a (pid {})",
        pair.primary.pid()
    ));
    let crash = Instant::now();
    pair.primary.kill9();
    let passing_none = wait_passing_count(&consul, 0).await;
    clock.say(format!("  Consul: no passing primary any more ({passing_none:?} after the kill); orchestrator promotes mysql-b"));
    pair.promote(StopHow::Kill9).await;
    clock.say("  mysql-b promoted (STOP SLAVE; RESET SLAVE ALL; read_only=OFF)");
    follow_proxy(&proxy, proxy_log, "failover timeline", &clock).await;
    tokio::time::sleep(LOAD).await;
    clock.say("stopping the writers");
    let report = writers.stop().await;
    watcher.cancel();

    let on_b = rows_on(b).await;
    summary(&report, [switch_start, sequenced, crash], &on_b);
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

/// Echoes the proxy's failover log lines from `from` until one contains `until`; returns the
/// index after that line.
async fn follow_proxy(proxy: &Proxy, from: usize, until: &str, clock: &Clock) -> usize {
    let mut at = from;
    let deadline = Instant::now() + LIMIT;
    loop {
        let log = proxy.log.clone();
        let found = tokio::task::spawn_blocking(move || {
            log.wait_for_from(at, "consul_mysql_proxy::control::failover", LIMIT)
        })
        .await
        .expect("log reader");
        let Some((index, line)) = found else {
            panic!(
                "no failover log line within {LIMIT:?}; log:\n{}",
                proxy.log.text()
            );
        };
        // Several lines can arrive at once: continue right after this one.
        at = index + 1;
        let text = line
            .split("consul_mysql_proxy::control::failover: ")
            .nth(1)
            .unwrap_or(&line)
            .to_owned();
        clock.say(format!("  proxy: {text}"));
        if line.contains(until) {
            return at;
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

fn summary(report: &Report, phases: [Instant; 3], on_final: &HashSet<(u32, u64)>) {
    let names = ["switchover, classic", "switchover, sequenced", "crash"];
    let ends = [phases[1], phases[2], Instant::now() + LIMIT];
    println!();
    println!("summary ({} acknowledged inserts)", report.acked.len());
    for (i, name) in names.iter().enumerate() {
        let (from, to) = (phases[i], ends[i]);
        let errors = |during: During, kind: ErrorKind| {
            report
                .during(during)
                .filter(|e| e.kind == kind && e.at >= from && e.at < to)
                .count()
        };
        let statement = |kind| errors(During::Statement, kind);
        let replaced = report
            .during(During::Validate)
            .filter(|e| e.at >= from && e.at < to)
            .count();
        let lost = report
            .acked
            .iter()
            .filter(|(w, s, t)| *t >= from && *t < to && !on_final.contains(&(*w, *s)))
            .count();
        println!("  {name}:");
        println!(
            "    write outage:       {:?}",
            gap_between(report, from, to)
        );
        println!(
            "    statement errors:   {} read-only (1290), {} connection lost, {} ambiguous commits, {} proxy refused, {} other",
            statement(ErrorKind::ReadOnly),
            statement(ErrorKind::ConnectionLost),
            statement(ErrorKind::AlreadyApplied),
            statement(ErrorKind::ProxyRefused),
            statement(ErrorKind::Other)
        );
        println!(
            "    stale connections replaced by the pool's ping: {replaced}; connect errors: {}",
            report
                .during(During::Connect)
                .filter(|e| e.at >= from && e.at < to)
                .count()
        );
        let note = if i < 2 {
            "0 expected: nothing is lost in a planned switchover"
        } else {
            "asynchronous replication: a kill -9 can lose the last acknowledged writes; the proxy adds none"
        };
        println!("    rows lost:          {lost} ({note})");
    }
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
