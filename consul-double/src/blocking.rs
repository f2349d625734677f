//! Blocking queries: the query options every read endpoint shares (`dc`, `stale` /
//! `consistent`, `index`, `wait`) and the wait loop.
//!
//! Consul: agent/consul/rpc.go blockingQuery (and agent/blockingquery/blockingquery.go in
//! newer versions), website/content/api-docs/features/blocking.mdx.
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
    /// `max_stale` (zero when not given).
    pub max_stale: Duration,
    /// `?cached` (Consul's agent cache; for health it selects the streaming backend).
    pub cached: bool,
}

/// A parse failure: status and body, as Consul words them.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest(pub u16, pub String);

/// Parses the shared options the way `HTTPHandlers.parse` does.
pub fn parse_options(q: &crate::http::Query) -> Result<QueryOptions, BadRequest> {
    // Consul: agent/http.go parseInternal runs parseConsistency, then parseWait.
    // parseConsistency: `stale`/`consistent` are presence flags; `max_stale` is a Go
    // duration (400 `Invalid max_stale value "<v>"`) and, when > 0, implies `stale`.
    let mut stale = q.has("stale");
    let consistent = q.has("consistent");
    let mut max_stale = Duration::ZERO;
    if let Some(m) = q.get("max_stale").filter(|m| !m.is_empty()) {
        let ns = crate::duration::parse_go(m)
            .map_err(|_| BadRequest(400, format!("Invalid max_stale value {m:?}")))?;
        max_stale = Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
        stale |= !max_stale.is_zero();
    }
    if stale && consistent {
        return Err(BadRequest(
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.".to_string(),
        ));
    }
    // `?cached` (http_config.use_cache defaults to true) conflicts with `?consistent`.
    let cached = q.has("cached");
    if cached && consistent {
        return Err(BadRequest(
            400,
            "Cannot specify ?cached with ?consistent, conflicting semantics.".to_string(),
        ));
    }
    // Consul: agent/http.go parseWait. `wait` goes through Go's time.ParseDuration; any
    // error is 400 "Invalid wait time". A negative wait is accepted there and later treated
    // like no wait at all (agent/consul/rpc.go RPCQueryTimeout: `<= 0` → default).
    let mut wait = Duration::ZERO;
    if let Some(w) = q.get("wait").filter(|w| !w.is_empty()) {
        let ns = crate::duration::parse_go(w)
            .map_err(|_| BadRequest(400, "Invalid wait time".to_string()))?;
        wait = Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    }
    // Consul: agent/http.go parseWait. `index` goes through Go's strconv.ParseUint(idx, 10,
    // 64): decimal digits only (no sign, no spaces), at most u64::MAX; else "Invalid index".
    let mut min_index = 0;
    if let Some(i) = q.get("index").filter(|i| !i.is_empty()) {
        min_index = i
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| i.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| BadRequest(400, "Invalid index".to_string()))?;
    }
    // Consul: agent/structs/structs.go QueryOptions.ConsistencyLevel.
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
        max_stale,
        cached,
    })
}

/// Consul: agent/consul/rpc.go RPCQueryTimeout — above `max_query_time` (10 m) → 10 m,
/// `<= 0` → `default_query_time` (5 m), then plus `lib.RandomStagger(timeout /
/// structs.JitterFraction)` (JitterFraction = 16).
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
/// Consul: agent/consul/rpc.go blockingQuery — return at once when `MinQueryIndex == 0`,
/// else re-run on every change while the result's index is `<= MinQueryIndex`, until the
/// timeout; a snapshot restore (`state.AbandonCh()`) returns at once.
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
