//! Where a new connection goes: the route's primary (`role = primary`), or a member of its replica
//! pool (`role = replica`), picked by `balance`, with `fallback` when the pool is empty.
//!
//! ```text
//!   role = primary: watch<Primary> ─────────────────────────────▶ snapshot (as before)
//!   role = replica: watch<Pool> ──pick(balance, avoid)──▶ member ─▶ snapshot + bound guard
//!                       └ empty: fallback = route ──▶ that route's watch<Primary> snapshot
//!                                fallback = hold  ──▶ no backend: the client is held
//! ```
//! Either way [`connection`](super::connection) gets a [`Primary`] snapshot — a pool member is one
//! — so connecting, relaying and leaving on the member's token are the same code. A pool member
//! counts the connection from the moment it is picked (the guard), so clients connecting at the
//! same time already spread by least-connections. A member this client failed to connect to is
//! avoided on its next attempts while another is left.

use std::net::SocketAddr;

use tokio::sync::watch::error::RecvError;

use super::connection::ConnContext;
use crate::config::{Balance, Config, Role};
use crate::control::pool::PoolWatch;
use crate::control::primary::{BoundGuard, Primary, PrimaryWatch};

/// The backend source of one connection, read once per attempt.
pub struct Upstream {
    primary: PrimaryWatch,
    /// `Some` for a replica route.
    replicas: Option<Replicas>,
}

struct Replicas {
    pool: PoolWatch,
    balance: Balance,
    /// Another route's primary, used while the pool is empty.
    fallback: Option<PrimaryWatch>,
    /// Members this client failed to connect to.
    failed: Vec<SocketAddr>,
}

/// One attempt's backend: the snapshot to connect to (no backend: hold), and for a pool member
/// the guard that counts the connection on it.
pub struct Target {
    pub bound: Primary,
    pub guard: Option<BoundGuard>,
}

impl Upstream {
    pub fn new(config: &Config, ctx: &ConnContext) -> Upstream {
        let replicas = (config.role == Role::Replica).then(|| Replicas {
            pool: ctx.pool.clone(),
            balance: config.balance,
            fallback: ctx.fallback.clone(),
            failed: Vec::new(),
        });
        Upstream {
            primary: ctx.primary.clone(),
            replicas,
        }
    }

    /// The backend to try now.
    pub fn current(&mut self) -> Target {
        let Some(r) = &mut self.replicas else {
            return Target {
                bound: self.primary.borrow_and_update().clone(),
                guard: None,
            };
        };
        let pool = r.pool.borrow_and_update().clone();
        if let Some((bound, guard)) = pool.pick(r.balance, &r.failed) {
            return Target {
                bound,
                guard: Some(guard),
            };
        }
        let bound = match &mut r.fallback {
            Some(primary) => primary.borrow_and_update().clone(),
            None => Primary {
                backend: None,
                reason: pool.reason.clone(),
                ..self.primary.borrow().clone()
            },
        };
        Target { bound, guard: None }
    }

    /// A connect to `addr` failed: a pool picks another member first next time.
    pub fn failed(&mut self, addr: SocketAddr) {
        if let Some(r) = &mut self.replicas
            && !r.failed.contains(&addr)
        {
            r.failed.push(addr);
        }
    }

    /// Waits until what [`current`](Self::current) would answer may have changed.
    pub async fn changed(&mut self) -> Result<(), RecvError> {
        match &mut self.replicas {
            None => self.primary.changed().await,
            Some(Replicas {
                pool,
                fallback: Some(fallback),
                ..
            }) => tokio::select! {
                changed = pool.changed() => changed,
                changed = fallback.changed() => changed,
            },
            Some(r) => r.pool.changed().await,
        }
    }

    /// For a replica route: whether a backend is there now (a member, or the fallback's
    /// primary), and the pool's reason. `None` for a primary route.
    pub fn pool_state(&self) -> Option<(bool, String)> {
        let r = self.replicas.as_ref()?;
        let pool = r.pool.borrow();
        let fallback = r
            .fallback
            .as_ref()
            .is_some_and(|f| f.borrow().backend.is_some());
        Some((
            !pool.members.is_empty() || fallback,
            pool.reason.to_string(),
        ))
    }

    /// The snapshot a refusal is about: the primary, or for a pool with a fallback, that one.
    pub fn primary_now(&self) -> Primary {
        match self.replicas.as_ref().and_then(|r| r.fallback.as_ref()) {
            Some(fallback) => fallback.borrow().clone(),
            None => self.primary.borrow().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use tokio::sync::{Notify, watch};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::Settings;
    use crate::control::pool::{PoolPublisher, Wanted};
    use crate::control::primary::{Backend, PrimaryPublisher};
    use crate::ops::metrics::Metrics;

    fn backend(port: u16) -> Backend {
        Backend::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            format!("db{port}"),
        )
    }

    fn port(target: &Target) -> Option<u16> {
        target.bound.backend.as_ref().map(|b| b.addr.port())
    }

    /// A replica route's context, its pool publisher and (when `fallback`) the other route's
    /// primary publisher.
    fn replica_route(fallback: bool) -> (Config, ConnContext, PoolPublisher, PrimaryPublisher) {
        let config = Config::resolve(Settings {
            backend: Some(SocketAddr::from(([127, 0, 0, 1], 1))),
            role: Some(Role::Replica),
            ..Settings::default()
        })
        .unwrap();
        let root = CancellationToken::new();
        let (_own, primary) = PrimaryPublisher::new(root.clone(), "replica route");
        let (pool_publisher, pool) = PoolPublisher::new(root.clone(), "no replica yet");
        let (other, other_primary) = PrimaryPublisher::new(root.clone(), "starting");
        let ctx = ConnContext {
            config: watch::channel(Arc::new(config.clone())).1,
            primary,
            pool,
            fallback: fallback.then_some(other_primary),
            metrics: Arc::new(Metrics::new()),
            refresh: Arc::new(Notify::new()),
            hard_stop: root,
        };
        (config, ctx, pool_publisher, other)
    }

    #[tokio::test]
    async fn an_empty_pool_holds_or_falls_back_to_the_other_routes_primary() {
        let (config, ctx, pool, _) = replica_route(false);
        let mut upstream = Upstream::new(&config, &ctx);
        let held = upstream.current();
        assert_eq!(port(&held), None);
        assert_eq!(&*held.bound.reason, "no replica yet");
        assert_eq!(
            upstream.pool_state(),
            Some((false, "no replica yet".into()))
        );

        let (config, ctx, pool_b, other) = replica_route(true);
        let mut upstream = Upstream::new(&config, &ctx);
        other.publish(Some(backend(7)), "primary of main-rw");
        let target = upstream.current();
        assert_eq!(port(&target), Some(7));
        assert!(target.guard.is_none(), "the primary's own stats count it");
        // A replica joining wakes a waiting client and takes it from the fallback.
        let wake = tokio::time::timeout(std::time::Duration::from_secs(5), upstream.changed());
        pool_b.publish(
            &[Wanted {
                backend: backend(8),
                lagging: false,
            }],
            "one",
        );
        assert!(wake.await.is_ok());
        let target = upstream.current();
        assert_eq!(port(&target), Some(8));
        assert!(target.guard.is_some());
        drop(pool);
    }

    #[tokio::test]
    async fn a_member_that_failed_for_this_client_is_tried_last() {
        let (config, ctx, pool, _) = replica_route(false);
        pool.publish(
            &[8, 9].map(|p| Wanted {
                backend: backend(p),
                lagging: false,
            }),
            "two",
        );
        let mut upstream = Upstream::new(&config, &ctx);
        upstream.failed(backend(8).addr);
        for _ in 0..3 {
            assert_eq!(port(&upstream.current()), Some(9));
        }
        upstream.failed(backend(9).addr);
        assert!(
            port(&upstream.current()).is_some(),
            "both failed: try again"
        );
    }
}
