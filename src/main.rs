//! The `consul-mysql-proxy` binary: parse, configure, run, reload, drain, exit.
//!
//! Exit codes: 0 after a clean shutdown, 64 (EX_USAGE) for bad flags or configuration, 1 when the
//! proxy cannot start (e.g. the listen address is taken), 130 when a second SIGTERM/SIGINT cuts
//! the graceful drain short. `check` exits with Consul's script-check codes (0/1/2),
//! `healthcheck` and `status` with 0 (ready) or 1 (not ready).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use consul_mysql_proxy::cli::check::{self, CheckArgs};
use consul_mysql_proxy::cli::healthcheck::{self, HealthcheckArgs};
use consul_mysql_proxy::cli::status::{self, StatusArgs};
use consul_mysql_proxy::config::{Routes, Settings, defaults};
use consul_mysql_proxy::ops::limits;
use consul_mysql_proxy::ops::telemetry::{self, LogHandle};
use consul_mysql_proxy::server::Server;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "consul-mysql-proxy",
    version,
    about = "Keeps MySQL clients on the current primary, as learned from Consul",
    // A flag given twice takes its last value, so wrapper scripts can append overrides.
    args_override_self = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// TOML configuration file; flags and env vars override its fields (re-read on SIGHUP)
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Consul script check for one MySQL node: exit 0 passing, 1 warning, 2 critical
    Check(Box<CheckArgs>),
    /// Container health check: exit 0 when the running proxy's /readyz says ready, else 1
    Healthcheck(HealthcheckArgs),
    /// The running proxy's state on one screen (primary, discovery, instances, failovers): exit 0 ready, else 1
    Status(StatusArgs),
}

/// Parses argv with the built-in defaults written into `--help` from the one defaults table.
fn parse_cli() -> Result<Cli, clap::Error> {
    let mut matches = defaults::annotate_help(Cli::command()).try_get_matches()?;
    Cli::from_arg_matches_mut(&mut matches)
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // A flag error in `check` is a check result: Consul shows stdout and treats 2 as critical.
        Err(e) if std::env::args().nth(1).as_deref() == Some("check") => {
            return ExitCode::from(check::report_bad_flags(&e));
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli.command {
        Some(Command::Check(args)) => return run_check(*args),
        Some(Command::Healthcheck(args)) => return ExitCode::from(healthcheck::run(&args)),
        Some(Command::Status(args)) => return ExitCode::from(status::run(&args)),
        None => {}
    }
    let routes = match Routes::load(cli.config.as_deref(), &cli.settings) {
        Ok(routes) => routes,
        Err(e) => {
            eprintln!("consul-mysql-proxy: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match limits::raise_nofile_limit() {
        Ok(nofile) => {
            let caps: Vec<(&str, usize)> = routes
                .routes
                .iter()
                .map(|r| (&*r.name, r.config.max_connections))
                .collect();
            if let Err(e) = limits::check_routes_capacity(&caps, nofile) {
                eprintln!("consul-mysql-proxy: invalid configuration: {e}");
                return ExitCode::from(EX_USAGE);
            }
        }
        Err(e) => eprintln!("consul-mysql-proxy: warning: cannot raise the open-files limit: {e}"),
    }
    let log = telemetry::init(routes.process().log_format, &routes.process().log_level);
    match run(routes, cli, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("consul-mysql-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(routes: Routes, cli: Cli, log: LogHandle) -> anyhow::Result<()> {
    // Single-threaded by default: a sidecar leaves the cores to the application. More workers
    // get their own threads inside the server.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind_routes(routes)?;
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = mpsc::channel(1);
        spawn_signal_handler(shutdown.clone())?;
        spawn_reload_handler(cli, log, reload_tx)?;
        server.run(shutdown, reload_rx).await?;
        Ok(())
    })
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once.
fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            received += 1;
            if received == 1 {
                tracing::info!(signal = name, "graceful shutdown requested");
                shutdown.cancel();
            } else {
                tracing::warn!(signal = name, "second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

/// SIGHUP: re-read the config file (with the same flags and env on top). An invalid file is
/// rejected with the reason and the running configuration stays.
fn spawn_reload_handler(
    cli: Cli,
    log: LogHandle,
    reloads: mpsc::Sender<Routes>,
) -> anyhow::Result<()> {
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match Routes::load(cli.config.as_deref(), &cli.settings) {
                Ok(routes) => {
                    if let Err(e) = log.set_filter(&routes.process().log_level) {
                        tracing::warn!(error = %e, "reload: cannot change the log level");
                    }
                    if reloads.send(routes).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "reload rejected: keeping the running configuration"
                ),
            }
        }
    });
    Ok(())
}

fn run_check(args: CheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("CRITICAL: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(check::run(args));
    // The verdict is known: do not wait for a stuck blocking task (e.g. a hanging DNS lookup).
    runtime.shutdown_background();
    ExitCode::from(code)
}
