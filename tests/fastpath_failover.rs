//! Failover through the kernel fast path, against the relay in the same run: 8 writers (this
//! test process, moved into a cgroup of its own, so every connect it makes to the proxy's
//! address is rewritten to the primary) through a planned switchover and a kill -9 +
//! promotion, once with `--fast-path connect` and once relayed, over semi-synchronous
//! replication. Asserts that every acknowledged write is on the new primary after either event
//! (semi-sync makes that a property of the whole path, so a write the proxy acknowledged to
//! the wrong server, or lost, would show), that writes resume on it, that no more writes
//! fail through the fast path than through the relay (after a kill -9, no more failed
//! attempts either: with `verify_writable` the fast path's liveness session sees the kill
//! before any reconnect reaches the dead server), and that the write outage through the
//! fast path is no worse than the relay's (within a margin for scheduling noise); prints both,
//! with every failed attempt by kind (root only: BPF programs, cgroup writes, SOCK_DESTROY).
//!
//! Its own test binary: moving the process into a cgroup concerns every test in the binary.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use consul_mysql_proxy::data::fastpath::cgroup2_root;
use support::consul::TestConsul;
use support::fastpath::{TestCgroup, is_root};
use support::mariadb::StopHow;
use support::proxy::{Proxy, ProxyArgs};
use support::workload::{ErrorKind, Report, Writers, pair_in_consul, rows_on};

const LOAD: Duration = Duration::from_millis(1500);
/// Scheduling noise allowed between the two outages on a shared 2-core machine.
const MARGIN: Duration = Duration::from_millis(1000);
/// How long the old primary is read-only before Consul names the new one, in a planned
/// switchover. Fixed, so both runs face the same window: the promotion itself takes 15–40 ms
/// here and varies from run to run, and that variance — not the proxy — decided whether a
/// writer's retry (20 ms after its error) still met the read-only server.
const READ_ONLY_WINDOW: Duration = Duration::from_millis(100);

/// This process's own cgroup (created once; never removed while the process lives: the next
/// run's sweep removes it once this pid is gone).
fn own_cgroup() -> &'static PathBuf {
    static CGROUP: OnceLock<PathBuf> = OnceLock::new();
    CGROUP.get_or_init(|| {
        let cg = TestCgroup::create(&cgroup2_root().expect("cgroup v2 mount"));
        let path = cg.path.clone();
        // Dropping it would kill what is inside: this process.
        std::mem::forget(cg);
        std::fs::write(path.join("cgroup.procs"), std::process::id().to_string())
            .unwrap_or_else(|e| panic!("join {}: {e}", path.display()));
        path
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Event {
    Switchover,
    Kill9,
}

struct Outcome {
    outage: Duration,
    report: Report,
    lost: usize,
    redirected: f64,
}

/// One run: a fresh pair in Consul, the proxy (fast path or relay), 8 writers, `event`.
async fn run(event: Event, fast: bool) -> Outcome {
    let (mut pair, consul) = pair_in_consul().await;
    // An acknowledged write must survive the kill too: the replica has it before the ack.
    pair.enable_semi_sync().await;
    let proxy = start_proxy(&consul, fast);
    if fast {
        // The writers' first connects must find the route pointed at A (before it, they reach
        // the listener and stay relayed for their life).
        let a = pair.primary.addr();
        proxy
            .wait_for_log(&format!("new=Some({a})"), Duration::from_secs(10))
            .await;
    }
    let b = pair.replica.addr();
    let writers = Writers::start(proxy.addr(), 8);
    tokio::time::sleep(LOAD).await;
    let begin = Instant::now();
    match event {
        Event::Switchover => {
            pair.switchover().await;
            // The scenario's read-only window, the same in both runs (see READ_ONLY_WINDOW).
            tokio::time::sleep_until((begin + READ_ONLY_WINDOW).into()).await;
        }
        Event::Kill9 => pair.promote(StopHow::Kill9).await,
    }
    consul.points_to_b().await;
    let promoted = Instant::now();
    tokio::time::sleep(LOAD).await;
    let report = writers.stop().await;
    let on_b = rows_on(b).await;
    assert!(
        report.acked_after(promoted) > 0,
        "{event:?} fast={fast}: writes resumed on B: {}",
        report.summary()
    );
    assert!(
        report.all_after_in(promoted, &on_b),
        "{event:?} fast={fast}: writes after the promotion are on B"
    );
    let lost = report.missing_from(&on_b);
    let redirected = proxy
        .metric("consul_mysql_proxy_fast_path_redirected_total")
        .await
        .unwrap_or(0.0);
    drop(pair);
    Outcome {
        outage: report.longest_gap_after(begin),
        report,
        lost,
        redirected,
    }
}

/// Both runs fence (`verify_writable`, as the README advises with the fast path): with a
/// monitor user the fast path also keeps a liveness session on the primary.
fn start_proxy(consul: &TestConsul, fast: bool) -> Proxy {
    let mut args = ProxyArgs::consul(consul.http_url()).with(&[
        "--hold-timeout",
        "20s",
        "--backend-greeting-timeout",
        "500ms",
        "--verify-writable",
        "--monitor-user",
        "admin",
    ]);
    if fast {
        let dir = own_cgroup().display().to_string();
        args = args.with(&["--fast-path", "connect", "--fast-path-cgroup", &dir]);
    }
    args.start_with_env(&[("CONSUL_MYSQL_PROXY_MONITOR_PASSWORD", "admin")])
}

async fn compare(event: Event) {
    if !is_root() {
        eprintln!("skipping {event:?}: needs root");
        return;
    }
    own_cgroup();
    let relay = run(event, false).await;
    let fast = run(event, true).await;
    assert!(
        fast.redirected >= 8.0,
        "the writers' connects went through the fast path ({} redirected)",
        fast.redirected
    );
    assert_eq!(relay.redirected, 0.0);
    for (name, o) in [("relay", &relay), ("fast path", &fast)] {
        assert_eq!(o.lost, 0, "{event:?}, {name}: acknowledged writes lost");
    }
    for (name, o) in [("relay", &relay), ("fast path", &fast)] {
        let other = o.report.other_errors();
        assert!(
            other.is_empty(),
            "{name}: unexpected client errors: {other:?}"
        );
    }
    // Each writer retries its failed write until it is acknowledged; the number of retries is
    // its own retry pace over the window (a direct connect retries faster than a relayed one),
    // the number of writes that failed is what the proxy decides.
    assert!(
        fast.report.failed_writes() <= relay.report.failed_writes(),
        "{event:?}: more writes failed through the fast path ({}) than through the relay ({})",
        fast.report.failed_writes(),
        relay.report.failed_writes()
    );
    if event == Event::Kill9 {
        // The liveness session breaks with the kill, so no reconnect reaches the dead server:
        // every failed attempt is one the kill itself caused, as through the relay. (A `1062
        // duplicate` answer is not counted: it tells a writer whose ack the kill lost that its
        // write is on the new primary, and how many commits the kill catches in flight is
        // chance, on either path.)
        let failed =
            |o: &Outcome| o.report.errors.len() - o.report.count(ErrorKind::AlreadyApplied);
        assert!(
            failed(&fast) <= failed(&relay),
            "kill -9: more failed attempts through the fast path ({}) than through the relay ({})",
            failed(&fast),
            failed(&relay)
        );
    }
    assert!(
        fast.outage <= relay.outage + MARGIN,
        "{event:?}: fast-path outage {:?} worse than the relay's {:?}",
        fast.outage,
        relay.outage
    );
    let errors = |o: &Outcome| {
        format!(
            "{} writes failed; attempts: {} connection lost, {} read-only, {} proxy refused, {} already applied",
            o.report.failed_writes(),
            o.report.count(ErrorKind::ConnectionLost),
            o.report.count(ErrorKind::ReadOnly),
            o.report.count(ErrorKind::ProxyRefused),
            o.report.count(ErrorKind::AlreadyApplied)
        )
    };
    eprintln!(
        "{event:?}: write outage relay {:?} / fast path {:?}; errors relay [{}] / fast path [{}]; acknowledged but lost: relay {} / fast path {}; fast path redirected {} connects",
        relay.outage,
        fast.outage,
        errors(&relay),
        errors(&fast),
        relay.lost,
        fast.lost,
        fast.redirected
    );
}

#[tokio::test]
async fn planned_switchover_through_the_fast_path_is_no_worse_than_the_relay() {
    compare(Event::Switchover).await;
}

#[tokio::test]
async fn kill9_and_promotion_through_the_fast_path_is_no_worse_than_the_relay() {
    compare(Event::Kill9).await;
}
