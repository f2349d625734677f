//! The JSON shapes Consul answers with: field names and casing as in Consul, `Tags` and
//! `Checks` as `[]` (never `null`), `Session` omitted when a key is unlocked.
//!
//! Consul: agent/structs/structs.go (Node, NodeService, ServiceNode, HealthCheck,
//! CheckServiceNode, DirEntry via agent/structs/structs.go, Session), api/health.go and
//! api/catalog.go (client view); agent/health_endpoint.go healthServiceNodes (`[]` instead
//! of null for Nodes, Checks, ServiceTags, Tags).

use super::*;

pub(super) fn node_json(n: &Node, dc: &str) -> Value {
    json!({
        "ID": n.id,
        "Node": n.name,
        "Address": n.address,
        "Datacenter": dc,
        "TaggedAddresses": n.tagged_addresses,
        "Meta": n.meta,
        "CreateIndex": n.create_index,
        "ModifyIndex": n.modify_index,
    })
}

pub(super) fn tagged_json(t: &BTreeMap<String, (String, u16)>) -> Value {
    Value::Object(
        t.iter()
            .map(|(k, (a, p))| (k.clone(), json!({"Address": a, "Port": p})))
            .collect(),
    )
}

pub(super) fn service_json(s: &Service) -> Value {
    let mut v = json!({
        "ID": s.id,
        "Service": s.name,
        "Tags": s.tags,
        "Address": s.address,
        "Meta": s.meta,
        "Port": s.port,
        "Weights": {"Passing": s.weight_passing, "Warning": s.weight_warning},
        "EnableTagOverride": s.enable_tag_override,
        "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "Connect": {},
        "PeerName": "",
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    });
    if !s.tagged_addresses.is_empty() {
        v["TaggedAddresses"] = tagged_json(&s.tagged_addresses);
    }
    v
}

pub(super) fn check_json(c: &Check) -> Value {
    json!({
        "Node": c.node,
        "CheckID": c.check_id,
        "Name": c.name,
        "Status": c.status,
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": c.service_name,
        "ServiceTags": c.service_tags,
        "Type": c.kind,
        "Interval": c.interval,
        "Timeout": c.timeout,
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": c.create_index,
        "ModifyIndex": c.modify_index,
    })
}

pub(super) fn health_entry_json(e: &HealthEntry, dc: &str) -> Value {
    json!({
        "Node": node_json(&e.node, dc),
        "Service": service_json(&e.service),
        "Checks": e.checks.iter().map(check_json).collect::<Vec<_>>(),
    })
}

pub(super) fn catalog_entry_json(n: &Node, s: &Service, dc: &str) -> Value {
    let mut v = json!({
        "ID": n.id,
        "Node": n.name,
        "Address": n.address,
        "Datacenter": dc,
        "TaggedAddresses": n.tagged_addresses,
        "NodeMeta": n.meta,
        "ServiceKind": "",
        "ServiceID": s.id,
        "ServiceName": s.name,
        "ServiceTags": s.tags,
        "ServiceAddress": s.address,
        "ServiceWeights": {"Passing": s.weight_passing, "Warning": s.weight_warning},
        "ServiceMeta": s.meta,
        "ServicePort": s.port,
        "ServiceSocketPath": "",
        "ServiceEnableTagOverride": s.enable_tag_override,
        "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "ServiceConnect": {},
        "PeerName": "",
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    });
    if !s.tagged_addresses.is_empty() {
        v["ServiceTaggedAddresses"] = tagged_json(&s.tagged_addresses);
    }
    v
}

pub(super) fn kv_json(e: &KvEntry) -> Value {
    let mut v = json!({
        "LockIndex": e.lock_index,
        "Key": e.key,
        "Flags": e.flags,
        "Value": if e.value.is_empty() {
            Value::Null
        } else {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value))
        },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    });
    if !e.session.is_empty() {
        v["Session"] = json!(e.session);
    }
    v
}

pub(super) fn session_json(s: &Session) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": s.node_display,
        "LockDelay": s.lock_delay.as_nanos() as u64,
        "Behavior": s.behavior,
        "TTL": s.ttl,
        "NodeChecks": s.node_checks,
        "ServiceChecks": if s.service_checks.is_empty() {
            Value::Null
        } else {
            Value::Array(s.service_checks.iter().map(|c| json!({"ID": c, "Namespace": ""})).collect())
        },
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}
