//! `/v1/health/service/<svc>` and `/v1/catalog/service/<svc>`: blocking reads, tag filter,
//! `passing` filter, ACL filtering for the anonymous token.

use super::json::*;
use super::*;

pub(super) fn parse_read(shared: &Shared, q: &Query) -> Result<QueryOptions, Response> {
    let opts = blocking::parse_options(q).map_err(|BadRequest(c, b)| text(c, b))?;
    if let Some(r) = check_dc(shared, &opts) {
        return Err(r);
    }
    Ok(opts)
}

pub(super) async fn health_service(
    shared: &Arc<Shared>,
    svc: &str,
    q: &Query,
    anonymous: bool,
) -> Response {
    let opts = match parse_read(shared, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if svc.is_empty() {
        return text(400, "Missing service name");
    }
    let tags = q.all("tag");
    let (index, mut entries) = blocking::run(shared, &opts, |s: &Store| s.health(svc, &tags)).await;
    // Consul parses `passing` after the RPC (see the FIXME in health_endpoint.go).
    let Ok(passing) = bool_param(q, "passing") else {
        return text(400, "Invalid value for ?passing");
    };
    if anonymous {
        entries.clear();
    }
    if passing {
        entries.retain(|e| e.checks.iter().all(|c| c.status == PASSING));
    }
    let dc = &shared.cfg.datacenter;
    let body = Value::Array(entries.iter().map(|e| health_entry_json(e, dc)).collect());
    let r = with_meta(json_resp(&body), shared, index, &opts);
    if anonymous { filtered_by_acl(r) } else { r }
}

pub(super) async fn catalog_service(
    shared: &Arc<Shared>,
    svc: &str,
    q: &Query,
    anonymous: bool,
) -> Response {
    let opts = match parse_read(shared, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if svc.is_empty() {
        return text(400, "Missing service name");
    }
    let tags = q.all("tag");
    let (index, mut entries) =
        blocking::run(shared, &opts, |s: &Store| s.catalog(svc, &tags)).await;
    if anonymous {
        entries.clear();
    }
    let dc = &shared.cfg.datacenter;
    let body = Value::Array(
        entries
            .iter()
            .map(|(n, s)| catalog_entry_json(n, s, dc))
            .collect(),
    );
    let r = with_meta(json_resp(&body), shared, index, &opts);
    if anonymous { filtered_by_acl(r) } else { r }
}

pub(super) fn not_found_with_meta(shared: &Shared, index: u64, opts: &QueryOptions) -> Response {
    let r = (StatusCode::NOT_FOUND, "").into_response();
    with_meta(r, shared, index, opts)
}
