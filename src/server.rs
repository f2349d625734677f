//! The running proxy: binds listeners, starts discovery and the workers, and shuts down in order.
//!
//! ```text
//!   discovery task ──publish──▶ watch<Primary> ──read──▶ worker 0..N accept loops ──▶ connections
//!          ▲                                                                 │
//!          └──────────────── refresh (Notify) ◀── failed connects ───────────┘
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
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Config;
use crate::connection::ConnContext;
use crate::discovery;
use crate::listener;
use crate::metrics::Metrics;
use crate::primary::PrimaryPublisher;

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread {index}: {source}")]
    Worker {
        index: usize,
        source: std::io::Error,
    },
}

/// A proxy with its listening sockets bound, ready to [`run`](Server::run).
pub struct Server {
    config: Arc<Config>,
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds `config.listen` once per worker (port 0 resolves to one port shared by all).
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
        Ok(Server {
            config: Arc::new(config),
            listeners,
            local_addr,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics this server updates.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains and returns. Must run inside a tokio
    /// runtime (any flavour).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServerError> {
        let Server {
            config,
            listeners,
            local_addr,
            metrics,
        } = self;
        let hard_stop = CancellationToken::new();
        let stop_accepting = CancellationToken::new();
        let stop_discovery = CancellationToken::new();
        let (publisher, primary) = PrimaryPublisher::new(hard_stop.clone(), "discovery starting");
        let publisher = Arc::new(publisher);
        let refresh = Arc::new(Notify::new());
        let (_config_tx, config_rx) = watch::channel(config.clone());
        let ctx = ConnContext {
            config: config_rx,
            primary,
            metrics: metrics.clone(),
            refresh: refresh.clone(),
            hard_stop: hard_stop.clone(),
        };
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let tracker = TaskTracker::new();

        let discovery = tokio::spawn(discovery::run(
            config.clone(),
            publisher,
            metrics.clone(),
            refresh,
            stop_discovery.clone(),
        ));

        let mut threads = Vec::new();
        for (index, std_listener) in listeners.into_iter().enumerate() {
            let (ctx, limit, tracker, stop) = (
                ctx.clone(),
                limit.clone(),
                tracker.clone(),
                stop_accepting.clone(),
            );
            if index == 0 {
                let listener = into_tokio(std_listener, local_addr)?;
                tokio::spawn(listener::accept_loop(listener, ctx, limit, tracker, stop));
                continue;
            }
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || worker_thread(std_listener, ctx, limit, tracker, stop))
                .map_err(|source| ServerError::Worker { index, source })?;
            threads.push(thread);
        }
        info!(addr = %local_addr, workers = config.workers, max_connections = config.max_connections, "listening");

        shutdown.cancelled().await;
        stop_accepting.cancel();
        tracker.close();
        info!(
            open_connections = tracker.len(),
            grace_s = config.shutdown_grace.as_secs_f64(),
            "shutting down: no longer accepting; waiting for open connections"
        );
        if tokio::time::timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            info!(
                open_connections = tracker.len(),
                "shutdown grace expired: closing remaining connections"
            );
        }
        hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        stop_discovery.cancel();
        let _ = discovery.await;
        for thread in threads {
            let _ = thread.join();
        }
        info!("stopped");
        Ok(())
    }
}

fn into_tokio(
    listener: std::net::TcpListener,
    addr: SocketAddr,
) -> Result<TcpListener, ServerError> {
    TcpListener::from_std(listener).map_err(|source| ServerError::Bind { addr, source })
}

/// Body of worker threads 1..N: a single-threaded runtime running one accept loop, kept alive
/// until every connection (tracked across all workers) has finished.
fn worker_thread(
    listener: std::net::TcpListener,
    ctx: ConnContext,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
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
        listener::accept_loop(listener, ctx, limit, tracker.clone(), stop).await;
        tracker.wait().await;
    });
}
