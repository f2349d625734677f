//! The HTTP side of Consul discovery: one reused connection (reqwest keeps it alive), the ACL
//! token as the `X-Consul-Token` header (never in a URL, never logged), HTTPS with a custom CA,
//! and several agent addresses tried in turn when one is down. Response bodies are capped so a
//! broken or hostile endpoint cannot make us buffer without bound.

use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::tls;
use crate::config::ConsulConfig;
use crate::util::secret::Secret;
use crate::util::text::{one_line, truncate_chars};

/// Largest response body we read (a health answer for a few hundred instances is ~1 MiB).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// A failed Consul request. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("cannot reach Consul agent {agent}: {message}")]
    Transport { agent: String, message: String },
    #[error("Consul agent {agent} answered HTTP {status}: {body}")]
    Status {
        agent: String,
        status: u16,
        body: String,
    },
    #[error("Consul agent {agent} sent more than {limit} bytes")]
    TooLarge { agent: String, limit: usize },
    #[error("Consul client setup: {0}")]
    Setup(String),
}

/// A successful answer (HTTP 200, or 404 where the caller accepts it).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `X-Consul-Index`, if present and numeric.
    pub index: Option<u64>,
    pub body: Vec<u8>,
    /// Which agent answered.
    pub agent: String,
    /// `X-Consul-Results-Filtered-By-ACLs: true`: the token could not see some results.
    pub filtered_by_acls: bool,
    /// `X-Consul-KnownLeader`, when it means something: `None` on answers of the streaming
    /// backend (`X-Consul-Query-Backend: streaming`), whose query meta carries only the index, so
    /// Consul's `setMeta` (`agent/http.go`) always writes `false` there
    /// (`agent/rpcclient/health/view.go` `HealthView.Result`).
    pub known_leader: Option<bool>,
    /// `X-Consul-LastContact`: how long ago the answering server heard from the leader (`0` on
    /// streaming answers, for the same reason).
    pub last_contact: Option<Duration>,
}

/// One agent: its base URL and the HTTP client that reaches it (TCP, or its unix socket).
struct Agent {
    url: Url,
    /// How logs name it (`http://127.0.0.1:8500`, `unix:///run/consul.sock`).
    name: String,
    http: reqwest::Client,
}

/// Client for the agents of one discovery source.
pub struct ConsulClient {
    agents: Vec<Agent>,
    /// Agent to try first: the last one that answered.
    current: usize,
    token: Option<Secret>,
}

impl ConsulClient {
    pub fn new(config: &ConsulConfig) -> Result<ConsulClient, ConsulError> {
        if config.tls.skip_verify {
            tracing::warn!(
                side = "discovery",
                "consul_tls_skip_verify (or CONSUL_HTTP_SSL_VERIFY=false): the Consul agent's TLS certificate is NOT verified; anyone on the path can impersonate it and choose the primary"
            );
        }
        let tls = tls::client_config(&config.tls).map_err(ConsulError::Setup)?;
        let agents = config
            .addresses
            .iter()
            .map(|address| Agent::new(address, &tls))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConsulClient {
            agents,
            current: 0,
            token: config.token.clone(),
        })
    }

    /// GETs `path` with `query` from the first agent that answers. `accept_404` treats a 404 as
    /// an answer (a missing KV key still carries an index to block on).
    pub async fn get(
        &mut self,
        path: &[&str],
        query: &[(&str, Option<String>)],
        timeout: Duration,
        accept_404: bool,
    ) -> Result<Answer, ConsulError> {
        let mut last_error = None;
        for attempt in 0..self.agents.len() {
            let index = (self.current + attempt) % self.agents.len();
            let agent = &self.agents[index];
            let url = build_url(&agent.url, path, query);
            match self.get_one(agent, url, timeout, accept_404).await {
                Ok(answer) => {
                    self.current = index;
                    return Ok(answer);
                }
                // Only an unreachable agent sends us to the next one; an agent that answers with
                // an error speaks for the cluster.
                Err(e @ ConsulError::Transport { .. }) => last_error = Some(e),
                Err(e) => {
                    self.current = index;
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ConsulError::Setup("no agent address".into())))
    }

    async fn get_one(
        &self,
        target: &Agent,
        url: Url,
        timeout: Duration,
        accept_404: bool,
    ) -> Result<Answer, ConsulError> {
        let agent = target.name.clone();
        let mut request = target.http.get(url).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token.expose());
        }
        let transport = |e: reqwest::Error| ConsulError::Transport {
            agent: agent.clone(),
            message: describe(&e),
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ConsulError::TooLarge {
                    agent,
                    limit: MAX_BODY,
                });
            }
            body.extend_from_slice(&chunk);
        }
        interpret(agent, status, &headers, body, accept_404)
    }
}

/// What a whole HTTP answer means, as the client received it: status, headers and body in, an
/// [`Answer`] or the error to report out. Pure, so it is fuzzed with arbitrary answers.
pub fn interpret(
    agent: String,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: Vec<u8>,
    accept_404: bool,
) -> Result<Answer, ConsulError> {
    // Query meta as Consul's client reads it (`api/api.go` `parseQueryMeta`).
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let index = header("X-Consul-Index").and_then(|v| v.parse().ok());
    if status == StatusCode::OK || (accept_404 && status == StatusCode::NOT_FOUND) {
        // `agent/structs/structs.go` `QueryBackend.String`: `blocking-query` or `streaming`.
        let streaming = header("X-Consul-Query-Backend") == Some("streaming");
        return Ok(Answer {
            status,
            index,
            body,
            agent,
            filtered_by_acls: header("X-Consul-Results-Filtered-By-ACLs") == Some("true"),
            // A client agent's streaming backend answers from its own materialized view:
            // there, KnownLeader/LastContact are not meaningful (`agent/rpcclient/health`), so
            // they are not read.
            known_leader: header("X-Consul-KnownLeader")
                .filter(|_| !streaming)
                .map(|v| v == "true"),
            last_contact: header("X-Consul-LastContact")
                .filter(|_| !streaming)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis),
        });
    }
    // Consul's error bodies are plain text and may be UTF-8 of any length: cut on a character
    // boundary (a byte-index cut inside a character would panic).
    let text = truncate_chars(&one_line(&String::from_utf8_lossy(&body)), 200);
    Err(ConsulError::Status {
        agent,
        status: status.as_u16(),
        body: text,
    })
}

/// `agent` + path segments (percent-encoded) + query; `None` values are bare flags (`?stale`).
fn build_url(agent: &Url, path: &[&str], query: &[(&str, Option<String>)]) -> Url {
    let mut url = agent.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty();
        for part in path {
            segments.push(part);
        }
    }
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (key, value) in query {
            match value {
                Some(v) => pairs.append_pair(key, v),
                None => pairs.append_key_only(key),
            };
        }
    }
    url
}

impl Agent {
    /// `http(s)://host:port` over TCP, or `unix:///path` over the agent's unix socket (as
    /// `CONSUL_HTTP_ADDR` allows; `api/api.go` `NewClient`).
    fn new(address: &str, tls: &rustls::ClientConfig) -> Result<Agent, ConsulError> {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(1)
            .tls_backend_preconfigured(tls.clone());
        let (url, name, builder) = match address.strip_prefix("unix://") {
            Some(path) => (
                // The host is not used for routing, only as the Host header.
                Url::parse("http://localhost").map_err(|e| ConsulError::Setup(e.to_string()))?,
                address.to_owned(),
                builder.unix_socket(std::path::PathBuf::from(path)),
            ),
            None => {
                let url = Url::parse(address)
                    .map_err(|e| ConsulError::Setup(format!("agent address {address}: {e}")))?;
                let name = format!(
                    "{}://{}:{}",
                    url.scheme(),
                    url.host_str().unwrap_or("?"),
                    url.port_or_known_default().unwrap_or(0)
                );
                (url, name, builder)
            }
        };
        let http = builder
            .build()
            .map_err(|e| ConsulError::Setup(e.to_string()))?;
        Ok(Agent { url, name, http })
    }
}

/// reqwest's error chain in one line, without the URL (which is already in `agent`).
fn describe(e: &reqwest::Error) -> String {
    let mut message = if e.is_timeout() {
        "request timed out".to_owned()
    } else if e.is_connect() {
        "connect failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if let Some(hint) = tls_hint(&message) {
        message.push_str(" (");
        message.push_str(hint);
        message.push(')');
    }
    message
}

/// What a TLS failure toward the agent usually means, naming the setting that fixes it.
fn tls_hint(message: &str) -> Option<&'static str> {
    let has = |needles: &[&str]| needles.iter().any(|n| message.contains(n));
    if has(&["CertificateRequired"]) {
        Some(
            "the agent requires a client certificate (verify_incoming): set consul_client_cert and consul_client_key, or CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY",
        )
    } else if has(&[
        "alert: UnknownCA",
        "alert: BadCertificate",
        "alert: CertificateUnknown",
        "alert: UnsupportedCertificate",
        "alert: AccessDenied",
        "alert: DecryptError",
    ]) {
        Some(
            "the agent refused our client certificate (consul_client_cert): is it signed by a CA the agent trusts?",
        )
    } else if has(&["NotValidForName", "not valid for name"]) {
        Some(
            "the agent's certificate is not valid for the host in its address: set consul_tls_server_name (or CONSUL_TLS_SERVER_NAME) to a name it holds",
        )
    } else if has(&["UnknownIssuer"]) {
        Some(
            "the agent's certificate is not signed by a CA we trust: set consul_ca_cert or consul_ca_path (or CONSUL_CACERT / CONSUL_CAPATH)",
        )
    } else if has(&["certificate expired", "Expired"]) {
        Some("the agent's certificate has expired or is not valid yet")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_any_text_never_panic() {
        let headers = reqwest::header::HeaderMap::new();
        let body = "é".repeat(300).into_bytes();
        let err = interpret(
            "a".into(),
            StatusCode::INTERNAL_SERVER_ERROR,
            &headers,
            body,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("HTTP 500") && err.ends_with('…'), "{err}");
        let err = interpret(
            "a".into(),
            StatusCode::BAD_GATEWAY,
            &headers,
            vec![0xff, 0xfe, b'\n', 0xc3],
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("HTTP 502"), "{err}");
    }

    #[test]
    fn known_leader_is_read_only_from_rpc_answers() {
        let answer = |backend: Option<&'static str>| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("X-Consul-Index", "7".parse().unwrap());
            headers.insert("X-Consul-KnownLeader", "false".parse().unwrap());
            headers.insert("X-Consul-LastContact", "5000".parse().unwrap());
            if let Some(b) = backend {
                headers.insert("X-Consul-Query-Backend", b.parse().unwrap());
            }
            interpret("a".into(), StatusCode::OK, &headers, b"[]".to_vec(), false).unwrap()
        };
        let rpc = answer(Some("blocking-query"));
        assert_eq!(rpc.known_leader, Some(false));
        assert_eq!(rpc.last_contact, Some(Duration::from_secs(5)));
        assert_eq!(
            answer(None).known_leader,
            Some(false),
            "older agents send no backend"
        );
        let streaming = answer(Some("streaming"));
        assert_eq!(
            streaming.known_leader, None,
            "streaming answers always say false"
        );
        assert_eq!(streaming.index, Some(7));
    }

    #[test]
    fn tls_failures_name_the_setting_that_fixes_them() {
        let hint = |m: &str| tls_hint(m).unwrap_or("");
        assert!(
            hint("request failed: received fatal alert: CertificateRequired")
                .contains("consul_client_cert")
        );
        assert!(
            hint("request failed: received fatal alert: UnknownCA").contains("client certificate")
        );
        assert!(
            hint("invalid peer certificate: certificate not valid for name \"127.0.0.1\"")
                .contains("consul_tls_server_name")
        );
        assert!(hint("invalid peer certificate: UnknownIssuer").contains("consul_ca_cert"));
        assert_eq!(tls_hint("connect failed: Connection refused"), None);
    }

    #[test]
    fn urls_encode_segments_and_bare_flags() {
        let agent = Url::parse("http://127.0.0.1:8500").unwrap();
        let url = build_url(
            &agent,
            &["v1", "health", "service", "my sql"],
            &[
                ("passing", Some("true".into())),
                ("tag", Some("a&b".into())),
                ("stale", None),
            ],
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8500/v1/health/service/my%20sql?passing=true&tag=a%26b&stale"
        );
        let kv = build_url(&agent, &["v1", "kv", "service", "mysql", "leader"], &[]);
        assert_eq!(
            kv.as_str(),
            "http://127.0.0.1:8500/v1/kv/service/mysql/leader"
        );
    }
}
