//! The byte relay of an established connection: bytes in, same bytes out, both ways, until
//! both sides are done. Nothing is parsed or rewritten, so TLS, auth plugins and compression
//! pass through untouched.
//!
//! [`relay`] runs the pump named by `--relay`: [`pump::pump`] (default; readiness-based, no
//! buffer held while idle) or [`pump::copy`] (tokio's `copy_bidirectional`, the reference).
//! Both report bytes per direction and, on failure, which side (client or backend) failed,
//! because that is the first thing an operator needs from a proxy log.

pub mod pump;

use tokio::net::TcpStream;

pub use self::pump::{PumpError as RelayError, PumpStats as RelayStats, Side};
use crate::config::RelayKind;

/// Relays between `client` and `backend` with the pump `kind` until both directions end.
pub async fn relay(
    kind: RelayKind,
    client: &mut TcpStream,
    backend: &mut TcpStream,
) -> Result<RelayStats, RelayError> {
    match kind {
        RelayKind::Pump => pump::pump(client, backend).await,
        RelayKind::Copy => pump::copy(client, backend).await,
    }
}
