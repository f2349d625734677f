//! `/v1/agent/*` writes: service registration (body decoded the way Go decodes it:
//! case-insensitive field names, snake_case accepted), deregistration, maintenance, TTL check
//! updates; and `/v1/agent/self`.
//!
//! Consul: agent/agent_endpoint.go (AgentRegisterService, AgentDeregisterService,
//! AgentServiceMaintenance, AgentNodeMaintenance, AgentCheckPass/Warn/Fail/Update),
//! agent/structs/check_type.go Validate (the `Invalid check: …` texts), agent/agent.go
//! addServiceInternal (default check IDs `service:<id>[:<n>]` and names
//! `Service '<name>' check`) and addCheck (script checks refused unless
//! `enable_script_checks`).

use super::*;

pub(super) fn agent_self(shared: &Shared) -> Response {
    let (node_id, addr) = shared.read(|s| {
        s.nodes
            .get(&s.agent_node)
            .map(|n| (n.id.clone(), n.address.clone()))
            .unwrap_or_default()
    });
    json_resp(&json!({
        "Config": {
            "Datacenter": shared.cfg.datacenter,
            "PrimaryDatacenter": shared.cfg.datacenter,
            "NodeName": shared.cfg.node_name,
            "NodeID": node_id,
            "Revision": "consul-double",
            "Server": true,
            "Version": "1.20.0",
        },
        "DebugConfig": {},
        "Coord": null,
        "Member": {
            "Name": shared.cfg.node_name,
            "Addr": addr,
            "Port": 8301,
            "Tags": {"dc": shared.cfg.datacenter, "role": "consul"},
            "Status": 1,
        },
        "Meta": {"consul-network-segment": "", "consul-version": "1.20.0"},
    }))
}

/// Body field lookup the way Go decodes it: case-insensitive, snake_case accepted.
pub(super) fn norm(k: &str) -> String {
    k.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

pub(super) fn field<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    let want = norm(name);
    obj.as_object()?
        .iter()
        .find(|(k, _)| norm(k) == want)
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

pub(super) type Bad = (u16, String);

pub(super) fn decode_err(what: &str) -> Bad {
    (400, format!("Request decode failed: {what}"))
}

pub(super) fn str_field(obj: &Value, name: &str) -> Result<String, Bad> {
    match field(obj, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(decode_err(&format!(
            "json: cannot unmarshal {name}: expected a string"
        ))),
    }
}

pub(super) fn strings_field(obj: &Value, name: &str) -> Result<Vec<String>, Bad> {
    match field(obj, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    decode_err(&format!("json: cannot unmarshal {name}: expected strings"))
                })
            })
            .collect(),
        Some(_) => Err(decode_err(&format!(
            "json: cannot unmarshal {name}: expected an array"
        ))),
    }
}

pub(super) fn map_field(obj: &Value, name: &str) -> Result<BTreeMap<String, String>, Bad> {
    match field(obj, name) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| {
                        decode_err(&format!(
                            "json: cannot unmarshal {name}: expected string values"
                        ))
                    })
            })
            .collect(),
        Some(_) => Err(decode_err(&format!(
            "json: cannot unmarshal {name}: expected an object"
        ))),
    }
}

/// A non-negative integer field (Go `int`; absent = 0).
pub(super) fn count_field(obj: &Value, name: &str) -> Result<u32, Bad> {
    match field(obj, name) {
        None => Ok(0),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) if i <= 0 => Ok(0),
            Some(i) => Ok(u32::try_from(i).unwrap_or(u32::MAX)),
            None => Err(decode_err(&format!("json: cannot unmarshal {name}"))),
        },
        Some(_) => Err(decode_err(&format!(
            "json: cannot unmarshal {name}: expected a number"
        ))),
    }
}

/// A duration field: Go duration string or integer nanoseconds.
pub(super) fn duration_field(obj: &Value, name: &str) -> Result<Option<Duration>, Bad> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        // Consul decodes these with Go's time.ParseDuration (agent/structs/check_type.go
        // UnmarshalJSON); a negative value fails the "must be > 0" validation later.
        Some(Value::String(s)) => duration::parse_go(s)
            .map(|ns| Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(0))))
            .map_err(|e| decode_err(&e)),
        Some(Value::Number(n)) => Ok(n.as_u64().map(Duration::from_nanos)),
        Some(_) => Err(decode_err(&format!("json: cannot unmarshal {name}"))),
    }
}

/// The name of service `id` (for ACL checks), or `id` when unknown.
fn service_name(shared: &Shared, node: Option<&str>, id: &str) -> String {
    shared.read(|s| {
        s.locate_service(node, id)
            .and_then(|n| s.services.get(&(n, id.to_string())).map(|x| x.name.clone()))
            .unwrap_or_else(|| id.to_string())
    })
}

pub(super) fn parse_check(shared: &Shared, v: &Value) -> Result<Option<CheckReg>, Bad> {
    if !v.is_object() {
        return Err(decode_err(
            "json: cannot unmarshal check: expected an object",
        ));
    }
    if v.as_object()
        .is_some_and(|m| m.values().all(Value::is_null))
    {
        return Ok(None);
    }
    let status = str_field(v, "Status")?;
    if !status.is_empty() && ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
        return Err((
            400,
            "Status for checks must 'passing', 'warning', 'critical'".to_string(),
        ));
    }
    for unsupported in [
        "HTTP",
        "GRPC",
        "UDP",
        "H2PING",
        "DockerContainerID",
        "AliasService",
        "AliasNode",
        "OSService",
    ] {
        if field(v, unsupported).is_some_and(|x| x.as_str() != Some("")) {
            return Err((
                400,
                format!("Invalid check: consul-double does not implement {unsupported} checks"),
            ));
        }
    }
    let tcp = str_field(v, "TCP")?;
    let mut args = strings_field(v, "Args")?;
    if args.is_empty() {
        args = strings_field(v, "ScriptArgs")?;
    }
    let ttl = duration_field(v, "TTL")?;
    let interval = duration_field(v, "Interval")?;
    let timeout = duration_field(v, "Timeout")?;
    let deregister_after = duration_field(v, "DeregisterCriticalServiceAfter")?;
    let failures_before_critical = count_field(v, "FailuresBeforeCritical")?;
    let thresholds = Thresholds {
        success_before_passing: count_field(v, "SuccessBeforePassing")?,
        // Consul: agent/agent.go addCheck — "FailuresBeforeWarning has to default to same value
        // as FailuresBeforeCritical".
        failures_before_warning: match count_field(v, "FailuresBeforeWarning")? {
            0 => failures_before_critical,
            n => n,
        },
        failures_before_critical,
    };
    let invalid_interval = || {
        (
            400,
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP or UDP checks"
                .to_string(),
        )
    };
    let min = shared.cfg.min_check_interval;
    let (def, kind, interval_s, timeout_s) = if !tcp.is_empty() {
        let iv = interval
            .filter(|d| !d.is_zero())
            .ok_or_else(invalid_interval)?
            .max(min);
        let to = timeout
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(10));
        (
            CheckDef::Tcp {
                addr: tcp,
                interval: iv,
                timeout: to,
                thresholds,
            },
            "tcp",
            duration::format(iv),
            timeout.map(duration::format).unwrap_or_default(),
        )
    } else if !args.is_empty() {
        let iv = interval
            .filter(|d| !d.is_zero())
            .ok_or_else(invalid_interval)?
            .max(min);
        if !shared.cfg.enable_script_checks {
            return Err((
                500,
                // Consul: agent/agent.go addCheck — a registration over the HTTP API is a
                // remote source, admitted only by `enable_script_checks`
                // (`enable_local_script_checks` admits the agent's own config files).
                "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true".to_string(),
            ));
        }
        let to = timeout
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(30));
        (
            CheckDef::Script {
                args,
                interval: iv,
                timeout: to,
                thresholds,
            },
            "script",
            duration::format(iv),
            timeout.map(duration::format).unwrap_or_default(),
        )
    } else if let Some(ttl) = ttl {
        if ttl.is_zero() {
            return Err((
                400,
                "Invalid check: TTL must be > 0 for TTL checks".to_string(),
            ));
        }
        (CheckDef::Ttl { ttl }, "ttl", String::new(), String::new())
    } else {
        return Err((400, "Invalid check: Check type is not valid".to_string()));
    };
    let mut check_id = str_field(v, "CheckID")?;
    if check_id.is_empty() {
        check_id = str_field(v, "ID")?;
    }
    Ok(Some(CheckReg {
        check_id,
        name: str_field(v, "Name")?,
        notes: str_field(v, "Notes")?,
        status: (!status.is_empty()).then_some(status),
        kind: kind.to_string(),
        interval: interval_s,
        timeout: timeout_s,
        def,
        deregister_after,
    }))
}

pub(super) fn parse_registration(
    shared: &Shared,
    body: &[u8],
    q: &Query,
) -> Result<ServiceReg, Bad> {
    let v: Value = serde_json::from_slice(body).map_err(|e| decode_err(&e.to_string()))?;
    if !v.is_object() {
        return Err(decode_err(
            "json: cannot unmarshal into a service definition",
        ));
    }
    let name = str_field(&v, "Name")?;
    if name.is_empty() {
        return Err((400, "Missing service name".to_string()));
    }
    let mut id = str_field(&v, "ID")?;
    if id.is_empty() {
        id = name.clone();
    }
    let address = str_field(&v, "Address")?;
    let port = match field(&v, "Port") {
        None => 0,
        Some(p) => p
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| decode_err("json: cannot unmarshal Port"))?,
    };
    let (mut wp, mut ww) = (1, 1);
    if let Some(w) = field(&v, "Weights") {
        wp = field(w, "Passing").and_then(Value::as_i64).unwrap_or(1);
        ww = field(w, "Warning").and_then(Value::as_i64).unwrap_or(1);
        if wp < 1 {
            return Err((
                400,
                "Invalid Weights.Passing: must be greater than 0".to_string(),
            ));
        }
    }
    let mut tagged = tagged_service_addresses(&address, port);
    if let Some(Value::Object(m)) = field(&v, "TaggedAddresses") {
        for (k, ta) in m {
            let a = str_field(ta, "Address")?;
            let p = field(ta, "Port").and_then(Value::as_u64).unwrap_or(0) as u16;
            tagged.insert(k.clone(), (a, p));
        }
    }
    let enable_tag_override = field(&v, "EnableTagOverride")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut check_values = Vec::new();
    if let Some(c) = field(&v, "Check") {
        check_values.push(c.clone());
    }
    match field(&v, "Checks") {
        None => {}
        Some(Value::Array(a)) => check_values.extend(a.iter().cloned()),
        Some(_) => {
            return Err(decode_err(
                "json: cannot unmarshal Checks: expected an array",
            ));
        }
    }
    let mut checks = Vec::new();
    for cv in &check_values {
        if let Some(c) = parse_check(shared, cv)? {
            checks.push(c);
        }
    }
    let n = checks.len();
    for (i, c) in checks.iter_mut().enumerate() {
        if c.check_id.is_empty() {
            c.check_id = if n > 1 {
                format!("service:{id}:{}", i + 1)
            } else {
                format!("service:{id}")
            };
        }
        if c.name.is_empty() {
            c.name = format!("Service '{name}' check");
        }
        if let Some(d) = c.deregister_after {
            c.deregister_after = Some(d.max(shared.cfg.check_deregister_interval_min));
        }
    }
    let node = q
        .get("node")
        .filter(|n| !n.is_empty())
        .unwrap_or(&shared.cfg.node_name)
        .to_string();
    let node_address = q
        .get("node_address")
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .or_else(|| {
            node.eq_ignore_ascii_case(&shared.cfg.node_name)
                .then(|| shared.cfg.node_address.clone())
        });
    Ok(ServiceReg {
        node,
        node_address,
        service: Service {
            node: String::new(),
            id,
            name,
            tags: strings_field(&v, "Tags")?,
            address,
            tagged_addresses: tagged,
            meta: map_field(&v, "Meta")?,
            port,
            weight_passing: wp,
            weight_warning: ww,
            enable_tag_override,
            create_index: 0,
            modify_index: 0,
        },
        checks,
    })
}

pub(super) fn agent_write(
    shared: &Arc<Shared>,
    rest: &str,
    q: &Query,
    body: &[u8],
    who: &Caller,
) -> Response {
    let node = q.get("node").filter(|n| !n.is_empty());
    let now = Instant::now();
    if rest == "service/register" {
        let reg = match parse_registration(shared, body, q) {
            Ok(r) => r,
            Err((c, m)) => return text(c, m),
        };
        if !who.can(Resource::Service, &reg.service.name, Access::Write) {
            return permission_denied(who, "service:write", &reg.service.name);
        }
        let runners = shared.write(|s| s.register_service(reg, now));
        for r in runners {
            crate::checks::spawn_runner(shared, r);
        }
        return (StatusCode::OK, "").into_response();
    }
    if let Some(id) = rest.strip_prefix("service/deregister/") {
        if !who.can(
            Resource::Service,
            &service_name(shared, node, id),
            Access::Write,
        ) {
            return permission_denied(who, "service:write", id);
        }
        let done = shared.write(|s| match s.locate_service(node, id) {
            Some(n) => s.deregister_service(&n, id),
            None => false,
        });
        if !done {
            return text(
                404,
                format!(
                    "Unknown service ID \"{id}\". Ensure that the service ID is passed, not the service name."
                ),
            );
        }
        return (StatusCode::OK, "").into_response();
    }
    if let Some(id) = rest.strip_prefix("service/maintenance/") {
        // Consul: agent/agent_endpoint.go AgentServiceMaintenance — `enable` must be present
        // ("Missing value for enable") and a Go bool (`Invalid value for enable: "<v>"`).
        let enable = match q.get("enable") {
            None => return text(400, "Missing value for enable"),
            Some(v) => match parse_go_bool(v) {
                Some(b) => b,
                None => return text(400, format!("Invalid value for enable: \"{v}\"")),
            },
        };
        if !who.can(
            Resource::Service,
            &service_name(shared, node, id),
            Access::Write,
        ) {
            return permission_denied(who, "service:write", id);
        }
        let reason = q.get("reason").unwrap_or("").to_string();
        let found = shared.write(|s| match s.locate_service(node, id) {
            Some(n) => {
                s.set_maintenance(&n, id, enable, &reason, now);
                true
            }
            None => false,
        });
        if !found {
            // Consul: agent/agent.go EnableServiceMaintenance → 404 with its error text.
            return text(404, format!("No service registered with ID \"{id}\""));
        }
        return (StatusCode::OK, "").into_response();
    }
    if rest == "maintenance" {
        // Consul: agent/agent_endpoint.go AgentNodeMaintenance (node:write on the node).
        let enable = match q.get("enable") {
            None => return text(400, "Missing value for enable"),
            Some(v) => match parse_go_bool(v) {
                Some(b) => b,
                None => return text(400, format!("Invalid value for enable: \"{v}\"")),
            },
        };
        let node_name = node.unwrap_or(&shared.cfg.node_name).to_string();
        if !who.can(Resource::Node, &node_name, Access::Write) {
            return permission_denied(who, "node:write", &node_name);
        }
        let reason = q.get("reason").unwrap_or("").to_string();
        let key = node_name.to_ascii_lowercase();
        let known = shared.write(|s| {
            if !s.nodes.contains_key(&key) {
                return false;
            }
            s.set_node_maintenance(&key, enable, &reason, now);
            true
        });
        if !known {
            return text(404, format!("Unknown node {node_name:?}"));
        }
        return (StatusCode::OK, "").into_response();
    }
    for (verb, status) in [("pass", PASSING), ("warn", WARNING), ("fail", CRITICAL)] {
        if let Some(id) = rest.strip_prefix(&format!("check/{verb}/")) {
            let note = q.get("note").unwrap_or("").to_string();
            return ttl_update(shared, node, id, status, note, who);
        }
    }
    if let Some(id) = rest.strip_prefix("check/update/") {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return text(400, format!("Request decode failed: {e}")),
        };
        let status = match str_field(&v, "Status") {
            Ok(s) => s,
            Err((c, m)) => return text(c, m),
        };
        if ![PASSING, WARNING, CRITICAL].contains(&status.as_str()) {
            return text(400, format!("Invalid check status: '{status}'"));
        }
        let output = str_field(&v, "Output").unwrap_or_default();
        let status: &'static str = match status.as_str() {
            PASSING => PASSING,
            WARNING => WARNING,
            _ => CRITICAL,
        };
        return ttl_update(shared, node, id, status, output, who);
    }
    text(404, "404 page not found\n")
}

pub(super) fn ttl_update(
    shared: &Arc<Shared>,
    node: Option<&str>,
    id: &str,
    status: &'static str,
    output: String,
    who: &Caller,
) -> Response {
    // Consul: agent/agent.go vetCheckUpdateWithAuthorizer — a service check needs
    // service:write on its service, a node check node:write on the node.
    let target = shared.read(|s| {
        s.locate_check(node, id).and_then(|k| {
            s.checks
                .get(&k)
                .map(|c| (c.service_name.clone(), c.node.clone()))
        })
    });
    let (res, name, perm) = match &target {
        Some((svc, _)) if !svc.is_empty() => (Resource::Service, svc.clone(), "service:write"),
        Some((_, n)) => (Resource::Node, n.clone(), "node:write"),
        None => (Resource::Node, shared.cfg.node_name.clone(), "node:write"),
    };
    if !who.can(res, &name, Access::Write) {
        return permission_denied(who, perm, &name);
    }
    let interval = shared.cfg.check_update_interval;
    let result = shared.write(|s| match s.locate_check(node, id) {
        Some(k) => s.ttl_update(&k, status, output, Instant::now(), interval),
        None => Err(format!("CheckID \"{id}\" does not have associated TTL")),
    });
    match result {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(e) => text(500, e),
    }
}
