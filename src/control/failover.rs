//! Failover policy and timeline: what happens to connections bound to a primary that was just
//! replaced, and one structured log line per failover saying what it cost.
//!
//! Discovery publishes a [`Change`]; [`Tracker::on_change`] applies `on_failover` to the old
//! primary's `leave` token (see [`primary`](super::primary)):
//! - `close` (default): cancel now — every connection to the old primary closes at once, so no
//!   write reaches a demoted node after the proxy knows better;
//! - `drain`: cancel after `drain_grace`, letting short transactions finish;
//! - `idle`: cancel the child token `leave_idle` now — each connection closes at its first idle
//!   moment (no statement in flight, no transaction open; see [`crate::data::idle`]) — and
//!   `leave` after `drain_grace` for the rest. A task follows the drain and logs its outcome
//!   ("idle drain finished": how many left idle, how many were closed at the deadline);
//! - `keep`: never cancel (connections end on their own; unsafe for writes).
//!
//! New and held clients need no action here: they read the new primary from the watch value.
//! When a new primary is published, a small task waits for the first client routed to it and
//! logs the timeline: old connections closed, held clients released, time to the first routed
//! client, and the gap without a primary (A → none → B). The same timeline is kept in the
//! [`FailoverHistory`] the status page shows.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::Instrument;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::primary::{Change, EpochStats};
use crate::config::{FailoverPolicy, OnFailover};
use crate::ops::history::{Failover, FailoverHistory};
use crate::ops::metrics::Metrics;
use crate::util::clock::rfc3339;

/// How long the timeline waits for a first client before logging without one.
const FIRST_CLIENT_WAIT: Duration = Duration::from_secs(60);

/// A primary that was lost and not yet replaced.
#[derive(Debug, Clone)]
struct Loss {
    at: Instant,
    old: String,
    closed: usize,
}

/// Remembers a lost primary until its replacement arrives, so the gap can be reported.
#[derive(Debug)]
pub struct Tracker {
    lost: Option<Loss>,
    /// Where each timeline is kept for the status page; outlives this tracker (discovery
    /// restarts make a new one).
    history: Arc<FailoverHistory>,
}

impl Tracker {
    pub fn new(history: Arc<FailoverHistory>) -> Tracker {
        Tracker {
            lost: None,
            history,
        }
    }

    /// Applies the policy to a published change, updates metrics and logs the timeline.
    pub fn on_change(
        &mut self,
        change: Change,
        policy: &FailoverPolicy,
        metrics: &std::sync::Arc<Metrics>,
    ) {
        let old = change.old.as_ref().map(ToString::to_string);
        let closed = match &change.old {
            None => 0,
            Some(old) => release(
                &old.to_string(),
                &change.old_leave,
                &change.old_leave_idle,
                &change.old_stats,
                policy,
            ),
        };
        if change.old.is_some() {
            metrics.failovers.inc();
        }
        metrics.set_primary(
            change
                .new
                .as_ref()
                .map(|b| (b.addr.to_string(), b.name.to_string())),
        );
        let Some(new) = change.new.as_ref().map(ToString::to_string) else {
            // A → none: clients are held from now on; the timeline completes when B arrives.
            warn!(
                old = old.as_deref().unwrap_or("none"),
                epoch = change.epoch,
                policy = ?policy.on_failover,
                closed_connections = closed,
                "primary lost; holding new clients"
            );
            if let Some(old) = old {
                self.lost.get_or_insert(Loss {
                    at: change.at,
                    old,
                    closed,
                });
            }
            return;
        };
        let lost = self.lost.take();
        let gap = lost.as_ref().map(|l| change.at - l.at).unwrap_or_default();
        let held_released = metrics.connections_held.get().max(0);
        if change.old.is_some() || lost.is_some() {
            metrics.failover_gap.observe(gap.as_secs_f64());
        }
        let previous = old.or_else(|| lost.as_ref().map(|l| l.old.clone()));
        let closed = closed + lost.map(|l| l.closed).unwrap_or(0);
        info!(
            old = previous.as_deref().unwrap_or("none"),
            new = %new,
            epoch = change.epoch,
            policy = ?policy.on_failover,
            closed_connections = closed,
            held_clients = held_released,
            gap_ms = gap.as_millis() as u64,
            "primary changed"
        );
        let Some(previous) = previous else {
            return; // first primary at start-up: no failover to time
        };
        let recorded = self.history.record(Failover {
            at: rfc3339(SystemTime::now()),
            old: previous.clone(),
            new: new.clone(),
            epoch: change.epoch,
            policy: policy.on_failover,
            gap_ms: gap.as_millis() as u64,
            closed_connections: closed,
            held_clients_released: held_released,
        });
        let history = self.history.clone();
        let new_stats = change.new_stats;
        let published = change.at;
        super::supervisor::spawn_logged("failover timeline", metrics.clone(), async move {
            let first =
                tokio::time::timeout(FIRST_CLIENT_WAIT, new_stats.wait_first_routed()).await;
            let first_routed_ms = first.ok().map(|at| (at - published).as_millis() as u64);
            history.first_client(recorded, first_routed_ms);
            info!(
                old = previous.as_str(),
                new = %new,
                closed_connections = closed,
                held_clients_released = held_released,
                first_client_routed_ms = first_routed_ms,
                gap_ms = gap.as_millis() as u64,
                "failover timeline"
            );
        });
    }
}

/// Applies `policy` to the connections bound to `old` through `leave` (and its child
/// `leave_idle`): a replaced primary, or a replica that left its pool. Returns how many were
/// closed at once.
pub fn release(
    old: &str,
    leave: &CancellationToken,
    leave_idle: &CancellationToken,
    stats: &Arc<EpochStats>,
    policy: &FailoverPolicy,
) -> usize {
    match policy.on_failover {
        OnFailover::Close => {
            let bound = stats.bound();
            leave.cancel();
            bound
        }
        OnFailover::Drain => {
            schedule_drain(leave.clone(), policy.drain_grace);
            0
        }
        OnFailover::Idle => {
            leave_idle.cancel();
            schedule_idle_drain(
                old.to_owned(),
                leave.clone(),
                stats.clone(),
                policy.drain_grace,
            );
            0
        }
        OnFailover::Keep => 0,
    }
}

/// Follows an idle drain of `old`'s connections: closes what is left when `grace` runs out and
/// logs how the drain went. The connections leave on their own (their `leave_idle` token is
/// cancelled); this task only counts, so polling `bound` every few milliseconds is enough.
fn schedule_idle_drain(
    old: String,
    leave: CancellationToken,
    stats: Arc<EpochStats>,
    grace: Duration,
) {
    let started = Instant::now();
    let draining = stats.bound();
    let idle_before = stats.left_idle();
    info!(
        old = %old,
        connections = draining,
        drain_grace_ms = grace.as_millis() as u64,
        "draining old connections at their idle moments"
    );
    let span = tracing::Span::current();
    tokio::spawn(
        async move {
            let deadline = started + grace;
            let closed_at_deadline = loop {
                if stats.bound() == 0 {
                    break 0;
                }
                if leave.is_cancelled() {
                    return; // shutdown: the hard stop closed everything
                }
                if Instant::now() >= deadline {
                    let rest = stats.bound();
                    leave.cancel();
                    break rest;
                }
                tokio::time::sleep(Duration::from_millis(5).min(grace)).await;
            };
            let left_idle = stats.left_idle() - idle_before;
            info!(
                old = %old,
                connections = draining,
                left_idle,
                closed_at_deadline,
                ended_by_client = draining.saturating_sub(left_idle + closed_at_deadline),
                drain_ms = started.elapsed().as_millis() as u64,
                "idle drain finished"
            );
        }
        .instrument(span),
    );
}

fn schedule_drain(token: tokio_util::sync::CancellationToken, grace: Duration) {
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(grace) => token.cancel(),
            // Already cancelled by shutdown: nothing left to drain.
            () = token.cancelled() => {}
        }
    });
}
