//! Failover policy: what happens to connections bound to a primary that was just replaced.
//!
//! Discovery publishes a [`Change`]; [`on_change`] applies `on_failover` to the old primary's
//! `leave` token (see [`primary`](crate::primary)):
//! - `close` (default): cancel now — every connection to the old primary closes at once, so no
//!   write reaches a demoted node after the proxy knows better;
//! - `drain`: cancel after `drain_grace`, letting short transactions finish;
//! - `keep`: never cancel (connections end on their own; unsafe for writes).
//!
//! New and held clients need no action here: they read the new primary from the watch value.

use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;
use tracing::info;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::primary::Change;

/// `--on-failover`: what to do with connections to a replaced primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailover {
    /// Close them at once.
    #[default]
    Close,
    /// Close them after `drain_grace`.
    Drain,
    /// Leave them open (unsafe: they may keep writing to a demoted node).
    Keep,
}

/// Applies the failover policy to a published change and logs it.
pub fn on_change(change: Change, config: &Config, metrics: &Metrics) {
    let old = change.old.as_ref().map(ToString::to_string);
    let new = change.new.as_ref().map(ToString::to_string);
    if change.old.is_some() {
        metrics.failovers.inc();
    }
    info!(
        old = old.as_deref().unwrap_or("none"),
        new = new.as_deref().unwrap_or("none"),
        epoch = change.epoch,
        policy = ?config.on_failover,
        "primary changed"
    );
    match config.on_failover {
        OnFailover::Close => change.old_leave.cancel(),
        OnFailover::Drain => schedule_drain(change, config.drain_grace),
        OnFailover::Keep => {}
    }
}

fn schedule_drain(change: Change, grace: Duration) {
    let token = change.old_leave;
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(grace) => token.cancel(),
            // Already cancelled by shutdown: nothing left to drain.
            () = token.cancelled() => {}
        }
    });
}
