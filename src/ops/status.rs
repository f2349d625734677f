//! What discovery last saw, for `GET /status` and `/readyz`: the source, the time of the last
//! usable answer, the last error, whether discovery is watching at all (a task that ended and
//! is being restarted is *not watching*), a primary Consul withdrew that the proxy still
//! routes to, and the instances of the last answer ([`Instances`]: who is a candidate, who is
//! not, and why). A replica route also keeps its pool here (members, lagging flags and each
//! member's open connections, read live from the members' counters). Written by the control side (a few times per second at most), read by the
//! admin endpoint; a plain mutex is enough.

use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::instances::Instances;
use crate::control::pool::Pool;
use crate::control::selection::{Candidate, Selection};
use crate::control::sources::Excluded;
use crate::util::clock::rfc3339;

#[derive(Debug, Default)]
pub struct DiscoveryStatus {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    source: String,
    last_success: Option<SystemTime>,
    last_error: Option<(SystemTime, String)>,
    /// Why discovery is not watching now (a task ended and is being restarted).
    not_watching: Option<String>,
    /// A primary Consul withdrew that is still routed to: since when and why.
    withdrawn: Option<(SystemTime, String)>,
    /// Every instance of the last usable answer, with the selection's verdict.
    instances: Option<Instances>,
    /// `role = replica`: the published pool.
    pool: Option<Pool>,
}

/// RFC 3339 time, or null.
pub fn rfc3339_or_null(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

impl DiscoveryStatus {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut inner) = self.inner.lock() {
            f(&mut inner);
        }
    }

    /// A (re)started source: discovery is watching again.
    pub fn set_source(&self, source: &str) {
        self.with(|inner| {
            inner.source = source.to_owned();
            inner.not_watching = None;
        });
    }

    pub fn success(&self) {
        self.with(|inner| inner.last_success = Some(SystemTime::now()));
    }

    pub fn error(&self, error: &str) {
        self.with(|inner| inner.last_error = Some((SystemTime::now(), error.to_owned())));
    }

    /// Discovery stopped watching, for `cause`, until its task is restarted.
    pub fn not_watching(&self, cause: &str) {
        self.with(|inner| inner.not_watching = Some(cause.to_owned()));
    }

    /// Why discovery is not watching, if it is not.
    pub fn not_watching_cause(&self) -> Option<String> {
        self.inner.lock().ok()?.not_watching.clone()
    }

    /// The current primary was withdrawn by Consul and is still routed to (`Some`), or not.
    pub fn set_withdrawn(&self, why: Option<&str>) {
        self.with(|inner| {
            inner.withdrawn = why.map(|why| {
                let since = match &inner.withdrawn {
                    Some((since, _)) => *since,
                    None => SystemTime::now(),
                };
                (since, why.to_owned())
            });
        });
    }

    /// A usable answer: its candidates, the instances it excluded and what selection made of
    /// them.
    pub fn observed(&self, candidates: &[Candidate], excluded: &[Excluded], selection: &Selection) {
        self.with(|inner| {
            let at = SystemTime::now();
            let instances = Instances::observed(candidates, excluded, selection, &inner.source, at);
            inner.instances = Some(instances);
        });
    }

    /// A replica route's answer: every instance with its place in the pool.
    pub fn pooled(&self, candidates: &[Candidate], excluded: &[Excluded], reason: &str) {
        self.with(|inner| {
            let at = SystemTime::now();
            let instances = Instances::pooled(candidates, excluded, reason, &inner.source, at);
            inner.instances = Some(instances);
        });
    }

    /// The pool a replica route published (`None`: a primary route).
    pub fn set_pool(&self, pool: Option<Pool>) {
        self.with(|inner| inner.pool = pool);
    }

    /// `/readyz` for a replica route: ready while the pool has a member; `None` for a primary
    /// route.
    pub fn pool_readiness(&self) -> Option<Result<String, String>> {
        let inner = self.inner.lock().ok()?;
        let pool = inner.pool.as_ref()?;
        Some(match pool.members.len() {
            0 => Err(format!("not ready: no healthy replica: {}", pool.reason)),
            n => Ok(format!("ready: {n} replicas in the pool")),
        })
    }

    /// JSON for `/status`.
    pub fn to_json(&self) -> Value {
        let Ok(inner) = self.inner.lock() else {
            return Value::Null;
        };
        json!({
            "source": inner.source,
            "watching": inner.not_watching.is_none(),
            "not_watching": inner.not_watching,
            "last_success": rfc3339_or_null(inner.last_success),
            "last_error": inner.last_error.as_ref().map(|(_, e)| e.clone()),
            "last_error_at": rfc3339_or_null(inner.last_error.as_ref().map(|(t, _)| *t)),
            "withdrawn_primary": inner.withdrawn.as_ref().map(|(since, why)| json!({
                "since": rfc3339(*since),
                "reason": why,
            })),
            // The last request failed (an error newer than the last success): the last primary
            // is kept meanwhile.
            "failing": match (&inner.last_error, inner.last_success) {
                (Some((error_at, _)), Some(success_at)) => *error_at > success_at,
                (Some(_), None) => true,
                (None, _) => false,
            },
            "instances": inner.instances,
            "pool": inner.pool.as_ref().map(pool_json),
        })
    }
}

/// A pool for `/status`: each member with its open connections now.
fn pool_json(pool: &Pool) -> Value {
    let members: Vec<Value> = pool
        .members
        .iter()
        .filter_map(|m| {
            let b = m.backend()?;
            Some(json!({
                "address": b.addr.to_string(),
                "name": &*b.name,
                "lagging": m.lagging,
                "connections": m.connections(),
            }))
        })
        .collect();
    json!({
        "epoch": pool.epoch,
        "reason": &*pool.reason,
        "members": members,
    })
}
