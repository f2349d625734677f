//! A dev-only double of the Consul agent HTTP and DNS APIs that consul-mysql-proxy uses,
//! for tests and the demo (the real `consul` binary is not available on our machines).
//! It follows Consul's source and documentation; where it deliberately differs, the
//! difference is listed under "Deviations" below.
//!
//! # Map
//! A request flows like this:
//!
//! - [`http`] accepts it (axum, HTTP/1.1), counts it per path, applies the [`faults`]
//!   (pause, latency, forced status, garbage bodies), checks the ACL token, then dispatches:
//!   agent writes and KV/session writes go straight to the state store; reads of health,
//!   catalog and KV go through [`blocking`], which parses `index`/`wait`/consistency/`dc`,
//!   waits on the store's change signal until the result's own index moves past `index`
//!   (or `wait` + jitter runs out), and sets the `X-Consul-*` headers.
//! - [`dns`] answers `*.service.consul`, RFC 2782 SRV names, `*.query.consul` and
//!   `*.node.consul` over UDP and TCP on one port, from the same health data.
//! - [`query`] holds prepared queries; [`acl`] the token rules; [`agents`] the node-side
//!   events.
//! - The state store is [`store`] (indexes, snapshot restore) with [`catalog`] (nodes,
//!   services, checks) and [`kv`] (keys, sessions, locks). Every change goes through
//!   `Shared::write`, which wakes blocked queries and the timer task.
//! - [`checks`] runs TCP and script checks on their interval, and one timer task that expires
//!   TTL checks and sessions, flushes deferred check output and reaps services whose checks
//!   have been critical past `DeregisterCriticalServiceAfter`.
//!
//! Every behaviour follows Consul's source; the code names the Consul file it comes from
//! (`// Consul: <path>`), and `CONFORMANCE.md` in this crate lists each behaviour with its
//! source file and the test that covers it.
//!
//! # Test-facing API beyond Consul's HTTP/DNS
//! - [`DoubleConfig`]: `acl_token` (management token) and `acl_tokens` (tokens with prefix
//!   rules, [`AclToken`]), `use_streaming_backend` (default true, as Consul), `http_unix`
//!   (unix socket), `https` + `tls` ([`TlsConfig`], `verify_incoming`).
//! - [`Faults::requests`]: every API request with its query string, for tests of a client.
//! - [`Faults`]: transport faults (pause, latency, fail_with, garbage, SERVFAIL, snapshot
//!   restore), the server the agent reaches ([`ServerState`]: leader, follower, lost
//!   leader), and node events ([`crate::agents`]: leave, restart, crash, partition, heal,
//!   forced check status, service and node maintenance). The same switches exist over HTTP
//!   under `/_double/fault/*` (see the crate README).
//!
//! # Deviations from real Consul
//! - Extra, non-standard: `?node=<name>&node_address=<ip>` on agent endpoints registers on
//!   (or addresses) another node, so tests can simulate several nodes; `/_double/*` control
//!   endpoints for the fault switches and request counters.
//! - One datacenter and one server; it is the leader unless a test says otherwise
//!   ([`Faults::set_server_state`]). Writes are not affected by a lost leader.
//! - `filter` supports a subset of Consul's expression language ([`filter`]: `==`, `!=`,
//!   `contains`, `in`, `is empty`, `and`/`or`/`not` on node and service fields, tags and meta)
//!   on health and catalog reads; `near` only selects the RPC backend for health;
//!   HTTP/gRPC/UDP/alias checks are rejected with 400; ACL management endpoints, Connect,
//!   peering (`peer` is ignored), prepared-query templates and remote-datacenter failover are
//!   absent; namespaces and partitions are refused with 400 as Consul CE does.
//! - ACL rules are prefix rules only (no exact-name rules); with ACLs on, the default policy
//!   is `deny`. DNS ignores ACLs (the agent's own token is assumed to read).
//! - KV keys are not validated (newer Consul rejects some characters and file extensions).
//! - Session TTL expiry uses `session_ttl_multiplier` (Consul: 2); timers are per process,
//!   not per raft leader. Lock-delay is enforced as in Consul (default 15 s; `LockDelay: "0s"`
//!   disables it).
//! - DNS message size limits are computed on the compressed encoding; there is no
//!   recursion, no PTR, no `connect`/`ingress`/`virtual` names.
//! - HTTPS offers ALPN `http/1.1` only (Consul also offers `h2`).

#![forbid(unsafe_code)]

pub mod acl;
pub mod agents;
pub mod blocking;
pub mod catalog;
pub mod checks;
pub mod dns;
pub mod duration;
pub mod faults;
pub mod filter;
pub mod http;
pub mod kv;
pub mod query;
pub mod store;
#[cfg(feature = "tls")]
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use acl::{Access, AclToken, Policy, Resource};
pub use faults::{Faults, SeenRequest, ServerState};

use crate::store::Store;

/// How the double is started. `Default` gives Consul's defaults on ephemeral loopback ports.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// HTTP API listen address (Consul: 127.0.0.1:8500).
    pub http: SocketAddr,
    /// DNS listen address, UDP and TCP on the same port (Consul: 127.0.0.1:8600).
    pub dns: SocketAddr,
    /// When set, every API request needs this token (`X-Consul-Token`, `Authorization:
    /// Bearer`, or `?token=`).
    pub acl_token: Option<String>,
    pub datacenter: String,
    /// Name of the agent's node.
    pub node_name: String,
    /// Address of the agent's node.
    pub node_address: String,
    /// DNS `only_passing`: drop warning instances too.
    pub dns_only_passing: bool,
    /// DNS `enable_truncate`: set TC when a UDP answer was trimmed.
    pub enable_truncate: bool,
    /// DNS `udp_answer_limit` (Consul default 3).
    pub udp_answer_limit: usize,
    /// Consul's `enable_script_checks` (default false, as in Consul).
    pub enable_script_checks: bool,
    /// Consul's `check_update_interval` (default 5m): output-only changes reach the catalog
    /// after half of it plus a random part of it. Zero syncs at once.
    pub check_update_interval: Duration,
    /// How often critical services are reaped (Consul: 30 s).
    pub check_reap_interval: Duration,
    /// Lower bound for `DeregisterCriticalServiceAfter` (Consul: 1 m).
    pub check_deregister_interval_min: Duration,
    /// Lower bound for check intervals (Consul's `MinInterval`: 1 s).
    pub min_check_interval: Duration,
    /// Sessions are invalidated `TTL × this` after the last renew (Consul: 2).
    pub session_ttl_multiplier: f64,
    /// More ACL tokens, each with its own prefix rules (see [`acl`]). ACLs are on (default
    /// policy `deny`) when this or `acl_token` is set.
    pub acl_tokens: Vec<AclToken>,
    /// Consul's `use_streaming_backend` (default true, agent/config/builder.go): health
    /// blocking queries are answered from the streaming backend, with
    /// `X-Consul-Query-Backend: streaming` (agent/rpcclient/health/health.go). False gives
    /// the older RPC (blocking-query) answers.
    pub use_streaming_backend: bool,
    /// Also serve the HTTP API on this unix socket (Consul `addresses.http =
    /// "unix://<path>"`; an existing file there is replaced, as agent/agent.go listenSocket
    /// does).
    pub http_unix: Option<PathBuf>,
    /// Serve the HTTP API over TLS on this address too (Consul `ports.https`). Needs `tls`;
    /// when `tls` is set and this is not, an ephemeral loopback port is used.
    pub https: Option<SocketAddr>,
    /// Certificate, key and client CA of the HTTPS listener.
    pub tls: Option<TlsConfig>,
}

/// TLS of the HTTPS listener (Consul `tls.https` / `tls.defaults`: `cert_file`,
/// `key_file`, `ca_file`, `verify_incoming`), as PEM text.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert_pem: String,
    /// Server private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// CA bundle (PEM) that client certificates must chain to.
    pub ca_pem: Option<String>,
    /// Consul `verify_incoming`: require a client certificate signed by `ca_pem`; a client
    /// without one, or with one from another CA, fails the handshake
    /// (tlsutil/config.go commonTLSConfig: `tls.RequireAndVerifyClientCert`).
    pub verify_incoming: bool,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        DoubleConfig {
            http: "127.0.0.1:0".parse().expect("literal address"),
            dns: "127.0.0.1:0".parse().expect("literal address"),
            acl_token: None,
            datacenter: "dc1".to_string(),
            node_name: "consul-double".to_string(),
            node_address: "127.0.0.1".to_string(),
            dns_only_passing: false,
            enable_truncate: false,
            udp_answer_limit: 3,
            enable_script_checks: false,
            check_update_interval: Duration::from_secs(300),
            check_reap_interval: Duration::from_secs(30),
            check_deregister_interval_min: Duration::from_secs(60),
            min_check_interval: Duration::from_secs(1),
            session_ttl_multiplier: 2.0,
            acl_tokens: Vec::new(),
            use_streaming_backend: true,
            http_unix: None,
            https: None,
            tls: None,
        }
    }
}

/// Everything the servers and background tasks share.
pub(crate) struct Shared {
    pub cfg: DoubleConfig,
    pub store: Mutex<Store>,
    /// Bumped after every write that changed the store; blocked queries wait on it.
    pub changes: watch::Sender<u64>,
    /// Wakes the timer task when a deadline may have moved.
    pub timers: Notify,
    pub faults: faults::FaultState,
    /// Cancelled on drop/shutdown; every task and every blocked request selects on it.
    pub shutdown: CancellationToken,
}

impl Shared {
    /// Runs a write against the store and wakes watchers if it changed anything.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let r = self.write_quiet(f);
        self.timers.notify_one();
        r
    }

    /// Like `write` without waking the timer task (the timer task itself uses this).
    pub(crate) fn write_quiet<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (r, changed) = {
            let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
            let before = (s.index, s.epoch);
            let r = f(&mut s);
            (r, (s.index, s.epoch) != before)
        };
        if changed {
            self.changes.send_modify(|v| *v += 1);
        }
        r
    }

    pub(crate) fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let s = self.store.lock().unwrap_or_else(|e| e.into_inner());
        f(&s)
    }
}

/// A running double. Dropping it stops the servers and every background task.
pub struct ConsulDouble {
    shared: Arc<Shared>,
    faults: Faults,
    http_addr: SocketAddr,
    dns_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds HTTP (TCP, and the unix socket / HTTPS listener when configured) and DNS (UDP +
/// TCP) and starts serving.
pub async fn start(cfg: DoubleConfig) -> anyhow::Result<ConsulDouble> {
    let http_listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http))?;
    let http_addr = http_listener.local_addr()?;
    let (udp, dns_tcp) = dns::bind(cfg.dns).await?;
    let dns_addr = udp.local_addr()?;
    let unix_listener = match &cfg.http_unix {
        Some(path) => Some(http::bind_unix(path)?),
        None => None,
    };
    if cfg.https.is_some() && cfg.tls.is_none() {
        anyhow::bail!("an HTTPS address needs a TLS configuration (DoubleConfig::tls)");
    }
    let https_listener = match &cfg.tls {
        None => None,
        Some(tls) => {
            let addr = cfg
                .https
                .unwrap_or_else(|| "127.0.0.1:0".parse().expect("literal address"));
            Some(bind_https(addr, tls).await?)
        }
    };

    let mut store = Store::new(&cfg.node_name);
    store.bootstrap(&cfg.node_name, &cfg.node_address);
    let mut cfg = cfg;
    for t in &mut cfg.acl_tokens {
        if t.accessor_id.is_empty() {
            t.accessor_id = catalog::new_uuid();
        }
    }
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        changes: watch::channel(0).0,
        timers: Notify::new(),
        faults: faults::FaultState::default(),
        shutdown: CancellationToken::new(),
        cfg,
    });
    let mut tasks = vec![
        tokio::spawn(http::serve(http_listener, shared.clone())),
        tokio::spawn(dns::serve_udp(udp, shared.clone())),
        tokio::spawn(dns::serve_tcp(dns_tcp, shared.clone())),
        tokio::spawn(checks::run_timers(shared.clone())),
    ];
    if let Some(l) = unix_listener {
        tasks.push(tokio::spawn(http::serve(l, shared.clone())));
    }
    let mut https_addr = None;
    if let Some(l) = https_listener {
        https_addr = Some(https_local_addr(&l)?);
        tasks.push(tokio::spawn(serve_https(l, shared.clone())));
    }
    tracing::debug!(%http_addr, %dns_addr, ?https_addr, "consul-double listening");
    Ok(ConsulDouble {
        faults: Faults::new(shared.clone()),
        shared,
        http_addr,
        dns_addr,
        https_addr,
        tasks,
    })
}

#[cfg(feature = "tls")]
type HttpsListener = tls::TlsListener;
#[cfg(not(feature = "tls"))]
type HttpsListener = std::convert::Infallible;

#[cfg(feature = "tls")]
async fn bind_https(addr: SocketAddr, cfg: &TlsConfig) -> anyhow::Result<HttpsListener> {
    tls::TlsListener::bind(addr, cfg).await
}

#[cfg(not(feature = "tls"))]
async fn bind_https(_addr: SocketAddr, _cfg: &TlsConfig) -> anyhow::Result<HttpsListener> {
    anyhow::bail!("consul-double was built without its `tls` feature")
}

#[cfg(feature = "tls")]
fn https_local_addr(l: &HttpsListener) -> anyhow::Result<SocketAddr> {
    Ok(l.addr())
}

#[cfg(not(feature = "tls"))]
fn https_local_addr(l: &HttpsListener) -> anyhow::Result<SocketAddr> {
    match *l {}
}

#[cfg(feature = "tls")]
async fn serve_https(l: HttpsListener, shared: Arc<Shared>) {
    http::serve(l, shared).await
}

#[cfg(not(feature = "tls"))]
async fn serve_https(l: HttpsListener, _shared: Arc<Shared>) {
    match l {}
}

impl ConsulDouble {
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// `http://<http_addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The HTTPS listener's address, when `DoubleConfig::tls` is set.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// `https://<https_addr>`, when `DoubleConfig::tls` is set.
    pub fn https_url(&self) -> Option<String> {
        self.https_addr.map(|a| format!("https://{a}"))
    }

    /// The unix socket the HTTP API also listens on (`DoubleConfig::http_unix`).
    pub fn unix_socket(&self) -> Option<&Path> {
        self.shared.cfg.http_unix.as_deref()
    }

    /// `unix://<path>` (the form of `CONSUL_HTTP_ADDR` for a socket), when listening on one.
    pub fn unix_url(&self) -> Option<String> {
        self.unix_socket()
            .map(|p| format!("unix://{}", p.display()))
    }

    /// Fault switches and request counters.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn config(&self) -> &DoubleConfig {
        &self.shared.cfg
    }

    /// Stops serving and waits for the server tasks to end.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
