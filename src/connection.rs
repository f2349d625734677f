//! One client connection, from accept to close.
//!
//! 1. **Bind**: read the current [`Primary`] snapshot; if there is none, *hold* the client (it
//!    has sent nothing yet — MySQL servers speak first) until one is published.
//! 2. **Connect** to the primary with a timeout, TCP_NODELAY, keepalive and TCP_USER_TIMEOUT, and
//!    wait for the server's first bytes (the greeting) without consuming them: a server that
//!    accepts TCP but never speaks is hung, and counts as a failed connect.
//! 3. A failed connect is not final: the client stays held, discovery is asked for a fresh look,
//!    and the next attempt goes to whatever primary is current, until `hold_timeout` runs out.
//!    Only then does the client get a MySQL ERR packet naming the cause — never a bare close.
//! 4. **Relay** bytes both ways until both sides finish, or until the snapshot's `leave` token is
//!    cancelled (the primary was replaced, or the proxy is stopping), which closes both sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span};

use crate::config::Config;
use crate::metrics::{Direction, Metrics};
use crate::mysql_packet::{ErrReason, err_packet};
use crate::primary::{Backend, Primary, PrimaryWatch};
use crate::relay;

/// What every connection of a worker shares.
#[derive(Debug, Clone)]
pub struct ConnContext {
    /// Live configuration; read once per connection, so a reload affects new connections only.
    pub config: watch::Receiver<Arc<Config>>,
    pub primary: PrimaryWatch,
    pub metrics: Arc<Metrics>,
    /// Poked after a failed connect so discovery looks again now instead of at its next poll.
    pub refresh: Arc<Notify>,
    /// Cancelled on hard stop: held clients get an ERR packet, relays close.
    pub hard_stop: CancellationToken,
}

/// Why a client could not be given a backend: becomes its ERR packet.
#[derive(Debug)]
struct Refusal {
    reason: ErrReason,
    message: String,
}

/// Serves one accepted client until it closes.
pub async fn serve(client: TcpStream, client_addr: SocketAddr, ctx: ConnContext) {
    let span = debug_span!("conn", client = %client_addr);
    serve_inner(client, ctx).instrument(span).await
}

async fn serve_inner(mut client: TcpStream, mut ctx: ConnContext) {
    let config = ctx.config.borrow().clone();
    let started = Instant::now();
    ctx.metrics.connections_accepted.inc();
    ctx.metrics.connections_active.inc();
    let _active = GaugeGuard(ctx.metrics.clone(), |m| m.connections_active.dec());

    // Boxed: the connect phase (timers, watch, connect futures) is the largest state of a
    // connection; on the heap it is freed once relaying starts, instead of staying in every
    // idle connection's task for its whole life.
    let (mut backend, bound) = match Box::pin(bind_backend(&config, &mut ctx)).await {
        Ok(pair) => pair,
        Err(refusal) => {
            ctx.metrics.err_packet_sent(refusal.reason);
            debug!(reason = refusal.reason.label(), message = %refusal.message, "refusing client");
            let packet = err_packet(refusal.reason, &refusal.message);
            // Best effort: the client may already be gone.
            let _ = client.write_all(&packet).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    // Counted for the failover timeline (how many connections a failover closes) and per backend.
    let _bound = bound.stats.bind();
    let backend_gauge = bound.backend.as_ref().map(|b| {
        bound
            .stats
            .backend_gauge(|| ctx.metrics.backend_gauge(b.addr))
    });
    if let Some(g) = &backend_gauge {
        g.inc();
    }
    let _backend_count = DecOnDrop(backend_gauge);
    let backend_name = bound.backend.as_ref().map(ToString::to_string);
    debug!(
        backend = backend_name.as_deref(),
        epoch = bound.epoch,
        "relaying"
    );

    let outcome = tokio::select! {
        result = relay::relay(config.relay, &mut client, &mut backend) => Some(result),
        () = bound.leave.cancelled() => None,
    };
    let elapsed = started.elapsed();
    match outcome {
        Some(Ok(stats)) => {
            ctx.metrics
                .add_bytes(Direction::Upstream, stats.client_to_backend);
            ctx.metrics
                .add_bytes(Direction::Downstream, stats.backend_to_client);
            let closed_by = stats.first_eof.map(|s| s.to_string());
            debug!(
                backend = backend_name.as_deref(),
                bytes_up = stats.client_to_backend,
                bytes_down = stats.backend_to_client,
                duration_ms = elapsed.as_millis() as u64,
                closed_by = closed_by.as_deref().unwrap_or("both"),
                "connection closed"
            );
        }
        Some(Err(e)) => {
            ctx.metrics
                .add_bytes(Direction::Upstream, e.stats.client_to_backend);
            ctx.metrics
                .add_bytes(Direction::Downstream, e.stats.backend_to_client);
            debug!(
                backend = backend_name.as_deref(),
                side = %e.side,
                error = %e.source,
                duration_ms = elapsed.as_millis() as u64,
                "connection failed"
            );
        }
        None => {
            let why = if ctx.hard_stop.is_cancelled() {
                "shutdown"
            } else {
                ctx.metrics.connections_closed_by_failover.inc();
                "failover"
            };
            debug!(
                backend = backend_name.as_deref(),
                closed_by = why,
                duration_ms = elapsed.as_millis() as u64,
                "connection closed by proxy"
            );
        }
    }
}

/// Holds the client until a primary accepts a connection and greets, or refuses it.
async fn bind_backend(
    config: &Config,
    ctx: &mut ConnContext,
) -> Result<(TcpStream, Primary), Refusal> {
    let deadline = tokio::time::Instant::now() + config.hold_timeout;
    let mut held: Option<GaugeGuard> = None;
    let mut last_failure: Option<(Backend, String)> = None;
    let mut retry_delay = Duration::from_millis(50);
    loop {
        let snapshot = ctx.primary.borrow_and_update().clone();
        let Some(backend) = snapshot.backend.clone() else {
            if held.is_none() {
                held = Some(hold(&ctx.metrics, config)?);
            }
            wait_for_change(ctx, deadline, None).await?;
            if tokio::time::Instant::now() >= deadline {
                return Err(no_primary(config, ctx, last_failure));
            }
            continue;
        };
        let attempt = tokio::select! {
            result = connect(config, &backend) => result,
            // A new primary was published while we were connecting (the old one may hang
            // until connect_timeout or the greeting timeout): go to the new one now.
            Ok(()) = ctx.primary.changed() => continue,
            () = tokio::time::sleep_until(deadline) => {
                // Report the cause we know (e.g. an earlier "no greeting"), else this attempt.
                let failure = last_failure.unwrap_or_else(|| {
                    let pending = format!(
                        "still connecting when hold_timeout ({}) ran out",
                        humantime::format_duration(config.hold_timeout)
                    );
                    (backend, pending)
                });
                return Err(no_primary(config, ctx, Some(failure)));
            }
            () = ctx.hard_stop.cancelled() => return Err(shutting_down()),
        };
        match attempt {
            Ok(stream) => return Ok((stream, snapshot)),
            Err(error) => {
                ctx.metrics.backend_connect_errors.inc();
                ctx.refresh.notify_one();
                debug!(backend = %backend, %error, "backend connect failed; client held");
                last_failure = Some((backend, error));
                if held.is_none() {
                    held = Some(hold(&ctx.metrics, config)?);
                }
                // Retry when the primary changes, or after a short, growing delay.
                wait_for_change(ctx, deadline, Some(retry_delay)).await?;
                retry_delay = (retry_delay * 2).min(Duration::from_secs(1));
                if tokio::time::Instant::now() >= deadline {
                    return Err(no_primary(config, ctx, last_failure));
                }
            }
        }
    }
}

/// Waits until the primary changes, `delay` passes, or the hold deadline is reached.
/// Fails only on hard stop.
async fn wait_for_change(
    ctx: &mut ConnContext,
    deadline: tokio::time::Instant,
    delay: Option<Duration>,
) -> Result<(), Refusal> {
    let until = match delay {
        Some(d) => deadline.min(tokio::time::Instant::now() + d),
        None => deadline,
    };
    tokio::select! {
        _ = timeout_at(until, ctx.primary.changed()) => Ok(()),
        () = ctx.hard_stop.cancelled() => Err(shutting_down()),
    }
}

fn shutting_down() -> Refusal {
    Refusal {
        reason: ErrReason::ShuttingDown,
        message: "consul-mysql-proxy: shutting down".to_owned(),
    }
}

/// The ERR packet for a client whose hold time ran out.
fn no_primary(
    config: &Config,
    ctx: &ConnContext,
    last_failure: Option<(Backend, String)>,
) -> Refusal {
    let waited = humantime::format_duration(config.hold_timeout);
    let current = ctx.primary.borrow();
    match (&current.backend, last_failure) {
        (Some(_), Some((backend, error))) => Refusal {
            reason: ErrReason::BackendUnreachable,
            message: format!(
                "consul-mysql-proxy: primary {backend} of service \"{}\" unreachable after {waited}: {error}",
                config.service
            ),
        },
        _ => Refusal {
            reason: ErrReason::NoPrimary,
            message: format!(
                "consul-mysql-proxy: no primary for service \"{}\" after {waited}: {}",
                config.service, current.reason
            ),
        },
    }
}

/// Counts the client as held, or refuses it when `max_held` clients are held already.
fn hold(metrics: &Arc<Metrics>, config: &Config) -> Result<GaugeGuard, Refusal> {
    // `inc` returns the previous value: the check and the increment are one atomic step.
    let before = metrics.connections_held.inc();
    let guard = GaugeGuard(metrics.clone(), |m| m.connections_held.dec());
    if usize::try_from(before).unwrap_or(0) >= config.max_held {
        return Err(Refusal {
            reason: ErrReason::TooManyHeld,
            message: format!(
                "consul-mysql-proxy: too many clients waiting for a primary of service \"{}\" (max_held = {})",
                config.service, config.max_held
            ),
        });
    }
    Ok(guard)
}

/// Decrements a gauge on drop.
struct DecOnDrop(Option<prometheus_client::metrics::gauge::Gauge>);

impl Drop for DecOnDrop {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            g.dec();
        }
    }
}

/// Runs its closure on drop: keeps gauges right on every exit path.
struct GaugeGuard(Arc<Metrics>, fn(&Metrics) -> i64);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.1)(&self.0);
    }
}

/// Connects to `backend` and waits for its greeting. The error is a one-line reason.
async fn connect(config: &Config, backend: &Backend) -> Result<TcpStream, String> {
    let socket = match backend.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("cannot create socket: {e}"))?;
    let stream =
        match tokio::time::timeout(config.connect_timeout, socket.connect(backend.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "connect timed out after {}",
                    humantime::format_duration(config.connect_timeout)
                ));
            }
        };
    tune_backend_socket(config, &stream).map_err(|e| format!("cannot set socket options: {e}"))?;
    wait_for_greeting(config.backend_greeting_timeout, &stream).await?;
    Ok(stream)
}

fn tune_backend_socket(config: &Config, stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = SockRef::from(stream);
    if let Some(idle) = config.backend_keepalive {
        // Probe every third of the idle time, three times: a dead peer is found in ~2×idle.
        let interval = (idle / 3).max(Duration::from_secs(1));
        let keepalive = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(3);
        sock.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(user_timeout) = config.backend_user_timeout {
        sock.set_tcp_user_timeout(Some(user_timeout))?;
    }
    Ok(())
}

/// Waits until the server has sent something, without consuming it (MySQL servers speak first).
async fn wait_for_greeting(limit: Duration, stream: &TcpStream) -> Result<(), String> {
    let mut header = [0u8; 4];
    match tokio::time::timeout(limit, stream.peek(&mut header)).await {
        Ok(Ok(0)) => Err("backend closed the connection before its greeting".to_owned()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("error waiting for greeting: {e}")),
        Err(_) => Err(format!(
            "backend sent no greeting within {} (hung server?)",
            humantime::format_duration(limit)
        )),
    }
}
