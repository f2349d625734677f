//! The state store: one in-memory copy of what a single-server Consul cluster keeps in raft —
//! nodes, services, checks (`catalog`), key/value entries, tombstones and sessions (`kv`) —
//! plus the index bookkeeping that blocking queries depend on.
//!
//! Every write that changes something takes the next raft index (`index + 1`); writes that
//! change nothing take none, as in Consul (an identical re-registration or KV write does not
//! wake anybody). Table indexes, the per-service-name index (`service.<name>` in Consul's index
//! table) and the "last extinction" index are kept the way `agent/consul/state` keeps them, so
//! `X-Consul-Index` is per result. `restore_low_indexes` simulates a snapshot restore.
//!
//! The store is plain data behind a `std::sync::Mutex` in `Shared`; no lock is held
//! across an `.await`. Callers tell watchers about a change through `Shared::write`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use crate::catalog::{Check, CheckRuntime, Node, Service};
use crate::kv::{KvEntry, Session};

/// Raft-style table indexes (Consul's `index` table rows for whole tables).
#[derive(Debug, Default, Clone)]
pub(crate) struct Tables {
    pub nodes: u64,
    pub services: u64,
    pub checks: u64,
    pub kvs: u64,
    pub tombstones: u64,
    pub sessions: u64,
}

#[derive(Debug)]
pub(crate) struct Store {
    /// Last committed raft index.
    pub index: u64,
    /// Bumped by a snapshot restore: blocked queries return at once, like Consul's
    /// `AbandonCh`.
    pub epoch: u64,
    /// Lower-cased name of the agent's own node.
    pub agent_node: String,
    /// Keyed by lower-cased node name (Consul's node index is case-insensitive).
    pub nodes: BTreeMap<String, Node>,
    /// Keyed by (lower-cased node name, service ID).
    pub services: BTreeMap<(String, String), Service>,
    /// Keyed by (lower-cased node name, check ID).
    pub checks: BTreeMap<(String, String), Check>,
    /// Agent-side runtime of each check (not part of the catalog view).
    pub check_rt: HashMap<(String, String), CheckRuntime>,
    pub tables: Tables,
    /// `service.<name>` index per lower-cased service name; removed when the service
    /// goes extinct.
    pub service_indexes: HashMap<String, u64>,
    /// `service_last_extinction`: index at which the last instance of any service vanished.
    pub extinction_index: u64,
    pub kv: BTreeMap<String, KvEntry>,
    /// KV graveyard: key → index of its deletion.
    pub tombstones: BTreeMap<String, u64>,
    pub sessions: BTreeMap<String, Session>,
    /// Lock-delay expiry per key (set when a session holding the key is invalidated).
    pub lock_delays: HashMap<String, Instant>,
    /// Each node agent's own state (its service definitions and maintenance switches), kept
    /// across a leave so a restart can register them again. Keyed by lower-cased node.
    pub agents: HashMap<String, crate::agents::AgentState>,
    /// Prepared queries by ID.
    pub queries: BTreeMap<String, crate::query::PreparedQuery>,
}

impl Store {
    pub fn new(agent_node: &str) -> Self {
        Store {
            index: 10,
            epoch: 0,
            agent_node: agent_node.to_ascii_lowercase(),
            nodes: BTreeMap::new(),
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            check_rt: HashMap::new(),
            tables: Tables::default(),
            service_indexes: HashMap::new(),
            extinction_index: 0,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            sessions: BTreeMap::new(),
            lock_delays: HashMap::new(),
            agents: HashMap::new(),
            queries: BTreeMap::new(),
        }
    }

    /// What a fresh `consul agent -dev` has: its own node (with serfHealth) and the `consul`
    /// service.
    pub fn bootstrap(&mut self, node_name: &str, node_address: &str) {
        let idx = self.next_index();
        self.ensure_node(node_name, node_address, idx);
        self.commit();
        let idx = self.next_index();
        let mut meta = BTreeMap::new();
        meta.insert("raft_version".to_string(), "3".to_string());
        meta.insert("serf_protocol_current".to_string(), "2".to_string());
        meta.insert("version".to_string(), "1.20.0".to_string());
        let key = node_name.to_ascii_lowercase();
        self.services.insert(
            (key.clone(), "consul".to_string()),
            Service {
                node: key,
                id: "consul".to_string(),
                name: "consul".to_string(),
                tags: Vec::new(),
                address: String::new(),
                tagged_addresses: BTreeMap::new(),
                meta,
                port: 8300,
                weight_passing: 1,
                weight_warning: 1,
                enable_tag_override: false,
                create_index: idx,
                modify_index: idx,
            },
        );
        self.tables.services = idx;
        self.service_indexes.insert("consul".to_string(), idx);
        self.commit();
    }

    /// The index a write in progress will commit at.
    pub fn next_index(&self) -> u64 {
        self.index + 1
    }

    /// Commits a write that used `next_index()`.
    pub fn commit(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Simulates `consul snapshot restore` of an older snapshot: every index in the store is
    /// renumbered to a small value, preserving order, so all of them end up lower than before,
    /// and every blocked query is released.
    pub fn restore_low_indexes(&mut self) {
        let mut seen = BTreeSet::new();
        seen.insert(self.index);
        for n in self.nodes.values() {
            seen.extend([n.create_index, n.modify_index]);
        }
        for s in self.services.values() {
            seen.extend([s.create_index, s.modify_index]);
        }
        for c in self.checks.values() {
            seen.extend([c.create_index, c.modify_index]);
        }
        for e in self.kv.values() {
            seen.extend([e.create_index, e.modify_index]);
        }
        for s in self.sessions.values() {
            seen.extend([s.create_index, s.modify_index]);
        }
        seen.extend(self.tombstones.values().copied());
        seen.extend(self.service_indexes.values().copied());
        let t = &self.tables;
        seen.extend([
            t.nodes,
            t.services,
            t.checks,
            t.kvs,
            t.tombstones,
            t.sessions,
        ]);
        seen.insert(self.extinction_index);
        seen.remove(&0);
        let map: HashMap<u64, u64> = seen
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, i as u64 + 2))
            .collect();
        let m = |v: &mut u64| {
            if *v != 0 {
                *v = map[v];
            }
        };
        for n in self.nodes.values_mut() {
            m(&mut n.create_index);
            m(&mut n.modify_index);
        }
        for s in self.services.values_mut() {
            m(&mut s.create_index);
            m(&mut s.modify_index);
        }
        for c in self.checks.values_mut() {
            m(&mut c.create_index);
            m(&mut c.modify_index);
        }
        for e in self.kv.values_mut() {
            m(&mut e.create_index);
            m(&mut e.modify_index);
        }
        for s in self.sessions.values_mut() {
            m(&mut s.create_index);
            m(&mut s.modify_index);
        }
        self.tombstones.values_mut().for_each(m);
        self.service_indexes.values_mut().for_each(m);
        let t = &mut self.tables;
        for v in [
            &mut t.nodes,
            &mut t.services,
            &mut t.checks,
            &mut t.kvs,
            &mut t.tombstones,
            &mut t.sessions,
        ] {
            m(v);
        }
        m(&mut self.extinction_index);
        m(&mut self.index);
        self.epoch += 1;
    }
}
