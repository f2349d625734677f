//! The proxy's refusal as a raw client sees it: the MySQL ERR packet it sends instead of a
//! server greeting (no primary, hold timeout ran out, `max_held`, a hung or read-only server),
//! then the close.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long [`refused_message`] waits for the whole answer.
const T: Duration = Duration::from_secs(30);

/// (code, message) of a MySQL ERR packet, if `bytes` is one.
pub fn err_packet(bytes: &[u8]) -> Option<(u16, String)> {
    (bytes.len() > 7 && bytes[4] == 0xFF).then(|| {
        (
            u16::from_le_bytes([bytes[5], bytes[6]]),
            String::from_utf8_lossy(&bytes[7..]).into_owned(),
        )
    })
}

/// Parses a pre-handshake ERR packet strictly (the length header must match the payload):
/// (sequence id, code, message). Panics if `packet` is anything else.
pub fn parse_err(packet: &[u8]) -> (u8, u16, String) {
    assert!(packet.len() > 7, "short packet {packet:?}");
    let len = u32::from_le_bytes([packet[0], packet[1], packet[2], 0]) as usize;
    assert_eq!(len, packet.len() - 4, "length header matches payload");
    assert_eq!(packet[4], 0xFF, "ERR marker");
    let (code, message) = err_packet(packet).expect("ERR packet");
    (packet[3], code, message)
}

/// Connects to `addr` (the proxy) and reads its whole answer (up to the close) within `limit`;
/// panics unless that answer came in time and is an ERR packet. Returns (code, message).
pub async fn refused_within(addr: SocketAddr, limit: Duration) -> (u16, String) {
    let mut sock = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut buf = Vec::new();
    tokio::time::timeout(limit, sock.read_to_end(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no complete answer from {addr} within {limit:?}"))
        .unwrap_or_else(|e| panic!("reading the answer from {addr}: {e}"));
    err_packet(&buf).unwrap_or_else(|| panic!("expected an ERR packet, got {buf:?}"))
}

/// The text of the ERR packet a new client of `addr` (the proxy) is refused with (30 s bound).
pub async fn refused_message(addr: SocketAddr) -> String {
    refused_within(addr, T).await.1
}
