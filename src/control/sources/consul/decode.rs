//! Pure decoding of Consul answers into [`NamedServer`]s: health and catalog entries, KV
//! entries, and the value of a leader key. No I/O here, so every function can be unit-tested and
//! fuzzed. Unknown fields are ignored (Consul adds fields between versions). An answer that is
//! not a JSON array is an error naming what was wrong; inside it, each entry is decoded on its
//! own, and an entry with missing or wrong-typed fields is skipped with a note naming it.
//!
//! Health entries carry their checks: the proxy asks without `?passing` and judges each
//! instance itself ([`Health`]), so it knows *why* an instance is not a candidate — maintenance
//! (an operator's intent) or a critical check (which may only mean Consul lost sight of it).

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine;
use serde::Deserialize;

use crate::config::{HealthRules, WarningIs};

/// A server named by Consul, before its host name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedServer {
    pub host: String,
    pub port: u16,
    /// Consul node name (tie-breaker for `on_multiple = first`).
    pub node: String,
    /// Service ID or key, for logs.
    pub name: String,
    /// Service meta `priority`, keepalived style.
    pub priority: Option<i64>,
}

/// A Consul answer that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} answer: {message}")]
pub struct DecodeError {
    pub what: &'static str,
    pub message: String,
}

fn decode_error(what: &'static str, message: impl Into<String>) -> DecodeError {
    DecodeError {
        what,
        message: message.into(),
    }
}

/// Entries of one answer that could be used, and the ones skipped with why. One malformed or
/// unusable instance never blocks the answer: the remaining instances decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<T> {
    pub items: Vec<T>,
    /// One line per skipped entry, naming it and the problem.
    pub skipped: Vec<String>,
}

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Decoded {
            items: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

/// What an instance's checks say, by the proxy's own rules (`warning_is`, `ignore_checks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every relevant check passes.
    Passing,
    /// A node check warns and `warning_is = passing` (the default): still a candidate.
    Warning(String),
    /// The service's own check warns: not passing, so never a primary (Consul's `?passing`); for
    /// a replica route, a *lagging* replica — what `check --role replica` reports for lag above
    /// `--max-lag` — still a pool member, used when no other replica is left.
    Lagging(String),
    /// A check is critical: the service check, or a node check such as `serfHealth` (the
    /// node's agent is gone or cut off from the servers).
    Critical(String),
    /// Maintenance mode on the service or the node: an operator took it out.
    Maintenance(String),
}

impl Health {
    /// Whether an instance with this health may be the primary.
    pub fn is_candidate(&self) -> bool {
        matches!(self, Health::Passing | Health::Warning(_))
    }
}

/// A service instance from the health endpoint: where it is and what its checks say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub server: NamedServer,
    pub health: Health,
}

/// Consul's maintenance check IDs (`_node_maintenance`, `_service_maintenance:<service-id>`).
const NODE_MAINTENANCE: &str = "_node_maintenance";
const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The node check every agent has: critical when the node's agent is gone or cut off.
const SERF_HEALTH: &str = "serfHealth";

#[derive(Deserialize)]
struct HealthEntry {
    #[serde(rename = "Node")]
    node: HealthNode,
    #[serde(rename = "Service")]
    service: HealthService,
    #[serde(rename = "Checks", default)]
    checks: Option<Vec<HealthCheck>>,
}

#[derive(Deserialize)]
struct HealthNode {
    #[serde(rename = "Node")]
    node: String,
    #[serde(rename = "Address", default)]
    address: String,
}

#[derive(Deserialize)]
struct HealthService {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Service", default)]
    service: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Port", default)]
    port: u16,
    #[serde(rename = "Meta", default)]
    meta: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct HealthCheck {
    #[serde(rename = "CheckID", default)]
    check_id: String,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "Output", default)]
    output: String,
    #[serde(rename = "Notes", default)]
    notes: String,
    #[serde(rename = "ServiceID", default)]
    service_id: String,
}

fn priority(meta: &Option<HashMap<String, String>>) -> Option<i64> {
    meta.as_ref()?.get("priority")?.trim().parse().ok()
}

/// Consul's rule: the service address if set, else the node address.
fn pick_address(service: &str, node: &str) -> Result<String, String> {
    let address = if service.is_empty() { node } else { service };
    if address.is_empty() {
        return Err("entry has neither a service nor a node address".to_owned());
    }
    Ok(address.to_owned())
}

/// Port 0 means the service was registered without a port: the server is on `default_port`.
fn port_or_default(port: u16, default_port: u16) -> u16 {
    if port == 0 { default_port } else { port }
}

/// Decodes a JSON array entry by entry: the array itself must parse, each entry may fail alone.
fn decode_entries<E: serde::de::DeserializeOwned, T>(
    what: &'static str,
    body: &[u8],
    mut convert: impl FnMut(E) -> Result<T, String>,
) -> Result<Decoded<T>, DecodeError> {
    let raw: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| decode_error(what, e.to_string()))?;
    let mut decoded = Decoded {
        items: Vec::with_capacity(raw.len()),
        skipped: Vec::new(),
    };
    for (i, value) in raw.into_iter().enumerate() {
        let label = entry_label(&value, i);
        let item = serde_json::from_value::<E>(value)
            .map_err(|e| e.to_string())
            .and_then(&mut convert);
        match item {
            Ok(item) => decoded.items.push(item),
            Err(e) => decoded.skipped.push(format!("{what} entry {label}: {e}")),
        }
    }
    Ok(decoded)
}

/// `#3 (node db1, service mysql-1)` as far as the entry says.
fn entry_label(value: &serde_json::Value, index: usize) -> String {
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    let node = text(value.pointer("/Node/Node")).or_else(|| text(value.get("Node")));
    let service = text(value.pointer("/Service/ID")).or_else(|| text(value.get("ServiceID")));
    match (node, service) {
        (Some(n), Some(s)) => format!("#{index} (node {n}, service {s})"),
        (Some(n), None) => format!("#{index} (node {n})"),
        _ => format!("#{index}"),
    }
}

/// Decodes `GET /v1/health/service/<svc>` (asked without `?passing`, so every instance comes
/// back with all its checks) and judges each instance's health by `rules`.
pub fn decode_health(
    body: &[u8],
    default_port: u16,
    rules: &HealthRules,
) -> Result<Decoded<Instance>, DecodeError> {
    decode_entries("health", body, |e: HealthEntry| {
        let host = pick_address(&e.service.address, &e.node.address)?;
        let id = if e.service.id.is_empty() {
            e.service.service
        } else {
            e.service.id
        };
        let health = judge(e.checks.as_deref().unwrap_or_default(), &id, rules);
        Ok(Instance {
            server: NamedServer {
                host,
                port: port_or_default(e.service.port, default_port),
                name: format!("{}/{}", e.node.node, id),
                node: e.node.node,
                priority: priority(&e.service.meta),
            },
            health,
        })
    })
}

/// The instance's health from its checks (node checks have an empty `ServiceID`; checks of
/// other services on the node are not returned by Consul, and ignored if they were).
fn judge(checks: &[HealthCheck], service_id: &str, rules: &HealthRules) -> Health {
    let relevant: Vec<&HealthCheck> = checks
        .iter()
        .filter(|c| c.service_id.is_empty() || c.service_id == service_id)
        .filter(|c| !rules.ignore_checks.contains(&c.check_id))
        .collect();
    let describe = |c: &HealthCheck| {
        let detail = if c.notes.trim().is_empty() {
            c.output.trim()
        } else {
            c.notes.trim()
        };
        let scope = if c.service_id.is_empty() {
            "node check"
        } else {
            "check"
        };
        let detail = crate::util::text::truncate_chars(&crate::util::text::one_line(detail), 200);
        if detail.is_empty() {
            format!("{scope} {} {}", c.check_id, c.status)
        } else {
            format!("{scope} {} {}: {detail}", c.check_id, c.status)
        }
    };
    let maintenance = relevant.iter().find(|c| {
        (c.check_id == NODE_MAINTENANCE || c.check_id.starts_with(SERVICE_MAINTENANCE_PREFIX))
            && c.status != "passing"
    });
    if let Some(c) = maintenance.or_else(|| relevant.iter().find(|c| c.status == "maintenance")) {
        return Health::Maintenance(describe(c));
    }
    // serfHealth first: "the node's agent is gone" explains every other check of that node.
    let critical = relevant
        .iter()
        .filter(|c| !matches!(c.status.as_str(), "passing" | "warning"))
        .min_by_key(|c| c.check_id != SERF_HEALTH);
    if let Some(c) = critical {
        return Health::Critical(describe(c));
    }
    let warnings = || relevant.iter().filter(|c| c.status == "warning");
    // The service's own check in warning: not passing, as Consul's `?passing` reads it (a script
    // check exits 1 for warning, which many "am I the primary?" scripts use for "no").
    if let Some(c) = warnings().find(|c| !c.service_id.is_empty()) {
        // For a replica pool the same status means "lagging": `check --role replica` exits 1 for
        // lag above --max-lag, which Consul's script check records as `warning`
        // (`agent/checks/check.go`, `CheckMonitor.check`: exit code 1 → `api.HealthWarning`).
        // The control loop decides by the route's role.
        return Health::Lagging(describe(c));
    }
    // A node check in warning (disk 90 %, load): `warning_is` decides.
    if let Some(c) = warnings().next() {
        return match rules.warning_is {
            WarningIs::Passing => Health::Warning(describe(c)),
            WarningIs::Critical => {
                Health::Critical(format!("{} (warning_is = critical)", describe(c)))
            }
        };
    }
    Health::Passing
}

#[derive(Deserialize)]
struct CatalogEntry {
    #[serde(rename = "Node")]
    node: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "ServiceID", default)]
    service_id: String,
    #[serde(rename = "ServiceAddress", default)]
    service_address: String,
    #[serde(rename = "ServicePort", default)]
    service_port: u16,
    #[serde(rename = "ServiceMeta", default)]
    service_meta: Option<HashMap<String, String>>,
}

/// Decodes `GET /v1/catalog/service/<svc>`.
pub fn decode_catalog(body: &[u8], default_port: u16) -> Result<Decoded<NamedServer>, DecodeError> {
    decode_entries("catalog", body, |e: CatalogEntry| {
        Ok(NamedServer {
            host: pick_address(&e.service_address, &e.address)?,
            port: port_or_default(e.service_port, default_port),
            name: format!("{}/{}", e.node, e.service_id),
            node: e.node,
            priority: priority(&e.service_meta),
        })
    })
}

#[derive(Deserialize)]
struct KvEntry {
    #[serde(rename = "Key", default)]
    key: String,
    #[serde(rename = "Value", default)]
    value: Option<String>,
    #[serde(rename = "Session", default)]
    session: Option<String>,
}

/// What a leader key says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvAnswer {
    /// The key names this server.
    Primary(NamedServer),
    /// The key says there is no primary, and why.
    None(String),
}

/// Decodes `GET /v1/kv/<key>`; `missing` is a 404 answer (the key does not exist).
pub fn decode_kv(
    key: &str,
    missing: bool,
    body: &[u8],
    require_session: bool,
    default_port: u16,
) -> Result<KvAnswer, DecodeError> {
    const WHAT: &str = "KV";
    if missing {
        return Ok(KvAnswer::None(format!("KV key {key} does not exist")));
    }
    let entries: Vec<KvEntry> =
        serde_json::from_slice(body).map_err(|e| decode_error(WHAT, e.to_string()))?;
    let Some(entry) = entries
        .into_iter()
        .find(|e| e.key == key || e.key.is_empty())
    else {
        return Ok(KvAnswer::None(format!("KV key {key} does not exist")));
    };
    if require_session && entry.session.as_deref().unwrap_or("").is_empty() {
        return Ok(KvAnswer::None(format!(
            "KV key {key} is not held by a session (leader lock released)"
        )));
    }
    let raw = match entry.value {
        None => Vec::new(),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| decode_error(WHAT, format!("Value of {key} is not base64: {e}")))?,
    };
    let text = String::from_utf8(raw)
        .map_err(|_| decode_error(WHAT, format!("value of {key} is not UTF-8")))?;
    if text.trim().is_empty() {
        return Ok(KvAnswer::None(format!("KV key {key} is empty")));
    }
    let (host, port) = parse_primary_value(&text, default_port)
        .map_err(|e| decode_error(WHAT, format!("value of {key}: {e}")))?;
    Ok(KvAnswer::Primary(NamedServer {
        name: format!("{host}:{port}"),
        node: host.clone(),
        host,
        port,
        priority: None,
    }))
}

#[derive(Deserialize)]
struct JsonPrimary {
    host: Option<String>,
    ip: Option<String>,
    address: Option<String>,
    port: Option<serde_json::Value>,
}

/// Parses a value naming the primary: `host:port`, `[v6]:port`, a bare `host` or IP (port =
/// `default_port`), or a JSON object with `host`/`ip`/`address` and `port`.
pub fn parse_primary_value(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let text = text.trim();
    if text.starts_with('{') {
        let v: JsonPrimary =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON object: {e}"))?;
        let host = v
            .host
            .or(v.ip)
            .or(v.address)
            .filter(|h| !h.trim().is_empty())
            .ok_or("JSON object has no `host`, `ip` or `address`")?;
        let port = match v.port {
            None => default_port,
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(format!("port {n} is out of range"))?,
            Some(serde_json::Value::String(s)) => parse_port(&s)?,
            Some(other) => return Err(format!("port {other} is not a number")),
        };
        check_host(host.trim())?;
        return Ok((host.trim().to_owned(), port));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, port) = rest
            .split_once("]:")
            .ok_or("bracketed IPv6 needs the form [addr]:port")?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("`{ip}` is not an IPv6 address"))?;
        return Ok((ip.to_string(), parse_port(port)?));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => {
            check_host(host)?;
            Ok((host.to_owned(), parse_port(port)?))
        }
        None => {
            check_host(text)?;
            Ok((text.to_owned(), default_port))
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{text}` is not a port (1-65535)")),
        Ok(port) => Ok(port),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name or IP address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HealthRules {
        HealthRules::default()
    }

    #[test]
    fn health_uses_service_address_then_node_address_and_ignores_unknown_fields() {
        let body = br#"[
          {"Node":{"ID":"x","Node":"db1","Address":"10.0.0.1","Datacenter":"dc1","NewField":1},
           "Service":{"ID":"mysql-1","Service":"mysql","Tags":["primary"],"Address":"","Port":3307,"Meta":{"priority":"50"}},
           "Checks":[]},
          {"Node":{"Node":"db2","Address":"10.0.0.2"},
           "Service":{"ID":"mysql-2","Service":"mysql","Address":"127.0.0.9","Port":3308,"Meta":null},
           "Checks":[]}
        ]"#;
        let found = decode_health(body, 3306, &rules()).unwrap().items;
        assert_eq!(found[0].server.host, "10.0.0.1");
        assert_eq!(found[0].server.port, 3307);
        assert_eq!(found[0].server.priority, Some(50));
        assert_eq!(found[0].server.name, "db1/mysql-1");
        assert_eq!(found[0].health, Health::Passing);
        assert_eq!(found[1].server.host, "127.0.0.9");
        assert_eq!(found[1].server.priority, None);
    }

    #[test]
    fn bad_entries_are_skipped_with_a_note_and_a_bad_answer_is_an_error() {
        let err = decode_health(b"<html>", 3306, &rules())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid health answer"), "{err}");
        let body = br#"[
          {"Node":{"Node":"a","Address":"1.2.3.4"},"Service":{"ID":"m","Port":"x"}},
          {"Node":{"Node":"b"},"Service":{"ID":"m2","Port":1}},
          {"Node":{"Node":"c","Address":"1.2.3.5"},"Service":{"ID":"m3","Port":0}},
          17
        ]"#;
        let decoded = decode_health(body, 3306, &rules()).unwrap();
        assert_eq!(decoded.items.len(), 1, "{decoded:?}");
        assert_eq!(
            decoded.items[0].server.port, 3306,
            "port 0 means default_port"
        );
        assert_eq!(decoded.skipped.len(), 3, "{decoded:?}");
        assert!(
            decoded.skipped[0].contains("node a, service m")
                && decoded.skipped[0].contains("invalid type"),
            "{decoded:?}"
        );
        assert!(
            decoded.skipped[1].contains("neither a service nor a node address"),
            "{decoded:?}"
        );
        assert!(decoded.skipped[2].contains("#3"), "{decoded:?}");
        assert_eq!(
            decode_health(b"[]", 3306, &rules()).unwrap(),
            Decoded::default()
        );
    }

    fn with_checks(checks: &str) -> String {
        format!(
            r#"[{{"Node":{{"Node":"db1","Address":"10.0.0.1"}},"Service":{{"ID":"mysql-1","Service":"mysql","Port":3306}},"Checks":{checks}}}]"#
        )
    }

    fn health_of(checks: &str, rules: &HealthRules) -> Health {
        decode_health(with_checks(checks).as_bytes(), 3306, rules)
            .unwrap()
            .items
            .remove(0)
            .health
    }

    #[test]
    fn checks_decide_health() {
        let serf_ok = r#"{"CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing","ServiceID":""}"#;
        let serf_down = r#"{"CheckID":"serfHealth","Name":"Serf Health Status","Status":"critical","Output":"Agent not live or unreachable","ServiceID":""}"#;
        let svc_ok = r#"{"CheckID":"service:mysql-1","Status":"passing","ServiceID":"mysql-1"}"#;
        let svc_down = r#"{"CheckID":"service:mysql-1","Status":"critical","Output":"CRITICAL: read-only","ServiceID":"mysql-1"}"#;
        let disk_warn =
            r#"{"CheckID":"disk","Status":"warning","Output":"disk 91%","ServiceID":""}"#;
        let maint = r#"{"CheckID":"_service_maintenance:mysql-1","Status":"critical","Notes":"upgrade","ServiceID":"mysql-1"}"#;
        let node_maint =
            r#"{"CheckID":"_node_maintenance","Status":"critical","Notes":"","ServiceID":""}"#;
        let r = rules();
        assert_eq!(
            health_of(&format!("[{serf_ok},{svc_ok}]"), &r),
            Health::Passing
        );
        assert!(
            matches!(health_of(&format!("[{serf_down},{svc_down}]"), &r),
            Health::Critical(ref why) if why.contains("serfHealth") && why.contains("Agent not live"))
        );
        assert!(matches!(health_of(&format!("[{serf_ok},{svc_down}]"), &r),
            Health::Critical(ref why) if why.contains("service:mysql-1") && why.contains("read-only")));
        assert!(matches!(
            health_of(&format!("[{serf_ok},{svc_ok},{disk_warn}]"), &r),
            Health::Warning(_)
        ));
        assert!(health_of(&format!("[{disk_warn}]"), &r).is_candidate());
        let svc_warn = r#"{"CheckID":"service:mysql-1","Status":"warning","Output":"exit 1","ServiceID":"mysql-1"}"#;
        assert!(
            !health_of(&format!("[{serf_ok},{svc_warn}]"), &r).is_candidate(),
            "the service's own check in warning is not passing (Consul's ?passing)"
        );
        assert!(
            matches!(health_of(&format!("[{serf_ok},{svc_down},{maint}]"), &r),
            Health::Maintenance(ref why) if why.contains("upgrade"))
        );
        assert!(matches!(
            health_of(&format!("[{node_maint}]"), &r),
            Health::Maintenance(_)
        ));

        let strict = HealthRules {
            warning_is: WarningIs::Critical,
            ignore_checks: vec![],
        };
        assert!(!health_of(&format!("[{disk_warn}]"), &strict).is_candidate());
        let ignoring = HealthRules {
            warning_is: WarningIs::Passing,
            ignore_checks: vec!["serfHealth".into()],
        };
        assert_eq!(
            health_of(&format!("[{serf_down},{svc_ok}]"), &ignoring),
            Health::Passing
        );
        let other_service =
            r#"{"CheckID":"service:redis","Status":"critical","ServiceID":"redis"}"#;
        assert_eq!(
            health_of(&format!("[{other_service}]"), &r),
            Health::Passing
        );
        let odd_status = r#"{"CheckID":"x","Status":"unknown-status","ServiceID":""}"#;
        assert!(
            !health_of(&format!("[{odd_status}]"), &r).is_candidate(),
            "unknown status is not passing"
        );
    }

    #[test]
    fn catalog_entries() {
        let body = br#"[{"Node":"db1","Address":"10.0.0.1","ServiceID":"mysql-1","ServiceAddress":"","ServicePort":3306,"ServiceTags":["primary"]},{"Node":7}]"#;
        let decoded = decode_catalog(body, 3306).unwrap();
        let found = &decoded.items;
        assert_eq!((found[0].host.as_str(), found[0].port), ("10.0.0.1", 3306));
        assert_eq!(decoded.skipped.len(), 1);
    }

    #[test]
    fn kv_values_sessions_and_missing_keys() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let body = format!(
            r#"[{{"Key":"service/mysql/leader","Value":"{}","Session":"abc","LockIndex":1}}]"#,
            b64("10.0.0.5:3307")
        );
        let answer = decode_kv("service/mysql/leader", false, body.as_bytes(), true, 3306).unwrap();
        assert!(
            matches!(answer, KvAnswer::Primary(ref f) if f.host == "10.0.0.5" && f.port == 3307),
            "{answer:?}"
        );

        let unlocked = format!(r#"[{{"Key":"k","Value":"{}"}}]"#, b64("10.0.0.5"));
        assert!(
            matches!(decode_kv("k", false, unlocked.as_bytes(), true, 3306).unwrap(), KvAnswer::None(ref r) if r.contains("not held"))
        );
        assert!(
            matches!(decode_kv("k", false, unlocked.as_bytes(), false, 3306).unwrap(), KvAnswer::Primary(ref f) if f.port == 3306)
        );
        assert!(
            matches!(decode_kv("k", true, b"", false, 3306).unwrap(), KvAnswer::None(ref r) if r.contains("does not exist"))
        );
        let null_value = br#"[{"Key":"k","Value":null}]"#;
        assert!(
            matches!(decode_kv("k", false, null_value, false, 3306).unwrap(), KvAnswer::None(ref r) if r.contains("empty"))
        );
        let bad = br#"[{"Key":"k","Value":"!!!"}]"#;
        assert!(
            decode_kv("k", false, bad, false, 3306)
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
    }

    #[test]
    fn primary_value_forms() {
        let p = |s| parse_primary_value(s, 3306);
        assert_eq!(p("db1:3307"), Ok(("db1".into(), 3307)));
        assert_eq!(p(" db1 \n"), Ok(("db1".into(), 3306)));
        assert_eq!(p("10.1.2.3"), Ok(("10.1.2.3".into(), 3306)));
        assert_eq!(p("::1"), Ok(("::1".into(), 3306)));
        assert_eq!(p("[::1]:3310"), Ok(("::1".into(), 3310)));
        assert_eq!(p(r#"{"host":"db2","port":3308}"#), Ok(("db2".into(), 3308)));
        assert_eq!(
            p(r#"{"ip":"10.0.0.2","port":"3309"}"#),
            Ok(("10.0.0.2".into(), 3309))
        );
        assert_eq!(p(r#"{"address":"db3"}"#), Ok(("db3".into(), 3306)));
        assert!(p("db1:0").is_err());
        assert!(p("db1:99999").is_err());
        assert!(p("db 1").is_err());
        assert!(p(r#"{"port":1}"#).unwrap_err().contains("no `host`"));
        assert!(p(r#"{"host":"a","port":true}"#).is_err());
    }
}
