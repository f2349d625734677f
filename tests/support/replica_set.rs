//! A primary with several GTID replicas (the test bed of replica routes), and their Consul
//! registrations.
//!
//! * [`ReplicaSet::start`]: a writable primary and `n` read-only replicas (`MASTER_USE_GTID =
//!   slave_pos`), all on 127.0.0.1, started in parallel; returns once a probe row written on the
//!   primary is on every replica. Each node has its own `@@server_id`, so `SELECT @@server_id`
//!   through a proxy says which one a connection reached ([`server_id_via`]).
//! * [`ReplicaSet::register`]: registers the primary (`mysql-primary`, tag `primary`) and each
//!   replica (`mysql-r1`, `mysql-r2`, … tag `replica`) with a TTL check, all passing; a test then
//!   moves a replica's check with [`TestConsul::check_fail`] / `check_warn` (what
//!   `check --role replica` reports for lag) on [`ReplicaSet::check_id`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::consul::{ServiceDef, TestConsul};
use super::mariadb::{
    MariaDb, app_opts, create_probe_table, replicate_from, wait_probe_replicated,
};

/// A primary and its replicas.
pub struct ReplicaSet {
    pub primary: MariaDb,
    pub replicas: Vec<MariaDb>,
}

impl ReplicaSet {
    /// Starts the primary and `n` replicas and waits until replication runs on each.
    pub async fn start(n: usize) -> ReplicaSet {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let starting: Vec<_> = (0..n).map(|_| tokio::spawn(MariaDb::start(lo))).collect();
        let primary = MariaDb::start(lo).await;
        let mut replicas = Vec::with_capacity(n);
        for task in starting {
            replicas.push(task.await.expect("replica start task"));
        }
        let set = ReplicaSet { primary, replicas };
        create_probe_table(&set.primary).await;
        for r in &set.replicas {
            replicate_from(r, &set.primary, false).await;
        }
        set.wait_replicated().await;
        set
    }

    /// Writes a probe row on the primary and waits (bounded) until every running replica has it.
    pub async fn wait_replicated(&self) {
        let running: Vec<&MariaDb> = self.replicas.iter().filter(|r| r.is_running()).collect();
        wait_probe_replicated(&self.primary, &running).await;
    }

    /// Consul service ID of replica `i` (0-based): `mysql-r1`, `mysql-r2`, …
    pub fn service_id(i: usize) -> String {
        format!("mysql-r{}", i + 1)
    }

    /// The TTL check ID of replica `i`.
    pub fn check_id(i: usize) -> String {
        format!("service:{}", Self::service_id(i))
    }

    /// Which replica has `server_id`, if one does.
    pub fn replica_with(&self, server_id: u32) -> Option<usize> {
        self.replicas
            .iter()
            .position(|r| r.server_id() == server_id)
    }

    /// Registers the primary (tag `primary`) and every replica (tag `replica`) in service
    /// `mysql`, each with a passing TTL check, and waits until Consul answers with all of them.
    pub async fn register(&self, consul: &TestConsul) {
        let def = |id: &str, tag: &str, addr: SocketAddr| {
            ServiceDef::new("mysql")
                .id(id)
                .tags(&[tag])
                .address(&addr.ip().to_string())
                .port(addr.port())
                .ttl_check(Duration::from_secs(600))
                .status("passing")
        };
        consul
            .register(&def("mysql-primary", "primary", self.primary.addr()))
            .await;
        for (i, r) in self.replicas.iter().enumerate() {
            consul
                .register(&def(&Self::service_id(i), "replica", r.addr()))
                .await;
        }
        consul
            .wait_passing("mysql", Some("replica"), self.replicas.len())
            .await;
    }
}

/// Opens a connection as `app` through `addr` (the proxy) and returns it with the answering
/// server's `@@server_id`.
pub async fn server_id_via(addr: SocketAddr) -> Result<(Conn, u32)> {
    let mut conn = Conn::new(app_opts(addr))
        .await
        .with_context(|| format!("connect as app via {addr}"))?;
    let id: Option<u32> = conn
        .query_first("SELECT @@server_id")
        .await
        .with_context(|| format!("SELECT @@server_id via {addr}"))?;
    Ok((conn, id.context("SELECT @@server_id returned no row")?))
}
