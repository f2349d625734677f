//! What discovery's last answer said about each instance, for the status page, `/status`
//! (`discovery.instances`) and `consul-mysql-proxy status`: every candidate and every excluded
//! instance, with its state and why it is or is not the chosen one.
//!
//! The control loop hands each answer — the candidates, the instances Consul excluded and the
//! selection's outcome — to [`DiscoveryStatus::observed`](super::status::DiscoveryStatus::observed),
//! which keeps the [`Instances`] built here. Whether an instance is the *published* primary is
//! not decided here: with `verify_writable`, or a withdrawn primary still routed to, it can differ
//! from the selection, so views compare addresses with the published primary.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::control::selection::{Candidate, Selection};
use crate::control::sources::{Excluded, Exclusion};
use crate::util::clock::rfc3339;

/// The instances of one discovery answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instances {
    /// When the answer arrived (RFC 3339).
    pub at: String,
    /// Several candidates and none chosen: `on_multiple = refuse` saw two primaries.
    pub split_brain: bool,
    /// The selection's reason, without the source's name.
    pub reason: String,
    pub list: Vec<Instance>,
}

/// One instance and the proxy's verdict on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub address: String,
    pub name: String,
    pub state: InstanceState,
    /// The one the selection picked (published once `verify_writable`, if on, agrees).
    pub chosen: bool,
    /// Why it is, or is not, the chosen one.
    pub why: String,
}

/// Where an instance stands with the discovery source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// It claims to be the primary: checks passing (consul-health), or named by a source
    /// without checks (catalog, KV, DNS, static).
    Candidate,
    /// A critical check (its own, or the node's `serfHealth`).
    Critical,
    /// An operator put the service or its node in maintenance.
    Maintenance,
    /// Replica routes: its service check warns (replication lag); a pool member used only when
    /// no other replica is left.
    Lagging,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Candidate => "candidate",
            InstanceState::Critical => "critical",
            InstanceState::Maintenance => "maintenance",
            InstanceState::Lagging => "lagging",
        }
    }
}

impl Instances {
    /// The record of one answer from `source` (its name is cut from the selection's reason).
    pub fn observed(
        candidates: &[Candidate],
        excluded: &[Excluded],
        selection: &Selection,
        source: &str,
        at: SystemTime,
    ) -> Instances {
        let reason = selection
            .reason
            .strip_prefix(source)
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or(&selection.reason)
            .to_owned();
        // The same address twice is one candidate, as selection counts them.
        let mut unique: Vec<&Candidate> = Vec::with_capacity(candidates.len());
        for c in candidates {
            if !unique.iter().any(|u| u.backend.addr == c.backend.addr) {
                unique.push(c);
            }
        }
        let chosen = selection.backend.as_ref();
        let split_brain = chosen.is_none() && unique.len() > 1;
        let mut list: Vec<Instance> = unique
            .iter()
            .map(|c| {
                let is_chosen = chosen.is_some_and(|b| b.addr == c.backend.addr);
                let why = match chosen {
                    _ if is_chosen => format!("chosen: {reason}"),
                    Some(other) => format!("not chosen; {other} is chosen: {reason}"),
                    None if split_brain => format!(
                        "not chosen: split brain, {} candidates claim to be primary (on_multiple = refuse)",
                        unique.len()
                    ),
                    None => format!("not chosen: {reason}"),
                };
                Instance {
                    address: c.backend.addr.to_string(),
                    name: c.backend.name.to_string(),
                    state: InstanceState::Candidate,
                    chosen: is_chosen,
                    why,
                }
            })
            .collect();
        list.extend(excluded.iter().map(|e| {
            let (state, why) = match &e.why {
                // Not passing: for a primary, a service check in warning is as good as critical.
                Exclusion::Critical(why) | Exclusion::Lagging(why) => {
                    (InstanceState::Critical, why)
                }
                Exclusion::Maintenance(why) => (InstanceState::Maintenance, why),
            };
            Instance {
                address: e.addr.to_string(),
                name: e.name.to_string(),
                state,
                chosen: false,
                why: format!("not a candidate: {why}"),
            }
        }));
        Instances {
            at: rfc3339(at),
            split_brain,
            reason,
            list,
        }
    }
}

impl Instances {
    /// The record of one answer for a replica route: `chosen` means "in the pool".
    pub fn pooled(
        candidates: &[Candidate],
        excluded: &[Excluded],
        reason: &str,
        source: &str,
        at: SystemTime,
    ) -> Instances {
        let reason = reason
            .strip_prefix(source)
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or(reason)
            .to_owned();
        let mut list: Vec<Instance> = Vec::with_capacity(candidates.len() + excluded.len());
        for c in candidates {
            if list.iter().any(|i| i.address == c.backend.addr.to_string()) {
                continue;
            }
            list.push(Instance {
                address: c.backend.addr.to_string(),
                name: c.backend.name.to_string(),
                state: InstanceState::Candidate,
                chosen: true,
                why: "in the pool".to_owned(),
            });
        }
        list.extend(excluded.iter().map(|e| {
            let (state, chosen, why) = match &e.why {
                Exclusion::Lagging(why) => (
                    InstanceState::Lagging,
                    true,
                    format!("in the pool, used only when no other replica is left: {why}"),
                ),
                Exclusion::Critical(why) => (
                    InstanceState::Critical,
                    false,
                    format!("not in the pool: {why}"),
                ),
                Exclusion::Maintenance(why) => (
                    InstanceState::Maintenance,
                    false,
                    format!("not in the pool: {why}"),
                ),
            };
            Instance {
                address: e.addr.to_string(),
                name: e.name.to_string(),
                state,
                chosen,
                why,
            }
        }));
        Instances {
            at: rfc3339(at),
            split_brain: false,
            reason,
            list,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnMultiple;
    use crate::control::primary::Backend;
    use crate::control::selection::select;
    use std::net::SocketAddr;

    const SOURCE: &str = "consul health \"mysql\" tags [\"primary\"]";

    fn cand(port: u16) -> Candidate {
        Candidate::new(Backend::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            format!("db-{port}/mysql"),
        ))
    }

    fn record(candidates: &[Candidate], excluded: &[Excluded], current: Option<u16>) -> Instances {
        let current = current.map(|p| cand(p).backend);
        let selection = select(current.as_ref(), candidates, OnMultiple::Refuse, SOURCE);
        Instances::observed(
            candidates,
            excluded,
            &selection,
            SOURCE,
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn the_single_candidate_is_chosen_and_the_critical_one_says_why_not() {
        let excluded = [Excluded {
            addr: SocketAddr::from(([127, 0, 0, 1], 2)),
            name: "db-2/mysql".into(),
            why: Exclusion::Critical("check service:mysql critical: read-only".into()),
        }];
        let r = record(&[cand(1)], &excluded, None);
        assert!(!r.split_brain);
        assert_eq!(r.reason, "single candidate");
        assert_eq!(r.list.len(), 2);
        assert!(r.list[0].chosen);
        assert_eq!(r.list[0].why, "chosen: single candidate");
        assert_eq!(r.list[1].state, InstanceState::Critical);
        assert!(!r.list[1].chosen);
        assert!(r.list[1].why.contains("read-only"), "{}", r.list[1].why);
    }

    #[test]
    fn two_candidates_and_none_chosen_is_split_brain() {
        let r = record(&[cand(1), cand(2), cand(2)], &[], None);
        assert!(r.split_brain);
        assert_eq!(r.list.len(), 2, "duplicates are one candidate");
        assert!(r.list.iter().all(|i| !i.chosen));
        assert!(r.list[0].why.contains("split brain"), "{}", r.list[0].why);
    }

    #[test]
    fn sticky_names_the_kept_primary_for_the_other_candidate() {
        let r = record(&[cand(1), cand(2)], &[], Some(2));
        assert!(!r.split_brain);
        assert!(r.list[1].chosen);
        assert!(
            r.list[0]
                .why
                .starts_with("not chosen; 127.0.0.1:2 (db-2/mysql) is chosen: "),
            "{}",
            r.list[0].why
        );
        assert!(r.list[0].why.contains("sticky"), "{}", r.list[0].why);
    }
}
