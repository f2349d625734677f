//! How one route's listen address becomes the exact destinations the program matches.
//!
//! The program compares a connect's destination with map keys exactly; it has no notion of
//! "any address". So user space expands:
//!
//! - a wildcard listen address (`0.0.0.0:p` / `[::]:p`) into the wildcard itself (a
//!   connect to `0.0.0.0` reaches the local host) and every address of that family assigned
//!   to an interface when the route is set (127.0.0.1, the host's own addresses). Other
//!   loopback addresses (127.0.0.2…) reach a `0.0.0.0` listener too but are not redirected:
//!   listen on the exact address the applications use.
//! - every IPv4 destination also into its IPv4-mapped IPv6 form (`[::ffff:a.b.c.d]:p`), with
//!   the target mapped the same way: a dual-stack application connecting from an `AF_INET6`
//!   socket runs the connect6 hook, not connect4.
//!
//! An `[::]` listener that also accepts IPv4 covers IPv4 clients only if `0.0.0.0:p` is routed
//! too.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

use super::maps::v4_mapped;

/// The (destination, target) pairs for a route; `host` are the interface addresses.
pub(crate) fn destinations(
    listen: SocketAddr,
    target: Option<SocketAddr>,
    host: &[IpAddr],
) -> Vec<(SocketAddr, Option<SocketAddr>)> {
    let mut ips = vec![listen.ip()];
    if listen.ip().is_unspecified() {
        ips.extend(
            host.iter()
                .filter(|ip| ip.is_ipv4() == listen.is_ipv4() && !ip.is_unspecified()),
        );
    }
    let mut out = Vec::new();
    for ip in ips {
        let dest = SocketAddr::new(ip, listen.port());
        out.push((dest, target));
        if let Some(mapped) = v4_mapped(dest) {
            out.push((mapped, target.and_then(v4_mapped)));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_exact_ipv4_address_is_itself_and_its_mapped_form() {
        let d = destinations(addr("127.0.0.1:3306"), Some(addr("10.0.0.5:3307")), &[]);
        assert_eq!(
            d,
            vec![
                (addr("127.0.0.1:3306"), Some(addr("10.0.0.5:3307"))),
                (
                    addr("[::ffff:127.0.0.1]:3306"),
                    Some(addr("[::ffff:10.0.0.5]:3307"))
                ),
            ]
        );
    }

    #[test]
    fn wildcards_expand_to_the_host_addresses_of_their_family() {
        let host: Vec<IpAddr> = ["127.0.0.1", "192.0.2.2", "::1", "2001:db8::2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let v4: Vec<SocketAddr> = destinations(addr("0.0.0.0:6033"), None, &host)
            .into_iter()
            .map(|(d, t)| {
                assert_eq!(t, None);
                d
            })
            .filter(SocketAddr::is_ipv4)
            .collect();
        assert_eq!(
            v4,
            vec![
                addr("0.0.0.0:6033"),
                addr("127.0.0.1:6033"),
                addr("192.0.2.2:6033")
            ]
        );
        let v6: Vec<SocketAddr> = destinations(addr("[::]:6033"), Some(addr("[::1]:1")), &host)
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(
            v6,
            vec![
                addr("[::]:6033"),
                addr("[::1]:6033"),
                addr("[2001:db8::2]:6033")
            ]
        );
    }
}
