//! From a stacked [`Settings`] to a validated [`Config`]: the defaults table goes under
//! everything, then every field is checked, and an error names the field (as written in the TOML
//! file), its flag and its env var.

use std::net::SocketAddr;
use std::time::Duration;

use super::defaults;
use super::kinds::{Consistency, DiscoveryKind, DnsRecord, Role};
use super::model::{
    Config, ConsulConfig, ConsulScope, ConsulSource, ConsulTls, Discovery, DnsConfig,
    FailoverPolicy, Fallback, FenceConfig, HealthRules, MAX_CONSUL_WAIT,
};
use super::settings::Settings;
use super::{ConfigError, invalid};
use crate::util::pem::{load_cert_dir, load_certs, load_client_identity};
use crate::util::secret::{Secret, read_secret_file};

impl Config {
    /// Applies defaults to `s` and validates every field (no monitor password).
    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        Config::resolve_with(s, None)
    }

    /// Like [`Config::resolve`], with the monitor password from the environment.
    pub fn resolve_with(
        s: Settings,
        monitor_password: Option<Secret>,
    ) -> Result<Config, ConfigError> {
        // The top-level settings are one implicit route without a name: no route to fall back to.
        Config::resolve_route(s, monitor_password, None)
    }

    /// Like [`Config::resolve_with`], for a `[[route]]` table: `fallback` may name one of
    /// `other_routes` (the other routes of the file; [`Routes`](super::Routes) checks their
    /// role). `None`: the top-level settings, which have no other route.
    pub fn resolve_route(
        s: Settings,
        monitor_password: Option<Secret>,
        other_routes: Option<&[&str]>,
    ) -> Result<Config, ConfigError> {
        let s = defaults::table().overlay(s);
        let service = need("service", s.service.clone())?;
        if service.trim().is_empty() || service.contains('/') {
            return Err(invalid(
                "service",
                "must be a non-empty Consul service name without `/`",
            ));
        }
        let discovery = resolve_discovery(&s)?;
        let fence = resolve_fence(&s, monitor_password)?;
        let role = need("role", s.role)?;
        if role == Role::Replica && fence.is_some() {
            return Err(invalid(
                "verify_writable",
                "does not apply to `role = replica` (fencing keeps writes off a read-only server; replicas are read-only): turn verify_writable off or use role = primary",
            ));
        }
        let fallback = resolve_fallback(&need("fallback", s.fallback.clone())?, other_routes)?;
        let max_connections = need("max_connections", s.max_connections)?;
        if max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        let workers = need("workers", s.workers)?;
        if !(1..=64).contains(&workers) {
            return Err(invalid("workers", "must be between 1 and 64"));
        }
        let log_level = need("log_level", s.log_level.clone())?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(invalid("log_level", format!("`{log_level}`: {e}")));
        }
        Ok(Config {
            listen: need("listen", s.listen)?,
            admin: address_or_off("admin", &need("admin", s.admin.clone())?)?,
            metrics_listen: address_or_off(
                "metrics_listen",
                &need("metrics_listen", s.metrics_listen.clone())?,
            )?,
            discovery,
            service,
            on_multiple: need("on_multiple", s.on_multiple)?,
            hold_timeout: nonzero("hold_timeout", s.hold_timeout)?,
            connect_timeout: nonzero("connect_timeout", s.connect_timeout)?,
            backend_greeting_timeout: nonzero(
                "backend_greeting_timeout",
                s.backend_greeting_timeout,
            )?,
            backend_keepalive: zero_is_off("backend_keepalive", s.backend_keepalive)?,
            backend_user_timeout: zero_is_off("backend_user_timeout", s.backend_user_timeout)?,
            max_connections,
            shutdown_grace: need("shutdown_grace", s.shutdown_grace)?,
            max_held: need("max_held", s.max_held)?,
            fence,
            failover: FailoverPolicy {
                on_failover: need("on_failover", s.on_failover)?,
                drain_grace: need("drain_grace", s.drain_grace)?,
            },
            withdrawn_grace: need("withdrawn_grace", s.withdrawn_grace)?,
            proxy_protocol: need("proxy_protocol", s.proxy_protocol)?,
            role,
            balance: need("balance", s.balance)?,
            fallback,
            relay: need("relay", s.relay)?,
            workers,
            log_format: need("log_format", s.log_format)?,
            log_level,
        })
    }
}

/// A defaulted field's value; `None` here means the defaults table lost the field.
fn need<T>(field: &'static str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| invalid(field, "has no value (the built-in default is missing)"))
}

fn nonzero(field: &'static str, value: Option<Duration>) -> Result<Duration, ConfigError> {
    let value = need(field, value)?;
    if value.is_zero() {
        return Err(invalid(field, "must be greater than 0"));
    }
    Ok(value)
}

fn zero_is_off(
    field: &'static str,
    value: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    let value = need(field, value)?;
    Ok((!value.is_zero()).then_some(value))
}

/// Picks and validates the discovery source.
fn resolve_discovery(s: &Settings) -> Result<Discovery, ConfigError> {
    let kind = match (s.discovery, s.backend) {
        (Some(kind), _) => kind,
        (None, Some(_)) => DiscoveryKind::Static,
        (None, None) => DiscoveryKind::ConsulHealth,
    };
    if kind == DiscoveryKind::Static {
        return match s.backend {
            Some(backend) => Ok(Discovery::Static { backend }),
            None => Err(invalid(
                "backend",
                "static discovery needs `backend` (ip:port of the MySQL primary)",
            )),
        };
    }
    if s.backend.is_some() {
        return Err(invalid(
            "backend",
            "only applies to `discovery = static`; remove it or choose static discovery",
        ));
    }
    let default_port = need("default_port", s.default_port)?;
    if default_port == 0 {
        return Err(invalid("default_port", "must be 1..65535"));
    }
    if kind == DiscoveryKind::Dns {
        return resolve_dns(s, default_port).map(Discovery::Dns);
    }
    let tags = need("tag", s.tag.clone())?;
    if tags.iter().any(|t| t.trim().is_empty()) {
        return Err(invalid("tag", "tags must not be empty"));
    }
    let source = match kind {
        DiscoveryKind::ConsulHealth => ConsulSource::Health { tags },
        DiscoveryKind::ConsulCatalog => ConsulSource::Catalog { tags },
        DiscoveryKind::ConsulKv => {
            let key = s.kv_key.clone().unwrap_or_default();
            let key = key.trim_matches('/');
            if key.is_empty() {
                return Err(invalid(
                    "kv_key",
                    "consul-kv discovery needs the key naming the primary, e.g. service/mysql/leader",
                ));
            }
            ConsulSource::Kv {
                key: key.to_owned(),
                require_session: need("kv_require_session", s.kv_require_session)?,
            }
        }
        DiscoveryKind::Static | DiscoveryKind::Dns => unreachable!("handled above"),
    };
    let addresses = need("consul", s.consul.clone())?
        .iter()
        .map(|a| normalize_consul_address(a))
        .collect::<Result<Vec<_>, _>>()?;
    if addresses.is_empty() {
        return Err(invalid("consul", "needs at least one agent address"));
    }
    let wait = need("consul_wait", s.consul_wait)?;
    if wait.is_zero() || wait > MAX_CONSUL_WAIT {
        return Err(invalid(
            "consul_wait",
            "must be between 1ms and 10m (Consul caps blocking queries at 10m)",
        ));
    }
    // As Consul's client (`api/api.go` `NewClient`): a token file wins over a token, whichever
    // layer set each; its content is trimmed of white space; an empty file means "no token".
    let token = match &s.consul_token_file {
        Some(path) => {
            let text = read_secret_file(path).map_err(|e| {
                invalid(
                    "consul_token_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let trimmed = text.expose().trim();
            if trimmed.is_empty() {
                s.consul_token.clone()
            } else {
                Some(Secret::new(trimmed))
            }
        }
        None => s.consul_token.clone(),
    };
    if let Some(stale) = s.consul_stale_after
        && stale <= wait / 16
    {
        return Err(invalid(
            "consul_stale_after",
            "must be longer than a blocking query's jitter (consul_wait / 16)",
        ));
    }
    let tls = resolve_consul_tls(s)?;
    let scope = ConsulScope {
        namespace: non_empty(&s.consul_namespace),
        partition: non_empty(&s.consul_partition),
        peer: non_empty(&s.consul_peer),
        filter: non_empty(&s.consul_filter),
    };
    let consistency = need("consistency", s.consistency)?;
    if s.consul_max_stale.is_some() && consistency != Consistency::Stale {
        return Err(invalid(
            "consul_max_stale",
            "only applies to `consistency = stale` (other reads come from the leader)",
        ));
    }
    Ok(Discovery::Consul(Box::new(ConsulConfig {
        source,
        addresses,
        token,
        tls,
        scope,
        wait,
        stale_after: s.consul_stale_after,
        dc: s.dc.clone().filter(|dc| !dc.is_empty()),
        consistency,
        max_stale: s.consul_max_stale,
        default_port,
        health: HealthRules {
            warning_is: need("warning_is", s.warning_is)?,
            ignore_checks: ignore_checks(s)?,
        },
    })))
}

/// `fallback`: `hold`, or the name of one of `routes` (the other routes a `[[route]]` table may
/// fall back to; `None` for the top-level settings).
fn resolve_fallback(text: &str, routes: Option<&[&str]>) -> Result<Fallback, ConfigError> {
    match text.trim() {
        "hold" => Ok(Fallback::Hold),
        "" => Err(invalid(
            "fallback",
            "must be `hold` or the name of a primary route",
        )),
        name if routes.is_some_and(|r| r.contains(&name)) => Ok(Fallback::Route(name.to_owned())),
        name if routes.is_none() => Err(invalid(
            "fallback",
            format!(
                "`{name}` names a route, but these settings are not a [[route]] table: only `hold` applies here"
            ),
        )),
        name => Err(invalid(
            "fallback",
            format!(
                "no other route named `{name}` (other routes: {}); use `hold` or one of them",
                routes.map_or_else(String::new, |r| r.join(", "))
            ),
        )),
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// TLS settings toward the agent, checked now so a wrong path is a start-up error.
fn resolve_consul_tls(s: &Settings) -> Result<ConsulTls, ConfigError> {
    if let Some(path) = &s.consul_ca_cert {
        load_certs(path).map_err(|e| invalid("consul_ca_cert", e.to_string()))?;
    }
    if let Some(dir) = &s.consul_ca_path {
        load_cert_dir(dir).map_err(|e| invalid("consul_ca_path", e.to_string()))?;
    }
    let client_cert = match (&s.consul_client_cert, &s.consul_client_key) {
        (Some(cert), Some(key)) => {
            load_client_identity(cert, key)
                .map_err(|e| invalid("consul_client_cert", e.to_string()))?;
            Some((cert.clone(), key.clone()))
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "consul_client_key",
                "consul_client_cert needs its key too (both client cert and client key must be provided)",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "consul_client_cert",
                "consul_client_key needs its certificate too (both client cert and client key must be provided)",
            ));
        }
    };
    Ok(ConsulTls {
        ca_cert: s.consul_ca_cert.clone(),
        ca_path: s.consul_ca_path.clone(),
        client_cert,
        server_name: non_empty(&s.consul_tls_server_name),
        skip_verify: need("consul_tls_skip_verify", s.consul_tls_skip_verify)?,
    })
}

fn ignore_checks(s: &Settings) -> Result<Vec<String>, ConfigError> {
    let ids: Vec<String> = s
        .ignore_checks
        .iter()
        .flatten()
        .map(|id| id.trim().to_owned())
        .collect();
    if ids.iter().any(String::is_empty) {
        return Err(invalid("ignore_checks", "check IDs must not be empty"));
    }
    Ok(ids)
}

/// An HTTP endpoint's address (`admin`, `metrics_listen`): `off` (or empty) disables it;
/// anything else must be ip:port.
fn address_or_off(field: &'static str, text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    match text.trim() {
        "" | "off" | "none" | "false" => Ok(None),
        text => text.parse().map(Some).map_err(|_| {
            invalid(
                field,
                format!("`{text}` is not ip:port (e.g. 127.0.0.1:9306) or `off`"),
            )
        }),
    }
}

/// Validates the fencing settings; the password comes from the env var or the file.
fn resolve_fence(
    s: &Settings,
    env_password: Option<Secret>,
) -> Result<Option<FenceConfig>, ConfigError> {
    if !need("verify_writable", s.verify_writable)? {
        return Ok(None);
    }
    let user = s.monitor_user.clone().unwrap_or_default();
    if user.is_empty() {
        return Err(invalid(
            "monitor_user",
            "verify_writable needs a MySQL user to run `SELECT @@global.read_only` as",
        ));
    }
    let password = match (&s.monitor_password_file, env_password) {
        (Some(path), _) => read_secret_file(path).map_err(|e| {
            invalid(
                "monitor_password_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?,
        (None, Some(password)) => password,
        (None, None) => Secret::new(""),
    };
    Ok(Some(FenceConfig {
        user,
        password,
        interval: nonzero("verify_interval", s.verify_interval)?,
    }))
}

/// Validates the DNS source settings.
fn resolve_dns(s: &Settings, default_port: u16) -> Result<DnsConfig, ConfigError> {
    let name = s.dns_name.clone().unwrap_or_default();
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(invalid(
            "dns_name",
            "dns discovery needs the name of the primary, e.g. primary.mysql.service.consul",
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(invalid(
            "dns_name",
            format!("`{name}` is not a valid DNS name"),
        ));
    }
    let record = s.dns_record.unwrap_or(default_dns_record(&name));
    let interval = nonzero("dns_interval", s.dns_interval)?;
    let timeout = nonzero("dns_timeout", s.dns_timeout)?;
    Ok(DnsConfig {
        name: format!("{name}."),
        server: s.dns_server,
        record,
        interval,
        timeout,
        default_port,
    })
}

/// SRV for the names Consul answers with a port (`agent/dns.go` `dispatch`: the `service` and
/// `query` lookups, `serviceSRVRecords`): RFC 2782 `_<svc>._<tag>…`, `[<tag>.]<svc>.service[.<dc>
/// …].consul` and `<query>.query[.<dc>].consul`; A/AAAA (with `default_port`) for anything else.
/// `name` is lower case, without the final dot.
fn default_dns_record(name: &str) -> DnsRecord {
    let labels: Vec<&str> = name.split('.').collect();
    let consul_lookup = labels.last() == Some(&"consul")
        && labels.len() >= 3
        && labels[1..labels.len() - 1]
            .iter()
            .any(|l| *l == "service" || *l == "query");
    if name.starts_with('_') || consul_lookup {
        DnsRecord::Srv
    } else {
        DnsRecord::A
    }
}

/// `127.0.0.1:8500` → `http://127.0.0.1:8500`; keeps an explicit scheme; drops a trailing `/`.
/// `unix:///path/to/consul.sock` (the agent's `addresses.http = "unix://…"`, which Consul's
/// client accepts in `CONSUL_HTTP_ADDR`: `api/api.go` `NewClient`) is kept as it is; its path
/// must be absolute.
fn normalize_consul_address(address: &str) -> Result<String, ConfigError> {
    let address = address.trim();
    if let Some(path) = address.strip_prefix("unix://") {
        if !path.starts_with('/') || path.len() < 2 {
            return Err(invalid(
                "consul",
                format!(
                    "`{address}` is not a unix socket address like unix:///var/run/consul.sock (the path must be absolute)"
                ),
            ));
        }
        return Ok(address.to_owned());
    }
    let address = address.trim_end_matches('/');
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let ok = (with_scheme.starts_with("http://") || with_scheme.starts_with("https://"))
        && with_scheme
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty());
    if !ok {
        return Err(invalid(
            "consul",
            format!(
                "`{address}` is not an agent address like http://127.0.0.1:8500 or unix:///var/run/consul.sock"
            ),
        ));
    }
    Ok(with_scheme)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnMultiple;
    use std::path::PathBuf;

    fn with_backend() -> Settings {
        Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        }
    }

    #[test]
    fn replica_settings_default_and_validate() {
        use crate::config::{Balance, Fallback};
        let c = Config::resolve(with_backend()).unwrap();
        assert_eq!(
            (c.role, c.balance, c.fallback),
            (Role::Primary, Balance::LeastConnections, Fallback::Hold)
        );
        let replica = || Settings {
            role: Some(Role::Replica),
            ..Settings::default()
        };
        assert_eq!(Config::resolve(replica()).unwrap().role, Role::Replica);
        let refused = |s: Settings| Config::resolve(s).unwrap_err().to_string();
        let err = refused(Settings {
            verify_writable: Some(true),
            monitor_user: Some("monitor".into()),
            ..replica()
        });
        assert!(
            err.contains("`verify_writable`") && err.contains("role = replica"),
            "{err}"
        );
        let err = refused(Settings {
            fallback: Some("main-rw".into()),
            ..replica()
        });
        assert!(
            err.contains("`fallback`") && err.contains("main-rw"),
            "{err}"
        );
        assert_eq!(
            resolve_fallback("main-rw", Some(&["main-rw", "main-ro"])).unwrap(),
            Fallback::Route("main-rw".into())
        );
        assert!(resolve_fallback("other", Some(&["main-rw"])).is_err());
    }

    #[test]
    fn defaults_apply_when_only_backend_is_set() {
        let c = Config::resolve(with_backend()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:3306".parse().unwrap());
        assert_eq!(c.hold_timeout, Duration::from_secs(10));
        assert_eq!(c.service, "mysql");
        assert_eq!(c.workers, 1);
        assert_eq!(
            c.discovery,
            Discovery::Static {
                backend: "127.0.0.1:3307".parse().unwrap()
            }
        );
    }

    #[test]
    fn errors_name_the_field_flag_and_env() {
        let err = Config::resolve(Settings {
            hold_timeout: Some(Duration::ZERO),
            ..with_backend()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`hold_timeout`"), "{err}");
        assert!(err.contains("--hold-timeout"), "{err}");
        assert!(err.contains("CONSUL_MYSQL_PROXY_HOLD_TIMEOUT"), "{err}");

        let err = Config::resolve(Settings {
            discovery: Some(DiscoveryKind::Static),
            ..Settings::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`backend`"), "{err}");

        let err = Config::resolve(Settings {
            log_level: Some("info,=[".into()),
            ..with_backend()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`log_level`"), "{err}");
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_otherwise_an_address() {
        assert_eq!(
            Config::resolve(with_backend()).unwrap().metrics_listen,
            None
        );
        let on = Config::resolve(Settings {
            metrics_listen: Some("0.0.0.0:9307".into()),
            ..with_backend()
        })
        .unwrap();
        assert_eq!(on.metrics_listen, Some("0.0.0.0:9307".parse().unwrap()));
        let err = Config::resolve(Settings {
            metrics_listen: Some("everywhere".into()),
            ..with_backend()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`metrics_listen`"), "{err}");
        assert!(err.contains("CONSUL_MYSQL_PROXY_METRICS_LISTEN"), "{err}");
    }

    fn consul(c: &Config) -> &ConsulConfig {
        match &c.discovery {
            Discovery::Consul(consul) => consul,
            other => panic!("expected consul discovery, got {other:?}"),
        }
    }

    #[test]
    fn consul_health_is_the_default_without_a_backend() {
        let c = Config::resolve(Settings::default()).unwrap();
        let consul = consul(&c);
        assert_eq!(
            consul.source,
            ConsulSource::Health {
                tags: vec!["primary".into()]
            }
        );
        assert_eq!(consul.addresses, vec!["http://127.0.0.1:8500".to_owned()]);
        assert_eq!(consul.wait, Duration::from_secs(300));
        assert_eq!(c.on_multiple, OnMultiple::Refuse);
    }

    #[test]
    fn consul_settings_are_validated() {
        let err = |s: Settings| Config::resolve(s).unwrap_err().to_string();
        let kv = Settings {
            discovery: Some(DiscoveryKind::ConsulKv),
            ..Settings::default()
        };
        assert!(err(kv.clone()).contains("`kv_key`"));
        let both = Settings {
            discovery: Some(DiscoveryKind::ConsulHealth),
            ..with_backend()
        };
        assert!(err(both).contains("only applies to `discovery = static`"));
        let long_wait = Settings {
            consul_wait: Some(Duration::from_secs(601)),
            ..Settings::default()
        };
        assert!(err(long_wait).contains("`consul_wait`"));
        let bad_addr = Settings {
            consul: Some(vec!["ftp://x".into()]),
            ..Settings::default()
        };
        assert!(err(bad_addr).contains("`consul`"));
        let c = Config::resolve(Settings {
            kv_key: Some("/service/mysql/leader/".into()),
            consul: Some(vec!["10.0.0.1:8500".into(), "https://c2:8501/".into()]),
            ..kv
        })
        .unwrap();
        let consul = consul(&c);
        assert_eq!(
            consul.source,
            ConsulSource::Kv {
                key: "service/mysql/leader".into(),
                require_session: false
            }
        );
        assert_eq!(
            consul.addresses,
            vec![
                "http://10.0.0.1:8500".to_owned(),
                "https://c2:8501".to_owned()
            ]
        );
    }

    #[test]
    fn consul_ecosystem_env_is_the_lowest_layer_and_tokens_never_print() {
        let env = |name: &str| match name {
            "CONSUL_HTTP_ADDR" => Some("10.1.1.1:8501".to_owned()),
            "CONSUL_HTTP_SSL" => Some("true".to_owned()),
            "CONSUL_HTTP_TOKEN" => Some("s3cr3t-token".to_owned()),
            _ => None,
        };
        let eco = Settings::from_consul_env(env).unwrap();
        let c = Config::resolve(eco.clone()).unwrap();
        assert_eq!(
            consul(&c).addresses,
            vec!["https://10.1.1.1:8501".to_owned()]
        );
        assert_eq!(
            consul(&c).token.as_ref().map(Secret::expose),
            Some("s3cr3t-token")
        );
        let printed = format!("{c:?} {eco:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        let ours = Settings {
            consul: Some(vec!["http://127.0.0.2:8500".into()]),
            ..Settings::default()
        };
        let c = Config::resolve(eco.overlay(ours)).unwrap();
        assert_eq!(
            consul(&c).addresses,
            vec!["http://127.0.0.2:8500".to_owned()]
        );
    }

    #[test]
    fn unix_socket_agent_addresses_are_kept() {
        let c = Config::resolve(Settings {
            consul: Some(vec![
                "unix:///run/consul/http.sock".into(),
                "127.0.0.1:8500".into(),
            ]),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(
            consul(&c).addresses,
            vec![
                "unix:///run/consul/http.sock".to_owned(),
                "http://127.0.0.1:8500".to_owned()
            ]
        );
        for bad in ["unix://relative.sock", "unix://", "unix:///"] {
            let err = Config::resolve(Settings {
                consul: Some(vec![bad.into()]),
                ..Settings::default()
            })
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("`consul`") && err.contains("absolute"),
                "{bad}: {err}"
            );
        }
        // CONSUL_HTTP_ADDR=unix://… as Consul's client takes it; CONSUL_HTTP_SSL does not touch it.
        let env = |name: &str| match name {
            "CONSUL_HTTP_ADDR" => Some("unix:///tmp/consul.sock".to_owned()),
            "CONSUL_HTTP_SSL" => Some("true".to_owned()),
            _ => None,
        };
        let c = Config::resolve(Settings::from_consul_env(env).unwrap()).unwrap();
        assert_eq!(
            consul(&c).addresses,
            vec!["unix:///tmp/consul.sock".to_owned()]
        );
    }

    /// A file holding `text`, removed when the returned guard drops.
    fn token_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn the_token_file_wins_over_the_token_whichever_layer_set_each() {
        let token = |s: Settings| {
            let c = Config::resolve(s).unwrap();
            consul(&c).token.as_ref().map(|t| t.expose().to_owned())
        };
        let file = token_file("  from-file\n");
        let path = file.path().to_str().unwrap().to_owned();
        // The file from CONSUL_HTTP_TOKEN_FILE (lowest layer), the token from a flag (highest).
        let eco = Settings::from_consul_env(|name| {
            (name == "CONSUL_HTTP_TOKEN_FILE").then(|| path.clone())
        })
        .unwrap();
        let flag = Settings {
            consul_token: Some(Secret::new("from-flag")),
            ..Settings::default()
        };
        assert_eq!(token(eco.overlay(flag)).as_deref(), Some("from-file"));
        // The file from the TOML file, the token from CONSUL_HTTP_TOKEN.
        let eco = Settings::from_consul_env(|name| {
            (name == "CONSUL_HTTP_TOKEN").then(|| "from-env".to_owned())
        })
        .unwrap();
        let toml = Settings::from_toml(&format!("consul_token_file = {path:?}")).unwrap();
        assert_eq!(
            token(eco.clone().overlay(toml)).as_deref(),
            Some("from-file")
        );
        // An empty file means "no token in the file": the token applies.
        let empty = token_file(" \n");
        let toml = Settings {
            consul_token_file: Some(empty.path().to_owned()),
            ..Settings::default()
        };
        assert_eq!(token(eco.overlay(toml)).as_deref(), Some("from-env"));
        assert_eq!(token(Settings::default()), None);
    }

    #[test]
    fn srv_is_the_default_for_consul_service_and_query_names() {
        for name in [
            "_mysql._primary.service.consul",
            "primary.mysql.service.consul",
            "mysql.service.consul",
            "mysql.service.dc2.consul",
            "primary.mysql.service.dc2.consul",
            "mysql-primary.query.consul",
            "mysql-primary.query.dc1.consul",
            "_db._tcp.example.com",
        ] {
            assert_eq!(default_dns_record(name), DnsRecord::Srv, "{name}");
        }
        for name in [
            "db1.node.consul",
            "7f000001.addr.dc1.consul",
            "service.consul",
            "primary.db.example.com",
            "query.example.com",
        ] {
            assert_eq!(default_dns_record(name), DnsRecord::A, "{name}");
        }
        let c = Config::resolve(Settings {
            discovery: Some(DiscoveryKind::Dns),
            dns_name: Some("Mysql-Primary.Query.Consul.".into()),
            ..Settings::default()
        })
        .unwrap();
        match c.discovery {
            Discovery::Dns(dns) => {
                assert_eq!(dns.record, DnsRecord::Srv);
                assert_eq!(dns.name, "mysql-primary.query.consul.");
            }
            other => panic!("expected dns discovery, got {other:?}"),
        }
    }

    #[test]
    fn secret_files_are_bounded() {
        let err = Config::resolve(Settings {
            consul_token_file: Some(PathBuf::from("/dev/zero")),
            ..Settings::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`consul_token_file`") && err.contains("64 KiB"),
            "{err}"
        );
    }

    #[test]
    fn zero_disables_keepalive() {
        let c = Config::resolve(Settings {
            backend_keepalive: Some(Duration::ZERO),
            ..with_backend()
        })
        .unwrap();
        assert_eq!(c.backend_keepalive, None);
        assert_eq!(c.backend_user_timeout, Some(Duration::from_secs(30)));
    }
}
