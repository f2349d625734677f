//! Every settings enum, in one convention: the names an operator writes in the TOML file, in an
//! environment variable and after a flag are the same (`kebab-case` for clap, `serde` renamed to
//! match), and `/status` shows them the same way (they serialize to that name too). Components
//! import them from here; `config` imports nothing from the components.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the current primary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoveryKind {
    /// A fixed backend address (`backend`).
    Static,
    /// Consul health API: passing instances of `service` with every `tag`.
    ConsulHealth,
    /// Consul catalog: registered instances with every `tag`, no health filter.
    ConsulCatalog,
    /// A Consul KV key whose value names the primary (leader key, orchestrator).
    ConsulKv,
    /// DNS A/AAAA or SRV answers for `dns_name` (e.g. Consul DNS on 127.0.0.1:8600).
    Dns,
}

/// Which DNS record type names the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DnsRecord {
    /// A and AAAA records; the port is `default_port`.
    A,
    /// SRV records: port from the record, address from the additional section or the target.
    Srv,
}

/// Consistency mode of Consul reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Reads go to the leader (Consul's default).
    #[default]
    Default,
    /// Any server may answer, possibly with slightly old data; keeps working without a leader.
    Stale,
    /// The leader confirms its leadership first; slowest.
    Consistent,
}

/// Which byte pump relays an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RelayKind {
    /// Readiness-based pump: a per-thread scratch buffer, no buffer held by an idle connection.
    #[default]
    Pump,
    /// tokio's `copy_bidirectional`: the reference implementation (2×8 KiB per connection).
    Copy,
}

/// What happens to connections bound to a primary that was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailover {
    /// Close them at once.
    #[default]
    Close,
    /// Close them after `drain_grace`.
    Drain,
    /// Close each at its first idle moment (no statement in flight, no transaction open); the
    /// rest after `drain_grace`.
    Idle,
    /// Leave them open (unsafe: they may keep writing to a demoted node).
    Keep,
}

/// What to do when several candidates claim to be the primary and none is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnMultiple {
    /// No primary and a loud error: two writable primaries is split brain.
    #[default]
    Refuse,
    /// Highest `priority` service meta, then node name, then address (dual-master pairs).
    First,
}

/// How a Consul *node* check in `warning` counts when the proxy judges an instance's health.
/// (The service's own check in `warning` never passes, as with Consul's `?passing`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WarningIs {
    /// A warning (e.g. an unrelated node check: disk 90 %) keeps the instance a candidate.
    #[default]
    Passing,
    /// A warning takes the instance out, like a critical check.
    Critical,
}

/// Whether the proxy tells the server who the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyProtocol {
    /// The server sees the proxy's address.
    #[default]
    Off,
    /// A PROXY protocol v2 header before the client's bytes (MariaDB: `proxy_protocol_networks`).
    V2,
}

/// What a route serves: the one current primary, or a pool of every healthy instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// One server: the current primary (sticky, split-brain refusal, fencing).
    #[default]
    Primary,
    /// Every healthy instance; each new connection goes to one of them by `balance`.
    Replica,
}

/// How a replica route spreads new connections over its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The member with the fewest open connections; ties in turn.
    #[default]
    LeastConnections,
    /// Each member in turn.
    RoundRobin,
}

/// Whether the kernel fast path takes the proxy out of the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FastPathMode {
    /// Every connection is relayed.
    #[default]
    Off,
    /// A BPF program rewrites connects to `listen` into the primary; a host that cannot do it
    /// is a start-up error (exit 64).
    Connect,
    /// Like `connect` where the host can do it; otherwise relay, with one warning.
    Auto,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name in TOML, env, flags and `/status` is one name.
    #[test]
    fn serde_and_clap_names_agree() {
        fn check<T: ValueEnum + Serialize>() {
            for v in T::value_variants() {
                let clap_name = v.to_possible_value().unwrap().get_name().to_owned();
                let serde_name = serde_json::to_value(v).unwrap();
                assert_eq!(serde_json::Value::String(clap_name), serde_name);
            }
        }
        check::<LogFormat>();
        check::<DiscoveryKind>();
        check::<DnsRecord>();
        check::<Consistency>();
        check::<RelayKind>();
        check::<OnFailover>();
        check::<OnMultiple>();
        check::<WarningIs>();
        check::<ProxyProtocol>();
        check::<Role>();
        check::<Balance>();
        check::<FastPathMode>();
    }
}
