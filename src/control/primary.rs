//! The current primary: one `tokio::sync::watch` value shared by every component.
//!
//! Discovery sources decide *who* the primary is and call [`PrimaryPublisher::publish`]; every
//! connection reads a [`Primary`] snapshot through a [`PrimaryWatch`] when it picks its backend.
//! Each distinct primary gets a new `epoch` (strictly increasing) and a fresh [`CancellationToken`]
//! (`leave`). A connection keeps the token of the primary it was bound to; when the primary
//! changes, the failover policy cancels the old token, and every connection bound to the old
//! primary closes — no connection list to walk, and no connection can get a token that does not
//! match its backend, because address and token come from the same snapshot.
//!
//! `leave_idle`, a child of `leave`, asks the same connections to close at their first idle
//! moment instead (`on_failover = idle`); cancelling `leave` cancels it too, so a connection
//! waits on `leave_idle` alone (see [`crate::data::leave`]).
//!
//! Publishing the same backend again is not a change: no new epoch, no failover.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One MySQL server the proxy can route to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Human name for logs and errors (Consul node or service ID, or the address).
    pub name: Arc<str>,
}

impl Backend {
    pub fn new(addr: SocketAddr, name: impl Into<Arc<str>>) -> Backend {
        Backend {
            addr,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self.name == *self.addr.to_string() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.addr, self.name)
        }
    }
}

/// A snapshot of "who is primary now".
#[derive(Debug, Clone)]
pub struct Primary {
    /// `None` while no primary is known; new clients are held.
    pub backend: Option<Backend>,
    /// Increases by one on every change of `backend`.
    pub epoch: u64,
    /// Why there is no primary (or what made this one primary), for logs and ERR packets.
    pub reason: Arc<str>,
    /// When this value was published.
    pub since: SystemTime,
    /// Cancelled when connections bound to this primary must leave it.
    pub leave: CancellationToken,
    /// Child of `leave`: cancelled alone, connections leave at their first idle moment.
    pub leave_idle: CancellationToken,
    /// Connections bound to this primary and when the first one was routed (failover timeline).
    pub stats: Arc<EpochStats>,
}

/// What the connections of one primary epoch report back, for the failover timeline.
#[derive(Debug, Default)]
pub struct EpochStats {
    bound: AtomicUsize,
    /// Connections that left this primary at an idle moment of a drain.
    left_idle: AtomicUsize,
    first_routed: OnceLock<Instant>,
    routed: Notify,
    /// The per-backend connection gauge, looked up once per epoch instead of per connection.
    backend_gauge: OnceLock<prometheus_client::metrics::gauge::Gauge>,
}

impl EpochStats {
    /// A connection was routed to this epoch's primary; dropping the guard unbinds it.
    pub fn bind(self: &Arc<Self>) -> BoundGuard {
        self.bound.fetch_add(1, Ordering::Relaxed);
        if self.first_routed.set(Instant::now()).is_ok() {
            self.routed.notify_waiters();
        }
        BoundGuard(self.clone())
    }

    /// The backend's connection gauge, created by `make` on first use in this epoch.
    pub fn backend_gauge(
        &self,
        make: impl FnOnce() -> prometheus_client::metrics::gauge::Gauge,
    ) -> prometheus_client::metrics::gauge::Gauge {
        self.backend_gauge.get_or_init(make).clone()
    }

    /// Connections currently bound.
    pub fn bound(&self) -> usize {
        self.bound.load(Ordering::Relaxed)
    }

    /// A connection left this primary at an idle moment.
    pub fn note_left_idle(&self) {
        self.left_idle.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections that left at an idle moment so far.
    pub fn left_idle(&self) -> usize {
        self.left_idle.load(Ordering::Relaxed)
    }

    /// When the first connection was routed, if one was.
    pub fn first_routed(&self) -> Option<Instant> {
        self.first_routed.get().copied()
    }

    /// Waits until a first connection is routed.
    pub async fn wait_first_routed(&self) -> Instant {
        loop {
            let notified = self.routed.notified();
            if let Some(at) = self.first_routed() {
                return at;
            }
            notified.await;
        }
    }
}

/// Keeps a connection counted in [`EpochStats::bound`] while it lives.
#[derive(Debug)]
pub struct BoundGuard(Arc<EpochStats>);

impl Drop for BoundGuard {
    fn drop(&mut self) {
        self.0.bound.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Read side: cheap to clone, one per worker or connection.
pub type PrimaryWatch = watch::Receiver<Primary>;

/// Write side, owned by the discovery task (and reload).
#[derive(Debug)]
pub struct PrimaryPublisher {
    tx: watch::Sender<Primary>,
    /// Parent of every `leave` token: cancelling it closes every relayed connection (shutdown).
    root: CancellationToken,
}

/// What a [`PrimaryPublisher::publish`] call changed.
#[derive(Debug)]
pub struct Change {
    pub old: Option<Backend>,
    pub new: Option<Backend>,
    pub epoch: u64,
    /// The token of the old primary's connections; the failover policy decides when to cancel it.
    pub old_leave: CancellationToken,
    /// Its child: "leave at your first idle moment".
    pub old_leave_idle: CancellationToken,
    /// The old primary's connection stats (how many to close).
    pub old_stats: Arc<EpochStats>,
    /// The new primary's stats (when the first client reaches it).
    pub new_stats: Arc<EpochStats>,
    /// When the change was published.
    pub at: Instant,
}

impl PrimaryPublisher {
    /// Creates the channel with "no primary yet" and `reason`. `root` is the hard-stop token.
    pub fn new(root: CancellationToken, reason: &str) -> (PrimaryPublisher, PrimaryWatch) {
        let leave = root.child_token();
        let initial = Primary {
            backend: None,
            epoch: 0,
            reason: reason.into(),
            since: SystemTime::now(),
            leave_idle: leave.child_token(),
            leave,
            stats: Arc::default(),
        };
        let (tx, rx) = watch::channel(initial);
        (PrimaryPublisher { tx, root }, rx)
    }

    /// Publishes `backend` as the primary. Returns the change, or `None` when it is the same
    /// backend as now (only the reason is updated then, silently).
    pub fn publish(&self, backend: Option<Backend>, reason: &str) -> Option<Change> {
        let mut change = None;
        self.tx.send_if_modified(|current| {
            if current.backend == backend {
                if *current.reason != *reason {
                    current.reason = reason.into();
                }
                return false;
            }
            let leave = self.root.child_token();
            let next = Primary {
                backend: backend.clone(),
                epoch: current.epoch + 1,
                reason: reason.into(),
                since: SystemTime::now(),
                leave_idle: leave.child_token(),
                leave,
                stats: Arc::default(),
            };
            let new_stats = next.stats.clone();
            let old = std::mem::replace(current, next);
            change = Some(Change {
                old: old.backend,
                new: backend.clone(),
                epoch: current.epoch,
                old_leave: old.leave,
                old_leave_idle: old.leave_idle,
                old_stats: old.stats,
                new_stats,
                at: Instant::now(),
            });
            true
        });
        change
    }

    /// The current snapshot.
    pub fn current(&self) -> Primary {
        self.tx.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(port: u16) -> Backend {
        Backend::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            format!("node{port}"),
        )
    }

    #[test]
    fn epoch_increases_only_on_change() {
        let root = CancellationToken::new();
        let (publisher, rx) = PrimaryPublisher::new(root, "starting");
        assert_eq!(rx.borrow().epoch, 0);
        let c = publisher.publish(Some(b(1)), "static").unwrap();
        assert_eq!((c.old, c.epoch), (None, 1));
        assert!(publisher.publish(Some(b(1)), "static").is_none());
        assert_eq!(rx.borrow().epoch, 1);
        let c = publisher.publish(None, "gone").unwrap();
        assert_eq!(c.old, Some(b(1)));
        assert_eq!(rx.borrow().epoch, 2);
        assert_eq!(&*rx.borrow().reason, "gone");
    }

    #[test]
    fn old_token_is_handed_out_uncancelled_and_root_cancels_all() {
        let root = CancellationToken::new();
        let (publisher, rx) = PrimaryPublisher::new(root.clone(), "starting");
        publisher.publish(Some(b(1)), "x");
        let bound = rx.borrow().leave.clone();
        let change = publisher.publish(Some(b(2)), "y").unwrap();
        assert!(!bound.is_cancelled(), "policy decides, not publish");
        change.old_leave.cancel();
        assert!(
            bound.is_cancelled(),
            "same token as the bound connections hold"
        );
        let current = rx.borrow().leave.clone();
        assert!(!current.is_cancelled());
        root.cancel();
        assert!(current.is_cancelled());
    }

    #[test]
    fn leave_idle_is_cancelled_with_leave_but_not_the_other_way_round() {
        let root = CancellationToken::new();
        let (publisher, rx) = PrimaryPublisher::new(root, "starting");
        publisher.publish(Some(b(1)), "x");
        let (leave, idle) = {
            let p = rx.borrow();
            (p.leave.clone(), p.leave_idle.clone())
        };
        let change = publisher.publish(Some(b(2)), "y").unwrap();
        change.old_leave_idle.cancel();
        assert!(idle.is_cancelled() && !leave.is_cancelled());
        let (leave, idle) = {
            let p = rx.borrow();
            (p.leave.clone(), p.leave_idle.clone())
        };
        let change = publisher.publish(Some(b(3)), "z").unwrap();
        change.old_leave.cancel();
        assert!(idle.is_cancelled() && leave.is_cancelled());
    }
}
