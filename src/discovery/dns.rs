//! DNS discovery (being written): A/AAAA or SRV lookups of `dns_name`.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Observation, ObservationSender};
use crate::config::DnsConfig;
use crate::metrics::Metrics;

/// A one-line description of the source, for logs and error messages.
pub fn describe(config: &DnsConfig) -> String {
    format!("dns {:?} {}", config.record, config.name)
}

/// Looks the name up every `interval` until `stop` is cancelled.
pub async fn run(
    config: DnsConfig,
    tx: ObservationSender,
    refresh: Arc<Notify>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let _ = (refresh, metrics);
    let _ = tx
        .send(Observation::Unavailable(format!(
            "{}: not implemented yet",
            describe(&config)
        )))
        .await;
    stop.cancelled().await;
}
