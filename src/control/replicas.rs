//! The control loop's branch for `role = replica`: no selection of one server, but a
//! [`pool`](super::pool) of every healthy instance.
//!
//! ```text
//!   Observation ──▶ members (candidates + lagging) ──▶ PoolPublisher::publish ──▶ watch<Pool>
//!                                                         │ left: failover::release (on_failover)
//!                                                         └ joined / left / lagging: one log line each
//! ```
//! - consul-health: every passing instance; one whose service check is in `warning` (what
//!   `check --role replica` reports for lag above `--max-lag`: a script check's exit code 1,
//!   Consul's `agent/checks/check.go` `CheckMonitor.check`) is a *lagging* member; critical or
//!   maintenance instances are not members. A replica leaves the pool on the first answer that
//!   no longer has it — no `withdrawn_grace`: other replicas can take its clients;
//! - catalog, KV, DNS, static: every instance named is a member;
//! - "no primary" answers (e.g. NXDOMAIN): the pool empties, with the reason.
//!
//! "Discovery unavailable" never reaches this module: the control loop keeps the last pool as it
//! keeps the last primary.

use std::sync::Arc;

use tracing::{info, warn};

use super::failover;
use super::pool::{PoolChange, PoolPublisher, Wanted};
use super::selection::Candidate;
use super::sources::{Excluded, Exclusion, Observation};
use crate::config::FailoverPolicy;
use crate::ops::status::DiscoveryStatus;

/// A replica route's state in the control loop.
pub struct Replicas<'a> {
    pub publisher: &'a PoolPublisher,
    pub status: &'a DiscoveryStatus,
    pub policy: FailoverPolicy,
    /// Last reason logged, so an unchanged empty pool is not logged on every answer.
    last_reason: String,
}

impl<'a> Replicas<'a> {
    pub fn new(
        publisher: &'a PoolPublisher,
        status: &'a DiscoveryStatus,
        policy: FailoverPolicy,
    ) -> Replicas<'a> {
        status.set_pool(Some(publisher.current()));
        Replicas {
            publisher,
            status,
            policy,
            last_reason: String::new(),
        }
    }

    /// Whether the pool has a member (the `consul_stale_after` clock runs only then).
    pub fn known(&self) -> bool {
        !self.publisher.current().members.is_empty()
    }

    /// Applies one usable observation (not `Unavailable`).
    pub fn observe(&mut self, observation: Observation, describe: &str) {
        let (candidates, excluded, none) = match observation {
            Observation::Candidates(candidates) => (candidates, Vec::new(), None),
            Observation::Instances {
                candidates,
                excluded,
            } => (candidates, excluded, None),
            Observation::NoPrimary(reason) => (Vec::new(), Vec::new(), Some(reason)),
            Observation::Unavailable(_) => return,
        };
        let wanted = members(&candidates, &excluded);
        let lagging = wanted.iter().filter(|w| w.lagging).count();
        let reason = match (wanted.len(), none) {
            (_, Some(why)) => format!("{describe}: {why}"),
            (0, None) => format!("{describe}: no healthy replica instance"),
            (n, None) if lagging > 0 => format!("{describe}: {n} replicas ({lagging} lagging)"),
            (n, None) => format!("{describe}: {n} replicas"),
        };
        self.status.pooled(&candidates, &excluded, &reason);
        self.publish(&wanted, reason);
    }

    /// Empties the pool (`consul_stale_after` ran out, or the route stopped serving replicas).
    pub fn empty(&mut self, reason: String) {
        self.publish(&[], reason);
    }

    fn publish(&mut self, wanted: &[Wanted], reason: String) {
        let change = self.publisher.publish(wanted, &reason);
        let pool = self.publisher.current();
        self.status.set_pool(Some(pool.clone()));
        let members = pool.members.len();
        self.log(change, members);
        if members == 0 && reason != self.last_reason {
            warn!(side = "discovery", %reason, "no healthy replica; new clients get the fallback");
        }
        self.last_reason = reason;
    }

    fn log(&self, change: PoolChange, members: usize) {
        for w in &change.joined {
            info!(replica = %w.backend, lagging = w.lagging, members, "replica joined the pool");
        }
        for w in &change.lag_changed {
            if w.lagging {
                warn!(side = "discovery", replica = %w.backend, members, "replica lagging: used only when no other replica is left");
            } else {
                info!(replica = %w.backend, members, "replica caught up: used again");
            }
        }
        for member in &change.left {
            let name = member
                .backend()
                .map_or_else(String::new, ToString::to_string);
            let connections = member.connections();
            let closed = failover::release(
                &name,
                &member.bound.leave,
                &member.bound.leave_idle,
                &member.bound.stats,
                &self.policy,
            );
            warn!(side = "discovery", replica = %name, members, connections, closed_connections = closed, policy = ?self.policy.on_failover, "replica left the pool");
        }
    }
}

/// The pool an answer describes: candidates, then the lagging instances (as `lagging`).
fn members(candidates: &[Candidate], excluded: &[Excluded]) -> Vec<Wanted> {
    let fresh = candidates.iter().map(|c| Wanted {
        backend: c.backend.clone(),
        lagging: false,
    });
    let lagging = excluded.iter().filter_map(|e| match &e.why {
        Exclusion::Lagging(_) => Some(Wanted {
            backend: crate::control::primary::Backend {
                addr: e.addr,
                name: Arc::clone(&e.name),
            },
            lagging: true,
        }),
        Exclusion::Critical(_) | Exclusion::Maintenance(_) => None,
    });
    fresh.chain(lagging).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnFailover;
    use crate::control::primary::Backend;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn instances(passing: &[u16], lagging: &[u16], critical: &[u16]) -> Observation {
        let excluded = |ports: &[u16], why: fn(String) -> Exclusion| -> Vec<Excluded> {
            ports
                .iter()
                .map(|&p| Excluded {
                    addr: addr(p),
                    name: format!("r{p}").into(),
                    why: why("check".into()),
                })
                .collect()
        };
        let mut all = excluded(lagging, Exclusion::Lagging);
        all.extend(excluded(critical, Exclusion::Critical));
        Observation::Instances {
            candidates: passing
                .iter()
                .map(|&p| Candidate::new(Backend::new(addr(p), format!("r{p}"))))
                .collect(),
            excluded: all,
        }
    }

    #[test]
    fn a_replica_that_goes_critical_leaves_and_its_connections_are_closed() {
        let (publisher, rx) = PoolPublisher::new(CancellationToken::new(), "starting");
        let status = DiscoveryStatus::default();
        let policy = FailoverPolicy {
            on_failover: OnFailover::Close,
            drain_grace: Duration::from_secs(1),
        };
        let mut replicas = Replicas::new(&publisher, &status, policy);
        replicas.observe(instances(&[1], &[2], &[3]), "src");
        let pool = rx.borrow().clone();
        assert_eq!(pool.members.len(), 2);
        assert!(pool.member(addr(2)).is_some_and(|m| m.lagging));
        assert!(pool.member(addr(3)).is_none(), "critical is not a member");
        assert_eq!(&*pool.reason, "src: 2 replicas (1 lagging)");
        let token = pool.members[0].bound.leave.clone();
        replicas.observe(instances(&[], &[2], &[1, 3]), "src");
        assert!(token.is_cancelled(), "on_failover = close");
        let json = status.to_json();
        assert_eq!(json["pool"]["members"].as_array().map(Vec::len), Some(1));
        replicas.observe(Observation::NoPrimary("NXDOMAIN".into()), "src");
        assert!(rx.borrow().members.is_empty());
        assert_eq!(&*rx.borrow().reason, "src: NXDOMAIN");
    }
}
