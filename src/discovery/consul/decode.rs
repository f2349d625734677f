//! Pure decoding of Consul answers into [`Found`] servers: health and catalog entries, KV
//! entries, and the value of a leader key. No I/O here, so every function can be unit-tested and
//! fuzzed. Unknown fields are ignored (Consul adds fields between versions); missing or
//! wrong-typed fields we need are errors naming what was wrong.

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine;
use serde::Deserialize;

/// A server named by Consul, before its host name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
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

#[derive(Deserialize)]
struct HealthEntry {
    #[serde(rename = "Node")]
    node: HealthNode,
    #[serde(rename = "Service")]
    service: HealthService,
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
    #[serde(rename = "Port")]
    port: u16,
    #[serde(rename = "Meta", default)]
    meta: Option<HashMap<String, String>>,
}

fn priority(meta: &Option<HashMap<String, String>>) -> Option<i64> {
    meta.as_ref()?.get("priority")?.trim().parse().ok()
}

fn pick_address(what: &'static str, service: &str, node: &str) -> Result<String, DecodeError> {
    // Consul's rule: the service address if set, else the node address.
    let address = if service.is_empty() { node } else { service };
    if address.is_empty() {
        return Err(decode_error(
            what,
            "entry has neither a service nor a node address",
        ));
    }
    Ok(address.to_owned())
}

/// Decodes `GET /v1/health/service/<svc>`.
pub fn decode_health(body: &[u8]) -> Result<Vec<Found>, DecodeError> {
    const WHAT: &str = "health";
    let entries: Vec<HealthEntry> =
        serde_json::from_slice(body).map_err(|e| decode_error(WHAT, e.to_string()))?;
    entries
        .into_iter()
        .map(|e| {
            let host = pick_address(WHAT, &e.service.address, &e.node.address)?;
            if e.service.port == 0 {
                return Err(decode_error(
                    WHAT,
                    format!("service {} has port 0", e.service.id),
                ));
            }
            let name = if e.service.id.is_empty() {
                e.service.service
            } else {
                e.service.id
            };
            Ok(Found {
                host,
                port: e.service.port,
                name: format!("{}/{}", e.node.node, name),
                node: e.node.node,
                priority: priority(&e.service.meta),
            })
        })
        .collect()
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
    #[serde(rename = "ServicePort")]
    service_port: u16,
    #[serde(rename = "ServiceMeta", default)]
    service_meta: Option<HashMap<String, String>>,
}

/// Decodes `GET /v1/catalog/service/<svc>`.
pub fn decode_catalog(body: &[u8]) -> Result<Vec<Found>, DecodeError> {
    const WHAT: &str = "catalog";
    let entries: Vec<CatalogEntry> =
        serde_json::from_slice(body).map_err(|e| decode_error(WHAT, e.to_string()))?;
    entries
        .into_iter()
        .map(|e| {
            let host = pick_address(WHAT, &e.service_address, &e.address)?;
            if e.service_port == 0 {
                return Err(decode_error(
                    WHAT,
                    format!("service {} has port 0", e.service_id),
                ));
            }
            Ok(Found {
                host,
                port: e.service_port,
                name: format!("{}/{}", e.node, e.service_id),
                node: e.node,
                priority: priority(&e.service_meta),
            })
        })
        .collect()
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
    Primary(Found),
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
    Ok(KvAnswer::Primary(Found {
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
        let found = decode_health(body).unwrap();
        assert_eq!(found[0].host, "10.0.0.1");
        assert_eq!(found[0].port, 3307);
        assert_eq!(found[0].priority, Some(50));
        assert_eq!(found[0].name, "db1/mysql-1");
        assert_eq!(found[1].host, "127.0.0.9");
        assert_eq!(found[1].priority, None);
    }

    #[test]
    fn health_errors_name_the_problem() {
        let err = decode_health(b"<html>").unwrap_err().to_string();
        assert!(err.starts_with("invalid health answer"), "{err}");
        let err = decode_health(
            br#"[{"Node":{"Node":"a","Address":"1.2.3.4"},"Service":{"ID":"m","Port":"x"}}]"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid type"), "{err}");
        let err = decode_health(br#"[{"Node":{"Node":"a"},"Service":{"ID":"m","Port":1}}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("neither a service nor a node address"),
            "{err}"
        );
        assert_eq!(decode_health(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn catalog_entries() {
        let body = br#"[{"Node":"db1","Address":"10.0.0.1","ServiceID":"mysql-1","ServiceAddress":"","ServicePort":3306,"ServiceTags":["primary"]}]"#;
        let found = decode_catalog(body).unwrap();
        assert_eq!((found[0].host.as_str(), found[0].port), ("10.0.0.1", 3306));
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
