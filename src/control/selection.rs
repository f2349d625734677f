//! From a set of candidates to one primary: the single decision step shared by every discovery
//! source (Consul health, catalog, KV, DNS, static).
//!
//! - no candidate: no primary (new clients are held);
//! - one candidate: that one;
//! - several: **sticky** — the current primary stays while it is still a candidate (keepalived's
//!   `nopreempt`: a recovered old primary does not steal traffic back); otherwise the
//!   `on_multiple` policy: `refuse` (no primary, loudly: two writable primaries is split brain) or
//!   `first` (highest `priority` meta, then node name, then address — deterministic, so every
//!   proxy instance picks the same node).

use std::cmp::Reverse;
use std::sync::Arc;

use crate::config::OnMultiple;
use crate::control::primary::Backend;

/// One server a discovery source says could be the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub backend: Backend,
    /// Node name (Consul node, DNS target): the tie-breaker of `first`.
    pub node: Arc<str>,
    /// keepalived-style priority from service meta `priority`; higher wins under `first`.
    pub priority: Option<i64>,
}

impl Candidate {
    pub fn new(backend: Backend) -> Candidate {
        let node = backend.name.clone();
        Candidate {
            backend,
            node,
            priority: None,
        }
    }
}

/// The outcome of one selection: the primary (or none) and why, for logs and ERR packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub backend: Option<Backend>,
    pub reason: String,
}

/// Picks the primary among `candidates`, given the `current` one. `source` describes where the
/// candidates came from (e.g. `consul health "mysql" tag primary`).
pub fn select(
    current: Option<&Backend>,
    candidates: &[Candidate],
    on_multiple: OnMultiple,
    source: &str,
) -> Selection {
    let mut unique: Vec<&Candidate> = Vec::with_capacity(candidates.len());
    for c in candidates {
        if !unique.iter().any(|u| u.backend.addr == c.backend.addr) {
            unique.push(c);
        }
    }
    match unique.as_slice() {
        [] => Selection {
            backend: None,
            reason: format!("{source}: no healthy primary instance"),
        },
        [only] => Selection {
            backend: Some(only.backend.clone()),
            reason: format!("{source}: single candidate"),
        },
        several => {
            if let Some(cur) = current
                && let Some(keep) = several.iter().find(|c| c.backend.addr == cur.addr)
            {
                return Selection {
                    backend: Some(keep.backend.clone()),
                    reason: format!(
                        "{source}: {} candidates, keeping the current primary (sticky)",
                        several.len()
                    ),
                };
            }
            let names = several
                .iter()
                .map(|c| c.backend.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            match on_multiple {
                OnMultiple::Refuse => Selection {
                    backend: None,
                    reason: format!(
                        "{source}: split brain: {} candidates claim to be primary ({names}); refusing to pick one (on_multiple = refuse)",
                        several.len()
                    ),
                },
                OnMultiple::First => {
                    let best = several
                        .iter()
                        .min_by_key(|c| {
                            (
                                Reverse(c.priority.unwrap_or(i64::MIN)),
                                c.node.clone(),
                                c.backend.addr,
                            )
                        })
                        .map(|c| c.backend.clone());
                    Selection {
                        backend: best,
                        reason: format!(
                            "{source}: {} candidates ({names}); picked by priority then node name (on_multiple = first)",
                            several.len()
                        ),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn cand(port: u16, node: &str, priority: Option<i64>) -> Candidate {
        Candidate {
            backend: Backend::new(SocketAddr::from(([127, 0, 0, 1], port)), node),
            node: node.into(),
            priority,
        }
    }

    #[test]
    fn zero_and_one() {
        let s = select(None, &[], OnMultiple::Refuse, "src");
        assert_eq!(s.backend, None);
        let a = cand(1, "a", None);
        let s = select(None, std::slice::from_ref(&a), OnMultiple::Refuse, "src");
        assert_eq!(s.backend, Some(a.backend));
    }

    #[test]
    fn sticky_beats_policy() {
        let (a, b) = (cand(1, "a", Some(1)), cand(2, "b", Some(100)));
        let both = [b.clone(), a.clone()];
        let s = select(Some(&a.backend), &both, OnMultiple::First, "src");
        assert_eq!(s.backend, Some(a.backend.clone()));
        let s = select(Some(&a.backend), &both, OnMultiple::Refuse, "src");
        assert_eq!(s.backend, Some(a.backend));
    }

    #[test]
    fn refuse_names_the_split_brain() {
        let both = [cand(1, "a", None), cand(2, "b", None)];
        let s = select(None, &both, OnMultiple::Refuse, "src");
        assert_eq!(s.backend, None);
        assert!(s.reason.contains("split brain"), "{}", s.reason);
        assert!(s.reason.contains("127.0.0.1:2"), "{}", s.reason);
    }

    #[test]
    fn first_orders_by_priority_then_node_regardless_of_input_order() {
        let (a, b, c) = (
            cand(1, "a", None),
            cand(2, "b", Some(5)),
            cand(3, "c", Some(5)),
        );
        for set in [
            vec![a.clone(), b.clone(), c.clone()],
            vec![c.clone(), a.clone(), b.clone()],
        ] {
            let s = select(None, &set, OnMultiple::First, "src");
            assert_eq!(s.backend, Some(b.backend.clone()));
        }
        let s = select(
            None,
            &[cand(9, "z", None), a.clone()],
            OnMultiple::First,
            "src",
        );
        assert_eq!(s.backend, Some(a.backend));
    }

    #[test]
    fn duplicates_of_one_address_are_one_candidate() {
        let a = cand(1, "a", None);
        let s = select(None, &[a.clone(), a.clone()], OnMultiple::Refuse, "src");
        assert_eq!(s.backend, Some(a.backend));
    }
}
