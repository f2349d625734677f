//! Configuration: one set of fields, three layers, one validated [`Config`].
//!
//! ```text
//!   defaults::table() < CONSUL_HTTP_* env < TOML file < CONSUL_MYSQL_PROXY_* env < flags
//!        └──────────────── Settings::overlay ────────────────┘   (< a [[route]] table)
//!                              │ resolve: defaults applied, every field validated
//!                              ▼
//!        Config per route (immutable, shared as Arc<Config>; SIGHUP builds new ones)
//! ```
//!
//! - [`settings`]: the raw, all-optional layer that clap (flags, env) and serde (the file) fill;
//! - [`defaults`]: the one table of built-in defaults, which also writes `[default: …]` into
//!   `--help`;
//! - [`resolve`]: defaults + validation; an error names the field, its flag and its env var, so the
//!   binary exits with `EX_USAGE` (64) and a message that says what to fix;
//! - [`model`]: the validated [`Config`] and the narrow parts components receive;
//! - [`kinds`]: every settings enum, one naming convention;
//! - [`summary`]: the `/status` view of the configuration (no secrets);
//! - [`routes`]: the file's `[[route]]` tables (or the one implicit route), one `Config` each.
//!
//! `config` depends on no component: components depend on it.

pub mod defaults;
pub mod kinds;
pub mod model;
mod resolve;
pub mod routes;
pub mod settings;
pub mod summary;

use std::path::PathBuf;

pub use crate::util::secret::Secret;
pub use kinds::{
    Balance, Consistency, DiscoveryKind, DnsRecord, LogFormat, OnFailover, OnMultiple,
    ProxyProtocol, RelayKind, Role, WarningIs,
};
pub use model::{
    Config, ConsulConfig, ConsulScope, ConsulSource, ConsulTls, Discovery, DnsConfig,
    FailoverPolicy, Fallback, FenceConfig, HealthRules, MAX_CONSUL_WAIT, MONITOR_PASSWORD_ENV,
};
pub use routes::{Route, Routes};
pub use settings::{Settings, parse_bool, parse_duration};

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
    #[error("invalid environment variable {name}: {reason}")]
    Env { name: &'static str, reason: String },
    #[error("{}", in_route(route, source))]
    Route {
        route: String,
        source: Box<ConfigError>,
    },
    #[error("invalid configuration: two routes are named \"{name}\" (route names must be unique)")]
    DuplicateRoute { name: String },
    #[error(
        "invalid configuration: routes \"{first}\" and \"{second}\" both listen on {addr} (give each route its own `listen`)"
    )]
    DuplicateListen {
        addr: std::net::SocketAddr,
        first: String,
        second: String,
    },
    #[error(
        "invalid configuration: route name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.` (it appears in logs and metric labels)"
    )]
    RouteName { name: String },
}

/// A route's error: a field error without the flag and env hints (a route table is only in the
/// file), anything else as it is.
fn in_route(route: &str, source: &ConfigError) -> String {
    match source {
        ConfigError::Field { field, reason } => {
            format!("invalid configuration: route \"{route}\": {field}: {reason}")
        }
        other => format!("route \"{route}\": {other}"),
    }
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

#[cfg(test)]
mod example_file {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        settings: Settings,
    }

    /// config.example.toml documents every field (fields without a default as commented
    /// `# field = example` lines), parses, and its active values are the built-in defaults.
    #[test]
    fn example_config_covers_every_field_with_defaults() {
        let text = include_str!("../../config.example.toml");
        let mut documented: Vec<String> = text
            .lines()
            .filter_map(|line| {
                let line = line.trim_start().trim_start_matches('#').trim_start();
                let (key, _) = line.split_once(" = ")?;
                key.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
                    .then(|| key.to_owned())
            })
            .collect();
        documented.dedup();
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
