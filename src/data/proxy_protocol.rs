//! PROXY protocol v2 toward the server (`proxy_protocol = "v2"`): a binary header written to
//! the backend before the client's first byte, carrying the client's source address and the
//! proxy's destination address, so the database sees the application, not the proxy — for
//! grants by host, audit logs and the processlist. MariaDB reads it with the client's first
//! packet once `proxy_protocol_networks` admits the proxy's address.
//!
//! Layout (the PROXY protocol specification, version 2): the 12-byte signature, version 2 with
//! command PROXY (`0x21`), the family and transport (`0x11` TCP over IPv4, `0x21` TCP over
//! IPv6), the length of what follows (big endian), then source address, destination address,
//! source port, destination port. A mix of IPv4 and IPv6 is sent as IPv6 (IPv4-mapped).

use std::net::{IpAddr, SocketAddr};

const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;

/// The v2 header for a client at `source` that connected to the proxy at `destination`.
pub fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut header = Vec::with_capacity(16 + 36);
    header.extend_from_slice(&SIGNATURE);
    header.push(V2_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            header.push(TCP_OVER_IPV4);
            header.extend_from_slice(&12u16.to_be_bytes());
            header.extend_from_slice(&src.octets());
            header.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            header.push(TCP_OVER_IPV6);
            header.extend_from_slice(&36u16.to_be_bytes());
            header.extend_from_slice(&v6(src).octets());
            header.extend_from_slice(&v6(dst).octets());
        }
    }
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_bytes() {
        let h = v2_header(
            "192.168.0.1:56324".parse().unwrap(),
            "192.168.0.11:3306".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 12);
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(&h[12..16], &[0x21, 0x11, 0x00, 0x0C]);
        assert_eq!(&h[16..20], &[192, 168, 0, 1]);
        assert_eq!(&h[20..24], &[192, 168, 0, 11]);
        assert_eq!(&h[24..26], &56324u16.to_be_bytes());
        assert_eq!(&h[26..28], &3306u16.to_be_bytes());
    }

    #[test]
    fn ipv6_and_mixed_families() {
        let h = v2_header("[::1]:5000".parse().unwrap(), "[::1]:3306".parse().unwrap());
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        let mixed = v2_header(
            "10.0.0.1:5000".parse().unwrap(),
            "[::1]:3306".parse().unwrap(),
        );
        assert_eq!(mixed[13], 0x21);
        assert_eq!(
            &mixed[16..32],
            &"10.0.0.1"
                .parse::<std::net::Ipv4Addr>()
                .unwrap()
                .to_ipv6_mapped()
                .octets()
        );
    }
}
