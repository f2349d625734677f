//! Failure 3 of the matrix. The proxy's link to the primary is cut (packets dropped silently, the
//! primary still runs): stuck clients get an error within the user timeout, new clients are held
//! and follow the failover.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::support::consul::TestConsul;
use crate::support::netns::{Dir, NetNs};
use crate::{
    KEEPALIVE, STUCK_BOUND, T, USER_TIMEOUT, connect, pair_with_primary_in, raw_idle_client,
    server_id_via, spawn_new_client, spawn_query, spawn_wait_closed, start_proxy_short_keepalive,
    within,
};

#[tokio::test]
async fn db_link_loss_errors_stuck_clients_within_the_user_timeout_and_new_clients_fail_over() {
    let ns = NetNs::create();
    let pair = pair_with_primary_in(&ns).await;
    let (a_id, b_id) = (pair.primary.server_id(), pair.replica.server_id());
    let consul = TestConsul::start().await;
    consul
        .register_pair(pair.primary.addr(), pair.replica.addr())
        .await;
    let proxy = start_proxy_short_keepalive(&consul);
    assert_eq!(server_id_via(proxy.addr()).await, a_id);

    // Clients on A: one in the middle of a long query, one idle (raw, past the greeting), one
    // idle pooled connection.
    let busy = spawn_query(connect(proxy.addr()).await, "SELECT SLEEP(60)");
    let idle = spawn_wait_closed(raw_idle_client(proxy.addr()).await, T);
    let mut pooled = connect(proxy.addr()).await;
    // The cut must catch the long query running on A, not still on its way there.
    pair.primary
        .wait_for_running("SELECT SLEEP(60)", 1, T)
        .await;

    let cut = Instant::now();
    ns.blackhole(true);
    // A new client during the cut: A does not answer SYNs; the client is held, not failed.
    let held = spawn_new_client(proxy.addr());

    let (busy_result, busy_at) = within(T, "mid-query client on a cut link", busy).await;
    let busy_after = busy_at - cut;
    assert!(busy_result.is_err(), "the query cannot have completed");
    assert!(
        busy_after < STUCK_BOUND,
        "mid-query client got its error only after {busy_after:?}"
    );
    let idle_after = idle.await.unwrap().expect("idle connection closed") - cut;
    assert!(
        idle_after < STUCK_BOUND,
        "idle connection closed after {idle_after:?}"
    );
    let pooled_result = tokio::time::timeout(Duration::from_secs(2), pooled.query_drop("SELECT 1"))
        .await
        .expect("a pooled connection on a cut link errors at once, not hangs");
    assert!(
        pooled_result.is_err(),
        "pooled connection to the cut primary"
    );
    assert!(
        !held.is_finished(),
        "a new client is held while A is unreachable"
    );

    // The failover tool promotes B (A still runs, cut off), then Consul says so.
    pair.replica
        .admin_exec("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF")
        .await;
    let flipped = Instant::now();
    consul.points_to_b().await;
    let (held_result, held_at) = within(T, "held client", held).await;
    assert_eq!(
        held_result,
        Ok(b_id),
        "the held client reached the new primary"
    );
    assert_eq!(server_id_via(proxy.addr()).await, b_id);
    eprintln!(
        "[3 DB link loss] keepalive {KEEPALIVE}, user timeout {USER_TIMEOUT}: mid-query client error {busy_after:?} after the cut ({}), \
         idle connection closed after {idle_after:?}; held client (waiting {:?}) reached B {:?} after Consul flipped; link dropped {} packets",
        busy_result.unwrap_err(),
        held_at - cut,
        held_at - flipped,
        ns.stats(Dir::In).dropped + ns.stats(Dir::Out).dropped,
    );
}
