//! The classic HA failure matrix, as an application behind the proxy sees it: one module per
//! failure, in the order of the README's "Failure behaviour" table.
//!
//! | module | failure |
//! |---|---|
//! | [`consul_agent`] | the Consul agent crashes and is restarted (with and without its state) |
//! | [`consul_link`] | the proxy's link to Consul fails: 500/403 answers, slow answers, silence, an index reset |
//! | [`db_link`] | the proxy's link to the primary is cut (packets dropped silently) |
//! | [`power_loss`] | the primary's host loses power (process gone, no RST ever) |
//! | [`db_hang`] | the primary hangs: a listener that never greets, a frozen (SIGSTOP) server |
//! | [`cpu`] | the proxy's CPUs are saturated |
//! | [`degraded_network`] | the link to the backend has delay and loss |
//! | [`db_crash`] | the primary stops cleanly or is killed (kill -9) |
//! | [`flapping`] | the primary's health check flaps, with and without a passing standby |
//! | [`consul_node_side`] | Consul faults on the DB node: its agent restarts, crashes or is cut off, its check loses the DB, a node warning, maintenance, a demotion without replacement, kill -9 with a late promotion |
//!
//! Every scenario runs real MariaDB, the Consul double and the proxy binary, asserts what the
//! clients see (errors, holds, routing, rows) and prints its timings (`eprintln!`) for the
//! "Failure behaviour" table. Network failures put a DB host in its own network namespace
//! behind a link the test can cut or degrade (`support::netns`: packets are dropped silently,
//! as by a pulled cable — the kernel has no `netem`, the link emulates it).
//!
//! Each scenario is bounded (the CI default run of this binary takes about a minute and a half
//! on 2 cores); `CMP_LONG=1` runs the long variants (longer outages, 30 s of flapping, a 10 MiB
//! blob over the degraded link, longer saturation). This file holds what the scenarios share:
//! the proxy's settings and the client probes.

#[path = "../support/mod.rs"]
mod support;

mod consul_agent;
mod consul_link;
mod consul_node_side;
mod cpu;
mod db_crash;
mod db_hang;
mod db_link;
mod degraded_network;
mod flapping;
mod power_loss;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::consul::TestConsul;
use support::mariadb::{MariaDbPair, PairOptions, app_opts};
use support::netns::NetNs;
use support::proxy::{Proxy, ProxyArgs};
use support::workload::{Report, rows_on};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Upper bound for any single wait.
const T: Duration = Duration::from_secs(30);
/// How long writers run before and after an event.
const LOAD: Duration = Duration::from_millis(1200);
/// The backend keepalive and user timeout the network scenarios use (defaults: 10 s / 30 s).
const KEEPALIVE: &str = "1s";
const USER_TIMEOUT: &str = "3s";
/// What "does not hang" means for a client on a dead or unreachable primary.
const STUCK_BOUND: Duration = Duration::from_secs(10);

fn long() -> bool {
    std::env::var("CMP_LONG").is_ok_and(|v| v == "1")
}

/// `ci` by default, `long` under `CMP_LONG=1`.
fn pick(ci: Duration, long_variant: Duration) -> Duration {
    if long() { long_variant } else { ci }
}

fn lo() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

// ---------------------------------------------------------------------------------------------
// the proxy and the DB hosts

/// The proxy with the settings every scenario shares: clients are held up to 20 s, a server
/// must greet within 500 ms and accept TCP within 1 s.
fn start_proxy(consul: &TestConsul, extra: &[&str]) -> Proxy {
    proxy_args(consul).with(extra).start()
}

/// The shared settings, to add to before starting.
fn proxy_args(consul: &TestConsul) -> ProxyArgs {
    ProxyArgs::consul(consul.http_url()).with(&[
        "--hold-timeout",
        "20s",
        "--backend-greeting-timeout",
        "500ms",
        "--connect-timeout",
        "1s",
    ])
}

/// Same, with the short backend keepalive / user timeout of the network scenarios.
fn start_proxy_short_keepalive(consul: &TestConsul) -> Proxy {
    start_proxy(
        consul,
        &[
            "--backend-keepalive",
            KEEPALIVE,
            "--backend-user-timeout",
            USER_TIMEOUT,
        ],
    )
}

/// A MariaDB pair whose primary runs on its own host behind `ns`'s link (which the test can cut
/// or degrade), the replica on loopback.
async fn pair_with_primary_in(ns: &NetNs) -> MariaDbPair {
    MariaDbPair::start_with_netns(
        PairOptions {
            primary_ip: ns.ip(),
            replica_ip: lo(),
        },
        Some(ns.name()),
        None,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// clients

/// Which server answers a new connection through `addr` (`@@server_id`).
async fn try_server_id_via(addr: SocketAddr) -> Result<u32, String> {
    let mut conn = mysql_async::Conn::new(app_opts(addr))
        .await
        .map_err(|e| format!("connect via {addr}: {e}"))?;
    let id: Option<u32> = conn
        .query_first("SELECT @@server_id")
        .await
        .map_err(|e| format!("SELECT @@server_id via {addr}: {e}"))?;
    conn.disconnect().await.ok();
    id.ok_or_else(|| "no row".to_owned())
}

async fn server_id_via(addr: SocketAddr) -> u32 {
    try_server_id_via(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A new client through the proxy, in the background: `(server_id, when it got it)`.
fn spawn_new_client(addr: SocketAddr) -> JoinHandle<(Result<u32, String>, Instant)> {
    tokio::spawn(async move { (try_server_id_via(addr).await, Instant::now()) })
}

/// Connects through the proxy until `server_id` answers; returns how long that took.
async fn wait_routed_to(proxy: &Proxy, server_id: u32) -> Duration {
    let start = Instant::now();
    loop {
        if try_server_id_via(proxy.addr()).await.ok() == Some(server_id) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < T,
            "never routed to server {server_id}; log:\n{}",
            proxy.log.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(addr: SocketAddr) -> mysql_async::Conn {
    mysql_async::Conn::new(app_opts(addr))
        .await
        .unwrap_or_else(|e| panic!("connect via {addr}: {e}"))
}

/// Runs `sql` on `conn` in the background: `(result, when it returned)`.
fn spawn_query(
    mut conn: mysql_async::Conn,
    sql: &'static str,
) -> JoinHandle<(Result<(), mysql_async::Error>, Instant)> {
    tokio::spawn(async move {
        let r = conn.query_drop(sql).await;
        (r, Instant::now())
    })
}

/// Awaits a background client for at most `limit`; panics with `what` if it is still running.
async fn within<R>(limit: Duration, what: &str, handle: JoinHandle<R>) -> R {
    match tokio::time::timeout(limit, handle).await {
        Ok(r) => r.expect("client task"),
        Err(_) => panic!("{what}: still waiting after {limit:?} (hung)"),
    }
}

/// A raw TCP client through the proxy that has received the server's first bytes (the
/// greeting) and then stays silent, like an idle pooled connection.
async fn raw_idle_client(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 4];
    tokio::time::timeout(T, c.read_exact(&mut greeting))
        .await
        .expect("greeting in time")
        .expect("greeting");
    c
}

/// Waits (bounded by `limit`) until the proxy closes `c` (EOF or reset); returns when.
fn spawn_wait_closed(mut c: TcpStream, limit: Duration) -> JoinHandle<Option<Instant>> {
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
                Ok(Ok(_)) => {}
            }
        }
    })
}

/// How many log lines after line `from` contain `needle`.
fn count_lines(proxy: &Proxy, from: usize, needle: &str) -> usize {
    proxy
        .log
        .text()
        .lines()
        .skip(from)
        .filter(|l| l.contains(needle))
        .count()
}

/// `p` percentile (0..=100) of `samples`.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut v = samples.to_vec();
    v.sort();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs verified SELECTs on one connection through `addr` for `run` (at least `min` of them):
/// each returns a number and a string the test can check. Returns the latencies.
async fn select_latencies(addr: SocketAddr, run: Duration, min: usize) -> Vec<Duration> {
    let mut conn = connect(addr).await;
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < run || out.len() < min {
        let x = fastrand::u64(..1 << 60);
        let n = fastrand::usize(0..2048);
        let t = Instant::now();
        let row: Option<(u64, String)> = conn
            .query_first(format!("SELECT {x} + 1, REPEAT('x', {n})"))
            .await
            .unwrap_or_else(|e| panic!("SELECT through {addr}: {e}"));
        out.push(t.elapsed());
        let (y, s) = row.expect("one row");
        assert_eq!(y, x + 1, "wrong result through {addr}");
        assert_eq!(s.len(), n, "wrong string length through {addr}");
        assert!(
            s.bytes().all(|b| b == b'x'),
            "corrupt string through {addr}"
        );
    }
    conn.disconnect().await.ok();
    out
}

// ---------------------------------------------------------------------------------------------
// checks

/// No client error, and every acknowledged insert is on the server.
async fn all_acked_present(report: &Report, db: SocketAddr, phase: &str) {
    assert!(report.errors.is_empty(), "{phase}: {:?}", report.errors);
    assert!(!report.acked.is_empty(), "{phase}: no write went through");
    let rows = rows_on(db).await;
    let missing: Vec<_> = report
        .acked
        .iter()
        .filter(|(w, s, _)| !rows.contains(&(*w, *s)))
        .collect();
    assert!(
        missing.is_empty(),
        "{phase}: acknowledged writes missing: {missing:?}"
    );
}
