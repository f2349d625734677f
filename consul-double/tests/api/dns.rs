use consul_double::DoubleConfig;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

use crate::common::*;

fn a_records(m: &hickory_proto::op::Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

async fn five_instances(d: &consul_double::ConsulDouble) {
    for i in 1..=5 {
        register(d, json!({"ID": format!("db{i}"), "Name": "db", "Port": 3300 + i,
            "Address": format!("127.0.0.{}", 10 + i), "Tags": if i == 1 { json!(["primary"]) } else { json!(["replica"]) },
            "Check": {"TTL": "30s", "Status": "passing"}}))
        .await;
    }
}

#[tokio::test]
async fn a_records_udp_limit_tcp_and_edns() {
    let d = start().await;
    five_instances(&d).await;
    let udp = dns(
        d.dns_addr(),
        "db.service.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(udp.metadata.response_code, ResponseCode::NoError);
    assert!(udp.metadata.authoritative);
    assert_eq!(udp.answers.len(), 3, "UDP without EDNS: at most 3 answers");
    assert!(!udp.metadata.truncation, "no TC unless enable_truncate");
    assert!(udp.answers.iter().all(|r| r.ttl == 0));
    let tcp = dns(
        d.dns_addr(),
        "db.service.consul.",
        RecordType::A,
        None,
        true,
    )
    .await;
    assert_eq!(
        a_records(&tcp),
        [
            "127.0.0.11",
            "127.0.0.12",
            "127.0.0.13",
            "127.0.0.14",
            "127.0.0.15"
        ]
    );
    let edns = dns(
        d.dns_addr(),
        "db.service.dc1.consul.",
        RecordType::A,
        Some(4096),
        false,
    )
    .await;
    assert_eq!(edns.answers.len(), 5);
    assert!(edns.edns.is_some());

    // Shuffled: over a few UDP queries the 3 answered differ.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        seen.insert(a_records(
            &dns(
                d.dns_addr(),
                "db.service.consul.",
                RecordType::A,
                None,
                false,
            )
            .await,
        ));
    }
    assert!(seen.len() > 1, "answers are shuffled");

    let d2 = start_with(DoubleConfig {
        enable_truncate: true,
        ..test_config()
    })
    .await;
    five_instances(&d2).await;
    let udp = dns(
        d2.dns_addr(),
        "db.service.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(udp.answers.len(), 3);
    assert!(udp.metadata.truncation);
}

#[tokio::test]
async fn tags_srv_and_rfc2782() {
    let d = start().await;
    five_instances(&d).await;
    let m = dns(
        d.dns_addr(),
        "primary.db.service.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(a_records(&m), ["127.0.0.11"]);
    let m = dns(
        d.dns_addr(),
        "_db._primary.service.consul.",
        RecordType::SRV,
        None,
        false,
    )
    .await;
    assert_eq!(m.answers.len(), 1);
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!("SRV expected: {m:?}")
    };
    assert_eq!((srv.priority, srv.weight, srv.port), (1, 1, 3301));
    assert_eq!(srv.target.to_ascii(), "7f00000b.addr.dc1.consul.");
    // The target's A record, plus the node's meta as TXT (enable_additional_node_meta_txt).
    let extra_a: Vec<_> = m
        .additionals
        .iter()
        .filter(|r| matches!(r.data, RData::A(_)))
        .collect();
    assert_eq!(extra_a.len(), 1);
    assert_eq!(extra_a[0].name.to_ascii(), "7f00000b.addr.dc1.consul.");
    assert!(matches!(&extra_a[0].data, RData::A(a) if a.0.to_string() == "127.0.0.11"));
    assert!(
        m.additionals
            .iter()
            .any(|r| matches!(&r.data, RData::TXT(_)))
    );
    let m = dns(
        d.dns_addr(),
        "_db._tcp.service.consul.",
        RecordType::SRV,
        None,
        true,
    )
    .await;
    assert_eq!(m.answers.len(), 5);

    // No service address: the target is the node, whose address is in the additional section.
    register(
        &d,
        json!({"ID": "web", "Name": "web", "Port": 8080, "Weights": {"Passing": 7, "Warning": 2},
        "Check": {"TTL": "30s", "Status": "passing"}}),
    )
    .await;
    let m = dns(
        d.dns_addr(),
        "web.service.consul.",
        RecordType::SRV,
        None,
        false,
    )
    .await;
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!()
    };
    assert_eq!((srv.weight, srv.port), (7, 8080));
    assert_eq!(srv.target.to_ascii(), "consul-double.node.dc1.consul.");
    assert!(
        m.additionals
            .iter()
            .any(|r| matches!(&r.data, RData::A(a) if a.0.to_string() == "127.0.0.1"))
    );
    // A instead of SRV never carries SRV records.
    let m = dns(
        d.dns_addr(),
        "web.service.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(a_records(&m), ["127.0.0.1"]);
    // Warning instances keep their warning weight.
    put_ok(&d, "/v1/agent/check/warn/service:web", "").await;
    let m = dns(
        d.dns_addr(),
        "web.service.consul.",
        RecordType::SRV,
        None,
        false,
    )
    .await;
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!()
    };
    assert_eq!(srv.weight, 2);
}

#[tokio::test]
async fn health_filtering_warning_answered_critical_dropped() {
    let d = start().await;
    five_instances(&d).await;
    put_ok(&d, "/v1/agent/check/warn/service:db2", "").await;
    put_ok(&d, "/v1/agent/check/fail/service:db3", "").await;
    put_ok(&d, "/v1/agent/service/maintenance/db4?enable=true", "").await;
    let m = dns(
        d.dns_addr(),
        "db.service.consul.",
        RecordType::A,
        None,
        true,
    )
    .await;
    assert_eq!(a_records(&m), ["127.0.0.11", "127.0.0.12", "127.0.0.15"]);

    let d2 = start_with(DoubleConfig {
        dns_only_passing: true,
        ..test_config()
    })
    .await;
    five_instances(&d2).await;
    put_ok(&d2, "/v1/agent/check/warn/service:db2", "").await;
    let m = dns(
        d2.dns_addr(),
        "db.service.consul.",
        RecordType::A,
        None,
        true,
    )
    .await;
    assert_eq!(
        a_records(&m),
        ["127.0.0.11", "127.0.0.13", "127.0.0.14", "127.0.0.15"]
    );

    // Node failure drops every instance on the node.
    d.faults().set_node_health("consul-double", "critical");
    let m = dns(
        d.dns_addr(),
        "db.service.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn nxdomain_refused_nodata_and_nodes() {
    let d = start().await;
    register(
        &d,
        json!({"ID": "db", "Name": "db", "Port": 1, "Check": {"TTL": "30s"}}),
    )
    .await;
    for name in [
        "db.service.consul.",
        "nope.service.consul.",
        "foo.consul.",
        "db.service.dc2.consul.",
    ] {
        let m = dns(d.dns_addr(), name, RecordType::A, None, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert_eq!(m.authorities.len(), 1, "{name}: SOA in authority");
        assert!(matches!(m.authorities[0].data, RData::SOA(_)));
        assert!(m.answers.is_empty());
    }
    let m = dns(d.dns_addr(), "example.com.", RecordType::A, None, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    put_ok(&d, "/v1/agent/check/pass/service:db", "").await;
    let m = dns(
        d.dns_addr(),
        "db.service.consul.",
        RecordType::AAAA,
        None,
        false,
    )
    .await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NoError,
        "no AAAA for an IPv4 instance"
    );
    assert!(m.answers.is_empty());
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));

    let m = dns(
        d.dns_addr(),
        "consul-double.node.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(a_records(&m), ["127.0.0.1"]);
    let m = dns(
        d.dns_addr(),
        "ghost.node.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = dns(
        d.dns_addr(),
        "7f000002.addr.dc1.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(a_records(&m), ["127.0.0.2"]);
    // Case-insensitive names.
    let m = dns(
        d.dns_addr(),
        "DB.Service.Consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(a_records(&m), ["127.0.0.1"]);
}

#[tokio::test]
async fn dns_faults() {
    let d = start().await;
    register(
        &d,
        json!({"ID": "db", "Name": "db", "Port": 1, "Check": {"TTL": "30s", "Status": "passing"}}),
    )
    .await;
    d.faults().dns_servfail(true);
    let m = dns(
        d.dns_addr(),
        "db.service.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    d.faults().dns_servfail(false);
    d.faults().pause();
    let pending = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        dns(
            d.dns_addr(),
            "db.service.consul.",
            RecordType::A,
            None,
            true,
        ),
    )
    .await;
    assert!(pending.is_err(), "paused DNS does not answer");
    d.faults().resume();
    let m = dns(
        d.dns_addr(),
        "db.service.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(a_records(&m), ["127.0.0.1"]);
    assert!(d.faults().request_count("dns:db.service.consul") >= 3);
}
