//! Consul client conformance end to end: what the proxy sends to and reads from a Consul agent
//! follows Consul's own client and server (hashicorp/consul; `docs/consul.md` maps each
//! behaviour to Consul's source and to the test here). Every test runs against the Consul
//! double and, with `CONSUL_BIN`, against a real agent configured the same way
//! ([`AgentSetup`]); the parts that need the double's request log or fault switches say so and
//! are skipped against a real agent.
//!
//! Backends are echo servers that greet like MySQL; which one the proxy routes to is read from
//! `/status` (`primary.address`), polled with a bound.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use consul_double::{AclToken, Policy, Resource, ServerState, TlsConfig};
use serde_json::Value;
use support::backends::{EchoBackend, greeted};
use support::consul::{AgentSetup, ServiceDef, TestConsul};
use support::pki::Ca;
use support::proxy::{Proxy, ProxyArgs, run_to_exit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);
const LEADER_KEY: &str = "service/mysql/leader";

/// `discovery_requests_total` samples.
const REQUESTS_OK: &str = "consul_mysql_proxy_discovery_requests_total{result=\"ok\"}";
const REQUESTS_ERROR: &str = "consul_mysql_proxy_discovery_requests_total{result=\"error\"}";
const REQUESTS_INVALID: &str = "consul_mysql_proxy_discovery_requests_total{result=\"invalid\"}";

async fn status(proxy: &Proxy) -> Value {
    let (code, body) = proxy.admin_get("/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("/status JSON")
}

/// Polls `/status` until `pred` holds; returns that status. Panics with the log on timeout.
async fn wait_status(proxy: &Proxy, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = status(proxy).await;
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < T,
            "{what} not seen within {T:?}; last /status: {s:#}; log:\n{}",
            proxy.log.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `/status` names `addr` as the primary.
async fn wait_primary(proxy: &Proxy, addr: SocketAddr) {
    let want = addr.to_string();
    wait_status(proxy, &format!("primary {want}"), |s| {
        s["primary"]["address"] == want.as_str()
    })
    .await;
}

/// Waits until `/status` `discovery.last_error` contains every one of `needles`; returns it.
async fn wait_last_error(proxy: &Proxy, needles: &[&str]) -> String {
    let s = wait_status(proxy, &format!("last_error with {needles:?}"), |s| {
        s["discovery"]["last_error"]
            .as_str()
            .is_some_and(|e| needles.iter().all(|n| e.contains(n)))
    })
    .await;
    s["discovery"]["last_error"].as_str().unwrap().to_owned()
}

async fn metric(proxy: &Proxy, sample: &str) -> f64 {
    proxy.metric(sample).await.unwrap_or(0.0)
}

/// Two echo backends registered as `mysql-a` (passing) and `mysql-b` (critical).
async fn pair(consul: &TestConsul) -> (EchoBackend, EchoBackend) {
    let (a, b) = (EchoBackend::start().await, EchoBackend::start().await);
    consul.register_pair(a.addr, b.addr).await;
    (a, b)
}

/// Consul now says `to` is the primary instead of `from` (TTL checks, as a failover tool).
async fn move_primary(consul: &TestConsul, from: &str, to: &str) {
    consul.check_pass(&format!("service:{to}")).await;
    consul.check_fail(&format!("service:{from}")).await;
}

fn health_proxy(url: &str) -> ProxyArgs {
    ProxyArgs::consul(url).with(&["--hold-timeout", "5s"])
}

/// A `mysql` instance tagged `primary` at `address:port`, with a TTL check that starts passing.
fn passing(id: &str, address: &str, port: u16) -> ServiceDef {
    ServiceDef::new("mysql")
        .id(id)
        .tags(&["primary"])
        .address(address)
        .port(port)
        .ttl_check(Duration::from_secs(600))
        .status("passing")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------------------------------
// item 1: `wait`

#[tokio::test]
async fn consul_wait_in_any_go_form_is_sent_in_milliseconds_and_blocks() {
    let consul = TestConsul::start().await;
    let (a, b) = pair(&consul).await;

    // What a real agent does with humantime's `1m 30s`: Go's ParseDuration refuses it.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .get(format!("{}/v1/health/service/mysql", consul.http_url()))
        .query(&[("index", "1"), ("wait", "1m 30s")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.text().await.unwrap(), "Invalid wait time");

    let (mut current, mut other) = (("mysql-a", a.addr), ("mysql-b", b.addr));
    for (wait, sent) in [
        ("90s", "90000ms"),
        ("1m30s", "90000ms"),
        ("1500ms", "1500ms"),
    ] {
        let mark = consul.requests("/v1/health/service/mysql").map(|r| r.len());
        let proxy = health_proxy(&consul.http_url())
            .with(&["--consul-wait", wait])
            .start();
        wait_primary(&proxy, current.1).await;
        greeted(proxy.addr()).await;
        // The next answer is a blocking one; the change arrives through it.
        proxy.wait_for_metric(REQUESTS_OK, 1.0, T).await;
        move_primary(&consul, current.0, other.0).await;
        wait_primary(&proxy, other.1).await;
        if wait == "1500ms" {
            // A short wait runs out and the query is sent again, without an error.
            let ok = metric(&proxy, REQUESTS_OK).await;
            proxy.wait_for_metric(REQUESTS_OK, ok + 2.0, T).await;
        }
        assert_eq!(metric(&proxy, REQUESTS_ERROR).await, 0.0, "{wait}");
        assert_eq!(metric(&proxy, REQUESTS_INVALID).await, 0.0, "{wait}");
        if let (Some(mark), Some(seen)) = (mark, consul.requests("/v1/health/service/mysql")) {
            let blocking: Vec<_> = seen[mark..]
                .iter()
                .filter(|r| r.param("index").is_some())
                .collect();
            assert!(!blocking.is_empty(), "{wait}: no blocking request");
            for r in &blocking {
                assert_eq!(r.param("wait"), Some(sent), "{wait}: {}", r.raw_query);
            }
            eprintln!(
                "--consul-wait {wait}: {} blocking requests, all with wait={sent}",
                blocking.len()
            );
        }
        std::mem::swap(&mut current, &mut other);
    }
}

// ---------------------------------------------------------------------------------------------
// item 2: TLS

/// An agent with an HTTPS listener whose certificate names `server_names`, signed by a test CA
/// whose file is in `dir`; the leader key names `backend`.
struct Https {
    backend: EchoBackend,
    ca: Ca,
    consul: TestConsul,
    dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
}

impl Https {
    async fn start(server_names: &[&str], verify_incoming: bool) -> Https {
        let backend = EchoBackend::start().await;
        let ca = Ca::new("consul CA");
        let server = ca.server(server_names);
        let consul = TestConsul::start_with(AgentSetup {
            tls: Some(TlsConfig {
                cert_pem: server.cert_pem,
                key_pem: server.key_pem,
                ca_pem: Some(ca.pem.clone()),
                verify_incoming,
            }),
            ..AgentSetup::default()
        })
        .await;
        assert!(consul.kv_put(LEADER_KEY, &backend.addr.to_string()).await);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write(dir.path(), "ca.pem");
        Https {
            backend,
            ca,
            consul,
            dir,
            ca_file,
        }
    }

    /// KV discovery of the leader key over HTTPS, trusting the test CA.
    fn kv(&self) -> ProxyArgs {
        ProxyArgs::consul_kv(self.consul.https_url(), LEADER_KEY).with(&[
            "--hold-timeout",
            "1s",
            "--consul-ca-cert",
            path(&self.ca_file),
        ])
    }
}

fn with_identity(args: &ProxyArgs, id: &support::pki::IdentityFiles) -> ProxyArgs {
    args.clone().with(&[
        "--consul-client-cert",
        path(&id.cert),
        "--consul-client-key",
        path(&id.key),
    ])
}

/// The proxy's view of a discovery that cannot work: no primary, a log line and a
/// `last_error` that both contain `needle` (lower case).
async fn assert_unavailable_naming(proxy: &Proxy, needle: &str) -> String {
    let line = proxy.wait_for_log("discovery unavailable", T).await;
    assert!(line.to_lowercase().contains(needle), "{needle}: {line}");
    let s = status(proxy).await;
    let err = s["discovery"]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(err.to_lowercase().contains(needle), "{needle}: {s:#}");
    assert!(s["primary"].is_null(), "{s:#}");
    let (code, body) = proxy.admin_get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    err
}

#[tokio::test]
async fn verify_incoming_agent_takes_only_a_client_certificate_from_its_ca() {
    let h = Https::start(&["127.0.0.1", "localhost"], true).await;
    let good =
        h.ca.client("consul-mysql-proxy")
            .write(h.dir.path(), "client");
    let wrong = Ca::new("another CA")
        .client("consul-mysql-proxy")
        .write(h.dir.path(), "wrong");
    let kv = h.kv();

    // No client certificate: the agent ends the handshake; the error says what to configure.
    let none = kv.start();
    let err = assert_unavailable_naming(&none, "client certificate").await;
    assert!(err.contains("consul_client_cert"), "{err}");
    drop(none);

    // A certificate from another CA: refused the same way.
    let other = with_identity(&kv, &wrong).start();
    assert_unavailable_naming(&other, "client certificate").await;
    drop(other);

    // Ours: routed.
    let proxy = with_identity(&kv, &good).start();
    wait_primary(&proxy, h.backend.addr).await;
    greeted(proxy.addr()).await;
}

#[tokio::test]
async fn tls_server_name_accepts_a_localhost_certificate_at_an_ip_address() {
    let h = Https::start(&["localhost"], false).await;
    let kv = h.kv();
    let mismatch = kv.start();
    let err = assert_unavailable_naming(&mismatch, "not valid for").await;
    assert!(err.contains("consul_tls_server_name"), "{err}");
    drop(mismatch);

    let proxy = kv
        .clone()
        .with(&["--consul-tls-server-name", "localhost"])
        .start();
    wait_primary(&proxy, h.backend.addr).await;
    drop(proxy);
    // The same from Consul's own variable.
    let proxy = kv.start_with_env(&[("CONSUL_TLS_SERVER_NAME", "localhost")]);
    wait_primary(&proxy, h.backend.addr).await;
    greeted(proxy.addr()).await;
}

#[tokio::test]
async fn consul_http_ssl_verify_false_needs_no_ca_and_says_so() {
    let h = Https::start(&["127.0.0.1"], false).await;
    let proxy = Proxy::start_with_env(
        &["--discovery", "consul-kv", "--kv-key", LEADER_KEY],
        &[
            ("CONSUL_HTTP_ADDR", &h.consul.https_url()),
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
        ],
    );
    let warning = proxy.wait_for_log("NOT verified", T).await;
    assert!(
        warning.contains("CONSUL_HTTP_SSL_VERIFY=false"),
        "{warning}"
    );
    wait_primary(&proxy, h.backend.addr).await;
    greeted(proxy.addr()).await;
}

#[tokio::test]
async fn consul_http_ssl_upgrades_a_bare_address_and_never_downgrades_https() {
    let h = Https::start(&["127.0.0.1"], false).await;
    let https = h.consul.https_url();
    let bare = https.trim_start_matches("https://");
    let http = format!("http://{bare}");
    let kv = ["--discovery", "consul-kv", "--kv-key", LEADER_KEY];
    // Bare + SSL: https. https:// + SSL=false: still https (never downgraded). http:// + SSL:
    // https (Consul's client never reverts to http once TLS was asked for).
    for (addr, ssl) in [
        (bare, "true"),
        (https.as_str(), "false"),
        (http.as_str(), "1"),
    ] {
        let proxy = Proxy::start_with_env(
            &kv,
            &[
                ("CONSUL_HTTP_ADDR", addr),
                ("CONSUL_HTTP_SSL", ssl),
                ("CONSUL_CACERT", path(&h.ca_file)),
            ],
        );
        wait_primary(&proxy, h.backend.addr).await;
        let s = status(&proxy).await;
        assert!(
            s.to_string().contains(&https),
            "CONSUL_HTTP_ADDR={addr} CONSUL_HTTP_SSL={ssl}: {s:#}"
        );
    }
}

#[test]
fn bad_consul_booleans_exit_64_naming_the_variable() {
    for (var, value) in [
        ("CONSUL_HTTP_SSL", "yes"),
        ("CONSUL_HTTP_SSL_VERIFY", "nope"),
    ] {
        let (status, err) = run_to_exit(
            &["--discovery", "consul-kv", "--kv-key", LEADER_KEY],
            &[(var, value)],
        );
        assert_eq!(status.code(), Some(64), "{var}={value}: {err}");
        assert!(
            err.contains(var) && err.contains(value),
            "{var}={value}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// item 3: unix socket

#[tokio::test]
async fn unix_socket_agent_address_routes_and_follows() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("consul.sock");
    let consul = TestConsul::start_with(AgentSetup {
        http_unix: Some(socket.clone()),
        ..AgentSetup::default()
    })
    .await;
    let (a, b) = pair(&consul).await;
    let proxy = health_proxy(&consul.unix_url()).start();
    wait_primary(&proxy, a.addr).await;
    greeted(proxy.addr()).await;
    proxy.wait_for_metric(REQUESTS_OK, 1.0, T).await;
    move_primary(&consul, "mysql-a", "mysql-b").await;
    wait_primary(&proxy, b.addr).await;
    let s = status(&proxy).await;
    assert!(s.to_string().contains(&consul.unix_url()), "{s:#}");
    drop(proxy);

    // As Consul's own client takes it: CONSUL_HTTP_ADDR=unix://…
    let proxy = Proxy::start_with_env(&[], &[("CONSUL_HTTP_ADDR", &consul.unix_url())]);
    wait_primary(&proxy, b.addr).await;
}

// ---------------------------------------------------------------------------------------------
// items 4 and 6: ACL tokens

const MANAGEMENT: &str = "0b6d7c3e-7f35-4c51-9a53-3c0a3b1d0001";
/// `service:read` and `node:read` on everything, `key:read` too.
const READER: &str = "0b6d7c3e-7f35-4c51-9a53-3c0a3b1d0002";
/// `service:read` only: health answers come back filtered to nothing.
const SERVICE_ONLY: &str = "0b6d7c3e-7f35-4c51-9a53-3c0a3b1d0003";

async fn acl_agent() -> TestConsul {
    TestConsul::start_with(AgentSetup {
        acl_management: Some(MANAGEMENT.into()),
        acl_tokens: vec![
            AclToken::new(READER)
                .rule(Resource::Service, "", Policy::Read)
                .rule(Resource::Node, "", Policy::Read)
                .rule(Resource::Key, "", Policy::Read),
            AclToken::service_read_only(SERVICE_ONLY),
        ],
        ..AgentSetup::default()
    })
    .await
}

fn token_file(dir: &Path, name: &str, token: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}

#[tokio::test]
async fn the_token_file_wins_over_a_token_from_any_layer() {
    let consul = acl_agent().await;
    let (a, _b) = pair(&consul).await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), "token", READER);

    // A token the cluster does not know, alone: 403 ACL not found.
    let unknown = "0b6d7c3e-7f35-4c51-9a53-3c0a3b1d0999";
    let denied = health_proxy(&consul.http_url())
        .with(&["--consul-token", unknown])
        .start();
    wait_last_error(&denied, &["403", "ACL not found"]).await;
    drop(denied);

    // The same token on the command line, the file from Consul's variable: the file wins.
    let proxy = health_proxy(&consul.http_url())
        .with(&["--consul-token", unknown])
        .start_with_env(&[("CONSUL_HTTP_TOKEN_FILE", path(&file))]);
    wait_primary(&proxy, a.addr).await;
    drop(proxy);
    // The token from Consul's variable, the file from our flag: the file wins again.
    let proxy = health_proxy(&consul.http_url())
        .with(&["--consul-token-file", path(&file)])
        .start_with_env(&[("CONSUL_HTTP_TOKEN", unknown)]);
    wait_primary(&proxy, a.addr).await;
    greeted(proxy.addr()).await;
}

#[tokio::test]
async fn a_token_without_node_read_keeps_the_last_primary_and_names_the_rights() {
    let consul = acl_agent().await;
    let (a, _b) = pair(&consul).await;
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), "token", READER);
    let proxy = health_proxy(&consul.http_url())
        .with(&["--consul-token-file", path(&file)])
        .start();
    wait_primary(&proxy, a.addr).await;

    // The operator swaps the token for one without node:read and reloads: Consul answers 200
    // with nothing left (X-Consul-Results-Filtered-By-ACLs), which is not "no primary".
    token_file(dir.path(), "token", SERVICE_ONLY);
    let mark = proxy.log.len();
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_for_log_from(mark, "discovery_restarted=true", T)
        .await;
    let err = wait_last_error(&proxy, &["node:read", "service:read"]).await;
    assert!(err.contains("X-Consul-Results-Filtered-By-ACLs"), "{err}");
    let s = status(&proxy).await;
    assert_eq!(s["primary"]["address"], a.addr.to_string(), "{s:#}");
    greeted(proxy.addr()).await;
    drop(proxy);

    // Started with that token: no primary, and the same reason.
    let fresh = health_proxy(&consul.http_url())
        .with(&["--consul-token-file", path(&file)])
        .start();
    let err = wait_last_error(&fresh, &["node:read", "service:read"]).await;
    assert!(err.contains("ACLs"), "{err}");
    let s = status(&fresh).await;
    assert!(s["primary"].is_null(), "{s:#}");
    let (code, _) = fresh.admin_get("/readyz").await;
    assert_eq!(code, 503);
}

// ---------------------------------------------------------------------------------------------
// item 5: scope parameters

#[tokio::test]
async fn filter_reaches_consul_and_narrows_the_instances() {
    let consul = TestConsul::start().await;
    let (a, b) = (EchoBackend::start().await, EchoBackend::start().await);
    for (id, addr, cluster) in [("mysql-a", a.addr, "main"), ("mysql-b", b.addr, "other")] {
        consul
            .register(
                &ServiceDef::new("mysql")
                    .id(id)
                    .tags(&["primary"])
                    .address(&addr.ip().to_string())
                    .port(addr.port())
                    .meta("cluster", cluster)
                    .ttl_check(Duration::from_secs(600))
                    .status("passing"),
            )
            .await;
    }
    consul.wait_passing("mysql", Some("primary"), 2).await;

    // Both pass: without a filter that is a split brain the proxy refuses.
    let unfiltered = health_proxy(&consul.http_url()).start();
    wait_status(&unfiltered, "split brain", |s| {
        s["primary"].is_null()
            && s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("split brain"))
    })
    .await;
    drop(unfiltered);

    let filter = r#"Service.Meta.cluster == "main""#;
    let mark = consul.requests("/v1/health/service/").map(|r| r.len());
    let proxy = health_proxy(&consul.http_url())
        .with(&["--consul-filter", filter])
        .start();
    wait_primary(&proxy, a.addr).await;
    greeted(proxy.addr()).await;
    if let (Some(mark), Some(seen)) = (mark, consul.requests("/v1/health/service/")) {
        assert!(
            seen[mark..]
                .iter()
                .all(|r| r.param("filter") == Some(filter)),
            "{:?}",
            &seen[mark..]
        );
    }
}

#[tokio::test]
async fn a_namespace_is_sent_and_consul_ce_refuses_it() {
    let consul = TestConsul::start().await;
    let (a, _b) = pair(&consul).await;
    let proxy = health_proxy(&consul.http_url())
        .with(&["--consul-namespace", "team-a"])
        .start();
    let err = wait_last_error(
        &proxy,
        &["400", "Namespaces are a Consul Enterprise feature"],
    )
    .await;
    assert!(err.contains("\"ns\""), "{err}");
    drop(proxy);
    let proxy = health_proxy(&consul.http_url())
        .with(&["--consul-partition", "part-b"])
        .start();
    wait_last_error(
        &proxy,
        &["400", "Partitions are a Consul Enterprise feature"],
    )
    .await;
    drop(proxy);
    // Without them the same agent answers.
    let proxy = health_proxy(&consul.http_url()).start();
    wait_primary(&proxy, a.addr).await;
}

// ---------------------------------------------------------------------------------------------
// item 7: unusable instances among good ones

#[tokio::test]
async fn an_instance_without_a_port_is_on_default_port() {
    let consul = TestConsul::start().await;
    let backend = EchoBackend::start().await;
    consul
        .register(
            &ServiceDef::new("mysql")
                .id("mysql-a")
                .tags(&["primary"])
                .address("127.0.0.1")
                .ttl_check(Duration::from_secs(600))
                .status("passing"),
        )
        .await;
    let entries = consul.wait_passing("mysql", Some("primary"), 1).await;
    assert_eq!(entries[0]["Service"]["Port"], 0);
    let port = backend.addr.port().to_string();
    let proxy = health_proxy(&consul.http_url())
        .with(&["--default-port", &port])
        .start();
    wait_primary(&proxy, backend.addr).await;
    greeted(proxy.addr()).await;
}

#[tokio::test]
async fn an_unresolvable_instance_is_skipped_by_name_and_the_good_one_decides() {
    let consul = TestConsul::start().await;
    let backend = EchoBackend::start().await;
    for (id, address, port) in [
        ("mysql-a", "127.0.0.1", backend.addr.port()),
        ("mysql-ghost", "no-such-host.invalid", 3306),
    ] {
        consul.register(&passing(id, address, port)).await;
    }
    consul.wait_passing("mysql", Some("primary"), 2).await;
    let proxy = health_proxy(&consul.http_url()).start();
    wait_primary(&proxy, backend.addr).await;
    let line = proxy
        .wait_for_log("Consul answer entry not usable", T)
        .await;
    assert!(
        line.contains("mysql-ghost") && line.contains("no-such-host.invalid"),
        "{line}"
    );
    greeted(proxy.addr()).await;
}

/// Serves `body` (with `X-Consul-Index: 7`) to every request; blocking ones (`index=` in the
/// query) are held until the test ends.
async fn canned_agent(body: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req).into_owned();
                if head.lines().next().is_some_and(|l| l.contains("index=")) {
                    std::future::pending::<()>().await;
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 7\r\nX-Consul-KnownLeader: true\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_malformed_entry_is_skipped_by_name_and_the_good_one_decides() {
    // A real answer of the agent with one entry damaged (its port a string): an answer Consul
    // does not send, but a client must survive one bad entry.
    let consul = TestConsul::start().await;
    let backend = EchoBackend::start().await;
    for (id, port) in [("mysql-a", backend.addr.port()), ("mysql-b", 3306)] {
        consul.register(&passing(id, "127.0.0.1", port)).await;
    }
    let mut entries = consul.wait_passing("mysql", Some("primary"), 2).await;
    for e in &mut entries {
        if e["Service"]["ID"] == "mysql-b" {
            e["Service"]["Port"] = Value::String("3306".into());
        }
    }
    let agent = canned_agent(Value::Array(entries).to_string()).await;
    let proxy = health_proxy(&format!("http://{agent}")).start();
    wait_primary(&proxy, backend.addr).await;
    let line = proxy
        .wait_for_log("Consul answer entry not usable", T)
        .await;
    assert!(
        line.contains("mysql-b") && line.contains("invalid type"),
        "{line}"
    );
    greeted(proxy.addr()).await;
}

// ---------------------------------------------------------------------------------------------
// item 9: stale reads, max_stale, a lost leader

#[tokio::test]
async fn stale_answers_older_than_max_stale_keep_the_last_primary() {
    // The RPC backend: the streaming one carries no LastContact (see the streaming test).
    let consul = TestConsul::start_with(AgentSetup {
        use_streaming_backend: false,
        ..AgentSetup::default()
    })
    .await;
    let Some(faults) =
        consul.faults_or_skip("stale_answers_older_than_max_stale_keep_the_last_primary")
    else {
        return;
    };
    let (a, _b) = pair(&consul).await;
    let bounded = health_proxy(&consul.http_url())
        .with(&["--consistency", "stale", "--consul-max-stale", "1s"])
        .start();
    let unbounded = health_proxy(&consul.http_url())
        .with(&["--consistency", "stale"])
        .start();
    for p in [&bounded, &unbounded] {
        wait_primary(p, a.addr).await;
        p.wait_for_metric(REQUESTS_OK, 1.0, T).await;
    }
    let ok_before = metric(&unbounded, REQUESTS_OK).await;

    // The agent's server lost its leader 5 s ago; a change wakes the blocked queries.
    faults.set_server_state(ServerState::leader_lost(Duration::from_secs(5)));
    for id in ["mysql-c", "mysql-d"] {
        let ok = metric(&unbounded, REQUESTS_OK).await;
        consul
            .register(
                &ServiceDef::new("mysql")
                    .id(id)
                    .tags(&["replica"])
                    .address("127.0.0.1")
                    .port(1)
                    .ttl_check(Duration::from_secs(600)),
            )
            .await;
        unbounded.wait_for_metric(REQUESTS_OK, ok + 1.0, T).await;
    }

    // consul_max_stale 1s: a 5 s old answer is no answer; the last primary stays.
    let err = wait_last_error(&bounded, &["X-Consul-LastContact", "consul_max_stale"]).await;
    assert!(err.contains("5s"), "{err}");
    assert_eq!(
        status(&bounded).await["primary"]["address"],
        a.addr.to_string()
    );
    greeted(bounded.addr()).await;

    // No bound: the stale answers are used, and "no known leader" is logged once.
    assert!(metric(&unbounded, REQUESTS_OK).await >= ok_before + 2.0);
    let leaderless = |p: &Proxy| {
        p.log
            .text()
            .matches("Consul answered without a known leader")
            .count()
    };
    assert_eq!(leaderless(&unbounded), 1, "{}", unbounded.log.text());
    assert_eq!(
        status(&unbounded).await["primary"]["address"],
        a.addr.to_string()
    );

    // The leader is back: the bounded proxy recovers.
    faults.set_server_state(ServerState::Leader);
    bounded.wait_for_log("discovery recovered", T).await;
}

// ---------------------------------------------------------------------------------------------
// item 10: the streaming backend

#[tokio::test]
async fn health_failover_is_the_same_with_and_without_the_streaming_backend() {
    for streaming in [true, false] {
        let consul = TestConsul::start_with(AgentSetup {
            use_streaming_backend: streaming,
            ..AgentSetup::default()
        })
        .await;
        let (a, b) = pair(&consul).await;
        let proxy = health_proxy(&consul.http_url()).start();
        wait_primary(&proxy, a.addr).await;
        proxy.wait_for_metric(REQUESTS_OK, 1.0, T).await;
        move_primary(&consul, "mysql-a", "mysql-b").await;
        wait_primary(&proxy, b.addr).await;
        move_primary(&consul, "mysql-b", "mysql-a").await;
        wait_primary(&proxy, a.addr).await;
        greeted(proxy.addr()).await;

        // What answered the proxy's blocking queries: the agent says it in a header.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{}/v1/health/service/mysql", consul.http_url());
        let index = http.get(&url).send().await.unwrap().headers()["X-Consul-Index"]
            .to_str()
            .unwrap()
            .to_owned();
        let r = http
            .get(&url)
            .query(&[("index", index.as_str()), ("wait", "10ms")])
            .send()
            .await
            .unwrap();
        let backend = r.headers()["X-Consul-Query-Backend"].to_str().unwrap();
        if !consul.is_real() {
            assert_eq!(
                backend,
                if streaming {
                    "streaming"
                } else {
                    "blocking-query"
                }
            );
        }
        // Streaming answers always say KnownLeader: false; that is not a lost leader.
        assert!(
            !proxy.log.text().contains("without a known leader"),
            "streaming={streaming}: {}",
            proxy.log.text()
        );
        assert_eq!(metric(&proxy, REQUESTS_ERROR).await, 0.0);
        eprintln!("streaming backend {streaming}: failover followed, backend header {backend}");
    }
}

// ---------------------------------------------------------------------------------------------
// item 11: DNS names

#[tokio::test]
async fn a_prepared_query_name_is_read_as_srv_and_follows_a_failover() {
    let consul = TestConsul::start().await;
    let (a, b) = pair(&consul).await;
    consul
        .create_query("mysql-primary", "mysql", &["primary"])
        .await;
    let proxy = ProxyArgs::dns(consul.dns_addr(), "mysql-primary.query.consul")
        .with(&["--hold-timeout", "5s", "--dns-interval", "200ms"])
        .start();
    // SRV without --dns-record: both instances are on 127.0.0.1, only the port tells them apart.
    proxy
        .wait_for_log("dns SRV mysql-primary.query.consul", T)
        .await;
    wait_primary(&proxy, a.addr).await;
    greeted(proxy.addr()).await;
    move_primary(&consul, "mysql-a", "mysql-b").await;
    wait_primary(&proxy, b.addr).await;
    if let Some(f) = consul.faults() {
        assert!(f.request_count("dns:mysql-primary.query.consul.") > 0);
    }
}

#[tokio::test]
async fn a_host_name_outside_consul_is_resolved_by_the_system_resolver() {
    // Registered by host name: Consul answers SRV with target `localhost.` and nothing in the
    // additional section, A with a CNAME to it; it refuses `localhost.` itself (no recursors).
    let consul = TestConsul::start().await;
    let backend = EchoBackend::start().await;
    consul
        .register(&passing("mysql-a", "localhost", backend.addr.port()))
        .await;
    consul.wait_passing("mysql", Some("primary"), 1).await;
    let port = backend.addr.port().to_string();
    for record in ["srv", "a"] {
        let proxy = ProxyArgs::dns(consul.dns_addr(), "primary.mysql.service.consul")
            .with(&[
                "--hold-timeout",
                "5s",
                "--dns-record",
                record,
                "--default-port",
                &port,
            ])
            .start();
        wait_primary(&proxy, backend.addr).await;
        greeted(proxy.addr()).await;
    }
    if let Some(f) = consul.faults() {
        assert_eq!(
            f.request_count("dns:localhost"),
            0,
            "localhost. was asked of Consul"
        );
    }
}
