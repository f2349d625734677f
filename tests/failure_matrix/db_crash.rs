//! Failure 8 of the matrix. The primary crashes: a clean stop and a kill -9. Clients get what a
//! direct client gets, held clients reach the promoted replica.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::support::consul::TestConsul;
use crate::support::mariadb::{MariaDbPair, StopHow};
use crate::support::workload::{CREATE_TABLE, ErrorKind, Writers, rows_on};
use crate::{LOAD, STUCK_BOUND, T, connect, spawn_new_client, spawn_query, start_proxy, within};

/// A server-side error a stopping server sends (1053 shutdown in progress, 1927 connection
/// killed): a proper ERR packet, not a proxy fault.
fn is_shutdown_error(message: &str) -> bool {
    message.contains("1053") || message.contains("1927") || message.contains("shutdown")
}

async fn db_stops_then_clients_are_rerouted(how: StopHow) {
    let label = format!("{how:?}");
    let mut pair = MariaDbPair::start().await;
    pair.primary.admin_exec(CREATE_TABLE).await;
    pair.wait_replicated().await;
    let b_id = pair.replica.server_id();
    let b = pair.replica.addr();
    let consul = TestConsul::start().await;
    consul.register_pair(pair.primary.addr(), b).await;
    let proxy = start_proxy(&consul, &[]);
    const WRITERS: u32 = 4;
    let writers = Writers::start(proxy.addr(), WRITERS);
    let busy = spawn_query(connect(proxy.addr()).await, "SELECT SLEEP(60)");
    // The same query on a direct connection: what the server itself tells its clients.
    let direct = spawn_query(connect(pair.primary.addr()).await, "SELECT SLEEP(60)");
    let mut pooled = connect(proxy.addr()).await;
    tokio::time::sleep(LOAD).await;
    // Both long queries must be running on A when it stops (not still on their way).
    pair.primary
        .wait_for_running("SELECT SLEEP(60)", 2, T)
        .await;

    let stopping = Instant::now();
    match how {
        StopHow::Clean => pair.primary.stop_clean().await,
        _ => pair.primary.kill9(),
    }
    let stopped = stopping.elapsed();
    // Consul still names A: a new client is held (connection refused, retried).
    let held = spawn_new_client(proxy.addr());
    let (busy_result, busy_at) = within(STUCK_BOUND, "mid-query client", busy).await;
    let busy_error = busy_result.expect_err("the query cannot complete");
    let (direct_result, _) = within(STUCK_BOUND, "direct mid-query client", direct).await;
    let direct_error = direct_result.expect_err("the query cannot complete");
    // Through the proxy the client sees what a direct client sees (an ERR packet is relayed as
    // is; a closed connection is a closed connection).
    let kind = |e: &mysql_async::Error| match e {
        mysql_async::Error::Server(s) => format!("ERR {}", s.code),
        _ => "connection closed".to_owned(),
    };
    assert_eq!(
        kind(&busy_error),
        kind(&direct_error),
        "through the proxy: {busy_error}; direct: {direct_error}"
    );
    let busy_error = busy_error.to_string();
    let pooled_error = tokio::time::timeout(Duration::from_secs(2), pooled.query_drop("SELECT 1"))
        .await
        .expect("a pooled connection to a stopped server errors at once")
        .expect_err("the server is gone")
        .to_string();
    // The proxy counts the new client as held, with the writers' reconnects (held too).
    proxy
        .wait_for_metric(
            "consul_mysql_proxy_connections_held",
            f64::from(WRITERS + 1),
            T,
        )
        .await;
    assert!(!held.is_finished(), "a new client is held");

    pair.promote(how).await;
    consul.points_to_b().await;
    let promoted = Instant::now();
    let (held_result, held_at) = within(T, "held client", held).await;
    assert_eq!(
        held_result,
        Ok(b_id),
        "the held client reached the new primary"
    );
    tokio::time::sleep(LOAD).await;
    let report = writers.stop().await;

    let on_b = rows_on(b).await;
    assert!(
        report.acked_after(promoted) > 0,
        "writes resumed: {}",
        report.summary()
    );
    assert!(
        report
            .acked
            .iter()
            .filter(|w| w.2 > promoted)
            .all(|(w, s, _)| on_b.contains(&(*w, *s))),
        "writes after the promotion are on B"
    );
    let (shutdown_errors, other): (Vec<String>, Vec<String>) = report
        .other_errors()
        .into_iter()
        .partition(|m| is_shutdown_error(m));
    assert!(other.is_empty(), "unexpected client errors: {other:?}");
    assert_eq!(
        report.count(ErrorKind::ProxyRefused),
        0,
        "{}",
        report.summary()
    );
    eprintln!(
        "[8 DB {label}] stop took {stopped:?}; mid-query client: {:?} after the stop began: {busy_error:?} (direct client: {direct_error}); pooled: {pooled_error:?}; \
         writers: {} shutdown ERR packets; held client reached B {:?} after Consul flipped; write outage {:?}; {}",
        busy_at - stopping,
        shutdown_errors.len(),
        held_at - promoted,
        report.longest_gap_after(stopping),
        report.summary()
    );
}

#[tokio::test]
async fn db_clean_stop_gives_clients_an_error_and_reroutes_held_clients() {
    db_stops_then_clients_are_rerouted(StopHow::Clean).await;
}

#[tokio::test]
async fn db_kill9_gives_clients_an_error_and_reroutes_held_clients() {
    db_stops_then_clients_are_rerouted(StopHow::Kill9).await;
}
