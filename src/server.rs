//! The running proxy: binds listeners, starts discovery, the workers and the admin endpoint,
//! applies reloads, and shuts down in order.
//!
//! ```text
//!   discovery task ──publish──▶ watch<Primary> ──read──▶ worker 0..N accept loops ──▶ connections
//!          ▲                                                                 │
//!          └──────────────── refresh (Notify) ◀── failed connects ───────────┘
//!   reload (SIGHUP) ──▶ watch<Arc<Config>> (new connections) · connection limit · discovery restart
//! ```
//! Worker 0 runs on the caller's runtime; workers 1..N each get a single-threaded runtime on their
//! own thread with an SO_REUSEPORT listener on the same address, all sharing the primary value,
//! the connection limit and the metrics.
//!
//! Shutdown: `shutdown` cancelled → stop accepting → open connections get `shutdown_grace` to
//! finish → the hard-stop token closes the rest (held clients get an ERR packet) → return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::control_loop;
use crate::control::primary::PrimaryPublisher;
use crate::control::supervisor::supervise;
use crate::data::connection::ConnContext;
use crate::data::fastpath::{self, FastPathError};
use crate::data::listener;
use crate::ops::admin::{self, AdminState, Exposure};
use crate::ops::history::FailoverHistory;
use crate::ops::metrics::Metrics;
use crate::ops::status::DiscoveryStatus;

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
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

/// A proxy with its listening sockets bound, ready to [`run`](Server::run).
pub struct Server {
    config: Arc<Config>,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    /// `metrics_listen`: the read-only routes only.
    read_only: Option<std::net::TcpListener>,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds `config.listen` once per worker (port 0 resolves to one port shared by all), and
    /// the admin endpoint.
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        let reuse_port = config.workers > 1;
        let bind = |addr| {
            listener::bind(addr, reuse_port).map_err(|source| ServerError::Bind { addr, source })
        };
        let first = bind(config.listen)?;
        let local_addr = first.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let mut listeners = vec![first];
        for _ in 1..config.workers {
            listeners.push(bind(local_addr)?);
        }
        let admin = match config.admin {
            Some(addr) => Some(
                listener::bind(addr, false)
                    .map_err(|source| ServerError::BindAdmin { addr, source })?,
            ),
            None => None,
        };
        let read_only = config
            .metrics_listen
            .map(|addr| {
                listener::bind(addr, false)
                    .map_err(|source| ServerError::BindMetrics { addr, source })
            })
            .transpose()?;
        Ok(Server {
            config: Arc::new(config),
            listeners,
            admin,
            read_only,
            local_addr,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin endpoint's address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The read-only endpoint's address (`metrics_listen`), if enabled.
    pub fn metrics_listen_addr(&self) -> Option<SocketAddr> {
        self.read_only.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The metrics this server updates.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` is cancelled, applying configurations received on `reloads`,
    /// then drains and returns. Must run inside a tokio runtime (any flavour).
    pub async fn run(
        self,
        shutdown: CancellationToken,
        mut reloads: mpsc::Receiver<Config>,
    ) -> Result<(), ServerError> {
        let admin_addr = self.admin_addr();
        let read_only_addr = self.metrics_listen_addr();
        let Server {
            config,
            listeners,
            admin,
            read_only,
            local_addr,
            metrics,
        } = self;
        let shutdown_order = Shutdown::default();
        let hard_stop = shutdown_order.hard_stop.clone();
        let (publisher, primary) = PrimaryPublisher::new(hard_stop.clone(), "discovery starting");
        let publisher = Arc::new(publisher);
        let refresh = Arc::new(Notify::new());
        let discovery_status = Arc::new(DiscoveryStatus::default());
        let failovers = Arc::new(FailoverHistory::default());
        let (config_tx, config_rx) = watch::channel(config.clone());
        let ctx = ConnContext {
            config: config_rx.clone(),
            primary: primary.clone(),
            metrics: metrics.clone(),
            refresh: refresh.clone(),
            hard_stop: hard_stop.clone(),
        };
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let start_discovery = |config: Arc<Config>| {
            DiscoveryTask::start(
                config,
                publisher.clone(),
                metrics.clone(),
                refresh.clone(),
                discovery_status.clone(),
                failovers.clone(),
            )
        };
        let mut discovery = start_discovery(config.clone());
        fastpath::steer::start(
            &config.fast_path,
            local_addr,
            primary.clone(),
            config.failover,
            metrics.clone(),
            shutdown.child_token(),
        )
        .map_err(ServerError::FastPath)?;

        let admin_state = AdminState {
            primary: primary.clone(),
            metrics: metrics.clone(),
            discovery: discovery_status.clone(),
            failovers: failovers.clone(),
            config: config_rx.clone(),
        };
        if let Some(std_listener) = admin {
            let addr = admin_addr.unwrap_or(local_addr);
            let stop = shutdown_order.stop_admin.clone();
            spawn_endpoint(std_listener, admin_state.clone(), Exposure::Admin, stop)
                .map_err(|source| ServerError::BindAdmin { addr, source })?;
            info!(addr = %addr, "admin endpoint listening");
        }
        if let Some(std_listener) = read_only {
            let addr = read_only_addr.unwrap_or(local_addr);
            let stop = shutdown_order.stop_admin.clone();
            spawn_endpoint(std_listener, admin_state, Exposure::ReadOnly, stop)
                .map_err(|source| ServerError::BindMetrics { addr, source })?;
            info!(addr = %addr, "read-only endpoint listening (metrics_listen)");
        }

        let mut threads = Vec::new();
        for (index, std_listener) in listeners.into_iter().enumerate() {
            let (ctx, limit, tracker, accepting, stop) = (
                ctx.clone(),
                limit.clone(),
                shutdown_order.connections.clone(),
                shutdown_order.accepting.clone(),
                shutdown_order.stop_accepting.clone(),
            );
            if index == 0 {
                let listener =
                    TcpListener::from_std(std_listener).map_err(|source| ServerError::Bind {
                        addr: local_addr,
                        source,
                    })?;
                tokio::spawn(
                    accepting
                        .track_future(listener::accept_loop(listener, ctx, limit, tracker, stop)),
                );
                continue;
            }
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || worker_thread(std_listener, ctx, limit, tracker, accepting, stop))
                .map_err(|source| ServerError::Worker { index, source })?;
            threads.push(thread);
        }
        info!(addr = %local_addr, workers = config.workers, max_connections = config.max_connections, "listening");

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(new) = reloads.recv() => {
                    let old = config_tx.borrow().clone();
                    let new = Arc::new(keep_restart_only_fields(&old, new));
                    adjust_limit(&limit, old.max_connections, new.max_connections);
                    let restart = discovery_changed(&old, &new);
                    if restart {
                        discovery.stop().await;
                        discovery = start_discovery(new.clone());
                    }
                    let _ = config_tx.send(new);
                    info!(discovery_restarted = restart, "configuration reloaded");
                }
            }
        }

        let grace = config_tx.borrow().shutdown_grace;
        shutdown_order.run(grace, discovery, threads).await;
        info!("stopped");
        Ok(())
    }
}

/// Serves `exposure` (admin or read-only routes) on a listener [`Server::bind`] bound, until
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

/// Every handle the ordered shutdown needs, documented in the order [`Shutdown::run`] uses them.
#[derive(Default)]
struct Shutdown {
    /// Cancelled first: the accept loops return, dropping their listening sockets.
    stop_accepting: CancellationToken,
    /// The accept loops, so shutdown knows when every listening socket is closed.
    accepting: TaskTracker,
    /// Every connection task (all workers); waited for up to `shutdown_grace`.
    connections: TaskTracker,
    /// Cancelled when the grace runs out: relays close, held clients get an ERR packet. Parent of
    /// every primary's `leave` token.
    hard_stop: CancellationToken,
    /// Cancelled last: the admin endpoint stops answering (`/readyz` stays truthful until then).
    stop_admin: CancellationToken,
}

impl Shutdown {
    /// Stop accepting → wait `grace` for open connections → hard stop → discovery → admin →
    /// worker threads.
    async fn run(
        self,
        grace: Duration,
        discovery: DiscoveryTask,
        threads: Vec<std::thread::JoinHandle<()>>,
    ) {
        self.stop_accepting.cancel();
        self.accepting.close();
        self.accepting.wait().await; // every listening socket is closed now
        self.connections.close();
        info!(
            open_connections = self.connections.len(),
            grace_s = grace.as_secs_f64(),
            "shutting down: no longer accepting; waiting for open connections"
        );
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            info!(
                open_connections = self.connections.len(),
                "shutdown grace expired: closing remaining connections"
            );
        }
        self.hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.connections.wait()).await;
        discovery.stop().await;
        self.stop_admin.cancel();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// A running discovery loop that a reload can replace.
struct DiscoveryTask {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl DiscoveryTask {
    fn start(
        config: Arc<Config>,
        publisher: Arc<PrimaryPublisher>,
        metrics: Arc<Metrics>,
        refresh: Arc<Notify>,
        status: Arc<DiscoveryStatus>,
        failovers: Arc<FailoverHistory>,
    ) -> DiscoveryTask {
        let stop = CancellationToken::new();
        let loop_stop = stop.clone();
        let handle = tokio::spawn(supervise(
            "control loop",
            metrics.clone(),
            status.clone(),
            stop.clone(),
            move || {
                control_loop::run(
                    config.clone(),
                    publisher.clone(),
                    metrics.clone(),
                    refresh.clone(),
                    status.clone(),
                    failovers.clone(),
                    loop_stop.child_token(),
                )
            },
        ));
        DiscoveryTask { stop, handle }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

/// Listening sockets and worker threads cannot change in a running process: a reload keeps
/// the old values and says so.
fn keep_restart_only_fields(old: &Config, mut new: Config) -> Config {
    if new.listen != old.listen {
        warn!(running = %old.listen, configured = %new.listen, "reload: a new listen address needs a restart; still listening on the old one");
        new.listen = old.listen;
    }
    if new.admin != old.admin {
        warn!(running = ?old.admin, configured = ?new.admin, "reload: a new admin address needs a restart; keeping the old one");
        new.admin = old.admin;
    }
    if new.metrics_listen != old.metrics_listen {
        warn!(running = ?old.metrics_listen, configured = ?new.metrics_listen, "reload: a new metrics_listen address needs a restart; keeping the old one");
        new.metrics_listen = old.metrics_listen;
    }
    if new.fast_path != old.fast_path {
        warn!(running = ?old.fast_path, configured = ?new.fast_path, "reload: a new fast_path or fast_path_cgroup needs a restart; keeping the old one");
        new.fast_path = old.fast_path.clone();
    }
    if new.workers != old.workers {
        warn!(
            running = old.workers,
            configured = new.workers,
            "reload: a new worker count needs a restart; keeping the old one"
        );
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

/// Body of worker threads 1..N: a single-threaded runtime running one accept loop, kept alive
/// until every connection (tracked across all workers) has finished.
fn worker_thread(
    listener: std::net::TcpListener,
    ctx: ConnContext,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    accepting: TaskTracker,
    stop: CancellationToken,
) {
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
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register worker listener");
                return;
            }
        };
        accepting
            .track_future(listener::accept_loop(
                listener,
                ctx,
                limit,
                tracker.clone(),
                stop,
            ))
            .await;
        tracker.wait().await;
    });
}
