//! Blocking queries: the query options every read endpoint shares (`dc`, `stale` /
//! `consistent`, `index`, `wait`) and the wait loop.
//!
//! As in Consul's `blockingquery.Query`: with `index=0` (or none) the result comes back at
//! once. Otherwise the request re-evaluates its result on every store change and returns as
//! soon as the result's own index is greater than `index`, or when `wait` (Go duration,
//! default 5 m, at most 10 m) plus a random jitter of up to wait/16 has passed, with whatever
//! the result then is. A snapshot restore releases every blocked query at once. Changes are
//! signalled through a `watch` channel, never polled.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Shared;
use crate::store::Store;

pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// Parsed query options of a read.
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub min_index: u64,
    pub wait: Duration,
    /// `leader`, `stale` or `consistent` (for `X-Consul-Effective-Consistency`).
    pub consistency: &'static str,
    /// The datacenter asked for (`dc`), or None for the agent's.
    pub dc: Option<String>,
}

/// A parse failure: status and body, as Consul words them.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest(pub u16, pub String);

/// Parses the shared options the way `HTTPHandlers.parse` does.
pub fn parse_options(q: &crate::http::Query) -> Result<QueryOptions, BadRequest> {
    let stale = q.has("stale");
    let consistent = q.has("consistent");
    if stale && consistent {
        return Err(BadRequest(
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.".to_string(),
        ));
    }
    let mut wait = Duration::ZERO;
    if let Some(w) = q.get("wait").filter(|w| !w.is_empty()) {
        wait = crate::duration::parse(w)
            .ok_or_else(|| BadRequest(400, "Invalid wait time".to_string()))?;
    }
    let mut min_index = 0;
    if let Some(i) = q.get("index").filter(|i| !i.is_empty()) {
        min_index = i
            .parse()
            .map_err(|_| BadRequest(400, "Invalid index".to_string()))?;
    }
    let consistency = if stale {
        "stale"
    } else if consistent {
        "consistent"
    } else {
        "leader"
    };
    let dc = q.get("dc").filter(|d| !d.is_empty()).map(str::to_string);
    Ok(QueryOptions {
        min_index,
        wait,
        consistency,
        dc,
    })
}

/// Consul's `RPCQueryTimeout` plus jitter: 0 → 5 m, capped at 10 m, plus up to wait/16.
pub fn effective_timeout(wait: Duration) -> Duration {
    let base = if wait.is_zero() {
        DEFAULT_WAIT
    } else {
        wait.min(MAX_WAIT)
    };
    let jitter_max = (base / 16).as_nanos() as u64;
    base + Duration::from_nanos(if jitter_max == 0 {
        0
    } else {
        fastrand::u64(0..jitter_max)
    })
}

/// Runs `query` as a blocking query; returns (index, result).
pub(crate) async fn run<T>(
    shared: &Arc<Shared>,
    opts: &QueryOptions,
    query: impl Fn(&Store) -> (u64, T),
) -> (u64, T) {
    let mut rx = shared.changes.subscribe();
    let (mut idx, mut result, epoch0) = shared.read(|s| {
        let (i, r) = query(s);
        (i, r, s.epoch)
    });
    if opts.min_index == 0 || idx > opts.min_index {
        return (idx, result);
    }
    let deadline = Instant::now() + effective_timeout(opts.wait);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return (idx, result);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return (idx, result),
            _ = shared.shutdown.cancelled() => return (idx, result),
        }
        rx.borrow_and_update();
        let epoch;
        (idx, result, epoch) = shared.read(|s| {
            let (i, r) = query(s);
            (i, r, s.epoch)
        });
        if idx > opts.min_index || epoch != epoch0 {
            return (idx, result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_defaults_caps_and_jitters() {
        for _ in 0..100 {
            let t = effective_timeout(Duration::ZERO);
            assert!(t >= DEFAULT_WAIT && t < DEFAULT_WAIT + DEFAULT_WAIT / 16);
            let t = effective_timeout(Duration::from_secs(3600));
            assert!(t >= MAX_WAIT && t < MAX_WAIT + MAX_WAIT / 16);
            let t = effective_timeout(Duration::from_millis(160));
            assert!(t >= Duration::from_millis(160) && t < Duration::from_millis(170));
        }
    }
}
