//! Failure 2 of the matrix. The proxy's link to Consul fails: error answers (500 "No cluster
//! leader", 403), slow answers, silence, and an index going backwards; routing continues, requests
//! back off.

use std::time::{Duration, Instant};

use crate::support::consul::TestConsul;
use crate::support::mariadb::MariaDbPair;
use crate::support::proxy::Proxy;
use crate::support::workload;
use crate::{T, pick, server_id_via, start_proxy, try_server_id_via, wait_routed_to};

/// Samples the double's request counter for `path` every 20 ms for `run`; returns the times at
/// which new requests were seen.
async fn request_times(faults: &consul_double::Faults, path: &str, run: Duration) -> Vec<Instant> {
    let start = Instant::now();
    let mut last = faults.request_count(path);
    let mut times = Vec::new();
    while start.elapsed() < run {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = faults.request_count(path);
        for _ in last..now {
            times.push(Instant::now());
        }
        last = now;
    }
    times
}

/// Connects through the proxy every 250 ms for `run`; every client must reach `server_id`.
async fn keeps_routing_to(proxy: &Proxy, server_id: u32, run: Duration, phase: &str) -> usize {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < run {
        assert_eq!(
            try_server_id_via(proxy.addr()).await,
            Ok(server_id),
            "{phase}: a new client reaches the last known primary"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    n
}

#[tokio::test]
async fn consul_link_failures_keep_routing_back_off_and_recover() {
    let mut pair = MariaDbPair::start().await;
    let (a_id, b_id) = (pair.primary.server_id(), pair.replica.server_id());
    let consul = TestConsul::start().await;
    let Some(faults) = consul.faults_or_skip("consul_link_failures_keep_routing") else {
        return;
    };
    consul
        .register_pair(pair.primary.addr(), pair.replica.addr())
        .await;
    let proxy = start_proxy(&consul, &["--consul-wait", "2s"]);
    assert_eq!(server_id_via(proxy.addr()).await, a_id);
    let path = "/v1/health/service/mysql";
    let errors_metric = "consul_mysql_proxy_discovery_requests_total{result=\"error\"}";
    let last_success_metric = "consul_mysql_proxy_discovery_last_success_timestamp_seconds";

    // Errors: 500 "No cluster leader", then 403: the last primary is kept, requests back off.
    let error_phase = pick(Duration::from_secs(3), Duration::from_secs(20));
    let errors_before = proxy.metric(errors_metric).await.unwrap_or(0.0);
    let success_before = proxy.metric(last_success_metric).await;
    let before = faults.request_count(path);
    faults.fail_with(Some((500, "No cluster leader".into())));
    let routed = tokio::spawn({
        let addr = proxy.addr();
        async move {
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < Duration::from_secs(3) {
                assert_eq!(
                    try_server_id_via(addr).await,
                    Ok(a_id),
                    "500s: last primary kept"
                );
                n += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            n
        }
    });
    let mut times = request_times(faults, path, error_phase).await;
    let routed_500 = routed.await.unwrap();
    faults.fail_with(Some((403, "Permission denied".into())));
    times.extend(request_times(faults, path, Duration::from_secs(2)).await);
    // The end of the watch counts as a gap's end too: with full jitter the retry due after
    // the last request seen can be the longest wait (seconds), and it is still a backoff.
    times.push(Instant::now());
    let error_secs = error_phase.as_secs_f64() + 2.0;
    let requests = faults.request_count(path) - before;
    let routed_403 = keeps_routing_to(&proxy, a_id, Duration::from_millis(500), "403").await;
    let gaps = workload::gaps(times);
    let longest_gap = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        (requests as f64) <= 2.0 * error_secs + 4.0,
        "hot loop: {requests} Consul requests in {error_secs:.1}s of errors"
    );
    assert!(
        longest_gap >= Duration::from_millis(500),
        "no backoff visible: request gaps {gaps:?}"
    );
    // The same backoff, as the proxy's metrics show it: one error per request the double saw
    // (± the one in flight at each phase boundary), and no usable answer meanwhile.
    let errors_counted = proxy.metric(errors_metric).await.unwrap_or(0.0) - errors_before;
    assert!(
        errors_counted >= 1.0 && errors_counted <= requests as f64 + 1.0,
        "/metrics counts {errors_counted} discovery errors for {requests} requests"
    );
    let success_after = proxy.metric(last_success_metric).await;
    assert!(
        success_before.is_some() && success_after.unwrap_or(0.0) - success_before.unwrap() < 2.5,
        "no usable answer during the errors: last success {success_before:?} -> {success_after:?}"
    );

    // Slow answers (a congested link): every answer takes 1.5 s; routing continues.
    faults.fail_with(None);
    faults.latency(Duration::from_millis(1500));
    let routed_slow = keeps_routing_to(&proxy, a_id, Duration::from_secs(3), "slow Consul").await;
    faults.latency(Duration::ZERO);

    // Silence (requests and answers held): the link is gone for a while.
    let silence = pick(Duration::from_secs(3), Duration::from_secs(20));
    faults.pause();
    let routed_paused = keeps_routing_to(&proxy, a_id, silence, "Consul silent").await;
    faults.resume();
    // And a snapshot restore on top: the index goes backwards.
    let mark = proxy.log.len();
    faults.reset_index();
    proxy.wait_for_log_from(mark, "index reset", T).await;
    let recovered = proxy.wait_for_log("discovery recovered", T).await;

    // Consul works again: a real change is followed.
    pair.switchover().await;
    let changed = Instant::now();
    consul.points_to_b().await;
    wait_routed_to(&proxy, b_id).await;
    let switch = changed.elapsed();
    eprintln!(
        "[2 consul link] {requests} Consul requests in {error_secs:.1}s of 500/403 (/metrics: {errors_counted} errors; longest gap {longest_gap:?}; gaps {gaps:?}); \
         new clients routed to A: {routed_500} during 500s, {routed_403} during 403s, {routed_slow} with 1.5 s answers, {routed_paused} during {silence:?} of silence; \
         {recovered:?}; failover after recovery routed in {switch:?}"
    );
}
