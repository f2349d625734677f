//! One client connection, from accept to close.
//!
//! 1. **Bind**: read the current [`Primary`] snapshot — for a replica route, a pool member picked
//!    by `balance` ([`upstream`](super::upstream)); if there is none, *hold* the client (it
//!    has sent nothing yet — MySQL servers speak first) until one is published.
//! 2. **Connect** to the primary with a timeout, TCP_NODELAY, keepalive and TCP_USER_TIMEOUT, and
//!    wait for the server's first bytes (the greeting) without consuming them: a server that
//!    accepts TCP but never speaks is hung, and counts as a failed connect.
//! 3. A failed connect is not final: the client stays held, discovery is asked for a fresh look,
//!    and the next attempt goes to whatever primary is current, until `hold_timeout` runs out.
//!    Only then does the client get a MySQL ERR packet naming the cause — never a bare close.
//! 4. **Relay** bytes both ways until both sides finish, or until the snapshot's `leave` token is
//!    cancelled (the primary was replaced, or the proxy is stopping), which closes both sockets —
//!    or, when only its `leave_idle` child is cancelled (`on_failover = idle`), at the
//!    connection's first idle moment ([`leave`](super::leave)). The idle detector's observer is
//!    allocated only while `on_failover = idle` is configured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use tracing::field::display;
use tracing::{Instrument, debug, debug_span};

use super::connect::{ConnectError, connect};
use super::idle::Observer;
use super::leave::{self, Ended};
use super::mysql_packet::{ErrReason, err_packet};
use super::proxy_protocol::v2_header;
use super::relay::Side;
use super::upstream::{Target, Upstream};
use crate::config::{Config, OnFailover, ProxyProtocol};
use crate::control::pool::PoolWatch;
use crate::control::primary::{Backend, BoundGuard, Primary, PrimaryWatch};
use crate::ops::metrics::{GaugeGuard, Metrics};

/// What every connection of a worker shares.
#[derive(Debug, Clone)]
pub struct ConnContext {
    /// Live configuration; read once per connection, so a reload affects new connections only.
    pub config: watch::Receiver<Arc<Config>>,
    pub primary: PrimaryWatch,
    /// The route's replica pool, used when the live config says `role = replica`.
    pub pool: PoolWatch,
    /// `fallback = "<route>"`: that route's primary, used while the pool is empty.
    pub fallback: Option<PrimaryWatch>,
    pub metrics: Arc<Metrics>,
    /// Poked after a failed connect so discovery looks again now instead of at its next poll.
    pub refresh: Arc<Notify>,
    /// Cancelled on hard stop: held clients get an ERR packet, relays close.
    pub hard_stop: CancellationToken,
}

/// The last reason a held client's attempts failed.
#[derive(Debug, thiserror::Error)]
enum HoldFailure {
    #[error(transparent)]
    Connect(ConnectError),
    #[error("still connecting when hold_timeout ({}) ran out", humantime::format_duration(*.0))]
    StillConnecting(Duration),
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
    let _active = GaugeGuard::inc(ctx.metrics.connections_active.clone());

    // Boxed: the connect phase (timers, watch, connect futures) is the largest state of a
    // connection; on the heap it is freed once relaying starts, instead of staying in every
    // idle connection's task for its whole life.
    let proxy_header = match config.proxy_protocol {
        ProxyProtocol::Off => None,
        ProxyProtocol::V2 => match (client.peer_addr(), client.local_addr()) {
            (Ok(source), Ok(destination)) => Some(v2_header(source, destination)),
            // The client is already gone: nothing to proxy.
            _ => return,
        },
    };
    let (mut backend, bound, picked) = match Box::pin(bind_backend(
        &config,
        &mut ctx,
        proxy_header.as_deref(),
    ))
    .await
    {
        Ok(pair) => pair,
        Err(refusal) => {
            ctx.metrics.err_packet_sent(refusal.reason.label());
            debug!(reason = refusal.reason.label(), message = %refusal.message, "refusing client");
            let packet = err_packet(refusal.reason, &refusal.message);
            // Best effort: the client may already be gone.
            let _ = client.write_all(&packet).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    // Counted for the failover timeline (how many connections a failover closes) and per backend.
    // A pool member counted the connection when it was picked.
    let _bound = picked.unwrap_or_else(|| bound.stats.bind());
    let _backend_count = bound.backend.as_ref().map(|b| {
        GaugeGuard::inc(
            bound
                .stats
                .backend_gauge(|| ctx.metrics.backend_gauge(b.addr)),
        )
    });
    // Formatted only when a debug event is actually written, not on every connection.
    let backend_name = || bound.backend.as_ref().map(display);
    debug!(backend = backend_name(), epoch = bound.epoch, "relaying");

    // Only the idle policy needs to follow the protocol; the others pay nothing for it.
    let mut observer =
        (config.failover.on_failover == OnFailover::Idle).then(|| Box::new(Observer::new()));
    let outcome = leave::relay(
        config.relay,
        &mut client,
        &mut backend,
        &bound,
        observer.as_deref_mut(),
    )
    .await;
    let elapsed = started.elapsed();
    match outcome {
        Ended::Relay(Ok(stats)) if stats.left_idle => {
            ctx.metrics
                .add_relayed(stats.from_client, stats.from_backend);
            ctx.metrics.connections_closed_by_failover.inc();
            ctx.metrics.connections_closed_idle.inc();
            bound.stats.note_left_idle();
            debug!(
                backend = backend_name(),
                closed_by = "failover",
                at = "idle moment",
                protocol = if observer.as_deref().is_some_and(Observer::readable) {
                    "readable"
                } else {
                    "opaque"
                },
                duration_ms = elapsed.as_millis() as u64,
                "connection closed by proxy"
            );
        }
        Ended::Relay(Ok(stats)) => {
            ctx.metrics
                .add_relayed(stats.from_client, stats.from_backend);
            debug!(
                backend = backend_name(),
                bytes_from_client = stats.from_client,
                bytes_from_backend = stats.from_backend,
                duration_ms = elapsed.as_millis() as u64,
                closed_by = stats.first_eof.map_or("both", Side::name),
                "connection closed"
            );
        }
        Ended::Relay(Err(e)) => {
            ctx.metrics
                .add_relayed(e.stats.from_client, e.stats.from_backend);
            debug!(
                backend = backend_name(),
                side = %e.side,
                error = %e.source,
                duration_ms = elapsed.as_millis() as u64,
                "connection failed"
            );
        }
        Ended::Closed => {
            let why = if ctx.hard_stop.is_cancelled() {
                "shutdown"
            } else {
                ctx.metrics.connections_closed_by_failover.inc();
                "failover"
            };
            debug!(
                backend = backend_name(),
                closed_by = why,
                duration_ms = elapsed.as_millis() as u64,
                "connection closed by proxy"
            );
        }
    }
}

/// Holds the client until a primary (or pool member) accepts a connection and greets, or
/// refuses it. Returns the socket, the snapshot it belongs to and, for a pool member, the guard
/// counting the connection on it.
async fn bind_backend(
    config: &Config,
    ctx: &mut ConnContext,
    proxy_header: Option<&[u8]>,
) -> Result<(TcpStream, Primary, Option<BoundGuard>), Refusal> {
    let deadline = tokio::time::Instant::now() + config.hold_timeout;
    let mut held: Option<GaugeGuard> = None;
    let mut last_failure: Option<(Backend, HoldFailure)> = None;
    let mut retry_delay = Duration::from_millis(50);
    let mut upstream = Upstream::new(config, ctx);
    loop {
        let Target {
            bound: snapshot,
            guard,
        } = upstream.current();
        let Some(backend) = snapshot.backend.clone() else {
            if held.is_none() {
                held = Some(hold(&ctx.metrics, config)?);
            }
            wait_for_change(&mut upstream, &ctx.hard_stop, deadline, None).await?;
            if tokio::time::Instant::now() >= deadline {
                return Err(no_primary(config, &upstream, last_failure));
            }
            continue;
        };
        let attempt = tokio::select! {
            // Ends at the hold deadline too (`OutOfTime`): one timer for the whole attempt.
            result = connect(config, &backend, proxy_header, deadline) => result,
            // A new primary was published while we were connecting (the old one may hang
            // until connect_timeout or the greeting timeout): go to the new one now.
            Ok(()) = upstream.changed() => continue,
            () = ctx.hard_stop.cancelled() => return Err(shutting_down()),
        };
        match attempt {
            Ok(stream) => {
                // A server the kernel fast path saw refusing accepts again.
                crate::data::fastpath::note_reachable(backend.addr);
                return Ok((stream, snapshot, guard));
            }
            Err(ConnectError::OutOfTime) => {
                // Report the cause we know (e.g. an earlier "no greeting"), else this attempt.
                let failure = last_failure
                    .unwrap_or((backend, HoldFailure::StillConnecting(config.hold_timeout)));
                return Err(no_primary(config, &upstream, Some(failure)));
            }
            Err(error) => {
                drop(guard);
                upstream.failed(backend.addr);
                ctx.metrics.backend_connect_error(error.label());
                ctx.refresh.notify_one();
                debug!(backend = %backend, %error, reason = error.label(), "backend connect failed; client held");
                last_failure = Some((backend, HoldFailure::Connect(error)));
                if held.is_none() {
                    held = Some(hold(&ctx.metrics, config)?);
                }
                // Retry when the primary changes, or after a short, growing delay.
                wait_for_change(&mut upstream, &ctx.hard_stop, deadline, Some(retry_delay)).await?;
                retry_delay = (retry_delay * 2).min(Duration::from_secs(1));
                if tokio::time::Instant::now() >= deadline {
                    return Err(no_primary(config, &upstream, last_failure));
                }
            }
        }
    }
}

/// Waits until the primary (or pool) changes, `delay` passes, or the hold deadline is reached.
/// Fails only on hard stop.
async fn wait_for_change(
    upstream: &mut Upstream,
    hard_stop: &CancellationToken,
    deadline: tokio::time::Instant,
    delay: Option<Duration>,
) -> Result<(), Refusal> {
    let until = match delay {
        Some(d) => deadline.min(tokio::time::Instant::now() + d),
        None => deadline,
    };
    tokio::select! {
        _ = timeout_at(until, upstream.changed()) => Ok(()),
        () = hard_stop.cancelled() => Err(shutting_down()),
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
    upstream: &Upstream,
    last_failure: Option<(Backend, HoldFailure)>,
) -> Refusal {
    let waited = humantime::format_duration(config.hold_timeout);
    if let Some((reachable, reason)) = upstream.pool_state() {
        return no_replica(config, reachable, &reason, last_failure);
    }
    let current = upstream.primary_now();
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

/// The ERR packet for a client of a replica route whose hold time ran out.
fn no_replica(
    config: &Config,
    reachable: bool,
    reason: &str,
    last_failure: Option<(Backend, HoldFailure)>,
) -> Refusal {
    let waited = humantime::format_duration(config.hold_timeout);
    match (reachable, last_failure) {
        (true, Some((backend, error))) => Refusal {
            reason: ErrReason::BackendUnreachable,
            message: format!(
                "consul-mysql-proxy: server {backend} of service \"{}\" unreachable after {waited}: {error}",
                config.service
            ),
        },
        _ => Refusal {
            reason: ErrReason::NoReplica,
            message: format!(
                "consul-mysql-proxy: no healthy replica for service \"{}\" after {waited}: {reason}",
                config.service
            ),
        },
    }
}

/// Counts the client as held, or refuses it when `max_held` clients are held already.
fn hold(metrics: &Metrics, config: &Config) -> Result<GaugeGuard, Refusal> {
    // `inc` returns the previous value: the check and the increment are one atomic step.
    let (guard, before) = GaugeGuard::inc_returning_previous(metrics.connections_held.clone());
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
