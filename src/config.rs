//! Configuration: one set of fields, three layers, one validated [`Config`].
//!
//! Every field can come from the TOML file (`--config`), an environment variable
//! (`CONSUL_MYSQL_PROXY_<FIELD>`) or a command-line flag (`--<field>`). [`Settings`] is that raw,
//! all-optional layer; clap fills it from flags and env (flag wins over env), serde fills it from
//! the file, and [`Settings::overlay`] stacks them: flag > env > file > built-in default.
//! [`Config::resolve`] then applies the defaults and validates, naming the offending field, so the
//! binary can exit with `EX_USAGE` (64) and a message that says what to fix.
//!
//! The resolved `Config` is immutable and shared as `Arc<Config>`; a reload (SIGHUP) builds a new
//! one the same way and swaps it in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::failover::OnFailover;
use crate::selection::OnMultiple;

/// Prefix of every environment variable that can set a field.
pub const ENV_PREFIX: &str = "CONSUL_MYSQL_PROXY_";

/// A configuration error, naming the field (as written in the TOML file) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: `{field}`: {reason} (flag --{flag}, env {env})", flag = field.replace('_', "-"), env = env_name(field))]
    Field { field: &'static str, reason: String },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

fn env_name(field: &str) -> String {
    format!("{ENV_PREFIX}{}", field.to_ascii_uppercase())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        reason: reason.into(),
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the current primary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoveryKind {
    /// A fixed backend address (`backend`).
    Static,
    /// Consul health API: passing instances of `service` with every `tag`.
    ConsulHealth,
    /// Consul catalog: registered instances with every `tag`, no health filter.
    ConsulCatalog,
    /// A Consul KV key whose value names the primary (leader key, orchestrator).
    ConsulKv,
    /// DNS A/AAAA or SRV answers for `dns_name` (e.g. Consul DNS on 127.0.0.1:8600).
    Dns,
}

/// Which DNS record type names the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecord {
    /// A and AAAA records; the port is `default_port`.
    A,
    /// SRV records: port from the record, address from the additional section or the target.
    Srv,
}

/// Consistency mode of Consul reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Reads go to the leader (Consul's default).
    #[default]
    Default,
    /// Any server may answer, possibly with slightly old data; keeps working without a leader.
    Stale,
    /// The leader confirms its leadership first; slowest.
    Consistent,
}

/// A secret (Consul token): never shown by `Debug` or `Display`, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Which byte pump relays an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum RelayKind {
    /// Readiness-based pump: a per-thread scratch buffer, no buffer held by an idle connection.
    #[default]
    Pump,
    /// tokio's `copy_bidirectional`: the reference implementation (2×8 KiB per connection).
    Copy,
}

// The raw, all-optional configuration layer shared by flags, env vars and the TOML file.
// Field docs double as `--help` text (so this comment is not a doc comment: clap would show it);
// defaults are applied in `Config::resolve`.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to accept MySQL clients on [default: 0.0.0.0:3306]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Admin HTTP endpoint (/healthz, /readyz, /status, /metrics); `off` disables it [default: 127.0.0.1:9306]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_ADMIN", value_name = "ADDR|off")]
    pub admin: Option<String>,

    /// Discovery source of the primary [default: static when `backend` is set]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DISCOVERY", value_enum)]
    pub discovery: Option<DiscoveryKind>,

    /// Fixed backend for `discovery = static`, as ip:port (e.g. 127.0.0.1:3307)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND", value_name = "ADDR")]
    pub backend: Option<SocketAddr>,

    /// Service name, used in logs and client error messages [default: mysql]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_SERVICE")]
    pub service: Option<String>,

    /// Consul agent HTTP address(es), tried in turn when one is down [default: $CONSUL_HTTP_ADDR, else http://127.0.0.1:8500]
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

    /// Longest wait of one Consul blocking query (max 10m) [default: 5m]
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

    /// Consul read consistency: default, stale or consistent [default: default]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONSISTENCY", value_enum)]
    pub consistency: Option<Consistency>,

    /// Tag every primary instance carries (repeatable; all must match) [default: primary]
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

    /// consul-kv: a key not held by a session (lock released) means "no primary" [default: false]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_KV_REQUIRE_SESSION", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub kv_require_session: Option<bool>,

    /// Port used when a KV value or DNS A record names only a host [default: 3306]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DEFAULT_PORT", value_name = "PORT")]
    pub default_port: Option<u16>,

    /// Several candidates and none is the current primary: refuse (split brain) or first [default: refuse]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_ON_MULTIPLE", value_enum)]
    pub on_multiple: Option<OnMultiple>,

    /// DNS name of the primary for `discovery = dns` (e.g. primary.mysql.service.consul)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_NAME", value_name = "NAME")]
    pub dns_name: Option<String>,

    /// DNS server to ask, ip:port (e.g. 127.0.0.1:8600 for Consul) [default: the system resolver]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_SERVER", value_name = "ADDR")]
    pub dns_server: Option<SocketAddr>,

    /// Record type: a (A/AAAA + default_port) or srv [default: srv for `_…` and `*.service.consul` names, else a]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_RECORD", value_enum)]
    pub dns_record: Option<DnsRecord>,

    /// How often the DNS name is looked up [default: 1s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub dns_interval: Option<Duration>,

    /// Timeout of one DNS query [default: 1s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DNS_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub dns_timeout: Option<Duration>,

    /// How long a new client waits for a reachable primary before it gets an ERR packet [default: 10s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_HOLD_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub hold_timeout: Option<Duration>,

    /// Timeout of one TCP connect to the primary [default: 2s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONNECT_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,

    /// How long the primary may take to send its greeting; a silent server counts as down [default: 5s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_GREETING_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_greeting_timeout: Option<Duration>,

    /// Idle time before TCP keepalive probes toward the backend; 0 disables keepalive [default: 10s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_KEEPALIVE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_keepalive: Option<Duration>,

    /// TCP_USER_TIMEOUT toward the backend: unacknowledged data older than this kills the connection; 0 = kernel default [default: 30s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_USER_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_user_timeout: Option<Duration>,

    /// Maximum concurrent client connections; more wait in the kernel's accept backlog [default: 4096]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// On SIGTERM/SIGINT, how long open connections may finish before they are closed [default: 30s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_SHUTDOWN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,

    /// Most clients held waiting for a primary; beyond it new clients get an ERR packet at once [default: 10000]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_MAX_HELD", value_name = "N")]
    pub max_held: Option<usize>,

    /// Fencing: adopt a primary only after `SELECT @@global.read_only` says it is writable, and re-check it every verify_interval [default: false]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_VERIFY_WRITABLE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub verify_writable: Option<bool>,

    /// How often the current primary is re-checked with verify_writable [default: 1s]
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

    /// What happens to connections bound to a replaced primary: close, drain or keep [default: close]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_ON_FAILOVER", value_enum)]
    pub on_failover: Option<OnFailover>,

    /// With `on_failover = drain`: how long old connections may live on [default: 5s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DRAIN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub drain_grace: Option<Duration>,

    /// Byte pump for established connections: pump or copy (tokio copy_bidirectional, the reference) [default: pump]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_RELAY", value_enum)]
    pub relay: Option<RelayKind>,

    /// Number of single-threaded accept/relay workers (SO_REUSEPORT) [default: 1]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Log line format [default: text]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, tracing EnvFilter syntax (e.g. `info`, `consul_mysql_proxy=debug`) [default: info]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// Parses a Go/humantime duration such as `10s`, `500ms` or `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 10s or 500ms: {e}"))
}

macro_rules! overlay_fields {
    ($base:ident, $top:ident, [$($field:ident),* $(,)?]) => {
        Settings { $($field: $top.$field.or($base.$field),)* }
    };
}

impl Settings {
    /// Stacks `top` over `self`: every field set in `top` wins.
    pub fn overlay(self, top: Settings) -> Settings {
        let base = self;
        overlay_fields!(
            base,
            top,
            [
                listen,
                admin,
                discovery,
                backend,
                service,
                consul,
                consul_token,
                consul_token_file,
                consul_ca_cert,
                consul_wait,
                consul_stale_after,
                dc,
                consistency,
                tag,
                kv_key,
                kv_require_session,
                default_port,
                on_multiple,
                dns_name,
                dns_server,
                dns_record,
                dns_interval,
                dns_timeout,
                hold_timeout,
                connect_timeout,
                backend_greeting_timeout,
                backend_keepalive,
                backend_user_timeout,
                max_connections,
                shutdown_grace,
                max_held,
                verify_writable,
                verify_interval,
                monitor_user,
                monitor_password_file,
                on_failover,
                drain_grace,
                relay,
                workers,
                log_format,
                log_level,
            ]
        )
    }

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
}

/// The resolved, validated configuration every component reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None` = admin endpoint off.
    pub admin: Option<SocketAddr>,
    pub discovery: Discovery,
    pub service: String,
    pub on_multiple: OnMultiple,
    pub hold_timeout: Duration,
    pub connect_timeout: Duration,
    pub backend_greeting_timeout: Duration,
    /// `None` = keepalive off.
    pub backend_keepalive: Option<Duration>,
    /// `None` = leave the kernel default.
    pub backend_user_timeout: Option<Duration>,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub max_held: usize,
    /// `Some` when fencing (`verify_writable`) is on.
    pub fence: Option<FenceConfig>,
    pub on_failover: OnFailover,
    pub drain_grace: Duration,
    pub relay: RelayKind,
    pub workers: usize,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// The discovery source with the settings it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    Static { backend: SocketAddr },
    Consul(ConsulConfig),
    Dns(DnsConfig),
}

/// Everything the DNS source needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// Fully qualified name (trailing dot added).
    pub name: String,
    /// `None` = the system resolver (/etc/resolv.conf).
    pub server: Option<SocketAddr>,
    pub record: DnsRecord,
    pub interval: Duration,
    pub timeout: Duration,
    pub default_port: u16,
}

/// Which Consul API names the primary.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsulSource {
    Health { tags: Vec<String> },
    Catalog { tags: Vec<String> },
    Kv { key: String, require_session: bool },
}

/// Everything a Consul source needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulConfig {
    pub source: ConsulSource,
    /// Agent base URLs (`http(s)://host:port`), tried in turn.
    pub addresses: Vec<String>,
    pub token: Option<Secret>,
    pub ca_cert: Option<PathBuf>,
    pub wait: Duration,
    pub stale_after: Option<Duration>,
    pub dc: Option<String>,
    pub consistency: Consistency,
    pub default_port: u16,
}

/// Fencing: how the proxy checks that a primary is writable before and while using it.
#[derive(Debug, Clone, PartialEq)]
pub struct FenceConfig {
    pub user: String,
    pub password: Secret,
    pub interval: Duration,
}

/// Environment variable holding the monitor user's password (never a flag: argv is public).
pub const MONITOR_PASSWORD_ENV: &str = "CONSUL_MYSQL_PROXY_MONITOR_PASSWORD";

/// Longest `wait` Consul honours for a blocking query.
pub const MAX_CONSUL_WAIT: Duration = Duration::from_secs(600);

fn nonzero(field: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(invalid(field, "must be greater than 0"));
    }
    Ok(value)
}

fn zero_is_off(value: Duration) -> Option<Duration> {
    (!value.is_zero()).then_some(value)
}

/// Picks and validates the discovery source.
fn resolve_discovery(s: &Settings) -> Result<Discovery, ConfigError> {
    let kind = match (s.discovery, s.backend) {
        (Some(kind), _) => kind,
        (None, Some(_)) => DiscoveryKind::Static,
        (None, None) => DiscoveryKind::ConsulHealth,
    };
    if kind == DiscoveryKind::Static {
        return match s.backend {
            Some(backend) => Ok(Discovery::Static { backend }),
            None => Err(invalid(
                "backend",
                "static discovery needs `backend` (ip:port of the MySQL primary)",
            )),
        };
    }
    if s.backend.is_some() {
        return Err(invalid(
            "backend",
            "only applies to `discovery = static`; remove it or choose static discovery",
        ));
    }
    let default_port = s.default_port.unwrap_or(3306);
    if default_port == 0 {
        return Err(invalid("default_port", "must be 1..65535"));
    }
    if kind == DiscoveryKind::Dns {
        return resolve_dns(s, default_port).map(Discovery::Dns);
    }
    let tags = s.tag.clone().unwrap_or_else(|| vec!["primary".to_owned()]);
    if tags.iter().any(|t| t.trim().is_empty()) {
        return Err(invalid("tag", "tags must not be empty"));
    }
    let source = match kind {
        DiscoveryKind::ConsulHealth => ConsulSource::Health { tags },
        DiscoveryKind::ConsulCatalog => ConsulSource::Catalog { tags },
        DiscoveryKind::ConsulKv => {
            let key = s.kv_key.clone().unwrap_or_default();
            let key = key.trim_matches('/');
            if key.is_empty() {
                return Err(invalid(
                    "kv_key",
                    "consul-kv discovery needs the key naming the primary, e.g. service/mysql/leader",
                ));
            }
            ConsulSource::Kv {
                key: key.to_owned(),
                require_session: s.kv_require_session.unwrap_or(false),
            }
        }
        DiscoveryKind::Static | DiscoveryKind::Dns => unreachable!("handled above"),
    };
    let addresses = s
        .consul
        .clone()
        .unwrap_or_else(|| vec!["http://127.0.0.1:8500".to_owned()])
        .iter()
        .map(|a| normalize_consul_address(a))
        .collect::<Result<Vec<_>, _>>()?;
    if addresses.is_empty() {
        return Err(invalid("consul", "needs at least one agent address"));
    }
    let wait = s.consul_wait.unwrap_or(Duration::from_secs(300));
    if wait.is_zero() || wait > MAX_CONSUL_WAIT {
        return Err(invalid(
            "consul_wait",
            "must be between 1ms and 10m (Consul caps blocking queries at 10m)",
        ));
    }
    let token = match (&s.consul_token, &s.consul_token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(read_token_file(path)?),
        (None, None) => None,
    };
    if let Some(stale) = s.consul_stale_after
        && stale <= wait / 16
    {
        return Err(invalid(
            "consul_stale_after",
            "must be longer than a blocking query's jitter (consul_wait / 16)",
        ));
    }
    if let Some(path) = &s.consul_ca_cert {
        crate::discovery::consul::client::load_pem_certs(path)
            .map_err(|e| invalid("consul_ca_cert", e))?;
    }
    Ok(Discovery::Consul(ConsulConfig {
        source,
        addresses,
        token,
        ca_cert: s.consul_ca_cert.clone(),
        wait,
        stale_after: s.consul_stale_after,
        dc: s.dc.clone().filter(|dc| !dc.is_empty()),
        consistency: s.consistency.unwrap_or_default(),
        default_port,
    }))
}

/// `off` (or empty) disables the admin endpoint; anything else must be ip:port.
fn resolve_admin(admin: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    match admin.map(str::trim) {
        None => Ok(Some(SocketAddr::from(([127, 0, 0, 1], 9306)))),
        Some("" | "off" | "none" | "false") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            invalid(
                "admin",
                format!("`{text}` is not ip:port (e.g. 127.0.0.1:9306) or `off`"),
            )
        }),
    }
}

impl Config {
    /// What `/status` shows of the configuration: everything that shapes behaviour, no secrets.
    pub fn summary(&self) -> serde_json::Value {
        use serde_json::json;
        let secs = |d: Duration| d.as_secs_f64();
        let discovery = match &self.discovery {
            Discovery::Static { backend } => {
                json!({"kind": "static", "backend": backend.to_string()})
            }
            Discovery::Consul(c) => {
                let (kind, detail) = match &c.source {
                    ConsulSource::Health { tags } => ("consul-health", json!({"tags": tags})),
                    ConsulSource::Catalog { tags } => ("consul-catalog", json!({"tags": tags})),
                    ConsulSource::Kv {
                        key,
                        require_session,
                    } => (
                        "consul-kv",
                        json!({"kv_key": key, "kv_require_session": require_session}),
                    ),
                };
                json!({
                    "kind": kind, "source": detail, "consul": c.addresses,
                    "token": if c.token.is_some() { "set" } else { "unset" },
                    "ca_cert": c.ca_cert.as_ref().map(|p| p.display().to_string()),
                    "wait_s": secs(c.wait), "stale_after_s": c.stale_after.map(secs),
                    "dc": c.dc, "consistency": format!("{:?}", c.consistency).to_lowercase(),
                })
            }
            Discovery::Dns(d) => json!({
                "kind": "dns", "name": d.name, "server": d.server.map(|s| s.to_string()),
                "record": format!("{:?}", d.record).to_lowercase(),
                "interval_s": secs(d.interval), "timeout_s": secs(d.timeout),
                "default_port": d.default_port,
            }),
        };
        json!({
            "listen": self.listen.to_string(),
            "service": self.service,
            "discovery": discovery,
            "on_multiple": format!("{:?}", self.on_multiple).to_lowercase(),
            "hold_timeout_s": secs(self.hold_timeout),
            "connect_timeout_s": secs(self.connect_timeout),
            "backend_greeting_timeout_s": secs(self.backend_greeting_timeout),
            "max_connections": self.max_connections,
            "max_held": self.max_held,
            "on_failover": format!("{:?}", self.on_failover).to_lowercase(),
            "drain_grace_s": secs(self.drain_grace),
            "verify_writable": self.fence.is_some(),
            "monitor_user": self.fence.as_ref().map(|f| f.user.clone()),
            "relay": format!("{:?}", self.relay).to_lowercase(),
            "workers": self.workers,
        })
    }
}

/// Validates the fencing settings; the password comes from the env var or the file.
fn resolve_fence(
    s: &Settings,
    env_password: Option<Secret>,
) -> Result<Option<FenceConfig>, ConfigError> {
    if !s.verify_writable.unwrap_or(false) {
        return Ok(None);
    }
    let user = s.monitor_user.clone().unwrap_or_default();
    if user.is_empty() {
        return Err(invalid(
            "monitor_user",
            "verify_writable needs a MySQL user to run `SELECT @@global.read_only` as",
        ));
    }
    let password = match (&s.monitor_password_file, env_password) {
        (Some(path), _) => {
            let text = read_small_file(path).map_err(|e| {
                invalid(
                    "monitor_password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Secret(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        (None, Some(password)) => password,
        (None, None) => Secret(String::new()),
    };
    Ok(Some(FenceConfig {
        user,
        password,
        interval: nonzero(
            "verify_interval",
            s.verify_interval.unwrap_or(Duration::from_secs(1)),
        )?,
    }))
}

/// Validates the DNS source settings.
fn resolve_dns(s: &Settings, default_port: u16) -> Result<DnsConfig, ConfigError> {
    let name = s.dns_name.clone().unwrap_or_default();
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(invalid(
            "dns_name",
            "dns discovery needs the name of the primary, e.g. primary.mysql.service.consul",
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(invalid(
            "dns_name",
            format!("`{name}` is not a valid DNS name"),
        ));
    }
    let record = s.dns_record.unwrap_or(
        if name.starts_with('_') || name.ends_with(".service.consul") {
            DnsRecord::Srv
        } else {
            DnsRecord::A
        },
    );
    let interval = nonzero(
        "dns_interval",
        s.dns_interval.unwrap_or(Duration::from_secs(1)),
    )?;
    let timeout = nonzero(
        "dns_timeout",
        s.dns_timeout.unwrap_or(Duration::from_secs(1)),
    )?;
    Ok(DnsConfig {
        name: format!("{name}."),
        server: s.dns_server,
        record,
        interval,
        timeout,
        default_port,
    })
}

/// `127.0.0.1:8500` → `http://127.0.0.1:8500`; keeps an explicit scheme; drops a trailing `/`.
fn normalize_consul_address(address: &str) -> Result<String, ConfigError> {
    let address = address.trim().trim_end_matches('/');
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let ok = (with_scheme.starts_with("http://") || with_scheme.starts_with("https://"))
        && with_scheme
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty());
    if !ok {
        return Err(invalid(
            "consul",
            format!("`{address}` is not an agent address like http://127.0.0.1:8500"),
        ));
    }
    Ok(with_scheme)
}

fn read_token_file(path: &Path) -> Result<Secret, ConfigError> {
    let text = read_small_file(path).map_err(|e| {
        invalid(
            "consul_token_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Ok(Secret(text.trim().to_owned()))
}

/// Reads a secret file, refusing anything over 64 KiB (a path like /dev/zero must not make
/// start-up read forever).
fn read_small_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    const LIMIT: u64 = 64 * 1024;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(LIMIT + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > LIMIT {
        return Err(std::io::Error::other(
            "larger than 64 KiB: not a secret file",
        ));
    }
    Ok(text)
}

impl Settings {
    /// The Consul ecosystem's own variables (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`,
    /// `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_CACERT`, `CONSUL_HTTP_SSL`), as the lowest layer.
    pub fn from_consul_env(var: impl Fn(&str) -> Option<String>) -> Settings {
        let ssl = var("CONSUL_HTTP_SSL").is_some_and(|v| v == "true" || v == "1");
        let consul = var("CONSUL_HTTP_ADDR").map(|addr| {
            if !addr.contains("://") && ssl {
                vec![format!("https://{addr}")]
            } else {
                vec![addr]
            }
        });
        Settings {
            consul,
            consul_token: var("CONSUL_HTTP_TOKEN").map(Secret),
            consul_token_file: var("CONSUL_HTTP_TOKEN_FILE").map(PathBuf::from),
            consul_ca_cert: var("CONSUL_CACERT").map(PathBuf::from),
            ..Settings::default()
        }
    }
}

impl Config {
    /// Loads the file named by `config_path` (if any) over the `CONSUL_HTTP_*` variables,
    /// stacks `cli` (our flags and env) on top, applies defaults and validates.
    pub fn load(config_path: Option<&Path>, cli: &Settings) -> Result<Config, ConfigError> {
        let file = match config_path {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        let ecosystem =
            Settings::from_consul_env(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
        let monitor_password = std::env::var(MONITOR_PASSWORD_ENV).ok().map(Secret);
        Config::resolve_with(
            ecosystem.overlay(file).overlay(cli.clone()),
            monitor_password,
        )
    }

    /// Applies defaults to `s` and validates every field (no monitor password).
    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        Config::resolve_with(s, None)
    }

    /// Like [`Config::resolve`], with the monitor password from the environment.
    pub fn resolve_with(
        s: Settings,
        monitor_password: Option<Secret>,
    ) -> Result<Config, ConfigError> {
        let service = s.service.clone().unwrap_or_else(|| "mysql".to_owned());
        if service.trim().is_empty() || service.contains('/') {
            return Err(invalid(
                "service",
                "must be a non-empty Consul service name without `/`",
            ));
        }
        let discovery = resolve_discovery(&s)?;
        let fence = resolve_fence(&s, monitor_password)?;
        let max_connections = s.max_connections.unwrap_or(4096);
        if max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        let workers = s.workers.unwrap_or(1);
        if !(1..=64).contains(&workers) {
            return Err(invalid("workers", "must be between 1 and 64"));
        }
        let log_level = s.log_level.unwrap_or_else(|| "info".to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(invalid("log_level", format!("`{log_level}`: {e}")));
        }
        Ok(Config {
            listen: s.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 3306))),
            admin: resolve_admin(s.admin.as_deref())?,
            discovery,
            service,
            on_multiple: s.on_multiple.unwrap_or_default(),
            hold_timeout: nonzero(
                "hold_timeout",
                s.hold_timeout.unwrap_or(Duration::from_secs(10)),
            )?,
            connect_timeout: nonzero(
                "connect_timeout",
                s.connect_timeout.unwrap_or(Duration::from_secs(2)),
            )?,
            backend_greeting_timeout: nonzero(
                "backend_greeting_timeout",
                s.backend_greeting_timeout.unwrap_or(Duration::from_secs(5)),
            )?,
            backend_keepalive: zero_is_off(s.backend_keepalive.unwrap_or(Duration::from_secs(10))),
            backend_user_timeout: zero_is_off(
                s.backend_user_timeout.unwrap_or(Duration::from_secs(30)),
            ),
            max_connections,
            shutdown_grace: s.shutdown_grace.unwrap_or(Duration::from_secs(30)),
            max_held: s.max_held.unwrap_or(10_000),
            fence,
            on_failover: s.on_failover.unwrap_or_default(),
            drain_grace: s.drain_grace.unwrap_or(Duration::from_secs(5)),
            relay: s.relay.unwrap_or_default(),
            workers,
            log_format: s.log_format.unwrap_or_default(),
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_backend() -> Settings {
        Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        }
    }

    #[test]
    fn defaults_apply_when_only_backend_is_set() {
        let c = Config::resolve(with_backend()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:3306".parse().unwrap());
        assert_eq!(c.hold_timeout, Duration::from_secs(10));
        assert_eq!(c.service, "mysql");
        assert_eq!(c.workers, 1);
        assert_eq!(
            c.discovery,
            Discovery::Static {
                backend: "127.0.0.1:3307".parse().unwrap()
            }
        );
    }

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
            ..with_backend()
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

    #[test]
    fn errors_name_the_field_flag_and_env() {
        let err = Config::resolve(Settings {
            hold_timeout: Some(Duration::ZERO),
            ..with_backend()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`hold_timeout`"), "{err}");
        assert!(err.contains("--hold-timeout"), "{err}");
        assert!(err.contains("CONSUL_MYSQL_PROXY_HOLD_TIMEOUT"), "{err}");

        let err = Config::resolve(Settings {
            discovery: Some(DiscoveryKind::Static),
            ..Settings::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`backend`"), "{err}");

        let err = Config::resolve(Settings {
            log_level: Some("info,=[".into()),
            ..with_backend()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`log_level`"), "{err}");
    }

    fn consul(c: &Config) -> &ConsulConfig {
        match &c.discovery {
            Discovery::Consul(consul) => consul,
            other => panic!("expected consul discovery, got {other:?}"),
        }
    }

    #[test]
    fn consul_health_is_the_default_without_a_backend() {
        let c = Config::resolve(Settings::default()).unwrap();
        let consul = consul(&c);
        assert_eq!(
            consul.source,
            ConsulSource::Health {
                tags: vec!["primary".into()]
            }
        );
        assert_eq!(consul.addresses, vec!["http://127.0.0.1:8500".to_owned()]);
        assert_eq!(consul.wait, Duration::from_secs(300));
        assert_eq!(c.on_multiple, OnMultiple::Refuse);
    }

    #[test]
    fn consul_settings_are_validated() {
        let err = |s: Settings| Config::resolve(s).unwrap_err().to_string();
        let kv = Settings {
            discovery: Some(DiscoveryKind::ConsulKv),
            ..Settings::default()
        };
        assert!(err(kv.clone()).contains("`kv_key`"));
        let both = Settings {
            discovery: Some(DiscoveryKind::ConsulHealth),
            ..with_backend()
        };
        assert!(err(both).contains("only applies to `discovery = static`"));
        let long_wait = Settings {
            consul_wait: Some(Duration::from_secs(601)),
            ..Settings::default()
        };
        assert!(err(long_wait).contains("`consul_wait`"));
        let bad_addr = Settings {
            consul: Some(vec!["ftp://x".into()]),
            ..Settings::default()
        };
        assert!(err(bad_addr).contains("`consul`"));
        let c = Config::resolve(Settings {
            kv_key: Some("/service/mysql/leader/".into()),
            consul: Some(vec!["10.0.0.1:8500".into(), "https://c2:8501/".into()]),
            ..kv
        })
        .unwrap();
        let consul = consul(&c);
        assert_eq!(
            consul.source,
            ConsulSource::Kv {
                key: "service/mysql/leader".into(),
                require_session: false
            }
        );
        assert_eq!(
            consul.addresses,
            vec![
                "http://10.0.0.1:8500".to_owned(),
                "https://c2:8501".to_owned()
            ]
        );
    }

    #[test]
    fn consul_ecosystem_env_is_the_lowest_layer_and_tokens_never_print() {
        let env = |name: &str| match name {
            "CONSUL_HTTP_ADDR" => Some("10.1.1.1:8501".to_owned()),
            "CONSUL_HTTP_SSL" => Some("true".to_owned()),
            "CONSUL_HTTP_TOKEN" => Some("s3cr3t-token".to_owned()),
            _ => None,
        };
        let eco = Settings::from_consul_env(env);
        let c = Config::resolve(eco.clone()).unwrap();
        assert_eq!(
            consul(&c).addresses,
            vec!["https://10.1.1.1:8501".to_owned()]
        );
        assert_eq!(
            consul(&c).token.as_ref().map(Secret::expose),
            Some("s3cr3t-token")
        );
        let printed = format!("{c:?} {eco:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        let ours = Settings {
            consul: Some(vec!["http://127.0.0.2:8500".into()]),
            ..Settings::default()
        };
        let c = Config::resolve(eco.overlay(ours)).unwrap();
        assert_eq!(
            consul(&c).addresses,
            vec!["http://127.0.0.2:8500".to_owned()]
        );
    }

    #[test]
    fn secret_files_are_bounded() {
        let err = Config::resolve(Settings {
            consul_token_file: Some(PathBuf::from("/dev/zero")),
            ..Settings::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`consul_token_file`") && err.contains("64 KiB"),
            "{err}"
        );
    }

    #[test]
    fn zero_disables_keepalive() {
        let c = Config::resolve(Settings {
            backend_keepalive: Some(Duration::ZERO),
            ..with_backend()
        })
        .unwrap();
        assert_eq!(c.backend_keepalive, None);
        assert_eq!(c.backend_user_timeout, Some(Duration::from_secs(30)));
    }
}

#[cfg(test)]
mod example_file {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        settings: Settings,
    }

    /// config.example.toml documents every field (fields without a default as commented
    /// `# field = example` lines), parses, and its active values are the built-in defaults.
    #[test]
    fn example_config_covers_every_field_with_defaults() {
        let text = include_str!("../config.example.toml");
        let mut documented: Vec<String> = text
            .lines()
            .filter_map(|line| {
                let line = line.trim_start().trim_start_matches('#').trim_start();
                let (key, _) = line.split_once(" = ")?;
                key.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
                    .then(|| key.to_owned())
            })
            .collect();
        documented.dedup();
        let mut fields: Vec<String> = Probe::command()
            .get_arguments()
            .map(|a| a.get_id().as_str().to_owned())
            .filter(|id| id != "help")
            .collect();
        documented.sort();
        fields.sort();
        assert_eq!(
            documented, fields,
            "config.example.toml and Settings disagree"
        );

        let example = Config::resolve(Settings::from_toml(text).unwrap()).unwrap();
        let backend_only = Config::resolve(Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(example, backend_only, "example values must be the defaults");
    }
}
