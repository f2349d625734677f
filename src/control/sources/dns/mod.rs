//! DNS discovery: the primary is whatever `dns_name` resolves to, looked up every `dns_interval`
//! (e.g. Consul DNS, `primary.mysql.service.consul` on 127.0.0.1:8600).
//!
//! ```text
//! every interval, or at once on refresh (≥ 100 ms apart)
//!   └▶ lookup ── transport: UDP+EDNS0 → TCP on TC, per-query timeout, no cache
//!        │        answer: Message → Reply (CNAME chain, rcode) → candidates
//!        ├ SRV: port from the record, address from the additional section, else A/AAAA of target
//!        ├ A:   A and AAAA of the name, port `default_port` (IPv4 when there is any, else IPv6)
//!        ├ a `.consul` name whose SRV target or CNAME is outside `.consul`: that name through the
//!        │      system resolver (getaddrinfo), never the Consul DNS server
//!        └▶ Observation ──▶ discovery (sticky selection, split-brain refusal, publish)
//! ```
//!
//! What an answer means, by the rules of the shared [`selection`](crate::control::selection) step:
//! - records → [`Observation::Candidates`] (one per SRV record / per address, named after the SRV
//!   target or the A name, which is also the `node` that `on_multiple = first` sorts by);
//! - NXDOMAIN, or NOERROR without records → [`Observation::NoPrimary`]: Consul's way of saying
//!   "no healthy instance"; new clients are held, then refused with the reason;
//! - timeout, connection refused, SERVFAIL, REFUSED, an undecodable or inconsistent answer →
//!   [`Observation::Unavailable`] naming the server and the rcode: the last primary is kept.
//!
//! Names outside the Consul domain: a service registered with a host name as its address is
//! answered by Consul with that host name as the SRV target (no address in the additional
//! section) or as a CNAME for A queries, and Consul resolves such names only through its
//! `recursors`; without them the `.` zone is not served and the question is refused
//! (`agent/dns.go` `makeRecordFromFQDN`, `resolveCNAME`, `toggleRecursorHandlerFromConfig`). So
//! when `dns_name` is a `.consul` name, an SRV target or CNAME outside `.consul` is resolved with
//! the system resolver (`tokio::net::lookup_host`: /etc/hosts, resolv.conf), not asked of the
//! server in `dns_server`.
//!
//! Errors keep the normal interval (already short, and a DNS query is cheap): no backoff, no hot
//! loop. Answers are not cached (Consul answers with TTL 0); Consul shuffles them, which the
//! sticky selection absorbs. The I/O is in [`transport`], the pure reading in [`answer`].

pub mod answer;
pub(crate) mod transport;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use self::answer::{
    BadAnswer, MAX_CNAME_HOPS, Reply, address_candidates, addresses_of, candidate, display_name,
    pick_address, rcode_name, rdata_ip, read_reply, srv_targets,
};
use self::transport::{Answered, AskError, Transport};
use super::{Observation, ObservationSender};
use crate::config::{DnsConfig, DnsRecord};
use crate::control::selection::Candidate;
use crate::ops::metrics::Metrics;
use crate::util::clock::unix_now;

/// Smallest spacing between a lookup and one triggered by a refresh.
pub const MIN_REFRESH_SPACING: Duration = Duration::from_millis(100);
/// SRV targets without an address in the additional section that one lookup resolves at most.
const MAX_TARGET_LOOKUPS: usize = 16;
/// A whole lookup (SRV, target lookups, CNAME hops) is cut off after this many query timeouts.
const LOOKUP_TIMEOUTS: u32 = 8;

/// A one-line description of the source, for logs and error messages.
pub fn describe(config: &DnsConfig) -> String {
    let record = match config.record {
        DnsRecord::A => "A/AAAA",
        DnsRecord::Srv => "SRV",
    };
    let server = match config.server {
        Some(s) => s.to_string(),
        None => "system resolver".into(),
    };
    let name = config.name.strip_suffix('.').unwrap_or(&config.name);
    format!("dns {record} {name} @{server}")
}

/// Looks the name up every `interval` until `stop` is cancelled.
pub async fn run(
    config: DnsConfig,
    tx: ObservationSender,
    refresh: Arc<Notify>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let describe = describe(&config);
    let name = match Name::from_ascii(&config.name) {
        Ok(name) => name,
        Err(e) => {
            let _ = tx
                .send(Observation::Unavailable(format!(
                    "{describe}: `{}` is not a valid DNS name: {e}",
                    config.name
                )))
                .await;
            stop.cancelled().await;
            return;
        }
    };
    let transport = Transport::new(config.server, config.timeout);
    let lookup_limit = config.timeout.saturating_mul(LOOKUP_TIMEOUTS);
    let mut next_lookup = Instant::now();
    let mut last_lookup: Option<Instant> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_lookup) => {}
            // A client could not connect to the primary: look now, but not more than every 100 ms.
            () = refresh.notified() => {
                if let Some(last) = last_lookup {
                    tokio::select! {
                        () = tokio::time::sleep_until(last + MIN_REFRESH_SPACING) => {}
                        () = stop.cancelled() => return,
                    }
                }
                debug!(source = %describe, "refresh requested: looking up now");
            }
            () = stop.cancelled() => return,
        }
        let started = Instant::now();
        last_lookup = Some(started);
        next_lookup = started + config.interval;
        let looked = tokio::select! {
            looked = tokio::time::timeout(
                lookup_limit,
                look(&transport, &name, config.record, config.default_port),
            ) => looked.unwrap_or_else(|_| Looked::failed(
                "error",
                format!(
                    "lookup of {} did not finish within {}",
                    display_name(&name),
                    humantime::format_duration(lookup_limit)
                ),
            )),
            () = stop.cancelled() => return,
        };
        metrics.discovery_request(looked.result);
        let observation = match looked.observation {
            Observation::Unavailable(error) => {
                failing = true;
                Observation::Unavailable(format!("{describe}: {error}"))
            }
            usable => {
                metrics.discovery_success(unix_now(), 0);
                if failing {
                    info!(source = %describe, "DNS answers again");
                    failing = false;
                }
                usable
            }
        };
        if !looked.notes.is_empty() {
            debug!(source = %describe, notes = %looked.notes.join("; "), "DNS answer had unusable records");
        }
        if tx.send(observation).await.is_err() {
            return;
        }
    }
}

/// Sends one question somewhere; the seam between the lookup logic and the network.
pub trait Ask: Sync {
    fn ask(
        &self,
        name: &Name,
        qtype: RecordType,
    ) -> impl Future<Output = Result<Answered, AskError>> + Send;

    /// The addresses of a host name outside the Consul domain, from the system resolver; `Err`
    /// says why there are none.
    fn system_lookup(
        &self,
        name: &Name,
    ) -> impl Future<Output = Result<Vec<IpAddr>, String>> + Send;
}

impl Ask for Transport {
    fn ask(
        &self,
        name: &Name,
        qtype: RecordType,
    ) -> impl Future<Output = Result<Answered, AskError>> + Send {
        self.ask_servers(name, qtype)
    }

    fn system_lookup(
        &self,
        name: &Name,
    ) -> impl Future<Output = Result<Vec<IpAddr>, String>> + Send {
        let host = display_name(name);
        let timeout = self.timeout();
        async move {
            match tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), 0))).await {
                Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
                Ok(Err(e)) => Err(format!("the system resolver cannot resolve {host}: {e}")),
                Err(_) => Err(format!(
                    "the system resolver did not resolve {host} within {}",
                    humantime::format_duration(timeout)
                )),
            }
        }
    }
}

/// In Consul's domain (`.consul.`; the name Consul's DNS interface answers for).
fn in_consul_domain(name: &Name) -> bool {
    let shown = display_name(name);
    shown == "consul" || shown.ends_with(".consul")
}

/// The addresses of `target` from the system resolver, as a lookup failure when there are none.
async fn system_addresses<A: Ask>(ask: &A, target: &Name) -> Result<Vec<IpAddr>, LookupFailure> {
    ask.system_lookup(target)
        .await
        .map_err(|message| LookupFailure {
            result: "error",
            message,
        })
}

/// The outcome of one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Looked {
    pub observation: Observation,
    /// Metrics label: `ok` (usable answer), `error` (no answer, error rcode), `invalid`.
    pub result: &'static str,
    /// Records that were skipped (SRV port 0, target without address, …), for the debug log.
    pub notes: Vec<String>,
}

impl Looked {
    fn ok(observation: Observation, notes: Vec<String>) -> Looked {
        Looked {
            observation,
            result: "ok",
            notes,
        }
    }

    fn failed(result: &'static str, message: String) -> Looked {
        Looked {
            observation: Observation::Unavailable(message),
            result,
            notes: Vec::new(),
        }
    }
}

/// Why a lookup gave nothing usable (the last primary is kept).
#[derive(Debug)]
struct LookupFailure {
    result: &'static str,
    message: String,
}

impl LookupFailure {
    fn invalid(message: String) -> LookupFailure {
        LookupFailure {
            result: "invalid",
            message,
        }
    }
}

impl From<AskError> for LookupFailure {
    fn from(e: AskError) -> LookupFailure {
        LookupFailure {
            result: if e.is_invalid() { "invalid" } else { "error" },
            message: e.to_string(),
        }
    }
}

/// One lookup of `name` as `record` says, turned into an observation.
pub async fn look<A: Ask>(ask: &A, name: &Name, record: DnsRecord, default_port: u16) -> Looked {
    let result = match record {
        DnsRecord::A => look_a(ask, name, default_port).await,
        DnsRecord::Srv => look_srv(ask, name).await,
    };
    match result {
        Ok((observation, notes)) => Looked::ok(observation, notes),
        Err(f) => Looked::failed(f.result, f.message),
    }
}

/// "No primary", with what an empty answer means for this name: for Consul, that no instance
/// is healthy.
fn no_primary(name: &Name, why: &str) -> Observation {
    let shown = display_name(name);
    let meaning = if shown == "consul" || shown.ends_with(".consul") {
        "no healthy instance"
    } else {
        "no such record"
    };
    Observation::NoPrimary(format!("{shown}: {why} ({meaning})"))
}

const NXDOMAIN_REASON: &str = "NXDOMAIN";

type LookResult = Result<(Observation, Vec<String>), LookupFailure>;

async fn look_a<A: Ask>(ask: &A, name: &Name, port: u16) -> LookResult {
    let (v4, v6) = tokio::join!(
        resolve(ask, name, RecordType::A),
        resolve(ask, name, RecordType::AAAA)
    );
    let (v4, v6) = (v4?, v6?);
    let mut unusable = Vec::new();
    for found in [&v4, &v6] {
        let Resolved::Found(f) = found else {
            continue;
        };
        let addrs: Vec<IpAddr> = f.data.iter().filter_map(rdata_ip).collect();
        let candidates = address_candidates(&f.owner, &addrs, port);
        if !candidates.is_empty() {
            return Ok((Observation::Candidates(candidates), Vec::new()));
        }
        unusable.extend(addrs.iter().map(ToString::to_string));
    }
    if !unusable.is_empty() {
        return Err(LookupFailure::invalid(format!(
            "{}: only unusable addresses in the answer ({})",
            display_name(name),
            unusable.join(", ")
        )));
    }
    if matches!(v4, Resolved::NxDomain) || matches!(v6, Resolved::NxDomain) {
        return Ok((no_primary(name, NXDOMAIN_REASON), Vec::new()));
    }
    Ok((no_primary(name, "no A/AAAA records"), Vec::new()))
}

async fn look_srv<A: Ask>(ask: &A, name: &Name) -> LookResult {
    let found = match resolve(ask, name, RecordType::SRV).await? {
        Resolved::NxDomain => return Ok((no_primary(name, NXDOMAIN_REASON), Vec::new())),
        Resolved::NoData => {
            return Ok((no_primary(name, "no SRV records"), Vec::new()));
        }
        Resolved::Found(found) => found,
    };
    let srv = srv_targets(&found.data);
    let mut notes = srv.skipped;
    if srv.targets.is_empty() {
        if srv.no_service {
            return Ok((
                no_primary(name, "SRV target \".\", service not available"),
                notes,
            ));
        }
        return Err(LookupFailure::invalid(format!(
            "{}: no usable SRV record ({})",
            display_name(name),
            notes.join("; ")
        )));
    }
    let mut candidates: Vec<Candidate> = Vec::with_capacity(srv.targets.len());
    let mut lookups = 0;
    for target in &srv.targets {
        let mut addrs = addresses_of(&target.target, &found.additionals);
        if pick_address(&addrs).is_none() {
            lookups += 1;
            if lookups > MAX_TARGET_LOOKUPS {
                return Err(LookupFailure::invalid(format!(
                    "{}: more than {MAX_TARGET_LOOKUPS} SRV targets without an address in the additional section",
                    display_name(name)
                )));
            }
            addrs = if in_consul_domain(name) && !in_consul_domain(&target.target) {
                system_addresses(ask, &target.target).await?
            } else {
                target_addresses(ask, &target.target).await?
            };
        }
        match pick_address(&addrs) {
            Some(ip) => {
                candidates.push(candidate(&target.target, SocketAddr::new(ip, target.port)))
            }
            None => notes.push(format!(
                "SRV target {} has no usable address",
                display_name(&target.target)
            )),
        }
    }
    if candidates.is_empty() {
        return Err(LookupFailure::invalid(format!(
            "{}: no SRV target has an address ({})",
            display_name(name),
            notes.join("; ")
        )));
    }
    Ok((Observation::Candidates(candidates), notes))
}

/// A and AAAA addresses of an SRV target that came without them.
async fn target_addresses<A: Ask>(ask: &A, target: &Name) -> Result<Vec<IpAddr>, LookupFailure> {
    let (v4, v6) = tokio::join!(
        resolve(ask, target, RecordType::A),
        resolve(ask, target, RecordType::AAAA)
    );
    let mut addrs = Vec::new();
    for found in [v4?, v6?] {
        if let Resolved::Found(f) = found {
            addrs.extend(f.data.iter().filter_map(rdata_ip));
        }
    }
    Ok(addrs)
}

/// Records of one type for a name, with the additional section they came with.
#[derive(Debug)]
struct RecordSet {
    owner: Name,
    data: Vec<RData>,
    additionals: Vec<Record>,
}

#[derive(Debug)]
enum Resolved {
    Found(RecordSet),
    NoData,
    NxDomain,
}

/// Asks for (`name`, `qtype`), following a CNAME chain across queries when an answer ends in a
/// name without records (at most [`MAX_CNAME_HOPS`] queries).
async fn resolve<A: Ask>(
    ask: &A,
    name: &Name,
    qtype: RecordType,
) -> Result<Resolved, LookupFailure> {
    let mut current = name.clone();
    for _ in 0..MAX_CNAME_HOPS {
        let answered = ask.ask(&current, qtype).await?;
        match read_reply(&current, qtype, &answered.message) {
            Ok(Reply::Records { owner, data }) => {
                return Ok(Resolved::Found(RecordSet {
                    owner,
                    data,
                    additionals: answered.message.additionals,
                }));
            }
            Ok(Reply::Cname { next })
                if in_consul_domain(name)
                    && !in_consul_domain(&next)
                    && matches!(qtype, RecordType::A | RecordType::AAAA) =>
            {
                // Consul answers a service registered by host name with a CNAME to it, which
                // only the system resolver (not Consul without recursors) can resolve.
                let want_v4 = qtype == RecordType::A;
                let data: Vec<RData> = system_addresses(ask, &next)
                    .await?
                    .into_iter()
                    .filter_map(|ip| match ip {
                        IpAddr::V4(v4) if want_v4 => Some(RData::A(v4.into())),
                        IpAddr::V6(v6) if !want_v4 => Some(RData::AAAA(v6.into())),
                        _ => None,
                    })
                    .collect();
                if data.is_empty() {
                    return Ok(Resolved::NoData);
                }
                return Ok(Resolved::Found(RecordSet {
                    owner: next,
                    data,
                    additionals: Vec::new(),
                }));
            }
            Ok(Reply::Cname { next }) => current = next,
            Ok(Reply::NoData) => return Ok(Resolved::NoData),
            Ok(Reply::NxDomain) => return Ok(Resolved::NxDomain),
            Err(BadAnswer::Rcode(rcode)) => {
                return Err(LookupFailure {
                    result: "error",
                    message: format!(
                        "{} from {} for {} {qtype}{}",
                        rcode_name(rcode),
                        answered.server,
                        display_name(&current),
                        rcode_hint(rcode)
                    ),
                });
            }
            Err(BadAnswer::Malformed(detail)) => {
                return Err(LookupFailure::invalid(format!(
                    "malformed answer from {} for {} {qtype}: {detail}",
                    answered.server,
                    display_name(&current)
                )));
            }
        }
    }
    Err(LookupFailure::invalid(format!(
        "CNAME chain from {} longer than {MAX_CNAME_HOPS}",
        display_name(name)
    )))
}

/// What an error rcode usually means here.
fn rcode_hint(rcode: hickory_resolver::proto::op::ResponseCode) -> &'static str {
    use hickory_resolver::proto::op::ResponseCode;
    match rcode {
        ResponseCode::ServFail => {
            " (server failure: e.g. Consul without a leader, or the upstream unreachable)"
        }
        ResponseCode::Refused => {
            " (the server does not answer for this name: is the .consul domain forwarded to Consul?)"
        }
        ResponseCode::FormErr => " (the server did not understand the query)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;

    use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, SRV};

    use super::*;

    const SERVER: &str = "127.0.0.1:8600";
    const Q: &str = "primary.mysql.service.consul.";

    fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    /// Canned answers per (name, type); unknown questions time out. Counts the questions. The
    /// system resolver knows the names in `system`.
    #[derive(Default)]
    struct Fake {
        answers: HashMap<(String, RecordType), Message>,
        asked: Mutex<Vec<(String, RecordType)>>,
        system: HashMap<String, Vec<IpAddr>>,
        system_asked: Mutex<Vec<String>>,
    }

    impl Fake {
        fn with(mut self, name: &str, qtype: RecordType, m: Message) -> Self {
            self.answers.insert((name.to_ascii_lowercase(), qtype), m);
            self
        }
        /// `target` has the A record `ip` and no AAAA record.
        fn with_a(self, target: &str, ip: [u8; 4]) -> Self {
            self.with(
                target,
                RecordType::A,
                Msg::ok(target, RecordType::A).answer(target, a(ip)).0,
            )
            .with(
                target,
                RecordType::AAAA,
                Msg::ok(target, RecordType::AAAA).0,
            )
        }
        /// `q` is a CNAME to `target` for A and AAAA questions.
        fn with_cname(self, q: &str, target: &str) -> Self {
            let mut fake = self;
            for qtype in [RecordType::A, RecordType::AAAA] {
                fake = fake.with(
                    q,
                    qtype,
                    Msg::ok(q, qtype)
                        .answer(q, RData::CNAME(CNAME(n(target))))
                        .0,
                );
            }
            fake
        }
        fn with_system(mut self, host: &str, addrs: &[IpAddr]) -> Self {
            self.system.insert(host.to_owned(), addrs.to_vec());
            self
        }
        fn asked(&self) -> usize {
            self.asked.lock().unwrap().len()
        }
        fn asked_names(&self) -> Vec<String> {
            self.asked
                .lock()
                .unwrap()
                .iter()
                .map(|(n, _)| n.clone())
                .collect()
        }
        fn system_asked(&self) -> Vec<String> {
            self.system_asked.lock().unwrap().clone()
        }
    }

    impl Ask for Fake {
        fn ask(
            &self,
            name: &Name,
            qtype: RecordType,
        ) -> impl Future<Output = Result<Answered, AskError>> + Send {
            let key = (name.to_ascii().to_ascii_lowercase(), qtype);
            self.asked.lock().unwrap().push(key.clone());
            let server: SocketAddr = SERVER.parse().unwrap();
            let result = match self.answers.get(&key) {
                Some(m) => Ok(Answered {
                    server,
                    message: m.clone(),
                }),
                None => Err(AskError::Timeout {
                    server,
                    timeout: Duration::from_secs(1),
                    name: key.0.clone(),
                    qtype,
                }),
            };
            std::future::ready(result)
        }

        fn system_lookup(
            &self,
            name: &Name,
        ) -> impl Future<Output = Result<Vec<IpAddr>, String>> + Send {
            let host = display_name(name);
            self.system_asked.lock().unwrap().push(host.clone());
            let result = self
                .system
                .get(&host)
                .cloned()
                .ok_or_else(|| format!("the system resolver cannot resolve {host}"));
            std::future::ready(result)
        }
    }

    struct Msg(Message);

    impl Msg {
        fn new(q: &str, qtype: RecordType, rcode: ResponseCode) -> Msg {
            let mut m = Message::new(1, MessageType::Response, OpCode::Query);
            m.metadata.response_code = rcode;
            m.add_query(Query::query(n(q), qtype));
            Msg(m)
        }
        fn ok(q: &str, qtype: RecordType) -> Msg {
            Msg::new(q, qtype, ResponseCode::NoError)
        }
        fn answer(mut self, name: &str, data: RData) -> Msg {
            self.0.add_answer(Record::from_rdata(n(name), 0, data));
            self
        }
        fn extra(mut self, name: &str, data: RData) -> Msg {
            self.0.add_additional(Record::from_rdata(n(name), 0, data));
            self
        }
        fn srv(self, port: u16, target: &str) -> Msg {
            self.answer(Q, RData::SRV(SRV::new(1, 1, port, n(target))))
        }
    }

    fn a(ip: [u8; 4]) -> RData {
        RData::A(A(Ipv4Addr::from(ip)))
    }

    fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    fn candidates(looked: &Looked) -> Vec<(SocketAddr, String)> {
        match &looked.observation {
            Observation::Candidates(c) => c
                .iter()
                .map(|c| (c.backend.addr, c.node.to_string()))
                .collect(),
            other => panic!("candidates expected, got {other:?}"),
        }
    }

    fn unavailable(looked: &Looked) -> &str {
        match &looked.observation {
            Observation::Unavailable(m) => m,
            other => panic!("unavailable expected, got {other:?}"),
        }
    }

    fn no_primary_reason(looked: &Looked) -> &str {
        match &looked.observation {
            Observation::NoPrimary(m) => m,
            other => panic!("no primary expected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn consul_srv_answer_with_additionals_gives_one_candidate_per_record() {
        let fake = Fake::default().with(
            Q,
            RecordType::SRV,
            Msg::ok(Q, RecordType::SRV)
                .srv(3308, "db-b.node.dc1.consul.")
                .srv(3307, "db-a.node.dc1.consul.")
                .extra("db-a.node.dc1.consul.", a([127, 0, 0, 2]))
                .extra("db-b.node.dc1.consul.", a([127, 0, 0, 3]))
                .0,
        );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(looked.result, "ok");
        assert_eq!(
            candidates(&looked),
            vec![
                (addr([127, 0, 0, 3], 3308), "db-b.node.dc1.consul".into()),
                (addr([127, 0, 0, 2], 3307), "db-a.node.dc1.consul".into()),
            ]
        );
        assert_eq!(
            fake.asked(),
            1,
            "no extra queries when additionals are there"
        );
    }

    #[tokio::test]
    async fn srv_target_without_additional_is_resolved() {
        // Inside the Consul domain: asked of the same server.
        let target = "db-a.node.dc1.consul.";
        let fake = Fake::default()
            .with(
                Q,
                RecordType::SRV,
                Msg::ok(Q, RecordType::SRV).srv(3307, target).0,
            )
            .with(
                target,
                RecordType::A,
                Msg::ok(target, RecordType::A)
                    .answer(target, a([10, 0, 0, 7]))
                    .0,
            )
            .with(
                target,
                RecordType::AAAA,
                Msg::ok(target, RecordType::AAAA)
                    .answer(target, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)))
                    .0,
            );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(
            candidates(&looked),
            vec![(addr([10, 0, 0, 7], 3307), "db-a.node.dc1.consul".into())]
        );
        assert!(fake.system_asked().is_empty());
    }

    #[tokio::test]
    async fn srv_target_outside_consul_goes_to_the_system_resolver() {
        // Consul answers a service registered as `db-a.example` with that target and nothing in
        // the additional section, and refuses `db-a.example` itself (no recursors).
        let target = "db-a.example.";
        let fake = Fake::default()
            .with(
                Q,
                RecordType::SRV,
                Msg::ok(Q, RecordType::SRV).srv(3307, target).0,
            )
            .with(
                target,
                RecordType::A,
                Msg::new(target, RecordType::A, ResponseCode::Refused).0,
            )
            .with_system(
                "db-a.example",
                &[
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
                ],
            );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(looked.result, "ok");
        assert_eq!(
            candidates(&looked),
            vec![(addr([10, 0, 0, 7], 3307), "db-a.example".into())]
        );
        assert_eq!(fake.system_asked(), ["db-a.example"]);
        assert_eq!(
            fake.asked_names(),
            [Q],
            "the Consul server is asked only the SRV question"
        );

        // A name outside Consul asked of a server (no Consul domain): the server resolves it.
        let name = "_mysql._tcp.example.";
        let fake = Fake::default()
            .with(
                name,
                RecordType::SRV,
                Msg::ok(name, RecordType::SRV)
                    .answer(name, RData::SRV(SRV::new(1, 1, 3307, n(target))))
                    .0,
            )
            .with_a(target, [10, 0, 0, 8]);
        let looked = look(&fake, &n(name), DnsRecord::Srv, 3306).await;
        assert_eq!(
            candidates(&looked),
            vec![(addr([10, 0, 0, 8], 3307), "db-a.example".into())]
        );
        assert!(fake.system_asked().is_empty());
    }

    #[tokio::test]
    async fn srv_target_lookup_failure_keeps_the_last_primary() {
        let fake = Fake::default().with(
            Q,
            RecordType::SRV,
            Msg::ok(Q, RecordType::SRV).srv(3307, "db-a.example.").0,
        );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(looked.result, "error");
        assert!(unavailable(&looked).contains("db-a.example"));
    }

    #[tokio::test]
    async fn nxdomain_and_empty_answers_mean_no_primary() {
        for record in [DnsRecord::Srv, DnsRecord::A] {
            let mut fake = Fake::default();
            for qtype in [RecordType::SRV, RecordType::A, RecordType::AAAA] {
                fake = fake.with(Q, qtype, Msg::new(Q, qtype, ResponseCode::NXDomain).0);
            }
            let looked = look(&fake, &n(Q), record, 3306).await;
            assert_eq!(looked.result, "ok");
            assert_eq!(
                no_primary_reason(&looked),
                "primary.mysql.service.consul: NXDOMAIN (no healthy instance)"
            );
        }
        let mut fake = Fake::default();
        for qtype in [RecordType::SRV, RecordType::A, RecordType::AAAA] {
            fake = fake.with(Q, qtype, Msg::ok(Q, qtype).0);
        }
        for record in [DnsRecord::Srv, DnsRecord::A] {
            let looked = look(&fake, &n(Q), record, 3306).await;
            assert!(
                no_primary_reason(&looked).contains("no healthy instance"),
                "{looked:?}"
            );
        }
    }

    #[tokio::test]
    async fn nxdomain_outside_consul_does_not_claim_health() {
        let name = "db.example.";
        let fake = Fake::default().with(
            name,
            RecordType::SRV,
            Msg::new(name, RecordType::SRV, ResponseCode::NXDomain).0,
        );
        let looked = look(&fake, &n(name), DnsRecord::Srv, 3306).await;
        assert_eq!(
            no_primary_reason(&looked),
            "db.example: NXDOMAIN (no such record)"
        );
    }

    #[tokio::test]
    async fn servfail_refused_and_timeouts_are_unavailable_naming_server_and_rcode() {
        for (rcode, text) in [
            (ResponseCode::ServFail, "SERVFAIL"),
            (ResponseCode::Refused, "REFUSED"),
        ] {
            let fake =
                Fake::default().with(Q, RecordType::SRV, Msg::new(Q, RecordType::SRV, rcode).0);
            let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
            assert_eq!(looked.result, "error");
            let msg = unavailable(&looked);
            assert!(
                msg.starts_with(&format!(
                    "{text} from {SERVER} for primary.mysql.service.consul SRV"
                )),
                "{msg}"
            );
        }
        let looked = look(&Fake::default(), &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(looked.result, "error");
        assert!(unavailable(&looked).contains("no answer from 127.0.0.1:8600"));
    }

    #[tokio::test]
    async fn srv_port_zero_only_is_invalid_and_root_target_is_no_service() {
        let fake = Fake::default().with(
            Q,
            RecordType::SRV,
            Msg::ok(Q, RecordType::SRV)
                .srv(0, "db-a.node.dc1.consul.")
                .extra("db-a.node.dc1.consul.", a([127, 0, 0, 2]))
                .0,
        );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(looked.result, "invalid");
        assert!(unavailable(&looked).contains("port 0"), "{looked:?}");

        // One good record next to a port-0 one: the good one counts, the other is noted.
        let fake = Fake::default().with(
            Q,
            RecordType::SRV,
            Msg::ok(Q, RecordType::SRV)
                .srv(0, "db-a.node.dc1.consul.")
                .srv(3307, "db-b.node.dc1.consul.")
                .extra("db-b.node.dc1.consul.", a([127, 0, 0, 3]))
                .0,
        );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(candidates(&looked).len(), 1);
        assert_eq!(looked.notes.len(), 1);

        let fake = Fake::default().with(
            Q,
            RecordType::SRV,
            Msg::ok(Q, RecordType::SRV).srv(3307, ".").0,
        );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert!(no_primary_reason(&looked).contains("not available"));
    }

    #[tokio::test]
    async fn answers_for_another_name_are_invalid_not_no_primary() {
        let fake = Fake::default().with(
            Q,
            RecordType::SRV,
            Msg::ok(Q, RecordType::SRV)
                .answer(
                    "other.service.consul.",
                    RData::SRV(SRV::new(1, 1, 3307, n("db-a.node.dc1.consul."))),
                )
                .0,
        );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(looked.result, "invalid");
        assert!(unavailable(&looked).contains("other.service.consul"));
    }

    #[tokio::test]
    async fn a_mode_uses_default_port_and_prefers_ipv4() {
        let fake = Fake::default()
            .with(
                Q,
                RecordType::A,
                Msg::ok(Q, RecordType::A)
                    .answer(Q, a([127, 0, 0, 3]))
                    .answer(Q, a([127, 0, 0, 2]))
                    .0,
            )
            .with(
                Q,
                RecordType::AAAA,
                Msg::ok(Q, RecordType::AAAA)
                    .answer(Q, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)))
                    .0,
            );
        let looked = look(&fake, &n(Q), DnsRecord::A, 3310).await;
        assert_eq!(
            candidates(&looked),
            vec![
                (
                    addr([127, 0, 0, 2], 3310),
                    "primary.mysql.service.consul".into()
                ),
                (
                    addr([127, 0, 0, 3], 3310),
                    "primary.mysql.service.consul".into()
                ),
            ]
        );

        // IPv6-only.
        let fake = Fake::default()
            .with(Q, RecordType::A, Msg::ok(Q, RecordType::A).0)
            .with(
                Q,
                RecordType::AAAA,
                Msg::ok(Q, RecordType::AAAA)
                    .answer(Q, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)))
                    .0,
            );
        let looked = look(&fake, &n(Q), DnsRecord::A, 3310).await;
        assert_eq!(
            candidates(&looked),
            vec![(
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 3310),
                "primary.mysql.service.consul".into()
            )]
        );
    }

    #[tokio::test]
    async fn a_mode_with_one_family_failing_is_unavailable() {
        let fake = Fake::default().with(
            Q,
            RecordType::A,
            Msg::ok(Q, RecordType::A).answer(Q, a([127, 0, 0, 2])).0,
        );
        let looked = look(&fake, &n(Q), DnsRecord::A, 3306).await;
        assert_eq!(looked.result, "error");
        assert!(unavailable(&looked).contains("AAAA"));
    }

    #[tokio::test]
    async fn a_mode_with_only_unusable_addresses_is_invalid() {
        let fake = Fake::default()
            .with(
                Q,
                RecordType::A,
                Msg::ok(Q, RecordType::A).answer(Q, a([0, 0, 0, 0])).0,
            )
            .with(Q, RecordType::AAAA, Msg::ok(Q, RecordType::AAAA).0);
        let looked = look(&fake, &n(Q), DnsRecord::A, 3306).await;
        assert_eq!(looked.result, "invalid");
        assert!(unavailable(&looked).contains("0.0.0.0"));
    }

    #[tokio::test]
    async fn cname_out_of_consul_goes_to_the_system_resolver() {
        // Consul's A answer for a service registered by host name: a CNAME to it, no address.
        let target = "db1.example.";
        let fake = Fake::default()
            .with_cname(Q, target)
            .with_system("db1.example", &[IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]);
        let looked = look(&fake, &n(Q), DnsRecord::A, 3306).await;
        assert_eq!(
            candidates(&looked),
            vec![(addr([10, 1, 2, 3], 3306), "db1.example".into())]
        );
        assert!(
            !fake.asked_names().iter().any(|n| n.starts_with("db1")),
            "{:?}",
            fake.asked_names()
        );
        // Unresolvable: unavailable, naming the name.
        let fake = Fake::default().with_cname(Q, target);
        let looked = look(&fake, &n(Q), DnsRecord::A, 3306).await;
        assert_eq!(looked.result, "error");
        assert!(unavailable(&looked).contains("db1.example"), "{looked:?}");
    }

    #[tokio::test]
    async fn cname_to_a_name_answered_separately_is_followed() {
        // Outside the Consul domain, the chain is followed on the same server.
        let q = "primary.db.example.";
        let target = "db1.example.";
        let fake = Fake::default()
            .with_cname(q, target)
            .with_a(target, [10, 1, 2, 3]);
        let looked = look(&fake, &n(q), DnsRecord::A, 3306).await;
        assert_eq!(
            candidates(&looked),
            vec![(addr([10, 1, 2, 3], 3306), "db1.example".into())]
        );
    }

    #[tokio::test]
    async fn cname_loop_across_queries_ends() {
        let (x, y) = ("x.example.", "y.example.");
        let fake = Fake::default()
            .with(
                Q,
                RecordType::SRV,
                Msg::ok(Q, RecordType::SRV)
                    .answer(Q, RData::CNAME(CNAME(n(x))))
                    .0,
            )
            .with(
                x,
                RecordType::SRV,
                Msg::ok(x, RecordType::SRV)
                    .answer(x, RData::CNAME(CNAME(n(y))))
                    .0,
            )
            .with(
                y,
                RecordType::SRV,
                Msg::ok(y, RecordType::SRV)
                    .answer(y, RData::CNAME(CNAME(n(x))))
                    .0,
            );
        let looked = look(&fake, &n(Q), DnsRecord::Srv, 3306).await;
        assert_eq!(looked.result, "invalid");
        assert!(unavailable(&looked).contains("CNAME"), "{looked:?}");
        assert!(fake.asked() <= MAX_CNAME_HOPS);
    }

    #[test]
    fn describe_names_record_name_and_server() {
        let mut config = DnsConfig {
            name: Q.into(),
            server: Some(SERVER.parse().unwrap()),
            record: DnsRecord::Srv,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            default_port: 3306,
        };
        assert_eq!(
            describe(&config),
            "dns SRV primary.mysql.service.consul @127.0.0.1:8600"
        );
        config.server = None;
        config.record = DnsRecord::A;
        assert_eq!(
            describe(&config),
            "dns A/AAAA primary.mysql.service.consul @system resolver"
        );
    }
}
