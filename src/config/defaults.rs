//! The one table of built-in defaults. It is a [`Settings`] layer — the lowest one — so
//! resolution uses it like any other layer, and [`annotate_help`] writes the same values into
//! `--help` as `[default: …]`: the two cannot disagree. Fields whose default depends on other
//! fields or on the environment (`discovery`, `dns_record`, `dc`, …) are not in the table; their
//! help text says in words what happens when they are unset.

use std::net::SocketAddr;
use std::time::Duration;

use super::kinds::{
    Balance, Consistency, FastPathMode, LogFormat, OnFailover, OnMultiple, ProxyProtocol,
    RelayKind, Role, WarningIs,
};
use super::settings::Settings;

/// The built-in defaults.
pub fn table() -> Settings {
    let secs = Duration::from_secs;
    Settings {
        listen: Some(SocketAddr::from(([0, 0, 0, 0], 3306))),
        admin: Some("127.0.0.1:9306".to_owned()),
        metrics_listen: Some("off".to_owned()),
        service: Some("mysql".to_owned()),
        consul: Some(vec!["http://127.0.0.1:8500".to_owned()]),
        consul_wait: Some(secs(300)),
        consistency: Some(Consistency::Default),
        tag: Some(vec!["primary".to_owned()]),
        kv_require_session: Some(false),
        default_port: Some(3306),
        on_multiple: Some(OnMultiple::Refuse),
        dns_interval: Some(secs(1)),
        dns_timeout: Some(secs(1)),
        hold_timeout: Some(secs(10)),
        connect_timeout: Some(secs(2)),
        backend_greeting_timeout: Some(secs(5)),
        backend_keepalive: Some(secs(10)),
        backend_user_timeout: Some(secs(30)),
        max_connections: Some(4096),
        shutdown_grace: Some(secs(30)),
        max_held: Some(10_000),
        verify_writable: Some(false),
        verify_interval: Some(secs(1)),
        consul_tls_skip_verify: Some(false),
        warning_is: Some(WarningIs::Passing),
        withdrawn_grace: Some(secs(30)),
        on_failover: Some(OnFailover::Close),
        drain_grace: Some(secs(5)),
        proxy_protocol: Some(ProxyProtocol::Off),
        role: Some(Role::Primary),
        balance: Some(Balance::LeastConnections),
        fallback: Some("hold".to_owned()),
        relay: Some(RelayKind::Pump),
        fast_path: Some(FastPathMode::Off),
        workers: Some(1),
        log_format: Some(LogFormat::Text),
        log_level: Some("info".to_owned()),
        ..Settings::default()
    }
}

/// Each defaulted field's value as an operator writes it (`10s`, `close`, `0.0.0.0:3306`).
pub fn as_text() -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(table()) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter_map(|(field, value)| {
            let text = match value {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            Some((field, text))
        })
        .collect()
}

/// Appends `[default: …]` from the table to the help of every defaulted flag of `command`.
pub fn annotate_help(mut command: clap::Command) -> clap::Command {
    for (field, text) in as_text() {
        let id = field.as_str();
        if !command.get_arguments().any(|a| a.get_id() == id) {
            continue;
        }
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {text}]"))
        });
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn help_shows_each_default_once_and_from_the_table() {
        let command = annotate_help(Probe::command());
        let defaults = as_text();
        assert!(defaults.len() > 20, "{defaults:?}");
        for (field, text) in &defaults {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == field.as_str())
                .unwrap_or_else(|| panic!("`{field}` is in the defaults table but not a flag"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(
                help.ends_with(&format!("[default: {text}]")),
                "{field}: {help}"
            );
            assert_eq!(help.matches("[default:").count(), 1, "{field}: {help}");
        }
        let durations: Vec<_> = defaults
            .iter()
            .filter(|(f, _)| f == "hold_timeout")
            .collect();
        assert_eq!(durations[0].1, "10s");
    }
}
