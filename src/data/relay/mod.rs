//! The byte relay of an established connection: bytes in, same bytes out, both ways, until
//! both sides are done. Nothing is parsed or rewritten, so TLS, auth plugins and compression
//! pass through untouched.
//!
//! [`relay`] runs the pump named by `--relay`: [`pump::pump`] (default; readiness-based, no
//! buffer held while idle) or [`copy::copy`] (tokio's `copy_bidirectional`, the reference).
//! Both report bytes per [`Side`] and, on failure, which side failed, because that is the first
//! thing an operator needs from a proxy log. One vocabulary throughout: a [`Side`] is the client
//! or the backend, and bytes are counted by the side they came *from*.
//!
//! [`relay_tapped`] is the same relay with a [`Tap`]: an observer that is shown every chunk as
//! it is written to the other socket (in order, per direction; it cannot change or hold them)
//! and that may end the relay at a moment when nothing read is left unwritten — the idle
//! detector of `on_failover = idle` (see [`crate::data::idle`]). [`relay`] is
//! `relay_tapped` with the empty tap `()`, which compiles away.

pub mod copy;
pub mod pump;

use std::error::Error;
use std::fmt;
use std::io;

use tokio::net::TcpStream;

use crate::config::RelayKind;

/// One end of the relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The accepted downstream connection (the MySQL client).
    Client,
    /// The upstream connection (the MySQL server).
    Backend,
}

impl Side {
    /// The opposite end.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    }

    /// The side's name in logs and errors: `client` or `backend`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes relayed (written to the other socket), by the side they came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Bytes read from the client and written to the backend ("upstream" in metrics).
    pub from_client: u64,
    /// Bytes read from the backend and written to the client ("downstream" in metrics).
    pub from_backend: u64,
    /// The side whose EOF was read first, if any EOF was read.
    pub first_eof: Option<Side>,
    /// The relay was ended by its [`Tap`] (both sockets still open, nothing left unwritten),
    /// not by EOF on both sides.
    pub left_idle: bool,
}

/// What a relay shows an observer, and asks it.
pub trait Tap {
    /// `bytes` from `from` were just written to the other socket. Called in order per direction.
    fn relayed(&mut self, from: Side, bytes: &[u8]);

    /// Asked after every round of the relay in which nothing read is left unwritten (no spill,
    /// nothing buffered): `true` ends the relay now, with [`RelayStats::left_idle`] set.
    fn leave_now(&mut self) -> bool;
}

/// No observer: the plain relay.
impl Tap for () {
    #[inline]
    fn relayed(&mut self, _from: Side, _bytes: &[u8]) {}

    #[inline]
    fn leave_now(&mut self) -> bool {
        false
    }
}

/// The relay stopped because I/O on one socket failed.
///
/// `Display` includes the underlying error's message, so (following the Rust
/// error-handling convention of never reporting a cause twice)
/// [`Error::source`] returns `None`; the `io::Error` itself is the public
/// `source` field.
#[derive(Debug)]
pub struct RelayError {
    /// The socket whose read, write or shutdown failed.
    pub side: Side,
    /// What the failing read, write or shutdown returned.
    pub source: io::Error,
    /// What had been relayed before the failure.
    pub stats: RelayStats,
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "relay failed on the {} socket after {} bytes client->backend and {} bytes backend->client: {}",
            self.side, self.stats.from_client, self.stats.from_backend, self.source
        )
    }
}

impl Error for RelayError {}

/// Relays between `client` and `backend` with the pump `kind` until both directions end.
pub async fn relay(
    kind: RelayKind,
    client: &mut TcpStream,
    backend: &mut TcpStream,
) -> Result<RelayStats, RelayError> {
    relay_tapped(kind, client, backend, &mut ()).await
}

/// [`relay`] with `tap` watching the bytes; `tap` may also end the relay at a quiet moment.
pub async fn relay_tapped<T: Tap + Send>(
    kind: RelayKind,
    client: &mut TcpStream,
    backend: &mut TcpStream,
    tap: &mut T,
) -> Result<RelayStats, RelayError> {
    match kind {
        RelayKind::Pump => pump::pump_tapped(client, backend, tap).await,
        RelayKind::Copy => copy::copy_tapped(client, backend, tap).await,
    }
}
