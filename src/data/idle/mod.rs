//! The idle detector of `on_failover = idle`: when a connection to a replaced primary can be
//! closed without cutting a statement, a reply or a transaction.
//!
//! ```text
//!  relay (pump / copy) ──Tap::relayed(from, bytes)──▶ Observer ─▶ framing (per direction)
//!        ▲                                               │        └▶ conversation (state)
//!        └───── Tap::leave_now() ◀── IdleTap: draining? ─┘ + quiet time, last speaker
//! ```
//!
//! The relay stays byte for byte: the [`Observer`] is shown each chunk after it was written to
//! the other socket and never changes, holds or delays one. It follows MySQL packet framing
//! both ways ([`framing`]) and the protocol's turn-taking ([`conversation`]): handshake
//! (capabilities: TLS, compression, `DEPRECATE_EOF`), then per command the shape of the reply,
//! and the `SERVER_STATUS_IN_TRANS` bit of the last OK/EOF.
//!
//! A connection is at an **idle moment** when nothing read is left unwritten (the relay checks
//! that) and:
//! - readable protocol: the server answered the last command completely, the client has sent
//!   nothing since, and no transaction is open — at once, or, after a *prelude* (`COM_PING`,
//!   `COM_STMT_PREPARE`, the handshake: commands a client sends right before the statement they
//!   are for), once both directions have been quiet for [`QUIET`];
//! - opaque (TLS, compression, anything not understood): both directions quiet for [`QUIET`]
//!   and the last bytes came from the server.
//!
//! [`IdleTap`] asks that only once the primary's `leave_idle` token is cancelled (the failover
//! policy starts a drain); until then it only feeds the observer.
//!
//! Memory: an [`Observer`] is 76 bytes on the heap (x86_64), allocated only for connections made
//! while `on_failover = idle` is configured. Connections without one (made under another policy
//! before a reload) cannot be judged and are closed at the drain's deadline.

pub mod conversation;
pub mod framing;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::data::relay::{Side, Tap};
pub use conversation::Activity;
use conversation::Conversation;

/// How long both directions must be silent before a prelude, or an opaque connection, counts
/// as idle. A client's think time between a validation ping and its statement is microseconds,
/// but a client stalled by a GC pause or a starved CPU can take much longer: on a loaded 2-core
/// test machine 100 ms let a close land between a ping and its statement, 500 ms still did
/// under an artificial overload. A second is still short against a drain — it only delays
/// connections that were active right when the drain began — and for TLS it is also the
/// longest pause inside a reply that is never cut.
pub const QUIET: Duration = Duration::from_millis(1000);

/// One connection's observed protocol position and last activity.
#[derive(Debug, Clone)]
pub struct Observer {
    conversation: Conversation,
    /// When bytes last moved, in [`clock_ms`] milliseconds.
    last_ms: u32,
    /// Which side sent the last bytes.
    last_from: Side,
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new()
    }
}

impl Observer {
    /// An observer for a connection whose first bytes will be the server's greeting.
    pub fn new() -> Observer {
        Observer {
            conversation: Conversation::new(),
            last_ms: clock_ms(),
            last_from: Side::Backend,
        }
    }

    /// `bytes` from `from` were relayed.
    pub fn relayed(&mut self, from: Side, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.conversation.feed(from, bytes);
        self.last_ms = clock_ms();
        self.last_from = from;
    }

    /// The protocol position, as far as it can be read.
    pub fn activity(&self) -> Activity {
        self.conversation.activity()
    }

    /// Whether the connection is at an idle moment at `now_ms` (see the module doc).
    pub fn idle_at(&self, now_ms: u32) -> bool {
        let quiet = now_ms.wrapping_sub(self.last_ms) >= QUIET.as_millis() as u32;
        match self.activity() {
            Activity::Busy => false,
            Activity::Idle => true,
            Activity::IdleWhenQuiet => quiet,
            Activity::Opaque => quiet && self.last_from == Side::Backend,
        }
    }

    /// False once the protocol could not be followed any more (TLS, compression, …).
    pub fn readable(&self) -> bool {
        self.activity() != Activity::Opaque
    }
}

/// Milliseconds on a process-wide monotonic clock (wraps after 49 days; only differences of
/// recent instants are compared).
pub fn clock_ms() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u32
}

/// The relay's tap for a connection bound to a primary: feeds the observer, and once `drain`
/// is cancelled ends the relay at the first idle moment.
pub struct IdleTap<'a> {
    observer: Option<&'a mut Observer>,
    drain: &'a CancellationToken,
}

impl<'a> IdleTap<'a> {
    pub fn new(observer: Option<&'a mut Observer>, drain: &'a CancellationToken) -> Self {
        IdleTap { observer, drain }
    }
}

impl Tap for IdleTap<'_> {
    #[inline]
    fn relayed(&mut self, from: Side, bytes: &[u8]) {
        if let Some(observer) = self.observer.as_deref_mut() {
            observer.relayed(from, bytes);
        }
    }

    fn leave_now(&mut self) -> bool {
        let Some(observer) = self.observer.as_deref() else {
            return false;
        };
        // Cheapest test first: most rounds end with a statement in flight.
        observer.activity() != Activity::Busy
            && self.drain.is_cancelled()
            && observer.idle_at(clock_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observer_is_a_few_dozen_bytes() {
        let size = std::mem::size_of::<Observer>();
        eprintln!("Observer: {size} bytes");
        assert!(size <= 96, "Observer grew to {size} bytes");
    }

    #[test]
    fn opaque_is_idle_only_when_quiet_after_the_server() {
        let mut o = Observer::new();
        // Not protocol version 10: not a MySQL greeting we can read.
        o.relayed(Side::Backend, &[1, 0, 0, 0, 0xAB]);
        assert_eq!(o.activity(), Activity::Opaque);
        let now = o.last_ms;
        assert!(!o.idle_at(now), "not quiet yet");
        let quiet = QUIET.as_millis() as u32;
        assert!(!o.idle_at(now + quiet - 1), "not quiet long enough");
        assert!(o.idle_at(now + quiet), "quiet after the server spoke");
        o.relayed(Side::Client, b"tls record");
        let now = o.last_ms;
        assert!(
            !o.idle_at(now + 1000),
            "the client spoke last: a request in flight"
        );
    }

    #[test]
    fn tap_judges_only_while_draining() {
        let drain = CancellationToken::new();
        let mut o = Observer::new();
        o.relayed(Side::Backend, &[1, 0, 0, 0, 0xAB]);
        o.last_ms = clock_ms().wrapping_sub(QUIET.as_millis() as u32 + 1);
        let mut tap = IdleTap::new(Some(&mut o), &drain);
        assert!(!tap.leave_now());
        drain.cancel();
        assert!(tap.leave_now());
        let mut blind = IdleTap::new(None, &drain);
        assert!(!blind.leave_now(), "no observer: wait for the deadline");
    }
}
