//! `/v1/kv/<key>` (GET with `raw`/`recurse`/`keys`, PUT with `flags`/`cas`/`acquire`/
//! `release`, DELETE with `recurse`/`cas`) and `/v1/session/*`.
//!
//! Consul: agent/kvs_endpoint.go (KVSGet: 404 with X-Consul-Index for a missing key, `raw`,
//! `keys`/`separator`; KVSPut: `kv_max_value_size`, `flags`, `cas`, `acquire`, `release`),
//! agent/session_endpoint.go (SessionCreate defaults: LockDelay 15s, Behavior release,
//! checks serfHealth).

use super::agent::*;
use super::json::*;
use super::reads::*;
use super::*;

pub(super) async fn kv_endpoint(
    shared: &Arc<Shared>,
    method: &Method,
    key: &str,
    q: &Query,
    body: &[u8],
    who: &Caller,
) -> Response {
    // Consul: agent/consul/kvs_endpoint.go — writes need key:write on the key (or prefix).
    let no_write = !who.can(Resource::Key, key, Access::Write);
    match *method {
        Method::GET => kv_get(shared, key, q, who).await,
        Method::PUT => kv_put(shared, key, q, body, no_write, who),
        Method::DELETE => kv_delete(shared, key, q, no_write, who),
        _ => not_allowed(method),
    }
}

pub(super) async fn kv_get(shared: &Arc<Shared>, key: &str, q: &Query, who: &Caller) -> Response {
    let can_read = |k: &str| who.can(Resource::Key, k, Access::Read);
    let opts = match parse_read(shared, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if q.has("keys") {
        let sep = q
            .get("separator")
            .or_else(|| q.get("seperator"))
            .unwrap_or("")
            .to_string();
        let (index, entries) = blocking::run(shared, &opts, |s: &Store| s.kv_list(key)).await;
        let mut keys: Vec<String> = Vec::new();
        {
            // Consul: aclfilter filterKeys — keys the token cannot read are dropped.
            for e in entries.iter().filter(|e| can_read(&e.key)) {
                let after = &e.key[key.len()..];
                match (sep.is_empty(), after.find(sep.as_str())) {
                    (false, Some(i)) => {
                        let k = e.key[..key.len() + i + sep.len()].to_string();
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                    _ => keys.push(e.key.clone()),
                }
            }
        }
        if keys.is_empty() && !key.is_empty() {
            return not_found_with_meta(shared, index, &opts);
        }
        return with_meta(json_resp(&json!(keys)), shared, index, &opts);
    }
    if q.has("recurse") {
        let (index, mut entries) = blocking::run(shared, &opts, |s: &Store| s.kv_list(key)).await;
        // Consul: aclfilter filterDirEnt.
        entries.retain(|e| can_read(&e.key));
        if entries.is_empty() {
            return not_found_with_meta(shared, index, &opts);
        }
        let body = Value::Array(entries.iter().map(kv_json).collect());
        return with_meta(json_resp(&body), shared, index, &opts);
    }
    if key.is_empty() {
        return text(400, "Missing key name");
    }
    if !can_read(key) {
        return permission_denied(who, "key:read", key);
    }
    let (index, entry) = blocking::run(shared, &opts, |s: &Store| s.kv_get(key)).await;
    let Some(entry) = entry else {
        return not_found_with_meta(shared, index, &opts);
    };
    if q.has("raw") {
        let mut r = (StatusCode::OK, entry.value.clone()).into_response();
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        r.headers_mut().insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        r.headers_mut().insert(
            "content-security-policy",
            HeaderValue::from_static("sandbox"),
        );
        return with_meta(r, shared, index, &opts);
    }
    with_meta(json_resp(&json!([kv_json(&entry)])), shared, index, &opts)
}

pub(super) fn conflicting(q: &Query, flags: &[&str]) -> Option<Response> {
    if flags.iter().filter(|f| q.has(f)).count() > 1 {
        return Some(text(400, format!("Conflicting flags: {}\n", q.encode())));
    }
    None
}

pub(super) fn parse_u64_param(q: &Query, key: &str) -> Result<Option<u64>, Response> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            text(
                500,
                format!("strconv.ParseUint: parsing \"{v}\": invalid syntax"),
            )
        }),
    }
}

pub(super) fn kv_put(
    shared: &Arc<Shared>,
    key: &str,
    q: &Query,
    body: &[u8],
    anonymous: bool,
    who: &Caller,
) -> Response {
    if let Some(r) = q
        .get("dc")
        .filter(|d| !d.is_empty() && *d != shared.cfg.datacenter)
        .map(|_| text(500, "No path to datacenter"))
    {
        return r;
    }
    if key.is_empty() {
        return text(400, "Missing key name");
    }
    if let Some(r) = conflicting(q, &["cas", "acquire", "release"]) {
        return r;
    }
    if anonymous {
        return permission_denied(who, "key:write", key);
    }
    let flags = match parse_u64_param(q, "flags") {
        Ok(f) => f.unwrap_or(0),
        Err(r) => return r,
    };
    let cas = match parse_u64_param(q, "cas") {
        Ok(c) => c,
        Err(r) => return r,
    };
    if body.len() > KV_MAX_VALUE_SIZE {
        return text(
            413,
            format!(
                "Request body({} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
                body.len()
            ),
        );
    }
    let value = body.to_vec();
    let now = Instant::now();
    let result: Result<bool, String> = shared.write(|s| {
        if let Some(sess) = q.get("acquire") {
            s.kv_lock(key, value, flags, sess, now)
        } else if let Some(sess) = q.get("release") {
            s.kv_unlock(key, value, flags, sess)
        } else if let Some(cas) = cas {
            Ok(s.kv_cas(key, value, flags, cas))
        } else {
            Ok(s.kv_set(key, value, flags))
        }
    });
    match result {
        Ok(b) => json_resp(&json!(b)),
        Err(e) => text(500, e),
    }
}

pub(super) fn kv_delete(
    shared: &Arc<Shared>,
    key: &str,
    q: &Query,
    anonymous: bool,
    who: &Caller,
) -> Response {
    if let Some(r) = conflicting(q, &["recurse", "cas"]) {
        return r;
    }
    let recurse = q.has("recurse");
    if key.is_empty() && !recurse {
        return text(400, "Missing key name");
    }
    if anonymous {
        return permission_denied(who, "key:write", key);
    }
    let cas = match parse_u64_param(q, "cas") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let out = shared.write(|s| {
        if recurse {
            s.kv_delete_tree(key);
            true
        } else if let Some(cas) = cas {
            s.kv_delete_cas(key, cas)
        } else {
            s.kv_delete(key);
            true
        }
    });
    json_resp(&json!(out))
}

pub(super) fn parse_session(shared: &Shared, body: &[u8]) -> Result<SessionSpec, Bad> {
    let mut spec = SessionSpec {
        name: String::new(),
        node: shared.cfg.node_name.clone(),
        lock_delay: Duration::from_secs(15),
        behavior: "release".to_string(),
        ttl: String::new(),
        node_checks: Store::default_session_checks(),
        service_checks: Vec::new(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(spec);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| decode_err(&e.to_string()))?;
    spec.name = str_field(&v, "Name")?;
    let node = str_field(&v, "Node")?;
    if !node.is_empty() {
        spec.node = node;
    }
    match field(&v, "LockDelay") {
        None => {}
        // Consul's FixupLockDelay: small numbers are seconds, large ones nanoseconds.
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.0);
            spec.lock_delay = if f < 1000.0 {
                Duration::from_secs_f64(f.max(0.0))
            } else {
                Duration::from_nanos(f as u64)
            };
        }
        Some(Value::String(s)) => {
            spec.lock_delay = duration::parse(s)
                .ok_or_else(|| decode_err(&format!("time: invalid duration \"{s}\"")))?;
        }
        Some(_) => return Err(decode_err("json: cannot unmarshal LockDelay")),
    }
    let behavior = str_field(&v, "Behavior")?;
    if !behavior.is_empty() {
        spec.behavior = behavior;
    }
    spec.ttl = str_field(&v, "TTL")?;
    if field(&v, "NodeChecks").is_some() {
        spec.node_checks = strings_field(&v, "NodeChecks")?;
    } else if field(&v, "Checks").is_some() {
        spec.node_checks = strings_field(&v, "Checks")?;
    }
    if let Some(Value::Array(a)) = field(&v, "ServiceChecks") {
        spec.service_checks = a
            .iter()
            .filter_map(|c| field(c, "ID").and_then(Value::as_str).map(str::to_string))
            .collect();
    }
    Ok(spec)
}

pub(super) async fn session_endpoint(
    shared: &Arc<Shared>,
    method: &Method,
    rest: &str,
    q: &Query,
    body: &[u8],
    who: &Caller,
) -> Response {
    let mult = shared.cfg.session_ttl_multiplier;
    let now = Instant::now();
    if rest == "create" {
        if method != Method::PUT {
            return not_allowed(method);
        }
        let spec = match parse_session(shared, body) {
            Ok(s) => s,
            Err((c, m)) => return text(c, m),
        };
        if !who.can(Resource::Session, &spec.node, Access::Write) {
            return permission_denied(who, "session:write", &spec.node);
        }
        if let Some(r) = q
            .get("dc")
            .filter(|d| !d.is_empty() && *d != shared.cfg.datacenter)
            .map(|_| text(500, "No path to datacenter"))
        {
            return r;
        }
        return match shared.write(|s| s.session_create(spec, mult, now)) {
            Ok(id) => json_resp(&json!({"ID": id})),
            Err(e) => text(500, e),
        };
    }
    if let Some(id) = rest.strip_prefix("destroy/") {
        if method != Method::PUT {
            return not_allowed(method);
        }
        if !who.can(Resource::Session, &shared.cfg.node_name, Access::Write) {
            return permission_denied(who, "session:write", &shared.cfg.node_name);
        }
        shared.write(|s| s.session_destroy(id, now));
        return json_resp(&json!(true));
    }
    if let Some(id) = rest.strip_prefix("renew/") {
        if method != Method::PUT {
            return not_allowed(method);
        }
        if !who.can(Resource::Session, &shared.cfg.node_name, Access::Write) {
            return permission_denied(who, "session:write", &shared.cfg.node_name);
        }
        return match shared.write(|s| s.session_renew(id, mult, now)) {
            Some(sess) => json_resp(&json!([session_json(&sess)])),
            None => text(404, format!("Session id '{id}' not found")),
        };
    }
    if method != Method::GET {
        return not_allowed(method);
    }
    let opts = match parse_read(shared, q) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let filter: Option<Option<String>> = if let Some(id) = rest.strip_prefix("info/") {
        Some(Some(id.to_string()))
    } else if rest == "list" {
        Some(None)
    } else {
        None
    };
    let Some(filter) = filter else {
        return text(404, "404 page not found\n");
    };
    let (index, mut list) = blocking::run(shared, &opts, |s: &Store| {
        let list: Vec<Session> = s
            .sessions
            .values()
            .filter(|sess| filter.as_ref().is_none_or(|id| &sess.id == id))
            .cloned()
            .collect();
        (s.tables.sessions.max(1), list)
    })
    .await;
    // Consul: aclfilter filterSessions — session:read on the session's node.
    list.retain(|sess| who.can(Resource::Session, &sess.node_display, Access::Read));
    with_meta(
        json_resp(&Value::Array(list.iter().map(session_json).collect())),
        shared,
        index,
        &opts,
    )
}
