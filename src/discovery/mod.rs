//! Discovery: where the primary comes from, and the loop that turns what a source observes into
//! the published [`Primary`](crate::primary::Primary).
//!
//! A source (static, Consul health/catalog/KV, DNS) runs as its own task and sends
//! [`Observation`]s over a channel. [`run`] receives them, runs the shared
//! [`selection`](crate::selection) step against the current primary, publishes the result, and
//! hands every change to the [`failover`](crate::failover) policy. A source that cannot reach its
//! authority sends [`Observation::Unavailable`]: the last primary is kept (Consul down is not the
//! database down) and the error is logged on the discovery side — unless `consul_stale_after` is
//! set and that long has passed without a usable answer.

pub mod backoff;
pub mod consul;
pub mod dns;
pub mod static_source;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Config, Discovery};
use crate::failover;
use crate::fence::{self, Verdict};
use crate::metrics::Metrics;
use crate::primary::{Backend, PrimaryPublisher};
use crate::selection::{Candidate, Selection, select};
use crate::status::DiscoveryStatus;

/// What a source saw in one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The authority answered: these servers claim to be the primary (possibly none).
    Candidates(Vec<Candidate>),
    /// The authority answered that there is no primary, and why (e.g. leader key released).
    NoPrimary(String),
    /// The authority could not be asked or gave an unusable answer: keep the last primary.
    Unavailable(String),
}

/// Sending half handed to a source task.
pub type ObservationSender = mpsc::Sender<Observation>;

/// Runs the configured source and publishes what it finds until `stop` is cancelled.
pub async fn run(
    config: Arc<Config>,
    publisher: Arc<PrimaryPublisher>,
    metrics: Arc<Metrics>,
    refresh: Arc<Notify>,
    status: Arc<DiscoveryStatus>,
    stop: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(16);
    let (describe, stale_after, source_task) = match &config.discovery {
        Discovery::Static { backend } => (
            format!("static backend {backend}"),
            None,
            tokio::spawn(static_source::run(*backend, tx, stop.clone())),
        ),
        Discovery::Consul(consul_config) => (
            consul::describe(consul_config, &config.service),
            consul_config.stale_after,
            tokio::spawn(consul::run(
                consul_config.clone(),
                config.service.clone(),
                tx,
                refresh,
                metrics.clone(),
                stop.clone(),
            )),
        ),
        Discovery::Dns(dns_config) => (
            dns::describe(dns_config),
            None,
            tokio::spawn(dns::run(
                dns_config.clone(),
                tx,
                refresh,
                metrics.clone(),
                stop.clone(),
            )),
        ),
    };
    info!(source = %describe, verify_writable = config.fence.is_some(), "discovery started");
    status.set_source(&describe);
    let verify_every = config
        .fence
        .as_ref()
        .map_or(Duration::from_secs(3600), |f| f.interval);
    let mut verify_tick = tokio::time::interval(verify_every);
    verify_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = State {
        config: &config,
        publisher: &publisher,
        metrics: &metrics,
        status: &status,
        tracker: failover::Tracker::default(),
        desired: None,
        desired_reason: String::new(),
        last_reason: String::new(),
        last_success: Instant::now(),
        unavailable_since: None,
        last_error: String::new(),
    };
    loop {
        let stale_deadline = stale_after.map(|after| state.last_success + after);
        tokio::select! {
            observation = rx.recv() => match observation {
                Some(observation) => state.apply(observation, &describe).await,
                None => break,
            },
            () = sleep_until_opt(stale_deadline), if state.primary_known() => {
                state.give_up_stale(stale_after.unwrap_or_default());
            }
            _ = verify_tick.tick(), if config.fence.is_some() && state.desired.is_some() => {
                state.reconcile().await;
            }
            () = stop.cancelled() => break,
        }
    }
    source_task.abort();
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Longest a fencing check may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// The discovery loop's memory between observations.
struct State<'a> {
    config: &'a Config,
    publisher: &'a PrimaryPublisher,
    metrics: &'a Arc<Metrics>,
    status: &'a DiscoveryStatus,
    tracker: failover::Tracker,
    /// The primary the source and selection want, before fencing.
    desired: Option<Backend>,
    desired_reason: String,
    /// Last published reason logged, so an unchanged situation is not logged on every poll.
    last_reason: String,
    last_success: Instant,
    unavailable_since: Option<Instant>,
    /// Last discovery error logged at warn.
    last_error: String,
}

impl State<'_> {
    fn primary_known(&self) -> bool {
        self.publisher.current().backend.is_some()
    }

    async fn apply(&mut self, observation: Observation, describe: &str) {
        let selection = match observation {
            Observation::Candidates(candidates) => {
                let current = self.publisher.current().backend;
                select(
                    current.as_ref(),
                    &candidates,
                    self.config.on_multiple,
                    describe,
                )
            }
            Observation::NoPrimary(reason) => Selection {
                backend: None,
                reason: format!("{describe}: {reason}"),
            },
            Observation::Unavailable(error) => {
                self.status.error(&error);
                let since = *self.unavailable_since.get_or_insert_with(Instant::now);
                let current = self.publisher.current().backend;
                let keeping = current.as_ref().map(ToString::to_string);
                let keeping = keeping.as_deref().unwrap_or("none");
                let unavailable_for_s = since.elapsed().as_secs();
                // The same error on every retry is logged once (then at debug) until it changes.
                if error != self.last_error {
                    warn!(side = "discovery", %error, unavailable_for_s, keeping, "discovery unavailable; keeping the last known primary");
                    self.last_error = error;
                } else {
                    debug!(side = "discovery", %error, unavailable_for_s, keeping, "discovery still unavailable");
                }
                self.last_reason.clear();
                return;
            }
        };
        self.status.success();
        self.last_error.clear();
        if let Some(since) = self.unavailable_since.take() {
            info!(source = %describe, after_s = since.elapsed().as_secs_f64(), "discovery recovered");
        }
        self.last_success = Instant::now();
        self.desired = selection.backend;
        self.desired_reason = selection.reason;
        self.reconcile().await;
    }

    /// Publishes the desired primary, after fencing when `verify_writable` is on.
    async fn reconcile(&mut self) {
        let (backend, reason) = match (&self.config.fence, &self.desired) {
            (Some(fence_config), Some(wanted)) => {
                match fence::check(wanted, fence_config, VERIFY_TIMEOUT).await {
                    Verdict::Writable => (Some(wanted.clone()), self.desired_reason.clone()),
                    Verdict::ReadOnly(why) => (
                        None,
                        format!(
                            "{wanted} is read-only ({why}): refused as primary (verify_writable); {}",
                            self.desired_reason
                        ),
                    ),
                    Verdict::Unknown(error) => {
                        if self.publisher.current().backend.as_ref() == Some(wanted) {
                            // Already verified; a failed re-check alone does not drop it.
                            (Some(wanted.clone()), self.desired_reason.clone())
                        } else {
                            (
                                None,
                                format!("cannot verify that {wanted} is writable: {error}"),
                            )
                        }
                    }
                }
            }
            _ => (self.desired.clone(), self.desired_reason.clone()),
        };
        self.publish(backend, reason);
    }

    fn publish(&mut self, backend: Option<Backend>, reason: String) {
        if reason != self.last_reason {
            if backend.is_none() {
                warn!(side = "discovery", %reason, "no primary");
            } else {
                info!(%reason, "discovery answer");
            }
            self.last_reason = reason.clone();
        }
        if let Some(change) = self.publisher.publish(backend, &reason) {
            self.tracker.on_change(change, self.config, self.metrics);
        }
    }

    fn give_up_stale(&mut self, after: Duration) {
        let reason = format!(
            "no usable answer from discovery for {} (consul_stale_after)",
            humantime::format_duration(after)
        );
        self.desired = None;
        self.publish(None, reason);
    }
}
