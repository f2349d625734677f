//! `consul-mysql-proxy healthcheck`: the container HEALTHCHECK. Asks the running proxy's admin
//! endpoint `GET /readyz` over plain HTTP/1.0 (so the image needs no curl) and exits 0 when it
//! answers 200, 1 otherwise, printing the answer's first line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Flags of `consul-mysql-proxy healthcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Admin endpoint of the proxy to ask
    #[arg(
        long,
        env = "CONSUL_MYSQL_PROXY_ADMIN",
        default_value = "127.0.0.1:9306"
    )]
    pub admin: SocketAddr,
    /// Give up after this long
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
}

/// Returns the exit code: 0 ready, 1 not ready or unreachable.
pub fn run(args: &HealthcheckArgs) -> u8 {
    match ask(args) {
        Ok((200, line)) => {
            println!("{line}");
            0
        }
        Ok((status, line)) => {
            println!("HTTP {status}: {line}");
            1
        }
        Err(e) => {
            println!("cannot ask {}: {e}", args.admin);
            1
        }
    }
}

fn ask(args: &HealthcheckArgs) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&args.admin, args.timeout)?;
    stream.set_read_timeout(Some(args.timeout))?;
    stream.set_write_timeout(Some(args.timeout))?;
    stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    Ok((status, body.lines().next().unwrap_or("").to_owned()))
}
