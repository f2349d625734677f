//! What `/status` shows of the configuration: everything that shapes behaviour, no secrets.
//! A typed, serialized view — the JSON is a public API, so it is built from `Serialize` with
//! the settings' own names, never from `Debug` output.

use serde::Serialize;

use super::kinds::{
    Balance, Consistency, DnsRecord, FastPathMode, OnFailover, OnMultiple, RelayKind, Role,
};
use super::model::{Config, ConsulSource, Discovery, Fallback};

#[derive(Debug, Serialize)]
pub struct ConfigSummary {
    listen: String,
    service: String,
    discovery: DiscoverySummary,
    on_multiple: OnMultiple,
    hold_timeout_s: f64,
    connect_timeout_s: f64,
    backend_greeting_timeout_s: f64,
    max_connections: usize,
    max_held: usize,
    on_failover: OnFailover,
    drain_grace_s: f64,
    verify_writable: bool,
    monitor_user: Option<String>,
    role: Role,
    /// `role = replica` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<Balance>,
    /// `role = replica` only: `hold` or a route name.
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback: Option<String>,
    relay: RelayKind,
    fast_path: FastPathMode,
    /// `None`: the cgroup v2 root (the `fast_path` section of `/status` names the directory).
    fast_path_cgroup: Option<String>,
    workers: usize,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum DiscoverySummary {
    Static {
        kind: &'static str,
        backend: String,
    },
    Consul(ConsulSummary),
    Dns {
        kind: &'static str,
        name: String,
        server: Option<String>,
        record: DnsRecord,
        interval_s: f64,
        timeout_s: f64,
        default_port: u16,
    },
}

#[derive(Debug, Serialize)]
struct ConsulSummary {
    kind: &'static str,
    source: ConsulSourceSummary,
    consul: Vec<String>,
    /// `set` or `unset`: never the token.
    token: &'static str,
    ca_cert: Option<String>,
    wait_s: f64,
    stale_after_s: Option<f64>,
    dc: Option<String>,
    consistency: Consistency,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ConsulSourceSummary {
    Tags {
        tags: Vec<String>,
    },
    Kv {
        kv_key: String,
        kv_require_session: bool,
    },
}

impl Config {
    /// The `/status` view of this configuration.
    pub fn summary(&self) -> ConfigSummary {
        let secs = |d: std::time::Duration| d.as_secs_f64();
        let discovery = match &self.discovery {
            Discovery::Static { backend } => DiscoverySummary::Static {
                kind: "static",
                backend: backend.to_string(),
            },
            Discovery::Consul(c) => {
                let (kind, source) = match &c.source {
                    ConsulSource::Health { tags } => (
                        "consul-health",
                        ConsulSourceSummary::Tags { tags: tags.clone() },
                    ),
                    ConsulSource::Catalog { tags } => (
                        "consul-catalog",
                        ConsulSourceSummary::Tags { tags: tags.clone() },
                    ),
                    ConsulSource::Kv {
                        key,
                        require_session,
                    } => (
                        "consul-kv",
                        ConsulSourceSummary::Kv {
                            kv_key: key.clone(),
                            kv_require_session: *require_session,
                        },
                    ),
                };
                DiscoverySummary::Consul(ConsulSummary {
                    kind,
                    source,
                    consul: c.addresses.clone(),
                    token: if c.token.is_some() { "set" } else { "unset" },
                    ca_cert: c.tls.ca_cert.as_ref().map(|p| p.display().to_string()),
                    wait_s: secs(c.wait),
                    stale_after_s: c.stale_after.map(secs),
                    dc: c.dc.clone(),
                    consistency: c.consistency,
                })
            }
            Discovery::Dns(d) => DiscoverySummary::Dns {
                kind: "dns",
                name: d.name.clone(),
                server: d.server.map(|s| s.to_string()),
                record: d.record,
                interval_s: secs(d.interval),
                timeout_s: secs(d.timeout),
                default_port: d.default_port,
            },
        };
        ConfigSummary {
            listen: self.listen.to_string(),
            service: self.service.clone(),
            discovery,
            on_multiple: self.on_multiple,
            hold_timeout_s: secs(self.hold_timeout),
            connect_timeout_s: secs(self.connect_timeout),
            backend_greeting_timeout_s: secs(self.backend_greeting_timeout),
            max_connections: self.max_connections,
            max_held: self.max_held,
            on_failover: self.failover.on_failover,
            drain_grace_s: secs(self.failover.drain_grace),
            verify_writable: self.fence.is_some(),
            monitor_user: self.fence.as_ref().map(|f| f.user.clone()),
            role: self.role,
            balance: (self.role == Role::Replica).then_some(self.balance),
            fallback: (self.role == Role::Replica).then(|| match &self.fallback {
                Fallback::Hold => "hold".to_owned(),
                Fallback::Route(name) => name.clone(),
            }),
            relay: self.relay,
            fast_path: self.fast_path.mode,
            fast_path_cgroup: self
                .fast_path
                .cgroup
                .as_ref()
                .map(|p| p.display().to_string()),
            workers: self.workers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn summary_uses_setting_names_and_hides_the_token() {
        let c = Config::resolve(Settings {
            consul_token: Some(crate::util::secret::Secret::new("t0ken-value")),
            on_failover: Some(OnFailover::Drain),
            ..Settings::default()
        })
        .unwrap();
        let json = serde_json::to_value(c.summary()).unwrap();
        assert_eq!(json["discovery"]["kind"], "consul-health");
        assert_eq!(json["discovery"]["source"]["tags"][0], "primary");
        assert_eq!(json["discovery"]["token"], "set");
        assert_eq!(json["discovery"]["consistency"], "default");
        assert_eq!(json["on_failover"], "drain");
        assert_eq!(json["on_multiple"], "refuse");
        assert_eq!(json["relay"], "pump");
        assert_eq!(json["role"], "primary");
        assert!(json.get("balance").is_none(), "{json}");
        assert!(!json.to_string().contains("t0ken-value"));

        let c = Config::resolve(Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        })
        .unwrap();
        let json = serde_json::to_value(c.summary()).unwrap();
        assert_eq!(json["discovery"]["kind"], "static");
        assert_eq!(json["discovery"]["backend"], "127.0.0.1:3307");

        let c = Config::resolve(Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            role: Some(Role::Replica),
            balance: Some(Balance::RoundRobin),
            ..Settings::default()
        })
        .unwrap();
        let json = serde_json::to_value(c.summary()).unwrap();
        assert_eq!(
            (&json["role"], &json["balance"], &json["fallback"]),
            (&"replica".into(), &"round-robin".into(), &"hold".into())
        );

        let c = Config::resolve(Settings {
            discovery: Some(crate::config::DiscoveryKind::Dns),
            dns_name: Some("mysql.service.consul".into()),
            ..Settings::default()
        })
        .unwrap();
        let json = serde_json::to_value(c.summary()).unwrap();
        assert_eq!(json["discovery"]["kind"], "dns");
        assert_eq!(json["discovery"]["record"], "srv");
    }

    #[test]
    fn the_fast_path_settings_are_shown() {
        let c = Config::resolve(Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        })
        .unwrap();
        let json = serde_json::to_value(c.summary()).unwrap();
        assert_eq!(json["fast_path"], "off");
        assert_eq!(json["fast_path_cgroup"], serde_json::Value::Null);
        let c = Config::resolve(Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            fast_path: Some(FastPathMode::Auto),
            fast_path_cgroup: Some("/sys/fs/cgroup/app".into()),
            ..Settings::default()
        })
        .unwrap();
        let json = serde_json::to_value(c.summary()).unwrap();
        assert_eq!(json["fast_path"], "auto");
        assert_eq!(json["fast_path_cgroup"], "/sys/fs/cgroup/app");
    }
}
