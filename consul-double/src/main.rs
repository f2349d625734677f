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
    /// Also serve HTTP on this unix socket (`unix:///path/consul.sock` or a plain path), as
    /// Consul's `addresses.http = "unix://..."`.
    #[arg(long)]
    http_unix: Option<String>,
    /// Serve HTTPS on this address (Consul `ports.https`); needs --tls-cert-file and
    /// --tls-key-file.
    #[arg(long)]
    https: Option<SocketAddr>,
    /// PEM certificate (chain) of the HTTPS listener (Consul `tls.https.cert_file`).
    #[arg(long)]
    tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of the HTTPS listener (Consul `tls.https.key_file`).
    #[arg(long)]
    tls_key_file: Option<std::path::PathBuf>,
    /// PEM CA bundle client certificates must chain to (Consul `tls.https.ca_file`).
    #[arg(long)]
    tls_ca_file: Option<std::path::PathBuf>,
    /// Require and verify client certificates (Consul `tls.https.verify_incoming`).
    #[arg(long)]
    tls_verify_incoming: bool,
    /// Consul's `use_streaming_backend` (default true); `false` answers health blocking
    /// queries the old RPC way.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    use_streaming_backend: bool,
    /// An extra ACL token with prefix rules: `SECRET=resource:prefix:policy,...`, e.g.
    /// `s3=service::read` (service read everywhere, no node read). Repeatable.
    #[arg(long = "acl-rules-token")]
    acl_rules_tokens: Vec<String>,
}

/// Parses `SECRET=resource:prefix:policy,...` for --acl-rules-token.
fn parse_rules_token(spec: &str) -> Result<consul_double::AclToken, String> {
    use consul_double::{Policy, Resource};
    let (secret, rules) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: expected SECRET=resource:prefix:policy,..."))?;
    let mut token = consul_double::AclToken::new(secret);
    for rule in rules.split(',').filter(|r| !r.is_empty()) {
        let mut parts = rule.splitn(3, ':');
        let (Some(res), Some(prefix), Some(pol)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{rule:?}: expected resource:prefix:policy"));
        };
        let res = match res {
            "node" => Resource::Node,
            "service" => Resource::Service,
            "key" => Resource::Key,
            "session" => Resource::Session,
            "agent" => Resource::Agent,
            "query" => Resource::Query,
            other => return Err(format!("unknown resource {other:?}")),
        };
        let pol = match pol {
            "deny" => Policy::Deny,
            "read" => Policy::Read,
            "write" => Policy::Write,
            other => return Err(format!("unknown policy {other:?}")),
        };
        token = token.rule(res, prefix, pol);
    }
    Ok(token)
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
    let mut acl_tokens = Vec::new();
    for spec in &args.acl_rules_tokens {
        match parse_rules_token(spec) {
            Ok(t) => acl_tokens.push(t),
            Err(e) => {
                eprintln!("invalid --acl-rules-token: {e}");
                return std::process::ExitCode::from(64);
            }
        }
    }
    let read = |p: &std::path::Path| std::fs::read_to_string(p);
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let loaded = (|| -> std::io::Result<consul_double::TlsConfig> {
                Ok(consul_double::TlsConfig {
                    cert_pem: read(c)?,
                    key_pem: read(k)?,
                    ca_pem: args.tls_ca_file.as_deref().map(read).transpose()?,
                    verify_incoming: args.tls_verify_incoming,
                })
            })();
            match loaded {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("reading TLS files: {e}");
                    return std::process::ExitCode::from(64);
                }
            }
        }
        _ => {
            eprintln!("--tls-cert-file and --tls-key-file go together");
            return std::process::ExitCode::from(64);
        }
    };
    let http_unix = args
        .http_unix
        .as_deref()
        .map(|u| std::path::PathBuf::from(u.strip_prefix("unix://").unwrap_or(u)));
    let cfg = consul_double::DoubleConfig {
        acl_tokens,
        use_streaming_backend: args.use_streaming_backend,
        http_unix,
        https: args.https,
        tls,
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
    let mut line = format!(
        "consul-double http={} dns={}",
        double.http_addr(),
        double.dns_addr()
    );
    if let Some(a) = double.https_addr() {
        line.push_str(&format!(" https={a}"));
    }
    if let Some(u) = double.unix_url() {
        line.push_str(&format!(" unix={u}"));
    }
    println!("{line}");
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
                } else if let Some(v) = compact.strip_prefix("use_streaming_backend=") {
                    args.use_streaming_backend = v != "false";
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
