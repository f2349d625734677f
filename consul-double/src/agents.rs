//! Node-side events: what the catalog shows when a node's agent leaves, restarts, crashes
//! or is cut off from the servers, and the agent-local switches (maintenance, a check forced
//! to a status). Each follows the Consul code path that produces it:
//!
//! - **Graceful leave** (`consul leave`, or SIGTERM with `leave_on_terminate`, the client
//!   default): the leader sees the member as left and deregisters the node — node, services,
//!   checks (serfHealth included) and the node's sessions go in one write (Consul:
//!   agent/consul/leader_registrator_v1.go HandleLeftMember → handleDeregisterMember;
//!   agent/consul/state/catalog.go deleteNodeTxn). The agent keeps its definitions on disk.
//! - **Restart**: the member is alive again, so the leader registers the node with serfHealth
//!   passing (HandleAliveMember), and the agent's anti-entropy sync registers its services
//!   again; their checks start `critical` (or the definition's `Status`) with empty output
//!   until they first run (agent/agent.go addServiceInternal, agent/local/state.go).
//!   Maintenance checks are persisted by the agent, so they come back too.
//! - **Crash / partition**: the member is failed: serfHealth turns `critical` with output
//!   `Agent not live or unreachable` (HandleFailedMember) and everything else stays in the
//!   catalog with its last synced status. A crashed agent syncs nothing any more; a
//!   partitioned one keeps running its checks but cannot sync them until the partition heals
//!   (then anti-entropy pushes the latest results, agent/local/state.go SyncChanges).
//! - **Node maintenance**: check `_node_maintenance`, `Node Maintenance Mode`, critical,
//!   type `maintenance`, Notes = the reason or Consul's default text (agent/agent.go
//!   EnableNodeMaintenance).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::catalog::{
    CRITICAL, Check, CheckDef, CheckRuntime, DEFAULT_NODE_MAINT_REASON, Key, NODE_MAINT_CHECK_ID,
    PASSING, Runner, ServiceReg,
};
use crate::store::Store;

/// What a node's agent is doing, as the servers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentLife {
    #[default]
    Running,
    /// Left gracefully: the node is gone from the catalog.
    Left,
    /// Process dead: nothing syncs.
    Crashed,
    /// Running but cut off from the servers: results are held.
    Partitioned,
}

/// A node agent's own state.
#[derive(Debug, Clone, Default)]
pub struct AgentState {
    pub life: AgentLife,
    /// Node address to use when the node registers again.
    pub address: String,
    /// Display name of the node.
    pub name: String,
    /// Service definitions by service ID, as last registered.
    pub services: BTreeMap<String, ServiceReg>,
    /// Services in maintenance → reason.
    pub service_maintenance: BTreeMap<String, String>,
    /// Node maintenance reason, when enabled.
    pub node_maintenance: Option<String>,
}

/// What happens to a check result of a node's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Sync,
    Hold,
    Drop,
}

impl Store {
    pub(crate) fn agent_gate(&self, node_key: &str) -> Gate {
        match self.agents.get(node_key).map(|a| a.life) {
            Some(AgentLife::Crashed) | Some(AgentLife::Left) => Gate::Drop,
            Some(AgentLife::Partitioned) => Gate::Hold,
            _ => Gate::Sync,
        }
    }

    fn remember_node(&mut self, node_key: &str) -> bool {
        let Some(n) = self.nodes.get(node_key) else {
            return self.agents.contains_key(node_key);
        };
        let (name, address) = (n.name.clone(), n.address.clone());
        let a = self.agents.entry(node_key.to_string()).or_default();
        a.name = name;
        a.address = address;
        true
    }

    /// Graceful leave: deregisters the node with everything on it. Returns false for an
    /// unknown node.
    pub fn agent_leave(&mut self, node: &str, now: Instant) -> bool {
        let key = node.to_ascii_lowercase();
        if !self.nodes.contains_key(&key) {
            return false;
        }
        self.remember_node(&key);
        let idx = self.next_index();
        // Consul: agent/consul/state/catalog.go deleteNodeTxn — services, checks, the
        // node's sessions, then the node.
        let svc_ids: Vec<String> = self
            .services
            .keys()
            .filter(|k| k.0 == key)
            .map(|k| k.1.clone())
            .collect();
        for id in &svc_ids {
            let check_keys: Vec<Key> = self
                .checks
                .iter()
                .filter(|(k, c)| k.0 == key && &c.service_id == id)
                .map(|(k, _)| k.clone())
                .collect();
            for k in check_keys {
                self.delete_check(&k, idx);
            }
            if let Some(svc) = self.services.remove(&(key.clone(), id.clone())) {
                self.tables.services = idx;
                self.after_instance_removed(&svc.name, idx);
            }
        }
        let node_checks: Vec<Key> = self.checks.keys().filter(|k| k.0 == key).cloned().collect();
        for k in node_checks {
            self.delete_check(&k, idx);
        }
        let sessions: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.node == key)
            .map(|s| s.id.clone())
            .collect();
        for id in sessions {
            self.delete_session(&id, idx, now);
        }
        self.nodes.remove(&key);
        self.tables.nodes = idx;
        if let Some(a) = self.agents.get_mut(&key) {
            a.life = AgentLife::Left;
        }
        self.commit();
        true
    }

    /// Agent restart: the node is registered again (serfHealth passing) and the agent's
    /// services with fresh checks. Returns the check runners to start, or None for a node
    /// the double never saw.
    pub fn agent_restart(&mut self, node: &str, now: Instant) -> Option<Vec<Runner>> {
        let key = node.to_ascii_lowercase();
        if !self.remember_node(&key) {
            return None;
        }
        let agent = self.agents.get(&key).cloned().unwrap_or_default();
        if let Some(a) = self.agents.get_mut(&key) {
            a.life = AgentLife::Running;
        }
        let idx = self.next_index();
        if self.ensure_node(&agent.name, &agent.address, idx) {
            self.commit();
        }
        self.set_node_health(&key, PASSING, now);
        let mut runners = Vec::new();
        for reg in agent.services.values() {
            runners.extend(self.register_service_inner(reg.clone(), now, true));
        }
        for (svc, reason) in &agent.service_maintenance {
            self.set_maintenance(&key, svc, true, reason, now);
        }
        if let Some(reason) = &agent.node_maintenance {
            self.set_node_maintenance(&key, true, reason, now);
        }
        Some(runners)
    }

    /// Agent crash (`partitioned: false`) or agent↔server partition (`true`): serfHealth
    /// critical, the rest stays as last synced.
    pub fn agent_fail(&mut self, node: &str, partitioned: bool, now: Instant) -> bool {
        let key = node.to_ascii_lowercase();
        if !self.nodes.contains_key(&key) {
            return false;
        }
        self.remember_node(&key);
        if let Some(a) = self.agents.get_mut(&key) {
            a.life = if partitioned {
                AgentLife::Partitioned
            } else {
                AgentLife::Crashed
            };
        }
        self.set_node_health(&key, CRITICAL, now);
        true
    }

    /// The partition heals: serfHealth passing, held results synced.
    pub fn agent_heal(&mut self, node: &str, now: Instant) -> bool {
        let key = node.to_ascii_lowercase();
        if !self.nodes.contains_key(&key) {
            return false;
        }
        if let Some(a) = self.agents.get_mut(&key) {
            a.life = AgentLife::Running;
        }
        self.set_node_health(&key, PASSING, now);
        let held: Vec<(Key, String, String)> = self
            .check_rt
            .iter_mut()
            .filter(|(k, _)| k.0 == key)
            .filter_map(|(k, rt)| rt.pending.take().map(|(s, o)| (k.clone(), s, o)))
            .collect();
        for (k, status, output) in held {
            if self.checks.contains_key(&k) {
                self.sync_check(&k, &status, output, now);
            }
        }
        true
    }

    /// Forces a check's status and output in the catalog, whatever its runner reports,
    /// until [`Store::release_check`]. Returns false for an unknown check.
    pub fn force_check(&mut self, key: &Key, status: &str, output: &str, now: Instant) -> bool {
        let Some(rt) = self.check_rt.get_mut(key) else {
            return false;
        };
        rt.forced = true;
        rt.local_output = output.to_string();
        if status == CRITICAL {
            rt.critical_since.get_or_insert(now);
        } else {
            rt.critical_since = None;
        }
        self.sync_check(key, status, output.to_string(), now);
        true
    }

    pub fn release_check(&mut self, key: &Key) -> bool {
        match self.check_rt.get_mut(key) {
            Some(rt) => {
                rt.forced = false;
                true
            }
            None => false,
        }
    }

    /// Adds or removes `_node_maintenance`. Returns true if the catalog changed.
    pub fn set_node_maintenance(
        &mut self,
        node_key: &str,
        enable: bool,
        reason: &str,
        now: Instant,
    ) -> bool {
        let key = (node_key.to_string(), NODE_MAINT_CHECK_ID.to_string());
        let agent = self.agents.entry(node_key.to_string()).or_default();
        if !enable {
            agent.node_maintenance = None;
            let idx = self.next_index();
            if self.delete_check(&key, idx) {
                self.commit();
                return true;
            }
            return false;
        }
        agent
            .node_maintenance
            .get_or_insert_with(|| reason.to_string());
        if self.checks.contains_key(&key) {
            return false;
        }
        let Some(node) = self.nodes.get(node_key) else {
            return false;
        };
        let idx = self.next_index();
        let notes = if reason.is_empty() {
            DEFAULT_NODE_MAINT_REASON.to_string()
        } else {
            reason.to_string()
        };
        let check = Check {
            node: node.name.clone(),
            check_id: NODE_MAINT_CHECK_ID.to_string(),
            name: "Node Maintenance Mode".to_string(),
            status: CRITICAL.to_string(),
            notes,
            output: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            kind: "maintenance".to_string(),
            interval: String::new(),
            timeout: String::new(),
            create_index: idx,
            modify_index: idx,
        };
        let mut rt = CheckRuntime::new(CheckDef::Static);
        rt.critical_since = Some(now);
        self.checks.insert(key.clone(), check);
        self.check_rt.insert(key.clone(), rt);
        self.tables.checks = idx;
        self.touch_node_services(node_key, idx);
        self.invalidate_sessions_for_check(&key, idx, now);
        self.commit();
        true
    }
}
