//! Discovery: where the primary comes from, and the loop that turns what a source observes into
//! the published [`Primary`](crate::primary::Primary).
//!
//! A source (static, Consul health/catalog/KV, and later DNS) runs as its own task and sends
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
use tracing::{info, warn};

use crate::config::{Config, Discovery};
use crate::failover;
use crate::metrics::Metrics;
use crate::primary::PrimaryPublisher;
use crate::selection::{Candidate, select};

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
    info!(source = %describe, "discovery started");
    let mut state = State {
        config: &config,
        publisher: &publisher,
        metrics: &metrics,
        last_reason: String::new(),
        last_success: Instant::now(),
        unavailable_since: None,
    };
    loop {
        let stale_deadline = stale_after.map(|after| state.last_success + after);
        let observation = tokio::select! {
            o = rx.recv() => o,
            () = sleep_until_opt(stale_deadline), if state.primary_known() => {
                state.give_up_stale(stale_after.unwrap_or_default());
                continue;
            }
            () = stop.cancelled() => None,
        };
        let Some(observation) = observation else {
            break;
        };
        state.apply(observation, &describe);
    }
    source_task.abort();
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The discovery loop's memory between observations.
struct State<'a> {
    config: &'a Config,
    publisher: &'a PrimaryPublisher,
    metrics: &'a Metrics,
    /// Last selection reason logged, so an unchanged situation is not logged on every poll.
    last_reason: String,
    last_success: Instant,
    unavailable_since: Option<Instant>,
}

impl State<'_> {
    fn primary_known(&self) -> bool {
        self.publisher.current().backend.is_some()
    }

    fn apply(&mut self, observation: Observation, describe: &str) {
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
            Observation::NoPrimary(reason) => crate::selection::Selection {
                backend: None,
                reason: format!("{describe}: {reason}"),
            },
            Observation::Unavailable(error) => {
                let since = *self.unavailable_since.get_or_insert_with(Instant::now);
                let current = self.publisher.current().backend;
                warn!(
                    side = "discovery",
                    %error,
                    unavailable_for_s = since.elapsed().as_secs(),
                    keeping = current.as_ref().map(ToString::to_string).as_deref().unwrap_or("none"),
                    "discovery unavailable; keeping the last known primary"
                );
                self.last_reason.clear();
                return;
            }
        };
        if let Some(since) = self.unavailable_since.take() {
            info!(source = %describe, after_s = since.elapsed().as_secs_f64(), "discovery recovered");
        }
        self.last_success = Instant::now();
        if selection.reason != self.last_reason {
            if selection.backend.is_none() {
                warn!(side = "discovery", reason = %selection.reason, "no primary");
            } else {
                info!(reason = %selection.reason, "discovery answer");
            }
            self.last_reason = selection.reason.clone();
        }
        if let Some(change) = self.publisher.publish(selection.backend, &selection.reason) {
            failover::on_change(change, self.config, self.metrics);
        }
    }

    fn give_up_stale(&mut self, after: Duration) {
        let reason = format!(
            "no usable answer from discovery for {} (consul_stale_after)",
            humantime::format_duration(after)
        );
        warn!(side = "discovery", %reason, "dropping the last known primary");
        self.last_reason = reason.clone();
        if let Some(change) = self.publisher.publish(None, &reason) {
            failover::on_change(change, self.config, self.metrics);
        }
    }
}
