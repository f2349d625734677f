//! A replica route's pool: every healthy instance, one `tokio::sync::watch` value shared by every
//! component, as [`primary`](super::primary) is for a primary route.
//!
//! ```text
//!   replicas (control) ──publish(wanted)──▶ watch<Pool{members}> ──pick(balance)──▶ connection
//!          │ members that left: failover policy on their own leave token
//! ```
//! Each [`Member`] is a one-server [`Primary`] snapshot — backend, its own `leave`/`leave_idle`
//! tokens and its [`EpochStats`] (the open connections counted by its guard) — plus a `lagging`
//! flag. A connection bound to a member therefore relays and leaves exactly like one bound to a
//! primary: when the member leaves the pool, the route's `on_failover` acts on its token.
//! A member that stays (also when only its lagging flag changes) keeps its tokens and counts.
//!
//! [`Pool::pick`] chooses among the non-lagging members (the lagging ones only when no other is
//! left): `least-connections` takes the fewest open connections, ties broken by a rotating
//! start; `round-robin` takes each in turn. The rotation counter outlives pool versions, so a
//! membership change does not send the next client back to the first member.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::primary::{Backend, BoundGuard, EpochStats, Primary};
use crate::config::Balance;

/// One replica of the pool.
#[derive(Debug, Clone)]
pub struct Member {
    /// The member as a one-server snapshot: what a connection bound to it holds.
    pub bound: Primary,
    /// Its service check warns (replication lag): used only when no other member is left.
    pub lagging: bool,
}

impl Member {
    /// The member's backend (always set for a member).
    pub fn backend(&self) -> Option<&Backend> {
        self.bound.backend.as_ref()
    }

    /// Connections bound to it now.
    pub fn connections(&self) -> usize {
        self.bound.stats.bound()
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.backend().map(|b| b.addr)
    }
}

/// A snapshot of the pool.
#[derive(Debug, Clone)]
pub struct Pool {
    pub members: Arc<[Member]>,
    /// Why the pool is what it is (empty: why there is no replica), for logs and ERR packets.
    pub reason: Arc<str>,
    /// Increases by one on every membership change.
    pub epoch: u64,
    /// The rotation shared by every version of this pool.
    turn: Arc<AtomicUsize>,
}

/// Read side: cheap to clone, one per worker or connection.
pub type PoolWatch = watch::Receiver<Pool>;

/// A server the control side wants in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub backend: Backend,
    pub lagging: bool,
}

/// What one [`PoolPublisher::publish`] changed.
#[derive(Debug, Default)]
pub struct PoolChange {
    pub joined: Vec<Wanted>,
    /// Members no longer wanted, with their tokens: the failover policy decides their fate.
    pub left: Vec<Member>,
    /// Members whose lagging flag flipped (now lagging: `true`).
    pub lag_changed: Vec<Wanted>,
}

impl PoolChange {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty() && self.lag_changed.is_empty()
    }
}

impl Pool {
    /// Picks a member for a new connection and binds the connection to it (the guard keeps it
    /// counted, so concurrent picks see it at once). Members at `avoid` (a failed connect of
    /// this client) are skipped while another is left. `None`: the pool is empty.
    pub fn pick(&self, balance: Balance, avoid: &[SocketAddr]) -> Option<(Primary, BoundGuard)> {
        let usable = |m: &&Member| !m.addr().is_some_and(|a| avoid.contains(&a));
        let choices = |lagging: bool| -> Vec<&Member> {
            self.members
                .iter()
                .filter(|m| m.lagging == lagging)
                .filter(usable)
                .collect()
        };
        let mut set = choices(false);
        if set.is_empty() {
            set = choices(true);
        }
        if set.is_empty() && !avoid.is_empty() {
            // Every member failed for this client: try them all again.
            return self.pick(balance, &[]);
        }
        let n = set.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        let rotated = (0..n).map(|i| set[(start + i) % n]);
        let chosen = match balance {
            Balance::RoundRobin => set[start],
            // `min_by_key` keeps the first of equal counts: the rotation breaks ties.
            Balance::LeastConnections => rotated.min_by_key(|m| m.connections())?,
        };
        let guard = chosen.bound.stats.bind();
        Some((chosen.bound.clone(), guard))
    }

    /// The member at `addr`, if it is one.
    pub fn member(&self, addr: SocketAddr) -> Option<&Member> {
        self.members.iter().find(|m| m.addr() == Some(addr))
    }
}

/// Write side, owned by the control loop of a replica route.
#[derive(Debug)]
pub struct PoolPublisher {
    tx: watch::Sender<Pool>,
    /// Parent of every member's `leave` token: cancelling it closes every relayed connection.
    root: CancellationToken,
}

impl PoolPublisher {
    /// An empty pool with `reason`. `root` is the hard-stop token.
    pub fn new(root: CancellationToken, reason: &str) -> (PoolPublisher, PoolWatch) {
        let (tx, rx) = watch::channel(Pool {
            members: Arc::from(Vec::new()),
            reason: reason.into(),
            epoch: 0,
            turn: Arc::default(),
        });
        (PoolPublisher { tx, root }, rx)
    }

    /// Makes the pool exactly `wanted` (the first of duplicate addresses counts). Members that
    /// stay keep their tokens and counts. Returns what changed; an unchanged membership only
    /// updates the reason, silently.
    pub fn publish(&self, wanted: &[Wanted], reason: &str) -> PoolChange {
        let mut change = PoolChange::default();
        self.tx.send_if_modified(|pool| {
            let mut members: Vec<Member> = Vec::with_capacity(wanted.len());
            for w in wanted {
                if members.iter().any(|m| m.addr() == Some(w.backend.addr)) {
                    continue;
                }
                let member = match pool.member(w.backend.addr) {
                    Some(old) => {
                        if old.lagging != w.lagging {
                            change.lag_changed.push(w.clone());
                        }
                        Member {
                            bound: old.bound.clone(),
                            lagging: w.lagging,
                        }
                    }
                    None => {
                        change.joined.push(w.clone());
                        self.member(w, pool.epoch + 1, reason)
                    }
                };
                members.push(member);
            }
            change.left = pool
                .members
                .iter()
                .filter(|m| !members.iter().any(|n| n.addr() == m.addr()))
                .cloned()
                .collect();
            let changed = !change.is_empty();
            if changed {
                pool.members = Arc::from(members);
                pool.epoch += 1;
            }
            if *pool.reason != *reason {
                pool.reason = reason.into();
            }
            changed
        });
        change
    }

    fn member(&self, wanted: &Wanted, epoch: u64, reason: &str) -> Member {
        let leave = self.root.child_token();
        Member {
            bound: Primary {
                backend: Some(wanted.backend.clone()),
                epoch,
                reason: reason.into(),
                since: SystemTime::now(),
                leave_idle: leave.child_token(),
                leave,
                stats: Arc::new(EpochStats::default()),
            },
            lagging: wanted.lagging,
        }
    }

    /// The current snapshot.
    pub fn current(&self) -> Pool {
        self.tx.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(port: u16, lagging: bool) -> Wanted {
        Wanted {
            backend: Backend::new(SocketAddr::from(([127, 0, 0, 1], port)), format!("r{port}")),
            lagging,
        }
    }

    fn port(picked: &(Primary, BoundGuard)) -> u16 {
        picked.0.backend.as_ref().map_or(0, |b| b.addr.port())
    }

    #[test]
    fn least_connections_fills_evenly_and_round_robin_rotates() {
        let (publisher, rx) = PoolPublisher::new(CancellationToken::new(), "starting");
        publisher.publish(&[wanted(1, false), wanted(2, false)], "two");
        let pool = rx.borrow().clone();
        let held: Vec<_> = (0..8)
            .filter_map(|_| pool.pick(Balance::LeastConnections, &[]))
            .collect();
        let on_1 = held.iter().filter(|p| port(p) == 1).count();
        assert_eq!((on_1, held.len() - on_1), (4, 4));
        // Two connections on 1 end: the next two go there, whatever the rotation says.
        let mut held: Vec<_> = held.into_iter().filter(|p| port(p) == 2).collect();
        let next: Vec<_> = (0..2)
            .filter_map(|_| pool.pick(Balance::LeastConnections, &[]))
            .collect();
        assert!(next.iter().all(|p| port(p) == 1));
        held.extend(next);
        let ports: Vec<u16> = (0..4)
            .filter_map(|_| pool.pick(Balance::RoundRobin, &[]))
            .map(|p| port(&p))
            .collect();
        assert_eq!(ports.iter().filter(|&&p| p == 1).count(), 2, "{ports:?}");
        assert_ne!(ports[0], ports[1], "{ports:?}");
    }

    #[test]
    fn lagging_members_only_when_no_other_is_left() {
        let (publisher, rx) = PoolPublisher::new(CancellationToken::new(), "starting");
        publisher.publish(&[wanted(1, true), wanted(2, false)], "x");
        let pool = rx.borrow().clone();
        for _ in 0..4 {
            assert_eq!(
                pool.pick(Balance::RoundRobin, &[]).map(|p| port(&p)),
                Some(2)
            );
        }
        let failed = [SocketAddr::from(([127, 0, 0, 1], 2))];
        let pick = pool.pick(Balance::RoundRobin, &failed);
        assert_eq!(pick.map(|p| port(&p)), Some(1), "2 failed for this client");
        publisher.publish(&[wanted(1, true)], "y");
        let pick = rx.borrow().pick(Balance::LeastConnections, &[]);
        assert_eq!(pick.map(|p| port(&p)), Some(1));
        publisher.publish(&[], "none");
        assert!(rx.borrow().pick(Balance::LeastConnections, &[]).is_none());
        assert_eq!(&*rx.borrow().reason, "none");
    }

    #[test]
    fn staying_members_keep_their_tokens_and_leavers_are_handed_back() {
        let (publisher, rx) = PoolPublisher::new(CancellationToken::new(), "starting");
        let change = publisher.publish(&[wanted(1, false), wanted(2, false)], "x");
        assert_eq!(change.joined.len(), 2);
        let token_1 = rx.borrow().members[0].bound.leave.clone();
        let epoch = rx.borrow().epoch;
        let change = publisher.publish(&[wanted(1, false), wanted(2, false)], "x again");
        assert!(change.is_empty());
        assert_eq!(rx.borrow().epoch, epoch, "no membership change");
        let change = publisher.publish(&[wanted(1, true)], "2 gone, 1 lagging");
        assert_eq!(change.left.len(), 1);
        assert_eq!(change.left[0].addr().map(|a| a.port()), Some(2));
        assert_eq!(change.lag_changed, vec![wanted(1, true)]);
        assert!(
            !change.left[0].bound.leave.is_cancelled(),
            "the policy decides"
        );
        let pool = rx.borrow().clone();
        assert!(pool.members[0].lagging);
        pool.members[0].bound.leave.cancel();
        assert!(
            token_1.is_cancelled(),
            "the same token as before the change"
        );
    }
}
