//! Failure 9 of the matrix. Flapping health checks.
//!
//! A *real change* is one that changes what the proxy must route to: the current primary's
//! instance is no longer among the passing candidates (A -> B when another passes, A -> none
//! when none does), or a primary appears when there was none (none -> A). Candidates coming and
//! going while the current primary still passes are not changes (sticky selection), and
//! neither is the old primary passing again while the new one still passes (no preemption).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::task::JoinHandle;

use crate::support::consul::TestConsul;
use crate::support::mariadb::{MariaDb, MariaDbPair};
use crate::support::proxy::parse_field;
use crate::support::workload::{CREATE_TABLE, ErrorKind, Writers, rows_on};
use crate::{LOAD, connect, count_lines, pick, start_proxy, try_server_id_via, wait_routed_to};

/// Which server answers a new client, every 100 ms until `stop`.
fn spawn_prober(
    addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> JoinHandle<Vec<Result<u32, String>>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.is_cancelled() {
            seen.push(try_server_id_via(addr).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

/// Flips `check` every second for `run`, starting with `first_pass` (true: pass); leaves it in
/// the state of the last flip. Returns how many flips were made.
async fn flap(consul: &TestConsul, check: &str, run: Duration, first_pass: bool) -> usize {
    let start = Instant::now();
    let mut flips = 0;
    while start.elapsed() < run {
        if (flips % 2 == 0) == first_pass {
            consul.check_pass(check).await;
        } else {
            consul.check_fail(check).await;
        }
        flips += 1;
        tokio::time::sleep_until((start + Duration::from_secs(flips as u64)).into()).await;
    }
    flips
}

/// `SHOW GLOBAL STATUS` `Connections`: connection attempts the server has seen.
async fn connections(db: &MariaDb) -> u64 {
    let (_, v): (String, String) = db
        .admin_query_one("SHOW GLOBAL STATUS LIKE 'Connections'")
        .await;
    v.parse().unwrap()
}

/// The strict reading (`withdrawn_grace = 0s`: a withdrawn primary is no primary): every check
/// failure is a loss, and the losses stay bounded.
#[tokio::test]
async fn flapping_primary_check_without_a_standby_is_bounded() {
    let pair = MariaDbPair::start().await;
    pair.primary.admin_exec(CREATE_TABLE).await;
    let a_id = pair.primary.server_id();
    let consul = TestConsul::start().await;
    consul
        .register_pair(pair.primary.addr(), pair.replica.addr())
        .await;
    let proxy = start_proxy(&consul, &["--withdrawn-grace", "0s"]);
    const WRITERS: u32 = 4;
    let writers = Writers::start(proxy.addr(), WRITERS);
    tokio::time::sleep(LOAD).await;

    let before = connections(&pair.primary).await;
    let failovers_metric = "consul_mysql_proxy_failovers_total";
    let closed_metric = "consul_mysql_proxy_connections_closed_by_failover_total";
    let failovers_before = proxy.metric(failovers_metric).await.unwrap_or(0.0);
    let closed_before = proxy.metric(closed_metric).await.unwrap_or(0.0);
    let mark = proxy.log.len();
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = spawn_prober(proxy.addr(), stop.clone());
    let run = pick(Duration::from_secs(10), Duration::from_secs(30));
    // A fails, passes, fails, … every second; B never passes: each failure is A -> none.
    let flips = flap(&consul, "service:mysql-a", run, false).await;
    consul.check_pass("service:mysql-a").await;
    wait_routed_to(&proxy, a_id).await;
    tokio::time::sleep(LOAD).await;
    stop.cancel();
    let probes = prober.await.unwrap();
    let report = writers.stop().await;
    let after = connections(&pair.primary).await;
    let failovers = proxy.metric(failovers_metric).await.unwrap_or(0.0) - failovers_before;
    let closed_total = proxy.metric(closed_metric).await.unwrap_or(0.0) - closed_before;

    let failures = flips.div_ceil(2);
    let lost = count_lines(&proxy, mark, "primary lost");
    let back = count_lines(&proxy, mark, "primary changed");
    let closed: Vec<usize> = proxy
        .log
        .text()
        .lines()
        .skip(mark)
        .filter(|l| l.contains("primary lost"))
        .filter_map(|l| parse_field(l, "closed_connections="))
        .collect();
    // One loss per real loss (never more), one return per loss.
    assert!(
        lost >= 1 && lost <= failures,
        "{lost} losses for {failures} check failures"
    );
    assert!(back <= lost, "{back} returns for {lost} losses");
    // Each loss closes the connections open at that moment, no more (writers + a probe).
    assert!(
        closed.iter().all(|&n| n <= WRITERS as usize + 1),
        "closed per loss: {closed:?}"
    );
    // The metrics agree: a failover per loss (A -> none; none -> A closes nothing).
    assert_eq!(
        failovers as usize, lost,
        "failovers_total vs 'primary lost' lines"
    );
    // The metric also counts connections that were connecting to A while the loss was
    // published (closed at once, not yet in the timeline's `closed_connections`).
    let logged: usize = closed.iter().sum();
    assert!(
        closed_total as usize >= logged
            && closed_total as usize <= logged + lost * (WRITERS as usize + 1),
        "connections_closed_by_failover_total {closed_total} vs {logged} in the log"
    );
    // Clients: held while there is no primary, never refused, never sent elsewhere (a probe in
    // the middle of its query when A is lost sees its connection closed).
    let elsewhere: Vec<_> = probes
        .iter()
        .filter(|p| matches!(p, Ok(id) if *id != a_id))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "probes answered by another server: {elsewhere:?}"
    );
    let probe_errors: Vec<_> = probes.iter().filter_map(|p| p.as_ref().err()).collect();
    assert!(
        probe_errors.len() <= lost
            && probe_errors
                .iter()
                .all(|e| !e.contains("consul-mysql-proxy")),
        "probe errors: {probe_errors:?}"
    );
    assert_eq!(
        report.count(ErrorKind::ProxyRefused),
        0,
        "{}",
        report.summary()
    );
    assert!(
        report.other_errors().is_empty(),
        "{:?}",
        report.other_errors()
    );
    let lost_conns = report.count(ErrorKind::ConnectionLost);
    assert!(
        lost_conns <= WRITERS as usize * (lost + 1),
        "{lost_conns} connection errors for {lost} losses"
    );
    // No connection storm: backend connections = reconnects after losses + probes (+ our own).
    let backend_connects = after - before;
    // (a client caught by a loss in the middle of its handshake may connect twice)
    let budget = probes.len() as u64 + 2 * u64::from(WRITERS) * (lost as u64 + 1) + 10;
    assert!(
        backend_connects <= budget,
        "{backend_connects} connections reached A (budget {budget})"
    );
    let rows = rows_on(pair.primary.addr()).await;
    assert!(
        report
            .acked
            .iter()
            .all(|(w, s, _)| rows.contains(&(*w, *s))),
        "acknowledged writes missing"
    );
    eprintln!(
        "[9 flapping, no standby] {flips} flips in {run:?} ({failures} failures): {lost} 'primary lost' = failovers_total +{failovers} (closed {closed:?} per the log, {closed_total} per the metric), {back} returns; \
         {} probes all on A (held during losses); {backend_connects} backend connections to A ({} probes); writers: {}",
        probes.len(),
        probes.len(),
        report.summary()
    );
}

#[tokio::test]
async fn flapping_with_a_second_passing_instance_switches_once_and_sticks() {
    let pair = MariaDbPair::start().await;
    let (a_id, b_id) = (pair.primary.server_id(), pair.replica.server_id());
    let consul = TestConsul::start().await;
    consul
        .register_pair(pair.primary.addr(), pair.replica.addr())
        .await;
    let proxy = start_proxy(&consul, &[]);
    let mut open = connect(proxy.addr()).await;
    let run = pick(Duration::from_secs(6), Duration::from_secs(15));

    // Phase 1: A passes throughout; B's check flaps (two candidates every other second).
    let mark = proxy.log.len();
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = spawn_prober(proxy.addr(), stop.clone());
    let flips_b = flap(&consul, "service:mysql-b", run, true).await;
    consul.check_fail("service:mysql-b").await;
    stop.cancel();
    let probes = prober.await.unwrap();
    assert!(
        probes.iter().all(|p| *p == Ok(a_id)),
        "B flapping moved traffic: {probes:?}"
    );
    assert_eq!(count_lines(&proxy, mark, "primary changed"), 0);
    assert_eq!(count_lines(&proxy, mark, "primary lost"), 0);
    open.query_drop("SELECT 1")
        .await
        .expect("no connection to the current primary was closed");

    // Phase 2: B passes throughout; A's check flaps, failing first: one real change (A -> B),
    // then A passing again does not take traffic back.
    consul.check_pass("service:mysql-b").await;
    let mark = proxy.log.len();
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = spawn_prober(proxy.addr(), stop.clone());
    let flips_a = flap(&consul, "service:mysql-a", run, false).await;
    stop.cancel();
    let probes = prober.await.unwrap();
    let first_b = probes
        .iter()
        .position(|p| *p == Ok(b_id))
        .expect("traffic moved to B");
    // Before the switch A answers (a probe caught by the switch may see its connection closed);
    // after it, only B.
    let closed_probes = probes[..first_b].iter().filter(|p| p.is_err()).count();
    assert!(
        closed_probes <= 1
            && probes[..first_b]
                .iter()
                .all(|p| p.is_err() || *p == Ok(a_id))
            && probes[first_b..].iter().all(|p| *p == Ok(b_id)),
        "one switch, no way back: {probes:?}"
    );
    let switches = count_lines(&proxy, mark, "primary changed");
    assert_eq!(switches, 1, "{}", proxy.log.text());
    assert_eq!(count_lines(&proxy, mark, "primary lost"), 0);
    assert!(
        open.query_drop("SELECT 1").await.is_err(),
        "closed at the one switch"
    );
    eprintln!(
        "[9 flapping, standby passing] B flapped {flips_b}x while A passed: 0 switches, 0 closed connections; \
         A flapped {flips_a}x while B passed: {switches} switch, {} probes on A then {} on B, never back",
        first_b,
        probes.len() - first_b
    );
}

/// The default reading: a flapping check on a primary the proxy still reaches is Consul losing
/// sight of it, not the database failing — no failover, no client error, logged once.
#[tokio::test]
async fn flapping_primary_check_without_a_standby_is_ridden_out_by_default() {
    let pair = MariaDbPair::start().await;
    pair.primary.admin_exec(CREATE_TABLE).await;
    let a_id = pair.primary.server_id();
    let consul = TestConsul::start().await;
    consul
        .register_pair(pair.primary.addr(), pair.replica.addr())
        .await;
    let proxy = start_proxy(&consul, &[]);
    const WRITERS: u32 = 4;
    let writers = Writers::start(proxy.addr(), WRITERS);
    tokio::time::sleep(LOAD).await;
    let failovers_metric = "consul_mysql_proxy_failovers_total";
    let failovers_before = proxy.metric(failovers_metric).await.unwrap_or(0.0);
    let mark = proxy.log.len();
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = spawn_prober(proxy.addr(), stop.clone());
    let flips = flap(&consul, "service:mysql-a", Duration::from_secs(6), false).await;
    consul.check_pass("service:mysql-a").await;
    wait_routed_to(&proxy, a_id).await;
    tokio::time::sleep(LOAD).await;
    stop.cancel();
    let probes = prober.await.unwrap();
    let report = writers.stop().await;
    let failovers = proxy.metric(failovers_metric).await.unwrap_or(0.0) - failovers_before;
    assert!(flips >= 5, "{flips} flips");
    assert_eq!(failovers, 0.0, "a flapping check alone is no failover");
    assert_eq!(count_lines(&proxy, mark, "primary lost"), 0);
    assert!(
        count_lines(&proxy, mark, "primary withdrawn by Consul") >= 1,
        "the withdrawal is logged"
    );
    assert!(
        probes.iter().all(|p| *p == Ok(a_id)),
        "every new client reached A: {probes:?}"
    );
    assert!(
        report.errors.is_empty(),
        "writers saw errors: {:?}",
        report.errors
    );
    assert_eq!(
        proxy.metric("consul_mysql_proxy_primary_withdrawn").await,
        Some(0.0)
    );
    let inserted = rows_on(pair.primary.addr()).await;
    assert!(
        inserted.len() as u64 >= report.acked.len() as u64 && !inserted.is_empty(),
        "writers wrote through the whole flapping"
    );
}
