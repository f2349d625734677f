//! The raw configuration layer: every field optional, filled by clap (flags, then env), by serde
//! (the TOML file) or by the Consul ecosystem's own variables, and stacked with
//! [`Settings::overlay`]: flag > env > file > `CONSUL_HTTP_*` > built-in default.
//!
//! The struct is written once, inside [`settings_layer!`], which also derives `overlay` from the
//! same field list: a new field cannot be forgotten there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::kinds::{
    Balance, Consistency, DiscoveryKind, DnsRecord, FastPathMode, LogFormat, OnFailover,
    OnMultiple, ProxyProtocol, RelayKind, Role, WarningIs,
};
use crate::util::secret::Secret;

/// Defines `Settings` and its field-by-field `overlay` from one field list.
macro_rules! settings_layer {
    (
        $(#[$struct_meta:meta])*
        pub struct Settings {
            $( $(#[$field_meta:meta])* pub $field:ident : Option<$ty:ty>, )*
        }
    ) => {
        $(#[$struct_meta])*
        pub struct Settings {
            $( $(#[$field_meta])* pub $field: Option<$ty>, )*
        }

        impl Settings {
            /// Stacks `top` over `self`: every field set in `top` wins.
            pub fn overlay(self, top: Settings) -> Settings {
                Settings { $( $field: top.$field.or(self.$field), )* }
            }
        }
    };
}

// The raw, all-optional configuration layer shared by flags, env vars and the TOML file.
// Field docs double as `--help` text (so this comment is not a doc comment: clap would show it);
// defaults come from `defaults::table()` (which also writes them into `--help`).
settings_layer! {
#[derive(Debug, Clone, Default, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to accept MySQL clients on
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Admin HTTP endpoint (/healthz, /readyz, /status, /metrics); `off` disables it
    #[arg(long, env = "CONSUL_MYSQL_PROXY_ADMIN", value_name = "ADDR|off")]
    pub admin: Option<String>,

    /// Read-only HTTP endpoint (/, /status, /metrics, /healthz, /readyz) for scrapers and dashboards, e.g. 0.0.0.0:9307; `off` disables it. Nothing that changes state is served there
    #[arg(long, env = "CONSUL_MYSQL_PROXY_METRICS_LISTEN", value_name = "ADDR|off")]
    pub metrics_listen: Option<String>,

    /// Discovery source of the primary [default: static when `backend` is set]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DISCOVERY", value_enum)]
    pub discovery: Option<DiscoveryKind>,

    /// Fixed backend for `discovery = static`, as ip:port (e.g. 127.0.0.1:3307)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND", value_name = "ADDR")]
    pub backend: Option<SocketAddr>,

    /// Service name, used in logs and client error messages
    #[arg(long, env = "CONSUL_MYSQL_PROXY_SERVICE")]
    pub service: Option<String>,

    /// Consul agent HTTP address(es), tried in turn when one is down (or $CONSUL_HTTP_ADDR)
    #[arg(
        long,
        env = "CONSUL_MYSQL_PROXY_CONSUL",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub consul: Option<Vec<String>>,

    /// Consul ACL token, sent as X-Consul-Token (prefer the env var or consul_token_file: flags show in `ps`) [default: $CONSUL_HTTP_TOKEN]
    #[arg(
        long,
        env = "CONSUL_MYSQL_PROXY_CONSUL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub consul_token: Option<Secret>,

    /// File holding the Consul ACL token [default: $CONSUL_HTTP_TOKEN_FILE]
    #[arg(
        long,
        env = "CONSUL_MYSQL_PROXY_CONSUL_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub consul_token_file: Option<PathBuf>,

    /// PEM CA certificate(s) to verify an HTTPS Consul agent [default: $CONSUL_CACERT, else the system roots]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_CA_CERT", value_name = "FILE")]
    pub consul_ca_cert: Option<PathBuf>,

    /// Directory of PEM CA certificates to verify an HTTPS Consul agent [default: $CONSUL_CAPATH]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_CA_PATH", value_name = "DIR")]
    pub consul_ca_path: Option<PathBuf>,

    /// PEM client certificate for an agent with verify_incoming (with consul_client_key) [default: $CONSUL_CLIENT_CERT]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_CLIENT_CERT", value_name = "FILE")]
    pub consul_client_cert: Option<PathBuf>,

    /// PEM private key of consul_client_cert [default: $CONSUL_CLIENT_KEY]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_CLIENT_KEY", value_name = "FILE")]
    pub consul_client_key: Option<PathBuf>,

    /// TLS server name (SNI and certificate check) of the agent, when it differs from the address's host [default: $CONSUL_TLS_SERVER_NAME]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_TLS_SERVER_NAME", value_name = "NAME")]
    pub consul_tls_server_name: Option<String>,

    /// Do not verify the agent's certificate (insecure; logged loudly at start-up; or $CONSUL_HTTP_SSL_VERIFY=false)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_TLS_SKIP_VERIFY", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL")]
    pub consul_tls_skip_verify: Option<bool>,

    /// Consul Enterprise namespace of the service and KV key, sent as `ns` [default: $CONSUL_NAMESPACE]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_NAMESPACE", value_name = "NS")]
    pub consul_namespace: Option<String>,

    /// Consul Enterprise admin partition, sent as `partition` [default: $CONSUL_PARTITION]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_PARTITION", value_name = "PARTITION")]
    pub consul_partition: Option<String>,

    /// Cluster peer the service is imported from, sent as `peer` (health and catalog)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_PEER", value_name = "PEER")]
    pub consul_peer: Option<String>,

    /// Consul filter expression passed through to health and catalog queries (e.g. `Service.Meta.cluster == "main"`)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_FILTER", value_name = "EXPR")]
    pub consul_filter: Option<String>,

    /// With consistency = stale: an answer from a server that last heard from the leader longer ago than this counts as unavailable [default: unlimited]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_MAX_STALE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub consul_max_stale: Option<Duration>,

    /// Longest wait of one Consul blocking query (max 10m)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_WAIT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub consul_wait: Option<Duration>,

    /// Drop the primary after this long without a successful Consul answer [default: never]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSUL_STALE_AFTER", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub consul_stale_after: Option<Duration>,

    /// Consul datacenter to query [default: the agent's]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DC", value_name = "DC")]
    pub dc: Option<String>,

    /// Consul read consistency: default, stale or consistent
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSISTENCY", value_enum)]
    pub consistency: Option<Consistency>,

    /// Tag every primary instance carries (repeatable; all must match)
    #[arg(
        long,
        env = "CONSUL_MYSQL_PROXY_TAG",
        value_name = "TAG",
        value_delimiter = ','
    )]
    pub tag: Option<Vec<String>>,

    /// KV key naming the primary, for consul-kv [e.g. service/mysql/leader or mysql/master/<cluster>]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_KV_KEY", value_name = "KEY")]
    pub kv_key: Option<String>,

    /// consul-kv: a key not held by a session (lock released) means "no primary"
    #[arg(long, env = "CONSUL_MYSQL_PROXY_KV_REQUIRE_SESSION", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL")]
    pub kv_require_session: Option<bool>,

    /// Port used when a KV value or DNS A record names only a host
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DEFAULT_PORT", value_name = "PORT")]
    pub default_port: Option<u16>,

    /// Several candidates and none is the current primary: refuse (split brain) or first
    #[arg(long, env = "CONSUL_MYSQL_PROXY_ON_MULTIPLE", value_enum)]
    pub on_multiple: Option<OnMultiple>,

    /// DNS name of the primary for `discovery = dns` (e.g. primary.mysql.service.consul)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_NAME", value_name = "NAME")]
    pub dns_name: Option<String>,

    /// DNS server to ask, ip:port (e.g. 127.0.0.1:8600 for Consul) [default: the system resolver]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_SERVER", value_name = "ADDR")]
    pub dns_server: Option<SocketAddr>,

    /// Record type: a (A/AAAA + default_port) or srv [default: srv for `_…`, `*.service[.<dc>].consul` and `*.query[.<dc>].consul` names, else a]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_RECORD", value_enum)]
    pub dns_record: Option<DnsRecord>,

    /// How often the DNS name is looked up
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub dns_interval: Option<Duration>,

    /// Timeout of one DNS query
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub dns_timeout: Option<Duration>,

    /// How long a new client waits for a reachable primary before it gets an ERR packet
    #[arg(long, env = "CONSUL_MYSQL_PROXY_HOLD_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub hold_timeout: Option<Duration>,

    /// Timeout of one TCP connect to the primary
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONNECT_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,

    /// How long the primary may take to send its greeting; a silent server counts as down
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_GREETING_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_greeting_timeout: Option<Duration>,

    /// Idle time before TCP keepalive probes toward the backend; 0 disables keepalive
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_KEEPALIVE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_keepalive: Option<Duration>,

    /// TCP_USER_TIMEOUT toward the backend: unacknowledged data older than this kills the connection; 0 = kernel default
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_USER_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_user_timeout: Option<Duration>,

    /// Maximum concurrent client connections; more wait in the kernel's accept backlog
    #[arg(long, env = "CONSUL_MYSQL_PROXY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// On SIGTERM/SIGINT, how long open connections may finish before they are closed
    #[arg(long, env = "CONSUL_MYSQL_PROXY_SHUTDOWN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,

    /// Most clients held waiting for a primary; beyond it new clients get an ERR packet at once
    #[arg(long, env = "CONSUL_MYSQL_PROXY_MAX_HELD", value_name = "N")]
    pub max_held: Option<usize>,

    /// Fencing: adopt a primary only after `SELECT @@global.read_only` says it is writable, and re-check it every verify_interval
    #[arg(long, env = "CONSUL_MYSQL_PROXY_VERIFY_WRITABLE", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, value_name = "BOOL")]
    pub verify_writable: Option<bool>,

    /// How often the current primary is re-checked with verify_writable
    #[arg(long, env = "CONSUL_MYSQL_PROXY_VERIFY_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub verify_interval: Option<Duration>,

    /// MySQL user for verify_writable (needs no privileges; password from $CONSUL_MYSQL_PROXY_MONITOR_PASSWORD or monitor_password_file, never a flag)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_MONITOR_USER", value_name = "USER")]
    pub monitor_user: Option<String>,

    /// File holding the monitor user's password
    #[arg(
        long,
        env = "CONSUL_MYSQL_PROXY_MONITOR_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub monitor_password_file: Option<PathBuf>,

    /// consul-health: whether a node check in `warning` (e.g. disk) leaves an instance a candidate (passing) or takes it out (critical); the service's own check in warning never passes
    #[arg(long, env = "CONSUL_MYSQL_PROXY_WARNING_IS", value_enum)]
    pub warning_is: Option<WarningIs>,

    /// consul-health: check IDs to disregard when judging an instance (repeatable, e.g. a flaky node check)
    #[arg(
        long,
        env = "CONSUL_MYSQL_PROXY_IGNORE_CHECKS",
        value_name = "CHECK_ID",
        value_delimiter = ','
    )]
    pub ignore_checks: Option<Vec<String>>,

    /// A primary Consul withdrew (deregistered, node or service check critical) with no replacement stays routed to this long without verify_writable; with it, as long as it is verified writable; 0 = drop it at once
    #[arg(long, env = "CONSUL_MYSQL_PROXY_WITHDRAWN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub withdrawn_grace: Option<Duration>,

    /// What happens to connections bound to a replaced primary: close (at once), drain (after drain_grace), idle (each at its first idle moment, the rest after drain_grace) or keep
    #[arg(long, env = "CONSUL_MYSQL_PROXY_ON_FAILOVER", value_enum)]
    pub on_failover: Option<OnFailover>,

    /// With `on_failover = drain`: how long old connections may live on; with `idle`: how long they may take to reach an idle moment
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DRAIN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub drain_grace: Option<Duration>,

    /// Send a PROXY protocol header to the server so it sees the client's address: off or v2 (MariaDB needs proxy_protocol_networks to admit the proxy)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_PROXY_PROTOCOL", value_enum)]
    pub proxy_protocol: Option<ProxyProtocol>,

    /// What the route serves: primary (the one current primary) or replica (a pool of every healthy instance: Consul health passing or its service check in warning — a lagging replica —, every DNS record, the static backend)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_ROLE", value_enum)]
    pub role: Option<Role>,

    /// role = replica: how new connections are spread over the pool: least-connections (fewest open, ties in turn) or round-robin
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BALANCE", value_enum)]
    pub balance: Option<Balance>,

    /// role = replica: what a client gets when no replica is healthy: `hold` (wait up to hold_timeout, then an ERR packet) or the name of a primary route whose primary it is sent to
    #[arg(long, env = "CONSUL_MYSQL_PROXY_FALLBACK", value_name = "hold|ROUTE")]
    pub fallback: Option<String>,

    /// Byte pump for established connections: pump or copy (tokio copy_bidirectional, the reference)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_RELAY", value_enum)]
    pub relay: Option<RelayKind>,

    /// Kernel fast path: off, connect (a BPF program makes connects from fast_path_cgroup to `listen` go straight to the primary; a host that cannot do it is a start-up error) or auto (connect where the host can, else relay with one warning). Needs root or CAP_BPF + CAP_NET_ADMIN
    #[arg(long, env = "CONSUL_MYSQL_PROXY_FAST_PATH", value_enum)]
    pub fast_path: Option<FastPathMode>,

    /// cgroup v2 directory whose processes' connects the fast path rewrites (they and their descendants) [default: the cgroup v2 root from /proc/self/mountinfo, i.e. every process of the host: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_FAST_PATH_CGROUP", value_name = "DIR")]
    pub fast_path_cgroup: Option<PathBuf>,

    /// Number of single-threaded accept/relay workers (SO_REUSEPORT)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Log line format
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, tracing EnvFilter syntax (e.g. `info`, `consul_mysql_proxy=debug`)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
}
}

/// Parses a boolean the way Go's `strconv.ParseBool` does (what Consul's own tools accept for
/// `CONSUL_HTTP_SSL` and friends): `1 t T TRUE true True` / `0 f F FALSE false False`.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!(
            "`{other}` is not a boolean (true/false, 1/0, t/f, as Go's ParseBool)"
        )),
    }
}

/// Parses a Go/humantime duration such as `10s`, `500ms` or `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 10s or 500ms: {e}"))
}

impl Settings {
    /// Reads a TOML config file into a settings layer.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error message names the key and the line.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
    }

    /// The Consul ecosystem's own variables, read as Consul's client reads them
    /// (`api/api.go` `defaultConfig`), as the lowest layer: `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`,
    /// `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_CACERT`, `CONSUL_CAPATH`,
    /// `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`,
    /// `CONSUL_HTTP_SSL_VERIFY`, `CONSUL_NAMESPACE`, `CONSUL_PARTITION`. A boolean that Go's
    /// `ParseBool` would not accept is an error naming the variable (Consul only warns, and then
    /// treats `CONSUL_HTTP_SSL_VERIFY=garbage` as "do not verify" — too dangerous to copy).
    pub fn from_consul_env(var: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let env_bool = |name: &'static str| -> Result<Option<bool>, ConfigError> {
            var(name)
                .map(|v| parse_bool(&v))
                .transpose()
                .map_err(|reason| ConfigError::Env { name, reason })
        };
        let ssl = env_bool("CONSUL_HTTP_SSL")?.unwrap_or(false);
        let consul = var("CONSUL_HTTP_ADDR").map(|addr| {
            // `CONSUL_HTTP_SSL=true` makes a bare or http:// address https; Consul's client never
            // reverts to http when TLS was asked for, and never downgrades https://.
            match addr.split_once("://") {
                None if ssl => vec![format!("https://{addr}")],
                Some(("http", rest)) if ssl => vec![format!("https://{rest}")],
                _ => vec![addr],
            }
        });
        Ok(Settings {
            consul,
            consul_token: var("CONSUL_HTTP_TOKEN").map(Secret::new),
            consul_token_file: var("CONSUL_HTTP_TOKEN_FILE").map(PathBuf::from),
            consul_ca_cert: var("CONSUL_CACERT").map(PathBuf::from),
            consul_ca_path: var("CONSUL_CAPATH").map(PathBuf::from),
            consul_client_cert: var("CONSUL_CLIENT_CERT").map(PathBuf::from),
            consul_client_key: var("CONSUL_CLIENT_KEY").map(PathBuf::from),
            consul_tls_server_name: var("CONSUL_TLS_SERVER_NAME"),
            consul_tls_skip_verify: env_bool("CONSUL_HTTP_SSL_VERIFY")?.map(|verify| !verify),
            consul_namespace: var("CONSUL_NAMESPACE"),
            consul_partition: var("CONSUL_PARTITION"),
            ..Settings::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_durations_and_unknown_fields() {
        let s =
            Settings::from_toml("hold_timeout = \"1m30s\"\nconnect_timeout = \"500ms\"").unwrap();
        assert_eq!(s.hold_timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.connect_timeout, Some(Duration::from_millis(500)));
        let err = Settings::from_toml("hold_timout = \"1s\"").unwrap_err();
        assert!(err.contains("unknown field `hold_timout`"), "{err}");
        let err = Settings::from_toml("hold_timeout = \"soon\"").unwrap_err();
        assert!(err.contains("hold_timeout"), "{err}");
    }

    #[test]
    fn top_layer_wins_field_by_field() {
        let file = Settings {
            hold_timeout: Some(Duration::from_secs(3)),
            service: Some("file".into()),
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        };
        let cli = Settings {
            service: Some("cli".into()),
            ..Settings::default()
        };
        let merged = file.overlay(cli);
        assert_eq!(merged.service.as_deref(), Some("cli"));
        assert_eq!(merged.hold_timeout, Some(Duration::from_secs(3)));
        assert!(merged.backend.is_some());
    }
}
