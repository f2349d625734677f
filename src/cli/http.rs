//! The one HTTP client of the subcommands: a request to the running proxy's admin endpoint over
//! plain HTTP/1.0 (the server closes the connection after the answer, so no chunking, no
//! keep-alive and no extra crate), bounded in time and size. [`Endpoint`] is the flags that say
//! where and how long, shared by `healthcheck` (`/readyz`) and `status` (`/readyz`, `/status`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Where the running proxy answers and how long to wait for it.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoint {
    /// Admin endpoint (or metrics_listen address) of the proxy to ask
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

impl Endpoint {
    /// `GET path`, reading at most `limit` bytes of the answer.
    pub fn get(&self, path: &str, limit: u64) -> std::io::Result<Answer> {
        request(self.admin, "GET", path, self.timeout, limit)
    }
}

/// One answer: the status code (0 if the status line is not HTTP) and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// `method path` on `addr`, reading at most `limit` bytes of the answer, each step (connect,
/// write, each read) within `timeout`.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
    limit: u64,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.take(limit).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok(Answer { status, body })
}
