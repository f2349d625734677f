//! Supervision: no discovery task ends silently.
//!
//! A source loop that panics or returns while the proxy still runs would leave the last primary
//! published for ever and `/readyz` green — the stale-primary failure the proxy exists to
//! prevent. [`supervise`] runs a task, and when it ends unexpectedly logs the cause at error,
//! counts it in `discovery_restarts_total`, marks discovery as *not watching* (so `/readyz`
//! answers 503 naming the cause), waits a backoff and starts it again. [`spawn_logged`] is the
//! same for short one-off tasks (the failover timeline): a panic is logged and counted, never
//! lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info};

use super::sources::backoff::Backoff;
use crate::ops::metrics::Metrics;
use crate::ops::status::DiscoveryStatus;

/// First and longest pause before a restart.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));

/// Runs `start()` until `stop` is cancelled, restarting it whenever it ends on its own. The task
/// returns `Err(cause)` when it cannot go on (e.g. its source ended), `Ok(())` only when stopped.
pub async fn supervise<F, Fut>(
    name: &'static str,
    metrics: Arc<Metrics>,
    status: Arc<DiscoveryStatus>,
    stop: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut backoff = Backoff::new(RESTART_BACKOFF.0, RESTART_BACKOFF.1);
    loop {
        // The task logs inside the caller's span (a route's name).
        let mut task = tokio::spawn(start().in_current_span());
        let ended = tokio::select! {
            ended = &mut task => ended,
            () = stop.cancelled() => {
                // Give the task its own chance to see `stop` and finish cleanly.
                if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                    task.abort();
                }
                return;
            }
        };
        if stop.is_cancelled() {
            return;
        }
        let cause = describe_end(ended);
        let retry_in = backoff.next_delay();
        error!(side = "discovery", task = name, %cause, retry_in_ms = retry_in.as_millis() as u64, "discovery task ended unexpectedly; restarting");
        metrics.discovery_restarts.inc();
        status.not_watching(&format!("{name} {cause}; restarting"));
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = stop.cancelled() => return,
        }
        info!(task = name, "discovery task restarted");
    }
}

/// Spawns a one-off task whose panic is logged at error and counted instead of vanishing.
pub fn spawn_logged<Fut>(name: &'static str, metrics: Arc<Metrics>, task: Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(task.in_current_span());
    tokio::spawn(async move {
        if let Err(e) = handle.await
            && e.is_panic()
        {
            let cause = describe_end(Err(e));
            error!(task = name, %cause, "background task failed");
            metrics.discovery_restarts.inc();
        }
    });
}

/// `panicked: <message>`, the task's own cause, or `returned` (a loop that should run for ever
/// stopped).
pub fn describe_end(ended: Result<Result<(), String>, JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "returned".to_owned(),
        Ok(Err(cause)) => cause,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".to_owned());
            format!("panicked: {message}")
        }
        Err(e) => format!("was cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panicking_task_is_restarted_counted_and_reported() {
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(DiscoveryStatus::default());
        let stop = CancellationToken::new();
        let starts = Arc::new(AtomicUsize::new(0));
        let (running_tx, mut running_rx) = tokio::sync::mpsc::channel(4);
        let supervisor = tokio::spawn(supervise(
            "test source",
            metrics.clone(),
            status.clone(),
            stop.clone(),
            {
                let starts = starts.clone();
                move || {
                    let n = starts.fetch_add(1, Ordering::SeqCst);
                    let running = running_tx.clone();
                    async move {
                        if n == 0 {
                            panic!("boom at byte 3");
                        }
                        let _ = running.send(n).await;
                        std::future::pending::<Result<(), String>>().await
                    }
                }
            },
        ));
        assert_eq!(
            running_rx.recv().await,
            Some(1),
            "restarted after the panic"
        );
        assert_eq!(metrics.discovery_restarts.get(), 1);
        let reported = status.to_json();
        assert!(
            reported["not_watching"]
                .as_str()
                .is_some_and(|s| s.contains("panicked: boom at byte 3")),
            "{reported}"
        );
        stop.cancel();
        supervisor.await.unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panicking_one_off_task_is_counted() {
        let metrics = Arc::new(Metrics::new());
        spawn_logged("timeline", metrics.clone(), async {
            panic!("timeline bug")
        });
        for _ in 0..100 {
            if metrics.discovery_restarts.get() == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the panic was not counted");
    }
}
