//! Subcommands of the binary besides the proxy itself.
//!
//! - [`check`]: `consul-mysql-proxy check`, the Consul script check for each MySQL node;
//! - [`healthcheck`]: `consul-mysql-proxy healthcheck`, the container HEALTHCHECK;
//! - [`status`]: `consul-mysql-proxy status`, the running proxy's state on one terminal screen;
//! - [`http`]: the plain HTTP/1.0 client (and its `--admin`/`--timeout` flags) both of the last
//!   two use to ask the admin endpoint.

pub mod check;
pub mod healthcheck;
pub mod http;
pub mod status;
