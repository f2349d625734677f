//! The four BPF maps the programs share with user space, and their byte layouts — the one
//! place both sides take their offsets from, so the programs and the proxy cannot disagree.
//!
//! ```text
//!  routes   (hash, 32-byte key → 40-byte value), written by user space, read by the program
//!    key   @0  u64  netns cookie of the proxy's network namespace
//!          @8  u32  address family (AF_INET / AF_INET6)
//!          @12 u32  port, network byte order in the low 16 bits (what `bpf_sock_addr` holds)
//!          @16 [16] address bytes (IPv4: 4 bytes, then zeros)
//!    value @0  [24] target endpoint: family, port, address, laid out as key @8..@32
//!          @24 u64  route generation (user space bumps it on every change)
//!          @32 u32  flags: bit 0 = rewrite (a target is set)
//!          @36 u32  zero
//!  cookies  (LRU hash, u64 socket cookie → 32-byte value), written by the program
//!    value = the first 32 bytes of the route value: target endpoint + generation
//!  refusals (hash, 24-byte target endpoint → u64), written by the watch program when a
//!    redirected connect to that target failed (value: the failed socket's cookie), read by
//!    the connect programs, deleted by user space when the target accepts again
//!  counters (array of 5 × u64), atomically incremented by the programs
//!    [0] redirected and recorded, [1] route matched without a target, [2] redirected but
//!        the cookie could not be recorded, [3] redirected connects that failed (watch),
//!        [4] connects left to the proxy because their target had refused one
//! ```
//!
//! Ports and addresses are kept exactly as the kernel's `bpf_sock_addr` presents them (bytes
//! in network order, loaded into a register natively), so the program copies them without a
//! byte swap. Integers are in the host's byte order, as the program stores them.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// `BPF_MAP_TYPE_HASH`.
pub(crate) const MAP_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub(crate) const MAP_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub(crate) const MAP_LRU_HASH: u32 = 9;
/// `BPF_F_NO_PREALLOC`: an updated route's old value is freed only after an RCU grace period,
/// so a program that looked it up a moment before still reads a whole (old) value. A
/// preallocated hash map recycles the element at once and a reader could see a torn target.
pub(crate) const F_NO_PREALLOC: u32 = 1;

pub(crate) const AF_INET: u32 = libc::AF_INET as u32;
pub(crate) const AF_INET6: u32 = libc::AF_INET6 as u32;

/// Routes: one key per exact destination address (a wildcard listen address is expanded by
/// user space). A proxy has a handful of routes; 1024 keys cover wildcards on busy hosts.
pub(crate) const ROUTES_MAX: u32 = 1024;
/// Redirected sockets remembered at once. LRU: when full, the least recently touched cookie
/// goes, so a full map never refuses a connect; [`FastPath::sweep`](super::FastPath::sweep)
/// removes cookies of closed sockets so that live ones are not the ones evicted.
pub(crate) const COOKIES_MAX: u32 = 65536;
pub(crate) const COUNTERS: u32 = 5;
/// Targets marked as refusing at once: one per route target, like the routes.
pub(crate) const REFUSALS_MAX: u32 = ROUTES_MAX;

pub(crate) const ENDPOINT_LEN: usize = 24;
pub(crate) const KEY_LEN: usize = 32;
pub(crate) const VALUE_LEN: usize = 40;
pub(crate) const COOKIE_VALUE_LEN: usize = 32;

/// Key offsets.
pub(crate) const KEY_NETNS: i16 = 0;
pub(crate) const KEY_FAMILY: i16 = 8;
pub(crate) const KEY_PORT: i16 = 12;
pub(crate) const KEY_ADDR: i16 = 16;
/// Value offsets.
pub(crate) const VALUE_PORT: i16 = 4;
pub(crate) const VALUE_ADDR: i16 = 8;
pub(crate) const VALUE_FLAGS: i16 = 32;
/// Flag bit: rewrite the destination to the value's target.
pub(crate) const FLAG_REWRITE: i32 = 1;

/// Counter indexes.
pub(crate) const COUNT_REDIRECTED: i32 = 0;
pub(crate) const COUNT_PASSED: i32 = 1;
pub(crate) const COUNT_UNRECORDED: i32 = 2;
pub(crate) const COUNT_FAILED: i32 = 3;
pub(crate) const COUNT_DETOURED: i32 = 4;

/// An address family, port and address in the kernel's `bpf_sock_addr` representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Endpoint {
    family: u32,
    /// The port's two bytes in network order, as they sit in `sin_port`.
    port: [u8; 2],
    addr: [u8; 16],
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr) -> Endpoint {
        let mut bytes = [0u8; 16];
        let family = match addr.ip() {
            IpAddr::V4(ip) => {
                bytes[..4].copy_from_slice(&ip.octets());
                AF_INET
            }
            IpAddr::V6(ip) => {
                bytes.copy_from_slice(&ip.octets());
                AF_INET6
            }
        };
        Endpoint {
            family,
            port: addr.port().to_be_bytes(),
            addr: bytes,
        }
    }

    fn encode(&self) -> [u8; ENDPOINT_LEN] {
        let mut out = [0u8; ENDPOINT_LEN];
        out[0..4].copy_from_slice(&self.family.to_ne_bytes());
        // The program loads `user_port` (a 16-bit field, zero-extended) and stores it as a
        // 32-bit word; on any host that word's value is the two network-order bytes read
        // natively.
        let port = u32::from(u16::from_ne_bytes(self.port));
        out[4..8].copy_from_slice(&port.to_ne_bytes());
        out[8..24].copy_from_slice(&self.addr);
        out
    }

    fn decode(bytes: &[u8]) -> Option<SocketAddr> {
        let family = u32::from_ne_bytes(bytes.get(0..4)?.try_into().ok()?);
        let port_word = u32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?);
        let port = u16::from_be_bytes(u16::try_from(port_word).ok()?.to_ne_bytes());
        let addr: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
        match family {
            AF_INET => Some(SocketAddr::new(
                Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into(),
                port,
            )),
            AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(addr),
                port,
                0,
                0,
            ))),
            _ => None,
        }
    }
}

/// The routes map key for a connect to `dest` from network namespace `netns`.
pub(crate) fn route_key(netns: u64, dest: SocketAddr) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[0..8].copy_from_slice(&netns.to_ne_bytes());
    key[8..32].copy_from_slice(&Endpoint::new(dest).encode());
    key
}

/// The refusals map keys for `target`: its endpoint as a route value holds it, and for an
/// IPv4 target also the IPv4-mapped form a dual-stack route's value holds.
pub(crate) fn refusal_keys(target: SocketAddr) -> Vec<[u8; ENDPOINT_LEN]> {
    let mut keys = vec![Endpoint::new(target).encode()];
    if let Some(mapped) = v4_mapped(target) {
        keys.push(Endpoint::new(mapped).encode());
    }
    keys
}

/// The target a refusals map key names, with an IPv4-mapped one unmapped (`None` for bytes
/// no program wrote).
pub(crate) fn decode_refusal_key(bytes: &[u8]) -> Option<SocketAddr> {
    let addr = Endpoint::decode(bytes)?;
    Some(match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    })
}

/// The routes map value: rewrite to `target`, or (None) let the connect through unchanged.
pub(crate) fn route_value(target: Option<SocketAddr>, generation: u64) -> [u8; VALUE_LEN] {
    let mut value = [0u8; VALUE_LEN];
    if let Some(target) = target {
        value[0..24].copy_from_slice(&Endpoint::new(target).encode());
        value[32..36].copy_from_slice(&(FLAG_REWRITE as u32).to_ne_bytes());
    }
    value[24..32].copy_from_slice(&generation.to_ne_bytes());
    value
}

/// What the program recorded for one redirected socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub target: SocketAddr,
    pub generation: u64,
}

/// Decodes a cookies map value; `None` for bytes the program cannot have written.
pub(crate) fn decode_cookie_value(bytes: &[u8]) -> Option<Recorded> {
    let target = Endpoint::decode(bytes.get(0..ENDPOINT_LEN)?)?;
    let generation = u64::from_ne_bytes(bytes.get(24..32)?.try_into().ok()?);
    Some(Recorded { target, generation })
}

/// Decodes the target of a routes map value (tests and `describe` cross-checks).
#[cfg(test)]
pub(crate) fn decode_route_value(bytes: &[u8]) -> Option<(Option<SocketAddr>, u64)> {
    let flags = u32::from_ne_bytes(bytes.get(32..36)?.try_into().ok()?);
    let generation = u64::from_ne_bytes(bytes.get(24..32)?.try_into().ok()?);
    let target = if flags & FLAG_REWRITE as u32 != 0 {
        Some(Endpoint::decode(bytes.get(0..ENDPOINT_LEN)?)?)
    } else {
        None
    };
    Some((target, generation))
}

/// The IPv4-mapped IPv6 form of an IPv4 address (what a dual-stack `AF_INET6` socket passes
/// to connect() for an IPv4 destination).
pub(crate) fn v4_mapped(addr: SocketAddr) -> Option<SocketAddr> {
    match addr {
        SocketAddr::V4(v4) => Some(SocketAddr::V6(SocketAddrV6::new(
            v4.ip().to_ipv6_mapped(),
            v4.port(),
            0,
            0,
        ))),
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_and_address_bytes_are_in_network_order() {
        let key = route_key(7, "127.0.0.1:3306".parse().unwrap());
        assert_eq!(&key[0..8], &7u64.to_ne_bytes());
        assert_eq!(&key[8..12], &AF_INET.to_ne_bytes());
        // 3306 = 0x0cea: `sin_port` holds 0c ea; on a little-endian host the 32-bit word the
        // program stores is 0x0000ea0c, i.e. bytes 0c ea 00 00.
        if cfg!(target_endian = "little") {
            assert_eq!(&key[12..16], &[0x0c, 0xea, 0, 0]);
        }
        assert_eq!(&key[16..20], &[127, 0, 0, 1]);
        assert_eq!(&key[20..32], &[0; 12]);
    }

    #[test]
    fn values_round_trip() {
        for target in ["10.1.2.3:3307", "[2001:db8::5]:3306", "[::ffff:10.0.0.1]:1"] {
            let target: SocketAddr = target.parse().unwrap();
            let value = route_value(Some(target), 42);
            assert_eq!(decode_route_value(&value), Some((Some(target), 42)));
            // The cookie value is the route value's first 32 bytes, as the program passes it.
            assert_eq!(
                decode_cookie_value(&value[..COOKIE_VALUE_LEN]),
                Some(Recorded {
                    target,
                    generation: 42
                })
            );
        }
        assert_eq!(decode_route_value(&route_value(None, 3)), Some((None, 3)));
    }

    #[test]
    fn a_refusal_key_is_the_route_values_target_bytes() {
        let target: SocketAddr = "10.1.2.3:3307".parse().unwrap();
        let keys = refusal_keys(target);
        // What the watch program writes: the cookie value's (= route value's) first 24 bytes.
        assert_eq!(keys[0], route_value(Some(target), 9)[..ENDPOINT_LEN]);
        let mapped = v4_mapped(target).unwrap();
        assert_eq!(keys[1], route_value(Some(mapped), 9)[..ENDPOINT_LEN]);
        // Both read back as the IPv4 target.
        assert_eq!(decode_refusal_key(&keys[0]), Some(target));
        assert_eq!(decode_refusal_key(&keys[1]), Some(target));
        let v6: SocketAddr = "[2001:db8::5]:3306".parse().unwrap();
        assert_eq!(refusal_keys(v6).len(), 1);
        assert_eq!(decode_refusal_key(&refusal_keys(v6)[0]), Some(v6));
        assert_eq!(decode_refusal_key(&[0xff; 24]), None);
    }

    #[test]
    fn garbage_decodes_to_none() {
        assert_eq!(decode_cookie_value(&[0xff; 32]), None);
        assert_eq!(decode_cookie_value(&[0; 3]), None);
    }
}
