//! ACL tokens with rules, for tests that need a token narrower than the management token
//! (`DoubleConfig::acl_token`): e.g. `service:read` without `node:read`.
//!
//! Rules are Consul's prefix rules (`node_prefix "" { policy = "read" }`): for a resource the
//! longest matching prefix decides (Consul: acl/policy_authorizer.go, a radix tree
//! longest-prefix lookup; exact-name rules are not modelled), `write` implies `read`, and
//! with no matching rule the cluster's default policy applies, which the double fixes at
//! `deny` once ACLs are on (as a production cluster is configured).
//!
//! How the endpoints use them follows Consul:
//! - health and catalog reads drop every entry whose node the token cannot `node:read` or
//!   whose service it cannot `service:read` (Consul: agent/structs/aclfilter/filter.go
//!   filterCheckServiceNodes / filterServiceNodes) and answer 200 with what is left; the
//!   response says `X-Consul-Results-Filtered-By-ACLs: true` only when something was dropped
//!   (agent/http.go setResultsFilteredByACLs) and never for the anonymous token, i.e. when
//!   no token was sent (agent/consul/rpc.go maskResultsFilteredByACLs).
//! - KV reads of one key need `key:read` (403 otherwise); recursive reads drop the keys the
//!   token cannot read (agent/consul/kvs_endpoint.go, aclfilter filterDirEnt); writes need
//!   `key:write`.

/// A rule's policy (Consul's `policy = "deny" | "read" | "write"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    Deny,
    Read,
    Write,
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The resource kinds the double checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Node,
    Service,
    Key,
    Session,
    Agent,
    Query,
}

impl Resource {
    /// The word Consul uses in `Permission denied` messages.
    pub fn word(self) -> &'static str {
        match self {
            Resource::Node => "node",
            Resource::Service => "service",
            Resource::Key => "key",
            Resource::Session => "session",
            Resource::Agent => "agent",
            Resource::Query => "query",
        }
    }
}

/// An ACL token: its secret (what clients send) and its prefix rules.
#[derive(Debug, Clone, Default)]
pub struct AclToken {
    /// The secret ID clients send (`X-Consul-Token`).
    pub secret: String,
    /// The accessor ID shown in `Permission denied` messages; a random UUID when empty.
    pub accessor_id: String,
    pub node_prefix: Vec<(String, Policy)>,
    pub service_prefix: Vec<(String, Policy)>,
    pub key_prefix: Vec<(String, Policy)>,
    pub session_prefix: Vec<(String, Policy)>,
    pub agent_prefix: Vec<(String, Policy)>,
    pub query_prefix: Vec<(String, Policy)>,
}

impl AclToken {
    /// A token with no rules (denies everything, like an empty policy).
    pub fn new(secret: &str) -> Self {
        AclToken {
            secret: secret.to_string(),
            ..Default::default()
        }
    }

    /// Adds `<resource>_prefix "<prefix>" { policy = "<policy>" }`.
    pub fn rule(mut self, resource: Resource, prefix: &str, policy: Policy) -> Self {
        let list = match resource {
            Resource::Node => &mut self.node_prefix,
            Resource::Service => &mut self.service_prefix,
            Resource::Key => &mut self.key_prefix,
            Resource::Session => &mut self.session_prefix,
            Resource::Agent => &mut self.agent_prefix,
            Resource::Query => &mut self.query_prefix,
        };
        list.push((prefix.to_string(), policy));
        self
    }

    /// `service_prefix "" { policy = "read" }` and nothing else: the token of item "service
    /// read but no node read".
    pub fn service_read_only(secret: &str) -> Self {
        AclToken::new(secret).rule(Resource::Service, "", Policy::Read)
    }

    fn rules(&self, resource: Resource) -> &[(String, Policy)] {
        match resource {
            Resource::Node => &self.node_prefix,
            Resource::Service => &self.service_prefix,
            Resource::Key => &self.key_prefix,
            Resource::Session => &self.session_prefix,
            Resource::Agent => &self.agent_prefix,
            Resource::Query => &self.query_prefix,
        }
    }

    /// Longest matching prefix decides; no match → default deny.
    pub fn allows(&self, resource: Resource, name: &str, access: Access) -> bool {
        let best = self
            .rules(resource)
            .iter()
            .filter(|(p, _)| name.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, pol)| *pol)
            .unwrap_or(Policy::Deny);
        match access {
            Access::Read => best >= Policy::Read,
            Access::Write => best == Policy::Write,
        }
    }
}
