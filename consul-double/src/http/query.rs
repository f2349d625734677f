//! `/v1/query` (list, create) and `/v1/query/<id>` (get, update, delete,
//! `<id-or-name>/execute`, `<id-or-name>/explain`).
//!
//! Consul: agent/prepared_query_endpoint.go (HTTP side) and
//! agent/consul/prepared_query_endpoint.go (Apply validation, Execute); the request and
//! response shapes are those of website/content/api-docs/query.mdx.

use super::agent::*;
use super::json::*;
use super::reads::*;
use super::*;
use crate::query::{PreparedQuery, is_uuid};

fn decode_query(body: &[u8]) -> Result<PreparedQuery, (u16, String)> {
    let v: Value = serde_json::from_slice(body).map_err(|e| decode_err(&e.to_string()))?;
    if !v.is_object() {
        return Err(decode_err("json: cannot unmarshal into a prepared query"));
    }
    let svc = field(&v, "Service").cloned().unwrap_or(Value::Null);
    let failover = field(&svc, "Failover").cloned().unwrap_or(Value::Null);
    let dns = field(&v, "DNS").cloned().unwrap_or(Value::Null);
    let bool_of = |o: &Value, k: &str| field(o, k).and_then(Value::as_bool).unwrap_or(false);
    Ok(PreparedQuery {
        id: String::new(),
        name: str_field(&v, "Name")?,
        session: str_field(&v, "Session")?,
        token: str_field(&v, "Token")?,
        service: str_field(&svc, "Service")?,
        tags: strings_field(&svc, "Tags")?,
        only_passing: bool_of(&svc, "OnlyPassing"),
        near: str_field(&svc, "Near")?,
        ignore_check_ids: strings_field(&svc, "IgnoreCheckIDs")?,
        node_meta: map_field(&svc, "NodeMeta")?,
        service_meta: map_field(&svc, "ServiceMeta")?,
        failover_nearest_n: field(&failover, "NearestN")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        failover_datacenters: strings_field(&failover, "Datacenters")?,
        dns_ttl: str_field(&dns, "TTL")?,
        create_index: 0,
        modify_index: 0,
    })
}

/// Consul: agent/consul/prepared_query_endpoint.go parseQuery → parseService, parseDNS.
fn validate(q: &PreparedQuery) -> Result<(), String> {
    if q.service.is_empty() {
        return Err("Must provide a Service name to query".to_string());
    }
    if q.failover_nearest_n < 0 {
        return Err(format!(
            "Bad NearestN '{}', must be >= 0",
            q.failover_nearest_n
        ));
    }
    if !q.dns_ttl.is_empty() {
        match crate::duration::parse_go(&q.dns_ttl) {
            Err(e) => return Err(format!("Bad DNS TTL '{}': {e}", q.dns_ttl)),
            Ok(ns) if ns < 0 => return Err(format!("DNS TTL '{ns}', must be >=0")),
            Ok(_) => {}
        }
    }
    Ok(())
}

fn query_json(q: &PreparedQuery, who: &Caller) -> Value {
    // Consul: agent/consul/prepared_query_endpoint.go redacts the query's token for callers
    // without acl:write.
    let token = if q.token.is_empty() || matches!(who, Caller::Management) {
        q.token.clone()
    } else {
        "<hidden>".to_string()
    };
    json!({
        "ID": q.id,
        "Name": q.name,
        "Session": q.session,
        "Token": token,
        "Template": {"Type": "", "Regexp": "", "RemoveEmptyTags": false},
        "Service": {
            "Service": q.service,
            "Failover": {
                "NearestN": q.failover_nearest_n,
                "Datacenters": q.failover_datacenters,
                "Targets": null,
            },
            "OnlyPassing": q.only_passing,
            "IgnoreCheckIDs": q.ignore_check_ids,
            "Near": q.near,
            "Tags": q.tags,
            "NodeMeta": q.node_meta,
            "ServiceMeta": q.service_meta,
            "Peer": "",
            "SamenessGroup": "",
            "Connect": {"Enabled": false},
        },
        "DNS": {"TTL": q.dns_ttl},
        "CreateIndex": q.create_index,
        "ModifyIndex": q.modify_index,
    })
}

pub(super) async fn query_endpoint(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    q: &Query,
    body: &[u8],
    who: &Caller,
) -> Response {
    if path == "/v1/query" {
        return match *method {
            Method::POST => query_create(shared, body, who),
            Method::GET => query_list(shared, q, who).await,
            _ => not_allowed(method),
        };
    }
    let id = &path["/v1/query/".len()..];
    if let Some(id) = id.strip_suffix("/execute") {
        if method != Method::GET {
            return not_allowed(method);
        }
        return query_execute(shared, id, q, who);
    }
    if let Some(id) = id.strip_suffix("/explain") {
        if method != Method::GET {
            return not_allowed(method);
        }
        let Some(found) = shared.read(|s| s.query_resolve(id)) else {
            return text(404, "Query not found");
        };
        return json_resp(&json!({"Query": query_json(&found, who)}));
    }
    match *method {
        Method::GET => {
            let opts = match parse_read(shared, q) {
                Ok(o) => o,
                Err(r) => return r,
            };
            // Consul: PreparedQuery.Get looks the ID up (no name resolution).
            let (index, found) = shared.read(|s| (s.index, s.queries.get(id).cloned()));
            match found {
                Some(pq) => with_meta(
                    json_resp(&json!([query_json(&pq, who)])),
                    shared,
                    index,
                    &opts,
                ),
                None => text(404, "Query not found"),
            }
        }
        Method::PUT => {
            let mut pq = if body.is_empty() {
                PreparedQuery::default()
            } else {
                match decode_query(body) {
                    Ok(pq) => pq,
                    Err((c, m)) => return text(c, m),
                }
            };
            pq.id = id.to_string();
            if !shared.read(|s| s.queries.contains_key(id)) {
                return text(
                    500,
                    format!("Cannot modify non-existent prepared query: '{id}'"),
                );
            }
            if let Err(e) = validate(&pq) {
                return text(500, e);
            }
            if !who.can(Resource::Query, &pq.name, Access::Write) {
                return permission_denied(who, "query:write", &pq.name);
            }
            match shared.write(|s| s.query_put(pq)) {
                Ok(_) => (StatusCode::OK, "").into_response(),
                Err(e) => text(500, e),
            }
        }
        Method::DELETE => {
            let name = shared.read(|s| s.queries.get(id).map(|pq| pq.name.clone()));
            let Some(name) = name else {
                return text(
                    500,
                    format!("Cannot delete non-existent prepared query: '{id}'"),
                );
            };
            if !who.can(Resource::Query, &name, Access::Write) {
                return permission_denied(who, "query:write", &name);
            }
            shared.write(|s| s.query_delete(id));
            (StatusCode::OK, "").into_response()
        }
        _ => not_allowed(method),
    }
}

fn query_create(shared: &Arc<Shared>, body: &[u8], who: &Caller) -> Response {
    let mut pq = match decode_query(body) {
        Ok(pq) => pq,
        Err((c, m)) => return text(c, m),
    };
    if let Err(e) = validate(&pq) {
        return text(500, e);
    }
    if is_uuid(&pq.name) {
        return text(
            500,
            format!("name '{}' aliases an existing query ID", pq.name),
        );
    }
    if !who.can(Resource::Query, &pq.name, Access::Write) {
        return permission_denied(who, "query:write", &pq.name);
    }
    pq.id = crate::catalog::new_uuid();
    match shared.write(|s| s.query_put(pq)) {
        Ok(id) => json_resp(&json!({"ID": id})),
        Err(e) => text(500, e),
    }
}

async fn query_list(shared: &Arc<Shared>, q: &Query, who: &Caller) -> Response {
    let opts = match parse_read(shared, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (index, list) = blocking::run(shared, &opts, |s: &Store| {
        (s.index, s.queries.values().cloned().collect::<Vec<_>>())
    })
    .await;
    let body: Vec<Value> = list
        .iter()
        .filter(|pq| who.can(Resource::Query, &pq.name, Access::Read))
        .map(|pq| query_json(pq, who))
        .collect();
    with_meta(json_resp(&Value::Array(body)), shared, index, &opts)
}

fn query_execute(shared: &Arc<Shared>, id: &str, q: &Query, who: &Caller) -> Response {
    let opts = match parse_read(shared, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    // Consul: agent/prepared_query_endpoint.go parseLimit — strconv.Atoi, error → 500.
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        None => 0usize,
        Some(l) => match l.parse::<i64>() {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(_) => {
                return text(
                    500,
                    format!("Bad limit: strconv.Atoi: parsing {l:?}: invalid syntax"),
                );
            }
        },
    };
    let Some((pq, mut nodes)) = shared.read(|s| {
        let pq = s.query_resolve(id)?;
        let nodes = s.query_execute(&pq);
        Some((pq, nodes))
    }) else {
        return text(404, "Query not found");
    };
    if !who.can(Resource::Query, &pq.name, Access::Read) && !pq.name.is_empty() {
        return permission_denied(who, "query:read", &pq.name);
    }
    // Consul: Execute filters the results with the query's own token if it has one, else
    // the caller's.
    let filtered = if pq.token.is_empty() {
        let before = nodes.len();
        nodes.retain(|e| {
            who.can(Resource::Node, &e.node.name, Access::Read)
                && who.can(Resource::Service, &e.service.name, Access::Read)
        });
        nodes.len() < before && who.sent_token()
    } else {
        false
    };
    fastrand::shuffle(&mut nodes);
    if limit > 0 {
        nodes.truncate(limit);
    }
    let (known, last) = server_meta(shared, &opts).unwrap_or((false, Duration::ZERO));
    let dc = &shared.cfg.datacenter;
    let body = json!({
        "Service": pq.service,
        "Nodes": nodes.iter().map(|e| health_entry_json(e, dc)).collect::<Vec<_>>(),
        "DNS": {"TTL": pq.dns_ttl},
        "Datacenter": dc,
        "Failovers": 0,
        "Index": 0,
        "LastContact": last.as_nanos() as u64,
        "KnownLeader": known,
        "ConsistencyLevel": opts.consistency,
        "NotModified": false,
        "Backend": 0,
        "ResultsFilteredByACLs": filtered,
    });
    // Execute is not a blocking query: its QueryMeta.Index stays 0, which setIndex sends
    // as 1 (agent/http.go).
    let r = set_meta(json_resp(&body), 0, known, last, &opts, "blocking-query");
    filtered_by_acl(r, filtered)
}
