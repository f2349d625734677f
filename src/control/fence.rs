//! Fencing (`verify_writable`): asks a server whether it is writable before the proxy adopts it
//! as the primary, and again every `verify_interval` while it is current. A read-only node
//! (`read_only=ON`, or `super_read_only=ON` on MySQL) is never the primary, whatever Consul says:
//! this is what stops writes to a demoted node when the failover tool demoted it but Consul has
//! not caught up yet.
//!
//! The question and the rule are [`writable`](super::writable)'s, shared with `check`. Only a
//! `SHOW GLOBAL VARIABLES` is sent, as the monitor user, over a fresh connection with a timeout.

use std::time::Duration;

use mysql_async::{Conn, OptsBuilder};

use super::primary::Backend;
use super::writable::ServerVars;
use crate::config::FenceConfig;

/// What a fencing check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writability {
    Writable,
    /// Read-only, and which variable says so.
    ReadOnly(String),
    /// Could not tell (unreachable, auth failure, timeout): the reason.
    Unknown(String),
}

/// Checks whether `backend` accepts writes, within `timeout`.
pub async fn check(backend: &Backend, fence: &FenceConfig, timeout: Duration) -> Writability {
    match tokio::time::timeout(timeout, ask(backend, fence)).await {
        Ok(verdict) => verdict,
        Err(_) => Writability::Unknown(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// How the monitor user logs in to `addr` over TCP (fencing here, and the kernel fast path's
/// liveness session).
pub fn monitor_opts(addr: std::net::SocketAddr, fence: &FenceConfig) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(fence.user.clone()))
        .pass(Some(fence.password.expose().to_owned()))
        .prefer_socket(false)
}

async fn ask(backend: &Backend, fence: &FenceConfig) -> Writability {
    let opts = monitor_opts(backend.addr, fence);
    let mut conn = match Conn::new(opts).await {
        Ok(conn) => conn,
        Err(e) => return Writability::Unknown(format!("cannot connect as {}: {e}", fence.user)),
    };
    let verdict = match ServerVars::read(&mut conn).await {
        Ok(vars) => judge(&vars),
        Err(e) => Writability::Unknown(format!("SHOW GLOBAL VARIABLES failed: {e}")),
    };
    // The verdict is known; a failed goodbye changes nothing.
    let _ = conn.disconnect().await;
    verdict
}

fn judge(vars: &ServerVars) -> Writability {
    match vars.writable() {
        Some(true) => Writability::Writable,
        Some(false) => Writability::ReadOnly(vars.describe_read_only()),
        None => Writability::Unknown("the server did not report @@global.read_only".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(read_only: Option<&str>, super_read_only: Option<&str>) -> ServerVars {
        ServerVars {
            version: Some("11.8.3-MariaDB".into()),
            read_only: read_only.map(Into::into),
            super_read_only: super_read_only.map(Into::into),
        }
    }

    #[test]
    fn odd_answers_never_panic_and_never_pass() {
        assert_eq!(judge(&vars(Some("OFF"), None)), Writability::Writable);
        assert_eq!(
            judge(&vars(Some("ON"), None)),
            Writability::ReadOnly("read_only=ON".into())
        );
        assert_eq!(
            judge(&vars(Some("OFF"), Some("ON"))),
            Writability::ReadOnly("read_only=OFF, super_read_only=ON".into())
        );
        assert!(matches!(judge(&vars(None, None)), Writability::Unknown(_)));
        assert!(matches!(
            judge(&vars(Some("garbage"), None)),
            Writability::ReadOnly(_)
        ));
    }
}
