//! The byte relay of an established connection: bytes in, same bytes out, both ways, until
//! both sides are done. Nothing is parsed or rewritten, so TLS, auth plugins and compression
//! pass through untouched.
//!
//! `relay` picks the pump named by `--relay`; every pump reports bytes per direction and, on
//! failure, which side (client or backend) failed, because that is the first thing an operator
//! needs from a proxy log.

use tokio::net::TcpStream;

use crate::config::RelayKind;

/// Which socket of a relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Backend => "backend",
        })
    }
}

/// Bytes moved by a relay, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
    /// Which side sent EOF first (closed the conversation), if any did.
    pub first_eof: Option<Side>,
}

/// A relay that ended with an I/O error on one side.
#[derive(Debug, thiserror::Error)]
#[error("{side} side: {source}")]
pub struct RelayError {
    pub side: Side,
    #[source]
    pub source: std::io::Error,
    pub stats: RelayStats,
}

/// Relays between `client` and `backend` with the pump `kind` until both directions end.
pub async fn relay(
    kind: RelayKind,
    client: &mut TcpStream,
    backend: &mut TcpStream,
) -> Result<RelayStats, RelayError> {
    match kind {
        RelayKind::Copy => copy(client, backend).await,
    }
}

/// The reference pump: tokio's `copy_bidirectional` (2×8 KiB buffers for the connection's life).
/// Side attribution of errors is best effort: tokio does not say which socket failed.
async fn copy(client: &mut TcpStream, backend: &mut TcpStream) -> Result<RelayStats, RelayError> {
    match tokio::io::copy_bidirectional(client, backend).await {
        Ok((up, down)) => Ok(RelayStats {
            client_to_backend: up,
            backend_to_client: down,
            first_eof: None,
        }),
        Err(source) => Err(RelayError {
            side: guess_failed_side(client, backend),
            source,
            stats: RelayStats::default(),
        }),
    }
}

/// The side whose socket carries a pending error (SO_ERROR), else the client.
fn guess_failed_side(client: &TcpStream, backend: &TcpStream) -> Side {
    let has_error = |s: &TcpStream| matches!(s.take_error(), Ok(Some(_)));
    if has_error(backend) && !has_error(client) {
        Side::Backend
    } else {
        Side::Client
    }
}
