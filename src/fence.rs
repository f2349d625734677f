//! Fencing (`verify_writable`): asks a server whether it is writable before the proxy adopts it
//! as the primary, and again every `verify_interval` while it is current. A read-only node
//! (`read_only=ON`, or `super_read_only=ON` on MySQL) is never the primary, whatever Consul says:
//! this is what stops writes to a demoted node when the failover tool demoted it but Consul has
//! not caught up yet.
//!
//! MariaDB has no `super_read_only` (error 1193 "Unknown system variable"); MySQL has both.
//! Only `SELECT`s are sent, as the monitor user, over a fresh connection with a timeout.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use crate::config::FenceConfig;
use crate::primary::Backend;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Writable,
    /// Read-only, and which variable says so.
    ReadOnly(String),
    /// Could not tell (unreachable, auth failure, timeout): the reason.
    Unknown(String),
}

/// MariaDB's answer to `SELECT @@super_read_only`.
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

/// Checks whether `backend` accepts writes, within `timeout`.
pub async fn check(backend: &Backend, fence: &FenceConfig, timeout: Duration) -> Verdict {
    match tokio::time::timeout(timeout, ask(backend, fence)).await {
        Ok(verdict) => verdict,
        Err(_) => Verdict::Unknown(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn ask(backend: &Backend, fence: &FenceConfig) -> Verdict {
    let opts = OptsBuilder::default()
        .ip_or_hostname(backend.addr.ip().to_string())
        .tcp_port(backend.addr.port())
        .user(Some(fence.user.clone()))
        .pass(Some(fence.password.expose().to_owned()))
        .prefer_socket(false);
    let mut conn = match Conn::new(opts).await {
        Ok(conn) => conn,
        Err(e) => return Verdict::Unknown(format!("cannot connect as {}: {e}", fence.user)),
    };
    let verdict = read_only_state(&mut conn).await;
    // The verdict is known; a failed goodbye changes nothing.
    let _ = conn.disconnect().await;
    verdict
}

async fn read_only_state(conn: &mut Conn) -> Verdict {
    match conn
        .query_first::<i64, _>("SELECT @@global.read_only")
        .await
    {
        Ok(Some(0)) => {}
        Ok(Some(_)) => return Verdict::ReadOnly("read_only=ON".into()),
        Ok(None) => return Verdict::Unknown("SELECT @@global.read_only returned no row".into()),
        Err(e) => return Verdict::Unknown(format!("SELECT @@global.read_only failed: {e}")),
    }
    match conn
        .query_first::<i64, _>("SELECT @@global.super_read_only")
        .await
    {
        Ok(Some(0)) | Ok(None) => Verdict::Writable,
        Ok(Some(_)) => Verdict::ReadOnly("super_read_only=ON".into()),
        Err(mysql_async::Error::Server(e)) if e.code == ER_UNKNOWN_SYSTEM_VARIABLE => {
            Verdict::Writable // MariaDB: no super_read_only
        }
        Err(e) => Verdict::Unknown(format!("SELECT @@global.super_read_only failed: {e}")),
    }
}
