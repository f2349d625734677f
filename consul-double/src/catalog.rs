//! The catalog half of the state store: nodes, services, health checks, and the two reads
//! the proxy relies on (`/v1/health/service/<svc>` and `/v1/catalog/service/<svc>`).
//!
//! Writes follow `agent/consul/state/catalog.go`: a service or check write that changes
//! nothing takes no index; a changed check bumps the `service.<name>` index of its service,
//! a changed node-level check (serfHealth) bumps every service on that node; removing the last
//! instance of a service name sets the extinction index. A check that turns critical
//! invalidates the sessions that name it, in the same write. Agent-side details that shape
//! what readers see are here too: output-only changes are synced late (`check_update_interval`)
//! and a re-registered check keeps its previous status and output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub(crate) const PASSING: &str = "passing";
pub(crate) const WARNING: &str = "warning";
pub(crate) const CRITICAL: &str = "critical";
// Consul: agent/structs/catalog.go SerfCheckID, SerfCheckName, SerfCheckAliveOutput,
// SerfCheckFailedOutput.
pub(crate) const SERF_CHECK_ID: &str = "serfHealth";
pub(crate) const SERF_CHECK_NAME: &str = "Serf Health Status";
pub(crate) const SERF_ALIVE_OUTPUT: &str = "Agent alive and reachable";
pub(crate) const SERF_FAILED_OUTPUT: &str = "Agent not live or unreachable";
// Consul: api/health.go NodeMaint, ServiceMaintPrefix; agent/agent.go defaultNodeMaintReason,
// defaultServiceMaintReason.
pub(crate) const NODE_MAINT_CHECK_ID: &str = "_node_maintenance";
pub(crate) const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";
pub(crate) const DEFAULT_NODE_MAINT_REASON: &str = "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
pub(crate) const DEFAULT_SERVICE_MAINT_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";
/// Consul's `CheckBufSize`: check output is capped at 4 KB.
pub(crate) const OUTPUT_MAX: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub id: String,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Lower-cased node key.
    pub node: String,
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, (String, u16)>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub weight_passing: i64,
    pub weight_warning: i64,
    pub enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Service {
    fn same_content(&self, other: &Service) -> bool {
        let mut a = self.clone();
        a.create_index = other.create_index;
        a.modify_index = other.modify_index;
        a == *other
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Display name of the node.
    pub node: String,
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    /// Consul's `Type` field: `tcp`, `script`, `ttl`, `maintenance`, or empty (serfHealth).
    pub kind: String,
    pub interval: String,
    pub timeout: String,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Check {
    fn same_content(&self, other: &Check) -> bool {
        let mut a = self.clone();
        a.create_index = other.create_index;
        a.modify_index = other.modify_index;
        a == *other
    }
}

/// How many results in a row a check's runner needs before the status changes (Consul's
/// `SuccessBeforePassing`, `FailuresBeforeWarning`, `FailuresBeforeCritical`; 0 = at once).
/// Consul: agent/checks/check.go StatusHandler (TCP, HTTP, gRPC, Docker, script checks; not
/// TTL); agent/agent.go addCheck sets an unset FailuresBeforeWarning to FailuresBeforeCritical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    pub success_before_passing: u32,
    pub failures_before_warning: u32,
    pub failures_before_critical: u32,
}

/// What the agent runs for a check.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckDef {
    Tcp {
        addr: String,
        interval: Duration,
        timeout: Duration,
        thresholds: Thresholds,
    },
    Script {
        args: Vec<String>,
        interval: Duration,
        timeout: Duration,
        thresholds: Thresholds,
    },
    Ttl {
        ttl: Duration,
    },
    /// serfHealth and maintenance checks: set only by the double itself.
    Static,
}

/// Agent-local state of a check (Consul's `local.State` plus its check runner).
#[derive(Debug)]
pub struct CheckRuntime {
    pub def: CheckDef,
    /// Output as the agent last saw it; the catalog copy may lag (deferred sync).
    pub local_output: String,
    /// When a deferred output-only sync is due.
    pub flush_at: Option<Instant>,
    /// Since when the check has been critical (for DeregisterCriticalServiceAfter).
    pub critical_since: Option<Instant>,
    pub deregister_after: Option<Duration>,
    /// TTL checks: when the check expires unless updated.
    pub ttl_deadline: Option<Instant>,
    /// Stops the TCP/script runner task.
    pub cancel: Option<CancellationToken>,
    /// Status and output forced by a fault switch; runner/TTL results are ignored meanwhile.
    pub forced: bool,
    /// A result the agent has but could not sync (its node is partitioned from the servers).
    pub pending: Option<(String, String)>,
}

impl CheckRuntime {
    pub fn new(def: CheckDef) -> Self {
        CheckRuntime {
            def,
            local_output: String::new(),
            flush_at: None,
            critical_since: None,
            deregister_after: None,
            ttl_deadline: None,
            cancel: None,
            forced: false,
            pending: None,
        }
    }
}

impl Drop for CheckRuntime {
    fn drop(&mut self) {
        if let Some(c) = &self.cancel {
            c.cancel();
        }
    }
}

/// A check as given at registration time.
#[derive(Debug, Clone)]
pub struct CheckReg {
    pub check_id: String,
    pub name: String,
    pub notes: String,
    pub status: Option<String>,
    pub kind: String,
    pub interval: String,
    pub timeout: String,
    pub def: CheckDef,
    pub deregister_after: Option<Duration>,
}

/// A service registration as the agent endpoint hands it to the store.
#[derive(Debug, Clone)]
pub struct ServiceReg {
    pub node: String,
    pub node_address: Option<String>,
    pub service: Service,
    pub checks: Vec<CheckReg>,
}

/// One `/v1/health/service` entry.
#[derive(Debug, Clone)]
pub struct HealthEntry {
    pub node: Node,
    pub service: Service,
    pub checks: Vec<Check>,
}

pub(crate) type Key = (String, String);

/// A check runner to spawn after a registration.
#[derive(Debug)]
pub struct Runner {
    pub key: Key,
    pub def: CheckDef,
    pub cancel: CancellationToken,
}

fn tags_match(svc: &Service, tags: &[String]) -> bool {
    tags.iter()
        .all(|want| svc.tags.iter().any(|t| t.eq_ignore_ascii_case(want)))
}

/// Consul's `CheckTTL.SetStatus` cap (agent/checks/check.go): `<first 4 KB> ... (captured
/// 4096 of N bytes)`.
fn truncate_ttl_output(s: String) -> String {
    if s.len() <= OUTPUT_MAX {
        return s;
    }
    let mut cut = OUTPUT_MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{} ... (captured {OUTPUT_MAX} of {} bytes)",
        &s[..cut],
        s.len()
    )
}

fn random_uuid() -> String {
    let b: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(crate) fn new_uuid() -> String {
    random_uuid()
}

impl Store {
    /// Creates the node (with its serfHealth check) or updates its address.
    /// Returns true if anything changed (the caller commits).
    pub fn ensure_node(&mut self, name: &str, address: &str, idx: u64) -> bool {
        let key = name.to_ascii_lowercase();
        if let Some(n) = self.nodes.get_mut(&key) {
            if n.address == address {
                return false;
            }
            n.address = address.to_string();
            n.tagged_addresses = tagged_node_addresses(address);
            n.modify_index = idx;
            self.tables.nodes = idx;
            self.touch_node_services(&key, idx);
            return true;
        }
        let mut meta = BTreeMap::new();
        meta.insert("consul-network-segment".to_string(), String::new());
        meta.insert("consul-version".to_string(), "1.20.0".to_string());
        self.nodes.insert(
            key.clone(),
            Node {
                name: name.to_string(),
                id: random_uuid(),
                address: address.to_string(),
                tagged_addresses: tagged_node_addresses(address),
                meta,
                create_index: idx,
                modify_index: idx,
            },
        );
        self.tables.nodes = idx;
        let serf = Check {
            node: name.to_string(),
            check_id: SERF_CHECK_ID.to_string(),
            name: SERF_CHECK_NAME.to_string(),
            status: PASSING.to_string(),
            notes: String::new(),
            output: SERF_ALIVE_OUTPUT.to_string(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: Vec::new(),
            kind: String::new(),
            interval: String::new(),
            timeout: String::new(),
            create_index: idx,
            modify_index: idx,
        };
        let mut rt = CheckRuntime::new(CheckDef::Static);
        rt.local_output = serf.output.clone();
        let k = (key, SERF_CHECK_ID.to_string());
        self.checks.insert(k.clone(), serf);
        self.check_rt.insert(k, rt);
        self.tables.checks = idx;
        true
    }

    pub(crate) fn touch_service_name(&mut self, name: &str, idx: u64) {
        self.service_indexes.insert(name.to_ascii_lowercase(), idx);
    }

    pub(crate) fn touch_node_services(&mut self, node_key: &str, idx: u64) {
        let names: Vec<String> = self
            .services
            .values()
            .filter(|s| s.node == node_key)
            .map(|s| s.name.clone())
            .collect();
        for n in names {
            self.touch_service_name(&n, idx);
        }
    }

    /// Registers (or re-registers) a service and its checks, like an agent registration
    /// followed by its anti-entropy sync. Returns the TCP/script checks whose runners must be
    /// started, each with the token that stops it; runners of replaced or removed checks are
    /// cancelled by dropping their runtime.
    pub fn register_service(&mut self, reg: ServiceReg, now: Instant) -> Vec<Runner> {
        self.register_service_inner(reg, now, false)
    }

    /// `fresh`: the agent registers from its definitions with no check state to carry over
    /// (agent start), so every check starts at its initial status (Consul: agent/agent.go
    /// addServiceInternal — `api.HealthCritical` unless the definition gives `Status`; only a
    /// config reload restores the previous status and output from its snapshot).
    pub(crate) fn register_service_inner(
        &mut self,
        reg: ServiceReg,
        now: Instant,
        fresh: bool,
    ) -> Vec<Runner> {
        self.agents
            .entry(reg.node.to_ascii_lowercase())
            .or_default()
            .services
            .insert(reg.service.id.clone(), reg.clone());
        let idx = self.next_index();
        let mut changed = false;
        let node_key = reg.node.to_ascii_lowercase();
        let node_addr = reg
            .node_address
            .clone()
            .or_else(|| self.nodes.get(&node_key).map(|n| n.address.clone()))
            .unwrap_or_else(|| "127.0.0.1".to_string());
        changed |= self.ensure_node(&reg.node, &node_addr, idx);
        let node_name = self.nodes[&node_key].name.clone();

        let skey = (node_key.clone(), reg.service.id.clone());
        let mut svc = reg.service.clone();
        svc.node = node_key.clone();
        match self.services.get(&skey) {
            Some(old) if svc.same_content(old) => {}
            Some(old) => {
                let old_name = old.name.clone();
                svc.create_index = old.create_index;
                svc.modify_index = idx;
                self.services.insert(skey.clone(), svc.clone());
                self.tables.services = idx;
                self.touch_service_name(&svc.name, idx);
                if !old_name.eq_ignore_ascii_case(&svc.name) {
                    self.after_instance_removed(&old_name, idx);
                }
                changed = true;
            }
            None => {
                svc.create_index = idx;
                svc.modify_index = idx;
                self.services.insert(skey.clone(), svc.clone());
                self.tables.services = idx;
                self.touch_service_name(&svc.name, idx);
                changed = true;
            }
        }

        // Checks of this service that the new registration no longer has are removed.
        let new_ids: Vec<&str> = reg.checks.iter().map(|c| c.check_id.as_str()).collect();
        let stale: Vec<Key> = self
            .checks
            .iter()
            .filter(|(k, c)| {
                k.0 == node_key && c.service_id == svc.id && !new_ids.contains(&k.1.as_str())
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            changed |= self.delete_check(&k, idx);
        }

        let mut started = Vec::new();
        for cr in reg.checks {
            let k = (node_key.clone(), cr.check_id.clone());
            let prev = self.checks.get(&k).cloned();
            let prev_local = self.check_rt.get(&k).map(|r| r.local_output.clone());
            let mut status = cr.status.clone().unwrap_or_else(|| CRITICAL.to_string());
            let mut output = String::new();
            if let Some(p) = prev.as_ref().filter(|_| !fresh) {
                // The agent's check-state snapshot carries status and output over.
                status = p.status.clone();
                output = prev_local.unwrap_or_else(|| p.output.clone());
            }
            let mut check = Check {
                node: node_name.clone(),
                check_id: cr.check_id.clone(),
                name: cr.name.clone(),
                status: status.clone(),
                notes: cr.notes.clone(),
                output: output.clone(),
                service_id: svc.id.clone(),
                service_name: svc.name.clone(),
                service_tags: svc.tags.clone(),
                kind: cr.kind.clone(),
                interval: cr.interval.clone(),
                timeout: cr.timeout.clone(),
                create_index: idx,
                modify_index: idx,
            };
            match &prev {
                Some(p) if check.same_content(p) => {
                    check.create_index = p.create_index;
                    check.modify_index = p.modify_index;
                }
                Some(p) => {
                    check.create_index = p.create_index;
                    self.tables.checks = idx;
                    self.touch_service_name(&svc.name, idx);
                    changed = true;
                }
                None => {
                    self.tables.checks = idx;
                    self.touch_service_name(&svc.name, idx);
                    changed = true;
                }
            }
            let mut rt = CheckRuntime::new(cr.def.clone());
            rt.local_output = output;
            rt.deregister_after = cr.deregister_after;
            if status == CRITICAL {
                rt.critical_since = Some(now);
            }
            if let CheckDef::Ttl { ttl } = cr.def {
                rt.ttl_deadline = Some(now + ttl);
            }
            let runner = matches!(cr.def, CheckDef::Tcp { .. } | CheckDef::Script { .. })
                .then(CancellationToken::new);
            rt.cancel = runner.clone();
            self.checks.insert(k.clone(), check);
            // Replacing the runtime drops (and so cancels) the previous runner.
            self.check_rt.insert(k.clone(), rt);
            if status == CRITICAL {
                changed |= self.invalidate_sessions_for_check(&k, idx, now);
            }
            if let Some(cancel) = runner {
                started.push(Runner {
                    key: k,
                    def: cr.def.clone(),
                    cancel,
                });
            }
        }
        if changed {
            self.commit();
        }
        started
    }

    /// Removes one check; returns true if it existed.
    pub(crate) fn delete_check(&mut self, key: &Key, idx: u64) -> bool {
        let Some(c) = self.checks.remove(key) else {
            return false;
        };
        self.check_rt.remove(key);
        self.tables.checks = idx;
        if c.service_id.is_empty() {
            self.touch_node_services(&key.0, idx);
        } else {
            self.touch_service_name(&c.service_name, idx);
        }
        self.invalidate_sessions_for_check(key, idx, Instant::now());
        true
    }

    pub(crate) fn after_instance_removed(&mut self, name: &str, idx: u64) {
        let still = self
            .services
            .values()
            .any(|s| s.name.eq_ignore_ascii_case(name));
        if still {
            self.touch_service_name(name, idx);
        } else {
            self.service_indexes.remove(&name.to_ascii_lowercase());
            self.extinction_index = idx;
        }
    }

    /// Deregisters a service and its checks. Returns false if it was unknown.
    pub fn deregister_service(&mut self, node_key: &str, service_id: &str) -> bool {
        if let Some(a) = self.agents.get_mut(node_key) {
            a.services.remove(service_id);
            a.service_maintenance.remove(service_id);
        }
        self.remove_service_from_catalog(node_key, service_id)
    }

    /// Removes a service and its checks from the catalog only (the agent keeps its
    /// definition).
    pub(crate) fn remove_service_from_catalog(&mut self, node_key: &str, service_id: &str) -> bool {
        let skey = (node_key.to_string(), service_id.to_string());
        if !self.services.contains_key(&skey) {
            return false;
        }
        let idx = self.next_index();
        let keys: Vec<Key> = self
            .checks
            .iter()
            .filter(|(k, c)| k.0 == node_key && c.service_id == service_id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.delete_check(&k, idx);
        }
        let svc = self.services.remove(&skey).expect("checked above");
        self.tables.services = idx;
        self.after_instance_removed(&svc.name, idx);
        self.commit();
        true
    }

    /// Finds the node holding a service: the given node, else the agent node, else the only
    /// node that has a service with that ID.
    pub fn locate_service(&self, node: Option<&str>, service_id: &str) -> Option<String> {
        if let Some(n) = node {
            let n = n.to_ascii_lowercase();
            return self
                .services
                .contains_key(&(n.clone(), service_id.to_string()))
                .then_some(n);
        }
        let agent = (self.agent_node.clone(), service_id.to_string());
        if self.services.contains_key(&agent) {
            return Some(self.agent_node.clone());
        }
        let mut found = self.services.keys().filter(|k| k.1 == service_id);
        match (found.next(), found.next()) {
            (Some(k), None) => Some(k.0.clone()),
            _ => None,
        }
    }

    /// Like `locate_service` for check IDs.
    pub fn locate_check(&self, node: Option<&str>, check_id: &str) -> Option<Key> {
        if let Some(n) = node {
            let k = (n.to_ascii_lowercase(), check_id.to_string());
            return self.checks.contains_key(&k).then_some(k);
        }
        let agent = (self.agent_node.clone(), check_id.to_string());
        if self.checks.contains_key(&agent) {
            return Some(agent);
        }
        let mut found = self.checks.keys().filter(|k| k.1 == check_id);
        match (found.next(), found.next()) {
            (Some(k), None) => Some(k.clone()),
            _ => None,
        }
    }

    /// Consul: agent/local/state.go UpdateCheck (deferred output sync with
    /// `check_update_interval`) and agent/local/state.go syncCheck.
    /// Applies a check result as the agent's local state does: a status change is synced to
    /// the catalog at once; an output-only change is synced after a deferral
    /// (`check_update_interval / 2 + random(check_update_interval)`), or at once when the
    /// interval is zero. Returns true if the catalog changed.
    pub fn update_check(
        &mut self,
        key: &Key,
        status: &str,
        output: String,
        now: Instant,
        update_interval: Duration,
    ) -> bool {
        let Some(check) = self.checks.get(key) else {
            return false;
        };
        let gate = self.agent_gate(&key.0);
        let Some(rt) = self.check_rt.get_mut(key) else {
            return false;
        };
        if rt.forced || gate == crate::agents::Gate::Drop {
            return false;
        }
        if gate == crate::agents::Gate::Hold {
            // The agent has the result but cannot reach the servers.
            rt.local_output = output.clone();
            rt.pending = Some((status.to_string(), output));
            return false;
        }
        if status == CRITICAL {
            rt.critical_since.get_or_insert(now);
        } else {
            rt.critical_since = None;
        }
        if check.status == status && rt.local_output == output {
            return false;
        }
        rt.local_output = output.clone();
        if check.status == status && !update_interval.is_zero() {
            if rt.flush_at.is_none() {
                let half = update_interval / 2;
                let jitter = Duration::from_nanos(fastrand::u64(
                    0..update_interval.as_nanos().max(1) as u64,
                ));
                rt.flush_at = Some(now + half + jitter);
            }
            return false;
        }
        rt.flush_at = None;
        self.sync_check(key, status, output, now)
    }

    /// `PUT /v1/agent/check/pass|warn|fail|update/<id>`: only TTL checks accept it; the TTL
    /// timer restarts.
    pub fn ttl_update(
        &mut self,
        key: &Key,
        status: &str,
        output: String,
        now: Instant,
        update_interval: Duration,
    ) -> Result<bool, String> {
        match self.check_rt.get_mut(key) {
            Some(rt) => match rt.def {
                CheckDef::Ttl { ttl } => rt.ttl_deadline = Some(now + ttl),
                _ => {
                    return Err(format!(
                        "CheckID \"{}\" does not have associated TTL",
                        key.1
                    ));
                }
            },
            None => {
                return Err(format!(
                    "CheckID \"{}\" does not have associated TTL",
                    key.1
                ));
            }
        }
        Ok(self.update_check(
            key,
            status,
            truncate_ttl_output(output),
            now,
            update_interval,
        ))
    }

    /// A TTL check that was not updated in time turns critical (Consul: agent/checks/check.go
    /// CheckTTL.run / getExpiredOutput: `TTL expired` or `TTL expired (last output before
    /// timeout follows): <output>`).
    pub fn expire_ttl(&mut self, key: &Key, now: Instant, update_interval: Duration) -> bool {
        let Some(rt) = self.check_rt.get_mut(key) else {
            return false;
        };
        rt.ttl_deadline = None;
        let last = rt.local_output.clone();
        let output = if last.is_empty() {
            "TTL expired".to_string()
        } else {
            format!("TTL expired (last output before timeout follows): {last}")
        };
        self.update_check(key, CRITICAL, output, now, update_interval)
    }

    /// Flushes a deferred output-only change to the catalog.
    pub fn flush_deferred_output(&mut self, key: &Key, now: Instant) -> bool {
        let Some(rt) = self.check_rt.get_mut(key) else {
            return false;
        };
        rt.flush_at = None;
        if rt.forced {
            return false;
        }
        let out = rt.local_output.clone();
        if self.agent_gate(&key.0) != crate::agents::Gate::Sync {
            return false;
        }
        let status = self.checks[key].status.clone();
        self.sync_check(key, &status, out, now)
    }

    pub(crate) fn sync_check(
        &mut self,
        key: &Key,
        status: &str,
        output: String,
        now: Instant,
    ) -> bool {
        let idx = self.next_index();
        let check = self.checks.get_mut(key).expect("caller checked");
        if check.status == status && check.output == output {
            return false;
        }
        check.status = status.to_string();
        check.output = output;
        check.modify_index = idx;
        let (svc_id, svc_name) = (check.service_id.clone(), check.service_name.clone());
        self.tables.checks = idx;
        if svc_id.is_empty() {
            self.touch_node_services(&key.0, idx);
        } else {
            self.touch_service_name(&svc_name, idx);
        }
        if status == CRITICAL {
            self.invalidate_sessions_for_check(key, idx, now);
        }
        self.commit();
        true
    }

    /// Adds or removes the `_service_maintenance:<id>` check. Returns true if the catalog
    /// changed.
    pub fn set_maintenance(
        &mut self,
        node_key: &str,
        service_id: &str,
        enable: bool,
        reason: &str,
        now: Instant,
    ) -> bool {
        // Consul: agent/agent.go EnableServiceMaintenance / DisableServiceMaintenance. The
        // check is persisted by the agent, so it survives an agent restart.
        let agent = self.agents.entry(node_key.to_string()).or_default();
        if enable {
            agent
                .service_maintenance
                .entry(service_id.to_string())
                .or_insert_with(|| reason.to_string());
        } else {
            agent.service_maintenance.remove(service_id);
        }
        let key = (
            node_key.to_string(),
            format!("{SERVICE_MAINT_PREFIX}{service_id}"),
        );
        if !enable {
            let idx = self.next_index();
            if self.delete_check(&key, idx) {
                self.commit();
                return true;
            }
            return false;
        }
        if self.checks.contains_key(&key) {
            return false;
        }
        let Some(svc) = self
            .services
            .get(&(node_key.to_string(), service_id.to_string()))
        else {
            return false;
        };
        let idx = self.next_index();
        let notes = if reason.is_empty() {
            DEFAULT_SERVICE_MAINT_REASON.to_string()
        } else {
            reason.to_string()
        };
        let check = Check {
            node: self.nodes[node_key].name.clone(),
            check_id: key.1.clone(),
            name: "Service Maintenance Mode".to_string(),
            status: CRITICAL.to_string(),
            notes,
            output: String::new(),
            service_id: svc.id.clone(),
            service_name: svc.name.clone(),
            service_tags: svc.tags.clone(),
            kind: "maintenance".to_string(),
            interval: String::new(),
            timeout: String::new(),
            create_index: idx,
            modify_index: idx,
        };
        let name = svc.name.clone();
        let mut rt = CheckRuntime::new(CheckDef::Static);
        rt.critical_since = Some(now);
        self.checks.insert(key.clone(), check);
        self.check_rt.insert(key.clone(), rt);
        self.tables.checks = idx;
        self.touch_service_name(&name, idx);
        self.invalidate_sessions_for_check(&key, idx, now);
        self.commit();
        true
    }

    /// Sets a node's serfHealth status (node failure simulation).
    pub fn set_node_health(&mut self, node: &str, status: &str, now: Instant) -> bool {
        let key = (node.to_ascii_lowercase(), SERF_CHECK_ID.to_string());
        if !self.checks.contains_key(&key) {
            return false;
        }
        // Consul: agent/consul/leader_registrator_v1.go HandleAliveMember /
        // HandleFailedMember.
        let output = if status == PASSING {
            SERF_ALIVE_OUTPUT
        } else {
            SERF_FAILED_OUTPUT
        };
        if let Some(rt) = self.check_rt.get_mut(&key) {
            rt.local_output = output.to_string();
        }
        self.sync_check(&key, status, output.to_string(), now)
    }

    /// Index of a health/catalog result for `name` (Consul's `maxIndexForService`).
    fn service_result_index(&self, name: &str, exists: bool) -> u64 {
        let lc = name.to_ascii_lowercase();
        if !exists && self.extinction_index > 0 {
            return self.extinction_index;
        }
        if let Some(i) = self.service_indexes.get(&lc) {
            return *i;
        }
        self.tables.nodes.max(self.tables.services).max(1)
    }

    fn instances<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.services
            .values()
            .filter(move |s| s.name.eq_ignore_ascii_case(name))
    }

    /// `/v1/health/service/<name>`: unfiltered by health; tag filter applied (all tags must
    /// match, case-insensitively).
    pub fn health(&self, name: &str, tags: &[String]) -> (u64, Vec<HealthEntry>) {
        let mut exists = false;
        let mut out = Vec::new();
        for svc in self.instances(name) {
            exists = true;
            if !tags_match(svc, tags) {
                continue;
            }
            let Some(node) = self.nodes.get(&svc.node) else {
                continue;
            };
            let node_checks = self
                .checks
                .range((svc.node.clone(), String::new())..)
                .take_while(|(k, _)| k.0 == svc.node);
            let mut checks: Vec<Check> = node_checks
                .clone()
                .filter(|(_, c)| c.service_id.is_empty())
                .map(|(_, c)| c.clone())
                .collect();
            checks.extend(
                node_checks
                    .filter(|(_, c)| c.service_id == svc.id)
                    .map(|(_, c)| c.clone()),
            );
            out.push(HealthEntry {
                node: node.clone(),
                service: svc.clone(),
                checks,
            });
        }
        (self.service_result_index(name, exists).max(1), out)
    }

    /// `/v1/catalog/service/<name>`: raw entries, no health filtering.
    pub fn catalog(&self, name: &str, tags: &[String]) -> (u64, Vec<(Node, Service)>) {
        let mut exists = false;
        let mut out = Vec::new();
        for svc in self.instances(name) {
            exists = true;
            if !tags_match(svc, tags) {
                continue;
            }
            if let Some(node) = self.nodes.get(&svc.node) {
                out.push((node.clone(), svc.clone()));
            }
        }
        (self.service_result_index(name, exists).max(1), out)
    }
}

fn tagged_node_addresses(address: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("lan".to_string(), address.to_string());
    m.insert("wan".to_string(), address.to_string());
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => {
            m.insert("lan_ipv4".to_string(), address.to_string());
            m.insert("wan_ipv4".to_string(), address.to_string());
        }
        Ok(std::net::IpAddr::V6(_)) => {
            m.insert("lan_ipv6".to_string(), address.to_string());
            m.insert("wan_ipv6".to_string(), address.to_string());
        }
        Err(_) => {}
    }
    m
}

/// The default tagged addresses the agent adds for an IP service address.
pub(crate) fn tagged_service_addresses(
    address: &str,
    port: u16,
) -> BTreeMap<String, (String, u16)> {
    let mut m = BTreeMap::new();
    let (lan, wan) = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => ("lan_ipv4", "wan_ipv4"),
        Ok(std::net::IpAddr::V6(_)) => ("lan_ipv6", "wan_ipv6"),
        Err(_) => return m,
    };
    m.insert(lan.to_string(), (address.to_string(), port));
    m.insert(wan.to_string(), (address.to_string(), port));
    m
}
