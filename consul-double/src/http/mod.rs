//! The HTTP API: one axum fallback handler that counts requests, applies the faults, checks
//! the ACL token and dispatches on method and path to `reads` (health, catalog), `kv`
//! (keys, sessions) and `agent` (registration, checks), which answer in the shapes of
//! `json`; plus the double's own control endpoints.
//!
//! Endpoints: `/v1/status/{leader,peers}`, `/v1/agent/self`, `/v1/agent/service/{register,
//! deregister/<id>,maintenance/<id>}`, `/v1/agent/check/{pass,warn,fail,update}/<id>`,
//! `/v1/health/service/<svc>`, `/v1/catalog/service/<svc>`, `/v1/kv/<key>`,
//! `/v1/session/{create,destroy/<id>,renew/<id>,info/<id>,list}`, and the double's own
//! `/_double/fault/<switch>` and `/_double/requests?prefix=`.

// An early-return `Response` as the error type is built once per request; boxing buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tracing::Instrument;

mod agent;
mod json;
mod kv;
mod reads;

use agent::*;
use kv::*;
use reads::*;

use crate::Shared;
use crate::blocking::{self, BadRequest, QueryOptions};
use crate::catalog::{
    CRITICAL, Check, CheckDef, CheckReg, HealthEntry, Node, PASSING, Service, ServiceReg, WARNING,
    tagged_service_addresses,
};
use crate::duration;
use crate::faults::Garbage;
use crate::kv::{KvEntry, Session, SessionSpec};
use crate::store::Store;

/// Consul's default `kv_max_value_size`.
const KV_MAX_VALUE_SIZE: usize = 512 * 1024;
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// Serves until shutdown.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let app = axum::Router::new().fallback(handle).with_state(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "consul-double HTTP server failed");
    }
}

/// Decoded query string; keeps repeated keys and bare flags (`?passing`, `?recurse`).
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Query {
            pairs: raw
                .map(|r| {
                    form_urlencoded::parse(r.as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn encode(&self) -> String {
        let mut sorted = self.pairs.clone();
        sorted.sort();
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(sorted)
            .finish()
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Consul's `getBoolQueryParam`: absent → false, bare → true, else ParseBool.
fn bool_param(q: &Query, key: &str) -> Result<bool, ()> {
    match q.get(key) {
        None => Ok(false),
        Some("") => Ok(true),
        Some(v) => parse_go_bool(v).ok_or(()),
    }
}

fn text(status: u16, body: impl Into<String>) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.into(),
    )
        .into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_resp(v: &Value) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn not_allowed(method: &Method) -> Response {
    text(405, format!("method {method} not allowed"))
}

fn set_header(r: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(name, v);
    }
}

/// The `X-Consul-*` headers of a read (Consul's `setMeta`).
fn with_meta(mut r: Response, shared: &Shared, index: u64, opts: &QueryOptions) -> Response {
    set_header(&mut r, "x-consul-index", index.to_string());
    set_header(&mut r, "x-consul-knownleader", "true".to_string());
    set_header(&mut r, "x-consul-lastcontact", "0".to_string());
    set_header(
        &mut r,
        "x-consul-effective-consistency",
        opts.consistency.to_string(),
    );
    set_header(
        &mut r,
        "x-consul-query-backend",
        "blocking-query".to_string(),
    );
    let policy = if shared.cfg.acl_token.is_some() {
        "deny"
    } else {
        "allow"
    };
    set_header(&mut r, "x-consul-default-acl-policy", policy.to_string());
    r
}

fn filtered_by_acl(mut r: Response) -> Response {
    set_header(
        &mut r,
        "x-consul-results-filtered-by-acls",
        "true".to_string(),
    );
    r
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Caller {
    Allowed,
    Anonymous,
    UnknownToken,
}

fn caller(shared: &Shared, headers: &HeaderMap, q: &Query) -> Caller {
    let Some(want) = &shared.cfg.acl_token else {
        return Caller::Allowed;
    };
    let from_header = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string());
    let token = from_header
        .or(from_bearer)
        .or_else(|| q.get("token").map(str::to_string))
        .filter(|t| !t.is_empty());
    match token {
        None => Caller::Anonymous,
        Some(t) if &t == want => Caller::Allowed,
        Some(_) => Caller::UnknownToken,
    }
}

fn permission_denied(perm: &str, resource: &str) -> Response {
    text(
        403,
        format!(
            "Permission denied: token with AccessorID '{ANONYMOUS_ACCESSOR}' lacks permission '{perm}' on \"{resource}\""
        ),
    )
}

fn check_dc(shared: &Shared, opts: &QueryOptions) -> Option<Response> {
    match &opts.dc {
        Some(dc) if dc != &shared.cfg.datacenter => Some(text(500, "No path to datacenter")),
        _ => None,
    }
}

/// Percent-decodes a path segment the way Go's `URL.Path` is decoded (no `+` → space).
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let span = tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
    handle_inner(shared, req).instrument(span).await
}

async fn handle_inner(shared: Arc<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = percent_decode(parts.uri.path());
    let q = Query::parse(parts.uri.query());
    let method = parts.method.clone();
    tracing::debug!(query = parts.uri.query().unwrap_or(""), "request");

    if let Some(rest) = path.strip_prefix("/_double/") {
        return control(&shared, rest, &q);
    }
    let faults = &shared.faults;
    faults.count(&path);
    tokio::select! {
        biased;
        _ = faults.wait_unpaused() => {}
        _ = shared.shutdown.cancelled() => return text(503, "shutting down"),
    }
    let latency = faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some((status, body)) = faults.fail_with() {
        return text(status, body);
    }
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return text(400, format!("Request body read failed: {e}")),
    };
    let mut resp = api(&shared, &method, &path, &q, &parts.headers, &body).await;
    if let Some(kind) = faults.garbage() {
        let headers = resp.headers().clone();
        resp = match kind {
            Garbage::NotJson => (StatusCode::OK, "<html>502 upstream garbage {{{").into_response(),
            Garbage::WrongShape => (
                StatusCode::OK,
                r#"{"Node":42,"Service":"not-an-object","Checks":{"unexpected":true}}"#,
            )
                .into_response(),
        };
        for (k, v) in headers.iter() {
            if k.as_str().starts_with("x-consul-") {
                resp.headers_mut().insert(k.clone(), v.clone());
            }
        }
    }
    // A pause that began while the request was being served holds its answer too.
    tokio::select! {
        biased;
        _ = faults.wait_unpaused() => {}
        _ = shared.shutdown.cancelled() => return text(503, "shutting down"),
    }
    tracing::debug!(status = resp.status().as_u16(), "response");
    resp
}

async fn api(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(what) = path.strip_prefix("/v1/status/") {
        if method != Method::GET {
            return not_allowed(method);
        }
        return match what {
            "leader" => json_resp(&json!("127.0.0.1:8300")),
            "peers" => json_resp(&json!(["127.0.0.1:8300"])),
            _ => text(404, "404 page not found\n"),
        };
    }
    let who = caller(shared, headers, q);
    if who == Caller::UnknownToken {
        return text(403, "ACL not found");
    }
    let anonymous = who == Caller::Anonymous;

    if let Some(svc) = path.strip_prefix("/v1/health/service/") {
        if method != Method::GET {
            return not_allowed(method);
        }
        return health_service(shared, svc, q, anonymous).await;
    }
    if let Some(svc) = path.strip_prefix("/v1/catalog/service/") {
        if method != Method::GET {
            return not_allowed(method);
        }
        return catalog_service(shared, svc, q, anonymous).await;
    }
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return kv_endpoint(shared, method, key, q, body, anonymous).await;
    }
    if path == "/v1/kv" {
        return kv_endpoint(shared, method, "", q, body, anonymous).await;
    }
    if path == "/v1/agent/self" {
        if method != Method::GET {
            return not_allowed(method);
        }
        if anonymous {
            return permission_denied("agent:read", &shared.cfg.node_name);
        }
        return agent_self(shared);
    }
    if let Some(rest) = path.strip_prefix("/v1/agent/") {
        if method != Method::PUT {
            return not_allowed(method);
        }
        return agent_write(shared, rest, q, body, anonymous);
    }
    if let Some(rest) = path.strip_prefix("/v1/session/") {
        return session_endpoint(shared, method, rest, q, body, anonymous).await;
    }
    text(404, "404 page not found\n")
}

fn control(shared: &Arc<Shared>, rest: &str, q: &Query) -> Response {
    let faults = crate::Faults::new(shared.clone());
    let on = || {
        q.get("on")
            .map(|v| parse_go_bool(v).unwrap_or(true))
            .unwrap_or(true)
    };
    match rest {
        "requests" => {
            let prefix = q.get("prefix").unwrap_or("");
            return json_resp(&json!({"count": faults.request_count(prefix)}));
        }
        "fault/pause" => faults.pause(),
        "fault/resume" => faults.resume(),
        "fault/clear" => faults.clear(),
        "fault/garbage" => faults.garbage(on()),
        "fault/dns_servfail" => faults.dns_servfail(on()),
        "fault/reset_index" => faults.reset_index(),
        "fault/latency" => {
            let ms = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            faults.latency(Duration::from_millis(ms));
        }
        "fault/fail_with" => match q.get("status").and_then(|s| s.parse::<u16>().ok()) {
            Some(status) if (100..600).contains(&status) => {
                let body = q.get("body").unwrap_or("").to_string();
                faults.fail_with(Some((status, body)));
            }
            Some(_) => return text(400, "status must be 100..599"),
            None => faults.fail_with(None),
        },
        "fault/node_health" => {
            let node = q.get("node").unwrap_or(&shared.cfg.node_name).to_string();
            let status = q.get("status").unwrap_or(PASSING);
            if ![PASSING, WARNING, CRITICAL].contains(&status) {
                return text(400, "status must be passing, warning or critical");
            }
            let known = shared.read(|s| s.nodes.contains_key(&node.to_ascii_lowercase()));
            if !known {
                return text(404, format!("unknown node {node:?}"));
            }
            faults.set_node_health(&node, status);
        }
        _ => return text(404, format!("unknown control endpoint /_double/{rest}")),
    }
    json_resp(&json!(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeats_and_flags() {
        let q = Query::parse(Some("tag=a&tag=B&passing&dc=dc1&x=%2Fy"));
        assert_eq!(q.all("tag"), vec!["a", "B"]);
        assert!(q.has("passing"));
        assert_eq!(q.get("passing"), Some(""));
        assert_eq!(q.get("x"), Some("/y"));
        assert!(!q.has("stale"));
    }

    #[test]
    fn bool_param_is_go_parse_bool() {
        let q = Query::parse(Some("a&b=false&c=T&d=yes"));
        assert_eq!(bool_param(&q, "a"), Ok(true));
        assert_eq!(bool_param(&q, "b"), Ok(false));
        assert_eq!(bool_param(&q, "c"), Ok(true));
        assert_eq!(bool_param(&q, "d"), Err(()));
        assert_eq!(bool_param(&q, "missing"), Ok(false));
    }

    #[test]
    fn percent_decoding_of_paths() {
        assert_eq!(percent_decode("/v1/kv/a%2Fb+c"), "/v1/kv/a/b+c");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }
}
