//! The pure half of DNS discovery: what one DNS response message says about a name, and how SRV
//! and A/AAAA records become [`Candidate`]s. No I/O, no clock; every function here takes
//! whatever a server sent (wrong names, loops, port 0, garbage addresses) without panicking.
//!
//! ```text
//! Message ──read_reply──▶ Reply { Records | Cname | NoData | NxDomain }  or  BadAnswer (rcode…)
//! SRV records ──srv_targets──▶ (target, port) + notes on what was skipped
//! addresses ──pick_address / address_candidates──▶ Candidate(s)
//! ```

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::CNAME;
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::control::primary::Backend;
use crate::control::selection::Candidate;

/// Longest CNAME chain followed, inside one answer and across follow-up queries together.
pub const MAX_CNAME_HOPS: usize = 8;

/// What one response says about the asked (name, type), once the rcode was acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Records of the asked type owned by `owner` (the end of the CNAME chain, or the name).
    Records { owner: Name, data: Vec<RData> },
    /// The answer is a CNAME chain ending at `next`, without records for it: ask for `next`.
    Cname { next: Name },
    /// NOERROR without records of the asked type (NODATA).
    NoData,
    /// NXDOMAIN: the name does not exist (Consul: no healthy instance).
    NxDomain,
}

/// A response that says nothing usable about the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    /// The server answered with an error code (SERVFAIL, REFUSED, FORMERR, …).
    #[error("{}", rcode_name(*.0))]
    Rcode(ResponseCode),
    /// The answer is inconsistent (records for other names, a CNAME loop, …).
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// The mnemonic of a response code, as `dig` prints it.
pub fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("rcode {} ({other})", u16::from(other)),
    }
}

/// A DNS name for logs and backend names: no trailing dot, lower case.
pub fn display_name(name: &Name) -> String {
    let ascii = name.to_ascii();
    let trimmed = ascii.strip_suffix('.').unwrap_or(&ascii);
    if trimmed.is_empty() {
        ".".into()
    } else {
        trimmed.to_ascii_lowercase()
    }
}

/// Reads the response to the question (`asked`, `qtype`): follows a CNAME chain inside the answer
/// section, keeps the records of the asked type at its end, ignores other sections.
pub fn read_reply(asked: &Name, qtype: RecordType, msg: &Message) -> Result<Reply, BadAnswer> {
    let nxdomain = match msg.metadata.response_code {
        ResponseCode::NoError => false,
        ResponseCode::NXDomain => true,
        rcode => return Err(BadAnswer::Rcode(rcode)),
    };
    let relevant = |r: &&Record| r.dns_class == DNSClass::IN;
    let mut owner = asked.clone();
    let mut chain = vec![owner.clone()];
    if qtype != RecordType::CNAME {
        while let Some(next) = msg
            .answers
            .iter()
            .filter(relevant)
            .find_map(|r| match &r.data {
                RData::CNAME(CNAME(target)) if r.name == owner => Some(target.clone()),
                _ => None,
            })
        {
            if chain.contains(&next) {
                return Err(BadAnswer::Malformed(format!(
                    "CNAME loop at {}",
                    display_name(&next)
                )));
            }
            if chain.len() > MAX_CNAME_HOPS {
                return Err(BadAnswer::Malformed(format!(
                    "CNAME chain from {} longer than {MAX_CNAME_HOPS}",
                    display_name(asked)
                )));
            }
            chain.push(next.clone());
            owner = next;
        }
    }
    if nxdomain {
        // The rcode is about the end of the chain; the name (or its target) does not exist.
        return Ok(Reply::NxDomain);
    }
    let data: Vec<RData> = msg
        .answers
        .iter()
        .filter(relevant)
        .filter(|r| r.name == owner && r.record_type() == qtype)
        .map(|r| r.data.clone())
        .collect();
    if !data.is_empty() {
        return Ok(Reply::Records { owner, data });
    }
    if let Some(stray) = msg
        .answers
        .iter()
        .find(|r| r.record_type() == qtype && !chain.contains(&r.name))
    {
        return Err(BadAnswer::Malformed(format!(
            "{qtype} record for {}, but the question was {}",
            display_name(&stray.name),
            display_name(asked)
        )));
    }
    if owner != *asked {
        return Ok(Reply::Cname { next: owner });
    }
    Ok(Reply::NoData)
}

/// One usable SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub target: Name,
    pub port: u16,
}

/// SRV records → usable targets (deduplicated, in answer order), plus why others were skipped.
/// `no_service` is true when a record had the target `.` (RFC 2782: decidedly not available).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvTargets {
    pub targets: Vec<SrvTarget>,
    pub skipped: Vec<String>,
    pub no_service: bool,
}

pub fn srv_targets(data: &[RData]) -> SrvTargets {
    let mut out = SrvTargets::default();
    for rdata in data {
        let RData::SRV(srv) = rdata else {
            out.skipped.push(format!("not an SRV record: {rdata}"));
            continue;
        };
        if srv.target.is_root() {
            out.no_service = true;
            out.skipped
                .push("SRV target \".\" (service not available)".into());
            continue;
        }
        if srv.port == 0 {
            out.skipped.push(format!(
                "SRV record {} with port 0",
                display_name(&srv.target)
            ));
            continue;
        }
        let target = SrvTarget {
            target: srv.target.clone(),
            port: srv.port,
        };
        if !out.targets.contains(&target) {
            out.targets.push(target);
        }
    }
    out
}

/// A and AAAA addresses of `name` found in `records` (e.g. the additional section).
pub fn addresses_of(name: &Name, records: &[Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter(|r| r.dns_class == DNSClass::IN && r.name == *name)
        .filter_map(|r| rdata_ip(&r.data))
        .collect()
}

/// The address in an A or AAAA record.
pub fn rdata_ip(data: &RData) -> Option<IpAddr> {
    match data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// An address a MySQL server can listen on (not 0.0.0.0, ::, multicast or broadcast).
pub fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The addresses that count for one name: the usable IPv4 ones if there are any, else the usable
/// IPv6 ones — a dual-stack host is one server, not two. Sorted and deduplicated, so a shuffled
/// answer gives the same result every time.
pub fn preferred(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let mut v4: Vec<IpAddr> = addrs
        .iter()
        .filter(|ip| ip.is_ipv4() && usable(ip))
        .copied()
        .collect();
    let mut chosen = if v4.is_empty() {
        addrs
            .iter()
            .filter(|ip| ip.is_ipv6() && usable(ip))
            .copied()
            .collect()
    } else {
        std::mem::take(&mut v4)
    };
    chosen.sort();
    chosen.dedup();
    chosen
}

/// One address for one SRV target: the lowest preferred one (stable across shuffled answers).
pub fn pick_address(addrs: &[IpAddr]) -> Option<IpAddr> {
    preferred(addrs).into_iter().next()
}

/// A candidate named after `host` (SRV target or A name), which is also its `node`.
pub fn candidate(host: &Name, addr: SocketAddr) -> Candidate {
    let name = display_name(host);
    Candidate {
        backend: Backend::new(addr, name.as_str()),
        node: name.into(),
        priority: None,
    }
}

/// A/AAAA mode: every preferred address of `name` is one candidate on `port`.
pub fn address_candidates(name: &Name, addrs: &[IpAddr], port: u16) -> Vec<Candidate> {
    preferred(addrs)
        .into_iter()
        .map(|ip| candidate(name, SocketAddr::new(ip, port)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_resolver::proto::op::{MessageType, OpCode, Query};
    use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV, TXT};

    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    fn response(q: &str, qtype: RecordType, rcode: ResponseCode, answers: Vec<Record>) -> Message {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.add_query(Query::query(n(q), qtype));
        m.add_answers(answers);
        m
    }

    fn rec(name: &str, data: RData) -> Record {
        Record::from_rdata(n(name), 0, data)
    }

    fn a(name: &str, ip: [u8; 4]) -> Record {
        rec(name, RData::A(A(Ipv4Addr::from(ip))))
    }

    fn srv(name: &str, port: u16, target: &str) -> Record {
        rec(name, RData::SRV(SRV::new(1, 1, port, n(target))))
    }

    fn cname(name: &str, target: &str) -> Record {
        rec(name, RData::CNAME(CNAME(n(target))))
    }

    const Q: &str = "primary.mysql.service.consul.";

    #[test]
    fn records_of_the_asked_type() {
        let m = response(
            Q,
            RecordType::A,
            ResponseCode::NoError,
            vec![
                a(Q, [127, 0, 0, 2]),
                rec(Q, RData::TXT(TXT::new(vec!["x".into()]))),
            ],
        );
        let Ok(Reply::Records { owner, data }) = read_reply(&n(Q), RecordType::A, &m) else {
            panic!("records expected");
        };
        assert_eq!(owner, n(Q));
        assert_eq!(data, vec![RData::A(A(Ipv4Addr::new(127, 0, 0, 2)))]);
    }

    #[test]
    fn names_compare_case_insensitively() {
        let m = response(
            Q,
            RecordType::A,
            ResponseCode::NoError,
            vec![a("PRIMARY.mysql.Service.consul.", [127, 0, 0, 2])],
        );
        assert!(matches!(
            read_reply(&n(Q), RecordType::A, &m),
            Ok(Reply::Records { .. })
        ));
    }

    #[test]
    fn nxdomain_and_nodata() {
        let m = response(Q, RecordType::SRV, ResponseCode::NXDomain, vec![]);
        assert_eq!(read_reply(&n(Q), RecordType::SRV, &m), Ok(Reply::NxDomain));
        let m = response(Q, RecordType::SRV, ResponseCode::NoError, vec![]);
        assert_eq!(read_reply(&n(Q), RecordType::SRV, &m), Ok(Reply::NoData));
        // Records of another type for the name: still no data of the asked type.
        let m = response(
            Q,
            RecordType::AAAA,
            ResponseCode::NoError,
            vec![a(Q, [127, 0, 0, 2])],
        );
        assert_eq!(read_reply(&n(Q), RecordType::AAAA, &m), Ok(Reply::NoData));
    }

    #[test]
    fn error_rcodes_are_bad_answers_named_like_dig() {
        for (rcode, text) in [
            (ResponseCode::ServFail, "SERVFAIL"),
            (ResponseCode::Refused, "REFUSED"),
            (ResponseCode::FormErr, "FORMERR"),
            (ResponseCode::NotImp, "NOTIMP"),
        ] {
            let m = response(Q, RecordType::SRV, rcode, vec![]);
            let err = read_reply(&n(Q), RecordType::SRV, &m).unwrap_err();
            assert_eq!(err, BadAnswer::Rcode(rcode));
            assert_eq!(err.to_string(), text);
        }
        assert!(rcode_name(ResponseCode::Unknown(3841)).contains("3841"));
    }

    #[test]
    fn answers_for_another_name_are_malformed() {
        let m = response(
            Q,
            RecordType::A,
            ResponseCode::NoError,
            vec![a("evil.example.", [10, 0, 0, 1])],
        );
        let err = read_reply(&n(Q), RecordType::A, &m).unwrap_err();
        assert!(
            matches!(&err, BadAnswer::Malformed(m) if m.contains("evil.example")),
            "{err}"
        );
        // Mixed: the record for the right name counts, the stray one is ignored.
        let m = response(
            Q,
            RecordType::A,
            ResponseCode::NoError,
            vec![a("evil.example.", [10, 0, 0, 1]), a(Q, [127, 0, 0, 2])],
        );
        let Ok(Reply::Records { data, .. }) = read_reply(&n(Q), RecordType::A, &m) else {
            panic!("records expected");
        };
        assert_eq!(data.len(), 1);
    }

    #[test]
    fn cname_chain_inside_the_answer_is_followed() {
        let m = response(
            Q,
            RecordType::A,
            ResponseCode::NoError,
            vec![
                cname("db.example.", "db1.example."),
                a("db1.example.", [127, 0, 0, 3]),
                cname(Q, "db.example."),
            ],
        );
        let Ok(Reply::Records { owner, data }) = read_reply(&n(Q), RecordType::A, &m) else {
            panic!("records expected");
        };
        assert_eq!(owner, n("db1.example."));
        assert_eq!(data.len(), 1);
    }

    #[test]
    fn cname_without_target_records_asks_for_the_target() {
        let m = response(
            Q,
            RecordType::A,
            ResponseCode::NoError,
            vec![cname(Q, "db.example.")],
        );
        assert_eq!(
            read_reply(&n(Q), RecordType::A, &m),
            Ok(Reply::Cname {
                next: n("db.example.")
            })
        );
        // NXDOMAIN at the end of a chain is NXDOMAIN.
        let m = response(
            Q,
            RecordType::A,
            ResponseCode::NXDomain,
            vec![cname(Q, "gone.example.")],
        );
        assert_eq!(read_reply(&n(Q), RecordType::A, &m), Ok(Reply::NxDomain));
    }

    #[test]
    fn cname_loops_and_long_chains_are_malformed_not_a_hang() {
        let m = response(
            Q,
            RecordType::A,
            ResponseCode::NoError,
            vec![cname(Q, "x.example."), cname("x.example.", Q)],
        );
        assert!(matches!(
            read_reply(&n(Q), RecordType::A, &m),
            Err(BadAnswer::Malformed(m)) if m.contains("loop")
        ));
        let mut chain = vec![cname(Q, "c0.example.")];
        for i in 0..20 {
            chain.push(cname(
                &format!("c{i}.example."),
                &format!("c{}.example.", i + 1),
            ));
        }
        let m = response(Q, RecordType::A, ResponseCode::NoError, chain);
        assert!(matches!(
            read_reply(&n(Q), RecordType::A, &m),
            Err(BadAnswer::Malformed(m)) if m.contains("longer than")
        ));
    }

    #[test]
    fn srv_port_zero_root_target_and_duplicates() {
        let data: Vec<RData> = [
            srv(Q, 0, "db-a.node.dc1.consul."),
            srv(Q, 3306, "db-b.node.dc1.consul."),
            srv(Q, 3306, "db-b.node.dc1.consul."),
            srv(Q, 3306, "."),
            a(Q, [127, 0, 0, 1]),
        ]
        .into_iter()
        .map(|r| r.data)
        .collect();
        let t = srv_targets(&data);
        assert_eq!(
            t.targets,
            vec![SrvTarget {
                target: n("db-b.node.dc1.consul."),
                port: 3306
            }]
        );
        assert!(t.no_service);
        assert_eq!(t.skipped.len(), 3, "{:?}", t.skipped);
        assert!(t.skipped[0].contains("port 0"));
    }

    #[test]
    fn addresses_come_from_records_of_the_target_only() {
        let records = vec![
            a("db-a.node.dc1.consul.", [127, 0, 0, 2]),
            a("db-b.node.dc1.consul.", [127, 0, 0, 3]),
            rec(
                "db-a.node.dc1.consul.",
                RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
            ),
            rec(
                "db-a.node.dc1.consul.",
                RData::TXT(TXT::new(vec!["rack=1".into()])),
            ),
        ];
        let addrs = addresses_of(&n("db-a.node.dc1.consul."), &records);
        assert_eq!(addrs.len(), 2);
        assert_eq!(
            pick_address(&addrs),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            "IPv4 first: a dual-stack target is one server"
        );
        let v6_only = [IpAddr::V6(Ipv6Addr::LOCALHOST)];
        assert_eq!(pick_address(&v6_only), Some(v6_only[0]));
        let junk = [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ];
        assert_eq!(pick_address(&junk), None);
    }

    #[test]
    fn address_candidates_are_stable_under_shuffling() {
        let name = n(Q);
        let x = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
        let y = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let one = address_candidates(&name, &[x, y, v6, x], 3306);
        let two = address_candidates(&name, &[y, v6, x], 3306);
        assert_eq!(one, two);
        assert_eq!(one.len(), 2, "IPv6 is ignored when IPv4 answers exist");
        assert_eq!(one[0].backend.addr, SocketAddr::new(y, 3306));
        assert_eq!(&*one[0].node, "primary.mysql.service.consul");
        assert_eq!(&*one[0].backend.name, "primary.mysql.service.consul");
    }

    #[test]
    fn display_name_drops_the_root_dot() {
        assert_eq!(display_name(&n("Db-A.node.consul.")), "db-a.node.consul");
        assert_eq!(display_name(&Name::root()), ".");
    }
}
