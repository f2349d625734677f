//! Subcommands of the binary besides the proxy itself.
//!
//! - [`check`]: `consul-mysql-proxy check`, the Consul script check for each MySQL node;
//! - [`healthcheck`]: `consul-mysql-proxy healthcheck`, the container HEALTHCHECK.

pub mod check;
pub mod healthcheck;
