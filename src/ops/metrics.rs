//! Counters and gauges, in Prometheus form (`prometheus-client`), prefixed `consul_mysql_proxy_`.
//!
//! One [`Metrics`] is created at start-up and shared as `Arc<Metrics>` by the listener,
//! connections, discovery and failover; the admin endpoint encodes [`Metrics::registry`] for
//! `GET /metrics`. Every metric is an atomic: updating one on the connection path costs a few
//! nanoseconds and no lock. This module knows no proxy type: callers pass label values
//! (`&'static str`), so every side can use it without depending on the others.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrimaryLabel {
    pub address: String,
    pub name: String,
}

/// Every metric the proxy keeps.
#[derive(Debug)]
pub struct Metrics {
    pub connections_accepted: Counter,
    pub connections_active: Gauge,
    pub connections_held: Gauge,
    pub bytes: Family<DirectionLabel, Counter>,
    /// `bytes`' two series, looked up once: `Family::get_or_create` takes a lock and hashes the
    /// label, which every closing connection would pay twice.
    bytes_upstream: Counter,
    bytes_downstream: Counter,
    /// Failed connects to the primary, by reason (refused, timeout, no_greeting, …).
    pub backend_connect_errors: Family<ReasonLabel, Counter>,
    pub err_packets: Family<ReasonLabel, Counter>,
    pub failovers: Counter,
    pub connections_closed_by_failover: Counter,
    /// Of those, the connections closed at an idle moment (`on_failover = idle`).
    pub connections_closed_idle: Counter,
    pub discovery_requests: Family<ResultLabel, Counter>,
    pub discovery_last_success: Gauge<f64, AtomicU64>,
    pub consul_index: Gauge,
    /// Discovery tasks that ended unexpectedly (panic, or a loop that returned) and were restarted.
    pub discovery_restarts: Counter,
    /// 1 while the proxy routes to a primary Consul withdrew without a replacement.
    pub primary_withdrawn: Gauge,
    /// Seconds without a primary per failover (0 for a direct A → B switch).
    pub failover_gap: Histogram,
    /// Relayed connections per backend address.
    pub backend_connections: Family<BackendLabel, Gauge>,
    /// 1 for the current primary (info-style metric); empty while there is none.
    pub primary_info: Family<PrimaryLabel, Gauge>,
    /// 1 while the kernel fast path is attached and steering at least one route.
    pub fast_path_active: Gauge,
    /// Connects the fast path's program rewrote to a primary (read from the kernel's counter).
    pub fast_path_redirected: Counter,
    /// Redirected connections open now (live sockets the program recorded), as of the last
    /// sweep.
    pub fast_path_open: Gauge,
    /// Redirected connections destroyed because their primary was replaced.
    pub fast_path_closed_by_failover: Counter,
    /// Redirected connects that did not complete (refused, timed out); each marks its target
    /// so that the next connects are held and relayed by the proxy.
    pub fast_path_failed_connects: Counter,
    /// Liveness sessions (`verify_writable` with the fast path) that broke; each marks its
    /// server so that the next connects are held and relayed.
    pub fast_path_liveness_breaks: Counter,
    /// The same per-backend gauges, iterable for `/status` (a `Family` cannot be listed).
    backends: std::sync::Mutex<std::collections::BTreeMap<std::net::SocketAddr, Gauge>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let bytes: Family<DirectionLabel, Counter> = Family::default();
        let series = |direction| bytes.get_or_create(&DirectionLabel { direction }).clone();
        let (bytes_upstream, bytes_downstream) = (series("upstream"), series("downstream"));
        Metrics {
            connections_accepted: Counter::default(),
            connections_active: Gauge::default(),
            connections_held: Gauge::default(),
            bytes,
            bytes_upstream,
            bytes_downstream,
            backend_connect_errors: Family::default(),
            err_packets: Family::default(),
            failovers: Counter::default(),
            connections_closed_by_failover: Counter::default(),
            connections_closed_idle: Counter::default(),
            discovery_requests: Family::default(),
            discovery_last_success: Gauge::default(),
            consul_index: Gauge::default(),
            discovery_restarts: Counter::default(),
            primary_withdrawn: Gauge::default(),
            failover_gap: Histogram::new([
                0.0, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            backend_connections: Family::default(),
            primary_info: Family::default(),
            fast_path_active: Gauge::default(),
            fast_path_redirected: Counter::default(),
            fast_path_open: Gauge::default(),
            fast_path_closed_by_failover: Counter::default(),
            fast_path_failed_connects: Counter::default(),
            fast_path_liveness_breaks: Counter::default(),
            backends: Default::default(),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Bytes a connection relayed, by the side they came from. The exported label keeps the
    /// proxy convention: `upstream` = from the client, `downstream` = from the backend.
    pub fn add_relayed(&self, from_client: u64, from_backend: u64) {
        self.bytes_upstream.inc_by(from_client);
        self.bytes_downstream.inc_by(from_backend);
    }

    /// An ERR packet was sent to a client instead of a backend, for `reason`.
    pub fn err_packet_sent(&self, reason: &'static str) {
        self.err_packets
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A connect to the primary failed for `reason`.
    pub fn backend_connect_error(&self, reason: &'static str) {
        self.backend_connect_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// One discovery request finished with `result` (`ok`, `error`, `invalid`).
    pub fn discovery_request(&self, result: &'static str) {
        self.discovery_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A usable discovery answer arrived at `unix_seconds`, with blocking index `index`.
    pub fn discovery_success(&self, unix_seconds: f64, index: u64) {
        self.discovery_last_success.set(unix_seconds);
        self.consul_index
            .set(i64::try_from(index).unwrap_or(i64::MAX));
    }

    /// The gauge of connections relayed to `backend`.
    pub fn backend_gauge(&self, backend: std::net::SocketAddr) -> Gauge {
        let gauge = self
            .backend_connections
            .get_or_create(&BackendLabel {
                backend: backend.to_string(),
            })
            .clone();
        if let Ok(mut map) = self.backends.lock() {
            map.entry(backend).or_insert_with(|| gauge.clone());
        }
        gauge
    }

    /// Open relayed connections per backend (backends seen since start-up).
    pub fn per_backend(&self) -> Vec<(std::net::SocketAddr, i64)> {
        self.backends
            .lock()
            .map(|map| map.iter().map(|(a, g)| (*a, g.get())).collect())
            .unwrap_or_default()
    }

    /// Marks `primary` (address, name) as the current primary, or none.
    pub fn set_primary(&self, primary: Option<(String, String)>) {
        self.primary_info.clear();
        if let Some((address, name)) = primary {
            self.primary_info
                .get_or_create(&PrimaryLabel { address, name })
                .set(1);
        }
    }

    /// A registry view of every metric, for the text exposition format.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("consul_mysql_proxy");
        r.register(
            "connections_accepted",
            "Client connections accepted",
            self.connections_accepted.clone(),
        );
        r.register(
            "connections_active",
            "Client connections currently open (held or relayed)",
            self.connections_active.clone(),
        );
        r.register(
            "connections_held",
            "Client connections waiting for a reachable primary",
            self.connections_held.clone(),
        );
        r.register(
            "relayed_bytes",
            "Bytes relayed, by direction (upstream = client to backend)",
            self.bytes.clone(),
        );
        r.register(
            "backend_connect_errors",
            "Failed connection attempts to the primary, by reason (refused, timeout, no_greeting, reset, unreachable, other)",
            self.backend_connect_errors.clone(),
        );
        r.register(
            "err_packets",
            "MySQL ERR packets sent to clients instead of a backend, by reason",
            self.err_packets.clone(),
        );
        r.register(
            "failovers",
            "Changes of the current primary",
            self.failovers.clone(),
        );
        r.register(
            "connections_closed_by_failover",
            "Relayed connections closed because their primary was replaced",
            self.connections_closed_by_failover.clone(),
        );
        r.register(
            "connections_closed_idle",
            "Of the connections closed because their primary was replaced, those closed at an idle moment (on_failover = idle: no statement in flight, no transaction open)",
            self.connections_closed_idle.clone(),
        );
        r.register(
            "discovery_requests",
            "Discovery requests, by result (ok, error = unreachable or HTTP error, invalid = unusable answer)",
            self.discovery_requests.clone(),
        );
        r.register(
            "discovery_last_success_timestamp_seconds",
            "Unix time of the last usable discovery answer",
            self.discovery_last_success.clone(),
        );
        r.register(
            "failover_gap_seconds",
            "Time without a primary per failover (0 for a direct switch)",
            self.failover_gap.clone(),
        );
        r.register(
            "backend_connections",
            "Relayed connections open, by backend address",
            self.backend_connections.clone(),
        );
        r.register(
            "primary_info",
            "The current primary (value 1), by address and name",
            self.primary_info.clone(),
        );
        r.register(
            "discovery_restarts",
            "Discovery tasks restarted after they ended unexpectedly (panic or early return)",
            self.discovery_restarts.clone(),
        );
        r.register(
            "primary_withdrawn",
            "1 while the proxy still routes to a primary Consul withdrew without a replacement (withdrawn_grace, or verified writable)",
            self.primary_withdrawn.clone(),
        );
        r.register(
            "consul_index",
            "X-Consul-Index of the last usable Consul answer",
            self.consul_index.clone(),
        );
        r.register(
            "fast_path_active",
            "1 while the kernel fast path is attached and steers connects to the primary",
            self.fast_path_active.clone(),
        );
        r.register(
            "fast_path_redirected",
            "Connects the kernel fast path rewrote to the primary (the application talks to the server directly)",
            self.fast_path_redirected.clone(),
        );
        r.register(
            "fast_path_connections_open",
            "Connections the kernel fast path redirected that are still open (as of the last sweep, every few seconds)",
            self.fast_path_open.clone(),
        );
        r.register(
            "fast_path_closed_by_failover",
            "Redirected connections destroyed (SOCK_DESTROY) because their primary was replaced",
            self.fast_path_closed_by_failover.clone(),
        );
        r.register(
            "fast_path_failed_connects",
            "Redirected connects that did not complete (refused, timed out); the next connects to that server are held and relayed until it accepts one",
            self.fast_path_failed_connects.clone(),
        );
        r.register(
            "fast_path_liveness_breaks",
            "Fast-path liveness sessions to a primary that broke (its process died, its host closed the connection, or an operator killed the session); each marks the server so connects to it are held and relayed until a login succeeds",
            self.fast_path_liveness_breaks.clone(),
        );
        r
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }
}

/// The exposition of several routes' metrics in one document: each family once (its `# HELP`
/// and `# TYPE` from the first route), every sample labelled `route="<name>"`. Route names are
/// plain (letters, digits, `-`, `_`, `.`: checked by the configuration), so they need no escaping.
pub fn encode_labelled(routes: &[(&str, &Metrics)]) -> String {
    struct Family {
        name: String,
        header: Vec<String>,
        samples: Vec<String>,
        owner: usize,
    }
    let mut families: Vec<Family> = Vec::new();
    for (index, (route, metrics)) in routes.iter().enumerate() {
        let mut current = None;
        for line in metrics.encode().lines() {
            if line == "# EOF" {
                continue;
            }
            if let Some(meta) = line.strip_prefix("# ") {
                let name = meta.split_whitespace().nth(1).unwrap_or_default();
                let at = match families.iter().position(|f| f.name == name) {
                    Some(at) => at,
                    None => {
                        families.push(Family {
                            name: name.to_owned(),
                            header: Vec::new(),
                            samples: Vec::new(),
                            owner: index,
                        });
                        families.len() - 1
                    }
                };
                if families[at].owner == index {
                    families[at].header.push(line.to_owned());
                }
                current = Some(at);
            } else if let Some(at) = current {
                families[at].samples.push(with_route_label(line, route));
            }
        }
    }
    let mut out = String::new();
    for family in families {
        for line in family.header.iter().chain(&family.samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// `name{a="b"} 1` → `name{route="r",a="b"} 1`; `name 1` → `name{route="r"} 1`.
fn with_route_label(sample: &str, route: &str) -> String {
    let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
    let (name, rest) = sample.split_at(name_end);
    match rest.strip_prefix('{') {
        Some(labels) => format!("{name}{{route=\"{route}\",{labels}"),
        None => format!("{name}{{route=\"{route}\"}}{rest}"),
    }
}

/// Keeps a gauge incremented while it lives: right on every exit path of a connection.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn inc(gauge: Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge)
    }

    /// Like [`GaugeGuard::inc`], also returning the value before: a check-and-increment in one
    /// atomic step (used for `max_held`).
    pub fn inc_returning_previous(gauge: Gauge) -> (GaugeGuard, i64) {
        let before = gauge.inc();
        (GaugeGuard(gauge), before)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_routes_share_each_family_and_label_every_sample() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.connections_accepted.inc();
        b.connections_accepted.inc_by(2);
        b.err_packet_sent("no_primary");
        let text = encode_labelled(&[("rw", &a), ("ro", &b)]);
        assert_eq!(
            text.matches("# TYPE consul_mysql_proxy_connections_accepted counter")
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("consul_mysql_proxy_connections_accepted_total{route=\"rw\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("consul_mysql_proxy_connections_accepted_total{route=\"ro\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "consul_mysql_proxy_err_packets_total{route=\"ro\",reason=\"no_primary\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1);
        // Every family's samples follow its own header.
        let accepted = text
            .find("# TYPE consul_mysql_proxy_connections_accepted ")
            .unwrap();
        let next_type = text[accepted + 1..].find("# TYPE").unwrap() + accepted + 1;
        assert!(
            text[accepted..next_type].contains("route=\"ro\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.connections_accepted.inc();
        m.add_relayed(10, 0);
        m.err_packet_sent("no_primary");
        m.backend_connect_error("refused");
        let text = m.encode();
        assert!(
            text.contains("consul_mysql_proxy_connections_accepted_total 1"),
            "{text}"
        );
        assert!(
            text.contains("consul_mysql_proxy_relayed_bytes_total{direction=\"upstream\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("consul_mysql_proxy_err_packets_total{reason=\"no_primary\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("consul_mysql_proxy_backend_connect_errors_total{reason=\"refused\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn gauge_guard_counts_while_alive() {
        let g = Gauge::default();
        let (guard, before) = GaugeGuard::inc_returning_previous(g.clone());
        assert_eq!((before, g.get()), (0, 1));
        let second = GaugeGuard::inc(g.clone());
        assert_eq!(g.get(), 2);
        drop((guard, second));
        assert_eq!(g.get(), 0);
    }
}
