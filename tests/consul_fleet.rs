//! A fleet of proxies against one Consul agent while a check flaps: how many requests each
//! discovery loop sends, and all of them together. Consul's blocking-query guidance asks
//! clients to rate-limit when answers churn (`website/content/api-docs/features/blocking.mdx`);
//! the proxy paces each loop with a token bucket (`src/control/sources/pacing.rs`: a burst of
//! 4, then one request per second).
//!
//! [`FLEET`] proxy processes (`--listen 127.0.0.1:0`, health discovery of `mysql`) watch one
//! agent; a `replica` instance of the same service flips between passing and critical every
//! 100–200 ms, so every flip is an index change that releases every blocked query. The test
//! counts each proxy's `discovery_requests_total` and, on the double, the requests the agent
//! received. `CMP_LONG=1` flaps for 30 s; the default run flaps for 5 s and asserts the bound
//! per loop. `CONSUL_MYSQL_PROXY_TEST_BIN=<binary>` measures another build (only reported).

mod support;

use std::time::{Duration, Instant};

use support::backends::EchoBackend;
use support::consul::{ServiceDef, TestConsul};
use support::proxy::{Proxy, ProxyArgs};

const FLEET: usize = 50;
const T: Duration = Duration::from_secs(60);
/// The token bucket's burst and refill (`src/control/sources/pacing.rs`).
const BURST: f64 = 4.0;
const PER_SECOND: f64 = 1.0;

/// Sum of every `discovery_requests_total` sample of one proxy.
async fn requests(proxy: &Proxy) -> f64 {
    proxy
        .metric_sum("consul_mysql_proxy_discovery_requests_total")
        .await
}

async fn wait_routed(proxy: &Proxy, addr: std::net::SocketAddr) {
    let start = Instant::now();
    loop {
        let (_, body) = proxy.admin_get("/status").await;
        let s: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if s["primary"]["address"] == addr.to_string().as_str() {
            return;
        }
        assert!(
            start.elapsed() < T,
            "proxy never routed to {addr}: {body}\n{}",
            proxy.log.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

#[tokio::test]
async fn a_fleet_of_discovery_loops_stays_paced_while_a_check_flaps() {
    let long = std::env::var("CMP_LONG").is_ok_and(|v| v == "1");
    let other_build = std::env::var("CONSUL_MYSQL_PROXY_TEST_BIN").ok();
    let flap_for = Duration::from_secs(if long { 30 } else { 5 });

    let consul = TestConsul::start().await;
    let primary = EchoBackend::start().await;
    for (id, tag, port, status) in [
        ("mysql-a", "primary", primary.addr.port(), "passing"),
        ("mysql-r", "replica", 1, "passing"),
    ] {
        consul
            .register(
                &ServiceDef::new("mysql")
                    .id(id)
                    .tags(&[tag])
                    .address("127.0.0.1")
                    .port(port)
                    .ttl_check(Duration::from_secs(600))
                    .status(status),
            )
            .await;
    }
    consul.wait_passing("mysql", Some("primary"), 1).await;

    let url = consul.http_url();
    let proxies: Vec<Proxy> = (0..FLEET)
        .map(|_| {
            ProxyArgs::consul(url.as_str())
                .with(&["--log-level", "info"])
                .start()
        })
        .collect();
    for p in &proxies {
        wait_routed(p, primary.addr).await;
    }
    // Every loop has answered at least once, so each is now in a blocking query.
    for p in &proxies {
        p.wait_for_metric(
            "consul_mysql_proxy_discovery_requests_total{result=\"ok\"}",
            1.0,
            T,
        )
        .await;
    }

    // Each loop's own window: from its reading before the flapping to its reading after.
    let mut before = Vec::with_capacity(FLEET);
    for p in &proxies {
        before.push((requests(p).await, Instant::now()));
    }
    let agent_before = consul
        .faults()
        .map(|f| f.request_count("/v1/health/service/mysql"));
    let started = Instant::now();
    let mut flips = 0u32;
    while started.elapsed() < flap_for {
        if flips.is_multiple_of(2) {
            consul.check_fail("service:mysql-r").await;
        } else {
            consul.check_pass("service:mysql-r").await;
        }
        flips += 1;
        // The workload: one flip every 100–200 ms.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..=200))).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let agent_after = consul
        .faults()
        .map(|f| f.request_count("/v1/health/service/mysql"));
    let mut per_loop = Vec::with_capacity(FLEET);
    let mut windows = Vec::with_capacity(FLEET);
    for (p, (b, at)) in proxies.iter().zip(&before) {
        per_loop.push(requests(p).await - b);
        windows.push(at.elapsed().as_secs_f64());
    }
    let total: f64 = per_loop.iter().sum();
    // Requests happen only while answers churn (otherwise every loop sits in one blocking
    // query), so rates are per second of flapping.
    let mut rates: Vec<f64> = per_loop.iter().map(|n| n / elapsed).collect();
    rates.sort_by(f64::total_cmp);
    let build = other_build.as_deref().unwrap_or("this build");
    eprintln!(
        "fleet ({build}): {FLEET} loops, {flips} flips in {elapsed:.1} s ({:.1} flips/s)",
        f64::from(flips) / elapsed
    );
    eprintln!(
        "  per loop: min {:.2} / median {:.2} / max {:.2} req/s ({:.0}..{:.0} requests)",
        rates[0],
        median(&rates),
        rates[FLEET - 1],
        per_loop.iter().cloned().fold(f64::INFINITY, f64::min),
        per_loop.iter().cloned().fold(0.0, f64::max),
    );
    let after_burst = (median(&rates) * elapsed - BURST - 1.0).max(0.0) / elapsed;
    eprintln!("  per loop after the burst (median): {after_burst:.2} req/s");
    eprintln!(
        "  fleet total (proxies' own count): {total:.0} requests, {:.1} req/s",
        total / elapsed
    );
    if let (Some(b), Some(a)) = (agent_before, agent_after) {
        eprintln!(
            "  at the agent: {} requests, {:.1} req/s",
            a - b,
            (a - b) as f64 / elapsed
        );
    }

    // Every loop kept following the churn (the measurement is not of idle loops) ...
    for (i, n) in per_loop.iter().enumerate() {
        assert!(
            *n >= (elapsed / 2.0).floor(),
            "loop {i} sent only {n} requests in {elapsed:.1} s"
        );
    }
    if other_build.is_some() {
        return;
    }
    // ... and none sent more than the bucket allows: the burst, then one per second (plus the
    // request that was already waiting when the flapping began).
    for (i, (n, w)) in per_loop.iter().zip(&windows).enumerate() {
        let allowed = BURST + w * PER_SECOND + 1.0;
        assert!(
            *n <= allowed,
            "loop {i} sent {n} requests in {w:.1} s (allowed {allowed:.1})"
        );
    }
}
