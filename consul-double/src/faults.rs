//! Fault switches and request counters, reachable from tests through [`Faults`] and from
//! other processes through `/_double/fault/*` and `/_double/requests` (see [`crate::http`]).
//!
//! Every API request is also remembered with its query string ([`Faults::requests`]), so a
//! test can check what a client sent (`wait`, `index`, `filter`, …).
//!
//! Faults apply to every `/v1/*` answer and, where they make sense, to DNS: `pause` holds
//! requests and answers (blocked queries stay blocked; DNS too), `latency` delays each HTTP
//! request and DNS query, `fail_with` answers every API request with a fixed status and body
//! (and DNS with SERVFAIL), `garbage` answers HTTP 200 with a body that is not JSON, cut in half, or JSON
//! of the wrong shape, `dns_servfail` answers DNS with SERVFAIL.
//! `reset_index` simulates a snapshot restore and `set_node_health` flips a node's serfHealth.
//!
//! Server-side: [`ServerState`] says whether the server the agent reaches is the leader, a
//! follower that still knows one, or a follower that lost it, which decides
//! `X-Consul-KnownLeader` / `X-Consul-LastContact` of `?stale` reads and the 500
//! `No cluster leader` of the others (see [`Faults::set_server_state`]).
//!
//! Node-side: [`Faults::agent_leave`], [`Faults::agent_restart`], [`Faults::agent_crash`],
//! [`Faults::agent_partition`], [`Faults::agent_heal`], [`Faults::force_check`],
//! [`Faults::service_maintenance`], [`Faults::node_maintenance`] (see [`crate::agents`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::Shared;

/// The server the agent's RPCs reach.
///
/// Consul: agent/consul/rpc.go. A read is forwarded to the leader unless it allows stale
/// results (`forward`); with no known leader that fails with `No cluster leader`
/// (structs.ErrNoLeader, HTTP 500). A stale read is answered by the server itself, and
/// `setQueryMeta` reports `LastContact = 0, KnownLeader = true` on the leader and
/// `LastContact = time since the leader was last heard from, KnownLeader = (a leader is
/// known)` on a follower. With `?max_stale=<d>`, a stale answer older than `d` is retried
/// as a default read (agent/rpcclient/health/health.go, agent/catalog_endpoint.go,
/// agent/kvs_endpoint.go … `MaxStaleDuration < LastContact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerState {
    /// The agent reaches the leader (the double's default).
    #[default]
    Leader,
    /// The agent reaches a follower.
    Follower {
        /// Whether that follower still knows a leader.
        known_leader: bool,
        /// Since when it last heard from the leader.
        last_contact: Duration,
    },
}

impl ServerState {
    /// A follower that lost its leader `last_contact` ago.
    pub fn leader_lost(last_contact: Duration) -> Self {
        ServerState::Follower {
            known_leader: false,
            last_contact,
        }
    }
}

/// The switches themselves, inside [`Shared`].
pub(crate) struct FaultState {
    server: Mutex<ServerState>,
    paused: watch::Sender<bool>,
    fail_with: Mutex<Option<(u16, String)>>,
    garbage: AtomicBool,
    garbage_count: AtomicU64,
    latency: Mutex<Duration>,
    dns_servfail: AtomicBool,
    /// Requests seen per path (HTTP path, or `dns:<qname>`).
    counts: Mutex<HashMap<String, u64>>,
    /// The last [`REQUEST_LOG_MAX`] API requests, in arrival order.
    log: Mutex<std::collections::VecDeque<SeenRequest>>,
}

/// How many API requests [`Faults::requests`] remembers.
pub const REQUEST_LOG_MAX: usize = 100_000;

/// One API request as the double received it (for tests that check what a client sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// Decoded path, e.g. `/v1/health/service/mysql`.
    pub path: String,
    /// The query string as sent (still percent-encoded).
    pub raw_query: String,
    /// The decoded query pairs, in order (a bare flag has an empty value).
    pub query: Vec<(String, String)>,
    /// When it arrived.
    pub at: Instant,
}

impl SeenRequest {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            server: Mutex::new(ServerState::Leader),
            paused: watch::channel(false).0,
            fail_with: Mutex::new(None),
            garbage: AtomicBool::new(false),
            garbage_count: AtomicU64::new(0),
            latency: Mutex::new(Duration::ZERO),
            dns_servfail: AtomicBool::new(false),
            counts: Mutex::new(HashMap::new()),
            log: Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

/// Which kind of garbage the next garbage answer carries.
pub(crate) enum Garbage {
    NotJson,
    WrongShape,
    /// The real answer, cut in the middle (a proxy or agent dying mid-write).
    Truncated,
}

impl FaultState {
    pub(crate) fn count(&self, path: &str) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry(path.to_string()).or_default() += 1;
    }

    /// Remembers an API request (path and query string) for [`Faults::requests`].
    pub(crate) fn log_request(&self, path: &str, raw_query: &str) {
        let query = form_urlencoded::parse(raw_query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == REQUEST_LOG_MAX {
            log.pop_front();
        }
        log.push_back(SeenRequest {
            path: path.to_string(),
            raw_query: raw_query.to_string(),
            query,
            at: Instant::now(),
        });
    }

    pub(crate) fn fail_with(&self) -> Option<(u16, String)> {
        self.fail_with
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Cycles through the kinds so each reaches the client.
    pub(crate) fn garbage(&self) -> Option<Garbage> {
        if !self.garbage.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.garbage_count.fetch_add(1, Ordering::SeqCst);
        Some(match n % 3 {
            0 => Garbage::NotJson,
            1 => Garbage::WrongShape,
            _ => Garbage::Truncated,
        })
    }

    pub(crate) fn latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn server_state(&self) -> ServerState {
        *self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn dns_servfail(&self) -> bool {
        self.dns_servfail.load(Ordering::SeqCst)
    }

    /// Waits while paused (returns at once otherwise).
    pub(crate) async fn wait_unpaused(&self) {
        let mut rx = self.paused.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|p| !*p).await;
    }
}

/// Handle to the fault switches of a running double (cheap to clone).
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Faults { shared }
    }

    fn state(&self) -> &FaultState {
        &self.shared.faults
    }

    /// Accept connections and requests but answer nothing until [`Faults::resume`].
    pub fn pause(&self) {
        self.state().paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.state().paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.state().paused.borrow()
    }

    /// Answer every API request with this status and body (e.g. `(500, "No cluster
    /// leader")`, `(403, "Permission denied")`, `(429, "rate limit exceeded")`); `None`
    /// stops it.
    pub fn fail_with(&self, failure: Option<(u16, String)>) {
        *self
            .state()
            .fail_with
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = failure;
    }

    /// Answer 200 with a non-JSON body, then a JSON body of the wrong shape, alternately.
    pub fn garbage(&self, on: bool) {
        self.state().garbage.store(on, Ordering::SeqCst);
    }

    /// Delay every HTTP request and DNS query by this much.
    pub fn latency(&self, latency: Duration) {
        *self
            .state()
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = latency;
    }

    /// Answer every DNS query with SERVFAIL.
    pub fn dns_servfail(&self, on: bool) {
        self.state().dns_servfail.store(on, Ordering::SeqCst);
    }

    /// Simulate a snapshot restore: every index drops to a small value, lower than before,
    /// and blocked queries return at once.
    pub fn reset_index(&self) {
        self.shared.write(|s| s.restore_low_indexes());
    }

    /// Set a node's serfHealth check (`passing` or `critical`) to simulate node failure.
    /// Returns true if that changed the node's status (false for an unknown node).
    pub fn set_node_health(&self, node: &str, status: &str) -> bool {
        self.shared
            .write(|s| s.set_node_health(node, status, Instant::now()))
    }

    /// Which server the agent reaches (see [`ServerState`]); `Leader` restores normal reads.
    pub fn set_server_state(&self, state: ServerState) {
        *self
            .state()
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = state;
        // Blocked queries re-evaluate under the new state when they next wake; nothing in
        // the store changed.
    }

    pub fn server_state(&self) -> ServerState {
        self.state().server_state()
    }

    /// Node `node`'s agent leaves gracefully: the node, its services, checks and sessions
    /// leave the catalog (the agent keeps its definitions). False for an unknown node.
    pub fn agent_leave(&self, node: &str) -> bool {
        self.shared.write(|s| s.agent_leave(node, Instant::now()))
    }

    /// Node `node`'s agent (re)starts: node registered with serfHealth passing, services
    /// registered again with their checks at their initial status (critical unless the
    /// definition gave `Status`) until the first run. False for a node never seen.
    pub fn agent_restart(&self, node: &str) -> bool {
        let runners = self.shared.write(|s| s.agent_restart(node, Instant::now()));
        match runners {
            Some(rs) => {
                for r in rs {
                    crate::checks::spawn_runner(&self.shared, r);
                }
                true
            }
            None => false,
        }
    }

    /// Node `node`'s agent process dies: serfHealth critical (`Agent not live or
    /// unreachable`), services and their last check results stay; nothing syncs any more.
    pub fn agent_crash(&self, node: &str) -> bool {
        self.shared
            .write(|s| s.agent_fail(node, false, Instant::now()))
    }

    /// Node `node`'s agent is cut off from the servers: serfHealth critical, services and
    /// last synced results stay; the agent's new check results are held until
    /// [`Faults::agent_heal`].
    pub fn agent_partition(&self, node: &str) -> bool {
        self.shared
            .write(|s| s.agent_fail(node, true, Instant::now()))
    }

    /// The partition of `node` heals: serfHealth passing, held results synced.
    pub fn agent_heal(&self, node: &str) -> bool {
        self.shared.write(|s| s.agent_heal(node, Instant::now()))
    }

    /// Forces check `check_id` (on `node`, default: the agent's node or the only node with
    /// that check) to `status` with `output`, whatever its TCP/script/TTL runs say — e.g. a
    /// check that cannot reach the database while the proxy can. Held until
    /// [`Faults::release_check`]. False for an unknown check.
    pub fn force_check(
        &self,
        node: Option<&str>,
        check_id: &str,
        status: &str,
        output: &str,
    ) -> bool {
        self.shared.write(|s| match s.locate_check(node, check_id) {
            Some(k) => s.force_check(&k, status, output, Instant::now()),
            None => false,
        })
    }

    /// Lets the check's own runs decide again.
    pub fn release_check(&self, node: Option<&str>, check_id: &str) -> bool {
        self.shared.write(|s| match s.locate_check(node, check_id) {
            Some(k) => s.release_check(&k),
            None => false,
        })
    }

    /// `PUT /v1/agent/service/maintenance/<id>?enable=&reason=` on `node`'s agent. False for
    /// an unknown service.
    pub fn service_maintenance(
        &self,
        node: Option<&str>,
        service_id: &str,
        enable: bool,
        reason: &str,
    ) -> bool {
        self.shared
            .write(|s| match s.locate_service(node, service_id) {
                Some(n) => {
                    s.set_maintenance(&n, service_id, enable, reason, Instant::now());
                    true
                }
                None => false,
            })
    }

    /// `PUT /v1/agent/maintenance?enable=&reason=` on `node`'s agent. False for an unknown
    /// node.
    pub fn node_maintenance(&self, node: &str, enable: bool, reason: &str) -> bool {
        let key = node.to_ascii_lowercase();
        self.shared.write(|s| {
            if !s.nodes.contains_key(&key) {
                return false;
            }
            s.set_node_maintenance(&key, enable, reason, Instant::now());
            true
        })
    }

    /// Clears pause, failures, garbage, latency and SERVFAIL, and makes the agent's server
    /// the leader again.
    pub fn clear(&self) {
        self.set_server_state(ServerState::Leader);
        self.resume();
        self.fail_with(None);
        self.garbage(false);
        self.latency(Duration::ZERO);
        self.dns_servfail(false);
    }

    /// Requests seen whose path starts with `prefix` (HTTP paths like `/v1/health/service/`,
    /// DNS queries as `dns:<name>`).
    pub fn request_count(&self, prefix: &str) -> u64 {
        self.state()
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, n)| *n)
            .sum()
    }

    /// The API requests (not `/_double/*`, not DNS) whose path starts with `prefix`, oldest
    /// first, with their query strings (at most the last [`REQUEST_LOG_MAX`] of all requests).
    pub fn requests(&self, prefix: &str) -> Vec<SeenRequest> {
        self.state()
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Current raft index of the store (for tests that compare indexes).
    pub fn raft_index(&self) -> u64 {
        self.shared.read(|s| s.index)
    }
}
