//! How a relayed connection leaves the primary it is bound to.
//!
//! Every [`Primary`] snapshot carries two tokens: `leave` ("close now") and its child
//! `leave_idle` ("close at the first idle moment"). A child is cancelled with its parent, so a
//! connection waits on `leave_idle` alone while it relays — one waiter, whatever the policy:
//!
//! ```text
//!  relay ─────────────────────────────────────────────▶ ends on its own (EOF, error)
//!    │ leave_idle cancelled
//!    ├─ leave cancelled too (close, drain deadline, shutdown) ───────────▶ Closed
//!    └─ draining: the relay goes on; its tap ends it at the first idle moment ─▶ left idle
//!                  (re-checked every TICK for the quiet-time rules)
//!                  └─ leave cancelled (drain_grace ran out) ──────────────────▶ Closed
//! ```
//!
//! The failover policy ([`crate::control::failover`]) decides which token it cancels and when.

use std::pin::pin;
use std::time::Duration;

use tokio::net::TcpStream;

use super::idle::{IdleTap, Observer};
use super::relay::{self, RelayError, RelayStats};
use crate::config::RelayKind;
use crate::control::primary::Primary;

/// How often a draining connection re-checks the quiet-time rules when no bytes move.
const TICK: Duration = Duration::from_millis(20);

/// How the relay of a bound connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The relay ended: both sides closed, a socket failed, or — `left_idle` in the stats — it
    /// was ended at an idle moment of a drain.
    Relay(Result<RelayStats, RelayError>),
    /// Closed by the proxy without waiting for an idle moment (`leave` was cancelled).
    Closed,
}

/// Relays `client` ⇄ `backend` until the relay ends or the connection must leave `bound`.
/// `observer` (only with `on_failover = idle`) watches the bytes to find idle moments.
pub async fn relay(
    kind: RelayKind,
    client: &mut TcpStream,
    backend: &mut TcpStream,
    bound: &Primary,
    observer: Option<&mut Observer>,
) -> Ended {
    let judging = observer.is_some();
    let mut tap = IdleTap::new(observer, &bound.leave_idle);
    let mut relaying = pin!(relay::relay_tapped(kind, client, backend, &mut tap));
    tokio::select! {
        result = &mut relaying => return Ended::Relay(result),
        () = bound.leave_idle.cancelled() => {}
    }
    if bound.leave.is_cancelled() {
        return Ended::Closed;
    }
    if !judging {
        // No observer (made under another policy before a reload): nothing to judge, so the
        // deadline closes it.
        return tokio::select! {
            result = &mut relaying => Ended::Relay(result),
            () = bound.leave.cancelled() => Ended::Closed,
        };
    }
    // Draining. Boxed: only a draining connection pays for a timer.
    let mut tick = Box::pin(tokio::time::sleep(TICK));
    loop {
        tokio::select! {
            result = &mut relaying => return Ended::Relay(result),
            () = bound.leave.cancelled() => return Ended::Closed,
            // Wakes the relay so that its tap looks at the clock again.
            () = &mut tick => tick.as_mut().reset(tokio::time::Instant::now() + TICK),
        }
    }
}
