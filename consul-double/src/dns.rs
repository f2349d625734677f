//! The DNS interface (UDP and TCP on one port), answering from the same health data as
//! `/v1/health/service`, the way Consul's `agent/dns.go` does (Consul: agent/dns.go
//! dispatch, serviceLookup, nodeLookup, preparedQueryLookup; names per
//! website/content/docs/services/discovery/dns-static-lookups.mdx):
//!
//! - `<svc>.service[.<dc>].consul`, `<tag>.<svc>.service[.<dc>].consul` and RFC 2782
//!   `_<svc>._<tag>[.service][.<dc>].consul` (tag `tcp` = no tag filter); tags and service
//!   names match case-insensitively.
//! - Instances with a critical check (any: node serfHealth, maintenance, service) are
//!   dropped; warning ones are answered unless `dns_only_passing`. Order is shuffled; TTL 0.
//! - A/AAAA: one record per distinct address (Service.Address, else Node.Address).
//!   SRV (only when asked): `1 <weight> <port> <target>` where the target is
//!   `<node>.node.<dc>.consul.` when the service has no address of its own and
//!   `<hex-ip>.addr.<dc>.consul.` when it has an IP address; the A/AAAA of the target (and
//!   the node's meta as TXT) go in the additional section.
//! - Nothing left → NXDOMAIN with the SOA in authority; records exist but none of the asked
//!   type → NOERROR with the SOA. Unknown names in `.consul` → NXDOMAIN; other zones → REFUSED.
//! - UDP without EDNS: at most `udp_answer_limit` (3) answers and 512 bytes; with EDNS up to
//!   the advertised size. TC is set only with `enable_truncate`. TCP: up to 64 KB.
//! - `<node>.node[.<dc>].consul` A/AAAA (+ TXT meta), `<hex>.addr[.<dc>].consul`, SOA, NS.
//! - `<query>.query[.<dc>].consul`: a prepared query's results, A/AAAA or SRV like a
//!   service lookup (agent/dns.go preparedQueryLookup).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::Shared;
use crate::catalog::{CRITICAL, HealthEntry, Node, PASSING, WARNING};
use crate::store::Store;

const DEFAULT_MAX_UDP_SIZE: usize = 512;
const MAX_UDP_DATAGRAM: usize = 65535 - 68;
/// Consul's hard cap on `udp_answer_limit`.
const MAX_UDP_ANSWER_LIMIT: usize = 8;

/// Binds UDP and TCP on the same port (retrying when `addr` has port 0 and the TCP side of a
/// fresh UDP port is taken).
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding DNS/UDP on {addr}"))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e).with_context(|| format!("binding DNS/TCP on {addr}")),
        }
    }
    Err(anyhow::anyhow!(
        "no port free for DNS on both UDP and TCP: {last_err:?}"
    ))
}

pub(crate) async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS/UDP receive failed");
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => return,
        };
        let packet = buf[..n].to_vec();
        let (sock, shared) = (sock.clone(), shared.clone());
        tokio::spawn(async move {
            if let Some(out) = answer(&shared, &packet, false).await
                && let Err(e) = sock.send_to(&out, peer).await
            {
                tracing::debug!(error = %e, %peer, "DNS/UDP send failed");
            }
        });
    }
}

pub(crate) async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (mut conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS/TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shared.shutdown.cancelled() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                let read = tokio::select! {
                    r = conn.read_exact(&mut len) => r,
                    _ = shared.shutdown.cancelled() => return,
                };
                if read.is_err() {
                    return;
                }
                let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
                if conn.read_exact(&mut packet).await.is_err() {
                    return;
                }
                let Some(out) = answer(&shared, &packet, true).await else {
                    return;
                };
                let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                if let Err(e) = conn.write_all(&framed).await {
                    tracing::debug!(error = %e, %peer, "DNS/TCP write failed");
                    return;
                }
            }
        });
    }
}

/// Decodes, applies faults, answers, encodes. None = send nothing.
async fn answer(shared: &Arc<Shared>, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "undecodable DNS query");
            return None;
        }
    };
    let qname = req
        .queries
        .first()
        .map(|q| q.name().to_ascii().to_ascii_lowercase())
        .unwrap_or_default();
    shared.faults.count(&format!("dns:{qname}"));
    tokio::select! {
        _ = shared.faults.wait_unpaused() => {}
        _ = shared.shutdown.cancelled() => return None,
    }
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = if shared.faults.dns_servfail() || shared.faults.fail_with().is_some() {
        let mut m = reply_to(&req);
        m.metadata.response_code = ResponseCode::ServFail;
        m
    } else {
        shared.read(|s| respond(s, &shared.cfg, &req, tcp))
    };
    tracing::debug!(name = %qname, rcode = ?resp.metadata.response_code, answers = resp.answers.len(), tcp, "DNS answer");
    match resp.to_vec() {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "failed to encode DNS answer");
            None
        }
    }
}

fn reply_to(req: &Message) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.message_type = MessageType::Response;
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.queries = req.queries.clone();
    m
}

fn fqdn(s: &str) -> Option<Name> {
    let s = if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    };
    Name::from_ascii(&s).ok()
}

fn soa(domain: &Name) -> Record {
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let ns = fqdn("ns.consul").expect("literal name");
    let mbox = fqdn("hostmaster.consul").expect("literal name");
    Record::from_rdata(
        domain.clone(),
        0,
        RData::SOA(SOA::new(ns, mbox, serial, 3600, 600, 86400, 0)),
    )
}

enum Outcome {
    Ok,
    NoData,
    NameError,
}

/// Builds the whole answer for one query (Consul's `handleQuery`).
pub(crate) fn respond(
    store: &Store,
    cfg: &crate::DoubleConfig,
    req: &Message,
    tcp: bool,
) -> Message {
    let mut resp = reply_to(req);
    let Some(q) = req.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    let qname = q.name().to_ascii();
    let lname = qname.trim_end_matches('.').to_ascii_lowercase();
    if lname != "consul" && !lname.ends_with(".consul") {
        resp.metadata.response_code = ResponseCode::Refused;
        return resp;
    }
    resp.metadata.authoritative = true;
    resp.metadata.recursion_available = false;
    let domain = fqdn("consul").expect("literal name");
    match q.query_type() {
        RecordType::SOA => {
            resp.answers.push(soa(&domain));
            let (ns, glue) = nameservers(store, cfg, &domain);
            resp.authorities.extend(ns);
            resp.additionals.extend(glue);
        }
        RecordType::NS => {
            let (ns, glue) = nameservers(store, cfg, &domain);
            resp.answers.extend(ns);
            resp.additionals.extend(glue);
        }
        RecordType::AXFR => resp.metadata.response_code = ResponseCode::NotImp,
        qtype => {
            let outcome = dispatch(store, cfg, q.name(), &lname, qtype, &mut resp);
            match outcome {
                Outcome::Ok => {}
                Outcome::NoData => resp.authorities.push(soa(&domain)),
                Outcome::NameError => {
                    resp.authorities.push(soa(&domain));
                    resp.metadata.response_code = ResponseCode::NXDomain;
                }
            }
        }
    }
    if let Some(edns) = &req.edns {
        let mut e = Edns::new();
        e.set_max_payload(edns.max_payload().max(512));
        resp.edns = Some(e);
    }
    let trimmed = if tcp {
        trim(
            &mut resp,
            65523,
            usize::MAX,
            if q.query_type() == RecordType::SRV {
                1024
            } else {
                4096
            },
        )
    } else {
        let mut max_size = DEFAULT_MAX_UDP_SIZE;
        if let Some(e) = &req.edns {
            max_size = max_size.max(e.max_payload() as usize);
        }
        let max_size = max_size.min(MAX_UDP_DATAGRAM);
        let max_answers = cfg.udp_answer_limit.min(MAX_UDP_ANSWER_LIMIT);
        let limit = if max_size == DEFAULT_MAX_UDP_SIZE {
            max_answers
        } else {
            usize::MAX
        };
        trim(&mut resp, max_size.saturating_sub(8), limit, usize::MAX)
    };
    if trimmed && cfg.enable_truncate {
        resp.metadata.truncation = true;
    }
    resp
}

fn encoded_len(m: &Message) -> usize {
    m.to_vec().map(|v| v.len()).unwrap_or(usize::MAX)
}

/// Consul's `syncExtra`: keep only the additional records that resolve SRV targets.
fn sync_extra(index: &HashMap<String, Record>, resp: &mut Message) {
    let mut seen = HashSet::new();
    let mut extra = Vec::new();
    for a in &resp.answers {
        if let RData::SRV(srv) = &a.data {
            let target = srv.target.to_ascii().to_ascii_lowercase();
            if seen.insert(target.clone())
                && let Some(r) = index.get(&target)
            {
                extra.push(r.clone());
            }
        }
    }
    resp.additionals = extra;
}

/// Trims answers (and matching additionals) to a count and a byte size. Returns true if any
/// answer was dropped.
fn trim(resp: &mut Message, max_size: usize, max_answers: usize, hard_cap: usize) -> bool {
    let original = resp.answers.len();
    let has_extra = !resp.additionals.is_empty();
    let mut index = HashMap::new();
    if has_extra {
        for r in &resp.additionals {
            index
                .entry(r.name.to_ascii().to_ascii_lowercase())
                .or_insert_with(|| r.clone());
        }
    }
    let cap = max_answers.min(hard_cap);
    if resp.answers.len() > cap {
        resp.answers.truncate(cap);
        if has_extra {
            sync_extra(&index, resp);
        }
    }
    while resp.answers.len() > 1 && encoded_len(resp) > max_size {
        resp.authorities.clear();
        resp.answers.pop();
        if has_extra {
            sync_extra(&index, resp);
        }
    }
    resp.answers.len() < original
}

fn nameservers(
    store: &Store,
    cfg: &crate::DoubleConfig,
    domain: &Name,
) -> (Vec<Record>, Vec<Record>) {
    let (_, entries) = store.health("consul", &[]);
    let mut ns = Vec::new();
    let mut glue = Vec::new();
    for e in entries.iter().take(3) {
        let Some(target) =
            fqdn(&format!("{}.node.{}.consul", e.node.name, cfg.datacenter).to_ascii_lowercase())
        else {
            continue;
        };
        ns.push(Record::from_rdata(
            domain.clone(),
            0,
            RData::NS(NS(target.clone())),
        ));
        if let Some(r) = ip_record(&e.node.address, RecordType::ANY, &target) {
            glue.push(r);
        }
    }
    (ns, glue)
}

/// Consul's `makeARecord`: which record an IP gives for a query type, if any.
fn ip_record(addr: &str, qtype: RecordType, name: &Name) -> Option<Record> {
    let ip: IpAddr = addr.parse().ok()?;
    let wants_any = matches!(
        qtype,
        RecordType::SRV | RecordType::ANY | RecordType::NS | RecordType::TXT
    );
    match ip {
        IpAddr::V4(v4) if wants_any || qtype == RecordType::A => {
            Some(Record::from_rdata(name.clone(), 0, RData::A(A(v4))))
        }
        IpAddr::V6(v6) if wants_any || qtype == RecordType::AAAA => {
            Some(Record::from_rdata(name.clone(), 0, RData::AAAA(AAAA(v6))))
        }
        _ => None,
    }
}

fn node_meta_txt(node: &Node, name: &Name) -> Vec<Record> {
    node.meta
        .iter()
        .map(|(k, v)| {
            let txt = if k.to_ascii_lowercase().starts_with("rfc1035-") {
                v.clone()
            } else {
                let key = k.replace('`', "``").replace('=', "`=");
                format!("{key}={}", v.replace('`', "``"))
            };
            Record::from_rdata(name.clone(), 0, RData::TXT(TXT::new(vec![txt])))
        })
        .collect()
}

/// Splits the labels before `.consul` into (kind, parts, suffixes) like Consul's `dispatch`.
fn split_query(lname: &str, qtype: RecordType) -> Option<(String, Vec<String>, Vec<String>)> {
    let inner = lname.strip_suffix("consul")?.trim_end_matches('.');
    let labels: Vec<String> = if inner.is_empty() {
        Vec::new()
    } else {
        inner.split('.').map(str::to_string).collect()
    };
    for i in (0..labels.len()).rev() {
        match labels[i].as_str() {
            "service" | "connect" | "virtual" | "ingress" | "node" | "query" | "addr" => {
                return Some((
                    labels[i].clone(),
                    labels[..i].to_vec(),
                    labels[i + 1..].to_vec(),
                ));
            }
            l if qtype == RecordType::SRV && l.starts_with('_') => {
                return Some((
                    "service".to_string(),
                    labels[..=i].to_vec(),
                    labels[i + 1..].to_vec(),
                ));
            }
            _ => {}
        }
    }
    None
}

fn dispatch(
    store: &Store,
    cfg: &crate::DoubleConfig,
    qname: &Name,
    lname: &str,
    qtype: RecordType,
    resp: &mut Message,
) -> Outcome {
    let Some((kind, parts, suffixes)) = split_query(lname, qtype) else {
        return Outcome::NameError;
    };
    let dc = match suffixes.len() {
        0 => cfg.datacenter.to_ascii_lowercase(),
        1 => suffixes[0].clone(),
        _ => return Outcome::NameError,
    };
    if dc != cfg.datacenter.to_ascii_lowercase() {
        // "No path to datacenter" maps to NXDOMAIN.
        return Outcome::NameError;
    }
    match kind.as_str() {
        "service" if !parts.is_empty() => {
            let n = parts.len();
            let (service, tag) = if n == 2 && parts[0].starts_with('_') && parts[1].starts_with('_')
            {
                let tag = &parts[1][1..];
                (
                    parts[0][1..].to_string(),
                    if tag == "tcp" {
                        String::new()
                    } else {
                        tag.to_string()
                    },
                )
            } else {
                (parts[n - 1].clone(), parts[..n - 1].join("."))
            };
            service_lookup(store, cfg, qname, qtype, &service, &tag, resp)
        }
        "query" if !parts.is_empty() => {
            query_lookup(store, cfg, qname, qtype, &parts.join("."), resp)
        }
        "node" if !parts.is_empty() => node_lookup(store, qname, qtype, &parts.join("."), resp),
        "addr" if parts.len() == 1 => addr_lookup(qname, qtype, &parts[0], resp),
        _ => Outcome::NameError,
    }
}

fn service_lookup(
    store: &Store,
    cfg: &crate::DoubleConfig,
    qname: &Name,
    qtype: RecordType,
    service: &str,
    tag: &str,
    resp: &mut Message,
) -> Outcome {
    let tags: Vec<String> = if tag.is_empty() {
        Vec::new()
    } else {
        vec![tag.to_string()]
    };
    let (_, mut entries) = store.health(service, &tags);
    entries.retain(|e| {
        e.checks
            .iter()
            .all(|c| c.status != CRITICAL && (!cfg.dns_only_passing || c.status == PASSING))
    });
    if entries.is_empty() {
        return Outcome::NameError;
    }
    fastrand::shuffle(&mut entries);
    entry_records(&entries, cfg, qname, qtype, resp)
}

/// `<query>.query[.<dc>].consul`: the prepared query's results, rendered like a service
/// lookup (Consul: agent/dns.go preparedQueryLookup → serviceSRVRecords /
/// serviceNodeRecords). The query's own `OnlyPassing` applies (not `dns_config.only_passing`);
/// its `DNS.TTL` is the records' TTL (0 when unset, the double's `service_ttl`); no results →
/// NXDOMAIN.
fn query_lookup(
    store: &Store,
    cfg: &crate::DoubleConfig,
    qname: &Name,
    qtype: RecordType,
    name: &str,
    resp: &mut Message,
) -> Outcome {
    let Some(q) = store.query_resolve(name) else {
        return Outcome::NameError;
    };
    let mut entries = store.query_execute(&q);
    if entries.is_empty() {
        return Outcome::NameError;
    }
    fastrand::shuffle(&mut entries);
    let ttl = crate::duration::parse_go(&q.dns_ttl)
        .ok()
        .map(|ns| (ns.max(0) / 1_000_000_000) as u32)
        .unwrap_or(0);
    let out = entry_records(&entries, cfg, qname, qtype, resp);
    for r in resp.answers.iter_mut().chain(resp.additionals.iter_mut()) {
        r.ttl = ttl;
    }
    out
}

/// The A/AAAA/CNAME or SRV answers for instances (Consul: agent/dns.go serviceNodeRecords,
/// serviceSRVRecords).
fn entry_records(
    entries: &[HealthEntry],
    cfg: &crate::DoubleConfig,
    qname: &Name,
    qtype: RecordType,
    resp: &mut Message,
) -> Outcome {
    let dc = cfg.datacenter.as_str();
    if qtype == RecordType::SRV {
        let mut handled = HashSet::new();
        for e in entries {
            let tuple = (
                e.node.name.clone(),
                e.service.address.clone(),
                e.service.port,
            );
            if !handled.insert(tuple) {
                continue;
            }
            let (answers, extra) = srv_records(e, qname, dc);
            resp.answers.extend(answers);
            resp.additionals.extend(extra);
            if let Some(nf) = fqdn(&format!("{}.node.{dc}.consul", e.node.name)) {
                resp.additionals.extend(node_meta_txt(&e.node, &nf));
            }
        }
    } else {
        let mut handled = HashSet::new();
        let mut cname: Option<Record> = None;
        for e in entries {
            let addr = if e.service.address.is_empty() {
                &e.node.address
            } else {
                &e.service.address
            };
            if addr.parse::<IpAddr>().is_err() {
                if cname.is_none()
                    && let Some(t) = fqdn(addr)
                {
                    cname = Some(Record::from_rdata(qname.clone(), 0, RData::CNAME(CNAME(t))));
                }
                continue;
            }
            if let Some(r) = ip_record(addr, qtype, qname)
                && handled.insert(addr.clone())
            {
                resp.answers.push(r);
            }
        }
        if resp.answers.is_empty() {
            resp.answers.extend(cname);
        }
    }
    if resp.answers.is_empty() {
        Outcome::NoData
    } else {
        Outcome::Ok
    }
}

/// SRV answer and its additional record(s) for one instance (Consul's `nodeServiceRecords`).
fn srv_records(e: &HealthEntry, qname: &Name, dc: &str) -> (Vec<Record>, Vec<Record>) {
    let weight = {
        let relevant = e
            .checks
            .iter()
            .filter(|c| c.service_name == e.service.name || c.service_name.is_empty());
        let statuses: Vec<&str> = relevant.map(|c| c.status.as_str()).collect();
        if statuses.contains(&CRITICAL) {
            0
        } else if statuses.contains(&WARNING) {
            e.service.weight_warning
        } else {
            e.service.weight_passing
        }
    };
    let weight = weight.clamp(0, u16::MAX as i64) as u16;
    let port = e.service.port;
    let (target, addr) = if e.service.address.is_empty() {
        if e.node.address.parse::<IpAddr>().is_err() {
            let Some(t) = fqdn(&e.node.address) else {
                return (vec![], vec![]);
            };
            let srv = SRV::new(1, weight, port, t);
            return (
                vec![Record::from_rdata(qname.clone(), 0, RData::SRV(srv))],
                vec![],
            );
        }
        (
            format!("{}.node.{dc}.consul", e.node.name),
            e.node.address.clone(),
        )
    } else if let Ok(ip) = e.service.address.parse::<IpAddr>() {
        let hex: String = match ip {
            IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
            IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
        };
        (format!("{hex}.addr.{dc}.consul"), e.service.address.clone())
    } else {
        let Some(t) = fqdn(&e.service.address) else {
            return (vec![], vec![]);
        };
        let srv = SRV::new(1, weight, port, t);
        return (
            vec![Record::from_rdata(qname.clone(), 0, RData::SRV(srv))],
            vec![],
        );
    };
    let Some(target) = fqdn(&target) else {
        return (vec![], vec![]);
    };
    let Some(extra) = ip_record(&addr, RecordType::SRV, &target) else {
        return (vec![], vec![]);
    };
    let srv = SRV::new(1, weight, port, target);
    (
        vec![Record::from_rdata(qname.clone(), 0, RData::SRV(srv))],
        vec![extra],
    )
}

fn node_lookup(
    store: &Store,
    qname: &Name,
    qtype: RecordType,
    node: &str,
    resp: &mut Message,
) -> Outcome {
    if !matches!(
        qtype,
        RecordType::ANY | RecordType::A | RecordType::AAAA | RecordType::TXT
    ) {
        return Outcome::Ok;
    }
    let Some(n) = store.nodes.get(&node.to_ascii_lowercase()) else {
        return Outcome::NameError;
    };
    if qtype != RecordType::TXT
        && let Some(r) = ip_record(&n.address, qtype, qname)
    {
        resp.answers.push(r);
    }
    let meta = node_meta_txt(n, qname);
    if matches!(qtype, RecordType::TXT | RecordType::ANY) {
        resp.answers.extend(meta);
    } else {
        resp.additionals.extend(meta);
    }
    Outcome::Ok
}

fn addr_lookup(qname: &Name, qtype: RecordType, hex: &str, resp: &mut Message) -> Outcome {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let Some(bytes) = bytes else {
        return Outcome::NameError;
    };
    let rec = match bytes.len() {
        4 => Record::from_rdata(
            qname.clone(),
            0,
            RData::A(A::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        ),
        16 => {
            let arr: [u8; 16] = bytes.try_into().expect("length checked");
            Record::from_rdata(
                qname.clone(),
                0,
                RData::AAAA(AAAA(std::net::Ipv6Addr::from(arr))),
            )
        }
        _ => return Outcome::Ok,
    };
    let wanted = match rec.record_type() {
        RecordType::A => matches!(qtype, RecordType::A | RecordType::ANY),
        _ => matches!(qtype, RecordType::AAAA | RecordType::ANY),
    };
    if wanted {
        resp.answers.push(rec);
    } else {
        resp.additionals.push(rec);
    }
    Outcome::Ok
}
