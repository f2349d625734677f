//! The agent's check machinery (Consul: agent/checks/check.go CheckTCP, CheckMonitor,
//! CheckTTL; agent/agent.go addCheck; agent/local/state.go UpdateCheck for the sync rule).
//!
//! - One task per TCP or script check: a random stagger within the interval first (as
//!   Consul's `RandomStagger`), then one run per interval. TCP: connect within `Timeout`
//!   (default 10 s). Script: run `Args` directly (no shell) within `Timeout` (default 30 s);
//!   exit 0 → passing, 1 → warning, anything else (or a timeout) → critical; stdout and stderr
//!   go to one buffer that keeps the last 4 KB. Results go through the agent-local update rule
//!   in [`crate::catalog`] (status changes sync at once, output-only changes are deferred).
//! - One timer task for everything deadline-driven: TTL check expiry, session TTL expiry,
//!   deferred output flushes, and reaping services whose check stayed critical for longer than
//!   `DeregisterCriticalServiceAfter` (checked every `check_reap_interval`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::Shared;
use crate::catalog::{CRITICAL, CheckDef, OUTPUT_MAX, PASSING, Runner, Thresholds, WARNING};

/// Consul's `StatusHandler` (agent/checks/check.go): a result changes the check only once it
/// has come that many times in a row. The counters start at the thresholds, so the first run
/// after a (re)start updates at once. A run below its threshold changes nothing at all, output
/// included (`UpdateCheck` is not called).
#[derive(Debug)]
pub(crate) struct StatusHandler {
    thresholds: Thresholds,
    successes: u32,
    failures: u32,
}

impl StatusHandler {
    pub(crate) fn new(thresholds: Thresholds) -> Self {
        StatusHandler {
            thresholds,
            successes: thresholds.success_before_passing,
            failures: thresholds.failures_before_critical,
        }
    }

    /// The status to store for this run's result, or `None` while below a threshold.
    pub(crate) fn update(&mut self, status: &'static str) -> Option<&'static str> {
        let t = self.thresholds;
        if status == PASSING || status == WARNING {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (self.successes >= t.success_before_passing).then_some(status)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= t.failures_before_critical {
                Some(status)
            } else if self.failures >= t.failures_before_warning {
                Some(WARNING)
            } else {
                None
            }
        }
    }
}

/// Spawns the runner of one TCP/script check.
pub(crate) fn spawn_runner(shared: &Arc<Shared>, runner: Runner) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let Runner { key, def, cancel } = runner;
        let (interval, thresholds) = match &def {
            CheckDef::Tcp {
                interval,
                thresholds,
                ..
            }
            | CheckDef::Script {
                interval,
                thresholds,
                ..
            } => (*interval, *thresholds),
            _ => return,
        };
        let mut handler = StatusHandler::new(thresholds);
        let stagger = Duration::from_nanos(fastrand::u64(0..interval.as_nanos().max(1) as u64));
        let mut next = Instant::now() + stagger;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = cancel.cancelled() => return,
                _ = shared.shutdown.cancelled() => return,
            }
            let (status, output) = tokio::select! {
                r = run_once(&def) => r,
                _ = cancel.cancelled() => return,
                _ = shared.shutdown.cancelled() => return,
            };
            tracing::debug!(check = %key.1, node = %key.0, status, "check ran");
            next = Instant::now() + interval;
            let Some(status) = handler.update(status) else {
                tracing::debug!(check = %key.1, node = %key.0, "check result below its threshold");
                continue;
            };
            let interval_sync = shared.cfg.check_update_interval;
            shared.write(|s| {
                if !cancel.is_cancelled() {
                    s.update_check(
                        &key,
                        status,
                        output,
                        std::time::Instant::now(),
                        interval_sync,
                    );
                }
            });
            next = Instant::now() + interval;
        }
    });
}

async fn run_once(def: &CheckDef) -> (&'static str, String) {
    match def {
        CheckDef::Tcp { addr, timeout, .. } => tcp_check(addr, *timeout).await,
        CheckDef::Script { args, timeout, .. } => script_check(args, *timeout).await,
        _ => (PASSING, String::new()),
    }
}

// Consul: agent/checks/check.go CheckTCP.check — "TCP connect <addr>: Success", else the
// dial error (Go's "dial tcp <addr>: connect: connection refused").
async fn tcp_check(addr: &str, timeout: Duration) -> (&'static str, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_conn)) => (PASSING, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => {
            let reason = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
                _ => e.to_string(),
            };
            (CRITICAL, format!("dial tcp {addr}: {reason}"))
        }
        Err(_) => (CRITICAL, format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Keeps the last `OUTPUT_MAX` bytes, like Consul's circular buffer (agent/checks/check.go
/// CheckMonitor.check: `Captured %d of %d bytes\n...\n%s`).
struct Tail {
    buf: Vec<u8>,
    total: usize,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.total += data.len();
        self.buf.extend_from_slice(data);
        if self.buf.len() > OUTPUT_MAX {
            let cut = self.buf.len() - OUTPUT_MAX;
            self.buf.drain(..cut);
        }
    }

    fn render(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.total > OUTPUT_MAX {
            format!(
                "Captured {} of {} bytes\n...\n{text}",
                OUTPUT_MAX, self.total
            )
        } else {
            text
        }
    }
}

// Consul: agent/checks/check.go CheckMonitor.check — exit 0 passing, 1 warning, else
// critical; "Timed out (<timeout>) running check" on timeout.
async fn script_check(args: &[String], timeout: Duration) -> (&'static str, String) {
    let Some((prog, rest)) = args.split_first() else {
        return (CRITICAL, "empty Args".to_string());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (CRITICAL, e.to_string()),
    };
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let mut tail = Tail {
        buf: Vec::new(),
        total: 0,
    };
    let run = async {
        let (mut out_done, mut err_done) = (false, false);
        let (mut b1, mut b2) = ([0u8; 1024], [0u8; 1024]);
        while !(out_done && err_done) {
            tokio::select! {
                r = stdout.read(&mut b1), if !out_done => match r {
                    Ok(0) | Err(_) => out_done = true,
                    Ok(n) => tail.push(&b1[..n]),
                },
                r = stderr.read(&mut b2), if !err_done => match r {
                    Ok(0) | Err(_) => err_done = true,
                    Ok(n) => tail.push(&b2[..n]),
                },
            }
        }
        child.wait().await
    };
    let result = tokio::time::timeout(timeout, run).await;
    match result {
        Err(_) => {
            let _ = child.start_kill();
            (
                CRITICAL,
                format!(
                    "Timed out ({}) running check",
                    crate::duration::format(timeout)
                ),
            )
        }
        Ok(Err(e)) => (CRITICAL, e.to_string()),
        Ok(Ok(status)) => {
            let out = tail.render();
            match status.code() {
                Some(0) => (PASSING, out),
                Some(1) => (WARNING, out),
                _ => (CRITICAL, out),
            }
        }
    }
}

/// The timer task: wakes at the earliest deadline or when a write may have moved one.
pub(crate) async fn run_timers(shared: Arc<Shared>) {
    let reap_every = shared
        .cfg
        .check_reap_interval
        .max(Duration::from_millis(10));
    let mut next_reap = Instant::now() + reap_every;
    loop {
        let now_std = std::time::Instant::now();
        let reap = Instant::now() >= next_reap;
        if reap {
            next_reap = Instant::now() + reap_every;
        }
        let update_interval = shared.cfg.check_update_interval;
        let dereg_min = shared.cfg.check_deregister_interval_min;
        let next = shared.write_quiet(|s| {
            s.expire_sessions(now_std);
            let keys: Vec<_> = s.check_rt.keys().cloned().collect();
            for k in &keys {
                let Some(rt) = s.check_rt.get(k) else {
                    continue;
                };
                if rt.ttl_deadline.is_some_and(|d| d <= now_std) {
                    tracing::debug!(check = %k.1, "TTL check expired");
                    s.expire_ttl(k, now_std, update_interval);
                }
                if s.check_rt
                    .get(k)
                    .and_then(|r| r.flush_at)
                    .is_some_and(|d| d <= now_std)
                {
                    s.flush_deferred_output(k, now_std);
                }
            }
            if reap {
                let mut doomed = Vec::new();
                for (k, rt) in &s.check_rt {
                    let (Some(since), Some(after)) = (rt.critical_since, rt.deregister_after)
                    else {
                        continue;
                    };
                    if now_std.duration_since(since) > after.max(dereg_min)
                        && let Some(c) = s.checks.get(k)
                        && !c.service_id.is_empty()
                    {
                        doomed.push((k.0.clone(), c.service_id.clone()));
                    }
                }
                for (node, svc) in doomed {
                    tracing::debug!(service = %svc, node = %node, "reaping critical service");
                    s.deregister_service(&node, &svc);
                }
            }
            let mut next: Option<std::time::Instant> = None;
            let mut consider = |t: Option<std::time::Instant>| {
                if let Some(t) = t {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            };
            for rt in s.check_rt.values() {
                consider(rt.ttl_deadline);
                consider(rt.flush_at);
            }
            for sess in s.sessions.values() {
                consider(sess.expires_at);
            }
            next
        });
        let wake = match next {
            Some(t) => Instant::from_std(t).min(next_reap),
            None => next_reap,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = shared.timers.notified() => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}
