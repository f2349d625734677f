//! Prepared queries (single datacenter): the stored query and its execution.
//!
//! Consul: agent/consul/prepared_query_endpoint.go (`Apply` validation in parseQuery /
//! parseService, `Execute` → `execute` → `FilterIgnore` + `tagFilter`, shuffle, `Limit`,
//! failover) and agent/consul/state/prepared_query.go (`PreparedQueryResolve`: by ID when
//! the argument is a UUID, else by name, case-insensitively). With one datacenter a failover
//! has nowhere to go: `Failover.NearestN` and `Failover.Datacenters` are stored and echoed,
//! unknown datacenters are skipped as Consul skips them, and `Failovers` stays 0.

use std::collections::BTreeMap;

use crate::catalog::{CRITICAL, HealthEntry, PASSING};
use crate::store::Store;

/// A prepared query as stored (the fields the double honours; the others are echoed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreparedQuery {
    pub id: String,
    pub name: String,
    pub session: String,
    pub token: String,
    pub service: String,
    /// Required tags; a `!` prefix means the tag must be absent (case-insensitive).
    pub tags: Vec<String>,
    pub only_passing: bool,
    pub near: String,
    pub ignore_check_ids: Vec<String>,
    pub node_meta: BTreeMap<String, String>,
    pub service_meta: BTreeMap<String, String>,
    pub failover_nearest_n: i64,
    pub failover_datacenters: Vec<String>,
    /// `DNS.TTL` as given (Go duration text).
    pub dns_ttl: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// Consul's `isUUID` check used by the resolver and the name validation.
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Consul: agent/consul/prepared_query_endpoint.go tagFilter.
fn tag_filter(tags: &[String], e: &HealthEntry) -> bool {
    let have: Vec<String> = e.service.tags.iter().map(|t| t.to_lowercase()).collect();
    tags.iter().all(|t| {
        let t = t.to_lowercase();
        match t.strip_prefix('!') {
            Some(not) => !have.iter().any(|h| h == not),
            None => have.contains(&t),
        }
    })
}

impl Store {
    /// Consul: agent/consul/state/prepared_query.go PreparedQueryResolve (no templates).
    pub fn query_resolve(&self, id_or_name: &str) -> Option<PreparedQuery> {
        if id_or_name.is_empty() {
            return None;
        }
        if is_uuid(id_or_name)
            && let Some(q) = self.queries.get(id_or_name)
        {
            return Some(q.clone());
        }
        self.queries
            .values()
            .find(|q| !q.name.is_empty() && q.name.eq_ignore_ascii_case(id_or_name))
            .cloned()
    }

    /// Consul: agent/consul/prepared_query_endpoint.go execute — the service's instances,
    /// minus those with a critical check (or any non-passing one with `OnlyPassing`),
    /// ignoring `IgnoreCheckIDs`; then the node-meta, service-meta and tag filters.
    pub fn query_execute(&self, q: &PreparedQuery) -> Vec<HealthEntry> {
        let (_, mut entries) = self.health(&q.service, &[]);
        entries.retain(|e| {
            e.checks
                .iter()
                .filter(|c| !q.ignore_check_ids.contains(&c.check_id))
                .all(|c| c.status != CRITICAL && (!q.only_passing || c.status == PASSING))
        });
        entries.retain(|e| {
            q.node_meta
                .iter()
                .all(|(k, v)| e.node.meta.get(k) == Some(v))
                && q.service_meta
                    .iter()
                    .all(|(k, v)| e.service.meta.get(k) == Some(v))
        });
        entries.retain(|e| tag_filter(&q.tags, e));
        entries
    }

    /// Creates or replaces a query (validated by the caller). Returns its ID.
    pub fn query_put(&mut self, mut q: PreparedQuery) -> Result<String, String> {
        // Consul: agent/consul/state/prepared_query.go preparedQuerySetTxn.
        if !q.name.is_empty() {
            if self
                .queries
                .values()
                .any(|o| o.id != q.id && o.name.eq_ignore_ascii_case(&q.name))
            {
                return Err(format!("name '{}' aliases an existing query name", q.name));
            }
            if self.queries.contains_key(&q.name) {
                return Err(format!("name '{}' aliases an existing query ID", q.name));
            }
        }
        let idx = self.next_index();
        match self.queries.get(&q.id) {
            Some(old) => q.create_index = old.create_index,
            None => q.create_index = idx,
        }
        q.modify_index = idx;
        let id = q.id.clone();
        self.queries.insert(id.clone(), q);
        self.commit();
        Ok(id)
    }

    pub fn query_delete(&mut self, id: &str) -> bool {
        if self.queries.remove(id).is_none() {
            return false;
        }
        self.commit();
        true
    }
}
