//! The `static` source: one fixed backend (`--backend`), published once. Useful on its own for
//! a single server or a VIP, and as the simplest source for tests.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::{Observation, ObservationSender};
use crate::control::primary::Backend;
use crate::control::selection::Candidate;

/// Reports `backend` as the only candidate, then waits for `stop`.
pub async fn run(backend: SocketAddr, tx: ObservationSender, stop: CancellationToken) {
    let candidate = Candidate::new(Backend::new(backend, backend.to_string()));
    if tx
        .send(Observation::Candidates(vec![candidate]))
        .await
        .is_err()
    {
        return;
    }
    stop.cancelled().await;
}
