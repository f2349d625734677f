//! consul-mysql-proxy: an L4 proxy that keeps MySQL/MariaDB clients on the current primary.
//!
//! Clients connect to one stable address; the proxy learns which server is the primary and
//! relays each connection, byte for byte, to it. Nothing in the MySQL protocol is rewritten
//! (TLS, auth plugins, compression pass through); the only bytes the proxy writes itself are an
//! ERR packet for a client that could not be given a primary. With `on_failover = idle` an
//! observer *reads* the relayed packet headers and the status flags of the server's replies, to
//! close connections to a replaced primary only at idle moments (`data::idle`).
//!
//! The crate is laid out by role (`docs/architecture.md` has the picture):
//!
//! - [`config`]: flags, env vars and the TOML file, layered into one validated
//!   [`config::Config`]. Depends on no component.
//! - [`control`] — *who is the primary*: discovery sources (static, Consul, DNS) send
//!   observations to the control loop, which selects one primary, fences it
//!   (`verify_writable`), publishes it as a `watch` value and applies the failover policy.
//! - [`data`] — *the bytes*: the accept loop, each connection's hold → connect → relay → leave
//!   lifecycle, the byte pumps (with their observer hook), the idle detector and the ERR packet.
//!   Reads the published primary, never writes it.
//! - [`ops`] — *what operators see*: the admin endpoint, metrics, discovery status, logs,
//!   process limits. Reads shared state, never blocks the relay.
//! - [`cli`]: the `check`, `healthcheck` and `status` subcommands.
//! - [`server`]: wires the sides together, applies reloads and shuts down in order.
//! - `util`: leaf helpers (secrets, PEM files, char-safe text, wall-clock stamps).
//!
//! Dependencies point one way: `server` → `data`/`ops`/`control` → `config` → `util`; `data`
//! and `ops` read `control`'s published value; `control` knows nothing of `data`.

pub mod cli;
pub mod config;
pub mod control;
pub mod data;
pub mod ops;
pub mod server;
pub(crate) mod util;
