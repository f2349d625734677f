//! The pure half of the check: what the server reported (two global variables and its
//! replication status rows) in, a [`Verdict`] (Consul status plus a one-line reason) out.
//!
//! No I/O happens here, so every rule is unit-tested with rows shaped as MariaDB and MySQL
//! return them. Server values are text as the server sent it; nothing is unwrapped: a missing
//! or odd value becomes a critical or warning reason, never a panic.

use std::fmt;
use std::time::Duration;

use crate::control::writable;
use crate::util::text::{one_line, truncate_chars};

/// The role a node must have for its check to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Writable (`read_only=OFF`, `super_read_only=OFF` where it exists) and replicating from no one.
    Primary,
    /// Read-only, with both replication threads running; lag above the limit is a warning.
    Replica,
}

impl Role {
    /// `primary` or `replica` (case-insensitive).
    pub fn parse(text: &str) -> Option<Role> {
        match text.trim().to_ascii_lowercase().as_str() {
            "primary" => Some(Role::Primary),
            "replica" => Some(Role::Replica),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// Consul's script-check status, ordered by severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    /// Consul's script-check exit code: 0 passing, 1 warning, 2 (anything else) critical.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Passing => 0,
            Status::Warning => 1,
            Status::Critical => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Status::Passing => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
        }
    }
}

/// A status and the reason Consul shows as the check output. Displays as one line,
/// e.g. `CRITICAL: 10.0.0.1:3306 is read-only (read_only=ON): not a primary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    pub reason: String,
}

impl Verdict {
    pub fn passing(reason: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Passing,
            reason: reason.into(),
        }
    }

    pub fn warning(reason: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Warning,
            reason: reason.into(),
        }
    }

    pub fn critical(reason: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Critical,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Server error texts may span lines; Consul's output is best read as one line.
        write!(f, "{}: {}", self.status.label(), one_line(&self.reason))
    }
}

/// What the server reported, as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerState {
    /// `@@global.read_only`: `OFF`/`ON` (MariaDB ≥ 11 also `NO_LOCK`, `NO_LOCK_NO_ADMIN`).
    /// `None` if the server did not report it.
    pub read_only: Option<String>,
    /// `@@global.super_read_only`: MySQL only; `None` on MariaDB, which has no such variable.
    pub super_read_only: Option<String>,
    /// One entry per replication row (MariaDB: per connection; MySQL: per channel), configured
    /// or not. Empty when the server replicates from no one.
    pub channels: Vec<Channel>,
}

/// One row of `SHOW ALL SLAVES STATUS` / `SHOW REPLICA STATUS` / `SHOW SLAVE STATUS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Channel {
    /// MariaDB `Connection_name` / MySQL `Channel_Name`; empty for the default connection.
    pub name: String,
    pub source_host: String,
    pub source_port: String,
    /// `Yes`, `No`, `Connecting` (or `Preparing` on MariaDB).
    pub io_running: String,
    pub sql_running: String,
    /// `None` is SQL `NULL` (lag unknown).
    pub seconds_behind: Option<String>,
    pub last_io_error: String,
    pub last_sql_error: String,
}

/// Column names by meaning: the pre-8.0.22 / MariaDB name first, then MySQL's `Source`/`Replica`.
const NAME: &[&str] = &["Connection_name", "Channel_Name", "Channel_name"];
const SOURCE_HOST: &[&str] = &["Master_Host", "Source_Host"];
const SOURCE_PORT: &[&str] = &["Master_Port", "Source_Port"];
const IO_RUNNING: &[&str] = &["Slave_IO_Running", "Replica_IO_Running"];
const SQL_RUNNING: &[&str] = &["Slave_SQL_Running", "Replica_SQL_Running"];
const SECONDS_BEHIND: &[&str] = &["Seconds_Behind_Master", "Seconds_Behind_Source"];
const LAST_IO_ERROR: &[&str] = &["Last_IO_Error"];
const LAST_SQL_ERROR: &[&str] = &["Last_SQL_Error"];

/// Longest server error text quoted in a reason.
const MAX_ERROR_CHARS: usize = 300;

impl Channel {
    /// Builds a channel from one status row as (column name, value) pairs; `None` is NULL.
    /// Columns it does not know are ignored, missing ones read as empty (or NULL for the lag).
    pub fn from_columns(columns: &[(String, Option<String>)]) -> Channel {
        let get = |names: &[&str]| -> Option<String> {
            columns
                .iter()
                .find(|(column, _)| names.iter().any(|n| column.eq_ignore_ascii_case(n)))
                .and_then(|(_, value)| value.clone())
        };
        let text = |names: &[&str]| get(names).unwrap_or_default().trim().to_owned();
        Channel {
            name: text(NAME),
            source_host: text(SOURCE_HOST),
            source_port: text(SOURCE_PORT),
            io_running: text(IO_RUNNING),
            sql_running: text(SQL_RUNNING),
            seconds_behind: get(SECONDS_BEHIND).map(|v| v.trim().to_owned()),
            last_io_error: text(LAST_IO_ERROR),
            last_sql_error: text(LAST_SQL_ERROR),
        }
    }

    /// A row with an empty source host is left over from `RESET SLAVE` (not `ALL`): no source.
    fn is_configured(&self) -> bool {
        !self.source_host.is_empty()
    }

    fn io_ok(&self) -> bool {
        self.io_running.eq_ignore_ascii_case("Yes")
    }

    fn sql_ok(&self) -> bool {
        self.sql_running.eq_ignore_ascii_case("Yes")
    }

    fn any_thread_running(&self) -> bool {
        let stopped = |v: &str| v.is_empty() || v.eq_ignore_ascii_case("No");
        !(stopped(&self.io_running) && stopped(&self.sql_running))
    }

    /// `host:port`, with `channel 'x' ` in front for a named channel.
    fn describe_source(&self) -> String {
        let host = if self.source_host.contains(':') {
            format!("[{}]", self.source_host)
        } else {
            self.source_host.clone()
        };
        let source = if self.source_port.is_empty() {
            host
        } else {
            format!("{host}:{}", self.source_port)
        };
        if self.name.is_empty() {
            source
        } else {
            format!("{source} (channel '{}')", self.name)
        }
    }
}

/// Classifies `state` of the server at `addr` against the `role` it must have.
pub fn classify(role: Role, addr: &str, state: &ServerState, max_lag: Duration) -> Verdict {
    match role {
        Role::Primary => classify_primary(addr, state),
        Role::Replica => classify_replica(addr, state, max_lag),
    }
}

/// `read_only=X[, super_read_only=Y]`.
fn describe_read_only(state: &ServerState) -> String {
    writable::describe_read_only(state.read_only.as_deref(), state.super_read_only.as_deref())
}

/// Writable, even for a user with SUPER: `read_only` and `super_read_only` both off.
fn writable(state: &ServerState) -> Option<bool> {
    writable::writable(state.read_only.as_deref(), state.super_read_only.as_deref())
}

fn classify_primary(addr: &str, state: &ServerState) -> Verdict {
    let mut problems = Vec::new();
    match writable(state) {
        None => problems.push("did not report @@global.read_only".to_owned()),
        Some(false) => problems.push(format!("is read-only ({})", describe_read_only(state))),
        Some(true) => {}
    }
    for ch in state.channels.iter().filter(|c| c.is_configured()) {
        if ch.any_thread_running() {
            problems.push(format!(
                "replicates from {} (Slave_IO_Running={}, Slave_SQL_Running={})",
                ch.describe_source(),
                ch.io_running,
                ch.sql_running
            ));
        } else {
            problems.push(format!(
                "is configured as a replica of {} (replication stopped)",
                ch.describe_source()
            ));
        }
    }
    if problems.is_empty() {
        Verdict::passing(format!(
            "primary {addr} writable ({}), not replicating",
            describe_read_only(state)
        ))
    } else {
        Verdict::critical(format!("{addr} {}: not a primary", problems.join(" and ")))
    }
}

fn classify_replica(addr: &str, state: &ServerState, max_lag: Duration) -> Verdict {
    let channels: Vec<&Channel> = state
        .channels
        .iter()
        .filter(|c| c.is_configured())
        .collect();
    if channels.is_empty() {
        return Verdict::critical(format!(
            "{addr} is not a replica: no replication configured"
        ));
    }
    let sources = channels
        .iter()
        .map(|c| c.describe_source())
        .collect::<Vec<_>>()
        .join(", ");
    let mut critical = Vec::new();
    let mut warning = Vec::new();
    let mut lags = Vec::new();
    match writable(state) {
        None => critical.push("did not report @@global.read_only".to_owned()),
        Some(true) => critical.push(format!(
            "is writable ({}): a replica must be read-only",
            describe_read_only(state)
        )),
        Some(false) => {}
    }
    let max = humantime::format_duration(max_lag);
    for ch in &channels {
        // Name the channel only when there are several: the usual single source is in the prefix.
        let which = if channels.len() > 1 {
            format!("{}: ", ch.describe_source())
        } else {
            String::new()
        };
        if !ch.io_ok() {
            critical.push(format!(
                "{which}IO thread not running (Slave_IO_Running={}){}",
                or_empty(&ch.io_running),
                last_error("Last_IO_Error", &ch.last_io_error)
            ));
        }
        if !ch.sql_ok() {
            critical.push(format!(
                "{which}SQL thread not running (Slave_SQL_Running={}){}",
                or_empty(&ch.sql_running),
                last_error("Last_SQL_Error", &ch.last_sql_error)
            ));
        }
        if !(ch.io_ok() && ch.sql_ok()) {
            continue;
        }
        match ch.seconds_behind.as_deref().map(str::parse::<u64>) {
            None => warning.push(format!(
                "{which}lag unknown (Seconds_Behind_Master=NULL while both threads run)"
            )),
            Some(Err(_)) => warning.push(format!(
                "{which}lag unknown (Seconds_Behind_Master={:?})",
                ch.seconds_behind.as_deref().unwrap_or_default()
            )),
            Some(Ok(secs)) if Duration::from_secs(secs) > max_lag => {
                warning.push(format!("{which}replica lag {secs}s > max {max}"));
            }
            Some(Ok(secs)) => lags.push(secs),
        }
    }
    // With several channels every problem names its own; with one, the prefix names it.
    let prefix = if channels.len() > 1 {
        format!("replica {addr}")
    } else {
        format!("replica {addr} of {sources}")
    };
    if !critical.is_empty() {
        return Verdict::critical(format!("{prefix}: {}", critical.join("; ")));
    }
    if !warning.is_empty() {
        return Verdict::warning(format!("{prefix}: {}", warning.join("; ")));
    }
    let lag = lags.iter().max().copied().unwrap_or(0);
    Verdict::passing(format!(
        "replica {addr} of {sources} running (Slave_IO_Running=Yes, Slave_SQL_Running=Yes, {}), lag {lag}s <= max {max}",
        describe_read_only(state)
    ))
}

fn or_empty(value: &str) -> &str {
    if value.is_empty() { "''" } else { value }
}

/// `: Last_SQL_Error: <text>` (trimmed to one bounded line), or nothing when empty.
fn last_error(column: &str, text: &str) -> String {
    let text = one_line(text);
    if text.is_empty() {
        return String::new();
    }
    format!(": {column}: {}", truncate_chars(&text, MAX_ERROR_CHARS))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "10.0.0.2:3306";
    const MAX: Duration = Duration::from_secs(30);

    fn cols(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    /// A MariaDB `SHOW ALL SLAVES STATUS` row (the columns that matter, plus some noise).
    fn mariadb_row(io: &str, sql: &str, lag: Option<&str>) -> Channel {
        Channel::from_columns(&cols(&[
            ("Connection_name", Some("")),
            ("Slave_SQL_State", Some("Slave has read all relay log")),
            ("Slave_IO_State", Some("Waiting for master to send event")),
            ("Master_Host", Some("10.0.0.1")),
            ("Master_User", Some("repl")),
            ("Master_Port", Some("3306")),
            ("Slave_IO_Running", Some(io)),
            ("Slave_SQL_Running", Some(sql)),
            ("Last_IO_Error", Some("")),
            ("Last_SQL_Error", Some("")),
            ("Seconds_Behind_Master", lag),
            ("Using_Gtid", Some("Slave_Pos")),
        ]))
    }

    fn state(read_only: &str, channels: Vec<Channel>) -> ServerState {
        ServerState {
            read_only: Some(read_only.into()),
            super_read_only: None,
            channels,
        }
    }

    #[test]
    fn role_parses_case_insensitively_and_rejects_others() {
        assert_eq!(Role::parse("Primary"), Some(Role::Primary));
        assert_eq!(Role::parse(" replica "), Some(Role::Replica));
        assert_eq!(Role::parse("master"), None);
        assert_eq!(Role::parse(""), None);
    }

    #[test]
    fn writable_stand_alone_server_is_a_primary() {
        let v = classify(Role::Primary, ADDR, &state("OFF", vec![]), MAX);
        assert_eq!(v.status, Status::Passing);
        assert_eq!(
            v.to_string(),
            "OK: primary 10.0.0.2:3306 writable (read_only=OFF), not replicating"
        );
    }

    #[test]
    fn read_only_server_is_not_a_primary() {
        let v = classify(Role::Primary, ADDR, &state("ON", vec![]), MAX);
        assert_eq!(
            v.to_string(),
            "CRITICAL: 10.0.0.2:3306 is read-only (read_only=ON): not a primary"
        );
        // MariaDB 11's enum values count as read-only too.
        let v = classify(Role::Primary, ADDR, &state("NO_LOCK", vec![]), MAX);
        assert_eq!(v.status, Status::Critical);
        // `SELECT @@read_only` style numeric answers.
        let v = classify(Role::Primary, ADDR, &state("0", vec![]), MAX);
        assert_eq!(v.status, Status::Passing);
    }

    #[test]
    fn mysql_super_read_only_counts_as_read_only() {
        let mut s = state("OFF", vec![]);
        s.super_read_only = Some("ON".into());
        let v = classify(Role::Primary, ADDR, &s, MAX);
        assert_eq!(v.status, Status::Critical);
        assert!(v.reason.contains("super_read_only=ON"), "{v}");
        s.super_read_only = Some("OFF".into());
        let v = classify(Role::Primary, ADDR, &s, MAX);
        assert_eq!(v.status, Status::Passing, "{v}");
        assert!(
            v.reason.contains("read_only=OFF, super_read_only=OFF"),
            "{v}"
        );
    }

    #[test]
    fn missing_read_only_is_critical_for_both_roles() {
        let s = ServerState::default();
        assert_eq!(
            classify(Role::Primary, ADDR, &s, MAX).status,
            Status::Critical
        );
        let s = ServerState {
            channels: vec![mariadb_row("Yes", "Yes", Some("0"))],
            ..ServerState::default()
        };
        let v = classify(Role::Replica, ADDR, &s, MAX);
        assert_eq!(v.status, Status::Critical, "{v}");
    }

    #[test]
    fn writable_server_with_stopped_replication_is_configured_as_a_replica() {
        let s = state("OFF", vec![mariadb_row("No", "No", None)]);
        let v = classify(Role::Primary, ADDR, &s, MAX);
        assert_eq!(
            v.to_string(),
            "CRITICAL: 10.0.0.2:3306 is configured as a replica of 10.0.0.1:3306 (replication stopped): not a primary"
        );
    }

    #[test]
    fn running_replica_is_not_a_primary_and_says_both_reasons() {
        let s = state("ON", vec![mariadb_row("Yes", "Yes", Some("0"))]);
        let v = classify(Role::Primary, ADDR, &s, MAX);
        assert_eq!(
            v.to_string(),
            "CRITICAL: 10.0.0.2:3306 is read-only (read_only=ON) and replicates from 10.0.0.1:3306 \
             (Slave_IO_Running=Yes, Slave_SQL_Running=Yes): not a primary"
        );
        // A thread still connecting is replicating too.
        let s = state("OFF", vec![mariadb_row("Connecting", "Yes", None)]);
        let v = classify(Role::Primary, ADDR, &s, MAX);
        assert!(v.reason.contains("replicates from"), "{v}");
    }

    #[test]
    fn row_left_by_reset_slave_without_all_is_no_replication() {
        let empty = Channel::from_columns(&cols(&[
            ("Master_Host", Some("")),
            ("Slave_IO_Running", Some("No")),
            ("Slave_SQL_Running", Some("No")),
        ]));
        let v = classify(Role::Primary, ADDR, &state("OFF", vec![empty.clone()]), MAX);
        assert_eq!(v.status, Status::Passing, "{v}");
        let v = classify(Role::Replica, ADDR, &state("ON", vec![empty]), MAX);
        assert_eq!(
            v.to_string(),
            "CRITICAL: 10.0.0.2:3306 is not a replica: no replication configured"
        );
    }

    #[test]
    fn healthy_replica_passes() {
        let s = state("ON", vec![mariadb_row("Yes", "Yes", Some("3"))]);
        let v = classify(Role::Replica, ADDR, &s, MAX);
        assert_eq!(v.status, Status::Passing, "{v}");
        assert_eq!(
            v.to_string(),
            "OK: replica 10.0.0.2:3306 of 10.0.0.1:3306 running (Slave_IO_Running=Yes, \
             Slave_SQL_Running=Yes, read_only=ON), lag 3s <= max 30s"
        );
    }

    #[test]
    fn lag_above_the_limit_or_unknown_is_a_warning() {
        let s = state("ON", vec![mariadb_row("Yes", "Yes", Some("45"))]);
        let v = classify(Role::Replica, ADDR, &s, MAX);
        assert_eq!(v.status, Status::Warning);
        assert_eq!(
            v.to_string(),
            "WARNING: replica 10.0.0.2:3306 of 10.0.0.1:3306: replica lag 45s > max 30s"
        );
        // Exactly at the limit passes.
        let s = state("ON", vec![mariadb_row("Yes", "Yes", Some("30"))]);
        assert_eq!(
            classify(Role::Replica, ADDR, &s, MAX).status,
            Status::Passing
        );
        let s = state("ON", vec![mariadb_row("Yes", "Yes", None)]);
        let v = classify(Role::Replica, ADDR, &s, MAX);
        assert_eq!(v.status, Status::Warning);
        assert!(v.reason.contains("NULL"), "{v}");
        let s = state("ON", vec![mariadb_row("Yes", "Yes", Some("soon"))]);
        assert_eq!(
            classify(Role::Replica, ADDR, &s, MAX).status,
            Status::Warning
        );
    }

    #[test]
    fn stopped_sql_thread_is_critical_with_the_error_on_one_line() {
        let mut ch = mariadb_row("Yes", "No", None);
        ch.last_sql_error =
            "Could not execute Write_rows_v1 event on table app.t;\n  Duplicate entry '5' \
                             for key 'PRIMARY', Error_code: 1062"
                .into();
        let v = classify(Role::Replica, ADDR, &state("ON", vec![ch]), MAX);
        assert_eq!(
            v.to_string(),
            "CRITICAL: replica 10.0.0.2:3306 of 10.0.0.1:3306: SQL thread not running \
             (Slave_SQL_Running=No): Last_SQL_Error: Could not execute Write_rows_v1 event on \
             table app.t; Duplicate entry '5' for key 'PRIMARY', Error_code: 1062"
        );
    }

    #[test]
    fn io_thread_connecting_is_critical_and_lag_is_not_judged() {
        let mut ch = mariadb_row("Connecting", "Yes", None);
        ch.last_io_error = "error reconnecting to master 'repl@10.0.0.1:3306' - retry-time: 60  \
                            maximum-retries: 86400  message: Can't connect to server"
            .into();
        let v = classify(Role::Replica, ADDR, &state("ON", vec![ch]), MAX);
        assert_eq!(v.status, Status::Critical);
        assert!(
            v.reason
                .starts_with("replica 10.0.0.2:3306 of 10.0.0.1:3306: IO thread not running (Slave_IO_Running=Connecting): Last_IO_Error: error reconnecting"),
            "{v}"
        );
        assert!(!v.reason.contains("lag"), "{v}");
    }

    #[test]
    fn both_threads_stopped_names_both() {
        let v = classify(
            Role::Replica,
            ADDR,
            &state("ON", vec![mariadb_row("No", "No", None)]),
            MAX,
        );
        assert!(v.reason.contains("IO thread not running"), "{v}");
        assert!(v.reason.contains("SQL thread not running"), "{v}");
    }

    #[test]
    fn writable_replica_is_critical() {
        let s = state("OFF", vec![mariadb_row("Yes", "Yes", Some("0"))]);
        let v = classify(Role::Replica, ADDR, &s, MAX);
        assert_eq!(v.status, Status::Critical);
        assert!(
            v.reason
                .contains("is writable (read_only=OFF): a replica must be read-only"),
            "{v}"
        );
    }

    #[test]
    fn mysql_8_column_names_and_channels_are_understood() {
        let row = |channel: &str, host: &str, lag: &str| {
            Channel::from_columns(&cols(&[
                ("Replica_IO_State", Some("Waiting for source to send event")),
                ("Source_Host", Some(host)),
                ("Source_Port", Some("3306")),
                ("Replica_IO_Running", Some("Yes")),
                ("Replica_SQL_Running", Some("Yes")),
                ("Seconds_Behind_Source", Some(lag)),
                ("Channel_Name", Some(channel)),
            ]))
        };
        let s = ServerState {
            read_only: Some("ON".into()),
            super_read_only: Some("ON".into()),
            channels: vec![row("east", "10.0.0.1", "2"), row("west", "fe80::1", "90")],
        };
        let v = classify(Role::Replica, ADDR, &s, MAX);
        assert_eq!(v.status, Status::Warning, "{v}");
        assert_eq!(
            v.to_string(),
            "WARNING: replica 10.0.0.2:3306: [fe80::1]:3306 (channel 'west'): replica lag 90s > max 30s"
        );
    }

    #[test]
    fn long_errors_are_cut() {
        let mut ch = mariadb_row("No", "Yes", None);
        ch.last_io_error = "x".repeat(1000);
        let v = classify(Role::Replica, ADDR, &state("ON", vec![ch]), MAX);
        assert!(v.reason.ends_with('…'), "{v}");
        assert!(v.reason.len() < 500, "{}", v.reason.len());
    }

    #[test]
    fn exit_codes_follow_consul() {
        assert_eq!(Status::Passing.exit_code(), 0);
        assert_eq!(Status::Warning.exit_code(), 1);
        assert_eq!(Status::Critical.exit_code(), 2);
        assert!(Status::Critical > Status::Warning && Status::Warning > Status::Passing);
    }
}
