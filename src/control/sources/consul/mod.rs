//! Consul discovery: health, catalog or KV, each as a **blocking query loop** by Consul's rules.
//!
//! ```text
//! loop: GET …?index=N&wait=W  ──answer──▶ decode ──▶ resolve hosts ──▶ Observation ──▶ discovery
//!         │ errors: Observation::Unavailable (last primary kept), backoff with jitter
//!         └ refresh (a client failed to connect): cut the long poll short, read now
//! ```
//! Index rules (Consul's "blocking queries" docs, `website/content/api-docs/features/blocking.mdx`):
//! the first read, a read after a refresh and the first read after an error carry no index; an
//! index that goes backwards (snapshot restore) is reset to 0 (the next read does not block); an
//! index of 0 is treated as 1; requests are paced by a token bucket ([`pacing`](super::pacing):
//! a small burst, then one per second) and errors back off exponentially, so nothing hot-loops.
//! `wait` is sent in milliseconds as Consul's own client does. The HTTP timeout is
//! `wait + wait/16` (Consul's jitter) plus slack, so a long poll never times out early.
//!
//! Stale reads: an answer whose `X-Consul-LastContact` is older than `consul_max_stale` is
//! unusable (the last primary is kept); `X-Consul-KnownLeader: false` is logged once per
//! leaderless spell. Answers of the agent's streaming backend carry neither (their query meta
//! has only the index; see `client::Answer::known_leader`). `docs/consul.md` maps every rule
//! here to Consul's source and to its test.

pub(crate) mod client;
pub mod decode;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::client::{Answer, ConsulClient};
use self::decode::{Health, KvAnswer, NamedServer, decode_catalog, decode_health, decode_kv};
use super::backoff::Backoff;
use super::pacing::TokenBucket;
use super::{Excluded, Exclusion, Observation, ObservationSender};
use crate::config::{Consistency, ConsulConfig, ConsulSource};
use crate::control::primary::Backend;
use crate::control::selection::Candidate;
use crate::ops::metrics::Metrics;
use crate::util::clock::unix_now;

/// Timeout of a non-blocking read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to `wait + wait/16` for a blocking read's HTTP timeout.
const TIMEOUT_SLACK: Duration = Duration::from_secs(10);
/// Host names in Consul answers are resolved with this timeout.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A one-line description of the source, for logs and error messages.
pub fn describe(config: &ConsulConfig, service: &str) -> String {
    match &config.source {
        ConsulSource::Health { tags } => {
            format!("consul health {service:?} tags {tags:?}")
        }
        ConsulSource::Catalog { tags } => {
            format!("consul catalog {service:?} tags {tags:?}")
        }
        ConsulSource::Kv { key, .. } => format!("consul KV {key}"),
    }
}

/// What one request asks: path segments, query, and whether a 404 is an answer.
struct Request {
    path: Vec<String>,
    query: Vec<(&'static str, Option<String>)>,
    accept_404: bool,
}

fn request(config: &ConsulConfig, service: &str) -> Request {
    let mut query: Vec<(&'static str, Option<String>)> = Vec::new();
    let (path, accept_404): (Vec<String>, bool) = match &config.source {
        ConsulSource::Health { tags } => {
            // No `?passing`: every instance comes back with its checks, and the proxy judges
            // them itself (maintenance vs. a critical check decide different things).
            query.extend(tags.iter().map(|t| ("tag", Some(t.clone()))));
            (
                vec![
                    "v1".into(),
                    "health".into(),
                    "service".into(),
                    service.into(),
                ],
                false,
            )
        }
        ConsulSource::Catalog { tags } => {
            query.extend(tags.iter().map(|t| ("tag", Some(t.clone()))));
            (
                vec![
                    "v1".into(),
                    "catalog".into(),
                    "service".into(),
                    service.into(),
                ],
                false,
            )
        }
        ConsulSource::Kv { key, .. } => {
            let mut path = vec!["v1".to_owned(), "kv".to_owned()];
            path.extend(key.split('/').map(str::to_owned));
            (path, true)
        }
    };
    if let Some(dc) = &config.dc {
        query.push(("dc", Some(dc.clone())));
    }
    // Scope as Consul's client sends it (`api/api.go` `setQueryOptions`): `ns` and `partition`
    // everywhere, `peer` and `filter` only where the endpoint takes them (health, catalog).
    let scope = &config.scope;
    let is_kv = matches!(config.source, ConsulSource::Kv { .. });
    for (key, value, applies) in [
        ("ns", &scope.namespace, true),
        ("partition", &scope.partition, true),
        ("peer", &scope.peer, !is_kv),
        ("filter", &scope.filter, !is_kv),
    ] {
        if let (Some(value), true) = (value, applies) {
            query.push((key, Some(value.clone())));
        }
    }
    match config.consistency {
        Consistency::Default => {}
        Consistency::Stale => query.push(("stale", None)),
        Consistency::Consistent => query.push(("consistent", None)),
    }
    Request {
        path,
        query,
        accept_404,
    }
}

/// The `wait` query parameter as Consul's own client writes it (`api/api.go` `durToMsec`):
/// whole milliseconds with the `ms` unit, at least 1 ms for a non-zero wait. Consul parses it with
/// Go's `time.ParseDuration`, which rejects humantime's `1m 30s`.
pub fn wait_param(wait: Duration) -> String {
    let ms = wait.as_millis();
    let ms = if ms == 0 && !wait.is_zero() { 1 } else { ms };
    format!("{ms}ms")
}

/// The blocking-query index, by Consul's client rules.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockingIndex(u64);

impl BlockingIndex {
    /// The index to send, or `None` for a read that must not block.
    pub fn to_send(self) -> Option<u64> {
        (self.0 > 0).then_some(self.0)
    }

    /// Takes the index of an answer. Returns true when the index went backwards (reset).
    pub fn update(&mut self, answered: Option<u64>) -> bool {
        let answered = answered.unwrap_or(0).max(1);
        if answered < self.0 {
            self.0 = 0;
            return true;
        }
        self.0 = answered;
        false
    }
}

/// Runs the source until `stop` is cancelled.
pub async fn run(
    config: ConsulConfig,
    service: String,
    tx: ObservationSender,
    refresh: Arc<Notify>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let describe = describe(&config, &service);
    let mut client = match ConsulClient::new(&config) {
        Ok(client) => client,
        Err(e) => {
            let _ = tx.send(Observation::Unavailable(e.to_string())).await;
            return;
        }
    };
    let request = request(&config, &service);
    let path: Vec<&str> = request.path.iter().map(String::as_str).collect();
    let wait = wait_param(config.wait);
    let blocking_timeout = config.wait + config.wait / 16 + TIMEOUT_SLACK;
    let mut index = BlockingIndex::default();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let mut read_now = true;
    let mut next_request = Instant::now();
    // Entries skipped in the last answer: the same ones are not logged again.
    let mut skipped_before: Vec<String> = Vec::new();
    // "No known leader" is logged once until a leader is known again.
    let mut leaderless_logged = false;

    let mut pacing = TokenBucket::default();
    loop {
        // Pacing first (a churning answer degrades into bounded polling), then any error backoff.
        let send_at = pacing.reserve(Instant::now()).max(next_request);
        tokio::select! {
            () = tokio::time::sleep_until(send_at) => {}
            () = stop.cancelled() => return,
        }
        let sent_index = if read_now { None } else { index.to_send() };
        let mut query = request.query.clone();
        if let Some(i) = sent_index {
            query.push(("index", Some(i.to_string())));
            query.push(("wait", Some(wait.clone())));
        }
        let timeout = if sent_index.is_some() {
            blocking_timeout
        } else {
            READ_TIMEOUT
        };
        let get = client.get(&path, &query, timeout, request.accept_404);
        tokio::pin!(get);
        let answer = loop {
            tokio::select! {
                answer = &mut get => break Some(answer),
                // A client could not connect to the primary: stop waiting out the long poll —
                // while the pacing allows two requests now (the read, and the blocking query
                // after it). Otherwise the blocking query in flight delivers any change the
                // moment Consul has it; cutting it would leave no request in flight while
                // waiting for a token, and a change then arrives late.
                () = refresh.notified(), if sent_index.is_some() => {
                    if pacing.has_tokens(Instant::now(), 2.0) {
                        debug!(source = %describe, "refresh requested: reading now");
                        break None;
                    }
                }
                () = stop.cancelled() => return,
            }
        };
        let Some(answer) = answer else {
            read_now = true;
            continue;
        };
        read_now = false;
        let observation = match answer {
            Ok(answer) => match observe(&config, &answer).await {
                Ok((observation, notes)) => {
                    if answer.known_leader == Some(false) && !leaderless_logged {
                        warn!(side = "discovery", source = %describe, agent = %answer.agent, "Consul answered without a known leader (X-Consul-KnownLeader: false); using the answer (stale reads keep working without a leader)");
                        leaderless_logged = true;
                    } else if answer.known_leader == Some(true) {
                        leaderless_logged = false;
                    }
                    if notes != skipped_before {
                        for note in &notes {
                            warn!(side = "discovery", source = %describe, %note, "Consul answer entry not usable; the other instances decide");
                        }
                        skipped_before = notes;
                    }
                    if index.update(answer.index) {
                        info!(source = %describe, agent = %answer.agent, "Consul index went backwards (snapshot restore?): index reset");
                    }
                    metrics.discovery_request("ok");
                    metrics.discovery_success(unix_now(), index.0);
                    if backoff.failures() > 0 {
                        info!(source = %describe, agent = %answer.agent, "Consul answers again");
                    }
                    backoff.reset();
                    observation
                }
                Err(error) => {
                    metrics.discovery_request("invalid");
                    next_request = Instant::now() + backoff.next_delay();
                    // Re-sync with a read that does not block: a restarted agent may have lost
                    // its state, and would hold a request with our old index for a whole wait.
                    read_now = true;
                    Observation::Unavailable(format!("{describe}: {error}"))
                }
            },
            Err(error) => {
                metrics.discovery_request("error");
                next_request = Instant::now() + backoff.next_delay();
                read_now = true;
                Observation::Unavailable(format!("{describe}: {error}"))
            }
        };
        if tx.send(observation).await.is_err() {
            return;
        }
    }
}

/// Turns an answer into an observation, with notes on the entries it skipped; `Err` is an
/// unusable answer.
pub(crate) async fn observe(
    config: &ConsulConfig,
    answer: &Answer,
) -> Result<(Observation, Vec<String>), String> {
    if let (Some(max), Some(contact)) = (config.max_stale, answer.last_contact)
        && contact > max
    {
        return Err(format!(
            "answer is {} old (X-Consul-LastContact: the answering server last heard from the leader that long ago), more than consul_max_stale ({})",
            humantime::format_duration(contact),
            humantime::format_duration(max)
        ));
    }
    let observed = observe_body(config, answer).await?;
    if answer.filtered_by_acls
        && let (
            Observation::Instances {
                candidates,
                excluded,
            },
            _,
        ) = &observed
        && candidates.is_empty()
        && excluded.is_empty()
    {
        // Not "no primary": the token cannot see the instances (Consul drops entries whose
        // node or service the token may not read, and says so in this header).
        return Err(
            "Consul filtered the answer by ACLs (X-Consul-Results-Filtered-By-ACLs) and no instance is left: the token needs service:read on the service and node:read on its nodes"
                .to_owned(),
        );
    }
    Ok(observed)
}

async fn observe_body(
    config: &ConsulConfig,
    answer: &Answer,
) -> Result<(Observation, Vec<String>), String> {
    match &config.source {
        ConsulSource::Health { .. } => {
            let decoded = decode_health(&answer.body, config.default_port, &config.health)
                .map_err(|e| e.to_string())?;
            let mut notes = decoded.skipped;
            let mut candidates = Vec::new();
            let mut excluded = Vec::new();
            for instance in decoded.items {
                let name = instance.server.name.clone();
                let candidate = match resolve(instance.server).await {
                    Ok(candidate) => candidate,
                    Err(e) => {
                        notes.push(format!("instance {name} skipped: {e}"));
                        continue;
                    }
                };
                match instance.health {
                    Health::Passing | Health::Warning(_) => candidates.push(candidate),
                    Health::Lagging(why) => excluded.push(Excluded {
                        addr: candidate.backend.addr,
                        name: candidate.backend.name.clone(),
                        why: Exclusion::Lagging(why),
                    }),
                    Health::Maintenance(why) => excluded.push(Excluded {
                        addr: candidate.backend.addr,
                        name: candidate.backend.name.clone(),
                        why: Exclusion::Maintenance(why),
                    }),
                    Health::Critical(why) => excluded.push(Excluded {
                        addr: candidate.backend.addr,
                        name: candidate.backend.name.clone(),
                        why: Exclusion::Critical(why),
                    }),
                }
            }
            Ok((
                Observation::Instances {
                    candidates,
                    excluded,
                },
                notes,
            ))
        }
        ConsulSource::Catalog { .. } => {
            let decoded =
                decode_catalog(&answer.body, config.default_port).map_err(|e| e.to_string())?;
            let mut notes = decoded.skipped;
            let mut candidates = Vec::new();
            for server in decoded.items {
                let name = server.name.clone();
                match resolve(server).await {
                    Ok(candidate) => candidates.push(candidate),
                    Err(e) => notes.push(format!("instance {name} skipped: {e}")),
                }
            }
            Ok((
                Observation::Instances {
                    candidates,
                    excluded: Vec::new(),
                },
                notes,
            ))
        }
        ConsulSource::Kv {
            key,
            require_session,
        } => {
            let missing = answer.status == StatusCode::NOT_FOUND;
            match decode_kv(
                key,
                missing,
                &answer.body,
                *require_session,
                config.default_port,
            )
            .map_err(|e| e.to_string())?
            {
                KvAnswer::Primary(found) => Ok((
                    Observation::Candidates(vec![resolve(found).await?]),
                    Vec::new(),
                )),
                KvAnswer::None(reason) => Ok((Observation::NoPrimary(reason), Vec::new())),
            }
        }
    }
}

/// Fuzzing entry point: one whole HTTP answer (status, raw header pairs, body) through what the
/// client does with it — [`client::interpret`], then every decoder. Host names are not resolved
/// (that is I/O). Must never panic, whatever the bytes.
pub fn fuzz_answer(status: u16, headers: &[(Vec<u8>, Vec<u8>)], body: &[u8]) {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let Ok(status) = StatusCode::from_u16(status) else {
        return;
    };
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    for accept_404 in [false, true] {
        let Ok(answer) = client::interpret("fuzz".into(), status, &map, body.to_vec(), accept_404)
        else {
            continue;
        };
        let mut index = BlockingIndex::default();
        index.update(answer.index);
        let rules = crate::config::HealthRules::default();
        let _ = decode_health(&answer.body, 3306, &rules);
        let _ = decode_catalog(&answer.body, 3306);
        let missing = answer.status == StatusCode::NOT_FOUND;
        let _ = decode_kv("k", missing, &answer.body, true, 3306);
    }
}

/// Resolves a found server's host (IP literal or DNS name) to one socket address.
async fn resolve(found: NamedServer) -> Result<Candidate, String> {
    let addr = match found.host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, found.port),
        Err(_) => {
            let lookup = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((found.host.as_str(), found.port)),
            )
            .await;
            match lookup {
                Ok(Ok(mut addrs)) => addrs
                    .next()
                    .ok_or_else(|| format!("host {} has no address", found.host))?,
                Ok(Err(e)) => return Err(format!("cannot resolve host {}: {e}", found.host)),
                Err(_) => return Err(format!("resolving host {} timed out", found.host)),
            }
        }
    };
    Ok(Candidate {
        backend: Backend::new(addr, found.name),
        node: found.node.into(),
        priority: found.priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(source: ConsulSource, consistency: Consistency, dc: Option<&str>) -> ConsulConfig {
        ConsulConfig {
            source,
            addresses: vec!["http://127.0.0.1:8500".into()],
            token: None,
            tls: Default::default(),
            scope: Default::default(),
            max_stale: None,
            wait: Duration::from_secs(300),
            stale_after: None,
            dc: dc.map(str::to_owned),
            consistency,
            default_port: 3306,
            health: crate::config::HealthRules::default(),
        }
    }

    #[test]
    fn requests_carry_tags_dc_and_consistency() {
        let health = ConsulSource::Health {
            tags: vec!["primary".into(), "db".into()],
        };
        let r = request(&config(health, Consistency::Stale, Some("dc2")), "mysql");
        assert_eq!(r.path, ["v1", "health", "service", "mysql"]);
        assert_eq!(
            r.query,
            vec![
                ("tag", Some("primary".to_owned())),
                ("tag", Some("db".to_owned())),
                ("dc", Some("dc2".to_owned())),
                ("stale", None),
            ]
        );
        assert!(!r.accept_404);
        let kv = ConsulSource::Kv {
            key: "mysql/master/main".into(),
            require_session: false,
        };
        let r = request(&config(kv, Consistency::Consistent, None), "mysql");
        assert_eq!(r.path, ["v1", "kv", "mysql", "master", "main"]);
        assert_eq!(r.query, vec![("consistent", None)]);
        assert!(r.accept_404, "a missing key is an answer");
    }

    #[test]
    fn scope_parameters_are_sent_where_the_endpoint_takes_them() {
        let scope = crate::config::ConsulScope {
            namespace: Some("team-a".into()),
            partition: Some("part-b".into()),
            peer: Some("dc-west".into()),
            filter: Some(r#"Service.Meta.cluster == "main""#.into()),
        };
        let health = ConsulSource::Health {
            tags: vec!["primary".into()],
        };
        let mut c = config(health, Consistency::Default, None);
        c.scope = scope.clone();
        assert_eq!(
            request(&c, "mysql").query,
            vec![
                ("tag", Some("primary".to_owned())),
                ("ns", Some("team-a".to_owned())),
                ("partition", Some("part-b".to_owned())),
                ("peer", Some("dc-west".to_owned())),
                (
                    "filter",
                    Some(r#"Service.Meta.cluster == "main""#.to_owned())
                ),
            ]
        );
        let mut c = config(
            ConsulSource::Catalog { tags: Vec::new() },
            Consistency::Default,
            None,
        );
        c.scope = scope.clone();
        let keys: Vec<&str> = request(&c, "mysql").query.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["ns", "partition", "peer", "filter"]);
        // KV: no peer and no filter (the KV endpoint takes neither).
        let kv = ConsulSource::Kv {
            key: "service/mysql/leader".into(),
            require_session: false,
        };
        let mut c = config(kv, Consistency::Default, None);
        c.scope = scope;
        let keys: Vec<&str> = request(&c, "mysql").query.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["ns", "partition"]);
    }

    #[test]
    fn wait_is_sent_in_milliseconds_like_consuls_client() {
        assert_eq!(wait_param(Duration::from_secs(90)), "90000ms");
        assert_eq!(wait_param(Duration::from_millis(1500)), "1500ms");
        assert_eq!(wait_param(Duration::from_secs(300)), "300000ms");
        assert_eq!(wait_param(Duration::from_micros(10)), "1ms");
    }

    #[test]
    fn index_rules() {
        let mut index = BlockingIndex::default();
        assert_eq!(index.to_send(), None, "first read does not block");
        assert!(!index.update(Some(0)));
        assert_eq!(index.to_send(), Some(1), "0 is treated as 1");
        assert!(!index.update(None));
        assert_eq!(index.to_send(), Some(1), "missing is treated as 1");
        index.update(Some(42));
        assert_eq!(index.to_send(), Some(42));
        assert!(index.update(Some(7)), "backwards is a reset");
        assert_eq!(
            index.to_send(),
            None,
            "after a reset the next read does not block"
        );
        index.update(Some(7));
        assert_eq!(index.to_send(), Some(7));
    }
}
