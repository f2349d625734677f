//! The Grafana dashboard (`deploy/grafana/consul-mysql-proxy.json`) against the real binary:
//! every metric its PromQL names must be one the proxy exports. The test drives one proxy
//! through a relayed connection, a failover to a dead backend and a refused, held, then
//! ERR-answered client, so that every metric family (labelled ones appear only once used)
//! is in `/metrics`; then each name in the dashboard must resolve to a family there, and each
//! family there must be on the dashboard (a new metric needs a panel).
//! It also checks the dashboard's shape: valid JSON, unique panel ids, a datasource everywhere.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use support::backends::{EchoBackend, closed_port, echoes, greeted};
use support::consul::TestConsul;
use support::proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(30);
const PREFIX: &str = "consul_mysql_proxy_";
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/consul-mysql-proxy.json"
);
/// The datasource every panel and query must use: the dashboard's `datasource` variable.
const DATASOURCE_UID: &str = "${datasource}";

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}"))
}

/// Every panel, rows and the panels nested in (collapsed) rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL expression: panel targets, annotations, and the queries of query variables
/// (`query` as a string or as `{ "query": … }`, and its `definition`).
fn expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.extend(t["expr"].as_str().map(str::to_owned));
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.extend(a["expr"].as_str().map(str::to_owned));
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = &v["query"];
            out.extend(q.as_str().or(q["query"].as_str()).map(str::to_owned));
            out.extend(v["definition"].as_str().map(str::to_owned));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The metric names an expression uses: identifiers starting with [`PREFIX`], outside string
/// literals (label values such as `reason="…"` are not names).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut quote = None;
    for c in expr.chars().chain([' ']) {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if word.starts_with(PREFIX) {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
    }
    names
}

/// Family name → type, from the `# TYPE` lines of an exposition.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

/// The family of `families` whose series Prometheus stores as `name`: a gauge under its own
/// name, a counter as `_total`, a histogram as `_bucket` / `_sum` / `_count`. A bare counter or
/// histogram family name is no series, so it has none.
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    let kind_of = |stem: &str| families.get(stem).map(String::as_str);
    if matches!(kind_of(name), Some("gauge" | "unknown")) {
        return Some(name);
    }
    [
        ("_total", &["counter"][..]),
        ("_bucket", &["histogram"]),
        ("_sum", &["histogram", "summary"]),
        ("_count", &["histogram", "summary"]),
    ]
    .into_iter()
    .find_map(|(suffix, kinds)| {
        name.strip_suffix(suffix)
            .filter(|stem| kind_of(stem).is_some_and(|k| kinds.contains(&k)))
    })
}

/// Names used by the dashboard's expressions that `exposition` does not export, with the
/// expression that names each.
fn missing(expressions: &[String], exposition: &str) -> Vec<(String, String)> {
    let families = families(exposition);
    let mut out = Vec::new();
    for e in expressions {
        for name in metric_names(e) {
            if family_of(&name, &families).is_none() {
                out.push((name, e.clone()));
            }
        }
    }
    out
}

#[test]
fn dashboard_is_valid_json_with_unique_ids_and_a_datasource_everywhere() {
    let d = dashboard();
    assert!(
        d["title"].is_string() && d["uid"].is_string(),
        "title and uid"
    );
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    let var = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "datasource")
        .expect("a `datasource` template variable");
    assert_eq!(var["type"], "datasource");
    assert_eq!(var["query"], "prometheus");

    let all = panels(&d);
    assert!(all.len() > 10, "{} panels", all.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?} has no numeric id"));
        assert!(ids.insert(id), "panel id {id} is used twice ({title:?})");
        assert_eq!(
            p["datasource"]["uid"], DATASOURCE_UID,
            "panel {title:?} has no datasource"
        );
        let w = p["gridPos"]["w"].as_u64().unwrap_or(0);
        assert!((1..=24).contains(&w), "panel {title:?}: gridPos.w {w}");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], DATASOURCE_UID,
                "a query of {title:?} has no datasource"
            );
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !metric_names(expr).is_empty(),
                "a query of {title:?} names no {PREFIX} metric: {expr:?}"
            );
        }
    }
}

#[test]
fn metric_names_and_series_resolution() {
    let expr = r#"sum by (le) (rate(consul_mysql_proxy_gap_seconds_bucket{reason="consul_mysql_proxy_not_a_name"}[5m])) / consul_mysql_proxy_up"#;
    assert_eq!(
        metric_names(expr).into_iter().collect::<Vec<_>>(),
        [
            "consul_mysql_proxy_gap_seconds_bucket",
            "consul_mysql_proxy_up"
        ]
    );
    let exposition = "# TYPE consul_mysql_proxy_gap_seconds histogram\n\
                      # TYPE consul_mysql_proxy_up gauge\n\
                      # TYPE consul_mysql_proxy_requests counter\n";
    let f = families(exposition);
    for ok in [
        "consul_mysql_proxy_gap_seconds_bucket",
        "consul_mysql_proxy_gap_seconds_sum",
        "consul_mysql_proxy_gap_seconds_count",
        "consul_mysql_proxy_up",
        "consul_mysql_proxy_requests_total",
    ] {
        assert!(family_of(ok, &f).is_some(), "{ok}");
    }
    for bad in [
        "consul_mysql_proxy_gap_seconds",
        "consul_mysql_proxy_requests",
        "consul_mysql_proxy_up_total",
        "consul_mysql_proxy_requests_bucket",
        "consul_mysql_proxy_typo_total",
    ] {
        assert_eq!(family_of(bad, &f), None, "{bad}");
    }
    // A misspelt name in a dashboard expression is reported.
    let exprs = vec!["rate(consul_mysql_proxy_request_total[1m])".to_owned()];
    assert_eq!(missing(&exprs, exposition).len(), 1);
}

#[tokio::test]
async fn every_metric_the_dashboard_names_is_exported() {
    let d = dashboard();
    let exprs = expressions(&d);
    let named: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(named.len() >= 10, "dashboard names only {named:?}");

    // Consul says: A (an echo backend) is the primary, B (a closed port) the standby.
    let a = EchoBackend::start().await;
    let b = closed_port();
    let consul = TestConsul::start().await;
    consul.register_pair(a.addr, b).await;
    let url = consul.http_url();
    let proxy = Proxy::start(&[
        "--consul",
        &url,
        "--hold-timeout",
        "1s",
        "--connect-timeout",
        "500ms",
    ]);
    proxy.wait_for_log("primary changed", T).await;

    // Relayed bytes both ways (counted when a connection ends), a per-backend connection gauge.
    let mut relayed = greeted(proxy.addr()).await;
    assert!(echoes(&mut relayed).await, "the echo backend answers");
    let mark = proxy.log.len();
    relayed.shutdown().await.unwrap();
    let mut rest = Vec::new();
    relayed.read_to_end(&mut rest).await.unwrap();
    proxy.wait_for_log_from(mark, "connection closed", T).await;
    // One more, open across the failover.
    let _open = greeted(proxy.addr()).await;

    // A failover to B: failovers, the gap histogram, a connection closed by the failover.
    let mark = proxy.log.len();
    consul.points_to_b().await;
    proxy.wait_for_log_from(mark, &format!("new={b}"), T).await;

    // A new client: the connect to B is refused, the client is held, and after hold_timeout
    // it gets an ERR packet.
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(T, refused.read_to_end(&mut answer))
        .await
        .expect("the held client is answered within hold_timeout")
        .expect("read the ERR packet");
    assert_eq!(answer.get(4), Some(&0xff), "an ERR packet: {answer:?}");

    let (status, exposition) = proxy.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let exported = families(&exposition);
    let absent = missing(&exprs, &exposition);
    assert!(
        absent.is_empty(),
        "the dashboard names metrics the proxy does not export:\n{}\n\nexported families: {:?}",
        absent
            .iter()
            .map(|(name, e)| format!("  {name}  in  {e}"))
            .collect::<Vec<_>>()
            .join("\n"),
        exported.keys().collect::<Vec<_>>()
    );
    // And the other way round: the dashboard shows every family the proxy exports.
    let shown: BTreeSet<&str> = named
        .iter()
        .filter_map(|n| family_of(n, &exported))
        .collect();
    let unused: Vec<_> = exported
        .keys()
        .filter(|f| !shown.contains(f.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "exported but not on the dashboard: {unused:?}"
    );
    eprintln!(
        "dashboard: {} expressions, {} metric names, all exported: {named:?}",
        exprs.len(),
        named.len()
    );
}
