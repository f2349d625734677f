//! The admin HTTP endpoint (`admin`, default 127.0.0.1:9306 — loopback unless the operator says
//! otherwise): liveness and readiness for orchestrators, a JSON status page for humans, and
//! Prometheus metrics.
//!
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 while a primary is known and discovery is watching, 503 with the reason
//!   otherwise;
//! - `GET /status`: current primary and epoch, discovery state, connections, config summary
//!   (no secrets), version;
//! - `GET /metrics`: every metric of [`Metrics`], OpenMetrics text format.
//!
//! It only reads shared state (the primary watch value, metrics, discovery status, live config)
//! and never blocks the relay.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::status::{DiscoveryStatus, rfc3339_or_null};
use crate::config::Config;
use crate::control::primary::PrimaryWatch;

/// What the endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    pub primary: PrimaryWatch,
    pub metrics: Arc<Metrics>,
    pub discovery: Arc<DiscoveryStatus>,
    pub config: watch::Receiver<Arc<Config>>,
}

/// Serves the endpoint on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: AdminState, stop: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "admin endpoint stopped");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if let Some(cause) = state.discovery.not_watching_cause() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: discovery is not watching: {cause}\n"),
        )
            .into_response();
    }
    let primary = state.primary.borrow().clone();
    match primary.backend {
        Some(backend) => (StatusCode::OK, format!("ready: primary {backend}\n")).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: no primary: {}\n", primary.reason),
        )
            .into_response(),
    }
}

async fn status(State(state): State<AdminState>) -> Response {
    let primary = state.primary.borrow().clone();
    let config = state.config.borrow().clone();
    let m = &state.metrics;
    let per_backend: serde_json::Map<String, serde_json::Value> = m
        .per_backend()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(addr, n)| (addr.to_string(), json!(n)))
        .collect();
    let mut discovery = state.discovery.to_json();
    if let Some(obj) = discovery.as_object_mut() {
        obj.insert("consul_index".into(), json!(m.consul_index.get()));
    }
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "primary": primary.backend.as_ref().map(|b| json!({
            "address": b.addr.to_string(),
            "name": &*b.name,
        })),
        "epoch": primary.epoch,
        "since": rfc3339_or_null(Some(primary.since)),
        "reason": &*primary.reason,
        "discovery": discovery,
        "connections": {
            "active": m.connections_active.get(),
            "held": m.connections_held.get(),
            "accepted_total": m.connections_accepted.get(),
            "per_backend": per_backend,
        },
        "failovers_total": m.failovers.get(),
        "config": config.summary(),
    });
    axum::Json(body).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
