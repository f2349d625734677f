//! Consul for integration tests: the in-process API double (`consul-double`) by default, a
//! real `consul agent -dev` when `CONSUL_BIN` names its binary. Tests talk to either through
//! [`TestConsul`]'s small client, so the same test runs against both.
//!
//! Against a real agent everything registers on the agent's one node; [`ServiceDef::on_node`]
//! (the double's non-standard `?node=`) is then ignored, which is fine as long as instances
//! differ by `Service.Address`. Fault switches exist only on the double: tests that need them
//! call [`TestConsul::faults`] and skip with a printed reason when it is `None`.
//! Both run with script checks enabled and `check_update_interval = 0s`, so check output
//! reaches the catalog at once. [`TestConsul::start_with`] sets either up like a production
//! agent ([`AgentSetup`]: a unix socket, HTTPS with `verify_incoming`, ACLs with tokens,
//! `use_streaming_backend`): the double through its config, a real agent through `-hcl`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use consul_double::{AclToken, ConsulDouble, DoubleConfig, Faults, Policy, TlsConfig};
use serde_json::{Value, json};

/// Upper bound for every wait this helper does.
const LIMIT: Duration = Duration::from_secs(30);

/// A health check for [`ServiceDef`].
#[derive(Debug, Clone)]
pub enum Check {
    /// TCP connect to `addr` every `interval`.
    Tcp {
        addr: SocketAddr,
        interval: Duration,
    },
    /// Run `args` (no shell) every `interval`: exit 0 passing, 1 warning, else critical.
    Script {
        args: Vec<String>,
        interval: Duration,
    },
    /// Passes only while `check_pass` is called within the TTL.
    Ttl(Duration),
}

/// A service registration (`PUT /v1/agent/service/register`).
#[derive(Debug, Clone, Default)]
pub struct ServiceDef {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: Vec<(String, String)>,
    pub check: Option<Check>,
    /// Initial check status (Consul: `critical` unless given).
    pub status: Option<String>,
    /// (node name, node address): double only, ignored by a real agent.
    pub node: Option<(String, String)>,
}

impl ServiceDef {
    /// A service `name` with ID `name`.
    pub fn new(name: &str) -> Self {
        ServiceDef {
            id: name.into(),
            name: name.into(),
            ..Default::default()
        }
    }
    /// Instance `id` of service `mysql`, tag `primary`, at `addr`, with a TTL check the test
    /// drives the way a failover tool updates Consul.
    pub fn ttl_primary(id: &str, addr: SocketAddr) -> Self {
        ServiceDef::ttl_instance("mysql", id, addr)
    }
    /// [`ServiceDef::ttl_primary`] of another service than `mysql`.
    pub fn ttl_instance(service: &str, id: &str, addr: SocketAddr) -> Self {
        ServiceDef::new(service)
            .id(id)
            .tags(&["primary"])
            .address(&addr.ip().to_string())
            .port(addr.port())
            .ttl_check(Duration::from_secs(600))
    }
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }
    pub fn address(mut self, address: &str) -> Self {
        self.address = address.into();
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.meta.push((key.into(), value.into()));
        self
    }
    pub fn tcp_check(mut self, addr: SocketAddr, interval: Duration) -> Self {
        self.check = Some(Check::Tcp { addr, interval });
        self
    }
    pub fn script_check(mut self, args: &[&str], interval: Duration) -> Self {
        let args = args.iter().map(|a| a.to_string()).collect();
        self.check = Some(Check::Script { args, interval });
        self
    }
    pub fn ttl_check(mut self, ttl: Duration) -> Self {
        self.check = Some(Check::Ttl(ttl));
        self
    }
    /// Initial status of the check (`passing`, `warning`, `critical`).
    pub fn status(mut self, status: &str) -> Self {
        self.status = Some(status.into());
        self
    }
    /// Register on another node (the double's `?node=&node_address=`).
    pub fn on_node(mut self, node: &str, address: &str) -> Self {
        self.node = Some((node.into(), address.into()));
        self
    }

    /// The JSON body Consul's agent endpoint takes.
    pub fn to_json(&self) -> Value {
        let d = consul_double::duration::format;
        let mut check = match &self.check {
            None => Value::Null,
            Some(Check::Tcp { addr, interval }) => {
                json!({"TCP": addr.to_string(), "Interval": d(*interval), "Timeout": "1s"})
            }
            Some(Check::Script { args, interval }) => {
                json!({"Args": args, "Interval": d(*interval)})
            }
            Some(Check::Ttl(ttl)) => json!({"TTL": d(*ttl)}),
        };
        if let (Some(s), Some(obj)) = (&self.status, check.as_object_mut()) {
            obj.insert("Status".into(), json!(s));
        }
        let meta: serde_json::Map<String, Value> = self
            .meta
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "ID": self.id, "Name": self.name, "Tags": self.tags, "Address": self.address,
            "Port": self.port, "Meta": meta, "Check": check,
        })
    }
}

/// How the agent is set up beyond the defaults, for both the double and a real agent
/// (`CONSUL_BIN`): the same settings a production agent would have in its configuration.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    /// Also serve the HTTP API on this unix socket (`addresses.http = "… unix://<path>"`).
    pub http_unix: Option<PathBuf>,
    /// An HTTPS listener (`ports.https`, `tls.defaults.{cert,key,ca}_file`,
    /// `tls.https.verify_incoming`).
    pub tls: Option<TlsConfig>,
    /// ACLs on with default policy `deny` and this management token, which the helper itself
    /// uses for every call (`acl.tokens.initial_management`, also the agent's own token).
    pub acl_management: Option<String>,
    /// More tokens with prefix rules; their secrets must be UUIDs (a real agent takes only
    /// those as `SecretID`).
    pub acl_tokens: Vec<AclToken>,
    /// Consul's `use_streaming_backend` (default true).
    pub use_streaming_backend: bool,
}

impl Default for AgentSetup {
    fn default() -> Self {
        AgentSetup {
            http_unix: None,
            tls: None,
            acl_management: None,
            acl_tokens: Vec::new(),
            use_streaming_backend: true,
        }
    }
}

enum Backend {
    Double(ConsulDouble),
    Real {
        _child: tokio::process::Child,
        _dir: tempfile::TempDir,
    },
}

/// A running Consul (double or real agent) plus a client for it.
pub struct TestConsul {
    backend: Backend,
    http: reqwest::Client,
    base: String,
    dns: SocketAddr,
    /// `https://127.0.0.1:<port>` when the agent has an HTTPS listener.
    https: Option<String>,
    /// The unix socket the HTTP API also listens on.
    unix: Option<PathBuf>,
    /// The token the helper sends on its own calls (ACLs on).
    token: Option<String>,
}

fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: a provider must exist even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// A port free on 127.0.0.1 for TCP (and UDP when `udp`), released for the agent to take.
fn free_port(udp: bool) -> u16 {
    for _ in 0..50 {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if !udp || std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

impl TestConsul {
    /// The double (in process), or a real dev agent when `CONSUL_BIN` is set.
    pub async fn start() -> TestConsul {
        Self::start_with(AgentSetup::default()).await
    }

    /// Like [`TestConsul::start`], with the agent set up as `setup` says.
    pub async fn start_with(setup: AgentSetup) -> TestConsul {
        match std::env::var_os("CONSUL_BIN") {
            Some(bin) => Self::start_real(bin, &setup).await,
            None => {
                let cfg = DoubleConfig {
                    http_unix: setup.http_unix.clone(),
                    tls: setup.tls.clone(),
                    acl_token: setup.acl_management.clone(),
                    acl_tokens: setup.acl_tokens.clone(),
                    use_streaming_backend: setup.use_streaming_backend,
                    ..DoubleConfig::default()
                };
                Self::start_double(cfg).await
            }
        }
    }

    /// Always the double, with this config (for tests that need e.g. an ACL token or short
    /// session TTLs). Script checks and `check_update_interval` are set as for `start()`.
    pub async fn start_double(cfg: DoubleConfig) -> TestConsul {
        let cfg = DoubleConfig {
            enable_script_checks: true,
            check_update_interval: Duration::ZERO,
            ..cfg
        };
        let double = consul_double::start(cfg)
            .await
            .expect("consul double starts");
        TestConsul {
            base: double.base_url(),
            dns: double.dns_addr(),
            https: double.https_url(),
            unix: double.unix_socket().map(|p| p.to_owned()),
            token: double.config().acl_token.clone(),
            backend: Backend::Double(double),
            http: client(),
        }
    }

    async fn start_real(bin: std::ffi::OsString, setup: &AgentSetup) -> TestConsul {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("consul.log")).expect("log file");
        let (http, dns) = (free_port(false), free_port(true));
        let https = setup.tls.as_ref().map(|_| free_port(false));
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("agent")
            .arg("-dev")
            .args(["-bind", "127.0.0.1", "-client", "127.0.0.1"]);
        for (flag, port) in [
            ("-http-port", http),
            ("-dns-port", dns),
            ("-server-port", free_port(false)),
            ("-serf-lan-port", free_port(true)),
            ("-serf-wan-port", free_port(true)),
        ] {
            cmd.arg(flag).arg(port.to_string());
        }
        for hcl in real_agent_hcl(setup, dir.path(), https) {
            cmd.args(["-hcl", &hcl]);
        }
        cmd.args(["-grpc-port", "-1"])
            .args(["-hcl", "enable_script_checks = true"])
            .args(["-hcl", "check_update_interval = \"0s\""])
            .args(["-hcl", "ports { grpc_tls = -1 }"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin:?}: {e}"));
        let http_client = client();
        let base = format!("http://127.0.0.1:{http}");
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let r = http_client
                .get(format!("{base}/v1/status/leader"))
                .send()
                .await;
            if let Ok(r) = r
                && r.text()
                    .await
                    .is_ok_and(|t| !t.trim().is_empty() && t.trim() != "\"\"")
            {
                break;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(dir.path().join("consul.log")).unwrap_or_default();
                panic!("consul agent did not get a leader (exit: {exited:?}); log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let consul = TestConsul {
            base,
            dns: SocketAddr::from(([127, 0, 0, 1], dns)),
            https: https.map(|p| format!("https://127.0.0.1:{p}")),
            unix: setup.http_unix.clone(),
            token: setup.acl_management.clone(),
            http: http_client,
            backend: Backend::Real {
                _child: child,
                _dir: dir,
            },
        };
        for (n, token) in setup.acl_tokens.iter().enumerate() {
            consul.create_real_token(n, token).await;
        }
        consul
    }

    /// Creates `token` on a real agent: a policy with its prefix rules, then a token with its
    /// secret (retried while the ACL system is still bootstrapping).
    async fn create_real_token(&self, n: usize, token: &AclToken) {
        let word = |p: Policy| match p {
            Policy::Deny => "deny",
            Policy::Read => "read",
            Policy::Write => "write",
        };
        let mut rules = String::new();
        for (kind, list) in [
            ("node_prefix", &token.node_prefix),
            ("service_prefix", &token.service_prefix),
            ("key_prefix", &token.key_prefix),
            ("session_prefix", &token.session_prefix),
            ("agent_prefix", &token.agent_prefix),
            ("query_prefix", &token.query_prefix),
        ] {
            for (prefix, policy) in list {
                rules.push_str(&format!(
                    "{kind} {prefix:?} {{ policy = {:?} }}\n",
                    word(*policy)
                ));
            }
        }
        let deadline = tokio::time::Instant::now() + LIMIT;
        let policy_id = loop {
            let r = self
                .authed(self.http.put(format!("{}/v1/acl/policy", self.base)))
                .body(json!({"Name": format!("test-policy-{n}"), "Rules": rules}).to_string())
                .send()
                .await;
            if let Ok(r) = r
                && r.status().is_success()
            {
                let v: Value = r.json().await.expect("policy JSON");
                break v["ID"].as_str().expect("policy ID").to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cannot create ACL policy {n}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let body = json!({"SecretID": token.secret, "Policies": [{"ID": policy_id}]});
        let r = self
            .authed(self.http.put(format!("{}/v1/acl/token", self.base)))
            .body(body.to_string())
            .send()
            .await
            .expect("create ACL token");
        assert!(r.status().is_success(), "create ACL token: {}", r.status());
    }

    /// Adds the helper's own token (ACLs on) to a request.
    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.header("X-Consul-Token", t),
            None => rb,
        }
    }

    /// `https://127.0.0.1:<port>` of the HTTPS listener ([`AgentSetup::tls`]).
    pub fn https_url(&self) -> String {
        self.https.clone().expect("agent started with TLS")
    }

    /// `unix://<path>` of the HTTP unix socket ([`AgentSetup::http_unix`]).
    pub fn unix_url(&self) -> String {
        let path = self
            .unix
            .as_ref()
            .expect("agent started with a unix socket");
        format!("unix://{}", path.display())
    }

    /// The double's request log (`None` against a real agent): what the proxy sent.
    pub fn requests(&self, prefix: &str) -> Option<Vec<consul_double::SeenRequest>> {
        self.faults().map(|f| f.requests(prefix))
    }

    /// `POST /v1/query`: a prepared query named `name` for passing instances of `service`
    /// tagged `tags`; returns its ID.
    pub async fn create_query(&self, name: &str, service: &str, tags: &[&str]) -> String {
        let body = json!({
            "Name": name,
            "Service": {"Service": service, "Tags": tags, "OnlyPassing": true},
            "DNS": {"TTL": "0s"},
        });
        let url = format!("{}/v1/query", self.base);
        let r = self
            .authed(self.http.post(&url))
            .body(body.to_string())
            .timeout(LIMIT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(r.status().is_success(), "POST {url}: {}", r.status());
        let v: Value = r.json().await.expect("query JSON");
        v["ID"].as_str().expect("query ID").to_owned()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        self.base.clone()
    }

    pub fn dns_addr(&self) -> SocketAddr {
        self.dns
    }

    pub fn is_real(&self) -> bool {
        matches!(self.backend, Backend::Real { .. })
    }

    /// The double's fault switches; `None` against a real agent.
    pub fn faults(&self) -> Option<&Faults> {
        match &self.backend {
            Backend::Double(d) => Some(d.faults()),
            Backend::Real { .. } => None,
        }
    }

    /// Like [`TestConsul::faults`], printing why the calling test is skipped when absent.
    pub fn faults_or_skip(&self, test: &str) -> Option<&Faults> {
        let f = self.faults();
        if f.is_none() {
            eprintln!(
                "skipping {test}: needs the Consul double's fault switches (CONSUL_BIN is set)"
            );
        }
        f
    }

    async fn put(&self, path_and_query: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let url = format!("{}{path_and_query}", self.base);
        let r = self
            .authed(self.http.put(&url))
            .body(body)
            .timeout(LIMIT)
            .send()
            .await;
        let r = r.unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        if !r.status().is_success() {
            let status = r.status();
            panic!("PUT {url}: {status} {}", r.text().await.unwrap_or_default());
        }
        r
    }

    async fn put_bool(&self, path_and_query: &str, body: impl Into<reqwest::Body>) -> bool {
        self.put(path_and_query, body)
            .await
            .json()
            .await
            .expect("true/false body")
    }

    pub async fn register(&self, def: &ServiceDef) {
        let query = match &def.node {
            Some((node, addr)) if !self.is_real() => format!("?node={node}&node_address={addr}"),
            _ => String::new(),
        };
        self.put(
            &format!("/v1/agent/service/register{query}"),
            def.to_json().to_string(),
        )
        .await;
    }

    pub async fn deregister(&self, service_id: &str) {
        self.put(&format!("/v1/agent/service/deregister/{service_id}"), "")
            .await;
    }

    pub async fn check_pass(&self, check_id: &str) {
        self.put(&format!("/v1/agent/check/pass/{check_id}"), "")
            .await;
    }

    pub async fn check_warn(&self, check_id: &str) {
        self.put(&format!("/v1/agent/check/warn/{check_id}"), "")
            .await;
    }

    pub async fn check_fail(&self, check_id: &str) {
        self.put(&format!("/v1/agent/check/fail/{check_id}"), "")
            .await;
    }

    /// A TTL check update (`verb` = pass, warn or fail) with `note` as the check's output.
    pub async fn check_note(&self, verb: &str, check_id: &str, note: &str) {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/agent/check/{verb}/{check_id}", self.base),
            &[("note", note)],
        )
        .expect("url");
        let path = &url.as_str()[self.base.len()..];
        self.put(path, "").await;
    }

    pub async fn maintenance(&self, service_id: &str, on: bool, reason: &str) {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v1/agent/service/maintenance/{service_id}", self.base),
            &[
                ("enable", if on { "true" } else { "false" }),
                ("reason", reason),
            ],
        )
        .expect("url");
        let path = &url.as_str()[self.base.len()..];
        self.put(path, "").await;
    }

    /// `PUT /v1/kv/<key>`; Consul answers `true`.
    pub async fn kv_put(&self, key: &str, value: &str) -> bool {
        self.put_bool(&format!("/v1/kv/{key}"), value.to_string())
            .await
    }

    pub async fn kv_delete(&self, key: &str) {
        let url = format!("{}/v1/kv/{key}", self.base);
        let r = self
            .authed(self.http.delete(&url))
            .timeout(LIMIT)
            .send()
            .await;
        assert!(
            r.unwrap_or_else(|e| panic!("DELETE {url}: {e}"))
                .status()
                .is_success()
        );
    }

    /// A session with this TTL (Consul accepts 10 s .. 24 h) and no lock-delay, so a test
    /// can take over a lock right after destroying its holder.
    pub async fn session_create(&self, ttl: Duration) -> String {
        let body = json!({"TTL": consul_double::duration::format(ttl), "LockDelay": "0s"});
        let v: Value = self
            .put("/v1/session/create", body.to_string())
            .await
            .json()
            .await
            .unwrap();
        v["ID"].as_str().expect("session ID").to_string()
    }

    pub async fn session_destroy(&self, session: &str) {
        self.put(&format!("/v1/session/destroy/{session}"), "")
            .await;
    }

    /// `?acquire=`: true if this session now holds the key.
    pub async fn kv_acquire(&self, key: &str, value: &str, session: &str) -> bool {
        self.put_bool(
            &format!("/v1/kv/{key}?acquire={session}"),
            value.to_string(),
        )
        .await
    }

    /// `?release=`: true if the session held the key and released it.
    pub async fn kv_release(&self, key: &str, session: &str) -> bool {
        self.put_bool(&format!("/v1/kv/{key}?release={session}"), "")
            .await
    }

    /// `GET /v1/health/service/<svc>?passing[&tag=]` entries.
    pub async fn health_passing(&self, svc: &str, tag: Option<&str>) -> Vec<Value> {
        self.health(svc, tag, 0).await.1
    }

    async fn health(&self, svc: &str, tag: Option<&str>, index: u64) -> (u64, Vec<Value>) {
        let mut q: Vec<(&str, String)> = vec![("passing", "true".into())];
        if let Some(t) = tag {
            q.push(("tag", t.into()));
        }
        if index > 0 {
            q.push(("index", index.to_string()));
            q.push(("wait", "5s".into()));
        }
        let url = format!("{}/v1/health/service/{svc}", self.base);
        let r = self
            .authed(self.http.get(&url))
            .query(&q)
            .timeout(LIMIT)
            .send()
            .await;
        let r = r.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        let idx = r
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (idx, r.json().await.expect("health JSON"))
    }

    /// Waits (with blocking queries, bounded) until `svc` has exactly `count` passing
    /// instances; returns them.
    pub async fn wait_passing(&self, svc: &str, tag: Option<&str>, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + LIMIT;
        let mut index = 0;
        loop {
            let (idx, entries) = self.health(svc, tag, index).await;
            if entries.len() == count {
                return entries;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{svc}: wanted {count} passing instances, have {}",
                entries.len()
            );
            // A lower index means a snapshot restore: start over (Consul's client rule).
            index = if idx < index { 0 } else { idx };
        }
    }

    /// Registers `mysql-a` at `a` (passing) and `mysql-b` at `b` (critical) under service
    /// `mysql`, tag `primary`, with TTL checks the test drives the way a failover tool updates
    /// Consul; returns once `a` is the one passing instance.
    pub async fn register_pair(&self, a: SocketAddr, b: SocketAddr) {
        for (id, addr, status) in [("mysql-a", a, "passing"), ("mysql-b", b, "critical")] {
            self.register(&ServiceDef::ttl_primary(id, addr).status(status))
                .await;
        }
        self.check_pass("service:mysql-a").await;
        self.wait_passing("mysql", Some("primary"), 1).await;
    }

    /// The failover tool's last step: Consul now says `mysql-b` is the primary.
    pub async fn points_to_b(&self) {
        self.check_fail("service:mysql-a").await;
        self.check_pass("service:mysql-b").await;
    }
}

/// The `-hcl` snippets that give a real agent what `setup` asks for (its PEM files go to
/// `dir`).
fn real_agent_hcl(setup: &AgentSetup, dir: &std::path::Path, https: Option<u16>) -> Vec<String> {
    let mut hcl = Vec::new();
    if let Some(path) = &setup.http_unix {
        hcl.push(format!(
            "addresses {{ http = \"127.0.0.1 unix://{}\" }}",
            path.display()
        ));
    }
    if let (Some(tls), Some(port)) = (&setup.tls, https) {
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path.display().to_string()
        };
        let cert = write("agent.pem", &tls.cert_pem);
        let key = write("agent-key.pem", &tls.key_pem);
        let ca = tls
            .ca_pem
            .as_deref()
            .map(|pem| format!("ca_file = {:?}", write("ca.pem", pem)))
            .unwrap_or_default();
        hcl.push(format!("ports {{ https = {port} }}"));
        hcl.push(format!(
            "tls {{ defaults {{ cert_file = {cert:?} key_file = {key:?} {ca} }} https {{ verify_incoming = {} }} }}",
            tls.verify_incoming
        ));
    }
    if let Some(token) = &setup.acl_management {
        hcl.push(format!(
            "acl {{ enabled = true default_policy = \"deny\" tokens {{ initial_management = {token:?} agent = {token:?} }} }}"
        ));
    }
    if !setup.use_streaming_backend {
        hcl.push("use_streaming_backend = false".to_owned());
    }
    hcl
}
