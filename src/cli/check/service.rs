//! `check --print-service-definition`: the Consul service registration that runs this check.
//!
//! In: the validated check flags (which become the check's `Args`, minus any password) and the
//! service fields. Out: JSON for `PUT /v1/agent/service/register` (format `api`, the bare
//! object) or for `consul services register FILE` / the agent's config dir (format `file`,
//! wrapped in `{"Service": …}`). Durations are written the way Go's `time.ParseDuration`
//! (Consul) and humantime (this binary) both read them: one unit, no spaces (`1500ms`).
//!
//! The check carries Consul's run thresholds (`api/agent.go` `AgentServiceCheck`
//! `SuccessBeforePassing`, `FailuresBeforeCritical`; applied by `agent/checks/check.go`
//! `StatusHandler` to script checks): the status flips only after that many results in a row.
//! `FailuresBeforeWarning` is left out: the agent then sets it to `FailuresBeforeCritical`
//! (`agent/agent.go` `addCheck`), so a failing run never shows as `warning` in between — which
//! the proxy would read as "not passing" for the service's own check. The two formats spell the
//! thresholds differently: the HTTP API decodes JSON field names (`FailuresBeforeCritical`), an
//! agent config file is decoded by `agent/config/config.go` `CheckDefinition`, whose keys are
//! `failures_before_critical` / `success_before_passing` with no CamelCase alias (an unknown key
//! there is "invalid config key": `agent/config/builder.go`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::verdict::Role;

/// The check flags written into the check's `Args`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFlags {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub role: Role,
    /// Absolute path (the agent runs the check from its own working directory).
    pub password_file: Option<PathBuf>,
    pub timeout: Duration,
    pub max_lag: Duration,
}

impl CheckFlags {
    /// `check --host … --port … --user … --role … --timeout …` (+ `--max-lag` for a replica,
    /// `--password-file` when given). Never a password.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "check".to_owned(),
            "--host".to_owned(),
            self.host.clone(),
            "--port".to_owned(),
            self.port.to_string(),
            "--user".to_owned(),
            self.user.clone(),
            "--role".to_owned(),
            self.role.as_str().to_owned(),
            "--timeout".to_owned(),
            go_duration(self.timeout),
        ];
        if self.role == Role::Replica {
            args.extend(["--max-lag".to_owned(), go_duration(self.max_lag)]);
        }
        if let Some(file) = &self.password_file {
            args.extend([
                "--password-file".to_owned(),
                file.to_string_lossy().into_owned(),
            ]);
        }
        args
    }
}

/// Which JSON shape to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The bare registration object, for `PUT /v1/agent/service/register`.
    Api,
    /// `{"Service": {…}}`, for `consul services register FILE` and agent config files.
    File,
}

impl Format {
    pub fn parse(text: &str) -> Option<Format> {
        match text.trim().to_ascii_lowercase().as_str() {
            "api" => Some(Format::Api),
            "file" => Some(Format::File),
            _ => None,
        }
    }
}

/// The service fields of the registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFields {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// The address clients (the proxy) connect to; may differ from the `--host` the check uses.
    pub address: String,
    pub meta: Vec<(String, String)>,
    pub interval: Duration,
    pub deregister_critical_after: Option<Duration>,
    /// Consul's `FailuresBeforeCritical`.
    pub failures_before_critical: u32,
    /// Consul's `SuccessBeforePassing`.
    pub success_before_passing: u32,
    pub format: Format,
}

/// Slack between the check's own `--timeout` and Consul's `Timeout`, so that Consul shows our
/// "timed out while …" line rather than killing the process first.
pub const CONSUL_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// The registration JSON for the check `flags`, run as `exe`.
pub fn definition(exe: &Path, flags: &CheckFlags, service: &ServiceFields) -> Value {
    let mut args = vec![exe.to_string_lossy().into_owned()];
    args.extend(flags.to_args());
    let mut check = json!({
        "Name": format!("MySQL {} role", flags.role.as_str()),
        "Args": args,
        "Interval": go_duration(service.interval),
        "Timeout": go_duration(flags.timeout + CONSUL_TIMEOUT_SLACK),
    });
    if let Some(obj) = check.as_object_mut() {
        let (success, failures) = match service.format {
            Format::Api => ("SuccessBeforePassing", "FailuresBeforeCritical"),
            Format::File => ("success_before_passing", "failures_before_critical"),
        };
        obj.insert(success.into(), json!(service.success_before_passing));
        obj.insert(failures.into(), json!(service.failures_before_critical));
        if let Some(after) = service.deregister_critical_after {
            obj.insert(
                "DeregisterCriticalServiceAfter".into(),
                json!(go_duration(after)),
            );
        }
    }
    let mut meta = serde_json::Map::new();
    meta.insert("role".into(), json!(flags.role.as_str()));
    for (k, v) in &service.meta {
        meta.insert(k.clone(), json!(v));
    }
    let body = json!({
        "ID": service.id,
        "Name": service.name,
        "Tags": service.tags,
        "Address": service.address,
        "Port": flags.port,
        "Meta": meta,
        "Check": check,
    });
    match service.format {
        Format::Api => body,
        Format::File => json!({ "Service": body }),
    }
}

/// A duration in the largest unit that holds it exactly: `2s`, `1500ms`, `90s`, `250us`.
/// Go (Consul) and humantime both parse these; humantime's own `1s 500ms` is not Go syntax.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".to_owned()
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// Consul's rule for meta keys: ASCII letters, digits, `_` and `-`, at most 128 characters;
/// `consul-` is reserved.
pub fn valid_meta_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && !key.starts_with("consul-")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(role: Role) -> CheckFlags {
        CheckFlags {
            host: "10.0.0.1".into(),
            port: 3306,
            user: "monitor".into(),
            role,
            password_file: Some("/etc/consul.d/mysql-monitor.pw".into()),
            timeout: Duration::from_secs(2),
            max_lag: Duration::from_secs(30),
        }
    }

    fn fields() -> ServiceFields {
        ServiceFields {
            id: "mysql-primary-10.0.0.1-3306".into(),
            name: "mysql".into(),
            tags: vec!["primary".into()],
            address: "10.0.0.1".into(),
            meta: vec![("priority".into(), "50".into())],
            interval: Duration::from_secs(2),
            deregister_critical_after: None,
            failures_before_critical: 2,
            success_before_passing: 1,
            format: Format::Api,
        }
    }

    #[test]
    fn definition_has_the_registration_fields_and_the_check_args() {
        let def = definition(
            Path::new("/usr/local/bin/consul-mysql-proxy"),
            &flags(Role::Primary),
            &fields(),
        );
        assert_eq!(
            def,
            json!({
                "ID": "mysql-primary-10.0.0.1-3306",
                "Name": "mysql",
                "Tags": ["primary"],
                "Address": "10.0.0.1",
                "Port": 3306,
                "Meta": {"role": "primary", "priority": "50"},
                "Check": {
                    "Name": "MySQL primary role",
                    "Args": ["/usr/local/bin/consul-mysql-proxy", "check", "--host", "10.0.0.1",
                             "--port", "3306", "--user", "monitor", "--role", "primary",
                             "--timeout", "2s", "--password-file", "/etc/consul.d/mysql-monitor.pw"],
                    "Interval": "2s",
                    "Timeout": "3s",
                    "SuccessBeforePassing": 1,
                    "FailuresBeforeCritical": 2,
                }
            })
        );
    }

    #[test]
    fn replica_args_carry_max_lag_and_file_format_wraps_with_deregister() {
        let mut f = fields();
        f.format = Format::File;
        f.deregister_critical_after = Some(Duration::from_secs(600));
        let mut fl = flags(Role::Replica);
        fl.password_file = None;
        fl.max_lag = Duration::from_millis(1500);
        let def = definition(Path::new("/bin/x"), &fl, &f);
        let check = &def["Service"]["Check"];
        assert_eq!(check["DeregisterCriticalServiceAfter"], "600s");
        // Agent config files take only the snake_case keys for the thresholds.
        assert_eq!(check["failures_before_critical"], 2);
        assert_eq!(check["success_before_passing"], 1);
        assert!(check.get("FailuresBeforeCritical").is_none());
        let args: Vec<&str> = check["Args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&args[args.len() - 2..], ["--max-lag", "1500ms"]);
        assert!(!args.iter().any(|a| a.contains("password")));
        assert_eq!(def["Service"]["Meta"]["role"], "replica");
    }

    #[test]
    fn durations_use_one_unit_without_spaces() {
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_secs(90)), "90s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_micros(250)), "250us");
        assert_eq!(go_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        for d in ["1500ms", "90s", "250us"] {
            let parsed = humantime::parse_duration(d).unwrap();
            assert_eq!(go_duration(parsed), d);
        }
    }

    #[test]
    fn meta_keys_follow_consul_rules() {
        assert!(valid_meta_key("priority"));
        assert!(valid_meta_key("dc_zone-1"));
        assert!(!valid_meta_key(""));
        assert!(!valid_meta_key("a.b"));
        assert!(!valid_meta_key("consul-x"));
        assert!(!valid_meta_key(&"k".repeat(129)));
    }

    #[test]
    fn format_parses() {
        assert_eq!(Format::parse("API"), Some(Format::Api));
        assert_eq!(Format::parse("file"), Some(Format::File));
        assert_eq!(Format::parse("hcl"), None);
    }
}
