//! Liveness: with `verify_writable` on (a monitor user), one idle MySQL session to the
//! primary a route steers to, so the fast path learns the moment the primary's process is
//! gone — before the applications' reconnects reach it.
//!
//! ```text
//!  steer: route → A ──watch(A)──▶ task: log in as monitor_user ─▶ DO SLEEP(5), again, again…
//!                                 the session breaks (EOF, reset) ─▶ mark A refusing (kernel map)
//!  next connect() to the route ─▶ not rewritten ─▶ the proxy's listener: held while A refuses,
//!                                 relayed once a primary accepts
//!  the session logs in again, a relayed connect reaches A, or discovery names another ─▶ unmark A
//! ```
//!
//! Why: a redirected connect goes straight to the server. When the primary's process dies,
//! the kernel closes every one of its sockets at once — the applications' and this session's.
//! The applications see their connections end and reconnect; this task marks the server in
//! the same instant, so the reconnects are detoured to the proxy, which holds them and relays
//! them to whatever primary accepts, as it does for any refused backend. Without it, the
//! first reconnect reaches the dead server and is refused (the watch program then marks it,
//! so only that one application gets the error).
//!
//! - A session as the monitor user, never a bare TCP connect: MariaDB and MySQL count
//!   connections that end before login against `max_connect_errors` and then block the
//!   proxy's host.
//! - `DO SLEEP(5)` in a loop rather than one long sleep: a server does not notice a client
//!   gone during `SLEEP`, so when the route moves on, the old server's thread is left at most
//!   5 s. The statement is tagged so an operator can tell it in the process list.
//! - Only a broken session marks the server, and the task logs in again at once: a session
//!   an operator kills (`KILL`) ends exactly like a dead server's, so it is marked for the
//!   few milliseconds that login takes. A statement error (`max_statement_time`) means the
//!   server is alive: nothing is marked. A login that fails (wrong password, too many
//!   connections) marks nothing either: the watch program catches a refused connect on its
//!   own. (`KILL QUERY` just ends the `SLEEP` early; the loop goes on.)
//! - What it does not catch: a server that hangs (the session waits like everything else:
//!   discovery and fencing handle that), or a host that vanishes without closing its sockets
//!   (no FIN reaches anyone; the applications' own timeouts and discovery handle that).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::shared::Shared;
use crate::config::FenceConfig;
use crate::control::fence::monitor_opts;
use crate::control::supervisor::supervise_with;
use crate::ops::metrics::Metrics;

/// The statement the session repeats; its comment names it in `SHOW PROCESSLIST`.
pub(crate) const STATEMENT: &str = "DO SLEEP(5) /* consul-mysql-proxy: fast path liveness */";
/// How long a login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before logging in again after a failed login or a killed session (doubles to 30 s).
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How one session ended.
enum Ended {
    /// The connection itself broke: the server's process (or its host's network) is gone.
    Broken(String),
    /// The login failed: the server may be there (a wrong password, too many connections).
    Refused(String),
    /// The server ended an open session with an error (`KILL`, `max_statement_time`): it is
    /// there; log in again soon.
    Interrupted(String),
    /// `stop` was cancelled.
    Stopped,
}

/// Watches `target`, which the route listening on `listen` steers to, until `stop` is
/// cancelled (the route moved on or stops). Supervised: a task that panics is restarted
/// after the usual backoff, and `/status` says so meanwhile.
pub(crate) fn watch(
    listen: SocketAddr,
    target: SocketAddr,
    fence: FenceConfig,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let watcher = Watcher {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        listen,
        target,
        fence,
        shared,
        metrics: metrics.clone(),
        // Whether this watcher's mark is in the kernel map. Kept across restarts, so the
        // first login after a panic still clears what the run before it marked.
        marked: Arc::new(AtomicBool::new(false)),
    };
    let on_end = {
        let watcher = watcher.clone();
        move |cause: &str| watcher.note(Some(format!("the liveness task {cause}; restarting")))
    };
    let task = supervise_with(
        "fast path liveness",
        metrics,
        on_end,
        stop.clone(),
        move || run(watcher.clone(), stop.clone()),
    );
    tokio::spawn(task.in_current_span());
}

/// What one run of the watcher needs; cloned for each (re)start.
#[derive(Clone)]
struct Watcher {
    /// Tells this watcher's `/status` entry from that of one started later for the same
    /// route and server.
    id: u64,
    listen: SocketAddr,
    target: SocketAddr,
    fence: FenceConfig,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    marked: Arc<AtomicBool>,
}

impl Watcher {
    fn note(&self, state: Option<String>) {
        self.shared
            .liveness
            .note((self.listen, self.target), self.id, state);
    }
}

/// Returns once `stop` is cancelled (`Ok`: the supervisor then ends too).
async fn run(w: Watcher, stop: CancellationToken) -> Result<(), String> {
    let target = w.target;
    let mut retry = RETRY_FIRST;
    loop {
        match session(&w, &stop).await {
            Ended::Stopped => {
                w.note(None);
                return Ok(());
            }
            Ended::Broken(why) => {
                w.metrics.fast_path_liveness_breaks.inc();
                w.note(Some(format!(
                    "broke ({why}); connects are held and relayed"
                )));
                match w.shared.fast_path.mark_refusing(target) {
                    Ok(()) => {
                        w.marked.store(true, Ordering::Release);
                        warn!(%target, cause = %why, "fast path: the liveness session to the primary broke; connects to it are relayed (held while it refuses) until it accepts again or discovery names another primary");
                    }
                    Err(e) => {
                        warn!(%target, cause = %why, error = %e, "fast path: the liveness session to the primary broke, and marking it failed")
                    }
                }
                // Log in again at once: a session an operator killed (`KILL`) ends exactly like
                // a dead server's, and a login that succeeds clears the mark within a few
                // milliseconds; a dead server refuses it, and the waits grow from there.
                retry = Duration::ZERO;
            }
            Ended::Interrupted(why) => {
                debug!(%target, cause = %why, "fast path liveness: the server ended the session; logging in again");
                retry = RETRY_FIRST;
            }
            Ended::Refused(why) => {
                if !w.marked.load(Ordering::Acquire) {
                    w.note(Some(format!("no session: {why}; retrying")));
                }
                debug!(%target, cause = %why, retry_in_ms = retry.as_millis() as u64, "fast path liveness: no session");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = stop.cancelled() => {
                w.note(None);
                return Ok(());
            }
        }
        retry = if retry.is_zero() {
            RETRY_FIRST
        } else {
            (retry * 2).min(RETRY_MAX)
        };
    }
}

/// One session: log in, then repeat the statement until the session ends.
async fn session(w: &Watcher, stop: &CancellationToken) -> Ended {
    let (target, fence) = (w.target, &w.fence);
    let opts = monitor_opts(target, fence);
    let login = tokio::select! {
        login = tokio::time::timeout(LOGIN_TIMEOUT, Conn::new(opts)) => login,
        () = stop.cancelled() => return Ended::Stopped,
    };
    let mut conn = match login {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Ended::Refused(format!("cannot log in as {}: {e}", fence.user)),
        Err(_) => return Ended::Refused(format!("no login within {LOGIN_TIMEOUT:?}")),
    };
    w.note(Some(format!("session open as {}", fence.user)));
    debug!(%target, user = %fence.user, "fast path liveness: watching the primary over a monitor session");
    if w.marked.swap(false, Ordering::AcqRel) {
        // It accepts a login again: connects to it may be redirected again.
        match w.shared.fast_path.clear_refusal(target) {
            Ok(_) => {
                info!(%target, "fast path: the liveness session to the primary is back; connects are redirected to it again")
            }
            Err(e) => warn!(%target, error = %e, "fast path: cannot clear the mark"),
        }
    }
    loop {
        let result = tokio::select! {
            result = conn.query_drop(STATEMENT) => result,
            // Dropping the session closes it; the server ends its SLEEP within 5 s.
            () = stop.cancelled() => return Ended::Stopped,
        };
        match result {
            Ok(()) => {}
            Err(e @ (mysql_async::Error::Io(_) | mysql_async::Error::Driver(_))) => {
                return Ended::Broken(e.to_string());
            }
            Err(e) => return Ended::Interrupted(e.to_string()),
        }
    }
}
