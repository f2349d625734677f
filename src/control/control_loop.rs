//! The control loop: turns what the source observes into the published
//! [`Primary`](super::primary::Primary).
//!
//! ```text
//!   source ──Observation──▶ apply ──▶ selection ──desired──▶ reconcile ──▶ publish ──▶ failover
//!                                                              │   ▲
//!                                    verify_writable: ─spawn───┘   └── verdict (own task)
//! ```
//! It receives [`Observation`]s, runs the shared [`selection`](super::selection) step against the
//! current primary, and publishes the result, handing every change to the
//! [`failover`](super::failover) policy. With `verify_writable`, the desired primary is checked by
//! a [`fence`](super::fence) task of its own — the loop keeps receiving observations while a check
//! runs (a hung server must not stall discovery) — and is published only once writable. An
//! [`Observation::Unavailable`] keeps the last primary (Consul down is not the database down),
//! unless `consul_stale_after` is set and that long has passed without a usable answer.
//!
//! With `role = replica` there is no selection: each usable observation goes to the
//! [`replicas`](super::replicas) branch, which publishes a pool of every healthy instance.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::failover;
use super::fence::{self, Writability};
use super::pool::PoolPublisher;
use super::primary::{Backend, PrimaryPublisher};
use super::replicas::Replicas;
use super::selection::{Selection, select};
use super::sources::shared::SharedSources;
use super::sources::{Excluded, Exclusion, Observation};
use super::supervisor::describe_end;
use crate::config::{Config, Role};
use crate::ops::history::FailoverHistory;
use crate::ops::metrics::Metrics;
use crate::ops::status::DiscoveryStatus;

/// Longest a fencing check may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// What a control loop works with besides its configuration: kept by its route, so a reload
/// can start a new loop with the same primary, metrics and history.
#[derive(Clone)]
pub struct Wiring {
    pub publisher: Arc<PrimaryPublisher>,
    /// `role = replica`: where the pool is published.
    pub pool: Arc<PoolPublisher>,
    pub metrics: Arc<Metrics>,
    /// Poked by connections after a failed connect: look again now.
    pub refresh: Arc<Notify>,
    pub status: Arc<DiscoveryStatus>,
    pub history: Arc<FailoverHistory>,
    /// The process's watches: routes asking the same question share one source.
    pub sources: Arc<SharedSources>,
}

/// Runs the configured source and publishes what it finds until `stop` is cancelled
/// (`Ok`). If the source task ends on its own (a panic, or a loop that returned), returns
/// `Err` with the cause, for the [`supervisor`](super::supervisor) to log and restart.
pub async fn run(
    config: Arc<Config>,
    wiring: Wiring,
    stop: CancellationToken,
) -> Result<(), String> {
    let Wiring {
        publisher,
        pool,
        metrics,
        refresh,
        status,
        history,
        sources,
    } = wiring;
    let (tx, mut rx) = mpsc::channel(16);
    let source = sources.subscribe(&config, tx, refresh, metrics.clone(), stop.child_token());
    let describe = source.describe.clone();
    info!(source = %describe, verify_writable = config.fence.is_some(), "discovery started");
    status.set_source(&describe);
    let verify_every = config
        .fence
        .as_ref()
        .map_or(Duration::from_secs(3600), |f| f.interval);
    let mut verify_tick = tokio::time::interval(verify_every);
    verify_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = State {
        config: &config,
        publisher: &publisher,
        metrics: &metrics,
        status: &status,
        tracker: failover::Tracker::new(history),
        desired: None,
        desired_reason: String::new(),
        last_reason: String::new(),
        last_success: Instant::now(),
        unavailable_since: None,
        last_error: String::new(),
        withdrawn: None,
        replicas: (config.role == Role::Replica)
            .then(|| Replicas::new(&pool, &status, config.failover)),
    };
    state.role_changed(&pool);
    let mut verification = Verification::default();
    let mut source_task = source.task;
    let ended = loop {
        let stale_deadline = source.stale_after.map(|after| state.last_success + after);
        tokio::select! {
            observation = rx.recv() => match observation {
                Some(observation) => {
                    if let Some(wanted) = state.apply(observation, &describe) {
                        verification.start(wanted, &config);
                    }
                }
                // Every sender is gone: the source task ended. Say how.
                None => break Err(format!("source ({describe}) {}", describe_end((&mut source_task).await.map(Ok)))),
            },
            () = sleep_until_opt(stale_deadline), if state.primary_known() => {
                state.give_up_stale(source.stale_after.unwrap_or_default());
            }
            () = sleep_until_opt(state.withdrawal_deadline()), if state.withdrawal_deadline().is_some() => {
                state.withdrawal_expired();
            }
            _ = verify_tick.tick(), if config.fence.is_some() && state.desired.is_some() => {
                if let Some(wanted) = state.reconcile() {
                    verification.start(wanted, &config);
                }
            }
            (checked, verdict) = verification.finished(), if verification.running() => {
                state.on_verdict(&checked, verdict);
            }
            () = stop.cancelled() => break Ok(()),
        }
    };
    verification.cancel();
    source_task.abort();
    ended
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The one fencing check in flight, if any: its backend and task.
#[derive(Default)]
struct Verification {
    running: Option<(Backend, JoinHandle<Writability>)>,
}

impl Verification {
    fn running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts checking `backend`, unless it is being checked already. A check of another
    /// backend is abandoned: its answer would be about a server nobody wants any more.
    fn start(&mut self, backend: Backend, config: &Config) {
        let Some(fence_config) = config.fence.clone() else {
            return;
        };
        if let Some((checking, _)) = &self.running
            && *checking == backend
        {
            return;
        }
        self.cancel();
        let target = backend.clone();
        let task = tokio::spawn(
            async move { fence::check(&target, &fence_config, VERIFY_TIMEOUT).await }
                .in_current_span(),
        );
        self.running = Some((backend, task));
    }

    /// Waits for the running check; pending forever when there is none.
    async fn finished(&mut self) -> (Backend, Writability) {
        let Some((_, task)) = &mut self.running else {
            return std::future::pending().await;
        };
        let verdict = match task.await {
            Ok(verdict) => verdict,
            Err(e) => Writability::Unknown(format!("the writable check failed: {e}")),
        };
        match self.running.take() {
            Some((backend, _)) => (backend, verdict),
            None => std::future::pending().await,
        }
    }

    fn cancel(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

/// The loop's memory between observations.
struct State<'a> {
    config: &'a Config,
    publisher: &'a PrimaryPublisher,
    metrics: &'a Arc<Metrics>,
    status: &'a DiscoveryStatus,
    tracker: failover::Tracker,
    /// The primary the source and selection want, before fencing.
    desired: Option<Backend>,
    desired_reason: String,
    /// Last published reason logged, so an unchanged situation is not logged on every poll.
    last_reason: String,
    last_success: Instant,
    unavailable_since: Option<Instant>,
    /// Last discovery error logged at warn.
    last_error: String,
    /// The current primary, withdrawn by Consul without a replacement and still routed to.
    withdrawn: Option<Withdrawn>,
    /// `role = replica`: the pool branch, which takes every usable observation.
    replicas: Option<Replicas<'a>>,
}

/// A primary Consul withdrew (lost sight of) that the proxy keeps routing to.
struct Withdrawn {
    backend: Backend,
    why: String,
    /// Without `verify_writable`: when `withdrawn_grace` runs out.
    deadline: Option<Instant>,
}

/// Whether Consul only lost sight of `primary` (deregistered, or a critical check) — as opposed
/// to an operator's maintenance, which is meant. `None` means "meant": drop it.
fn lost_sight_of(primary: &Backend, excluded: &[Excluded]) -> Option<String> {
    match excluded.iter().find(|e| e.addr == primary.addr) {
        Some(Excluded {
            why: Exclusion::Maintenance(_),
            ..
        }) => None,
        Some(Excluded {
            why: Exclusion::Critical(why) | Exclusion::Lagging(why),
            ..
        }) => Some(why.clone()),
        None => Some("deregistered: its agent left, restarted or lost its state".to_owned()),
    }
}

impl State<'_> {
    /// Whether the route has somewhere to send clients: a primary, or a pool member.
    fn primary_known(&self) -> bool {
        match &self.replicas {
            Some(replicas) => replicas.known(),
            None => self.primary_known_as_primary(),
        }
    }

    /// A reload changed the role: what the other role published is withdrawn.
    fn role_changed(&mut self, pool: &PoolPublisher) {
        if self.replicas.is_some() {
            if self.primary_known_as_primary() {
                self.publish(None, "role = replica: this route serves a pool".to_owned());
            }
        } else if !pool.current().members.is_empty() {
            let status = self.status;
            Replicas::new(pool, status, self.config.failover).empty("role = primary".to_owned());
            status.set_pool(None);
        }
    }

    fn primary_known_as_primary(&self) -> bool {
        self.publisher.current().backend.is_some()
    }

    /// Applies one observation; returns a backend to verify before publishing it.
    fn apply(&mut self, observation: Observation, describe: &str) -> Option<Backend> {
        if let Some(replicas) = &mut self.replicas
            && !matches!(observation, Observation::Unavailable(_))
        {
            replicas.observe(observation, describe);
            self.answered(describe);
            return None;
        }
        let selection = match observation {
            Observation::Candidates(candidates) => {
                let current = self.publisher.current().backend;
                let selection = select(
                    current.as_ref(),
                    &candidates,
                    self.config.on_multiple,
                    describe,
                );
                self.status.observed(&candidates, &[], &selection);
                selection
            }
            Observation::Instances {
                candidates,
                excluded,
            } => {
                let current = self.publisher.current().backend;
                let selection = select(
                    current.as_ref(),
                    &candidates,
                    self.config.on_multiple,
                    describe,
                );
                self.status.observed(&candidates, &excluded, &selection);
                let lost_sight = match (&selection.backend, &current) {
                    // `withdrawn_grace = 0s` turns this off: a withdrawn primary is dropped.
                    (None, Some(primary))
                        if candidates.is_empty() && !self.config.withdrawn_grace.is_zero() =>
                    {
                        lost_sight_of(primary, &excluded)
                    }
                    _ => None,
                };
                if let Some(why) = lost_sight
                    && let Some(primary) = current
                {
                    self.answered(describe);
                    return self.keep_withdrawn(primary, why, describe);
                }
                selection
            }
            Observation::NoPrimary(reason) => {
                let selection = Selection {
                    backend: None,
                    reason: format!("{describe}: {reason}"),
                };
                self.status.observed(&[], &[], &selection);
                selection
            }
            Observation::Unavailable(error) => {
                self.unavailable(error);
                return None;
            }
        };
        self.answered(describe);
        self.end_withdrawal(&selection.backend);
        self.desired = selection.backend;
        self.desired_reason = selection.reason;
        self.reconcile()
    }

    /// A usable answer arrived.
    fn answered(&mut self, describe: &str) {
        self.status.success();
        self.last_error.clear();
        if let Some(since) = self.unavailable_since.take() {
            info!(source = %describe, after_s = since.elapsed().as_secs_f64(), "discovery recovered");
        }
        self.last_success = Instant::now();
    }

    /// Consul withdrew `primary` with no replacement, but only lost sight of it: keep routing to
    /// it (for `withdrawn_grace`, or while fencing verifies it), and say so once.
    fn keep_withdrawn(&mut self, primary: Backend, why: String, describe: &str) -> Option<Backend> {
        let verified = self.config.fence.is_some();
        let started = !matches!(&self.withdrawn, Some(w) if w.backend == primary);
        if started {
            let deadline = (!verified).then(|| Instant::now() + self.config.withdrawn_grace);
            let keeping = if verified {
                "while verify_writable finds it writable".to_owned()
            } else {
                format!(
                    "for withdrawn_grace ({})",
                    humantime::format_duration(self.config.withdrawn_grace)
                )
            };
            warn!(side = "discovery", primary = %primary, %why, "primary withdrawn by Consul ({why}); still routing to it {keeping}: Consul says who should be primary, the proxy checks that it still can be");
            self.withdrawn = Some(Withdrawn {
                backend: primary.clone(),
                why: why.clone(),
                deadline,
            });
            self.metrics.primary_withdrawn.set(1);
            self.status.set_withdrawn(Some(&why));
        }
        self.desired = Some(primary);
        self.desired_reason =
            format!("{describe}: primary withdrawn by Consul ({why}); still routing to it");
        self.reconcile()
    }

    /// Any answer that is not "the same primary, still withdrawn" ends a withdrawal.
    fn end_withdrawal(&mut self, now_wanted: &Option<Backend>) {
        let Some(w) = self.withdrawn.take() else {
            return;
        };
        if now_wanted.as_ref() == Some(&w.backend) {
            info!(primary = %w.backend, "withdrawn primary is a candidate again");
        }
        self.metrics.primary_withdrawn.set(0);
        self.status.set_withdrawn(None);
    }

    /// The grace of a withdrawn primary ran out without a replacement or its return.
    fn withdrawal_expired(&mut self) {
        let Some(w) = self.withdrawn.take() else {
            return;
        };
        self.metrics.primary_withdrawn.set(0);
        self.status.set_withdrawn(None);
        self.desired = None;
        let reason = format!(
            "primary {} withdrawn by Consul ({}) and neither back nor replaced within withdrawn_grace ({})",
            w.backend,
            w.why,
            humantime::format_duration(self.config.withdrawn_grace)
        );
        self.publish(None, reason);
    }

    fn withdrawal_deadline(&self) -> Option<Instant> {
        self.withdrawn.as_ref().and_then(|w| w.deadline)
    }

    fn unavailable(&mut self, error: String) {
        self.status.error(&error);
        let since = *self.unavailable_since.get_or_insert_with(Instant::now);
        let current = self.publisher.current().backend;
        let keeping = current.as_ref().map(ToString::to_string);
        let keeping = keeping.as_deref().unwrap_or("none");
        let unavailable_for_s = since.elapsed().as_secs();
        // The same error on every retry is logged once (then at debug) until it changes.
        if error != self.last_error {
            warn!(side = "discovery", %error, unavailable_for_s, keeping, "discovery unavailable; keeping the last known primary");
            self.last_error = error;
        } else {
            debug!(side = "discovery", %error, unavailable_for_s, keeping, "discovery still unavailable");
        }
        self.last_reason.clear();
    }

    /// Publishes the desired primary now, or — with `verify_writable` — returns it to be
    /// verified first (the current value stays published meanwhile).
    fn reconcile(&mut self) -> Option<Backend> {
        match (&self.config.fence, &self.desired) {
            (Some(_), Some(wanted)) => Some(wanted.clone()),
            _ => {
                self.publish(self.desired.clone(), self.desired_reason.clone());
                None
            }
        }
    }

    /// A fencing check of `checked` finished.
    fn on_verdict(&mut self, checked: &Backend, verdict: Writability) {
        if self.desired.as_ref() != Some(checked) {
            return; // nobody wants that server any more
        }
        if self.withdrawn.is_some() && verdict != Writability::Writable {
            // Consul withdrew it and the proxy cannot confirm it either: let it go.
            let w = self.withdrawn.take();
            self.metrics.primary_withdrawn.set(0);
            self.status.set_withdrawn(None);
            self.desired = None;
            let why = w.map(|w| w.why).unwrap_or_default();
            let verdict = match verdict {
                Writability::ReadOnly(v) => format!("read-only: {v}"),
                Writability::Unknown(e) => format!("cannot verify that it is writable: {e}"),
                Writability::Writable => String::new(),
            };
            self.publish(
                None,
                format!("{checked} withdrawn by Consul ({why}) and {verdict}"),
            );
            return;
        }
        let (backend, reason) = match verdict {
            Writability::Writable => (Some(checked.clone()), self.desired_reason.clone()),
            Writability::ReadOnly(why) => (
                None,
                format!(
                    "{checked} is read-only ({why}): refused as primary (verify_writable); {}",
                    self.desired_reason
                ),
            ),
            Writability::Unknown(error) => {
                if self.publisher.current().backend.as_ref() == Some(checked) {
                    // Already verified; a failed re-check alone does not drop it.
                    (Some(checked.clone()), self.desired_reason.clone())
                } else {
                    (
                        None,
                        format!("cannot verify that {checked} is writable: {error}"),
                    )
                }
            }
        };
        self.publish(backend, reason);
    }

    fn publish(&mut self, backend: Option<Backend>, reason: String) {
        if reason != self.last_reason {
            if backend.is_none() {
                warn!(side = "discovery", %reason, "no primary");
            } else {
                info!(%reason, "discovery answer");
            }
            self.last_reason = reason.clone();
        }
        if let Some(change) = self.publisher.publish(backend, &reason) {
            self.tracker
                .on_change(change, &self.config.failover, self.metrics);
        }
    }

    fn give_up_stale(&mut self, after: Duration) {
        let reason = format!(
            "no usable answer from discovery for {} (consul_stale_after)",
            humantime::format_duration(after)
        );
        if let Some(replicas) = &mut self.replicas {
            replicas.empty(reason);
            return;
        }
        self.end_withdrawal(&None);
        self.desired = None;
        self.publish(None, reason);
    }
}
