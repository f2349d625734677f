//! Discovery: where the primary comes from, and the loop that turns what a source observes into
//! the published [`Primary`](crate::primary::Primary).
//!
//! A source (static, and later Consul health/catalog/KV and DNS) runs as its own task and sends
//! [`Observation`]s over a channel. [`run`] receives them, runs the shared
//! [`selection`](crate::selection) step against the current primary, publishes the result, and
//! hands every change to the [`failover`](crate::failover) policy. A source that cannot reach its
//! authority sends [`Observation::Unavailable`]: the last primary is kept (Consul down is not the
//! database down) and the error is logged on the discovery side.

pub mod static_source;

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, Discovery};
use crate::failover;
use crate::metrics::Metrics;
use crate::primary::PrimaryPublisher;
use crate::selection::{Candidate, OnMultiple, select};

/// What a source saw in one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The authority answered: these servers claim to be the primary (possibly none).
    Candidates(Vec<Candidate>),
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
    let (describe, source_task) = match &config.discovery {
        Discovery::Static { backend } => (
            format!("static backend {backend}"),
            tokio::spawn(static_source::run(*backend, tx, stop.clone())),
        ),
    };
    let _ = refresh; // Sources with a long poll listen to it; static has nothing to refresh.
    info!(source = %describe, "discovery started");
    loop {
        let observation = tokio::select! {
            o = rx.recv() => o,
            () = stop.cancelled() => None,
        };
        let Some(observation) = observation else {
            break;
        };
        match observation {
            Observation::Candidates(candidates) => {
                let current = publisher.current().backend;
                let selection =
                    select(current.as_ref(), &candidates, OnMultiple::Refuse, &describe);
                if selection.backend.is_none() {
                    warn!(side = "discovery", reason = %selection.reason, "no primary");
                }
                if let Some(change) = publisher.publish(selection.backend, &selection.reason) {
                    failover::on_change(change, &config, &metrics);
                }
            }
            Observation::Unavailable(error) => {
                let current = publisher.current().backend;
                warn!(
                    side = "discovery",
                    source = %describe,
                    %error,
                    keeping = current.as_ref().map(ToString::to_string).as_deref().unwrap_or("none"),
                    "discovery unavailable; keeping the last known primary"
                );
            }
        }
    }
    source_task.abort();
}
