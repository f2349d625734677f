//! `consul-double`: the Consul API double as a process, for the demo and out-of-process tests.
//! Prints `consul-double http=<addr> dns=<addr>` on stdout once both are listening.
//!
//! It also accepts the subset of `consul agent -dev ...` flags that the test helper passes to
//! a real agent (`-http-port`, `-dns-port`, `-client`, `-node`, `-datacenter`,
//! `-hcl 'enable_script_checks = true'`, `-hcl 'check_update_interval = "0s"'`; other flags
//! ignored), so the helper's real-agent path can be exercised with `CONSUL_BIN=consul-double`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Dev-only double of the Consul HTTP and DNS APIs (never ship this)")]
struct Args {
    /// HTTP API listen address.
    #[arg(long, default_value = "127.0.0.1:8500")]
    http: SocketAddr,
    /// DNS listen address (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:8600")]
    dns: SocketAddr,
    /// Require this ACL token on every API request.
    #[arg(long, env = "CONSUL_DOUBLE_ACL_TOKEN")]
    acl_token: Option<String>,
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    #[arg(long, default_value = "consul-double")]
    node_name: String,
    /// DNS answers only instances whose checks all pass (Consul's `dns_config.only_passing`).
    #[arg(long)]
    dns_only_passing: bool,
    /// Set TC on trimmed UDP answers (Consul's `dns_config.enable_truncate`).
    #[arg(long)]
    enable_truncate: bool,
    /// Allow script (`Args`) checks (Consul's `enable_script_checks`).
    #[arg(long)]
    enable_script_checks: bool,
    /// Consul's `check_update_interval` (Go duration), e.g. `0s` to sync output at once.
    #[arg(long, default_value = "5m")]
    check_update_interval: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let argv: Vec<String> = std::env::args().collect();
    let args = if argv.get(1).map(String::as_str) == Some("agent") {
        match agent_compat(&argv[2..]) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("consul-double agent: {e}");
                return std::process::ExitCode::from(64);
            }
        }
    } else {
        Args::parse()
    };
    let Some(check_update_interval) = consul_double::duration::parse(&args.check_update_interval)
    else {
        eprintln!(
            "invalid --check-update-interval {:?}",
            args.check_update_interval
        );
        return std::process::ExitCode::from(64);
    };
    let cfg = consul_double::DoubleConfig {
        http: args.http,
        dns: args.dns,
        acl_token: args.acl_token,
        datacenter: args.datacenter,
        node_name: args.node_name,
        dns_only_passing: args.dns_only_passing,
        enable_truncate: args.enable_truncate,
        enable_script_checks: args.enable_script_checks,
        check_update_interval,
        ..Default::default()
    };
    let double = match consul_double::start(cfg).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("consul-double: {e:#}");
            return std::process::ExitCode::from(1);
        }
    };
    println!(
        "consul-double http={} dns={}",
        double.http_addr(),
        double.dns_addr()
    );
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    tokio::select! {
        _ = double.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    std::process::ExitCode::SUCCESS
}

/// Maps `consul agent -dev` style flags (single dash, Go `flag` syntax) onto [`Args`].
fn agent_compat(argv: &[String]) -> Result<Args, String> {
    let mut client = "127.0.0.1".to_string();
    let (mut http_port, mut dns_port) = (8500u16, 8600u16);
    let mut args = Args::parse_from(["consul-double"]);
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let flag = flag.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if matches!(name, "dev" | "server" | "ui") {
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| format!("-{name} needs a value"))?
                .clone(),
        };
        let port = || {
            value
                .parse::<u16>()
                .map_err(|_| format!("-{name}: bad port {value:?}"))
        };
        match name {
            "client" => client = value.clone(),
            "http-port" => http_port = port()?,
            "dns-port" => dns_port = port()?,
            "node" => args.node_name = value.clone(),
            "datacenter" => args.datacenter = value.clone(),
            "hcl" => {
                let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
                if compact == "enable_script_checks=true" {
                    args.enable_script_checks = true;
                } else if let Some(v) = compact.strip_prefix("check_update_interval=") {
                    args.check_update_interval = v.trim_matches('"').to_string();
                }
            }
            _ => {} // -bind, -server-port, -serf-*-port, -grpc-port, ...: nothing to do.
        }
    }
    args.http = format!("{client}:{http_port}")
        .parse()
        .map_err(|e| format!("-client: {e}"))?;
    args.dns = format!("{client}:{dns_port}")
        .parse()
        .map_err(|e| format!("-client: {e}"))?;
    Ok(args)
}
