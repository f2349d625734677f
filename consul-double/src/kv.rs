//! The KV half of the state store: entries, tombstones, sessions, locks and lock-delay,
//! following Consul's agent/consul/state/kvs.go and agent/consul/state/session.go (session
//! invalidation), agent/consul/session_ttl.go (TTL × 2 before invalidation) and
//! agent/consul/kvs_endpoint.go (lock-delay on acquire).
//!
//! - `GET` of one key reports the entry's ModifyIndex; a missing key reports
//!   max(kvs table, tombstones table) so a client can block until it appears.
//! - A plain `PUT` keeps the key's session (and resets LockIndex, as Consul's `kvsSetTxn`
//!   does); an identical write takes no index.
//! - `acquire` needs a live session; re-acquiring by the holder updates the value; another
//!   holder or an active lock-delay makes it return `false`.
//! - Invalidating a session (destroy, TTL expiry, one of its checks turning critical)
//!   releases its locks (setting lock-delay) or deletes its keys (`Behavior = delete`).

use std::time::{Duration, Instant};

use crate::catalog::{CRITICAL, SERF_CHECK_ID};
use crate::store::Store;

#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub session: String,
    pub lock_index: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub name: String,
    /// Lower-cased node key.
    pub node: String,
    pub node_display: String,
    pub lock_delay: Duration,
    pub behavior: String,
    pub ttl: String,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<String>,
    /// When the server invalidates the session (TTL × multiplier after the last renew).
    pub expires_at: Option<Instant>,
    pub ttl_duration: Option<Duration>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A session create request after parsing and defaulting.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: String,
    pub ttl: String,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<String>,
}

impl Store {
    /// KVS.Get: (index, entry).
    pub fn kv_get(&self, key: &str) -> (u64, Option<KvEntry>) {
        match self.kv.get(key) {
            Some(e) => (e.modify_index, Some(e.clone())),
            None => (self.tables.kvs.max(self.tables.tombstones).max(1), None),
        }
    }

    /// KVS.List: (index, entries under prefix).
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<KvEntry>) {
        let table = self.tables.kvs.max(self.tables.tombstones);
        let entries: Vec<KvEntry> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        let mut lindex = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        if prefix.is_empty() {
            lindex = table;
        } else {
            let g = self
                .tombstones
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, i)| *i)
                .max()
                .unwrap_or(0);
            lindex = lindex.max(g);
        }
        let idx = if lindex != 0 { lindex } else { table };
        (idx.max(1), entries)
    }

    fn kv_write(&mut self, mut entry: KvEntry, update_session: bool) -> bool {
        let idx = self.next_index();
        let existing = self.kv.get(&entry.key);
        entry.create_index = existing.map(|e| e.create_index).unwrap_or(idx);
        if !update_session {
            entry.session = existing.map(|e| e.session.clone()).unwrap_or_default();
        }
        if let Some(e) = existing {
            let mut cmp = entry.clone();
            cmp.modify_index = e.modify_index;
            if cmp == *e {
                return false;
            }
        }
        entry.modify_index = idx;
        self.kv.insert(entry.key.clone(), entry);
        self.tables.kvs = idx;
        self.commit();
        true
    }

    pub fn kv_set(&mut self, key: &str, value: Vec<u8>, flags: u64) -> bool {
        self.kv_write(
            KvEntry {
                key: key.to_string(),
                value,
                flags,
                session: String::new(),
                lock_index: 0,
                create_index: 0,
                modify_index: 0,
            },
            false,
        );
        true
    }

    /// Check-and-set: `cas=0` means create-only.
    pub fn kv_cas(&mut self, key: &str, value: Vec<u8>, flags: u64, cas: u64) -> bool {
        match (self.kv.get(key), cas) {
            (Some(_), 0) | (None, 1..) => return false,
            (Some(e), c) if e.modify_index != c => return false,
            _ => {}
        }
        self.kv_set(key, value, flags)
    }

    /// `?acquire=<session>`.
    pub fn kv_lock(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
        now: Instant,
    ) -> Result<bool, String> {
        if session.is_empty() {
            return Err("missing session".to_string());
        }
        if !self.sessions.contains_key(session) {
            return Err(format!("invalid session \"{session}\""));
        }
        if let Some(until) = self.lock_delays.get(key)
            && *until > now
        {
            tracing::debug!(key, "rejecting lock of key due to lock-delay");
            return Ok(false);
        }
        let idx = self.next_index();
        let (create_index, lock_index) = match self.kv.get(key) {
            Some(e) if e.session == session => (e.create_index, e.lock_index),
            Some(e) if !e.session.is_empty() => return Ok(false),
            Some(e) => (e.create_index, e.lock_index + 1),
            None => (idx, 1),
        };
        let entry = KvEntry {
            key: key.to_string(),
            value,
            flags,
            session: session.to_string(),
            lock_index,
            create_index,
            modify_index: idx,
        };
        self.kv_write(entry, true);
        Ok(true)
    }

    /// `?release=<session>`.
    pub fn kv_unlock(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session: &str,
    ) -> Result<bool, String> {
        if session.is_empty() {
            return Err("missing session".to_string());
        }
        let Some(e) = self.kv.get(key) else {
            return Ok(false);
        };
        if e.session != session {
            return Ok(false);
        }
        let entry = KvEntry {
            key: key.to_string(),
            value,
            flags,
            session: String::new(),
            lock_index: e.lock_index,
            create_index: e.create_index,
            modify_index: 0,
        };
        self.kv_write(entry, true);
        Ok(true)
    }

    fn kv_delete_at(&mut self, key: &str, idx: u64) -> bool {
        if self.kv.remove(key).is_none() {
            return false;
        }
        self.tombstones.insert(key.to_string(), idx);
        self.tables.kvs = idx;
        self.tables.tombstones = idx;
        true
    }

    pub fn kv_delete(&mut self, key: &str) {
        let idx = self.next_index();
        if self.kv_delete_at(key, idx) {
            self.commit();
        }
    }

    pub fn kv_delete_cas(&mut self, key: &str, cas: u64) -> bool {
        match self.kv.get(key) {
            None => true,
            Some(e) if e.modify_index != cas => false,
            Some(_) => {
                self.kv_delete(key);
                true
            }
        }
    }

    pub fn kv_delete_tree(&mut self, prefix: &str) {
        let idx = self.next_index();
        let keys: Vec<String> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        let mut any = false;
        for k in keys {
            any |= self.kv_delete_at(&k, idx);
        }
        if any {
            self.commit();
        }
    }

    /// Session.Apply(create) with Consul's validation.
    pub fn session_create(
        &mut self,
        spec: SessionSpec,
        ttl_multiplier: f64,
        now: Instant,
    ) -> Result<String, String> {
        let ttl_duration = if spec.ttl.is_empty() {
            None
        } else {
            let d = crate::duration::parse(&spec.ttl)
                .ok_or_else(|| format!("Session TTL '{}' invalid: invalid duration", spec.ttl))?;
            if !d.is_zero() && (d < Duration::from_secs(10) || d > Duration::from_secs(86400)) {
                return Err(format!(
                    "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                    d.as_nanos()
                ));
            }
            (!d.is_zero()).then_some(d)
        };
        if spec.behavior != "release" && spec.behavior != "delete" {
            return Err(format!("Invalid Behavior setting '{}'", spec.behavior));
        }
        let node_key = spec.node.to_ascii_lowercase();
        let Some(node) = self.nodes.get(&node_key) else {
            return Err("Missing node registration".to_string());
        };
        for c in spec.node_checks.iter().chain(spec.service_checks.iter()) {
            match self.checks.get(&(node_key.clone(), c.clone())) {
                None => return Err(format!("Missing check '{c}' registration")),
                Some(ch) if ch.status == CRITICAL => {
                    return Err(format!("Check '{c}' is in critical state"));
                }
                Some(_) => {}
            }
        }
        let idx = self.next_index();
        let id = crate::catalog::new_uuid();
        let expires_at = ttl_duration.map(|d| now + d.mul_f64(ttl_multiplier));
        self.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                name: spec.name,
                node: node_key,
                node_display: node.name.clone(),
                lock_delay: spec.lock_delay,
                behavior: spec.behavior,
                ttl: spec.ttl,
                node_checks: spec.node_checks,
                service_checks: spec.service_checks,
                expires_at,
                ttl_duration,
                create_index: idx,
                modify_index: idx,
            },
        );
        self.tables.sessions = idx;
        self.commit();
        Ok(id)
    }

    /// Session renew: resets the TTL timer (no raft write, like Consul).
    pub fn session_renew(
        &mut self,
        id: &str,
        ttl_multiplier: f64,
        now: Instant,
    ) -> Option<Session> {
        let s = self.sessions.get_mut(id)?;
        if let Some(d) = s.ttl_duration {
            s.expires_at = Some(now + d.mul_f64(ttl_multiplier));
        }
        Some(s.clone())
    }

    /// Destroys a session (releasing or deleting its keys). Returns true if it existed.
    pub fn session_destroy(&mut self, id: &str, now: Instant) -> bool {
        let idx = self.next_index();
        if self.delete_session(id, idx, now) {
            self.commit();
            true
        } else {
            false
        }
    }

    /// Consul's `deleteSessionTxn`: uses the caller's index, does not commit.
    pub(crate) fn delete_session(&mut self, id: &str, idx: u64, now: Instant) -> bool {
        let Some(sess) = self.sessions.remove(id) else {
            return false;
        };
        self.tables.sessions = idx;
        let held: Vec<String> = self
            .kv
            .values()
            .filter(|e| e.session == id)
            .map(|e| e.key.clone())
            .collect();
        if sess.behavior == "delete" {
            for k in &held {
                self.kv_delete_at(k, idx);
            }
        } else {
            for k in &held {
                if let Some(e) = self.kv.get_mut(k) {
                    e.session.clear();
                    e.modify_index = idx;
                }
            }
            if !held.is_empty() {
                self.tables.kvs = idx;
            }
        }
        if !sess.lock_delay.is_zero() {
            for k in held {
                self.lock_delays.insert(k, now + sess.lock_delay);
            }
        }
        true
    }

    /// Invalidates every session that names this check; uses the caller's index.
    pub(crate) fn invalidate_sessions_for_check(
        &mut self,
        key: &(String, String),
        idx: u64,
        now: Instant,
    ) -> bool {
        let ids: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                s.node == key.0
                    && (s.node_checks.contains(&key.1) || s.service_checks.contains(&key.1))
            })
            .map(|s| s.id.clone())
            .collect();
        let mut any = false;
        for id in ids {
            tracing::debug!(session = %id, check = %key.1, "invalidating session: check is critical");
            any |= self.delete_session(&id, idx, now);
        }
        any
    }

    /// Invalidates sessions whose TTL ran out. Returns true if any was.
    pub fn expire_sessions(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect();
        if expired.is_empty() {
            return false;
        }
        let idx = self.next_index();
        for id in expired {
            tracing::debug!(session = %id, "session TTL expired");
            self.delete_session(&id, idx, now);
        }
        self.commit();
        true
    }

    /// Default node checks of a new session: the node's serfHealth.
    pub fn default_session_checks() -> Vec<String> {
        vec![SERF_CHECK_ID.to_string()]
    }
}
