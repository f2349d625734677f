//! Discovery sources: where the primary comes from. Each runs as its own task and reports what
//! it observes as [`Observation`]s over a channel to the
//! [`control_loop`](super::control_loop); none of them publishes anything itself.
//!
//! - [`static_source`]: one fixed backend;
//! - [`consul`]: health, catalog or KV blocking queries;
//! - [`dns`]: A/AAAA or SRV lookups, uncached;
//! - [`backoff`]: the retry delays they share; [`pacing`]: the token bucket that bounds a
//!   blocking-query loop's request rate;
//! - [`shared`]: one source per distinct question, shared by the routes that ask it.
//!
//! A source that cannot reach its authority sends [`Observation::Unavailable`]: the last primary
//! is kept (Consul down is not the database down).

pub(crate) mod backoff;
pub mod consul;
pub mod dns;
pub(crate) mod pacing;
pub mod shared;
pub(crate) mod static_source;

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::selection::Candidate;
use crate::config::{Config, Discovery};
use crate::ops::metrics::Metrics;

/// What a source saw in one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The authority answered: these servers claim to be the primary (possibly none).
    Candidates(Vec<Candidate>),
    /// Consul answered with every instance it knows: the candidates, and the instances that are
    /// not, with why. An instance absent from both was deregistered.
    Instances {
        candidates: Vec<Candidate>,
        excluded: Vec<Excluded>,
    },
    /// The authority answered that there is no primary, and why (e.g. leader key released).
    NoPrimary(String),
    /// The authority could not be asked or gave an unusable answer: keep the last primary.
    Unavailable(String),
}

/// An instance Consul knows that is not a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub addr: std::net::SocketAddr,
    /// Its name as a candidate would have (node/service ID), for the status page.
    pub name: Arc<str>,
    pub why: Exclusion,
}

/// Why an instance is not a candidate — which decides what happens when it is the current
/// primary and nothing replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// An operator's intent (service or node maintenance): drop it at once.
    Maintenance(String),
    /// A critical check (service check, or `serfHealth`: its agent is gone or cut off): Consul
    /// may only have lost sight of a healthy database.
    Critical(String),
    /// The service's own check in `warning`: not passing, so excluded as a primary exactly like
    /// a critical check; a replica route keeps it as a lagging pool member.
    Lagging(String),
}

/// Sending half handed to a source task.
pub type ObservationSender = mpsc::Sender<Observation>;

/// A started source task.
pub struct RunningSource {
    /// One line naming the source, for logs and `/status`.
    pub describe: String,
    /// With `consul_stale_after`: drop the primary after that long without a usable answer.
    pub stale_after: Option<Duration>,
    pub task: JoinHandle<()>,
}

/// Starts the source `config.discovery` names; it reports on `tx` until `stop` is cancelled.
pub fn start(
    config: &Config,
    tx: ObservationSender,
    refresh: Arc<Notify>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> RunningSource {
    match &config.discovery {
        Discovery::Static { backend } => RunningSource {
            describe: format!("static backend {backend}"),
            stale_after: None,
            task: tokio::spawn(static_source::run(*backend, tx, stop).in_current_span()),
        },
        Discovery::Consul(consul_config) => RunningSource {
            describe: consul::describe(consul_config, &config.service),
            stale_after: consul_config.stale_after,
            task: tokio::spawn(
                consul::run(
                    (**consul_config).clone(),
                    config.service.clone(),
                    tx,
                    refresh,
                    metrics,
                    stop,
                )
                .in_current_span(),
            ),
        },
        Discovery::Dns(dns_config) => RunningSource {
            describe: dns::describe(dns_config),
            stale_after: None,
            task: tokio::spawn(
                dns::run(dns_config.clone(), tx, refresh, metrics, stop).in_current_span(),
            ),
        },
    }
}
