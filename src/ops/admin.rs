//! The admin HTTP endpoint (`admin`, default 127.0.0.1:9306 — loopback unless the operator says
//! otherwise): liveness and readiness for orchestrators, a status page and JSON status for
//! humans, and Prometheus metrics.
//!
//! - `GET /`: the status page (HTML, [`page`](super::page)), a rendering of `/status`;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 while a primary is known (a replica route: while its pool has a member)
//!   and discovery is watching, 503 with the reason otherwise;
//! - `GET /status`: current primary and epoch, discovery state and the last answer's instances,
//!   connections, the last failovers, config summary (no secrets), version;
//! - `GET /metrics`: every metric of [`Metrics`], OpenMetrics text format.
//!
//! Every route above only reads, so the same routes are also served on `metrics_listen`
//! ([`Exposure::ReadOnly`]), an address meant for scrapers and dashboards. Routes that change
//! state (none yet; `POST /switchover` will be the first) go in [`admin_only_routes`] and are
//! served on the admin address only.
//!
//! It only reads shared state (the primary watch value, metrics, discovery status, failover
//! history, live config) and never blocks the relay.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::history::FailoverHistory;
use super::metrics::Metrics;
use super::page;
use super::report::Report;
use super::status::{DiscoveryStatus, rfc3339_or_null};
use crate::config::Config;
use crate::control::primary::PrimaryWatch;

/// What the endpoint reads: the running routes, replaced as a whole when a reload changes them.
#[derive(Clone)]
pub struct AdminState {
    pub routes: watch::Receiver<Arc<RouteSet>>,
}

/// The routes of the process.
#[derive(Clone)]
pub struct RouteSet {
    /// Never empty; in configuration order. The first one is also the top level of `/status`.
    pub routes: Vec<RouteView>,
    /// Several named routes: `/metrics` labels every series with `route`, `/status` lists them.
    pub labelled: bool,
}

/// What the endpoint reads of one route.
#[derive(Clone)]
pub struct RouteView {
    pub name: Arc<str>,
    /// The address the route's clients connect to (the bound one: port 0 resolved).
    pub listen: std::net::SocketAddr,
    pub primary: PrimaryWatch,
    pub metrics: Arc<Metrics>,
    pub discovery: Arc<DiscoveryStatus>,
    pub failovers: Arc<FailoverHistory>,
    pub config: watch::Receiver<Arc<Config>>,
}

/// Which routes an address serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// The admin address (loopback by default): every route.
    Admin,
    /// `metrics_listen`: only the routes that read.
    ReadOnly,
}

/// Serves the routes of `exposure` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    exposure: Exposure,
    stop: CancellationToken,
) {
    let served = axum::serve(listener, router(state, exposure))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, ?exposure, "admin endpoint stopped");
    }
}

/// The routes `exposure` serves.
fn router(state: AdminState, exposure: Exposure) -> Router {
    let read_only = Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics));
    let routes = match exposure {
        Exposure::Admin => read_only.merge(admin_only_routes()),
        Exposure::ReadOnly => read_only,
    };
    routes.with_state(state)
}

/// Routes that change state: on the admin address only, never on `metrics_listen`.
fn admin_only_routes() -> Router<AdminState> {
    let routes = Router::new();
    // Nothing changes state yet; this stands in for `POST /switchover` so the split is tested.
    #[cfg(test)]
    let routes = routes.route(
        "/test/admin-only",
        axum::routing::post(|| async { "admin only\n" }),
    );
    routes
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let set = state.routes.borrow().clone();
    match set_readiness(&set) {
        Ok(ready) => (StatusCode::OK, format!("{ready}\n")).into_response(),
        Err(not_ready) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{not_ready}\n")).into_response()
        }
    }
}

/// The process is ready when every route is; the message names the routes that are not.
fn set_readiness(set: &RouteSet) -> Result<String, String> {
    if !set.labelled {
        return set
            .routes
            .first()
            .map_or_else(|| Err("not ready: no route".to_owned()), readiness);
    }
    let verdicts: Vec<(&RouteView, Result<String, String>)> =
        set.routes.iter().map(|r| (r, readiness(r))).collect();
    let not_ready: Vec<String> = verdicts
        .iter()
        .filter_map(|(r, v)| v.as_ref().err().map(|e| format!("route {}: {e}", r.name)))
        .collect();
    if not_ready.is_empty() {
        let ready: Vec<String> = verdicts
            .iter()
            .filter_map(|(r, v)| v.as_ref().ok().map(|m| format!("route {}: {m}", r.name)))
            .collect();
        Ok(ready.join("; "))
    } else {
        Err(not_ready.join("; "))
    }
}

/// One route's `/readyz` verdict: `Ok` (ready) or `Err` (not ready), each with its one-line
/// message.
fn readiness(state: &RouteView) -> Result<String, String> {
    if let Some(cause) = state.discovery.not_watching_cause() {
        return Err(format!("not ready: discovery is not watching: {cause}"));
    }
    if let Some(pool) = state.discovery.pool_readiness() {
        return pool;
    }
    let primary = state.primary.borrow().clone();
    match primary.backend {
        Some(backend) => Ok(format!("ready: primary {backend}")),
        None => Err(format!("not ready: no primary: {}", primary.reason)),
    }
}

async fn status(State(state): State<AdminState>) -> Response {
    let set = state.routes.borrow().clone();
    axum::Json(process_status_json(&set)).into_response()
}

/// The status page: `/status` rendered as HTML. Its CSP forbids every script and outside
/// resource, a second line of defence behind escaping what Consul and the network say.
async fn status_page(State(state): State<AdminState>) -> Response {
    let set = state.routes.borrow().clone();
    match Report::from_json(process_status_json(&set)) {
        Ok(report) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            Html(page::render(&report, SystemTime::now())),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The `/status` document: the first route's state at the top level (what a single-route proxy
/// always showed), and with named routes, `routes`: every route's own document with its name.
fn process_status_json(set: &RouteSet) -> Value {
    let Some(first) = set.routes.first() else {
        return json!({ "version": env!("CARGO_PKG_VERSION"), "ready": false, "readiness": "not ready: no route" });
    };
    let mut doc = status_json(first);
    if set.labelled {
        let ready = set_readiness(set);
        let routes: Vec<Value> = set
            .routes
            .iter()
            .map(|r| {
                let mut route = status_json(r);
                if let Some(obj) = route.as_object_mut() {
                    obj.remove("version");
                    obj.insert("name".into(), json!(&*r.name));
                    obj.insert("listen".into(), json!(r.listen.to_string()));
                }
                route
            })
            .collect();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("ready".into(), json!(ready.is_ok()));
            obj.insert(
                "readiness".into(),
                json!(ready.unwrap_or_else(|not_ready| not_ready)),
            );
            obj.insert("route".into(), json!(&*first.name));
            obj.insert("routes".into(), json!(routes));
        }
    }
    doc
}

/// One route's `/status` document.
fn status_json(state: &RouteView) -> Value {
    let ready = readiness(state);
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
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": ready.is_ok(),
        "readiness": ready.unwrap_or_else(|not_ready| not_ready),
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
        "failovers": state.failovers.newest_first(),
        "config": config.summary(),
    })
}

/// Every route's metrics; with named routes, each series labelled with its route.
fn encode_metrics(set: &RouteSet) -> String {
    if !set.labelled
        && let Some(first) = set.routes.first()
    {
        return first.metrics.encode();
    }
    let routes: Vec<(&str, &Metrics)> =
        set.routes.iter().map(|r| (&*r.name, &*r.metrics)).collect();
    super::metrics::encode_labelled(&routes)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        encode_metrics(&state.routes.borrow()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::control::primary::PrimaryPublisher;

    fn state() -> (AdminState, PrimaryPublisher) {
        let (publisher, primary) = PrimaryPublisher::new(CancellationToken::new(), "starting");
        let config = Config::resolve(Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        })
        .unwrap();
        let view = RouteView {
            name: "default".into(),
            listen: "127.0.0.1:3306".parse().unwrap(),
            primary,
            metrics: Arc::new(Metrics::new()),
            discovery: Arc::new(DiscoveryStatus::default()),
            failovers: Arc::new(FailoverHistory::default()),
            config: watch::channel(Arc::new(config)).1,
        };
        let set = RouteSet {
            routes: vec![view],
            labelled: false,
        };
        let state = AdminState {
            routes: watch::channel(Arc::new(set)).1,
        };
        (state, publisher)
    }

    /// Serves `exposure` on a free loopback port; returns its address.
    async fn start(state: AdminState, exposure: Exposure) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, state, exposure, CancellationToken::new()));
        addr
    }

    /// `method path` through the subcommands' HTTP/1.0 client: (status, body).
    async fn request(
        addr: std::net::SocketAddr,
        method: &'static str,
        path: &'static str,
    ) -> (u16, String) {
        let answer = tokio::task::spawn_blocking(move || {
            crate::cli::http::request(
                addr,
                method,
                path,
                std::time::Duration::from_secs(5),
                1 << 20,
            )
        })
        .await
        .unwrap()
        .unwrap();
        (answer.status, answer.body)
    }

    #[tokio::test]
    async fn metrics_listen_serves_only_the_routes_that_read() {
        let (state, publisher) = state();
        publisher.publish(
            Some(crate::control::primary::Backend::new(
                "127.0.0.1:3307".parse().unwrap(),
                "db-a",
            )),
            "static",
        );
        let admin = start(state.clone(), Exposure::Admin).await;
        let read_only = start(state, Exposure::ReadOnly).await;
        for path in ["/", "/status", "/metrics", "/healthz", "/readyz"] {
            for addr in [admin, read_only] {
                let (code, body) = request(addr, "GET", path).await;
                assert_eq!(code, 200, "{addr}{path}: {body}");
            }
        }
        assert_eq!(request(admin, "POST", "/test/admin-only").await.0, 200);
        assert_eq!(request(read_only, "POST", "/test/admin-only").await.0, 404);
    }

    #[tokio::test]
    async fn the_page_and_status_tell_the_same_story() {
        let (state, _publisher) = state();
        let addr = start(state, Exposure::Admin).await;
        let (_, status) = request(addr, "GET", "/status").await;
        let status: Value = serde_json::from_str(&status).unwrap();
        assert_eq!(status["ready"], false, "{status}");
        assert_eq!(status["failovers"], json!([]), "{status}");
        let (code, page) = request(addr, "GET", "/").await;
        assert_eq!(code, 200);
        assert!(page.contains("not ready: no primary: starting"), "{page}");
        assert!(page.contains("Fast path"), "{page}");
    }
}
