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
mod query;
mod reads;

use agent::*;
use kv::*;
use query::*;
use reads::*;

use crate::Shared;
use crate::acl::{Access, Resource};
use crate::blocking::{self, BadRequest, QueryOptions};
use crate::catalog::{
    CRITICAL, Check, CheckDef, CheckReg, HealthEntry, Node, PASSING, Service, ServiceReg,
    Thresholds, WARNING, tagged_service_addresses,
};
use crate::duration;
use crate::faults::Garbage;
use crate::kv::{KvEntry, Session, SessionSpec};
use crate::store::Store;

/// Consul's default `kv_max_value_size`.
const KV_MAX_VALUE_SIZE: usize = 512 * 1024;
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// Binds the unix socket of `addresses.http = "unix://<path>"`, replacing a file already
/// there (Consul: agent/agent.go listenSocket).
pub(crate) fn bind_unix(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context;
    match std::fs::remove_file(path) {
        Ok(()) => tracing::warn!(path = %path.display(), "Replacing socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("error removing socket file {}", path.display()));
        }
    }
    tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding HTTP on unix socket {}", path.display()))
}

/// Serves until shutdown (TCP, unix socket or TLS listener).
pub(crate) async fn serve<L>(listener: L, shared: Arc<Shared>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
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

/// Go's `strconv.ParseBool` (Go standard library strconv/atob.go).
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Consul's `getBoolQueryParam` (agent/health_endpoint.go): absent → false, bare → true,
/// else ParseBool.
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

/// Whether the read can be answered, and the (KnownLeader, LastContact) it carries.
///
/// Consul: agent/consul/rpc.go — `forward` sends a non-stale read to the leader (500
/// `No cluster leader` when none is known); `setQueryMeta` reports the answering server's
/// view. `max_stale`: a stale answer older than it is retried as a default read
/// (agent/rpcclient/health/health.go ServiceNodes and the catalog/KV handlers).
pub(crate) fn server_meta(
    shared: &Shared,
    opts: &QueryOptions,
) -> Result<(bool, Duration), Response> {
    match shared.faults.server_state() {
        crate::ServerState::Leader => Ok((true, Duration::ZERO)),
        crate::ServerState::Follower {
            known_leader,
            last_contact,
        } => {
            let stale = opts.consistency == "stale";
            let too_old = !opts.max_stale.is_zero() && last_contact > opts.max_stale;
            if stale && !too_old {
                Ok((known_leader, last_contact))
            } else if known_leader {
                Ok((true, Duration::ZERO))
            } else {
                Err(text(500, "No cluster leader"))
            }
        }
    }
}

/// The `X-Consul-*` headers of a read answered by the RPC (blocking-query) backend
/// (Consul: agent/http.go setMeta: X-Consul-Index (0 becomes 1), X-Consul-LastContact in
/// ms, X-Consul-KnownLeader, X-Consul-Effective-Consistency, X-Consul-Query-Backend).
fn with_meta(r: Response, shared: &Shared, index: u64, opts: &QueryOptions) -> Response {
    let (known, last) = server_meta(shared, opts).unwrap_or((false, Duration::ZERO));
    set_meta(r, index, known, last, opts, "blocking-query")
}

fn set_meta(
    mut r: Response,
    index: u64,
    known_leader: bool,
    last_contact: Duration,
    opts: &QueryOptions,
    backend: &'static str,
) -> Response {
    set_header(&mut r, "x-consul-index", index.max(1).to_string());
    set_header(&mut r, "x-consul-knownleader", known_leader.to_string());
    set_header(
        &mut r,
        "x-consul-lastcontact",
        last_contact.as_millis().to_string(),
    );
    set_header(
        &mut r,
        "x-consul-effective-consistency",
        opts.consistency.to_string(),
    );
    set_header(&mut r, "x-consul-query-backend", backend.to_string());
    r
}

/// Consul: agent/http.go setResultsFilteredByACLs — only when something was filtered.
fn filtered_by_acl(mut r: Response, filtered: bool) -> Response {
    if filtered {
        set_header(
            &mut r,
            "x-consul-results-filtered-by-acls",
            "true".to_string(),
        );
    }
    r
}

fn acl_enabled(shared: &Shared) -> bool {
    shared.cfg.acl_token.is_some() || !shared.cfg.acl_tokens.is_empty()
}

/// Who is calling, after token resolution.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// ACLs off, or the management token (`DoubleConfig::acl_token`).
    Management,
    /// One of `DoubleConfig::acl_tokens`.
    Limited(crate::AclToken),
    /// No token: the anonymous token of a default-deny cluster (no rights).
    Anonymous,
    /// A token the cluster does not know.
    UnknownToken,
}

impl Caller {
    pub(crate) fn can(&self, resource: Resource, name: &str, access: Access) -> bool {
        match self {
            Caller::Management => true,
            Caller::Limited(t) => t.allows(resource, name, access),
            Caller::Anonymous | Caller::UnknownToken => false,
        }
    }

    fn accessor(&self) -> &str {
        match self {
            Caller::Limited(t) => &t.accessor_id,
            _ => ANONYMOUS_ACCESSOR,
        }
    }

    /// Consul: agent/consul/rpc.go maskResultsFilteredByACLs — the filtered flag is only
    /// reported to a request that carried a token.
    fn sent_token(&self) -> bool {
        !matches!(self, Caller::Anonymous)
    }
}

/// Consul: agent/http.go parseTokenInternal — `?token=` first, then `X-Consul-Token`, then
/// `Authorization: Bearer <token>` (scheme case-insensitive, first word of the value).
fn caller(shared: &Shared, headers: &HeaderMap, q: &Query) -> Caller {
    if !acl_enabled(shared) {
        return Caller::Management;
    }
    let from_query = q.get("token").filter(|t| !t.is_empty()).map(str::to_string);
    let from_header = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let from_bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut parts = v.split(' ');
            let scheme = parts.next()?;
            let rest: Vec<&str> = parts.collect();
            if rest.is_empty() || !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            let value = rest.join(" ");
            Some(
                value
                    .trim()
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            )
        });
    let token = from_query
        .or(from_header)
        .or(from_bearer)
        .filter(|t| !t.is_empty());
    match token {
        None => Caller::Anonymous,
        Some(t) if shared.cfg.acl_token.as_deref() == Some(t.as_str()) => Caller::Management,
        Some(t) => match shared.cfg.acl_tokens.iter().find(|k| k.secret == t) {
            Some(k) => Caller::Limited(k.clone()),
            None => Caller::UnknownToken,
        },
    }
}

/// Consul: acl/errors.go PermissionDeniedByACL — `Permission denied: token with AccessorID
/// '<id>' lacks permission '<resource>:<access>' on "<name>"`.
fn permission_denied(who: &Caller, perm: &str, resource: &str) -> Response {
    text(
        403,
        format!(
            "Permission denied: token with AccessorID '{}' lacks permission '{perm}' on \"{resource}\"",
            who.accessor()
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
    shared
        .faults
        .log_request(&path, parts.uri.query().unwrap_or(""));
    let mut resp = api_with_faults(&shared, &method, &path, &q, &parts.headers, body).await;
    // Consul: agent/http.go wrap → setACLDefaultPolicy on every API response
    // (`acl.default_policy`: "allow" unless ACLs are on; the double then uses "deny").
    let policy = if acl_enabled(&shared) {
        "deny"
    } else {
        "allow"
    };
    set_header(&mut resp, "x-consul-default-acl-policy", policy.to_string());
    resp
}

async fn api_with_faults(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Response {
    let faults = &shared.faults;
    faults.count(path);
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
    let mut resp = api(shared, method, path, q, headers, &body).await;
    if let Some(kind) = faults.garbage() {
        let headers = resp.headers().clone();
        let status = resp.status();
        resp = match kind {
            Garbage::Truncated => {
                let full = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
                    .await
                    .unwrap_or_default();
                let cut = full.slice(..full.len() / 2);
                (status, cut).into_response()
            }
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
            // Consul: agent/status_endpoint.go StatusLeader — "" while no leader is known.
            "leader" => match shared.faults.server_state() {
                crate::ServerState::Follower {
                    known_leader: false,
                    ..
                } => json_resp(&json!("")),
                _ => json_resp(&json!("127.0.0.1:8300")),
            },
            "peers" => json_resp(&json!(["127.0.0.1:8300"])),
            _ => text(404, "404 page not found\n"),
        };
    }
    let reads_scoped = ["/v1/health/", "/v1/catalog/", "/v1/kv", "/v1/query"]
        .iter()
        .any(|p| path.starts_with(p));
    if reads_scoped && let Some(r) = enterprise_meta(headers, q) {
        return r;
    }
    let who = caller(shared, headers, q);
    if matches!(who, Caller::UnknownToken) {
        return text(403, "ACL not found");
    }

    if let Some(svc) = path.strip_prefix("/v1/health/service/") {
        if method != Method::GET {
            return not_allowed(method);
        }
        return health_service(shared, svc, q, &who).await;
    }
    if let Some(svc) = path.strip_prefix("/v1/catalog/service/") {
        if method != Method::GET {
            return not_allowed(method);
        }
        return catalog_service(shared, svc, q, &who).await;
    }
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return kv_endpoint(shared, method, key, q, body, &who).await;
    }
    if path == "/v1/kv" {
        return kv_endpoint(shared, method, "", q, body, &who).await;
    }
    if path == "/v1/agent/self" {
        if method != Method::GET {
            return not_allowed(method);
        }
        if !who.can(Resource::Agent, &shared.cfg.node_name, Access::Read) {
            return permission_denied(&who, "agent:read", &shared.cfg.node_name);
        }
        return agent_self(shared);
    }
    if let Some(rest) = path.strip_prefix("/v1/agent/") {
        if method != Method::PUT {
            return not_allowed(method);
        }
        return agent_write(shared, rest, q, body, &who);
    }
    if let Some(rest) = path.strip_prefix("/v1/session/") {
        return session_endpoint(shared, method, rest, q, body, &who).await;
    }
    if path == "/v1/query" || path.starts_with("/v1/query/") {
        return query_endpoint(shared, method, path, q, body, &who).await;
    }
    text(404, "404 page not found\n")
}

/// Consul CE (the double is CE): a namespace or an admin partition in a request is refused
/// before anything else (Consul: agent/http_ce.go parseEntMeta, parseEntMetaPartition;
/// agent/http.go BadRequestError → `400 Bad request: <reason>`).
fn enterprise_meta(headers: &HeaderMap, q: &Query) -> Option<Response> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.is_empty())
    };
    let param = |name: &str| q.get(name).is_some_and(|v| !v.is_empty());
    let reason = if header("x-consul-namespace") {
        "Invalid header: \"X-Consul-Namespace\" - Namespaces are a Consul Enterprise feature"
    } else if param("ns") {
        "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature"
    } else if header("x-consul-partition") {
        "Invalid header: \"X-Consul-Partition\" - Partitions are a Consul Enterprise feature"
    } else if param("partition") {
        "Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature"
    } else {
        return None;
    };
    Some(text(400, format!("Bad request: {reason}")))
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
        "fault/leader" => {
            // ?state=leader, or ?known_leader=<bool>&last_contact_ms=<n> for a follower.
            if q.get("state") == Some("leader") {
                faults.set_server_state(crate::ServerState::Leader);
            } else {
                let known = q
                    .get("known_leader")
                    .and_then(parse_go_bool)
                    .unwrap_or(false);
                let ms = q
                    .get("last_contact_ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                faults.set_server_state(crate::ServerState::Follower {
                    known_leader: known,
                    last_contact: Duration::from_millis(ms),
                });
            }
        }
        "fault/agent" => {
            let node = q.get("node").unwrap_or(&shared.cfg.node_name).to_string();
            let ok = match q.get("event").unwrap_or("") {
                "leave" => faults.agent_leave(&node),
                "restart" => faults.agent_restart(&node),
                "crash" => faults.agent_crash(&node),
                "partition" => faults.agent_partition(&node),
                "heal" => faults.agent_heal(&node),
                _ => {
                    return text(
                        400,
                        "event must be leave, restart, crash, partition or heal",
                    );
                }
            };
            if !ok {
                return text(404, format!("unknown node {node:?}"));
            }
        }
        "fault/check" => {
            let node = q.get("node").filter(|n| !n.is_empty());
            let Some(id) = q.get("check_id").filter(|c| !c.is_empty()) else {
                return text(400, "check_id is required");
            };
            let ok = match q.get("status").filter(|s| !s.is_empty()) {
                None => faults.release_check(node, id),
                Some(st) if [PASSING, WARNING, CRITICAL].contains(&st) => {
                    faults.force_check(node, id, st, q.get("output").unwrap_or(""))
                }
                Some(_) => return text(400, "status must be passing, warning or critical"),
            };
            if !ok {
                return text(404, format!("unknown check {id:?}"));
            }
        }
        "fault/maintenance" => {
            let enable = q.get("enable").and_then(parse_go_bool).unwrap_or(true);
            let reason = q.get("reason").unwrap_or("");
            let node = q.get("node").filter(|n| !n.is_empty());
            let ok = match q.get("service_id").filter(|s| !s.is_empty()) {
                Some(sid) => faults.service_maintenance(node, sid, enable, reason),
                None => {
                    faults.node_maintenance(node.unwrap_or(&shared.cfg.node_name), enable, reason)
                }
            };
            if !ok {
                return text(404, "unknown node or service");
            }
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
