//! The running proxy: binds every route's listeners and the admin endpoints, starts the routes,
//! applies reloads, and shuts down in order.
//!
//! ```text
//!   Routes ──bind──▶ BoundRoute… ──start──▶ RunningRoute… (route.rs: listeners, discovery, primary)
//!                                               │ RouteView each
//!                                               ▼
//!                         watch<RouteSet> ──read──▶ admin / metrics_listen endpoints
//!   reload (SIGHUP, new Routes) ──▶ per route name: unchanged/changed → reload in place,
//!                                   new listen → retire + start, removed → retire, added → start
//! ```
//! Shutdown: `shutdown` cancelled → every route stops accepting → open connections get
//! `shutdown_grace` to finish → each route's hard-stop token closes the rest (held clients get an
//! ERR packet) → discovery stops → the admin endpoint stops → return.

mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::model::Fallback;
use crate::config::routes::IMPLICIT_ROUTE;
use crate::config::{Config, Route, Routes};
use crate::control::primary::PrimaryWatch;
use crate::control::sources::shared::SharedSources;
use crate::control::supervisor::describe_end;
use crate::data::fastpath::FastPathError;
use crate::data::listener;
use crate::ops::admin::{self, AdminState, Exposure, RouteSet};
use route::{BoundRoute, RunningRoute, needs_restart};

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{}cannot listen on {addr}: {source}", route_prefix(route))]
    Bind {
        route: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on admin address {addr}: {source} (set `admin` to another address or `off`)"
    )]
    BindAdmin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on metrics_listen address {addr}: {source} (set `metrics_listen` to another address or `off`)"
    )]
    BindMetrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread {index}: {source}")]
    Worker {
        index: usize,
        source: std::io::Error,
    },
    #[error("fast_path = connect: {0} (or set fast_path = auto to relay instead, or off)")]
    // Not a `#[source]`: the message already has the cause's text, once.
    FastPath(FastPathError),
}

impl ServerError {
    /// Whether the configuration asks for something this host cannot do (exit 64, like a bad
    /// setting) rather than a failure to start.
    pub fn is_usage(&self) -> bool {
        matches!(self, ServerError::FastPath(_))
    }
}

/// `route "name": ` for a named route, nothing for the implicit one.
fn route_prefix(route: &str) -> String {
    if route == IMPLICIT_ROUTE {
        String::new()
    } else {
        format!("route \"{route}\": ")
    }
}

/// A proxy with its listening sockets bound, ready to [`run`](Server::run).
pub struct Server {
    routes: Vec<BoundRoute>,
    labelled: bool,
    process: Config,
    admin: Option<std::net::TcpListener>,
    /// `metrics_listen`: the read-only endpoints only.
    read_only: Option<std::net::TcpListener>,
}

impl Server {
    /// Binds one route: the proxy as configured by flags, env and a file without routes.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        Server::bind_routes(Routes {
            routes: vec![crate::config::Route {
                name: IMPLICIT_ROUTE.into(),
                config,
            }],
            labelled: false,
        })
    }

    /// Binds every route's listeners and the admin endpoints.
    pub fn bind_routes(routes: Routes) -> Result<Server, ServerError> {
        let process = routes.process().clone();
        let labelled = routes.labelled;
        let routes = routes
            .routes
            .into_iter()
            .map(BoundRoute::bind)
            .collect::<Result<Vec<_>, _>>()?;
        let admin = match process.admin {
            Some(addr) => Some(
                listener::bind(addr, false)
                    .map_err(|source| ServerError::BindAdmin { addr, source })?,
            ),
            None => None,
        };
        let read_only = process
            .metrics_listen
            .map(|addr| {
                listener::bind(addr, false)
                    .map_err(|source| ServerError::BindMetrics { addr, source })
            })
            .transpose()?;
        Ok(Server {
            routes,
            labelled,
            process,
            admin,
            read_only,
        })
    }

    /// The address clients of the first route connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.routes[0].local_addr
    }

    /// The address route `name` listens on.
    pub fn route_addr(&self, name: &str) -> Option<SocketAddr> {
        self.routes
            .iter()
            .find(|r| &*r.name == name)
            .map(|r| r.local_addr)
    }

    /// The admin endpoint's address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The read-only endpoint's address (`metrics_listen`), if enabled.
    pub fn metrics_listen_addr(&self) -> Option<SocketAddr> {
        self.read_only.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` is cancelled, applying route sets received on `reloads`, then
    /// drains and returns. Must run inside a tokio runtime (any flavour).
    pub async fn run(
        self,
        shutdown: CancellationToken,
        mut reloads: mpsc::Receiver<Routes>,
    ) -> Result<(), ServerError> {
        let admin_addr = self.admin_addr();
        let read_only_addr = self.metrics_listen_addr();
        let Server {
            routes,
            labelled,
            process,
            admin,
            read_only,
        } = self;
        let order = Shutdown::default();
        let sources = Arc::new(SharedSources::default());
        let mut running = start_all(routes, &order, &sources, labelled)?;
        let (route_set_tx, routes_rx) = watch::channel(Arc::new(route_set(&running, labelled)));
        let admin_state = AdminState { routes: routes_rx };
        if let (Some(std_listener), Some(addr)) = (admin, admin_addr) {
            let stop = order.stop_admin.clone();
            spawn_endpoint(std_listener, admin_state.clone(), Exposure::Admin, stop)
                .map_err(|source| ServerError::BindAdmin { addr, source })?;
            info!(addr = %addr, "admin endpoint listening");
        }
        if let (Some(std_listener), Some(addr)) = (read_only, read_only_addr) {
            let stop = order.stop_admin.clone();
            spawn_endpoint(std_listener, admin_state, Exposure::ReadOnly, stop)
                .map_err(|source| ServerError::BindMetrics { addr, source })?;
            info!(addr = %addr, "read-only endpoint listening (metrics_listen)");
        }
        for route in &running {
            route.announce();
        }

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(new) = reloads.recv() => {
                    warn_process_fields(&process, new.process());
                    let labelled = new.labelled;
                    running = apply_reload(running, new, &order, &sources).await;
                    let _ = route_set_tx.send(Arc::new(route_set(&running, labelled)));
                }
            }
        }

        order.run(running).await;
        info!("stopped");
        Ok(())
    }
}

/// What the admin endpoints read about the running routes.
fn route_set(running: &[RunningRoute], labelled: bool) -> RouteSet {
    RouteSet {
        routes: running.iter().map(|r| r.view.clone()).collect(),
        labelled,
    }
}

/// Admin addresses cannot change in a running process: a reload keeps the old ones and says so.
fn warn_process_fields(old: &Config, new: &Config) {
    if new.admin != old.admin {
        warn!(running = ?old.admin, configured = ?new.admin, "reload: a new admin address needs a restart; keeping the old one");
    }
    if new.metrics_listen != old.metrics_listen {
        warn!(running = ?old.metrics_listen, configured = ?new.metrics_listen, "reload: a new metrics_listen address needs a restart; keeping the old one");
    }
}

/// Applies a reloaded route set, route by route (matched by name): unchanged and changed routes
/// reload in place (their connections stay); a route with a new listen address or a new
/// `fallback`, a replica route whose fallback route was started anew, and a removed route are
/// retired (stop accepting, their connections get `shutdown_grace`); new and moved routes are
/// bound and started. A route that cannot bind its address is reported and left out; the others
/// are applied.
async fn apply_reload(
    running: Vec<RunningRoute>,
    new: Routes,
    order: &Shutdown,
    sources: &Arc<SharedSources>,
) -> Vec<RunningRoute> {
    let labelled = new.labelled;
    let mut old: Vec<Option<RunningRoute>> = running.into_iter().map(Some).collect();
    let mut slots: Vec<Option<RunningRoute>> = Vec::with_capacity(new.routes.len());
    let mut pending = Vec::new();
    for (index, route) in new.routes.into_iter().enumerate() {
        let current = old
            .iter_mut()
            .find(|r| r.as_ref().is_some_and(|r| r.name == route.name))
            .and_then(Option::take);
        match current {
            Some(mut current) if !needs_restart(&current.config(), &route.config) => {
                current.reload(route.config).await;
                slots.push(Some(current));
            }
            current => {
                slots.push(None);
                pending.push((index, route, current));
            }
        }
    }
    // A route that falls back to a route started anew must follow that route's new primary.
    let restarted: Vec<Arc<str>> = pending.iter().map(|(_, r, _)| r.name.clone()).collect();
    for (index, slot) in slots.iter_mut().enumerate() {
        let follows_restarted = slot.as_ref().is_some_and(|r| {
            matches!(&r.config().fallback, Fallback::Route(t) if restarted.iter().any(|n| **n == **t))
        });
        if follows_restarted && let Some(route) = slot.take() {
            let config = (*route.config()).clone();
            let name = route.name.clone();
            pending.push((index, Route { name, config }, Some(route)));
        }
    }
    // Routes others fall back to first.
    pending.sort_by_key(|(_, route, _)| matches!(route.config.fallback, Fallback::Route(_)));
    for (index, route, current) in pending {
        let name = route.name.clone();
        // Close the old sockets first, so a route may move to a port another route just left.
        if let Some(current) = current {
            info!(route = %name, from = %current.local_addr, to = %route.config.listen, "reload: route restarts (new listen address or fallback)");
            retire(current, order);
        }
        let fallback = fallback_watch(&route.config, &slots);
        match BoundRoute::bind(route)
            .and_then(|bound| bound.start(order, sources, fallback, labelled))
        {
            Ok(started) => {
                started.announce();
                info!(route = %name, addr = %started.local_addr, "reload: route started");
                slots[index] = Some(started);
            }
            Err(e) => error!(route = %name, error = %e, "reload: cannot start route"),
        }
    }
    for removed in old.into_iter().flatten() {
        info!(route = %removed.name, "reload: route removed; draining its connections");
        retire(removed, order);
    }
    slots.into_iter().flatten().collect()
}

/// Starts bound routes, the routes others fall back to first; returns them in their order.
fn start_all(
    routes: Vec<BoundRoute>,
    order: &Shutdown,
    sources: &Arc<SharedSources>,
    labelled: bool,
) -> Result<Vec<RunningRoute>, ServerError> {
    let mut slots: Vec<Option<RunningRoute>> = routes.iter().map(|_| None).collect();
    let mut routes: Vec<(usize, BoundRoute)> = routes.into_iter().enumerate().collect();
    routes.sort_by_key(|(_, route)| matches!(route.config.fallback, Fallback::Route(_)));
    for (index, bound) in routes {
        let fallback = fallback_watch(&bound.config, &slots);
        slots[index] = Some(bound.start(order, sources, fallback, labelled)?);
    }
    Ok(slots.into_iter().flatten().collect())
}

/// The primary of the route `config` falls back to, among the started ones.
fn fallback_watch(config: &Config, started: &[Option<RunningRoute>]) -> Option<PrimaryWatch> {
    let Fallback::Route(target) = &config.fallback else {
        return None;
    };
    started
        .iter()
        .flatten()
        .find(|r| &*r.name == target)
        .map(|r| r.view.primary.clone())
}

/// Stops a route's accepting at once and drains it in the background, tracked by the process
/// shutdown.
fn retire(route: RunningRoute, order: &Shutdown) {
    route.stop_accepting();
    let grace = route.config().shutdown_grace;
    let name = route.name.clone();
    report_failure(name, order.retiring.spawn(route.finish(grace)));
}

/// Logs a route's drain that panicked instead of letting it vanish (the route's connections
/// are hard-stopped with the process either way).
fn report_failure(route: Arc<str>, drain: tokio::task::JoinHandle<()>) {
    tokio::spawn(async move {
        if let Err(e) = drain.await {
            let cause = describe_end(Err(e));
            error!(%route, %cause, "draining the route failed");
        }
    });
}

/// Serves `exposure` (admin or read-only endpoints) on a listener [`Server::bind`] bound, until
/// `stop` is cancelled.
fn spawn_endpoint(
    listener: std::net::TcpListener,
    state: AdminState,
    exposure: Exposure,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    tokio::spawn(admin::serve(listener, state, exposure, stop));
    Ok(())
}

/// Every process-wide handle the ordered shutdown needs, in the order [`Shutdown::run`] uses
/// them. Each route's tokens are children of these.
#[derive(Default)]
struct Shutdown {
    /// Cancelled first: the accept loops return, dropping their listening sockets.
    stop_accepting: CancellationToken,
    /// Every accept loop, so shutdown knows when every listening socket is closed.
    accepting: TaskTracker,
    /// Parent of every route's hard stop (itself parent of every primary's `leave` token).
    hard_stop: CancellationToken,
    /// Routes a reload removed, still draining.
    retiring: TaskTracker,
    /// Cancelled last: the admin endpoint stops answering (`/readyz` stays truthful until then).
    stop_admin: CancellationToken,
}

impl Shutdown {
    /// Stop accepting everywhere → each route waits its `shutdown_grace` for open connections,
    /// then hard-stops and stops discovery (all routes at once) → retired routes finish → admin.
    async fn run(self, running: Vec<RunningRoute>) {
        self.stop_accepting.cancel();
        self.accepting.close();
        self.accepting.wait().await; // every listening socket is closed now
        info!("shutting down: no longer accepting");
        let finishing: Vec<_> = running
            .into_iter()
            .map(|route| {
                let grace = route.config().shutdown_grace;
                (route.name.clone(), tokio::spawn(route.finish(grace)))
            })
            .collect();
        for (route, handle) in finishing {
            if let Err(e) = handle.await {
                let cause = describe_end(Err(e));
                error!(%route, %cause, "draining the route failed");
            }
        }
        self.hard_stop.cancel();
        self.retiring.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.retiring.wait()).await;
        self.stop_admin.cancel();
    }
}
