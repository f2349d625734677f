//! The validated configuration every component reads: [`Config`] and the narrow parts handed to
//! one component each ([`ConsulConfig`], [`DnsConfig`], [`FenceConfig`], [`FailoverPolicy`]).
//! Values here are final — defaults applied, durations non-zero where zero makes no sense,
//! addresses parsed — so components never re-validate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::kinds::{
    Balance, Consistency, DnsRecord, FastPathMode, LogFormat, OnFailover, OnMultiple,
    ProxyProtocol, RelayKind, Role, WarningIs,
};
use crate::util::secret::Secret;

/// The resolved, validated configuration. Immutable; a reload builds a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None` = admin endpoint off.
    pub admin: Option<SocketAddr>,
    /// The read-only endpoint (`metrics_listen`); `None` = off.
    pub metrics_listen: Option<SocketAddr>,
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
    pub failover: FailoverPolicy,
    /// How long a primary Consul withdrew without a replacement is still routed to, when
    /// `verify_writable` is off (with it, for as long as it is verified writable).
    pub withdrawn_grace: Duration,
    pub proxy_protocol: ProxyProtocol,
    /// One primary, or a pool of replicas.
    pub role: Role,
    /// `role = replica`: how a new connection picks its pool member.
    pub balance: Balance,
    /// `role = replica`: what happens when the pool is empty.
    pub fallback: Fallback,
    pub relay: RelayKind,
    pub fast_path: FastPathConfig,
    pub workers: usize,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// What happens to the connections of a replaced primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverPolicy {
    pub on_failover: OnFailover,
    /// With `drain`: how long old connections may live on.
    pub drain_grace: Duration,
}

/// What a replica route does when no replica is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Hold the client up to `hold_timeout`, then an ERR packet saying why.
    #[default]
    Hold,
    /// Send it to that (primary) route's current primary.
    Route(String),
}

/// The kernel fast path: whether to use it, and for which processes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FastPathConfig {
    pub mode: FastPathMode,
    /// The cgroup v2 directory the programs attach to; `None` = the cgroup v2 root, found at
    /// start-up.
    pub cgroup: Option<PathBuf>,
}

/// The discovery source with the settings it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    Static { backend: SocketAddr },
    // Boxed: the Consul settings are several times larger than the others.
    Consul(Box<ConsulConfig>),
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
    pub tls: ConsulTls,
    pub scope: ConsulScope,
    pub wait: Duration,
    pub stale_after: Option<Duration>,
    pub dc: Option<String>,
    pub consistency: Consistency,
    /// With `stale` reads: an answer whose `X-Consul-LastContact` is older is unavailable.
    pub max_stale: Option<Duration>,
    pub default_port: u16,
    /// How the health source judges each instance's checks.
    pub health: HealthRules,
}

/// TLS toward the agent, as Consul's client configures it (`api/api.go` `SetupTLSConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsulTls {
    /// PEM CA file; with `ca_path`, both are trusted; neither: the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Directory of PEM CA files.
    pub ca_path: Option<PathBuf>,
    /// Client certificate and key, for agents with `verify_incoming`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Name checked in the agent's certificate (and sent as SNI) instead of the URL's host.
    pub server_name: Option<String>,
    /// No certificate verification at all (insecure).
    pub skip_verify: bool,
}

/// Where in Consul the service lives: sent as `ns`, `partition`, `peer`, `filter`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsulScope {
    pub namespace: Option<String>,
    pub partition: Option<String>,
    /// Health and catalog only: the peer cluster the service is imported from.
    pub peer: Option<String>,
    /// Health and catalog only: a Consul filter expression.
    pub filter: Option<String>,
}

/// The proxy's own reading of Consul's checks (`consul-health`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthRules {
    pub warning_is: WarningIs,
    /// Check IDs that never count (e.g. a flaky unrelated node check).
    pub ignore_checks: Vec<String>,
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
