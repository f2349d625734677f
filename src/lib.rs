//! consul-mysql-proxy: an L4 proxy that keeps MySQL/MariaDB clients on the current primary.
//!
//! Clients connect to one stable address; the proxy learns which server is the primary and
//! relays each connection, byte for byte, to it. Nothing in the MySQL protocol is parsed or
//! rewritten (TLS, auth plugins, compression pass through); the only bytes the proxy writes
//! itself are an ERR packet for a client that could not be given a primary.
//!
//! How a connection flows through the modules:
//!
//! - [`config`]: flags, env vars and the TOML file, layered into one validated [`config::Config`].
//! - [`discovery`]: a source (static, Consul health/catalog/KV, DNS) observes candidates;
//!   [`selection`] turns candidates into one primary (sticky, split-brain aware);
//! - [`primary`]: the published "current primary" — a `watch` value with an epoch and a
//!   per-primary `leave` token;
//! - [`fence`]: with `verify_writable`, a read-only server is never adopted as the primary;
//! - [`failover`]: on a change, decides when connections of the old primary are closed, and logs
//!   the failover timeline;
//! - [`listener`]: accept loop with the connection cap; [`connection`]: hold, connect, greeting
//!   check, relay; [`relay`]: the byte pumps; [`mysql_packet`]: the ERR packet;
//! - [`server`]: wires it all together, runs the workers and the ordered shutdown;
//! - [`admin`]: `/healthz`, `/readyz`, `/status`, `/metrics` over HTTP; [`status`]: what discovery
//!   last saw;
//! - [`metrics`], [`telemetry`], [`limits`]: counters, logs, process limits;
//! - [`check`]: `consul-mysql-proxy check`, the Consul script check for each MySQL node;
//!   [`healthcheck`]: `consul-mysql-proxy healthcheck`, the container HEALTHCHECK.

pub mod admin;
pub mod check;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod failover;
pub mod fence;
pub mod healthcheck;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod mysql_packet;
pub mod primary;
pub mod relay;
pub mod selection;
pub mod server;
pub mod status;
pub mod telemetry;
