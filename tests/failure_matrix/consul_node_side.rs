//! Failure 10 of the matrix: Consul-side faults **on the database node**, seen through the
//! proxy with real MariaDB and 8 writers. Consul says who should be primary; the proxy checks
//! that it still can be — so Consul losing sight of a healthy primary (its agent restarting,
//! crashed or cut off, its check unable to reach the DB) must cost nothing, while an operator's
//! intent (maintenance) and a real demotion still take the primary out.
//!
//! The DB nodes are separate Consul nodes (`db-a`, `db-b`) with TTL checks, so each event hits
//! one node, and the double models it the way Consul does (see consul-double/CONFORMANCE.md):
//! a graceful leave deregisters the node's services, a restarted agent registers them again
//! with their checks critical until the first run, a crashed or partitioned agent turns the
//! node's `serfHealth` critical while its services stay.
//!
//! The sleeps in these tests are the events' own durations (how long an agent stays down),
//! not synchronisation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::consul::{ServiceDef, TestConsul};
use crate::support::mariadb::{MariaDbPair, StopHow};
use crate::support::proxy::Proxy;
use crate::support::workload::{CREATE_TABLE, ErrorKind, Report, Writers, rows_on};
use crate::{LOAD, T, count_lines, pick, proxy_args, wait_routed_to};

const WRITERS: u32 = 8;
const NODE_A: &str = "db-a";
const NODE_B: &str = "db-b";
const CHECK_A: &str = "service:mysql-a";
const CHECK_B: &str = "service:mysql-b";

/// A on node db-a passing, B on node db-b critical; both with TTL checks registered without a
/// status (Consul's default: critical until the first run).
async fn register_on_nodes(consul: &TestConsul, a: SocketAddr, b: SocketAddr) {
    for (id, node, addr) in [("mysql-a", NODE_A, a), ("mysql-b", NODE_B, b)] {
        consul
            .register(
                &ServiceDef::new("mysql")
                    .id(id)
                    .tags(&["primary"])
                    .address(&addr.ip().to_string())
                    .port(addr.port())
                    .ttl_check(Duration::from_secs(600))
                    .on_node(node, &addr.ip().to_string()),
            )
            .await;
    }
    consul.check_pass(CHECK_A).await;
    consul.wait_passing("mysql", Some("primary"), 1).await;
}

/// The fencing flags (the test bed's admin user can read `read_only`; its password comes from
/// the environment, never the command line).
const VERIFY: [&str; 5] = [
    "--verify-writable",
    "--monitor-user",
    "admin",
    "--verify-interval",
    "200ms",
];

fn start(consul: &TestConsul, verify: bool, extra: &[&str]) -> Proxy {
    let mut args = proxy_args(consul);
    if verify {
        args = args.with(&VERIFY);
    }
    args.with(extra)
        .start_with_env(&[("CONSUL_MYSQL_PROXY_MONITOR_PASSWORD", "admin")])
}

/// What one scenario measured.
struct Outcome {
    report: Report,
    /// Longest time without an acknowledged write from the event on.
    outage: Duration,
    failovers: f64,
}

/// Runs 8 writers through `proxy`, applies `event` after `LOAD`, lets them run `LOAD` more and
/// reports.
async fn under_load<F>(proxy: &Proxy, event: F) -> Outcome
where
    F: AsyncFnOnce(),
{
    let failovers_before = proxy
        .metric("consul_mysql_proxy_failovers_total")
        .await
        .unwrap_or(0.0);
    let writers = Writers::start(proxy.addr(), WRITERS);
    tokio::time::sleep(LOAD).await;
    let at = Instant::now();
    event().await;
    tokio::time::sleep(LOAD).await;
    let report = writers.stop().await;
    let failovers = proxy
        .metric("consul_mysql_proxy_failovers_total")
        .await
        .unwrap_or(0.0)
        - failovers_before;
    Outcome {
        outage: report.longest_gap_after(at),
        report,
        failovers,
    }
}

fn print(row: &str, o: &Outcome) {
    eprintln!(
        "[node side] {row}: write outage {:?}, errors {} ({}), failovers {}",
        o.outage,
        o.report.errors.len(),
        o.report.summary(),
        o.failovers
    );
}

/// Every acknowledged write is on A (nothing was routed elsewhere, nothing lost).
async fn all_acked_on(addr: SocketAddr, report: &Report) {
    let rows = rows_on(addr).await;
    let missing = report
        .acked
        .iter()
        .filter(|(w, s, _)| !rows.contains(&(*w, *s)))
        .count();
    assert_eq!(missing, 0, "acknowledged writes missing on the primary");
}

async fn pair_and_consul() -> (MariaDbPair, TestConsul) {
    let pair = MariaDbPair::start().await;
    pair.primary.admin_exec(CREATE_TABLE).await;
    let consul = TestConsul::start_double(Default::default()).await;
    register_on_nodes(&consul, pair.primary.addr(), pair.replica.addr()).await;
    (pair, consul)
}

#[tokio::test]
async fn db_node_agent_restart_costs_no_client_error() {
    let (pair, consul) = pair_and_consul().await;
    let faults = consul.faults().expect("the double");
    let proxy = start(&consul, false, &[]);
    wait_routed_to(&proxy, pair.primary.server_id()).await;
    let mark = proxy.log.len();
    let o = under_load(&proxy, async || {
        // Graceful leave: the node's services are deregistered …
        assert!(faults.agent_leave(NODE_A));
        tokio::time::sleep(Duration::from_millis(500)).await;
        // … the agent starts again and registers them with their checks critical …
        assert!(faults.agent_restart(NODE_A));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // … until the check's first run passes.
        consul.check_pass(CHECK_A).await;
    })
    .await;
    print(
        "DB node's agent restart (leave 0.5 s, checks critical 1.5 s)",
        &o,
    );
    assert!(o.report.errors.is_empty(), "{}", o.report.summary());
    assert!(
        o.outage <= Duration::from_millis(200),
        "outage {:?}",
        o.outage
    );
    assert_eq!(o.failovers, 0.0);
    assert!(count_lines(&proxy, mark, "primary withdrawn by Consul") >= 1);
    all_acked_on(pair.primary.addr(), &o.report).await;
}

/// The DB node's agent crashes (serfHealth critical) or is cut off from the servers, for
/// `down`; with `verify_writable` the proxy keeps the primary it verifies.
async fn agent_down_with_verify(partition: bool) {
    let (pair, consul) = pair_and_consul().await;
    let faults = consul.faults().expect("the double");
    let proxy = start(&consul, true, &[]);
    wait_routed_to(&proxy, pair.primary.server_id()).await;
    let down = pick(Duration::from_secs(5), Duration::from_secs(60));
    let o = under_load(&proxy, async || {
        if partition {
            assert!(faults.agent_partition(NODE_A));
        } else {
            assert!(faults.agent_crash(NODE_A));
        }
        tokio::time::sleep(down).await;
        if partition {
            assert!(faults.agent_heal(NODE_A));
        } else {
            assert!(faults.agent_restart(NODE_A));
            consul.check_pass(CHECK_A).await;
        }
    })
    .await;
    let what = if partition {
        "agent↔server partition"
    } else {
        "agent crash"
    };
    print(&format!("DB node {what} for {down:?}, verify_writable"), &o);
    assert!(o.report.errors.is_empty(), "{}", o.report.summary());
    assert!(
        o.outage <= Duration::from_millis(500),
        "outage {:?}",
        o.outage
    );
    assert_eq!(o.failovers, 0.0);
    all_acked_on(pair.primary.addr(), &o.report).await;
}

#[tokio::test]
async fn db_node_agent_crash_with_verify_writable_costs_nothing() {
    agent_down_with_verify(false).await;
}

#[tokio::test]
async fn db_node_agent_partition_with_verify_writable_costs_nothing() {
    agent_down_with_verify(true).await;
}

/// Without `verify_writable` the proxy cannot confirm the primary itself: it bridges the
/// withdrawal for `withdrawn_grace`, then lets it go (new clients are held, old connections
/// closed) until Consul sees the node again.
#[tokio::test]
async fn db_node_agent_crash_without_verify_is_bridged_for_withdrawn_grace() {
    let (pair, consul) = pair_and_consul().await;
    let faults = consul.faults().expect("the double");
    let proxy = start(&consul, false, &["--withdrawn-grace", "1s"]);
    wait_routed_to(&proxy, pair.primary.server_id()).await;
    let mark = proxy.log.len();
    let mut crashed = Instant::now();
    let mut dropped = Duration::ZERO;
    let o = under_load(&proxy, async || {
        crashed = Instant::now();
        assert!(faults.agent_crash(NODE_A));
        proxy
            .wait_for_log_from(mark, "neither back nor replaced within withdrawn_grace", T)
            .await;
        dropped = crashed.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(faults.agent_restart(NODE_A));
        consul.check_pass(CHECK_A).await;
        wait_routed_to(&proxy, pair.primary.server_id()).await;
    })
    .await;
    print(
        &format!(
            "DB node agent crash, no verify_writable, withdrawn_grace 1s (dropped after {dropped:?})"
        ),
        &o,
    );
    assert!(
        dropped >= Duration::from_secs(1) && dropped < Duration::from_secs(3),
        "dropped after {dropped:?}"
    );
    // Nothing failed while the grace bridged the withdrawal.
    let early: Vec<_> = o
        .report
        .errors
        .iter()
        .filter(|e| e.at < crashed + Duration::from_millis(900))
        .collect();
    assert!(early.is_empty(), "errors inside the grace: {early:?}");
    // After it, connections were closed (on_failover close) and the writers reconnected.
    assert!(o.report.count(ErrorKind::ConnectionLost) <= WRITERS as usize + 2);
    assert!(
        o.report.acked_after(crashed + Duration::from_secs(2)) > 0,
        "writes resumed"
    );
}

/// The DB node's check cannot reach the database (agent↔DB link loss) while the proxy can.
#[tokio::test]
async fn db_node_check_losing_the_db_costs_nothing_with_verify_writable() {
    let (pair, consul) = pair_and_consul().await;
    let faults = consul.faults().expect("the double");
    let proxy = start(&consul, true, &[]);
    wait_routed_to(&proxy, pair.primary.server_id()).await;
    let down = pick(Duration::from_secs(4), Duration::from_secs(60));
    let o = under_load(&proxy, async || {
        assert!(faults.force_check(
            Some(NODE_A),
            CHECK_A,
            "critical",
            "dial tcp: connect: no route to host"
        ));
        tokio::time::sleep(down).await;
        assert!(faults.release_check(Some(NODE_A), CHECK_A));
        consul.check_pass(CHECK_A).await;
    })
    .await;
    print(
        &format!("DB node's check cannot reach the DB for {down:?}, verify_writable"),
        &o,
    );
    assert!(o.report.errors.is_empty(), "{}", o.report.summary());
    assert_eq!(o.failovers, 0.0);
    all_acked_on(pair.primary.addr(), &o.report).await;
}

/// A node check in warning (disk 91 %) on the primary's node changes nothing by default.
#[tokio::test]
async fn unrelated_node_warning_keeps_the_primary() {
    let (pair, consul) = pair_and_consul().await;
    let faults = consul.faults().expect("the double");
    let proxy = start(&consul, false, &[]);
    wait_routed_to(&proxy, pair.primary.server_id()).await;
    let mark = proxy.log.len();
    let o = under_load(&proxy, async || {
        // Stands in for a node-level disk check: the node's own check, in warning.
        assert!(faults.force_check(Some(NODE_A), "serfHealth", "warning", "disk 91% full"));
    })
    .await;
    print("unrelated node warning (warning_is = passing)", &o);
    assert!(o.report.errors.is_empty(), "{}", o.report.summary());
    assert_eq!(o.failovers, 0.0);
    assert_eq!(count_lines(&proxy, mark, "primary withdrawn"), 0);
}

/// Maintenance is an operator's intent: no primary at once, connections closed by the
/// `on_failover` policy, new clients held until maintenance ends.
#[tokio::test]
async fn maintenance_on_the_primary_holds_new_clients() {
    let (pair, consul) = pair_and_consul().await;
    let faults = consul.faults().expect("the double");
    let proxy = start(&consul, false, &[]);
    let a_id = pair.primary.server_id();
    wait_routed_to(&proxy, a_id).await;
    let mark = proxy.log.len();
    let mut held_for = Duration::ZERO;
    let o = under_load(&proxy, async || {
        assert!(faults.service_maintenance(Some(NODE_A), "mysql-a", true, "kernel upgrade"));
        proxy.wait_for_log_from(mark, "primary lost", T).await;
        let held = tokio::spawn(crate::try_server_id_via(proxy.addr()));
        proxy
            .wait_for_metric("consul_mysql_proxy_connections_held", 1.0, T)
            .await;
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !held.is_finished(),
            "a new client is held during maintenance"
        );
        assert!(faults.service_maintenance(Some(NODE_A), "mysql-a", false, ""));
        assert_eq!(
            held.await.unwrap(),
            Ok(a_id),
            "released to A after maintenance"
        );
        held_for = start.elapsed();
    })
    .await;
    print(
        &format!("maintenance on the primary (client held {held_for:?})"),
        &o,
    );
    assert_eq!(
        count_lines(&proxy, mark, "primary withdrawn"),
        0,
        "maintenance is meant"
    );
    assert!(o.report.count(ErrorKind::ConnectionLost) <= WRITERS as usize + 1);
    assert!(
        o.report.other_errors().is_empty(),
        "{:?}",
        o.report.other_errors()
    );
}

/// A demotion without a replacement: A turned read-only, its check failed, nothing promoted.
/// With `verify_writable` the proxy refuses A at once (clients held, told why).
#[tokio::test]
async fn demotion_without_a_replacement_is_refused_with_verify_writable() {
    let (pair, consul) = pair_and_consul().await;
    let proxy = start(&consul, true, &[]);
    wait_routed_to(&proxy, pair.primary.server_id()).await;
    let mark = proxy.log.len();
    let o = under_load(&proxy, async || {
        pair.primary.admin_exec("SET GLOBAL read_only = 1").await;
        consul.check_fail(CHECK_A).await;
        proxy.wait_for_log_from(mark, "read-only", T).await;
    })
    .await;
    print("demotion without a replacement, verify_writable", &o);
    assert!(count_lines(&proxy, mark, "primary lost") >= 1);
    // What reached A before the proxy knew is refused by A itself; nothing else.
    assert!(
        o.report.other_errors().is_empty(),
        "{:?}",
        o.report.other_errors()
    );
    assert!(
        o.report.count(ErrorKind::ReadOnly) <= 4 * WRITERS as usize,
        "{}",
        o.report.summary()
    );
}

/// kill -9 of the primary and promotion a second later: outage and errors as before the
/// withdrawn-primary rule (the dead primary's connects fail; clients are held, then released).
#[tokio::test]
async fn primary_killed_and_promoted_a_second_later_is_no_slower() {
    let (mut pair, consul) = pair_and_consul().await;
    let proxy = start(&consul, false, &[]);
    wait_routed_to(&proxy, pair.primary.server_id()).await;
    let b_id = pair.replica.server_id();
    let (mut killed, mut passing) = (Instant::now(), Instant::now());
    let o = under_load(&proxy, async || {
        killed = Instant::now();
        pair.primary.kill9();
        consul.check_fail(CHECK_A).await;
        // The failover tool needs a second; promote() finds A dead already.
        tokio::time::sleep(Duration::from_secs(1)).await;
        pair.promote(StopHow::Kill9).await;
        consul.check_pass(CHECK_B).await;
        passing = Instant::now();
        let routed = wait_routed_to(&proxy, b_id).await;
        eprintln!("[node side] routed to B {routed:?} after B passed");
    })
    .await;
    // The outage is the failover tool's (kill → B passing in Consul) plus the proxy's part.
    let tool = passing - killed;
    let proxy_part = o.outage.saturating_sub(tool);
    print(
        &format!(
            "kill -9 of the primary, promotion 1 s later (tool {tool:?}, proxy {proxy_part:?})"
        ),
        &o,
    );
    assert!(
        proxy_part < Duration::from_millis(500),
        "the proxy added {proxy_part:?} to the tool's {tool:?}"
    );
    assert!(
        o.report.count(ErrorKind::ConnectionLost) <= WRITERS as usize + 2,
        "{}",
        o.report.summary()
    );
    assert!(
        o.report.other_errors().is_empty(),
        "{:?}",
        o.report.other_errors()
    );
}
