//! `consul-mysql-proxy check`: the Consul script check for one MySQL/MariaDB node.
//!
//! Owns the whole subcommand: its flags ([`CheckArgs`]), the password sources, one connection
//! with read-only queries, and the exit code Consul reads (0 passing, 1 warning, 2 critical) with
//! a one-line reason on stdout, which Consul keeps as the check output. Submodules:
//! [`verdict`] (pure: server variables and replication rows → verdict) and [`service`]
//! (`--print-service-definition`: the registration JSON that runs this check).
//!
//! Flow: flags → [`Plan`] (validated; bad flags are a critical result on stdout, since that is
//! what Consul shows) → connect over TCP (never the unix socket) within `--timeout` → `SHOW
//! GLOBAL VARIABLES` (`read_only`, `super_read_only` where it exists, `version`) → the
//! replication rows (`SHOW ALL SLAVES STATUS` on MariaDB, `SHOW REPLICA STATUS` or `SHOW SLAVE
//! STATUS` on MySQL) → [`verdict::classify`]. A hung server is "timed out while …", never a hung
//! check.
//!
//! **It never promotes or changes anything.** The shell check scripts this replaces promote a
//! replica (`STOP SLAVE; RESET SLAVE ALL`) when they find its primary unreachable. A health check
//! only sees the network from one node: a replica cut off from the primary by a partition
//! promotes itself while the primary still serves its clients, and both take writes — a split
//! brain that no proxy can undo. Failover belongs to a tool that sees the whole topology and
//! fences the old primary (orchestrator, MHA, replication-manager); this check only reports.
//!
//! The password never appears on the command line (argv is world-readable in `ps` and in
//! Consul's check definition): it comes from `--password-file` or `MYSQL_PWD`, and there is
//! deliberately no `--password` flag.

pub(crate) mod service;
pub(crate) mod verdict;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};

use crate::config::parse_duration;
use crate::control::writable::{SHOW_VARIABLES, ServerVars, value_text};
use crate::util::secret::read_secret_file;
use service::{CheckFlags, Format, ServiceFields};
use verdict::{Channel, Role, ServerState, Verdict};

/// Flags of `consul-mysql-proxy check`.
///
/// Values are taken as text and validated by [`run`] rather than by clap: a bad value must come
/// out as a critical check result on stdout (exit 2), which is what Consul shows, not as a usage
/// error on stderr.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = CHECK_AFTER_HELP)]
pub struct CheckArgs {
    /// MySQL server to check: IP address or host name (TCP only, never the unix socket)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// MySQL port
    #[arg(long, value_name = "PORT", default_value = "3306")]
    pub port: String,

    /// MySQL user; needs REPLICATION CLIENT (MySQL) or SLAVE MONITOR (MariaDB 10.5+)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Role the node must have to pass: primary or replica
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,

    /// File holding the password (a trailing newline is ignored); else $MYSQL_PWD is used.
    /// There is no --password flag: a command line is visible to every local user
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Budget for connecting and all queries; a server that does not answer in time is critical
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub timeout: String,

    /// Role replica: replication lag (Seconds_Behind_Master) above this is a warning
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub max_lag: String,

    /// Print the Consul service registration (JSON) that runs this check, then exit 0 without
    /// connecting
    #[arg(long, help_heading = SERVICE_HEADING)]
    pub print_service_definition: bool,

    /// Consul service name
    #[arg(long, value_name = "NAME", default_value = "mysql", help_heading = SERVICE_HEADING)]
    pub service: String,

    /// Service ID, unique on the agent [default: <service>-<role>-<host>-<port>]
    #[arg(long, value_name = "ID", help_heading = SERVICE_HEADING)]
    pub id: Option<String>,

    /// Service tags (repeatable or comma-separated) [default: the role]
    #[arg(
        long,
        value_name = "TAG",
        value_delimiter = ',',
        help_heading = SERVICE_HEADING
    )]
    pub tags: Option<Vec<String>>,

    /// Address clients connect to, if not --host (e.g. the check uses 127.0.0.1 on the node)
    #[arg(long, value_name = "ADDR", help_heading = SERVICE_HEADING)]
    pub address: Option<String>,

    /// Service meta KEY=VALUE (repeatable), e.g. priority=50; `role` is always set
    #[arg(long, value_name = "KEY=VALUE", help_heading = SERVICE_HEADING)]
    pub meta: Vec<String>,

    /// How often Consul runs the check
    #[arg(long, value_name = "DURATION", default_value = "2s", help_heading = SERVICE_HEADING)]
    pub interval: String,

    /// DeregisterCriticalServiceAfter: remove the service after being critical this long [default: never]
    #[arg(long, value_name = "DURATION", help_heading = SERVICE_HEADING)]
    pub deregister_critical_after: Option<String>,

    /// api: the bare object for PUT /v1/agent/service/register; file: {"Service": …} for
    /// `consul services register FILE` or the agent's config dir
    #[arg(long, value_name = "FORMAT", default_value = "api", help_heading = SERVICE_HEADING)]
    pub definition_format: String,

    /// Consul marks the check critical only after this many failed runs in a row (one slow or
    /// failed run does not flip the primary) [default: 2]
    #[arg(long, value_name = "N", help_heading = SERVICE_HEADING)]
    pub failures_before_critical: Option<String>,

    /// Consul marks the check passing only after this many passing runs in a row [default: 1]
    #[arg(long, value_name = "N", help_heading = SERVICE_HEADING)]
    pub success_before_passing: Option<String>,
}

/// Default `FailuresBeforeCritical`: one failed or timed-out run alone does not take the
/// primary out (it costs one more `--interval` when the primary really fails).
pub const DEFAULT_FAILURES_BEFORE_CRITICAL: u32 = 2;
/// Default `SuccessBeforePassing`: a promoted node passes on its first good run.
pub const DEFAULT_SUCCESS_BEFORE_PASSING: u32 = 1;

const SERVICE_HEADING: &str = "Service definition (with --print-service-definition)";

const CHECK_AFTER_HELP: &str = "\
Exit codes (Consul script check): 0 passing, 1 warning, 2 critical; the reason is one line on stdout.
  primary: reachable, read_only=OFF (and super_read_only=OFF on MySQL), replicating from no one.
  replica: reachable, read-only, IO and SQL threads running; lag above --max-lag is a warning.
The check only reads: it never promotes a replica or changes the server.
Script checks need enable_local_script_checks (or enable_script_checks) on the Consul agent;
MYSQL_PWD must then be in the agent's environment, or use --password-file.";

/// Runs the check; returns Consul's script-check exit code (0 passing, 1 warning, 2 critical).
pub async fn run(args: CheckArgs) -> u8 {
    let verdict = match Plan::from_args(&args) {
        Err(reason) => Verdict::critical(format!("bad flags: {reason}")),
        Ok(Plan::PrintDefinition(flags, fields)) => match print_definition(&flags, &fields) {
            Ok(()) => return 0,
            Err(reason) => Verdict::critical(reason),
        },
        Ok(Plan::Check(flags)) => check(&flags).await,
    };
    println!("{verdict}");
    verdict.status.exit_code()
}

/// For `main`: a flag error clap found in `check`'s arguments (unknown flag, missing value),
/// reported like every other check result: `CRITICAL: bad flags: …` on stdout, exit 2.
pub fn report_bad_flags(err: &clap::Error) -> u8 {
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let reason = first.strip_prefix("error: ").unwrap_or(first);
    println!(
        "{}",
        Verdict::critical(format!("bad flags: {reason} (see `check --help`)"))
    );
    2
}

/// What the validated flags ask for.
#[derive(Debug)]
enum Plan {
    Check(CheckFlags),
    PrintDefinition(CheckFlags, ServiceFields),
}

impl Plan {
    fn from_args(args: &CheckArgs) -> Result<Plan, String> {
        let required = |value: &Option<String>, flag: &str| -> Result<String, String> {
            match value.as_deref().map(str::trim) {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(format!("--{flag} is required")),
            }
        };
        let host = required(&args.host, "host")?;
        let user = required(&args.user, "user")?;
        let role_text = required(&args.role, "role")?;
        let role = Role::parse(&role_text)
            .ok_or_else(|| format!("--role must be primary or replica, not `{role_text}`"))?;
        let port: u16 = match args.port.trim().parse() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("--port must be 1..65535, not `{}`", args.port)),
        };
        let timeout = positive(&args.timeout, "timeout")?;
        let max_lag = parse_duration(&args.max_lag).map_err(|e| format!("--max-lag: {e}"))?;
        let flags = CheckFlags {
            host,
            port,
            user,
            role,
            password_file: args.password_file.clone(),
            timeout,
            max_lag,
        };
        if !args.print_service_definition {
            let given: Vec<&str> = [
                ("--id", args.id.is_some()),
                ("--tags", args.tags.is_some()),
                ("--address", args.address.is_some()),
                ("--meta", !args.meta.is_empty()),
                (
                    "--deregister-critical-after",
                    args.deregister_critical_after.is_some(),
                ),
                (
                    "--failures-before-critical",
                    args.failures_before_critical.is_some(),
                ),
                (
                    "--success-before-passing",
                    args.success_before_passing.is_some(),
                ),
            ]
            .into_iter()
            .filter_map(|(flag, set)| set.then_some(flag))
            .collect();
            if !given.is_empty() {
                return Err(format!(
                    "{} only apply with --print-service-definition",
                    given.join(", ")
                ));
            }
            return Ok(Plan::Check(flags));
        }
        let fields = service_fields(args, &flags)?;
        // The agent runs the check from its own working directory.
        let flags = CheckFlags {
            password_file: match &flags.password_file {
                Some(p) => Some(
                    std::path::absolute(p)
                        .map_err(|e| format!("--password-file {}: {e}", p.display()))?,
                ),
                None => None,
            },
            ..flags
        };
        Ok(Plan::PrintDefinition(flags, fields))
    }
}

/// A run count of 1..=100 (Consul's counters; 0 would mean the same as 1).
fn run_count(text: Option<&str>, default: u32, flag: &str) -> Result<u32, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    match text.trim().parse::<u32>() {
        Ok(n @ 1..=100) => Ok(n),
        _ => Err(format!(
            "--{flag} must be a number of runs 1..100, not `{text}`"
        )),
    }
}

fn positive(text: &str, flag: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("--{flag} must be greater than zero")),
        Err(e) => Err(format!("--{flag}: {e}")),
    }
}

fn service_fields(args: &CheckArgs, flags: &CheckFlags) -> Result<ServiceFields, String> {
    let name = args.service.trim().to_owned();
    if name.is_empty() || name.contains('/') {
        return Err("--service must be a non-empty Consul service name without `/`".into());
    }
    let role = flags.role.as_str();
    let id = match args.id.as_deref().map(str::trim) {
        Some("") => return Err("--id must not be empty".into()),
        Some(id) => id.to_owned(),
        None => format!("{name}-{role}-{}-{}", flags.host, flags.port),
    };
    if id.contains('/') {
        return Err(format!("--id must not contain `/`: `{id}`"));
    }
    let tags = match &args.tags {
        Some(tags) => tags.iter().map(|t| t.trim().to_owned()).collect(),
        None => vec![role.to_owned()],
    };
    if tags.iter().any(String::is_empty) {
        return Err("--tags must not be empty".into());
    }
    let mut meta = Vec::new();
    for kv in &args.meta {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(format!("--meta takes KEY=VALUE, not `{kv}`"));
        };
        let k = k.trim();
        if !service::valid_meta_key(k) || k == "role" {
            return Err(format!(
                "--meta key `{k}`: letters, digits, `_`, `-` only (max 128, no `consul-` prefix, `role` is set by the check)"
            ));
        }
        if v.len() > 512 {
            return Err(format!("--meta {k}: value longer than 512 bytes"));
        }
        meta.push((k.to_owned(), v.to_owned()));
    }
    let format = Format::parse(&args.definition_format).ok_or_else(|| {
        format!(
            "--definition-format must be api or file, not `{}`",
            args.definition_format
        )
    })?;
    Ok(ServiceFields {
        id,
        name,
        tags,
        address: args
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(&flags.host)
            .to_owned(),
        meta,
        interval: positive(&args.interval, "interval")?,
        deregister_critical_after: args
            .deregister_critical_after
            .as_deref()
            .map(|d| positive(d, "deregister-critical-after"))
            .transpose()?,
        failures_before_critical: run_count(
            args.failures_before_critical.as_deref(),
            DEFAULT_FAILURES_BEFORE_CRITICAL,
            "failures-before-critical",
        )?,
        success_before_passing: run_count(
            args.success_before_passing.as_deref(),
            DEFAULT_SUCCESS_BEFORE_PASSING,
            "success-before-passing",
        )?,
        format,
    })
}

fn print_definition(flags: &CheckFlags, fields: &ServiceFields) -> Result<(), String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the path of this binary for the check Args: {e}"))?;
    let def = service::definition(&exe, flags, fields);
    let text = serde_json::to_string_pretty(&def)
        .map_err(|e| format!("cannot render the service definition: {e}"))?;
    println!("{text}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the check itself

/// Where the check was when the time ran out (for the "timed out" reason).
#[derive(Clone, Copy, Debug)]
enum Stage {
    Connecting,
    Querying(&'static str),
}

impl Stage {
    fn describe(self) -> String {
        match self {
            Stage::Connecting => "connecting (TCP, handshake, authentication)".to_owned(),
            Stage::Querying(sql) => format!("waiting for `{sql}`"),
        }
    }
}

/// Why the probe gave up.
enum ProbeFailure {
    Connect(mysql_async::Error),
    Query(&'static str, mysql_async::Error),
}

const MARIADB_STATUS: &str = "SHOW ALL SLAVES STATUS";
const MYSQL_STATUS: &str = "SHOW REPLICA STATUS";
/// MySQL before 8.0.22 (and 8.4 dropped this one).
const MYSQL_LEGACY_STATUS: &str = "SHOW SLAVE STATUS";
const ER_PARSE_ERROR: u16 = 1064;
/// ER_SPECIFIC_ACCESS_DENIED_ERROR (missing REPLICATION CLIENT / SLAVE MONITOR).
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
/// How long a polite COM_QUIT may take after the verdict is known.
const DISCONNECT_GRACE: Duration = Duration::from_millis(500);

async fn check(flags: &CheckFlags) -> Verdict {
    let addr = display_addr(&flags.host, flags.port);
    let password = match password(flags.password_file.as_deref()) {
        Ok(p) => p,
        Err(reason) => return Verdict::critical(reason),
    };
    let opts = OptsBuilder::default()
        .ip_or_hostname(flags.host.clone())
        .tcp_port(flags.port)
        .user(Some(flags.user.clone()))
        .pass(password)
        // For 127.0.0.1/localhost mysql_async would switch to the server's unix socket: this
        // check is about the TCP endpoint clients use.
        .prefer_socket(false);
    let mut stage = Stage::Connecting;
    let probed = tokio::time::timeout(flags.timeout, probe(opts, &mut stage)).await;
    match probed {
        Err(_elapsed) => Verdict::critical(format!(
            "{addr}: timed out after {} {}",
            humantime::format_duration(flags.timeout),
            stage.describe()
        )),
        Ok(Err(ProbeFailure::Connect(e))) => Verdict::critical(format!(
            "cannot connect to {addr} as {}: {}",
            flags.user,
            describe_error(&e)
        )),
        Ok(Err(ProbeFailure::Query(sql, e))) => {
            let hint = match &e {
                mysql_async::Error::Server(s) if s.code == ER_SPECIFIC_ACCESS_DENIED => {
                    " (the check user needs REPLICATION CLIENT on MySQL, SLAVE MONITOR on MariaDB 10.5+)"
                }
                _ => "",
            };
            Verdict::critical(format!(
                "{addr}: `{sql}` failed: {}{hint}",
                describe_error(&e)
            ))
        }
        Ok(Ok((state, conn))) => {
            // Say goodbye (COM_QUIT) so the server does not log an aborted connection, but
            // never let that delay the verdict much.
            let _ = tokio::time::timeout(DISCONNECT_GRACE, conn.disconnect()).await;
            verdict::classify(flags.role, &addr, &state, flags.max_lag)
        }
    }
}

/// Connects and reads the variables and replication rows. Read-only statements only.
async fn probe(opts: OptsBuilder, stage: &mut Stage) -> Result<(ServerState, Conn), ProbeFailure> {
    *stage = Stage::Connecting;
    let mut conn = Conn::new(opts).await.map_err(ProbeFailure::Connect)?;

    *stage = Stage::Querying(SHOW_VARIABLES);
    let vars = ServerVars::read(&mut conn)
        .await
        .map_err(|e| ProbeFailure::Query(SHOW_VARIABLES, e))?;
    let mut state = ServerState {
        read_only: vars.read_only.clone(),
        super_read_only: vars.super_read_only.clone(),
        ..ServerState::default()
    };

    let rows = if vars.is_mariadb() {
        *stage = Stage::Querying(MARIADB_STATUS);
        query_rows(&mut conn, MARIADB_STATUS).await?
    } else {
        *stage = Stage::Querying(MYSQL_STATUS);
        match conn.query::<Row, _>(MYSQL_STATUS).await {
            Ok(rows) => rows,
            Err(mysql_async::Error::Server(e)) if e.code == ER_PARSE_ERROR => {
                *stage = Stage::Querying(MYSQL_LEGACY_STATUS);
                query_rows(&mut conn, MYSQL_LEGACY_STATUS).await?
            }
            Err(e) => return Err(ProbeFailure::Query(MYSQL_STATUS, e)),
        }
    };
    state.channels = rows
        .iter()
        .map(|row| Channel::from_columns(&columns(row)))
        .collect();
    Ok((state, conn))
}

async fn query_rows(conn: &mut Conn, sql: &'static str) -> Result<Vec<Row>, ProbeFailure> {
    conn.query::<Row, _>(sql)
        .await
        .map_err(|e| ProbeFailure::Query(sql, e))
}

/// A row as (column name, text value); SQL NULL is `None`.
fn columns(row: &Row) -> Vec<(String, Option<String>)> {
    row.columns_ref()
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let value = row.as_ref(i).and_then(value_text);
            (col.name_str().into_owned(), value)
        })
        .collect()
}

/// The error without mysql_async's wrapping ("Server error: `…'", "Input/output error: …").
fn describe_error(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => {
            format!("ERROR {} ({}): {}", s.code, s.state, s.message)
        }
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
        mysql_async::Error::Driver(d) => d.to_string(),
        other => other.to_string(),
    }
}

/// The password: `--password-file` if given (its first line, as every secret file is read),
/// else `$MYSQL_PWD`, else none.
fn password(file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(path) = file {
        let secret = read_secret_file(path)
            .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
        return Ok(Some(secret.expose().to_owned()));
    }
    match std::env::var("MYSQL_PWD") {
        Ok(p) => Ok(Some(p)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err("MYSQL_PWD is not valid UTF-8".into()),
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use mysql_async::Value;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: CheckArgs,
    }

    fn parse(argv: &[&str]) -> Result<CheckArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("check").chain(argv.iter().copied())).map(|c| c.args)
    }

    fn plan(argv: &[&str]) -> Result<Plan, String> {
        Plan::from_args(&parse(argv).expect("clap accepts"))
    }

    const BASE: [&str; 6] = [
        "--host", "10.0.0.1", "--user", "monitor", "--role", "primary",
    ];

    #[test]
    fn defaults() {
        let Ok(Plan::Check(f)) = plan(&BASE) else {
            panic!("check plan")
        };
        assert_eq!(f.port, 3306);
        assert_eq!(f.timeout, Duration::from_secs(5));
        assert_eq!(f.max_lag, Duration::from_secs(30));
        assert_eq!(f.password_file, None);
        assert_eq!(f.role, Role::Primary);
    }

    #[test]
    fn there_is_no_password_flag() {
        let mut argv = BASE.to_vec();
        argv.extend(["--password", "secret"]);
        assert!(parse(&argv).is_err());
    }

    #[test]
    fn clap_errors_become_a_critical_result() {
        let mut argv = BASE.to_vec();
        argv.extend(["--password", "secret"]);
        let err = parse(&argv).unwrap_err();
        assert_eq!(report_bad_flags(&err), 2);
    }

    #[test]
    fn bad_values_are_reported_not_parsed_by_clap() {
        let cases: &[(&[&str], &str)] = &[
            (&["--user", "u", "--role", "primary"], "--host is required"),
            (&["--host", "h", "--role", "primary"], "--user is required"),
            (&["--host", "h", "--user", "u"], "--role is required"),
            (
                &["--host", "h", "--user", "u", "--role", "master"],
                "--role must be primary or replica, not `master`",
            ),
            (
                &[
                    "--host", "h", "--user", "u", "--role", "replica", "--port", "0",
                ],
                "--port must be 1..65535",
            ),
            (
                &[
                    "--host",
                    "h",
                    "--user",
                    "u",
                    "--role",
                    "replica",
                    "--timeout",
                    "0s",
                ],
                "--timeout must be greater than zero",
            ),
            (
                &[
                    "--host",
                    "h",
                    "--user",
                    "u",
                    "--role",
                    "replica",
                    "--max-lag",
                    "soon",
                ],
                "--max-lag: `soon` is not a duration",
            ),
            (
                &[
                    "--host", "h", "--user", "u", "--role", "replica", "--tags", "x",
                ],
                "--tags only apply with --print-service-definition",
            ),
        ];
        for (argv, want) in cases {
            let err = plan(argv).expect_err(want);
            assert!(err.contains(want), "{argv:?}: {err}");
        }
    }

    #[test]
    fn service_definition_defaults_and_validation() {
        let mut argv = BASE.to_vec();
        argv.extend(["--print-service-definition", "--password-file", "pw.txt"]);
        let Ok(Plan::PrintDefinition(flags, fields)) = plan(&argv) else {
            panic!("definition plan")
        };
        assert!(flags.password_file.unwrap().is_absolute());
        assert_eq!(fields.id, "mysql-primary-10.0.0.1-3306");
        assert_eq!(fields.tags, ["primary"]);
        assert_eq!(fields.address, "10.0.0.1");
        assert_eq!(fields.interval, Duration::from_secs(2));
        assert_eq!(fields.format, Format::Api);
        assert_eq!(fields.failures_before_critical, 2);
        assert_eq!(fields.success_before_passing, 1);
        for (extra, want) in [
            (["--meta", "nokv"], "KEY=VALUE"),
            (["--meta", "role=x"], "`role`"),
            (["--service", "a/b"], "--service"),
            (["--definition-format", "hcl"], "api or file"),
            (["--interval", "0s"], "--interval must be greater than zero"),
            (
                ["--failures-before-critical", "0"],
                "--failures-before-critical must be a number of runs 1..100",
            ),
            (
                ["--success-before-passing", "many"],
                "--success-before-passing must be a number of runs 1..100",
            ),
        ] {
            let mut argv = argv.clone();
            argv.extend(extra);
            let err = plan(&argv).expect_err(want);
            assert!(err.contains(want), "{extra:?}: {err}");
        }
    }

    #[test]
    fn password_file_first_line_wins_over_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(password(Some(&path)).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&path, "with space \r\n").unwrap();
        assert_eq!(
            password(Some(&path)).unwrap().as_deref(),
            Some("with space ")
        );
        let err = password(Some(&dir.path().join("missing"))).unwrap_err();
        assert!(err.contains("cannot read --password-file"), "{err}");
    }

    #[test]
    fn addresses_and_errors_read_well() {
        assert_eq!(display_addr("10.0.0.1", 3306), "10.0.0.1:3306");
        assert_eq!(display_addr("::1", 3306), "[::1]:3306");
        let e = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1045,
            message: "Access denied for user 'u'@'h' (using password: YES)".into(),
            state: "28000".into(),
        });
        assert_eq!(
            describe_error(&e),
            "ERROR 1045 (28000): Access denied for user 'u'@'h' (using password: YES)"
        );
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = mysql_async::Error::Io(mysql_async::IoError::Io(io));
        assert!(!describe_error(&e).contains("Input/output error"));
    }

    #[test]
    fn values_become_text_and_null_stays_none() {
        assert_eq!(value_text(&Value::NULL), None);
        assert_eq!(
            value_text(&Value::Bytes(b"Yes".to_vec())).as_deref(),
            Some("Yes")
        );
        assert_eq!(
            value_text(&Value::Bytes(vec![0xff])).as_deref(),
            Some("\u{fffd}")
        );
        assert_eq!(value_text(&Value::UInt(45)).as_deref(), Some("45"));
    }
}
