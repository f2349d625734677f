//! The data side: client connections, from accept to close.
//!
//! ```text
//!   listener (accept, connection cap) ──▶ connection: hold ─▶ connect ─▶ relay ─▶ close
//!                                             ▲ reads the published primary (watch)
//!                                             └ no primary in time: mysql_packet ERR to the client
//! ```
//!
//! - [`listener`]: the listening sockets and the accept loop with the connection cap;
//! - [`connection`]: one client's lifecycle (hold, connect, relay, leave on failover);
//! - [`upstream`]: where a new connection goes — the primary, or a replica pool member by
//!   `balance` (with `fallback` when the pool is empty);
//! - [`connect`]: the backend connect, its socket options and the greeting wait;
//! - [`relay`]: the byte pumps (`pump`, and `copy` for reference) and their observer hook;
//! - [`leave`]: how a relayed connection leaves a replaced primary — at once, or at its first
//!   idle moment (`on_failover = idle`) bounded by the drain's deadline;
//! - [`idle`]: the idle detector behind that: MySQL packet framing and turn-taking, read from
//!   the relayed bytes without changing them;
//! - [`mysql_packet`]: the bytes the proxy writes to a client itself, an ERR packet;
//! - [`proxy_protocol`]: the PROXY v2 header it may write to the server first.
//!
//! The data side reads the control side's published primary and never writes it; the only
//! signal back is a `refresh` poke after a failed connect.

pub(crate) mod connect;
pub(crate) mod connection;
pub mod fastpath;
pub mod idle;
pub(crate) mod leave;
pub(crate) mod listener;
pub(crate) mod mysql_packet;
pub(crate) mod proxy_protocol;
pub mod relay;
pub(crate) mod upstream;
