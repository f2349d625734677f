//! Planned switchover with zero client errors (project issue 15), end to end on a real MariaDB
//! primary + GTID replica behind the Consul double, with 8 writers through the proxy.
//!
//! Two runbooks:
//! - **classic**: A `read_only=ON`, B caught up and promoted, then Consul names B (what
//!   `tests/failover.rs` does);
//! - **sequenced** (the recipe of README "Planned switchover"): Consul maintenance on A first —
//!   the proxy has no primary, holds new clients and (with `on_failover = idle`) closes each
//!   connection to A at its first idle moment — the tool waits until A has no application
//!   session left, then `read_only=ON`, catch-up, promotion, Consul names B, maintenance off:
//!   the held clients go to B.
//!
//! and two client styles: a pool that validates before use (`COM_PING`) and a naive client.
//! [`sequenced_idle_switchover_costs_a_validating_pool_nothing`] asserts the goal;
//! [`switchover_table`] measures every policy × runbook × client and prints the table of README
//! (`CMP_LONG=1`: 3 rounds each, min–max).

mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use support::consul::TestConsul;
use support::mariadb::MariaDbPair;
use support::proxy::{Proxy, ProxyArgs};
use support::workload::{During, ErrorKind, Report, Style, Writers, pair_in_consul, rows_on};

const T: Duration = Duration::from_secs(30);
/// Writers run this long before and after each switchover.
const LOAD: Duration = Duration::from_millis(1000);
const DRAIN_GRACE: &str = "2s";
const WRITERS: u32 = 8;

fn long() -> bool {
    std::env::var("CMP_LONG").is_ok_and(|v| v == "1")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runbook {
    Classic,
    Sequenced,
}

/// The pair, registered in Consul as `mysql-a` / `mysql-b` (service `mysql`, tag `primary`,
/// TTL checks the test drives as a failover tool would). Roles alternate between runs.
struct Cluster {
    pair: MariaDbPair,
    consul: TestConsul,
    /// Consul service IDs of (current primary, current replica).
    ids: (&'static str, &'static str),
}

impl Cluster {
    async fn start() -> Cluster {
        let (pair, consul) = pair_in_consul().await;
        Cluster {
            pair,
            consul,
            ids: ("mysql-a", "mysql-b"),
        }
    }

    fn proxy(&self, on_failover: &str) -> Proxy {
        ProxyArgs::consul(self.consul.http_url())
            .with(&[
                "--hold-timeout",
                "20s",
                "--backend-greeting-timeout",
                "500ms",
            ])
            .with(&["--on-failover", on_failover, "--drain-grace", DRAIN_GRACE])
            .start()
    }

    /// Runs `runbook` from the current primary to the replica. Returns when Consul names the
    /// new primary and the proxy routes to it.
    async fn switchover(&mut self, runbook: Runbook, proxy: &Proxy) -> Steps {
        let (old, new) = self.ids;
        let begin = Instant::now();
        let mut steps = Steps::default();
        let mark = proxy.log.len();
        if runbook == Runbook::Sequenced {
            // 1. Hold: maintenance means "no primary, on purpose" to every proxy at once.
            self.consul
                .maintenance(old, true, "switchover to the replica")
                .await;
            proxy.wait_for_log_from(mark, "primary lost", T).await;
            // 2. Wait until the old primary has no application session left (every proxy
            //    drained it), bounded by drain_grace and a margin.
            steps.drained = self
                .pair
                .primary
                .wait_no_sessions_of("app", Duration::from_secs(4))
                .await;
            steps.drained_at = begin.elapsed();
        }
        // 3. read_only on A, B caught up and promoted.
        self.pair.switchover().await;
        steps.promoted_at = begin.elapsed();
        // 4. Consul names B; A's check fails (read-only); maintenance ends.
        let mark = proxy.log.len();
        self.consul.check_fail(&format!("service:{old}")).await;
        self.consul.check_pass(&format!("service:{new}")).await;
        if runbook == Runbook::Sequenced {
            self.consul.maintenance(old, false, "").await;
        }
        proxy.wait_for_log_from(mark, "primary changed", T).await;
        steps.routed_at = begin.elapsed();
        self.ids = (new, old);
        steps.begin = Some(begin);
        steps
    }

    /// Makes the old primary a replica of the new one again, for the next run.
    async fn reset(&self) {
        self.pair.repoint_old_primary_as_replica().await;
        self.pair.wait_replicated().await;
    }
}

#[derive(Debug, Default)]
struct Steps {
    begin: Option<Instant>,
    /// Whether the old primary's application sessions all ended before the deadline.
    drained: bool,
    drained_at: Duration,
    promoted_at: Duration,
    routed_at: Duration,
}

/// What one switchover cost the application.
#[derive(Debug, Clone, Default)]
struct Cost {
    read_only: usize,
    conn_lost: usize,
    ambiguous: usize,
    other: usize,
    connect: usize,
    revalidated: usize,
    lost_rows: usize,
    outage: Duration,
    /// From the start of the procedure until the proxy routed to the new primary.
    switched: Duration,
    acked: usize,
    steps: String,
}

impl Cost {
    fn statement_errors(&self) -> usize {
        self.read_only + self.conn_lost + self.ambiguous + self.other
    }
}

/// One measured switchover: writers of `style` through a proxy with `on_failover`.
async fn measure(cluster: &mut Cluster, on_failover: &str, runbook: Runbook, style: Style) -> Cost {
    // Every run writes (writer, seq) from seq 1: start from an empty table on both nodes.
    cluster
        .pair
        .primary
        .admin_exec("DELETE FROM app.writes")
        .await;
    cluster.pair.wait_replicated().await;
    let proxy = cluster.proxy(on_failover);
    proxy.wait_for_log("primary changed", T).await;
    let writers = Writers::start_styled(proxy.addr(), WRITERS, style);
    tokio::time::sleep(LOAD).await;
    let steps = cluster.switchover(runbook, &proxy).await;
    tokio::time::sleep(LOAD).await;
    let report = writers.stop().await;
    let begin = steps.begin.expect("began");
    let on_new = rows_on(cluster.pair.primary.addr()).await;
    let cost = cost_of(&report, begin, &on_new, &steps);
    drop(proxy);
    cluster.reset().await;
    cost
}

fn cost_of(
    report: &Report,
    begin: Instant,
    on_new: &std::collections::HashSet<(u32, u64)>,
    steps: &Steps,
) -> Cost {
    let other: Vec<String> = report
        .during(During::Statement)
        .filter(|e| matches!(e.kind, ErrorKind::Other | ErrorKind::ProxyRefused))
        .map(|e| e.message.clone())
        .collect();
    if !other.is_empty() {
        eprintln!("unexpected statement errors: {other:?}");
    }
    Cost {
        read_only: report.statement_errors(ErrorKind::ReadOnly),
        conn_lost: report.statement_errors(ErrorKind::ConnectionLost),
        ambiguous: report.statement_errors(ErrorKind::AlreadyApplied),
        other: other.len(),
        connect: report.during(During::Connect).count(),
        revalidated: report.during(During::Validate).count(),
        lost_rows: report
            .acked
            .iter()
            .filter(|(w, s, _)| !on_new.contains(&(*w, *s)))
            .count(),
        outage: report.longest_gap_after(begin),
        switched: steps.routed_at,
        acked: report.acked.len(),
        steps: format!(
            "drained {} at {:?}, promoted at {:?}, routed at {:?}",
            steps.drained, steps.drained_at, steps.promoted_at, steps.routed_at
        ),
    }
}

/// The goal of issue 15: with the sequenced switchover and `on_failover = idle`, a validating
/// pool under 8 writers sees no error and loses no row, and writes stop for at most a second.
/// The naive client's errors are reported (one per connection: its next statement after the
/// idle close).
#[tokio::test]
async fn sequenced_idle_switchover_costs_a_validating_pool_nothing() {
    let mut cluster = Cluster::start().await;
    let pool = measure(&mut cluster, "idle", Runbook::Sequenced, Style::Validating).await;
    eprintln!("validating pool: {pool:?}");
    assert_eq!(pool.statement_errors(), 0, "{pool:?}");
    assert_eq!(pool.connect, 0, "{pool:?}");
    assert_eq!(pool.lost_rows, 0, "{pool:?}");
    assert!(pool.outage <= Duration::from_secs(1), "{pool:?}");
    assert_eq!(
        pool.revalidated, WRITERS as usize,
        "each pooled connection was closed idle and replaced by the pool: {pool:?}"
    );

    let naive = measure(&mut cluster, "idle", Runbook::Sequenced, Style::Naive).await;
    eprintln!("naive client: {naive:?}");
    assert_eq!(naive.lost_rows, 0, "{naive:?}");
    assert_eq!(
        naive.read_only + naive.ambiguous + naive.other,
        0,
        "{naive:?}"
    );
    assert!(
        naive.conn_lost <= WRITERS as usize,
        "at most one error per connection, at its next statement: {naive:?}"
    );
    assert!(naive.outage <= Duration::from_secs(1), "{naive:?}");
}

/// Every policy × runbook × client style; prints the README table.
#[tokio::test]
async fn switchover_table() {
    let rounds = if long() { 3 } else { 1 };
    let mut cluster = Cluster::start().await;
    let mut table = String::from(
        "| runbook | on_failover | client | statement errors (read-only / conn lost / ambiguous / other) | connect errors | stale connections replaced | lost rows | write outage | switchover |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for runbook in [Runbook::Classic, Runbook::Sequenced] {
        for policy in ["close", "drain", "idle"] {
            for style in [Style::Validating, Style::Naive] {
                let mut costs = Vec::new();
                for _ in 0..rounds {
                    let cost = measure(&mut cluster, policy, runbook, style).await;
                    eprintln!(
                        "{runbook:?} {policy} {style:?}: {} acked, {}; {cost:?}",
                        cost.acked, cost.steps
                    );
                    // Nothing is ever lost in a planned switchover.
                    assert_eq!(
                        cost.lost_rows, 0,
                        "{runbook:?} {policy} {style:?}: {cost:?}"
                    );
                    costs.push(cost);
                }
                let _ = writeln!(
                    table,
                    "| {} | `{policy}` | {} | {} ({} / {} / {} / {}) | {} | {} | {} | {} | {} |",
                    match runbook {
                        Runbook::Classic => "classic",
                        Runbook::Sequenced => "sequenced",
                    },
                    match style {
                        Style::Validating => "validating pool",
                        Style::Naive => "naive",
                    },
                    span(&costs, |c| c.statement_errors() as f64, ""),
                    span(&costs, |c| c.read_only as f64, ""),
                    span(&costs, |c| c.conn_lost as f64, ""),
                    span(&costs, |c| c.ambiguous as f64, ""),
                    span(&costs, |c| c.other as f64, ""),
                    span(&costs, |c| c.connect as f64, ""),
                    span(&costs, |c| c.revalidated as f64, ""),
                    span(&costs, |c| c.lost_rows as f64, ""),
                    span(&costs, |c| c.outage.as_secs_f64() * 1000.0, " ms"),
                    span(&costs, |c| c.switched.as_secs_f64() * 1000.0, " ms"),
                );
            }
        }
    }
    eprintln!("\n{table}");
}

/// `a` or `a–b` over the rounds.
fn span(costs: &[Cost], f: impl Fn(&Cost) -> f64, unit: &str) -> String {
    let values: Vec<f64> = costs.iter().map(f).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if (max - min).abs() < 0.5 {
        format!("{min:.0}{unit}")
    } else {
        format!("{min:.0}–{max:.0}{unit}")
    }
}
