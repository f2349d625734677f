//! One route at run time: its listening sockets, accept workers, primary, discovery loop and
//! connection limit.
//!
//! ```text
//!   BoundRoute (sockets bound) ──start──▶ RunningRoute
//!        discovery task ──publish──▶ watch<Primary> ──read──▶ worker 0..N accept loops ──▶ connections
//!               ▲                                                                │
//!               └──────────── refresh (Notify) ◀── failed connects ──────────────┘
//!   reload(new Config) ──▶ watch<Arc<Config>> (new connections) · limit · discovery restart
//!   retire ──▶ stop accepting · connections get shutdown_grace · hard stop · discovery stops
//! ```
//! Worker 0 runs on the caller's runtime; workers 1..N each get a single-threaded runtime on their
//! own thread with an SO_REUSEPORT listener on the same address. A route's tokens are children
//! of the process's [`Shutdown`](super::Shutdown) tokens, so a process shutdown reaches every
//! route, and a route removed by a reload can be stopped alone. With several routes, every task
//! of a route runs inside a `route` span, so its log lines carry the route's name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, info, warn};

use super::{ServerError, Shutdown};
use crate::config::{Config, Role, Route};
use crate::control::control_loop::{self, Wiring};
use crate::control::pool::PoolPublisher;
use crate::control::primary::{PrimaryPublisher, PrimaryWatch};
use crate::control::sources::shared::SharedSources;
use crate::control::supervisor::supervise;
use crate::data::connection::ConnContext;
use crate::data::fastpath;
use crate::data::listener;
use crate::ops::admin::RouteView;
use crate::ops::history::FailoverHistory;
use crate::ops::metrics::Metrics;
use crate::ops::status::DiscoveryStatus;

/// A route whose listening sockets are bound, not yet serving.
pub(super) struct BoundRoute {
    pub name: Arc<str>,
    pub config: Config,
    listeners: Vec<std::net::TcpListener>,
    pub local_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
}

impl BoundRoute {
    /// Binds `config.listen` once per worker (port 0 resolves to one port shared by all).
    pub fn bind(route: Route) -> Result<BoundRoute, ServerError> {
        let Route { name, config } = route;
        let reuse_port = config.workers > 1;
        let bind = |addr| {
            listener::bind(addr, reuse_port).map_err(|source| ServerError::Bind {
                route: name.to_string(),
                addr,
                source,
            })
        };
        let first = bind(config.listen)?;
        let local_addr = first.local_addr().map_err(|source| ServerError::Bind {
            route: name.to_string(),
            addr: config.listen,
            source,
        })?;
        let mut listeners = vec![first];
        for _ in 1..config.workers {
            listeners.push(bind(local_addr)?);
        }
        Ok(BoundRoute {
            name,
            config,
            listeners,
            local_addr,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Starts discovery and the accept workers. `labelled`: log lines carry the route's name.
    /// `fallback`: with `fallback = "<route>"`, that route's primary (the caller starts primary
    /// routes first).
    pub fn start(
        self,
        process: &Shutdown,
        sources: &Arc<SharedSources>,
        fallback: Option<PrimaryWatch>,
        labelled: bool,
    ) -> Result<RunningRoute, ServerError> {
        let BoundRoute {
            name,
            config,
            listeners,
            local_addr,
            metrics,
        } = self;
        let span = if labelled {
            tracing::info_span!("route", route = %name)
        } else {
            Span::none()
        };
        let tokens = RouteTokens {
            stop_accepting: process.stop_accepting.child_token(),
            hard_stop: process.hard_stop.child_token(),
            connections: TaskTracker::new(),
        };
        let config = Arc::new(config);
        let (publisher, primary) =
            PrimaryPublisher::new(tokens.hard_stop.clone(), "discovery starting");
        let (config_tx, config_rx) = watch::channel(config.clone());
        // The kernel fast path follows this route's primary until the route stops accepting
        // (shutdown, or a reload that removes or moves it): then connects reach the proxy again.
        // A replica route publishes no single target: its connects are relayed.
        let steered = (config.role == Role::Primary).then_some(&config.fast_path);
        span.in_scope(|| {
            let Some(fast_path) = steered else {
                return Ok(());
            };
            fastpath::steer::start(
                fast_path,
                local_addr,
                primary.clone(),
                config_rx.clone(),
                metrics.clone(),
                tokens.stop_accepting.child_token(),
            )
        })
        .map_err(ServerError::FastPath)?;
        let (pool_publisher, pool) =
            PoolPublisher::new(tokens.hard_stop.clone(), "discovery starting");
        let wiring = Wiring {
            publisher: Arc::new(publisher),
            pool: Arc::new(pool_publisher),
            metrics: metrics.clone(),
            refresh: Arc::new(Notify::new()),
            status: Arc::new(DiscoveryStatus::default()),
            history: Arc::new(FailoverHistory::default()),
            sources: sources.clone(),
        };
        let discovery = DiscoveryTask::start(config.clone(), &wiring, &span);
        let ctx = ConnContext {
            config: config_rx.clone(),
            primary: primary.clone(),
            pool,
            fallback,
            metrics: metrics.clone(),
            refresh: wiring.refresh.clone(),
            hard_stop: tokens.hard_stop.clone(),
        };
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let mut threads = Vec::new();
        for (index, std_listener) in listeners.into_iter().enumerate() {
            let worker = Worker {
                ctx: ctx.clone(),
                limit: limit.clone(),
                connections: tokens.connections.clone(),
                accepting: process.accepting.clone(),
                stop: tokens.stop_accepting.clone(),
                span: span.clone(),
            };
            if index == 0 {
                let listener =
                    TcpListener::from_std(std_listener).map_err(|source| ServerError::Bind {
                        route: name.to_string(),
                        addr: local_addr,
                        source,
                    })?;
                tokio::spawn(worker.accept(listener));
                continue;
            }
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || worker.run_on_own_thread(std_listener))
                .map_err(|source| ServerError::Worker { index, source })?;
            threads.push(thread);
        }
        let view = RouteView {
            name: name.clone(),
            listen: local_addr,
            primary,
            metrics,
            discovery: wiring.status.clone(),
            failovers: wiring.history.clone(),
            config: config_rx,
        };
        Ok(RunningRoute {
            name,
            local_addr,
            config_tx,
            limit,
            discovery,
            wiring,
            span,
            tokens,
            threads,
            view,
        })
    }
}

/// The tokens and tracker of one route (children of the process's).
struct RouteTokens {
    stop_accepting: CancellationToken,
    hard_stop: CancellationToken,
    connections: TaskTracker,
}

/// A serving route.
pub(super) struct RunningRoute {
    pub name: Arc<str>,
    pub local_addr: SocketAddr,
    config_tx: watch::Sender<Arc<Config>>,
    limit: Arc<Semaphore>,
    discovery: DiscoveryTask,
    wiring: Wiring,
    /// The route's log span (named routes only).
    span: Span,
    tokens: RouteTokens,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub view: RouteView,
}

impl RunningRoute {
    /// Logs the route's "listening" line (after the admin endpoint's: the line that says the
    /// proxy is up comes last).
    pub fn announce(&self) {
        let config = self.config();
        self.span.in_scope(|| {
            info!(addr = %self.local_addr, workers = config.workers, max_connections = config.max_connections, "listening");
        });
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config_tx.borrow().clone()
    }

    /// Applies a new configuration of the same route: new connections use it, the limit grows or
    /// shrinks in place, and discovery restarts only when something it depends on changed.
    /// The listen address and worker count need new sockets: [`needs_rebind`] tells the caller.
    pub async fn reload(&mut self, new: Config) {
        let old = self.config();
        let new = Arc::new(keep_workers(&old, new, &self.span));
        adjust_limit(&self.limit, old.max_connections, new.max_connections);
        let restart = discovery_changed(&old, &new);
        if restart {
            let old_task = std::mem::replace(
                &mut self.discovery,
                DiscoveryTask::start(new.clone(), &self.wiring, &self.span),
            );
            old_task.stop().await;
        }
        let _ = self.config_tx.send(new);
        self.span.in_scope(|| {
            info!(discovery_restarted = restart, "configuration reloaded");
        });
    }

    /// Stops accepting at once (the listening sockets close).
    pub fn stop_accepting(&self) {
        self.tokens.stop_accepting.cancel();
    }

    /// Waits up to `grace` for this route's connections, then closes the rest (held clients get
    /// an ERR packet), then stops discovery. Call after [`stop_accepting`](Self::stop_accepting).
    pub async fn finish(self, grace: Duration) {
        let RunningRoute {
            tokens,
            discovery,
            threads,
            span,
            ..
        } = self;
        tokens.connections.close();
        span.in_scope(|| {
            info!(
                open_connections = tokens.connections.len(),
                grace_s = grace.as_secs_f64(),
                "no longer accepting; waiting for open connections"
            );
        });
        if tokio::time::timeout(grace, tokens.connections.wait())
            .await
            .is_err()
        {
            span.in_scope(|| {
                info!(
                    open_connections = tokens.connections.len(),
                    "shutdown grace expired: closing remaining connections"
                );
            });
        }
        tokens.hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tokens.connections.wait()).await;
        discovery.stop().await;
        // Worker threads end once their accept loop and connections have; join them off the
        // runtime so a slow one cannot stall it.
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Does `new` need the route started afresh: a new listen address (new sockets), or a new
/// `fallback` (its connections' context holds the fallback route's primary)?
pub(super) fn needs_restart(old: &Config, new: &Config) -> bool {
    old.listen != new.listen || old.fallback != new.fallback
}

/// A running discovery loop that a reload can replace.
struct DiscoveryTask {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl DiscoveryTask {
    fn start(config: Arc<Config>, wiring: &Wiring, span: &Span) -> DiscoveryTask {
        let stop = CancellationToken::new();
        let loop_stop = stop.clone();
        let loop_wiring = wiring.clone();
        let handle = tokio::spawn(
            supervise(
                "control loop",
                wiring.metrics.clone(),
                wiring.status.clone(),
                stop.clone(),
                move || {
                    control_loop::run(config.clone(), loop_wiring.clone(), loop_stop.child_token())
                },
            )
            .instrument(span.clone()),
        );
        DiscoveryTask { stop, handle }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

/// Worker threads and the fast path cannot change in a running route: a reload keeps the old
/// values and says so.
fn keep_workers(old: &Config, mut new: Config, span: &Span) -> Config {
    if new.fast_path != old.fast_path {
        span.in_scope(|| {
            warn!(running = ?old.fast_path, configured = ?new.fast_path, "reload: a new fast_path or fast_path_cgroup needs a restart; keeping the old one");
        });
        new.fast_path = old.fast_path.clone();
    }
    if new.workers != old.workers {
        span.in_scope(|| {
            warn!(
                running = old.workers,
                configured = new.workers,
                "reload: a new worker count needs a restart; keeping the old one"
            );
        });
        new.workers = old.workers;
    }
    new
}

/// Does the discovery loop depend on anything that changed?
fn discovery_changed(old: &Config, new: &Config) -> bool {
    old.discovery != new.discovery
        || old.service != new.service
        || old.on_multiple != new.on_multiple
        || old.fence != new.fence
        || old.failover != new.failover
        || old.role != new.role
}

/// Grows or shrinks the connection limit in place. Shrinking waits for connections to end:
/// no open connection is dropped.
fn adjust_limit(limit: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        limit.add_permits(new - old);
    } else if new < old {
        let limit = limit.clone();
        let excess = u32::try_from(old - new).unwrap_or(u32::MAX);
        tokio::spawn(async move {
            if let Ok(permits) = limit.acquire_many_owned(excess).await {
                permits.forget();
            }
        });
    }
}

/// One accept loop of a route.
struct Worker {
    ctx: ConnContext,
    limit: Arc<Semaphore>,
    /// The route's connection tasks (all its workers).
    connections: TaskTracker,
    /// The process's accept loops, so shutdown knows when every listening socket is closed.
    accepting: TaskTracker,
    stop: CancellationToken,
    span: Span,
}

impl Worker {
    /// Accepts until `stop`; the future is tracked by `accepting`.
    fn accept(self, listener: TcpListener) -> impl Future<Output = ()> + Send + 'static {
        let Worker {
            ctx,
            limit,
            connections,
            accepting,
            stop,
            span,
        } = self;
        accepting
            .track_future(listener::accept_loop(
                listener,
                ctx,
                limit,
                connections,
                stop,
            ))
            .instrument(span)
    }

    /// Body of worker threads 1..N: a single-threaded runtime running one accept loop, kept alive
    /// until every connection of the route (tracked across all its workers) has finished.
    fn run_on_own_thread(self, listener: std::net::TcpListener) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot build worker runtime");
                return;
            }
        };
        let connections = self.connections.clone();
        runtime.block_on(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot register worker listener");
                    return;
                }
            };
            self.accept(listener).await;
            connections.wait().await;
        });
    }
}
