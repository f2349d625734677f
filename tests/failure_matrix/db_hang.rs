//! Failure 5 of the matrix. The primary hangs: a server that accepts TCP but never speaks, and a
//! frozen (SIGSTOP) server; clients are held (or get an ERR packet after `hold_timeout`) until
//! Consul switches.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::backends::SilentBackend;
use crate::support::consul::TestConsul;
use crate::support::mariadb::{MariaDb, MariaDbPair};
use crate::support::proxy::ProxyArgs;
use crate::support::refusal::refused_within;
use crate::{
    T, connect, lo, spawn_new_client, spawn_query, start_proxy, start_proxy_short_keepalive, within,
};

/// Reads what a client gets from the proxy without answering anything (bounded).
async fn first_bytes(addr: SocketAddr, wait: Duration) -> Result<Vec<u8>, &'static str> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, c.read(&mut buf)).await {
        Err(_) => Err("nothing yet"),
        Ok(Ok(0)) => Err("bare disconnect"),
        Ok(Ok(n)) => Ok(buf[..n].to_vec()),
        Ok(Err(_)) => Err("reset"),
    }
}

#[tokio::test]
async fn hung_db_that_never_greets_holds_clients_until_consul_switches() {
    let silent = SilentBackend::start().await;
    let db = MariaDb::start(lo()).await;
    let consul = TestConsul::start().await;
    consul.register_pair(silent.addr, db.addr()).await;
    let proxy = start_proxy(&consul, &[]);
    let impatient = start_proxy(&consul, &["--hold-timeout", "1s"]);

    let mark = proxy.log.len();
    let hung = Instant::now();
    let clients: Vec<_> = (0..5).map(|_| spawn_new_client(proxy.addr())).collect();
    proxy
        .wait_for_log_from(mark, "no greeting within 500ms", T)
        .await;
    // Held: nothing received, no disconnect.
    assert_eq!(
        first_bytes(proxy.addr(), Duration::from_millis(1500)).await,
        Err("nothing yet"),
        "a client of a hung primary is held, never disconnected"
    );
    assert!(clients.iter().all(|c| !c.is_finished()));
    // Past hold_timeout: an ERR packet naming the hang, not a bare close.
    let (code, message) = refused_within(impatient.addr(), T).await;
    assert_eq!(code, 1105, "{message}");
    assert!(message.contains("no greeting within 500ms"), "{message}");

    let flipped = Instant::now();
    consul.points_to_b().await;
    let mut routed = Vec::new();
    for c in clients {
        let (r, at) = within(T, "held client", c).await;
        assert_eq!(
            r,
            Ok(db.server_id()),
            "held client routed to the real primary"
        );
        routed.push(at - flipped);
    }
    eprintln!(
        "[5 DB hang, silent listener] 5 clients held {:?} without a byte; with hold_timeout 1s: ERR {code} {message:?}; \
         routed to the real primary {:?}..{:?} after Consul switched",
        flipped - hung,
        routed.iter().min().unwrap(),
        routed.iter().max().unwrap()
    );
}

/// With the default timeouts (connect 2 s, greeting 5 s), a held client in the middle of a
/// connect attempt to the hung old primary notices the new primary only when that attempt
/// times out: measured 4.06 s after Consul switched (vs 0.2 s with the 500 ms greeting
/// timeout above).
#[tokio::test]
async fn held_clients_follow_a_switch_without_waiting_out_the_greeting_timeout() {
    let silent = SilentBackend::start().await;
    let db = MariaDb::start(lo()).await;
    let consul = TestConsul::start().await;
    consul.register_pair(silent.addr, db.addr()).await;
    let proxy = ProxyArgs::consul(consul.http_url())
        .with(&["--hold-timeout", "30s"])
        .start();
    let mark = proxy.log.len();
    let clients: Vec<_> = (0..3).map(|_| spawn_new_client(proxy.addr())).collect();
    proxy
        .wait_for_log_from(mark, "no greeting within 5s", T)
        .await;
    // Each client's first attempt timed out; wait until the hung server has accepted every
    // client's second connection: the clients are then in their second greeting wait.
    silent.wait_accepted(2 * clients.len(), T).await;
    let flipped = Instant::now();
    consul.points_to_b().await;
    let mut slowest = Duration::ZERO;
    for c in clients {
        let (r, at) = within(T, "held client", c).await;
        assert_eq!(r, Ok(db.server_id()));
        slowest = slowest.max(at - flipped);
    }
    eprintln!("[5 held clients, default timeouts] routed ≤ {slowest:?} after Consul switched");
    assert!(
        slowest < Duration::from_secs(1),
        "held clients waited out the greeting timeout: {slowest:?} after the switch"
    );
}

#[tokio::test]
async fn frozen_primary_hangs_open_connections_until_the_failover_closes_them() {
    let pair = MariaDbPair::start().await;
    let b_id = pair.replica.server_id();
    let consul = TestConsul::start().await;
    consul
        .register_pair(pair.primary.addr(), pair.replica.addr())
        .await;
    let proxy = start_proxy_short_keepalive(&consul);
    let open = connect(proxy.addr()).await;

    pair.primary.sigstop();
    let frozen = Instant::now();
    let stuck = spawn_query(open, "SELECT 1");
    let mark = proxy.log.len();
    let held = spawn_new_client(proxy.addr());
    proxy
        .wait_for_log_from(mark, "no greeting within 500ms", T)
        .await;
    // The frozen server's kernel still ACKs data and keepalive probes: neither the keepalive
    // nor the user timeout fires. Only the failover (or the application's timeout) ends it.
    // (An observation window longer than the user timeout: there is no event to wait for.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    if stuck.is_finished() {
        let ended = stuck.await;
        panic!(
            "a query on a frozen server just waits (the kernel acknowledges it); it ended after {:?}: {ended:?}\nproxy log:\n{}",
            frozen.elapsed(),
            proxy.log.text()
        );
    }
    assert!(!held.is_finished(), "a new client is held");

    // The failover tool promotes B (A stays frozen) and updates Consul.
    pair.replica
        .admin_exec("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
        .await;
    let flipped = Instant::now();
    consul.points_to_b().await;
    let (stuck_result, stuck_at) = within(T, "query on the frozen primary", stuck).await;
    assert!(stuck_result.is_err(), "closed by the failover");
    let (held_result, held_at) = within(T, "held client", held).await;
    assert_eq!(held_result, Ok(b_id));
    eprintln!(
        "[5 SIGSTOP] query on the frozen primary hung {:?} until the failover closed it {:?} after Consul flipped ({}); \
         held client reached B {:?} after the flip",
        stuck_at - frozen,
        stuck_at - flipped,
        stuck_result.unwrap_err(),
        held_at - flipped
    );
}
