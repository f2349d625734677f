//! Opening the backend side of a connection: TCP connect with a timeout, the socket options a
//! long-lived database connection needs (TCP_NODELAY, keepalive, TCP_USER_TIMEOUT), and the
//! greeting wait — a MySQL server speaks first, so a server that accepts TCP but sends nothing
//! is hung and counts as a failed connect. The greeting is only peeked at, never consumed.
//!
//! Failures are a typed [`ConnectError`]; its [`label`](ConnectError::label) is the `reason` of
//! `backend_connect_errors_total`, its `Display` the one-line cause a held client's ERR packet
//! carries.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::config::Config;
use crate::control::primary::Backend;

/// Why a connect to the primary failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Refused(std::io::Error),
    #[error("connect timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("backend sent no greeting within {} (hung server?)", humantime::format_duration(*.0))]
    NoGreeting(Duration),
    #[error("backend closed the connection before its greeting")]
    ClosedBeforeGreeting,
    #[error("error waiting for greeting: {0}")]
    Reset(std::io::Error),
    #[error("{0}")]
    Unreachable(std::io::Error),
    #[error("cannot create socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot set socket options: {0}")]
    SocketOptions(std::io::Error),
    #[error("cannot send the PROXY protocol header: {0}")]
    ProxyHeader(std::io::Error),
    #[error("{0}")]
    Other(std::io::Error),
}

impl ConnectError {
    /// The `reason` label of `backend_connect_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectError::Refused(_) => "refused",
            ConnectError::Timeout(_) => "timeout",
            ConnectError::NoGreeting(_) => "no_greeting",
            ConnectError::ClosedBeforeGreeting
            | ConnectError::Reset(_)
            | ConnectError::ProxyHeader(_) => "reset",
            ConnectError::Unreachable(_) => "unreachable",
            ConnectError::Socket(_) | ConnectError::SocketOptions(_) | ConnectError::Other(_) => {
                "other"
            }
        }
    }

    fn from_connect(e: std::io::Error) -> ConnectError {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::ConnectionRefused => ConnectError::Refused(e),
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                ConnectError::Unreachable(e)
            }
            ErrorKind::TimedOut => ConnectError::Unreachable(e),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => ConnectError::Reset(e),
            _ => ConnectError::Other(e),
        }
    }
}

/// Connects to `backend` and waits for its greeting.
/// `proxy_header` (PROXY protocol) is written first, before the server's greeting is awaited:
/// the server reads it with the client's first packet.
pub async fn connect(
    config: &Config,
    backend: &Backend,
    proxy_header: Option<&[u8]>,
) -> Result<TcpStream, ConnectError> {
    let socket = match backend.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ConnectError::Socket)?;
    let mut stream =
        match tokio::time::timeout(config.connect_timeout, socket.connect(backend.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ConnectError::from_connect(e)),
            Err(_) => return Err(ConnectError::Timeout(config.connect_timeout)),
        };
    tune_backend_socket(config, &stream).map_err(ConnectError::SocketOptions)?;
    if let Some(header) = proxy_header {
        // A fresh socket's send buffer takes these few dozen bytes at once.
        stream
            .write_all(header)
            .await
            .map_err(ConnectError::ProxyHeader)?;
    }
    wait_for_greeting(config.backend_greeting_timeout, &stream).await?;
    Ok(stream)
}

fn tune_backend_socket(config: &Config, stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = SockRef::from(stream);
    if let Some(idle) = config.backend_keepalive {
        // Probe every third of the idle time, three times: a dead peer is found in ~2×idle.
        let interval = (idle / 3).max(Duration::from_secs(1));
        let keepalive = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(3);
        sock.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(user_timeout) = config.backend_user_timeout {
        sock.set_tcp_user_timeout(Some(user_timeout))?;
    }
    Ok(())
}

/// Waits until the server has sent something, without consuming it (MySQL servers speak first).
async fn wait_for_greeting(limit: Duration, stream: &TcpStream) -> Result<(), ConnectError> {
    let mut header = [0u8; 4];
    match tokio::time::timeout(limit, stream.peek(&mut header)).await {
        Ok(Ok(0)) => Err(ConnectError::ClosedBeforeGreeting),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ConnectError::Reset(e)),
        Err(_) => Err(ConnectError::NoGreeting(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_listed_and_messages_unchanged() {
        let refused =
            ConnectError::from_connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.label(), "refused");
        let timeout = ConnectError::Timeout(Duration::from_secs(2));
        assert_eq!(timeout.to_string(), "connect timed out after 2s");
        let hung = ConnectError::NoGreeting(Duration::from_millis(500));
        assert_eq!(
            hung.to_string(),
            "backend sent no greeting within 500ms (hung server?)"
        );
        for e in [refused, timeout, hung, ConnectError::ClosedBeforeGreeting] {
            assert!(["refused", "timeout", "no_greeting", "reset"].contains(&e.label()));
        }
    }
}
