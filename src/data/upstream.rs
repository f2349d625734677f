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
