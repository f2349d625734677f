//! Prepared queries (Consul: agent/prepared_query_endpoint.go,
//! agent/consul/prepared_query_endpoint.go, website/content/api-docs/query.mdx) and their
//! DNS form `<name>.query[.<dc>].consul` (agent/dns.go preparedQueryLookup); plus the DNS
//! service name forms with a datacenter label (dns-static-lookups.mdx).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

use crate::common::*;

async fn instances(d: &consul_double::ConsulDouble) {
    for (i, tags, status) in [
        (1, json!(["primary", "v8"]), "passing"),
        (2, json!(["replica", "v8"]), "warning"),
        (3, json!(["replica"]), "critical"),
    ] {
        register(
            d,
            json!({"ID": format!("db{i}"), "Name": "db", "Port": 3300 + i,
                   "Address": format!("127.0.0.{}", 10 + i), "Tags": tags,
                   "Check": {"TTL": "60s", "Status": status}}),
        )
        .await;
    }
}

fn targets(m: &hickory_proto::op::Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::SRV(s) => Some(format!("{}:{}", s.target, s.port)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn create_get_list_execute_delete() {
    let d = start().await;
    instances(&d).await;
    let body = json!({
        "Name": "mysql-primary",
        "Service": {
            "Service": "db",
            "Tags": ["primary"],
            "OnlyPassing": true,
            "Failover": {"NearestN": 3, "Datacenters": ["dc2", "dc3"]},
        },
        "DNS": {"TTL": "10s"},
    });
    let r = request(
        d.http_addr(),
        "POST",
        "/v1/query",
        body.to_string().as_bytes(),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["ID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);

    // GET by ID: the stored definition, failover fields kept.
    let v = get(&d, &format!("/v1/query/{id}")).await.json();
    assert_eq!(v[0]["Name"], "mysql-primary");
    assert_eq!(v[0]["Service"]["Failover"]["NearestN"], 3);
    assert_eq!(
        v[0]["Service"]["Failover"]["Datacenters"],
        json!(["dc2", "dc3"])
    );
    assert_eq!(v[0]["DNS"]["TTL"], "10s");
    assert_eq!(
        get(&d, "/v1/query").await.json().as_array().unwrap().len(),
        1
    );

    // Execute by name or ID.
    for key in ["mysql-primary", "MYSQL-PRIMARY", id.as_str()] {
        let r = get(&d, &format!("/v1/query/{key}/execute")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["Service"], "db");
        assert_eq!(v["Datacenter"], "dc1");
        assert_eq!(v["Failovers"], 0);
        assert_eq!(v["DNS"]["TTL"], "10s");
        assert_eq!(ids(&v["Nodes"]), vec!["db1"]);
        assert!(v["Nodes"][0]["Checks"].as_array().unwrap().len() >= 2);
        assert_eq!(r.header("X-Consul-Index"), Some("1"));
    }
    // Without OnlyPassing, warning instances are kept and critical ones dropped; `!tag`
    // excludes (tagFilter).
    let body = json!({"Name": "replicas", "Service": {"Service": "db", "Tags": ["!primary"]}});
    assert_eq!(put(&d, "/v1/query", "").await.status, 405);
    let r = request(
        d.http_addr(),
        "POST",
        "/v1/query",
        body.to_string().as_bytes(),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let v = get(&d, "/v1/query/replicas/execute").await.json();
    assert_eq!(ids(&v["Nodes"]), vec!["db2"]);
    let v = get(&d, "/v1/query/replicas/execute?limit=0").await.json();
    assert_eq!(ids(&v["Nodes"]).len(), 1);

    // Errors as Consul words them.
    let r = get(&d, "/v1/query/nope/execute").await;
    assert_eq!((r.status, r.text()), (404, "Query not found".into()));
    let r = request(
        d.http_addr(),
        "POST",
        "/v1/query",
        json!({"Name": "x", "Service": {}}).to_string().as_bytes(),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (500, "Must provide a Service name to query".into())
    );
    let r = request(
        d.http_addr(),
        "POST",
        "/v1/query",
        json!({"Name": "replicas", "Service": {"Service": "db"}})
            .to_string()
            .as_bytes(),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (500, "name 'replicas' aliases an existing query name".into())
    );
    let r = request(
        d.http_addr(),
        "POST",
        "/v1/query",
        json!({"Service": {"Service": "db", "Failover": {"NearestN": -1}}})
            .to_string()
            .as_bytes(),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (500, "Bad NearestN '-1', must be >= 0".into())
    );

    let r = delete(&d, &format!("/v1/query/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&d, &format!("/v1/query/{id}")).await.status, 404);
}

#[tokio::test]
async fn dns_query_lookup_a_and_srv() {
    let d = start().await;
    instances(&d).await;
    let body = json!({"Name": "mysql-primary", "Service": {"Service": "db", "Tags": ["primary"]},
                      "DNS": {"TTL": "7s"}});
    let r = request(
        d.http_addr(),
        "POST",
        "/v1/query",
        body.to_string().as_bytes(),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    for name in [
        "mysql-primary.query.consul.",
        "mysql-primary.query.dc1.consul.",
    ] {
        let m = dns(d.dns_addr(), name, RecordType::A, None, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(targets(&m), vec!["127.0.0.11"], "{name}");
        assert!(m.answers.iter().all(|r| r.ttl == 7), "TTL from DNS.TTL");
        let m = dns(d.dns_addr(), name, RecordType::SRV, None, false).await;
        assert_eq!(
            targets(&m),
            vec!["7f00000b.addr.dc1.consul.:3301"],
            "{name}"
        );
    }
    let m = dns(
        d.dns_addr(),
        "nope.query.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // A query whose results are all unhealthy: NXDOMAIN.
    let body = json!({"Name": "down", "Service": {"Service": "db", "Tags": ["replica"], "OnlyPassing": true}});
    request(
        d.http_addr(),
        "POST",
        "/v1/query",
        body.to_string().as_bytes(),
        &[],
    )
    .await;
    let m = dns(
        d.dns_addr(),
        "down.query.consul.",
        RecordType::A,
        None,
        false,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

/// `<service>.service.<dc>.consul`, `<tag>.<service>.service[.<dc>].consul` and RFC 2782
/// `_<service>._tcp.service[.<dc>].consul` / `_<service>._<tag>…` (Consul: agent/dns.go
/// dispatch; website/content/docs/services/discovery/dns-static-lookups.mdx).
#[tokio::test]
async fn dns_service_names_with_datacenter() {
    let d = start().await;
    instances(&d).await;
    let cases: [(&str, RecordType, Vec<&str>); 8] = [
        (
            "db.service.dc1.consul.",
            RecordType::A,
            vec!["127.0.0.11", "127.0.0.12"],
        ),
        (
            "primary.db.service.consul.",
            RecordType::A,
            vec!["127.0.0.11"],
        ),
        (
            "primary.db.service.dc1.consul.",
            RecordType::A,
            vec!["127.0.0.11"],
        ),
        (
            "replica.db.service.dc1.consul.",
            RecordType::A,
            vec!["127.0.0.12"],
        ),
        (
            "_db._tcp.service.consul.",
            RecordType::SRV,
            vec![
                "7f00000b.addr.dc1.consul.:3301",
                "7f00000c.addr.dc1.consul.:3302",
            ],
        ),
        (
            "_db._tcp.service.dc1.consul.",
            RecordType::SRV,
            vec![
                "7f00000b.addr.dc1.consul.:3301",
                "7f00000c.addr.dc1.consul.:3302",
            ],
        ),
        (
            "_db._primary.service.dc1.consul.",
            RecordType::SRV,
            vec!["7f00000b.addr.dc1.consul.:3301"],
        ),
        (
            "DB.Service.DC1.Consul.",
            RecordType::A,
            vec!["127.0.0.11", "127.0.0.12"],
        ),
    ];
    for (name, qtype, want) in cases {
        let m = dns(d.dns_addr(), name, qtype, None, true).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(targets(&m), want, "{name}");
    }
    for name in [
        "db.service.dc2.consul.",
        "primary.db.service.dc2.consul.",
        "_db._tcp.service.dc2.consul.",
    ] {
        let qtype = if name.starts_with('_') {
            RecordType::SRV
        } else {
            RecordType::A
        };
        let m = dns(d.dns_addr(), name, qtype, None, false).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
}
