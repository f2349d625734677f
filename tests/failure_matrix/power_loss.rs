//! Failure 4 of the matrix. The primary's host loses power: the process is gone and no RST or FIN
//! ever arrives; old connections end in bounded time, held clients reach the promoted replica.

use std::time::{Duration, Instant};

use crate::support::consul::TestConsul;
use crate::support::mariadb::StopHow;
use crate::support::netns::NetNs;
use crate::support::workload::{CREATE_TABLE, ErrorKind, Writers, rows_on};
use crate::{
    LOAD, STUCK_BOUND, T, pair_with_primary_in, raw_idle_client, spawn_new_client,
    spawn_wait_closed, start_proxy_short_keepalive, within,
};

#[tokio::test]
async fn primary_power_loss_errors_old_connections_in_bounded_time_and_reroutes_held_clients() {
    let ns = NetNs::create();
    let mut pair = pair_with_primary_in(&ns).await;
    pair.primary.admin_exec(CREATE_TABLE).await;
    pair.wait_replicated().await;
    let b_id = pair.replica.server_id();
    let b = pair.replica.addr();
    let consul = TestConsul::start().await;
    consul.register_pair(pair.primary.addr(), b).await;
    let proxy = start_proxy_short_keepalive(&consul);
    let writers = Writers::start(proxy.addr(), 4);
    let idle = spawn_wait_closed(raw_idle_client(proxy.addr()).await, T);
    tokio::time::sleep(LOAD).await;

    // Power loss: the host is gone at once — process dead, and no RST or FIN ever arrives.
    ns.blackhole(true);
    pair.primary.kill9();
    let lost = Instant::now();
    let held: Vec<_> = (0..3).map(|_| spawn_new_client(proxy.addr())).collect();

    // Old connections must not stay on the dead address: keepalive / user timeout end them,
    // well before the failover tool acts.
    let idle_after = idle.await.unwrap().expect("idle connection closed") - lost;
    assert!(
        idle_after < STUCK_BOUND,
        "idle connection closed after {idle_after:?}"
    );
    // The failover tool's detection time: promotion comes after the timeouts could fire.
    let detection = Duration::from_secs(6);
    tokio::time::sleep_until((lost + detection).into()).await;
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "new clients are held"
    );
    pair.promote(StopHow::Kill9).await;
    consul.points_to_b().await;
    let promoted = Instant::now();
    let mut held_after = Duration::ZERO;
    for h in held {
        let (r, at) = within(T, "held client", h).await;
        assert_eq!(r, Ok(b_id), "a held client reached the new primary");
        held_after = held_after.max(at - promoted);
    }
    // Held clients retried A with a growing delay (≤ 1 s), not in a hot loop.
    let connect_errors = proxy
        .metric_sum("consul_mysql_proxy_backend_connect_errors_total")
        .await;
    assert!(
        connect_errors <= 7.0 * (detection.as_secs_f64() + 4.0),
        "{connect_errors} failed connects to A for 7 waiting clients in {detection:?}"
    );
    tokio::time::sleep(LOAD).await;
    let report = writers.stop().await;

    // Every writer's in-flight insert failed before the promotion (no writer stuck on A).
    let before_promotion: Vec<Duration> = report
        .errors
        .iter()
        .filter(|e| e.at > lost && e.at < promoted && e.kind == ErrorKind::ConnectionLost)
        .map(|e| e.at - lost)
        .collect();
    assert!(
        before_promotion.len() >= 4,
        "each of the 4 writers lost its connection before the promotion: {before_promotion:?}; {}",
        report.summary()
    );
    let slowest = before_promotion.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < STUCK_BOUND,
        "a writer's error came after {slowest:?}"
    );
    assert!(
        report.acked_after(promoted) > 0,
        "writes resumed: {}",
        report.summary()
    );
    let on_b = rows_on(b).await;
    assert!(
        report
            .acked
            .iter()
            .filter(|w| w.2 > promoted)
            .all(|(w, s, _)| on_b.contains(&(*w, *s))),
        "writes after the promotion are on B"
    );
    assert!(
        report.other_errors().is_empty(),
        "{:?}",
        report.other_errors()
    );
    assert_eq!(
        report.count(ErrorKind::ProxyRefused),
        0,
        "{}",
        report.summary()
    );
    eprintln!(
        "[4 power loss] idle connection closed {idle_after:?} after the loss; writers' in-flight inserts failed after {:?}..{slowest:?}; \
         held clients (3 new + 4 writers reconnecting; {connect_errors} failed connects to A meanwhile) reached B ≤ {held_after:?} after the promotion ({detection:?} detection); write outage {:?}; {}",
        before_promotion.iter().min().copied().unwrap_or_default(),
        report.longest_gap_after(lost),
        report.summary()
    );
}
