//! Configuration: one set of fields, three layers, one validated [`Config`].
//!
//! Every field can come from the TOML file (`--config`), an environment variable
//! (`CONSUL_MYSQL_PROXY_<FIELD>`) or a command-line flag (`--<field>`). [`Settings`] is that raw,
//! all-optional layer; clap fills it from flags and env (flag wins over env), serde fills it from
//! the file, and [`Settings::overlay`] stacks them: flag > env > file > built-in default.
//! [`Config::resolve`] then applies the defaults and validates, naming the offending field, so the
//! binary can exit with `EX_USAGE` (64) and a message that says what to fix.
//!
//! The resolved `Config` is immutable and shared as `Arc<Config>`; a reload (SIGHUP) builds a new
//! one the same way and swaps it in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::failover::OnFailover;

/// Prefix of every environment variable that can set a field.
pub const ENV_PREFIX: &str = "CONSUL_MYSQL_PROXY_";

/// A configuration error, naming the field (as written in the TOML file) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: `{field}`: {reason} (flag --{flag}, env {env})", flag = field.replace('_', "-"), env = env_name(field))]
    Field { field: &'static str, reason: String },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

fn env_name(field: &str) -> String {
    format!("{ENV_PREFIX}{}", field.to_ascii_uppercase())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field,
        reason: reason.into(),
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the current primary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoveryKind {
    /// A fixed backend address (`backend`).
    Static,
}

/// Which byte pump relays an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum RelayKind {
    /// tokio's `copy_bidirectional`: the reference implementation (2×8 KiB per connection).
    #[default]
    Copy,
}

/// The raw, all-optional configuration layer shared by flags, env vars and the TOML file.
///
/// Field docs double as `--help` text; defaults are applied in [`Config::resolve`].
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to accept MySQL clients on [default: 0.0.0.0:3306]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Discovery source of the primary [default: static when `backend` is set]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DISCOVERY", value_enum)]
    pub discovery: Option<DiscoveryKind>,

    /// Fixed backend for `discovery = static`, as ip:port (e.g. 127.0.0.1:3307)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND", value_name = "ADDR")]
    pub backend: Option<SocketAddr>,

    /// Service name, used in logs and client error messages [default: mysql]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_SERVICE")]
    pub service: Option<String>,

    /// How long a new client waits for a reachable primary before it gets an ERR packet [default: 10s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_HOLD_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub hold_timeout: Option<Duration>,

    /// Timeout of one TCP connect to the primary [default: 2s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONNECT_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,

    /// How long the primary may take to send its greeting; a silent server counts as down [default: 5s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_GREETING_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_greeting_timeout: Option<Duration>,

    /// Idle time before TCP keepalive probes toward the backend; 0 disables keepalive [default: 10s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_KEEPALIVE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_keepalive: Option<Duration>,

    /// TCP_USER_TIMEOUT toward the backend: unacknowledged data older than this kills the connection; 0 = kernel default [default: 30s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_BACKEND_USER_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub backend_user_timeout: Option<Duration>,

    /// Maximum concurrent client connections; more wait in the kernel's accept backlog [default: 4096]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// On SIGTERM/SIGINT, how long open connections may finish before they are closed [default: 30s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_SHUTDOWN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,

    /// What happens to connections bound to a replaced primary: close, drain or keep [default: close]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_ON_FAILOVER", value_enum)]
    pub on_failover: Option<OnFailover>,

    /// With `on_failover = drain`: how long old connections may live on [default: 5s]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_DRAIN_GRACE", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(default, with = "humantime_serde")]
    pub drain_grace: Option<Duration>,

    /// Byte pump for established connections [default: copy]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_RELAY", value_enum)]
    pub relay: Option<RelayKind>,

    /// Number of single-threaded accept/relay workers (SO_REUSEPORT) [default: 1]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Log line format [default: text]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, tracing EnvFilter syntax (e.g. `info`, `consul_mysql_proxy=debug`) [default: info]
    #[arg(long, env = "CONSUL_MYSQL_PROXY_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// Parses a Go/humantime duration such as `10s`, `500ms` or `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 10s or 500ms: {e}"))
}

macro_rules! overlay_fields {
    ($base:ident, $top:ident, [$($field:ident),* $(,)?]) => {
        Settings { $($field: $top.$field.or($base.$field),)* }
    };
}

impl Settings {
    /// Stacks `top` over `self`: every field set in `top` wins.
    pub fn overlay(self, top: Settings) -> Settings {
        let base = self;
        overlay_fields!(
            base,
            top,
            [
                listen,
                discovery,
                backend,
                service,
                hold_timeout,
                connect_timeout,
                backend_greeting_timeout,
                backend_keepalive,
                backend_user_timeout,
                max_connections,
                shutdown_grace,
                on_failover,
                drain_grace,
                relay,
                workers,
                log_format,
                log_level,
            ]
        )
    }

    /// Reads a TOML config file into a settings layer.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error message names the key and the line.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
    }
}

/// The resolved, validated configuration every component reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub discovery: Discovery,
    pub service: String,
    pub hold_timeout: Duration,
    pub connect_timeout: Duration,
    pub backend_greeting_timeout: Duration,
    /// `None` = keepalive off.
    pub backend_keepalive: Option<Duration>,
    /// `None` = leave the kernel default.
    pub backend_user_timeout: Option<Duration>,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub on_failover: OnFailover,
    pub drain_grace: Duration,
    pub relay: RelayKind,
    pub workers: usize,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// The discovery source with the settings it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    Static { backend: SocketAddr },
}

fn nonzero(field: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(invalid(field, "must be greater than 0"));
    }
    Ok(value)
}

fn zero_is_off(value: Duration) -> Option<Duration> {
    (!value.is_zero()).then_some(value)
}

impl Config {
    /// Loads the file named by `config_path` (if any), stacks `cli` (flags and env) on top,
    /// applies defaults and validates.
    pub fn load(config_path: Option<&Path>, cli: &Settings) -> Result<Config, ConfigError> {
        let file = match config_path {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        Config::resolve(file.overlay(cli.clone()))
    }

    /// Applies defaults to `s` and validates every field.
    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        let discovery = match (s.discovery, s.backend) {
            (Some(DiscoveryKind::Static) | None, Some(backend)) => Discovery::Static { backend },
            (Some(DiscoveryKind::Static) | None, None) => {
                return Err(invalid(
                    "backend",
                    "no discovery source: set `backend` (ip:port of the MySQL primary) for static discovery",
                ));
            }
        };
        let service = s.service.unwrap_or_else(|| "mysql".to_owned());
        if service.trim().is_empty() {
            return Err(invalid("service", "must not be empty"));
        }
        let max_connections = s.max_connections.unwrap_or(4096);
        if max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        let workers = s.workers.unwrap_or(1);
        if !(1..=64).contains(&workers) {
            return Err(invalid("workers", "must be between 1 and 64"));
        }
        let log_level = s.log_level.unwrap_or_else(|| "info".to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(invalid("log_level", format!("`{log_level}`: {e}")));
        }
        Ok(Config {
            listen: s.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 3306))),
            discovery,
            service,
            hold_timeout: nonzero(
                "hold_timeout",
                s.hold_timeout.unwrap_or(Duration::from_secs(10)),
            )?,
            connect_timeout: nonzero(
                "connect_timeout",
                s.connect_timeout.unwrap_or(Duration::from_secs(2)),
            )?,
            backend_greeting_timeout: nonzero(
                "backend_greeting_timeout",
                s.backend_greeting_timeout.unwrap_or(Duration::from_secs(5)),
            )?,
            backend_keepalive: zero_is_off(s.backend_keepalive.unwrap_or(Duration::from_secs(10))),
            backend_user_timeout: zero_is_off(
                s.backend_user_timeout.unwrap_or(Duration::from_secs(30)),
            ),
            max_connections,
            shutdown_grace: s.shutdown_grace.unwrap_or(Duration::from_secs(30)),
            on_failover: s.on_failover.unwrap_or_default(),
            drain_grace: s.drain_grace.unwrap_or(Duration::from_secs(5)),
            relay: s.relay.unwrap_or_default(),
            workers,
            log_format: s.log_format.unwrap_or_default(),
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_backend() -> Settings {
        Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        }
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
    fn toml_durations_and_unknown_fields() {
        let s =
            Settings::from_toml("hold_timeout = \"1m30s\"\nconnect_timeout = \"500ms\"").unwrap();
        assert_eq!(s.hold_timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.connect_timeout, Some(Duration::from_millis(500)));
        let err = Settings::from_toml("hold_timout = \"1s\"").unwrap_err();
        assert!(err.contains("unknown field `hold_timout`"), "{err}");
        let err = Settings::from_toml("hold_timeout = \"soon\"").unwrap_err();
        assert!(err.contains("hold_timeout"), "{err}");
    }

    #[test]
    fn top_layer_wins_field_by_field() {
        let file = Settings {
            hold_timeout: Some(Duration::from_secs(3)),
            service: Some("file".into()),
            ..with_backend()
        };
        let cli = Settings {
            service: Some("cli".into()),
            ..Settings::default()
        };
        let merged = file.overlay(cli);
        assert_eq!(merged.service.as_deref(), Some("cli"));
        assert_eq!(merged.hold_timeout, Some(Duration::from_secs(3)));
        assert!(merged.backend.is_some());
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

        let err = Config::resolve(Settings::default())
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

#[cfg(test)]
mod example_file {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        settings: Settings,
    }

    /// config.example.toml documents every field, parses, and shows the built-in defaults.
    #[test]
    fn example_config_covers_every_field_with_defaults() {
        let text = include_str!("../config.example.toml");
        let table: toml::Table = toml::from_str(text).unwrap();
        let mut documented: Vec<String> = table.keys().cloned().collect();
        let mut fields: Vec<String> = Probe::command()
            .get_arguments()
            .map(|a| a.get_id().as_str().to_owned())
            .filter(|id| id != "help")
            .collect();
        documented.sort();
        fields.sort();
        assert_eq!(
            documented, fields,
            "config.example.toml and Settings disagree"
        );

        let example = Config::resolve(Settings::from_toml(text).unwrap()).unwrap();
        let backend_only = Config::resolve(Settings {
            backend: Some("127.0.0.1:3307".parse().unwrap()),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(example, backend_only, "example values must be the defaults");
    }
}
