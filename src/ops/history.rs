//! The last [`KEEP`] failovers, for the status page and `/status` (`failovers`, newest first).
//!
//! The failover policy (`control::failover`) [`record`](FailoverHistory::record)s a failover
//! when the new primary is published — old → new, the gap without a primary, the connections
//! closed and the held clients released — and completes it with the time to the first client
//! routed to the new primary once that is known (or once the wait for it gives up), the moment
//! it logs the `failover timeline` line. The admin endpoint reads a copy. A bounded ring behind
//! a plain mutex: a failover is rare, a read is a copy of at most [`KEEP`] small records.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;

use crate::config::OnFailover;

/// How many failovers are kept; older ones are dropped.
pub const KEEP: usize = 50;

/// One failover, as the failover policy knows it when the new primary is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    /// When the new primary was published (RFC 3339).
    pub at: String,
    pub old: String,
    pub new: String,
    /// The new primary's epoch.
    pub epoch: u64,
    /// `on_failover` in force: close, drain or keep.
    pub policy: OnFailover,
    /// Time without a primary (0 for a direct A → B switch).
    pub gap_ms: u64,
    pub closed_connections: usize,
    pub held_clients_released: i64,
}

/// One failover as `/status` shows it: the [`Failover`] and when its first client came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    #[serde(flatten)]
    pub failover: Failover,
    /// Time from publishing to the first client routed to the new primary; `None` while
    /// `waiting_first_client`, or when no client came within the wait.
    pub first_client_routed_ms: Option<u64>,
    /// The timeline still waits for a first client.
    pub waiting_first_client: bool,
}

/// Names one recorded failover, to complete it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverId(u64);

/// The ring of recent failovers, shared as `Arc<FailoverHistory>`.
#[derive(Debug, Default)]
pub struct FailoverHistory {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    next: u64,
    /// Oldest first, each with its id.
    records: VecDeque<(FailoverId, FailoverRecord)>,
}

impl FailoverHistory {
    /// Adds a failover whose first client is still awaited; drops the oldest beyond [`KEEP`].
    pub fn record(&self, failover: Failover) -> FailoverId {
        let Ok(mut ring) = self.inner.lock() else {
            return FailoverId(u64::MAX);
        };
        let id = FailoverId(ring.next);
        ring.next += 1;
        if ring.records.len() == KEEP {
            ring.records.pop_front();
        }
        ring.records.push_back((
            id,
            FailoverRecord {
                failover,
                first_client_routed_ms: None,
                waiting_first_client: true,
            },
        ));
        id
    }

    /// The wait for the first client of failover `id` ended: routed after that many ms, or
    /// `None` (nobody came). A record already dropped from the ring is left alone.
    pub fn first_client(&self, id: FailoverId, routed_ms: Option<u64>) {
        let Ok(mut ring) = self.inner.lock() else {
            return;
        };
        if let Some((_, record)) = ring.records.iter_mut().find(|(i, _)| *i == id) {
            record.first_client_routed_ms = routed_ms;
            record.waiting_first_client = false;
        }
    }

    /// Every kept failover, newest first.
    pub fn newest_first(&self) -> Vec<FailoverRecord> {
        self.inner
            .lock()
            .map(|ring| ring.records.iter().rev().map(|(_, r)| r.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failover(n: u64) -> Failover {
        Failover {
            at: "1970-01-01T00:00:00.000Z".into(),
            old: format!("old-{n}"),
            new: format!("new-{n}"),
            epoch: n,
            policy: OnFailover::Close,
            gap_ms: 0,
            closed_connections: 1,
            held_clients_released: 0,
        }
    }

    #[test]
    fn keeps_the_last_fifty_newest_first() {
        let history = FailoverHistory::default();
        for n in 0..(KEEP as u64 + 7) {
            history.record(failover(n));
        }
        let kept = history.newest_first();
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].failover.epoch, KEEP as u64 + 6);
        assert_eq!(kept[KEEP - 1].failover.epoch, 7);
    }

    #[test]
    fn the_first_client_completes_its_own_record_only() {
        let history = FailoverHistory::default();
        let first = history.record(failover(1));
        let second = history.record(failover(2));
        history.first_client(first, Some(12));
        let kept = history.newest_first();
        assert_eq!(
            (kept[1].first_client_routed_ms, kept[1].waiting_first_client),
            (Some(12), false)
        );
        assert_eq!(
            (kept[0].first_client_routed_ms, kept[0].waiting_first_client),
            (None, true)
        );
        history.first_client(second, None);
        assert!(!history.newest_first()[0].waiting_first_client);
    }

    #[test]
    fn completing_a_dropped_record_changes_nothing() {
        let history = FailoverHistory::default();
        let dropped = history.record(failover(0));
        for n in 1..=(KEEP as u64) {
            history.record(failover(n));
        }
        history.first_client(dropped, Some(1));
        assert!(
            history
                .newest_first()
                .iter()
                .all(|r| r.waiting_first_client)
        );
    }
}
