//! The `fast_path` section of `/status` (and so of the status page and `status` command):
//! whether the kernel fast path is active and, if not, why.
//!
//! ```text
//!   data::fastpath (at start-up) ──publish(source)──▶ SLOT ──facts()──▶ admin: /status "fast_path"
//! ```
//!
//! The fast path is loaded once per process and shared by every route (see
//! `data::fastpath::shared`), so its view is process-wide too: one slot, filled when the
//! fast path starts (or fails to, under `fast_path = auto`), read at each `/status`. The
//! source is asked at read time, so the routes and counters are those of that moment. Nothing
//! published (`fast_path = off`): `null`, which the page shows as "not configured".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// The facts shown: name → value (strings and numbers, as the page prints them).
pub type Facts = BTreeMap<String, Value>;

/// Something that can say what the fast path is doing now.
pub trait FactSource: Send + Sync {
    fn facts(&self) -> Facts;
}

static SLOT: Mutex<Option<Arc<dyn FactSource>>> = Mutex::new(None);

/// Makes `source` the fast path's view from now on (the last one published wins).
pub fn publish(source: Arc<dyn FactSource>) {
    let mut slot = SLOT.lock().unwrap_or_else(|e| e.into_inner());
    *slot = Some(source);
}

/// The fast path's facts, `None` when none was published (`fast_path = off`).
pub fn facts() -> Option<Facts> {
    let source = SLOT.lock().unwrap_or_else(|e| e.into_inner()).clone();
    source.map(|s| s.facts())
}

/// A fast path that is not running, and why.
pub struct Inactive {
    pub mode: &'static str,
    pub reason: String,
}

impl FactSource for Inactive {
    fn facts(&self) -> Facts {
        [
            ("active".to_owned(), Value::Bool(false)),
            ("mode".to_owned(), Value::from(self.mode)),
            ("reason".to_owned(), Value::from(self.reason.clone())),
        ]
        .into_iter()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_published_source_is_asked_at_read_time() {
        publish(Arc::new(Inactive {
            mode: "auto",
            reason: "no cgroup v2".into(),
        }));
        let facts = facts().unwrap();
        assert_eq!(facts["active"], Value::Bool(false));
        assert_eq!(facts["reason"], "no cgroup v2");
    }
}
