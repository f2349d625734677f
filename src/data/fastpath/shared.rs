//! One loaded [`FastPath`] per cgroup per process, shared by every route's steering task:
//! several routes use one pair of programs and one set of maps (the maps are keyed by listen
//! address), and the kernel-wide chores — copying the program's counters into the metrics,
//! sweeping the cookies of closed sockets — run once however many routes there are.
//!
//! ```text
//!   steer::start(route 1) ─┐                      ┌─▶ FastPath::load(cgroup), first time only
//!   steer::start(route 2) ─┴─▶ acquire(cgroup) ───┤
//!                                                 └─▶ the live Arc<Shared>, later times
//!   ops::fast_path (the /status slot) ◀── Facts { shared: Weak } (asked at each /status)
//! ```
//!
//! The registry holds only `Weak` references: when the last steering task ends (shutdown),
//! the `FastPath` drops and the kernel detaches the programs — nothing stays attached because
//! a registry remembered it.
//!
//! The relay path reports here too ([`note_reachable`]): a backend it connected to is
//! accepting, so a refusal the watch program recorded for it is cleared in every loaded fast
//! path and its route's connects are redirected again.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{FastPath, FastPathError, cgroup2_root};
use crate::ops::fast_path::{FactSource, Facts};
use crate::ops::metrics::Metrics;

/// How often the cookies of closed sockets are swept (and the open gauge refreshed): a sweep
/// dumps the namespace's TCP sockets, milliseconds on a busy host.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Loaded fast paths by cgroup directory.
static LOADED: Mutex<BTreeMap<PathBuf, Weak<Shared>>> = Mutex::new(BTreeMap::new());
/// How many `Shared` are alive: lets [`note_reachable`], called for every relayed
/// connection, return after one atomic load in a proxy without a fast path.
static ALIVE: AtomicUsize = AtomicUsize::new(0);

/// A loaded fast path and the chores its routes share.
pub(crate) struct Shared {
    pub(crate) fast_path: FastPath,
    /// The program's `redirected` counter as last copied into the metrics (a high-water mark,
    /// so that routes copying concurrently add each increment once).
    synced_redirected: AtomicU64,
    /// The watch program's `failed` counter, likewise.
    synced_failed: AtomicU64,
    /// When the last sweep started; `None` before the first.
    last_sweep: Mutex<Option<Instant>>,
    /// A sweep is running on a blocking thread.
    sweeping: AtomicBool,
    /// Redirected sockets open at the last sweep.
    open: AtomicU64,
    /// Redirected sockets destroyed at failovers since load.
    closed_by_failover: AtomicU64,
    /// What each liveness session (`verify_writable` on) is doing.
    pub(crate) liveness: LivenessBoard,
}

/// What each liveness session is doing, by route (its listen address) and server: two routes
/// steering to one server each keep their own entry. Each entry carries the id of the
/// watcher that wrote it, so a stopping watcher cannot remove the entry of the one that
/// replaced it (a reload restarts the watcher for the same route and server).
#[derive(Default)]
pub(crate) struct LivenessBoard(Mutex<BTreeMap<(SocketAddr, SocketAddr), (u64, String)>>);

impl LivenessBoard {
    /// The session (watcher `id`) of the route on `listen` to `target` is in `state`
    /// (`None`: it stopped; its entry goes unless a newer watcher wrote it since).
    pub(crate) fn note(
        &self,
        (listen, target): (SocketAddr, SocketAddr),
        id: u64,
        state: Option<String>,
    ) {
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            Some(state) => {
                sessions.insert((listen, target), (id, state));
            }
            None => {
                if sessions
                    .get(&(listen, target))
                    .is_some_and(|(by, _)| *by == id)
                {
                    sessions.remove(&(listen, target));
                }
            }
        }
    }

    /// `listen → target: state; …`, or `None` with no session.
    fn describe(&self) -> Option<String> {
        let sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let described: Vec<String> = sessions
            .iter()
            .map(|((listen, target), (_, state))| format!("{listen} → {target}: {state}"))
            .collect();
        (!described.is_empty()).then(|| described.join("; "))
    }
}

/// The fast path attached to `cgroup` (default: the cgroup v2 root): the one this process
/// already loaded there, or a new one.
pub(crate) fn acquire(cgroup: Option<&Path>) -> Result<Arc<Shared>, FastPathError> {
    let dir = match cgroup {
        Some(dir) => dir.to_path_buf(),
        None => cgroup2_root()?,
    };
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = loaded.get(&dir).and_then(Weak::upgrade) {
        return Ok(shared);
    }
    let fast_path = FastPath::load(Some(&dir))?;
    ALIVE.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        fast_path,
        synced_redirected: AtomicU64::new(0),
        synced_failed: AtomicU64::new(0),
        last_sweep: Mutex::new(None),
        sweeping: AtomicBool::new(false),
        open: AtomicU64::new(0),
        closed_by_failover: AtomicU64::new(0),
        liveness: LivenessBoard::default(),
    });
    loaded.retain(|_, w| w.strong_count() > 0);
    loaded.insert(dir, Arc::downgrade(&shared));
    Ok(shared)
}

/// A relayed connection to `backend` got its greeting: the server accepts connections, so
/// a refusal the watch program recorded for it is cleared and connects to its route are
/// redirected again. One atomic load when no fast path is loaded.
pub fn note_reachable(backend: SocketAddr) {
    if ALIVE.load(Ordering::Relaxed) == 0 {
        return;
    }
    let live: Vec<Arc<Shared>> = {
        let loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        loaded.values().filter_map(Weak::upgrade).collect()
    };
    for shared in live {
        match shared.fast_path.clear_refusal(backend) {
            Ok(true) => {
                tracing::info!(%backend, "fast path: the server accepted a relayed connection again; connects to it are redirected again")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%backend, error = %e, "fast path: cannot clear the server's refusal")
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        ALIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Copies the programs' counters of redirected and failed connects into the metrics
    /// (cheap: one map lookup per counter). Returns how many redirected connects failed since
    /// the last call (by any route's call: each increment is returned once).
    pub(crate) fn sync_counters(&self, metrics: &Metrics) -> Result<u64, FastPathError> {
        let counters = self.fast_path.counters()?;
        let before = self
            .synced_redirected
            .fetch_max(counters.redirected, Ordering::Relaxed);
        if counters.redirected > before {
            metrics
                .fast_path_redirected
                .inc_by(counters.redirected - before);
        }
        let before = self
            .synced_failed
            .fetch_max(counters.failed, Ordering::Relaxed);
        let failed = counters.failed.saturating_sub(before);
        if failed > 0 {
            metrics.fast_path_failed_connects.inc_by(failed);
        }
        Ok(failed)
    }

    /// Whether a sweep should start now (none running, the last one [`SWEEP_EVERY`] ago);
    /// `true` also claims it.
    pub(crate) fn claim_sweep(&self) -> bool {
        let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY)
            || self.sweeping.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Runs a claimed sweep (blocking: dumps the socket table) and updates the open gauge.
    pub(crate) fn sweep(&self, metrics: &Metrics) -> Result<(), FastPathError> {
        let swept = self.fast_path.sweep_counting();
        self.sweeping.store(false, Ordering::Release);
        let swept = swept?;
        self.open.store(swept.open as u64, Ordering::Relaxed);
        metrics
            .fast_path_open
            .set(i64::try_from(swept.open).unwrap_or(i64::MAX));
        Ok(())
    }

    /// `n` redirected sockets were destroyed at a failover.
    pub(crate) fn note_closed(&self, n: usize, metrics: &Metrics) {
        self.closed_by_failover
            .fetch_add(n as u64, Ordering::Relaxed);
        metrics.fast_path_closed_by_failover.inc_by(n as u64);
    }
}

/// `/status`'s view of a loaded fast path, asked at each request.
pub(crate) struct ActiveFacts {
    pub(crate) mode: &'static str,
    pub(crate) shared: Weak<Shared>,
}

impl FactSource for ActiveFacts {
    fn facts(&self) -> Facts {
        let mut facts = Facts::new();
        facts.insert("mode".into(), Value::from(self.mode));
        let Some(shared) = self.shared.upgrade() else {
            facts.insert("active".into(), Value::Bool(false));
            facts.insert(
                "reason".into(),
                Value::from("stopped: the proxy is shutting down, the programs are detached"),
            );
            return facts;
        };
        let fp = &shared.fast_path;
        facts.insert("active".into(), Value::Bool(true));
        facts.insert(
            "cgroup".into(),
            Value::from(fp.cgroup().display().to_string()),
        );
        let status = match fp.describe() {
            Ok(status) => status,
            Err(e) => {
                facts.insert("error".into(), Value::from(e.to_string()));
                return facts;
            }
        };
        let programs: Vec<String> = status
            .programs
            .iter()
            .map(|p| format!("{} id {} (link {})", p.hook, p.program_id, p.link_id))
            .collect();
        facts.insert("programs".into(), Value::from(programs.join(", ")));
        let routes: Vec<String> = status
            .routes
            .iter()
            .map(|r| match r.target {
                Some(target) => format!("{} → {target}", r.listen),
                None => format!("{} → none (held and relayed by the proxy)", r.listen),
            })
            .collect();
        facts.insert("routes".into(), Value::from(routes.join("; ")));
        if !status.refusing.is_empty() {
            let refusing: Vec<String> = status.refusing.iter().map(|t| t.to_string()).collect();
            facts.insert(
                "refusing".into(),
                Value::from(format!(
                    "{} (a redirected connect failed, or the liveness session to it broke: connects are held and relayed until it accepts one)",
                    refusing.join(", ")
                )),
            );
        }
        let c = status.counters;
        facts.insert("redirected_total".into(), Value::from(c.redirected));
        facts.insert("passed_to_the_proxy_total".into(), Value::from(c.passed));
        facts.insert("failed_connects_total".into(), Value::from(c.failed));
        facts.insert(
            "detoured_to_the_proxy_total".into(),
            Value::from(c.detoured),
        );
        if c.unrecorded > 0 {
            facts.insert("unrecorded_total".into(), Value::from(c.unrecorded));
        }
        facts.insert(
            "open".into(),
            Value::from(shared.open.load(Ordering::Relaxed)),
        );
        facts.insert(
            "closed_by_failover_total".into(),
            Value::from(shared.closed_by_failover.load(Ordering::Relaxed)),
        );
        if let Some(described) = shared.liveness.describe() {
            facts.insert("liveness".into(), Value::from(described));
        }
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_liveness_watcher_leaves_the_entry_of_the_one_that_replaced_it() {
        let board = LivenessBoard::default();
        let (r1, r2): (SocketAddr, SocketAddr) = (
            "127.0.0.1:3306".parse().unwrap(),
            "127.0.0.1:3307".parse().unwrap(),
        );
        let db: SocketAddr = "10.0.0.11:3306".parse().unwrap();
        board.note((r1, db), 1, Some("session open as monitor".into()));
        board.note((r2, db), 2, Some("no session: refused; retrying".into()));
        assert_eq!(
            board.describe().as_deref(),
            Some(
                "127.0.0.1:3306 → 10.0.0.11:3306: session open as monitor; 127.0.0.1:3307 → 10.0.0.11:3306: no session: refused; retrying"
            ),
            "two routes to one server keep their own entries"
        );
        // A reload restarts the first route's watcher: the new one (3) writes before the old
        // one (1) has seen its stop.
        board.note((r1, db), 3, Some("session open as monitor2".into()));
        board.note((r1, db), 1, None);
        board.note((r2, db), 2, None);
        assert_eq!(
            board.describe().as_deref(),
            Some("127.0.0.1:3306 → 10.0.0.11:3306: session open as monitor2")
        );
        board.note((r1, db), 3, None);
        assert_eq!(board.describe(), None);
    }

    #[test]
    fn a_stopped_fast_path_says_so() {
        let facts = ActiveFacts {
            mode: "connect",
            shared: Weak::new(),
        }
        .facts();
        assert_eq!(facts["active"], Value::Bool(false));
        assert_eq!(facts["mode"], "connect");
        assert!(
            facts["reason"]
                .as_str()
                .is_some_and(|r| r.contains("stopped"))
        );
    }
}
