//! Shared watches: one source task per distinct question, however many routes ask it.
//!
//! ```text
//!   route A control loop ─subscribe─┐                       ┌─▶ forwarder A ──▶ A's channel
//!                                   ├─▶ Watch (key = discovery + service)
//!   route B control loop ─subscribe─┘   source task ─▶ pump ─▶ watch<last Observation>
//!                                                            └─▶ forwarder B ──▶ B's channel
//! ```
//! Two routes asking Consul (or DNS, or a static backend) the same question — equal discovery
//! settings and service — share one source: one blocking query per distinct question, not per
//! route. Every [`Observation`] is a whole view of the answer, so each subscriber is handed the
//! latest one (a subscriber that joins late gets the current view at once). A subscriber's
//! failed connect pokes the shared source's refresh. The source counts its requests in the
//! metrics of the route that started it. When the last subscriber leaves, the source stops; when
//! the source ends on its own (a panic), every subscriber's channel closes, so each control loop
//! ends and its supervisor restarts it, and the first to come back starts a new source.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Observation, ObservationSender, RunningSource, start};
use crate::config::{Config, Discovery};
use crate::ops::metrics::Metrics;

/// The running watches of the process.
#[derive(Default)]
pub struct SharedSources {
    watches: Mutex<Vec<Watch>>,
}

/// One running source and what its subscribers need.
struct Watch {
    discovery: Discovery,
    service: String,
    describe: String,
    stale_after: Option<std::time::Duration>,
    latest: Arc<watch::Sender<Option<Observation>>>,
    refresh: Arc<Notify>,
    /// Cancelled to stop the source (last subscriber gone).
    stop: CancellationToken,
    /// Cancelled when the source task has ended, for whatever reason.
    ended: CancellationToken,
}

impl SharedSources {
    /// Subscribes to the source `config` asks for, starting it if nobody runs it yet. The
    /// observations arrive on `tx` until `stop` is cancelled or the source ends; the returned
    /// task is this subscription (aborting it unsubscribes).
    pub fn subscribe(
        self: &Arc<Self>,
        config: &Config,
        tx: ObservationSender,
        refresh: Arc<Notify>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> RunningSource {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|w| !w.ended.is_cancelled());
        let existing = watches
            .iter()
            .position(|w| w.discovery == config.discovery && w.service == config.service);
        let index = match existing {
            Some(index) => index,
            None => {
                watches.push(start_watch(config, metrics));
                watches.len() - 1
            }
        };
        let watch = &watches[index];
        let mut latest = watch.latest.subscribe();
        if latest.borrow().is_some() {
            latest.mark_changed();
        }
        let forwarder = Forwarder {
            latest,
            tx,
            refresh,
            source_refresh: watch.refresh.clone(),
            ended: watch.ended.clone(),
            stop,
        };
        let hub = self.clone();
        let key = (watch.discovery.clone(), watch.service.clone());
        let task = tokio::spawn(
            async move {
                forwarder.run().await;
                hub.leave(&key.0, &key.1);
            }
            .in_current_span(),
        );
        RunningSource {
            describe: watch.describe.clone(),
            stale_after: watch.stale_after,
            task,
        }
    }

    /// A subscriber left: stop the watch when it was the last.
    fn leave(&self, discovery: &Discovery, service: &str) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|w| {
            let unused =
                w.discovery == *discovery && w.service == service && w.latest.receiver_count() == 0;
            if unused {
                w.stop.cancel();
            }
            !unused
        });
    }

    /// How many sources run (for tests and `/status`).
    pub fn running(&self) -> usize {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.iter().filter(|w| !w.ended.is_cancelled()).count()
    }
}

/// Starts the source for `config` and the pump that keeps its latest observation.
fn start_watch(config: &Config, metrics: Arc<Metrics>) -> Watch {
    let (source_tx, mut source_rx) = mpsc::channel(16);
    let refresh = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let source = start(config, source_tx, refresh.clone(), metrics, stop.clone());
    let latest = Arc::new(watch::Sender::new(None));
    let ended = CancellationToken::new();
    let (pump_latest, pump_ended) = (latest.clone(), ended.clone());
    let task = source.task;
    tokio::spawn(
        async move {
            while let Some(observation) = source_rx.recv().await {
                pump_latest.send_replace(Some(observation));
            }
            // Every sender is gone: the source task ended (stopped, panicked or returned).
            let _ = task.await;
            pump_ended.cancel();
        }
        .in_current_span(),
    );
    Watch {
        discovery: config.discovery.clone(),
        service: config.service.clone(),
        describe: source.describe,
        stale_after: source.stale_after,
        latest,
        refresh,
        stop,
        ended,
    }
}

/// Hands one subscriber the latest observations and its refresh pokes to the source.
struct Forwarder {
    latest: watch::Receiver<Option<Observation>>,
    tx: ObservationSender,
    refresh: Arc<Notify>,
    source_refresh: Arc<Notify>,
    ended: CancellationToken,
    stop: CancellationToken,
}

impl Forwarder {
    async fn run(mut self) {
        loop {
            tokio::select! {
                changed = self.latest.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let observation = self.latest.borrow_and_update().clone();
                    if let Some(observation) = observation
                        && self.tx.send(observation).await.is_err()
                    {
                        return; // the control loop is gone
                    }
                }
                () = self.refresh.notified() => self.source_refresh.notify_one(),
                () = self.ended.cancelled() => return,
                () = self.stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::control::selection::Candidate;

    fn static_config(backend: &str, service: &str) -> Config {
        Config::resolve(Settings {
            backend: Some(backend.parse().unwrap()),
            service: Some(service.into()),
            ..Settings::default()
        })
        .unwrap()
    }

    async fn first(rx: &mut mpsc::Receiver<Observation>) -> Vec<Candidate> {
        match rx.recv().await {
            Some(Observation::Candidates(c)) => c,
            other => panic!("expected candidates, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_source_per_question_and_it_stops_with_its_last_subscriber() {
        let hub = Arc::new(SharedSources::default());
        let metrics = Arc::new(Metrics::new());
        let same = static_config("127.0.0.1:3307", "mysql");
        let other = static_config("127.0.0.1:3308", "mysql");
        let subscribe = |config: &Config| {
            let (tx, rx) = mpsc::channel(4);
            let stop = CancellationToken::new();
            let running = hub.subscribe(
                config,
                tx,
                Arc::new(Notify::new()),
                metrics.clone(),
                stop.clone(),
            );
            (running, rx, stop)
        };
        let (a, mut rx_a, stop_a) = subscribe(&same);
        let (b, mut rx_b, stop_b) = subscribe(&same);
        assert_eq!(hub.running(), 1, "the same question is asked once");
        // A late subscriber gets the current view at once, as the first one did.
        assert_eq!(first(&mut rx_a).await, first(&mut rx_b).await);
        let (c, _rx_c, stop_c) = subscribe(&other);
        assert_eq!(hub.running(), 2, "a different question has its own source");

        stop_a.cancel();
        let _ = a.task.await;
        assert_eq!(hub.running(), 2, "b still subscribes");
        stop_b.cancel();
        let _ = b.task.await;
        assert_eq!(hub.running(), 1, "the last subscriber stopped the source");
        stop_c.cancel();
        let _ = c.task.await;
        assert_eq!(hub.running(), 0);
    }
}
