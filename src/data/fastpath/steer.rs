//! Steering: one task per route that keeps the kernel fast path pointed at the published
//! primary, and applies `on_failover` to the connections it redirected to a replaced one.
//!
//! ```text
//!   primary (watch) ──changed──▶ steer task ──set_route(listen, new)──▶ routes map (kernel)
//!                                    │ then, for the sockets redirected to the old primary:
//!                                    │   close: destroy now · drain, idle: after drain_grace
//!                                    │   keep: leave them
//!                                    └ every second: counters → metrics; every 5 s: sweep
//! ```
//!
//! A new target starts clean: a refusal the watch program recorded for it earlier is
//! cleared before the route points at it (discovery names it now; if it still refuses, the
//! first failed connect marks it again).
//!
//! The order is the point: the map is updated **first**, so new connects go to the new
//! primary at once, and only then are the old ones destroyed — a client that reconnects after
//! the destroy lands on the new primary, never on the old. While no primary is published the
//! route has no target: connects are not rewritten, reach the proxy's own listener and are
//! held (and then relayed for their life) as without the fast path.
//!
//! `idle` is treated as `drain`: the proxy sees no byte of a redirected connection, so it
//! cannot tell an idle moment; such connections are destroyed when `drain_grace` ends.
//!
//! The task reads the primary only; it is decoupled from the control loop and the listener.
//! It is supervised: if it ends unexpectedly, its route is removed before the restart, so
//! connects fall back to the relay (which follows the primary on its own) rather than go on
//! to a target nobody updates. It stops with `stop` (the server's shutdown), removing its
//! route; the last route to stop drops the fast path, which detaches the programs.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::FastPathError;
use super::liveness;
use super::shared::{self, ActiveFacts, Shared};
use crate::config::{
    Config, FailoverPolicy, FastPathConfig, FastPathMode, FenceConfig, OnFailover,
};
use crate::control::primary::PrimaryWatch;
use crate::control::supervisor::{spawn_logged, supervise_with};
use crate::ops::fast_path::{self as status, Inactive};
use crate::ops::metrics::Metrics;

/// How often the program's counters are copied into the metrics.
const TICK: Duration = Duration::from_secs(1);
/// Ticks between re-expansions of a wildcard listen address (`0.0.0.0`, `[::]`) to the
/// interface addresses present now (an address added later is then routed too).
const WILDCARD_REFRESH_TICKS: u32 = 5;

/// Starts steering `listen` (the address the proxy's listener is bound to) with the fast
/// path `config` asks for. Call once per route; the first call loads the fast path, later
/// calls share it.
///
/// - `off`: nothing happens;
/// - `connect`: a host that cannot do it is an error, naming the missing piece and the fix
///   (the proxy exits 64 on it);
/// - `auto`: such a host logs one warning and every connection is relayed.
///
/// `settings` is the route's configuration as reloads change it: `on_failover` and
/// `drain_grace` are read at each failover, and with `verify_writable` on (a monitor user)
/// the route's target is also watched over one idle session ([`liveness`]), started again
/// when a reload changes the fencing settings.
pub fn start(
    config: &FastPathConfig,
    listen: SocketAddr,
    primary: PrimaryWatch,
    settings: watch::Receiver<Arc<Config>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<(), FastPathError> {
    let mode = match config.mode {
        FastPathMode::Off => return Ok(()),
        FastPathMode::Connect => "connect",
        FastPathMode::Auto => "auto",
    };
    let shared = match shared::acquire(config.cgroup.as_deref()) {
        Ok(shared) => shared,
        Err(e) if config.mode == FastPathMode::Auto => {
            fall_back(&e);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    status::publish(Arc::new(ActiveFacts {
        mode,
        shared: Arc::downgrade(&shared),
    }));
    metrics.fast_path_active.set(1);
    info!(%listen, cgroup = %shared.fast_path.cgroup().display(), on_failover = ?settings.borrow().failover.on_failover, "fast path steering: connects to the listen address go to the primary directly");
    let route = Arc::new(Route {
        shared,
        listen,
        settings,
        liveness: Mutex::new(None),
        metrics: metrics.clone(),
        stop: stop.clone(),
        last: Mutex::new(None),
        current: watch::channel(None).0,
        ticks: AtomicU32::new(0),
    });
    let on_end = {
        let route = route.clone();
        move |_cause: &str| route.unroute()
    };
    tokio::spawn(supervise_with(
        "fast path steering",
        metrics,
        on_end,
        stop,
        move || run(route.clone(), primary.clone()),
    ));
    Ok(())
}

/// `auto` on a host that cannot: relay everything, say why once per process.
fn fall_back(e: &FastPathError) {
    use std::sync::atomic::AtomicBool;
    static WARNED: AtomicBool = AtomicBool::new(false);
    let reason = e.to_string();
    if !WARNED.swap(true, Ordering::Relaxed) {
        warn!(error = %reason, "fast_path = auto: the kernel fast path is unavailable on this host; every connection is relayed");
    }
    status::publish(Arc::new(Inactive {
        mode: "auto",
        reason,
    }));
}

/// One route's steering state; outlives each run of the task (a restart picks it up).
struct Route {
    shared: Arc<Shared>,
    listen: SocketAddr,
    /// The route's configuration, as reloads change it: `on_failover`, `drain_grace`, and the
    /// fencing settings (with a monitor user, the target's liveness session).
    settings: watch::Receiver<Arc<Config>>,
    /// The target whose liveness session runs, the settings it logged in with, and the token
    /// that stops it.
    liveness: Mutex<Option<(SocketAddr, FenceConfig, CancellationToken)>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    /// The target the routes map has for `listen` (`None`: not rewritten), as last set.
    last: Mutex<Option<SocketAddr>>,
    /// The same, for the delayed destroys of `drain` (a primary that came back is spared).
    current: watch::Sender<Option<SocketAddr>>,
    ticks: AtomicU32,
}

/// The task: follow the primary until `stop`.
async fn run(route: Arc<Route>, mut primary: PrimaryWatch) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A (re)start finds the route removed (or never set): apply the current primary first.
    let mut applied = false;
    let mut settings = route.settings.clone();
    // Closed when the route's configuration sender is gone (the route is going away; `stop`
    // ends the task then): stop watching it rather than spin on the error.
    let mut settings_open = true;
    loop {
        let want = primary.borrow_and_update().backend.as_ref().map(|b| b.addr);
        if !applied || *route.lock_last() != want {
            route.switch(want).map_err(|e| e.to_string())?;
            applied = true;
        }
        tokio::select! {
            () = route.stop.cancelled() => {
                route.unroute();
                route.metrics.fast_path_active.set(0);
                return Ok(());
            }
            changed = primary.changed() => {
                if changed.is_err() {
                    route.unroute();
                    return Err("the primary watch closed".to_owned());
                }
            }
            changed = settings.changed(), if settings_open => match changed {
                // A reload: the liveness session follows new fencing settings.
                Ok(()) => route.follow_liveness(*route.lock_last()),
                Err(_) => settings_open = false,
            },
            _ = tick.tick() => route.maintain(),
        }
    }
}

impl Route {
    fn lock_last(&self) -> std::sync::MutexGuard<'_, Option<SocketAddr>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Points the route at `new`, then applies the failover policy to the sockets redirected
    /// to the previous target.
    fn switch(&self, new: Option<SocketAddr>) -> Result<(), FastPathError> {
        let fp = &self.shared.fast_path;
        if let Some(target) = new
            && Some(target) != *self.lock_last()
        {
            // Discovery names it now: give it a clean slate (see the module doc).
            match fp.clear_refusal(target) {
                Ok(true) => {
                    info!(%target, "fast path: the new target had refused a connect earlier; connects are redirected to it again")
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(%target, error = %e, "fast path: cannot clear the new target's refusal")
                }
            }
        }
        let set = match fp.set_route(self.listen, new) {
            Ok(()) => Ok(new),
            Err(FastPathError::FamilyMismatch { listen, target }) => {
                // A connect cannot change family: leave these connects to the relay.
                warn!(%listen, %target, "fast path: the primary's address family differs from the listen address's; connects are relayed while it is primary");
                fp.set_route(self.listen, None).map(|()| None)
            }
            Err(e) => Err(e),
        };
        let routed = match set {
            Ok(routed) => routed,
            Err(e) => {
                // Never leave the old target in the map: fall back to the relay.
                self.unroute();
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut *self.lock_last(), routed);
        self.current.send_replace(routed);
        self.follow_liveness(routed);
        // Info: one line per change of target, the fast path's own "failover" line.
        info!(listen = %self.listen, ?old, new = ?routed, "fast path: the route follows the primary");
        if let Some(old) = old
            && Some(old) != routed
        {
            self.leave(old);
        }
        Ok(())
    }

    /// `on_failover` for the sockets the program redirected to `old`.
    fn leave(&self, old: SocketAddr) {
        let policy: FailoverPolicy = self.settings.borrow().failover;
        let delay = match policy.on_failover {
            OnFailover::Keep => {
                info!(%old, "fast path: redirected connections to the old primary are kept (on_failover = keep)");
                return;
            }
            OnFailover::Close => None,
            OnFailover::Drain | OnFailover::Idle => Some(policy.drain_grace),
        };
        let shared = self.shared.clone();
        let metrics = self.metrics.clone();
        let stop = self.stop.clone();
        let mut current = self.current.subscribe();
        let changed_at = Instant::now();
        let task_metrics = self.metrics.clone();
        spawn_logged("fast path destroy", task_metrics, async move {
            if let Some(delay) = delay {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return,
                }
                if *current.borrow_and_update() == Some(old) {
                    debug!(%old, "fast path: the old primary is the primary again; its connections stay");
                    return;
                }
            }
            let fp = shared.clone();
            let destroyed =
                tokio::task::spawn_blocking(move || fp.fast_path.destroy_redirected(old)).await;
            match destroyed {
                Ok(Ok(n)) => {
                    shared.note_closed(n, &metrics);
                    info!(%old, destroyed = n, after_change_ms = changed_at.elapsed().as_millis() as u64, "fast path: redirected connections to the old primary destroyed");
                }
                Ok(Err(e)) => {
                    error!(%old, error = %e, "fast path: cannot destroy the connections redirected to the old primary")
                }
                Err(e) => error!(%old, error = %e, "fast path: the destroy task failed"),
            }
        });
    }

    /// Keeps one liveness session on `routed` with the current fencing settings (with a
    /// monitor user), none otherwise.
    fn follow_liveness(&self, routed: Option<SocketAddr>) {
        let fence = self.settings.borrow().fence.clone();
        let mut slot = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some((watched, watched_with, token)), Some(target), Some(fence)) =
            (slot.as_ref(), routed, fence.as_ref())
            && *watched == target
            && watched_with == fence
            && !token.is_cancelled()
        {
            return;
        }
        if let Some((_, _, token)) = slot.take() {
            token.cancel();
        }
        if let (Some(target), Some(fence)) = (routed, fence) {
            let token = self.stop.child_token();
            liveness::watch(
                self.listen,
                target,
                fence.clone(),
                self.shared.clone(),
                self.metrics.clone(),
                token.clone(),
            );
            *slot = Some((target, fence, token));
        }
    }

    /// Connects to `listen` reach the proxy's listener again (no entry in the map at all).
    fn unroute(&self) {
        self.follow_liveness(None);
        match self.shared.fast_path.remove_route(self.listen) {
            Ok(_) => {}
            Err(e) => {
                error!(listen = %self.listen, error = %e, "fast path: cannot remove the route")
            }
        }
    }

    /// Once a second: counters into the metrics; every few seconds: a wildcard route
    /// re-expanded to the interface addresses present now, and (once for all routes) a sweep.
    fn maintain(&self) {
        match self.shared.sync_counters(&self.metrics) {
            Ok(0) => {}
            Ok(failed) => {
                let refusing = self.shared.fast_path.refusing().unwrap_or_default();
                warn!(failed, refusing = ?refusing, "fast path: redirected connects did not complete (refused or timed out); connects to those servers are held and relayed by the proxy until one accepts or discovery names another primary");
            }
            Err(e) => debug!(error = %e, "fast path: cannot read the counters"),
        }
        let ticks = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        if self.listen.ip().is_unspecified() && ticks.is_multiple_of(WILDCARD_REFRESH_TICKS) {
            let target = *self.lock_last();
            if let Err(e) = self.shared.fast_path.set_route(self.listen, target) {
                warn!(listen = %self.listen, error = %e, "fast path: cannot refresh the wildcard route");
            }
        }
        if !self.shared.claim_sweep() {
            return;
        }
        let shared = self.shared.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = shared.sweep(&metrics) {
                debug!(error = %e, "fast path: sweep failed");
            }
        });
    }
}
