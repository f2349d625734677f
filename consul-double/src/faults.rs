//! Fault switches and request counters, reachable from tests through [`Faults`] and from
//! other processes through `/_double/fault/*` and `/_double/requests` (see [`crate::http`]).
//!
//! Faults apply to every `/v1/*` answer and, where they make sense, to DNS: `pause` holds
//! requests and answers (blocked queries stay blocked; DNS too), `latency` delays each HTTP
//! request and DNS query, `fail_with` answers every API request with a fixed status and body
//! (and DNS with SERVFAIL), `garbage` answers HTTP 200 with a body that is not JSON or is JSON
//! of the wrong shape, `dns_servfail` answers DNS with SERVFAIL.
//! `reset_index` simulates a snapshot restore and `set_node_health` flips a node's serfHealth.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::Shared;

/// The switches themselves, inside [`Shared`].
pub(crate) struct FaultState {
    paused: watch::Sender<bool>,
    fail_with: Mutex<Option<(u16, String)>>,
    garbage: AtomicBool,
    garbage_count: AtomicU64,
    latency: Mutex<Duration>,
    dns_servfail: AtomicBool,
    /// Requests seen per path (HTTP path, or `dns:<qname>`).
    counts: Mutex<HashMap<String, u64>>,
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            paused: watch::channel(false).0,
            fail_with: Mutex::new(None),
            garbage: AtomicBool::new(false),
            garbage_count: AtomicU64::new(0),
            latency: Mutex::new(Duration::ZERO),
            dns_servfail: AtomicBool::new(false),
            counts: Mutex::new(HashMap::new()),
        }
    }
}

/// Which kind of garbage the next garbage answer carries.
pub(crate) enum Garbage {
    NotJson,
    WrongShape,
}

impl FaultState {
    pub(crate) fn count(&self, path: &str) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry(path.to_string()).or_default() += 1;
    }

    pub(crate) fn fail_with(&self) -> Option<(u16, String)> {
        self.fail_with
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Alternates between the two kinds so both reach the client.
    pub(crate) fn garbage(&self) -> Option<Garbage> {
        if !self.garbage.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.garbage_count.fetch_add(1, Ordering::SeqCst);
        Some(if n.is_multiple_of(2) {
            Garbage::NotJson
        } else {
            Garbage::WrongShape
        })
    }

    pub(crate) fn latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Clears pause, failures, garbage, latency and SERVFAIL.
    pub fn clear(&self) {
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

    /// Current raft index of the store (for tests that compare indexes).
    pub fn raft_index(&self) -> u64 {
        self.shared.read(|s| s.index)
    }
}
