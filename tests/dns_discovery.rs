//! DNS discovery end to end: a real MariaDB pair registered in Consul (the double, or a real agent
//! when CONSUL_BIN is set), the proxy asking the Consul DNS interface for SRV or A records;
//! failover by a changed answer, NXDOMAIN, a DNS server that is down or failing, shuffled
//! multi-record answers with stickiness, and answers too big for 512 bytes (EDNS0, TCP fallback).

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use support::consul::{ServiceDef, TestConsul};
use support::mariadb::{MariaDb, MariaDbPair, PairOptions, port_via, try_port_via, wait_routed_to};
use support::proxy::{Proxy, ProxyArgs};
use support::refusal::refused_message;

const T: Duration = Duration::from_secs(30);
/// `<tag>.<service>.service.consul`: the passing `mysql` instances tagged `primary`.
const NAME: &str = "primary.mysql.service.consul";
/// How the double counts the queries for [`NAME`].
const COUNTED: &str = "dns:primary.mysql.service.consul.";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A `mysql` instance tagged `primary` with its own address and a TTL check that starts critical
/// (so it is in the DNS answer only after `check_pass("service:<id>")`).
fn instance(id: &str, addr: IpAddr, port: u16) -> ServiceDef {
    ServiceDef::new("mysql")
        .id(id)
        .tags(&["primary"])
        .address(&addr.to_string())
        .port(port)
        .ttl_check(Duration::from_secs(600))
}

fn check(id: &str) -> String {
    format!("service:{id}")
}

/// The proxy asking the Consul DNS interface for [`NAME`].
fn dns_proxy(consul: &TestConsul, extra: &[&str]) -> Proxy {
    ProxyArgs::dns(consul.dns_addr(), NAME)
        .with(&["--hold-timeout", "20s"])
        .with(extra)
        .start()
}

/// Moves the DNS answer from `from` to `to` the way a health-check flip does (`to` passes first,
/// so for a moment both are answered, then `from` fails) and returns how long after the answer
/// changed the proxy routed its first connection to `to_port`.
async fn flip(consul: &TestConsul, proxy: &Proxy, from: &str, to: &str, to_port: u16) -> Duration {
    consul.check_pass(&check(to)).await;
    consul.wait_passing("mysql", Some("primary"), 2).await;
    consul.check_fail(&check(from)).await;
    wait_routed_to(proxy, to_port).await
}

#[tokio::test]
async fn srv_and_a_records_route_to_the_primary_and_follow_a_changed_answer() {
    let mut pair = MariaDbPair::start_with(PairOptions {
        primary_ip: ip(2),
        replica_ip: ip(3),
    })
    .await;
    let consul = TestConsul::start().await;
    let (a_port, b_port) = (pair.primary.port(), pair.replica.port());
    consul.register(&instance("mysql-a", ip(2), a_port)).await;
    consul.register(&instance("mysql-b", ip(3), b_port)).await;
    consul.check_pass(&check("mysql-a")).await;
    consul.wait_passing("mysql", Some("primary"), 1).await;

    // SRV (the default for *.service.consul): port from the record, address from the additional.
    let proxy = dns_proxy(&consul, &[]);
    assert_eq!(port_via(proxy.addr()).await, a_port);
    proxy
        .wait_for_log("dns SRV primary.mysql.service.consul", T)
        .await;
    // A records: only the address; the port is --default-port.
    let a_port_arg = a_port.to_string();
    let by_a = dns_proxy(
        &consul,
        &["--dns-record", "a", "--default-port", &a_port_arg],
    );
    assert_eq!(port_via(by_a.addr()).await, a_port);
    drop(by_a);
    // The RFC 2782 spelling of the same question.
    let rfc = dns_proxy(&consul, &["--dns-name", "_mysql._primary.service.consul"]);
    assert_eq!(port_via(rfc.addr()).await, a_port);
    drop(rfc);

    // Planned switchover: both servers keep running (the old one read-only), so the only thing
    // that moves the proxy is the DNS answer, polled every second (the default interval).
    // Each flip starts at a random point of the lookup cycle (a flip right after the previous
    // switch would always wait a whole interval).
    pair.switchover().await;
    let mut switches = Vec::new();
    for (from, to, port) in [
        ("mysql-a", "mysql-b", b_port),
        ("mysql-b", "mysql-a", a_port),
        ("mysql-a", "mysql-b", b_port),
    ] {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1000))).await;
        switches.push(flip(&consul, &proxy, from, to, port).await);
    }
    eprintln!(
        "DNS switch (interval 1s): answer changed → first connection routed to the new primary after {:?}",
        switches
    );
    for s in &switches {
        assert!(
            *s < Duration::from_millis(2500),
            "switch took {s:?}, more than one interval + query time"
        );
    }
    let changes = proxy.log.text().matches("primary changed").count();
    assert_eq!(changes, 4, "the first answer and three flips");

    // A proxy that looks up only every 30 s still follows a crash at once: the client that cannot
    // connect to the dead primary pokes `refresh`, which triggers a lookup right away.
    let slow = dns_proxy(&consul, &["--dns-interval", "30s"]);
    assert_eq!(port_via(slow.addr()).await, b_port);
    pair.primary.kill9();
    consul.check_pass(&check("mysql-a")).await;
    consul.check_fail(&check("mysql-b")).await;
    consul.wait_passing("mysql", Some("primary"), 1).await;
    let start = Instant::now();
    assert_eq!(port_via(slow.addr()).await, a_port);
    let took = start.elapsed();
    eprintln!("refresh after a failed connect: routed to the new primary after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    slow.wait_for_log("refresh requested", T).await;
}

#[tokio::test]
async fn several_answers_are_sticky_and_a_fresh_proxy_refuses_or_picks_first() {
    let pair = MariaDbPair::start_with(PairOptions {
        primary_ip: ip(4),
        replica_ip: ip(5),
    })
    .await;
    let consul = TestConsul::start().await;
    let (a_port, b_port) = (pair.primary.port(), pair.replica.port());
    consul.register(&instance("mysql-a", ip(4), a_port)).await;
    consul.register(&instance("mysql-b", ip(5), b_port)).await;
    // b is the current primary of a proxy that looks up every 50 ms.
    consul.check_pass(&check("mysql-b")).await;
    consul.wait_passing("mysql", Some("primary"), 1).await;
    let proxy = dns_proxy(&consul, &["--dns-interval", "50ms"]);
    assert_eq!(port_via(proxy.addr()).await, b_port);

    // The old primary comes back healthy: two shuffled answers, the current one stays.
    consul.check_pass(&check("mysql-a")).await;
    consul.wait_passing("mysql", Some("primary"), 2).await;
    let counts = consul.faults().map(|f| (f, f.request_count(COUNTED)));
    let start = Instant::now();
    let mut connections = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            port_via(proxy.addr()).await,
            b_port,
            "the current primary stays (sticky)"
        );
        connections += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some((faults, before)) = counts {
        let lookups = faults.request_count(COUNTED) - before;
        eprintln!(
            "sticky across {lookups} lookups of two shuffled answers ({connections} connections)"
        );
        assert!(lookups >= 10, "only {lookups} lookups");
    }
    assert!(!proxy.log.text().contains("split brain"));

    // A proxy that starts now has no current primary: refuse names the split brain…
    let fresh = dns_proxy(&consul, &["--hold-timeout", "1s"]);
    let msg = refused_message(fresh.addr()).await;
    assert!(msg.contains("split brain"), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.4:{a_port}"))
            && msg.contains(&format!("127.0.0.5:{b_port}")),
        "{msg}"
    );
    // …and `first` picks by node name, the SRV target (7f000004.addr… < 7f000005.addr…), so every
    // proxy instance picks the same server whatever order the answers come in.
    for _ in 0..2 {
        let first = dns_proxy(&consul, &["--on-multiple", "first"]);
        assert_eq!(port_via(first.addr()).await, a_port);
    }
}

#[tokio::test]
async fn nxdomain_holds_new_clients_then_refuses_naming_it() {
    let db = MariaDb::start(ip(6)).await;
    let consul = TestConsul::start().await;
    consul
        .register(&instance("mysql-a", ip(6), db.port()))
        .await;
    consul.check_pass(&check("mysql-a")).await;
    consul.wait_passing("mysql", Some("primary"), 1).await;
    let proxy = dns_proxy(
        &consul,
        &["--hold-timeout", "1s", "--dns-interval", "200ms"],
    );
    assert_eq!(port_via(proxy.addr()).await, db.port());

    // No healthy instance: Consul answers NXDOMAIN; the proxy drops the primary.
    let mark = proxy.log.len();
    consul.check_fail(&check("mysql-a")).await;
    proxy.wait_for_log_from(mark, "NXDOMAIN", T).await;
    let msg = refused_message(proxy.addr()).await;
    assert!(
        msg.contains("NXDOMAIN") && msg.contains("no healthy instance"),
        "{msg}"
    );
    assert!(msg.contains(NAME), "{msg}");

    // A client that arrives while there is none is held, and routed once the answer is back.
    let addr = proxy.addr();
    let held = tokio::spawn(async move {
        let start = Instant::now();
        (try_port_via(addr).await, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    consul.check_pass(&check("mysql-a")).await;
    let (port, waited) = held.await.unwrap();
    assert_eq!(port.expect("held client routed"), db.port());
    assert!(waited >= Duration::from_millis(250), "not held: {waited:?}");
}

#[tokio::test]
async fn dns_server_down_or_failing_keeps_the_last_primary_and_recovers() {
    let db = MariaDb::start(ip(7)).await;
    let consul = TestConsul::start().await;
    let Some(faults) = consul.faults_or_skip("dns_server_down_or_failing") else {
        return;
    };
    consul
        .register(&instance("mysql-a", ip(7), db.port()))
        .await;
    consul.check_pass(&check("mysql-a")).await;
    let interval = Duration::from_millis(200);
    let proxy = dns_proxy(
        &consul,
        &["--dns-interval", "200ms", "--dns-timeout", "300ms"],
    );
    assert_eq!(port_via(proxy.addr()).await, db.port());

    let before = faults.request_count(COUNTED);
    let faults_start = Instant::now();
    // The server does not answer at all: timeouts naming the server.
    let mark = proxy.log.len();
    faults.pause();
    let line = proxy.wait_for_log_from(mark, "no answer from", T).await;
    assert!(line.contains(&consul.dns_addr().to_string()), "{line}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        port_via(proxy.addr()).await,
        db.port(),
        "down: last primary kept"
    );
    // It answers SERVFAIL.
    faults.resume();
    faults.dns_servfail(true);
    let mark = proxy.log.len();
    proxy.wait_for_log_from(mark, "SERVFAIL from", T).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        port_via(proxy.addr()).await,
        db.port(),
        "SERVFAIL: last primary kept"
    );
    faults.dns_servfail(false);
    let queries = faults.request_count(COUNTED) - before;
    let secs = faults_start.elapsed().as_secs_f64();
    eprintln!("{queries} DNS queries in {secs:.1}s of faults (interval {interval:?})");
    assert!(
        (queries as f64) < secs / interval.as_secs_f64() * 2.0 + 5.0,
        "hot loop: {queries} queries in {secs:.1}s"
    );
    proxy.wait_for_log("DNS answers again", T).await;
    proxy.wait_for_log("discovery recovered", T).await;
    let log = proxy.log.text();
    assert_eq!(
        log.matches("primary changed").count(),
        1,
        "the primary was set once and never moved: {log}"
    );
    assert!(!log.contains("primary lost"), "{log}");

    // Lookups work again: a change of the answer is followed.
    let mark = proxy.log.len();
    consul.check_fail(&check("mysql-a")).await;
    proxy.wait_for_log_from(mark, "NXDOMAIN", T).await;
    consul.check_pass(&check("mysql-a")).await;
    wait_routed_to(&proxy, db.port()).await;
}

#[tokio::test]
async fn every_answer_is_read_with_edns0_and_a_truncated_answer_over_tcp() {
    // Consul without EDNS: at most 3 answers over UDP. With `enable_truncate` it sets TC when it
    // had to drop answers, which is the cue to ask again over TCP.
    let consul = TestConsul::start_double(consul_double::DoubleConfig {
        enable_truncate: true,
        ..Default::default()
    })
    .await;
    let register = |n: u16| {
        let addr = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (n % 250) as u8 + 1));
        instance(&format!("mysql-{n}"), addr, 20_000 + n).status("passing")
    };
    for n in 0..5 {
        consul.register(&register(n)).await;
    }
    consul.wait_passing("mysql", Some("primary"), 5).await;
    let five = dns_proxy(&consul, &["--hold-timeout", "1s"]);
    let msg = refused_message(five.addr()).await;
    assert!(
        msg.contains("5 candidates"),
        "EDNS0 gets all 5 answers: {msg}"
    );

    // 120 SRV records with their additionals do not fit in 4096 bytes: UDP is truncated (TC),
    // the proxy asks again over TCP and sees them all.
    for n in 5..120 {
        consul.register(&register(n)).await;
    }
    consul.wait_passing("mysql", Some("primary"), 120).await;
    let many = dns_proxy(&consul, &["--hold-timeout", "1s"]);
    many.wait_for_log("120 candidates", T).await;
}
