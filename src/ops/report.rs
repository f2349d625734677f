//! The `/status` document as a typed value, for the two views of it: the status page
//! ([`page`](super::page)) and `consul-mysql-proxy status` (`cli::status`).
//!
//! ```text
//!   admin: status JSON ──▶ GET /status
//!                     └──▶ Report ──▶ page (HTML, GET /)
//!   cli status: GET /status ──▶ Report ──▶ terminal summary
//! ```
//! Both views read the very document `/status` serves, so neither can show a fact the JSON does
//! not have or disagree with it. Every field has a default: `status` may ask a proxy of another
//! version, which may lack a field.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::Value;

use super::history::FailoverRecord;
use super::instances::Instances;

/// The `/status` document did not have the expected shape.
#[derive(Debug, thiserror::Error)]
#[error("the /status document does not have the expected shape: {0}")]
pub struct ReportError(#[from] serde_json::Error);

/// What `/status` says.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Report {
    pub version: String,
    /// `/readyz`'s verdict and its one-line message.
    pub ready: bool,
    pub readiness: String,
    pub primary: Option<PrimaryRef>,
    pub epoch: u64,
    pub since: Option<String>,
    pub reason: String,
    pub discovery: DiscoveryReport,
    pub connections: ConnectionsReport,
    pub failovers_total: u64,
    /// Newest first.
    pub failovers: Vec<FailoverRecord>,
    /// The fast path's own facts; `None` until it is configured.
    pub fast_path: Option<BTreeMap<String, Value>>,
    /// The configuration summary, shown as it is.
    pub config: Value,
    /// With named routes: every route's own report (the top level is the first route's).
    pub routes: Vec<RouteReport>,
}

/// One route of a multi-route proxy, as `/status` lists it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RouteReport {
    pub name: String,
    /// The bound address clients connect to.
    pub listen: String,
    #[serde(flatten)]
    pub report: Box<Report>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PrimaryRef {
    pub address: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DiscoveryReport {
    pub source: String,
    pub watching: bool,
    pub not_watching: Option<String>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// The last request failed: the last primary is kept meanwhile.
    pub failing: bool,
    pub consul_index: Option<u64>,
    pub withdrawn_primary: Option<WithdrawnReport>,
    pub instances: Option<Instances>,
    /// A replica route's pool (`None`: a primary route).
    pub pool: Option<PoolReport>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PoolReport {
    pub epoch: u64,
    pub reason: String,
    pub members: Vec<PoolMemberReport>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PoolMemberReport {
    pub address: String,
    pub name: String,
    pub lagging: bool,
    pub connections: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WithdrawnReport {
    pub since: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConnectionsReport {
    pub active: i64,
    pub held: i64,
    pub accepted_total: u64,
    /// Open relayed connections by backend address (backends with none are left out).
    pub per_backend: BTreeMap<String, i64>,
}

impl Report {
    pub fn from_json(value: Value) -> Result<Report, ReportError> {
        Ok(serde_json::from_value(value)?)
    }

    pub fn parse(text: &str) -> Result<Report, ReportError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Whether `address` is the published primary.
    pub fn is_primary(&self, address: &str) -> bool {
        self.primary.as_ref().is_some_and(|p| p.address == address)
    }

    /// The pool member at `address`, if this is a replica route and it is one.
    pub fn pool_member(&self, address: &str) -> Option<&PoolMemberReport> {
        let pool = self.discovery.pool.as_ref()?;
        pool.members.iter().find(|m| m.address == address)
    }

    /// The configured service name, if the summary has one.
    pub fn service(&self) -> Option<&str> {
        self.config.get("service").and_then(Value::as_str)
    }
}

/// When a failover's first client was routed to the new primary: `8 ms`, `waiting…`, or
/// `none within 60 s`.
pub fn first_client(record: &FailoverRecord) -> String {
    match (record.first_client_routed_ms, record.waiting_first_client) {
        (Some(ms), _) => millis(ms),
        (None, true) => "waiting…".to_owned(),
        (None, false) => "none within 60 s".to_owned(),
    }
}

/// A setting's value as an operator writes it (`close`, `refuse`): the settings enums serialize
/// to that name.
pub fn setting_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// How long before `now` the RFC 3339 time `at` was, as `4m 12s`; `None` if `at` is not a time.
pub fn ago(at: &str, now: SystemTime) -> Option<String> {
    let then = humantime::parse_rfc3339_weak(at).ok()?;
    let elapsed = now.duration_since(then).unwrap_or_default();
    Some(compact(elapsed))
}

/// A duration in its two largest units: `850ms`, `12s`, `4m 12s`, `2h 5m`, `3d 4h`.
pub fn compact(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Milliseconds as an operator reads them: `0 ms`, `850 ms`, `1.06 s`.
pub fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.2} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_document_reads_with_defaults() {
        let r = Report::parse(r#"{"version":"0.1.0","primary":null,"epoch":2}"#).unwrap();
        assert_eq!((r.version.as_str(), r.epoch), ("0.1.0", 2));
        assert!(r.primary.is_none() && r.failovers.is_empty() && r.fast_path.is_none());
        assert!(Report::parse(r#"{"epoch":"two"}"#).is_err());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(compact(Duration::from_millis(850)), "850ms");
        assert_eq!(compact(Duration::from_secs(252)), "4m 12s");
        assert_eq!(compact(Duration::from_secs(2 * 3600 + 300)), "2h 5m");
        assert_eq!(compact(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d 4h");
        assert_eq!(millis(7), "7 ms");
        assert_eq!(millis(1061), "1.06 s");
        let now = humantime::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        assert_eq!(ago("2026-01-01T00:00:30.500Z", now).as_deref(), Some("29s"));
        assert_eq!(ago("yesterday", now), None);
    }
}
