//! The `consul-mysql-proxy` binary: parse, configure, run, drain, exit.
//!
//! Exit codes: 0 after a clean shutdown, 64 (EX_USAGE) for bad flags or configuration, 1 when the
//! proxy cannot start (e.g. the listen address is taken), 130 when a second SIGTERM/SIGINT cuts
//! the graceful drain short.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use consul_mysql_proxy::check::{self, CheckArgs};
use consul_mysql_proxy::config::{Config, Settings};
use consul_mysql_proxy::server::Server;
use consul_mysql_proxy::{limits, telemetry};
use tokio::signal::unix::{SignalKind, signal};
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

    /// TOML configuration file; flags and env vars override its fields
    #[arg(long, env = "CONSUL_MYSQL_PROXY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Consul script check for one MySQL node: exit 0 passing, 1 warning, 2 critical
    Check(CheckArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
    if let Some(Command::Check(args)) = cli.command {
        return run_check(args);
    }
    let config = match Config::load(cli.config.as_deref(), &cli.settings) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("consul-mysql-proxy: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match limits::raise_nofile_limit() {
        Ok(nofile) => {
            if let Err(e) = limits::check_connection_capacity(config.max_connections, nofile) {
                eprintln!("consul-mysql-proxy: invalid configuration: {e}");
                return ExitCode::from(EX_USAGE);
            }
        }
        Err(e) => eprintln!("consul-mysql-proxy: warning: cannot raise the open-files limit: {e}"),
    }
    let _log = telemetry::init(config.log_format, &config.log_level);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("consul-mysql-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // Single-threaded by default: a sidecar leaves the cores to the application. More workers
    // get their own threads inside the server.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config)?;
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone())?;
        server.run(shutdown).await?;
        Ok(())
    })
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
