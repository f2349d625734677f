//! Several routes in one process (`[[route]]` tables): two clusters each following its own
//! failover, metrics labelled by route, `/status` listing every route, SIGHUP adding, changing and
//! removing routes without touching the connections of the others, and validation that names the
//! route and the field. Real MariaDB servers, the Consul double (or a real agent).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::consul::{ServiceDef, TestConsul};
use support::mariadb::{MariaDb, app_opts, try_port_via, wait_reaches};
use support::proxy::{Proxy, run_to_exit};
use support::replica_set::{ReplicaSet, server_id_via};

use mysql_async::prelude::Queryable;

const T: Duration = Duration::from_secs(30);

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Registers instance `id` of `service` (tag `primary`) at `addr`, its TTL check `status`.
async fn register(consul: &TestConsul, service: &str, id: &str, addr: SocketAddr, status: &str) {
    consul
        .register(&ServiceDef::ttl_instance(service, id, addr).status(status))
        .await;
    if status == "passing" {
        consul.check_pass(&format!("service:{id}")).await;
    }
}

/// The address each route listens on, from `/status`.
async fn route_addr(proxy: &Proxy, name: &str) -> SocketAddr {
    let (_, body) = proxy.admin_get("/status").await;
    let status = json(&body);
    let routes = status["routes"].as_array().expect("routes listed");
    let route = routes
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {status}"));
    route["listen"].as_str().unwrap().parse().unwrap()
}

/// Polls until a TCP connect to `addr` is refused (its listening socket is closed).
async fn stops_accepting(addr: SocketAddr) -> bool {
    let start = Instant::now();
    while start.elapsed() < T {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    false
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn two_clusters_in_one_process_each_follow_their_own_failover() {
    let consul = TestConsul::start().await;
    let ip = "127.0.0.1".parse().unwrap();
    let (a1, a2, b1, b2) = tokio::join!(
        MariaDb::start(ip),
        MariaDb::start(ip),
        MariaDb::start(ip),
        MariaDb::start(ip)
    );
    register(&consul, "mysql-a", "a1", a1.addr(), "passing").await;
    register(&consul, "mysql-a", "a2", a2.addr(), "critical").await;
    register(&consul, "mysql-b", "b1", b1.addr(), "passing").await;
    register(&consul, "mysql-b", "b2", b2.addr(), "critical").await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    write(
        &file,
        &format!(
            "consul = [\"{}\"]\ntag = [\"primary\"]\nhold_timeout = \"20s\"\nmax_connections = 1000\n\n\
             [[route]]\nname = \"cluster-a\"\nservice = \"mysql-a\"\n\n\
             [[route]]\nname = \"cluster-b\"\nservice = \"mysql-b\"\n\n\
             [[route]]\nname = \"cluster-a-batch\"\nservice = \"mysql-a\"\nhold_timeout = \"60s\"\n",
            consul.http_url()
        ),
    );
    let proxy = Proxy::start(&["--config", file.to_str().unwrap()]);
    let (via_a, via_b) = (
        route_addr(&proxy, "cluster-a").await,
        route_addr(&proxy, "cluster-b").await,
    );
    assert_ne!(via_a, via_b);
    wait_reaches(via_a, a1.port(), &proxy).await;
    wait_reaches(via_b, b1.port(), &proxy).await;

    // An open session on cluster B, to see that A's failover leaves it alone.
    let mut on_b = mysql_async::Conn::new(app_opts(via_b)).await.unwrap();

    consul.check_fail("service:a1").await;
    consul.check_pass("service:a2").await;
    let took_a = wait_reaches(via_a, a2.port(), &proxy).await;
    let via_a_batch = route_addr(&proxy, "cluster-a-batch").await;
    wait_reaches(via_a_batch, a2.port(), &proxy).await;
    let port_b: Option<u16> = on_b.query_first("SELECT @@port").await.unwrap();
    assert_eq!(
        port_b,
        Some(b1.port()),
        "cluster B's session survived A's failover"
    );
    assert_eq!(
        try_port_via(via_b).await.unwrap(),
        b1.port(),
        "B did not move"
    );

    consul.check_fail("service:b1").await;
    consul.check_pass("service:b2").await;
    let took_b = wait_reaches(via_b, b2.port(), &proxy).await;
    assert_eq!(
        try_port_via(via_a).await.unwrap(),
        a2.port(),
        "A did not move"
    );
    assert!(
        on_b.query_first::<u16, _>("SELECT @@port").await.is_err(),
        "B's old session was closed by B's failover (on_failover = close)"
    );

    // cluster-a and cluster-a-batch ask Consul the same question: one blocking query serves
    // both, so no index is asked twice (double only: a real agent keeps no request log).
    if let Some(seen) = consul.requests("/v1/health/service/mysql-a") {
        let mut indexes: Vec<&str> = seen.iter().filter_map(|r| r.param("index")).collect();
        let asked = indexes.len();
        indexes.sort();
        indexes.dedup();
        assert_eq!(indexes.len(), asked, "one watch for two routes: {seen:?}");
        assert!(asked >= 2, "the failover was watched: {seen:?}");
    }

    // Metrics: every series labelled with its route, one failover each.
    let (_, metrics) = proxy.admin_get("/metrics").await;
    for route in ["cluster-a", "cluster-b"] {
        let line = format!("consul_mysql_proxy_failovers_total{{route=\"{route}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    assert_eq!(
        metrics
            .matches("# TYPE consul_mysql_proxy_failovers counter")
            .count(),
        1,
        "one family, two series"
    );
    let (code, ready) = proxy.admin_get("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(
        ready.contains("route cluster-a: ready") && ready.contains("route cluster-b: ready"),
        "{ready}"
    );
    let (_, body) = proxy.admin_get("/status").await;
    let status = json(&body);
    // Named `<node>/<service ID>`.
    let primary_of = |i: usize| {
        status["routes"][i]["primary"]["name"]
            .as_str()
            .unwrap_or_default()
    };
    assert!(primary_of(0).ends_with("/a2"), "{status}");
    assert!(primary_of(1).ends_with("/b2"), "{status}");
    // The status page lists every route.
    let (_, page) = proxy.admin_get("/").await;
    assert!(page.contains("id=\"routes\""), "{page}");
    for name in ["cluster-a", "cluster-b", "cluster-a-batch", "mysql-b"] {
        assert!(page.contains(name), "{name} missing from the page");
    }
    // Log lines carry the route's name.
    let log = proxy.log.text();
    assert!(
        log.lines()
            .any(|l| l.contains("route=cluster-a") && l.contains("primary changed")),
        "{log}"
    );
    eprintln!("two clusters: A followed its failover in {took_a:?}, B in {took_b:?}");
}

/// MySQL Router's 6446/6447 in one process: a read-write route on the primary and a read-only
/// route over the replicas (least-connections), falling back to the primary when no replica is
/// healthy.
#[tokio::test]
async fn read_write_and_read_only_routes_with_fallback_to_the_primary() {
    let consul = TestConsul::start().await;
    let set = ReplicaSet::start(2).await;
    set.register(&consul).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    write(
        &file,
        &format!(
            "consul = [\"{}\"]\nservice = \"mysql\"\nhold_timeout = \"20s\"\n\n\
             [[route]]\nname = \"main-rw\"\ntag = [\"primary\"]\nrole = \"primary\"\n\n\
             [[route]]\nname = \"main-ro\"\ntag = [\"replica\"]\nrole = \"replica\"\n\
             balance = \"least-connections\"\nfallback = \"main-rw\"\n",
            consul.http_url()
        ),
    );
    let proxy = Proxy::start(&["--config", file.to_str().unwrap()]);
    let (rw, ro) = (
        route_addr(&proxy, "main-rw").await,
        route_addr(&proxy, "main-ro").await,
    );
    wait_reaches(rw, set.primary.port(), &proxy).await;

    // 8 readers spread over both replicas; none reaches the primary.
    let start = Instant::now();
    let mut readers = Vec::new();
    while readers.len() < 8 {
        let (conn, id) = server_id_via(ro).await.unwrap();
        match set.replica_with(id) {
            Some(replica) => readers.push((conn, replica)),
            // The pool may still be filling at start-up: only the fallback answers then.
            None => assert!(
                readers.is_empty() && start.elapsed() < T,
                "a reader reached the primary"
            ),
        }
    }
    let per_replica: Vec<usize> = (0..2)
        .map(|r| readers.iter().filter(|(_, on)| *on == r).count())
        .collect();
    assert_eq!(
        per_replica,
        vec![4, 4],
        "least-connections over two replicas"
    );
    let (_, writer_id) = server_id_via(rw).await.unwrap();
    assert_eq!(
        writer_id,
        set.primary.server_id(),
        "the RW route is on the primary"
    );

    // No healthy replica: new readers fall back to main-rw's primary.
    for i in 0..2 {
        consul.check_fail(&ReplicaSet::check_id(i)).await;
    }
    let start = Instant::now();
    loop {
        // A client bound to a replica the moment it leaves is closed (on_failover = close).
        if let Ok((_, id)) = server_id_via(ro).await
            && id == set.primary.server_id()
        {
            break;
        }
        assert!(
            start.elapsed() < T,
            "the RO route never fell back to the primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "RW/RO: 8 readers per replica {per_replica:?}; fallback to the primary after {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn sighup_adds_changes_and_removes_routes_without_touching_the_others() {
    let ip = "127.0.0.1".parse().unwrap();
    let (a, b) = tokio::join!(MariaDb::start(ip), MariaDb::start(ip));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    let route = |name: &str, backend: SocketAddr, extra: &str| {
        format!("[[route]]\nname = \"{name}\"\nbackend = \"{backend}\"\n{extra}\n")
    };
    write(&file, &route("one", a.addr(), ""));
    let proxy = Proxy::start(&["--config", file.to_str().unwrap()]);
    let via_one = route_addr(&proxy, "one").await;
    let mut kept = mysql_async::Conn::new(app_opts(via_one)).await.unwrap();

    // Add a route, change route one's hold_timeout: one's session stays, two serves b.
    write(
        &file,
        &format!(
            "{}{}",
            route("one", a.addr(), "hold_timeout = \"9s\""),
            route("two", b.addr(), "")
        ),
    );
    let mark = proxy.log.len();
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_for_log_from(mark, "reload: route started", T)
        .await;
    let via_two = route_addr(&proxy, "two").await;
    assert_eq!(try_port_via(via_two).await.unwrap(), b.port());
    let port: Option<u16> = kept.query_first("SELECT @@port").await.unwrap();
    assert_eq!(
        port,
        Some(a.port()),
        "route one's session survived the reload"
    );
    let (_, body) = proxy.admin_get("/status").await;
    let status = json(&body);
    assert_eq!(
        status["routes"][0]["config"]["hold_timeout_s"], 9.0,
        "{status}"
    );

    // Remove route one: it stops accepting, its open session drains (shutdown_grace), two stays.
    write(&file, &route("two", b.addr(), ""));
    let mark = proxy.log.len();
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_for_log_from(mark, "reload: route removed", T)
        .await;
    assert!(
        stops_accepting(via_one).await,
        "the removed route's address no longer accepts"
    );
    let port: Option<u16> = kept.query_first("SELECT @@port").await.unwrap();
    assert_eq!(port, Some(a.port()), "its open session may finish");
    assert_eq!(try_port_via(via_two).await.unwrap(), b.port());
    let (_, body) = proxy.admin_get("/status").await;
    let status = json(&body);
    assert_eq!(status["routes"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["routes"][0]["name"], "two");
}

#[test]
fn bad_routes_are_refused_naming_the_route_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    let cases = [
        (
            "[[route]]\nname = \"main-ro\"\nbackend = \"127.0.0.1:3307\"\nhold_timeout = \"0s\"\n",
            "route \"main-ro\": hold_timeout: must be greater than 0",
        ),
        (
            "backend = \"127.0.0.1:3307\"\n[[route]]\nname = \"a\"\n[[route]]\nname = \"a\"\n",
            "two routes are named \"a\"",
        ),
        (
            "backend = \"127.0.0.1:3307\"\n[[route]]\nname = \"a\"\nlisten = \"127.0.0.1:4406\"\n\
             [[route]]\nname = \"b\"\nlisten = \"127.0.0.1:4406\"\n",
            "routes \"a\" and \"b\" both listen on 127.0.0.1:4406",
        ),
        (
            "backend = \"127.0.0.1:3307\"\n[[route]]\nname = \"a\"\nadmin = \"off\"\n",
            "route \"a\": admin: is process-wide",
        ),
        (
            "[[route]]\nbackend = \"127.0.0.1:3307\"\n",
            "route #1: `name` is missing",
        ),
    ];
    for (text, expected) in cases {
        write(&file, text);
        // No --listen flag: it would override every route's own `listen`.
        let (status, stderr) =
            run_to_exit(&["--config", file.to_str().unwrap(), "--admin", "off"], &[]);
        assert_eq!(status.code(), Some(64), "{text}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{text}: expected {expected:?} in {stderr}"
        );
    }
}
