//! The only MySQL protocol bytes the proxy ever writes: an ERR packet sent *instead of* the
//! server greeting, when a client cannot be given a primary.
//!
//! A MySQL server speaks first; a client that reads `0xFF` as the first payload byte of packet 0
//! reports the error code and message to the application (`ERROR … 1105 - consul-mysql-proxy: …` in the
//! `mysql` CLI, `Error::Server` in mysql_async). The proxy never parses or rewrites relayed traffic: this
//! packet goes only to clients that were never connected to a backend.
//!
//! Layout: 3-byte little-endian payload length, sequence id 0, then `0xFF`, error code (u16 LE)
//! and the message. No `#SQLSTATE` marker: before the handshake no capabilities are agreed, so a
//! server sends the pre-4.1 form (as MariaDB does for "Too many connections"), and clients that
//! follow the capability rules (mysql_async) would otherwise show `#HY000` inside the message.
//! Clients report SQLSTATE HY000 for it.

/// Why a client gets an ERR packet instead of a backend. The label is used in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrReason {
    /// No primary was known for the whole hold time.
    NoPrimary,
    /// A replica route had no healthy replica (and no fallback primary) for the whole hold time.
    NoReplica,
    /// A primary was known but connecting to it failed for the whole hold time.
    BackendUnreachable,
    /// Too many clients are already held waiting for a primary.
    TooManyHeld,
    /// The proxy is shutting down.
    ShuttingDown,
}

impl ErrReason {
    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            ErrReason::NoPrimary => "no_primary",
            ErrReason::NoReplica => "no_replica",
            ErrReason::BackendUnreachable => "backend_unreachable",
            ErrReason::TooManyHeld => "too_many_held",
            ErrReason::ShuttingDown => "shutting_down",
        }
    }

    /// MySQL error code. It must be a *server* code (below 2000): libmariadb (the `mysql` CLI,
    /// and every driver built on it) rejects a client-range code such as 2003 arriving from a
    /// server as "Received malformed packet" and hides our message. So: 1105 (ER_UNKNOWN_ERROR)
    /// for "no primary" / "primary unreachable", and the server's own 1040 ("Too many
    /// connections") for overload.
    pub fn code(self) -> u16 {
        match self {
            ErrReason::TooManyHeld => 1040,
            _ => 1105,
        }
    }
}

/// Longest message we send; keeps the packet far below any client's limits.
const MAX_MESSAGE: usize = 1024;

/// Encodes an ERR packet with sequence id 0 for `reason` and `message`.
pub fn err_packet(reason: ErrReason, message: &str) -> Vec<u8> {
    let mut message = message.as_bytes();
    if message.len() > MAX_MESSAGE {
        message = &message[..MAX_MESSAGE];
    }
    let payload_len = 1 + 2 + message.len();
    let mut packet = Vec::with_capacity(4 + payload_len);
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes();
    packet.extend_from_slice(&len[..3]);
    packet.push(0); // sequence id
    packet.push(0xFF);
    packet.extend_from_slice(&reason.code().to_le_bytes());
    packet.extend_from_slice(message);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_protocol() {
        let p = err_packet(ErrReason::NoPrimary, "no primary");
        assert_eq!(&p[..4], &[13, 0, 0, 0]);
        assert_eq!(p[4], 0xFF);
        assert_eq!(u16::from_le_bytes([p[5], p[6]]), 1105);
        assert_eq!(&p[7..], b"no primary");
    }

    #[test]
    fn overload_uses_1040_and_long_messages_are_capped() {
        let p = err_packet(ErrReason::TooManyHeld, &"x".repeat(5000));
        assert_eq!(u16::from_le_bytes([p[5], p[6]]), 1040);
        let len = u32::from_le_bytes([p[0], p[1], p[2], 0]) as usize;
        assert_eq!(len, p.len() - 4);
        assert_eq!(len, 3 + MAX_MESSAGE);
    }
}
