//! `/v1/health/service/<svc>` and `/v1/catalog/service/<svc>`: blocking reads, tag filter,
//! `passing` filter, ACL filtering, and the two health backends (RPC blocking query and
//! streaming).

use super::json::*;
use super::*;

/// Parses the shared query options and applies the `?dc` and leader checks.
pub(super) fn parse_read(shared: &Shared, q: &Query) -> Result<QueryOptions, Response> {
    let opts = blocking::parse_options(q).map_err(|BadRequest(c, b)| text(c, b))?;
    if let Some(r) = check_dc(shared, &opts) {
        return Err(r);
    }
    server_meta(shared, &opts)?;
    Ok(opts)
}

/// Drops the entries the caller may not see; true if any was dropped.
/// Consul: agent/structs/aclfilter/filter.go filterCheckServiceNodes / filterServiceNodes
/// (`allowNode && allowService`).
fn acl_filter<T>(entries: &mut Vec<T>, who: &Caller, names: impl Fn(&T) -> (&str, &str)) -> bool {
    let before = entries.len();
    entries.retain(|e| {
        let (node, service) = names(e);
        who.can(Resource::Node, node, Access::Read)
            && who.can(Resource::Service, service, Access::Read)
    });
    entries.len() < before
}

pub(super) async fn health_service(
    shared: &Arc<Shared>,
    svc: &str,
    q: &Query,
    who: &Caller,
) -> Response {
    let opts = match blocking::parse_options(q) {
        Ok(o) => o,
        Err(BadRequest(c, b)) => return text(c, b),
    };
    if let Some(r) = check_dc(shared, &opts) {
        return r;
    }
    // Consul: agent/rpcclient/health/health.go ServiceNodes — the streaming backend serves
    // the request when `use_streaming_backend` is on, the request is a blocking one
    // (`MinQueryIndex > 0`; or `?cached`), there is no `?near` (`Source.Node`), and no
    // `merge-central-config`. Everything else is an RPC blocking query.
    let streaming = shared.cfg.use_streaming_backend
        && (opts.min_index > 0 || opts.cached)
        && q.get("near").is_none_or(str::is_empty)
        && !q.has("merge-central-config");
    if !streaming && let Err(r) = server_meta(shared, &opts) {
        return r;
    }
    if svc.is_empty() {
        return text(400, "Missing service name");
    }
    let dc = shared.cfg.datacenter.clone();
    let expr = match compile_filter(q, |sel| {
        crate::filter::health_select(&DUMMY_ENTRY, &dc, sel).is_some()
    }) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let tags = q.all("tag");
    let (index, mut entries) = blocking::run(shared, &opts, |s: &Store| s.health(svc, &tags)).await;
    let filtered = acl_filter(&mut entries, who, |e| (&e.node.name, &e.service.name));
    if let Some(expr) = &expr {
        // Consul: agent/consul/health_endpoint.go ServiceNodes — filter.Execute after the ACL
        // filter; the index stays the result's.
        entries.retain(|e| {
            crate::filter::matches(expr, &|sel: &[String]| {
                crate::filter::health_select(e, &dc, sel)
                    .unwrap_or(crate::filter::Selected::Missing)
            })
        });
    }
    // Consul parses `passing` after the RPC (see the FIXME in agent/health_endpoint.go).
    let Ok(passing) = bool_param(q, "passing") else {
        return text(400, "Invalid value for ?passing");
    };
    if passing {
        // Consul: agent/health_endpoint.go filterNonPassing — any check not passing.
        entries.retain(|e| e.checks.iter().all(|c| c.status == PASSING));
    }
    let dc = &shared.cfg.datacenter;
    let body = Value::Array(entries.iter().map(|e| health_entry_json(e, dc)).collect());
    if streaming {
        // Consul: agent/rpcclient/health/view.go HealthView.Result — the view's QueryMeta
        // carries only Index and Backend, so setMeta (agent/http.go) sends
        // X-Consul-KnownLeader: false and X-Consul-LastContact: 0, and never
        // X-Consul-Results-Filtered-By-ACLs (the events were filtered server-side).
        return set_meta(
            json_resp(&body),
            index,
            false,
            Duration::ZERO,
            &opts,
            "streaming",
        );
    }
    let r = with_meta(json_resp(&body), shared, index, &opts);
    filtered_by_acl(r, filtered && who.sent_token())
}

pub(super) async fn catalog_service(
    shared: &Arc<Shared>,
    svc: &str,
    q: &Query,
    who: &Caller,
) -> Response {
    let opts = match parse_read(shared, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if svc.is_empty() {
        return text(400, "Missing service name");
    }
    let dc = &shared.cfg.datacenter;
    let expr = match compile_filter(q, |sel| {
        crate::filter::catalog_select(&DUMMY_ENTRY.node, &DUMMY_ENTRY.service, dc, sel).is_some()
    }) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let tags = q.all("tag");
    let (index, mut entries) =
        blocking::run(shared, &opts, |s: &Store| s.catalog(svc, &tags)).await;
    let filtered = acl_filter(&mut entries, who, |(n, s)| (&n.name, &s.name));
    if let Some(expr) = &expr {
        // Consul: agent/consul/catalog_endpoint.go ServiceNodes — filter.Execute after the ACL
        // filter.
        entries.retain(|(n, s)| {
            crate::filter::matches(expr, &|sel: &[String]| {
                crate::filter::catalog_select(n, s, dc, sel)
                    .unwrap_or(crate::filter::Selected::Missing)
            })
        });
    }
    let body = Value::Array(
        entries
            .iter()
            .map(|(n, s)| catalog_entry_json(n, s, dc))
            .collect(),
    );
    let r = with_meta(json_resp(&body), shared, index, &opts);
    filtered_by_acl(r, filtered && who.sent_token())
}

/// `?filter=`, compiled before the query runs (an expression that does not compile fails the
/// request at once, as Consul's `bexpr.CreateFilter` does before the state read: HTTP 500).
fn compile_filter(
    q: &Query,
    valid: impl Fn(&[String]) -> bool,
) -> Result<Option<crate::filter::Expr>, Response> {
    match q.get("filter").filter(|f| !f.trim().is_empty()) {
        None => Ok(None),
        Some(src) => crate::filter::compile(src, valid)
            .map(Some)
            .map_err(|e| text(500, e)),
    }
}

/// An entry to ask "does this selector exist?" of; its values never matter.
static DUMMY_ENTRY: std::sync::LazyLock<HealthEntry> = std::sync::LazyLock::new(|| HealthEntry {
    node: Node {
        name: String::new(),
        id: String::new(),
        address: String::new(),
        tagged_addresses: BTreeMap::new(),
        meta: BTreeMap::new(),
        create_index: 0,
        modify_index: 0,
    },
    service: Service {
        node: String::new(),
        id: String::new(),
        name: String::new(),
        tags: Vec::new(),
        address: String::new(),
        tagged_addresses: BTreeMap::new(),
        meta: BTreeMap::new(),
        port: 0,
        weight_passing: 1,
        weight_warning: 1,
        enable_tag_override: false,
        create_index: 0,
        modify_index: 0,
    },
    checks: Vec::new(),
});

pub(super) fn not_found_with_meta(shared: &Shared, index: u64, opts: &QueryOptions) -> Response {
    let r = (StatusCode::NOT_FOUND, "").into_response();
    with_meta(r, shared, index, opts)
}
