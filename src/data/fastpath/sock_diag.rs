//! TCP sockets as the kernel lists them (`NETLINK_SOCK_DIAG`, the interface `ss` uses), and
//! destroying one (`SOCK_DESTROY`, what `ss -K` does).
//!
//! - [`SockDiag::dump`]: an `inet_diag` dump (`SOCK_DIAG_BY_FAMILY` with `NLM_F_DUMP`) of one
//!   address family's TCP sockets in the given states, each with its addresses and its
//!   cookie (`idiag_cookie`, the number `bpf_get_socket_cookie` returned for it).
//! - [`SockDiag::destroy`]: `SOCK_DESTROY` for one socket, named by the exact id the dump
//!   gave (addresses, ports, interface and cookie; the kernel refuses a stale cookie). The
//!   kernel aborts it as `tcp_abort` does: the peer gets a RST, a blocked reader or writer of
//!   the local socket wakes with ECONNABORTED. Needs CAP_NET_ADMIN and a kernel built with
//!   `CONFIG_INET_DIAG_DESTROY` (else EOPNOTSUPP; [`SockDiag::probe_destroy`] asks which).
//!
//! Only the caller's network namespace is visible. Everything the kernel sends is parsed
//! with bounds checks; a malformed reply is an `InvalidData` error, never a panic.
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_sockid`.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, id.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg`: family, state, timer, retrans, id, then 5 × u32.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;

/// TCP states (`include/net/tcp_states.h`) as `idiag_states` bits.
pub(crate) const fn state_bit(state: u8) -> u32 {
    1 << state
}
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;
/// Every state of a client socket that still has a connection (or is making one): what a
/// failover must close. Not LISTEN (servers), not TIME_WAIT/CLOSE (already over).
pub(crate) const CONNECTED: u32 = state_bit(TCP_ESTABLISHED)
    | state_bit(TCP_SYN_SENT)
    | state_bit(TCP_FIN_WAIT1)
    | state_bit(TCP_FIN_WAIT2)
    | state_bit(TCP_CLOSE_WAIT)
    | state_bit(TCP_LAST_ACK)
    | state_bit(TCP_CLOSING);

/// Replies are read into this; a dump message batch never exceeds 32 KiB.
const RECV_BUF: usize = 64 * 1024;
/// The kernel answers at once; this only bounds a wait that cannot end otherwise.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// One TCP socket of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiagSocket {
    /// `AF_INET` or `AF_INET6` (a dual-stack socket talking IPv4 is `AF_INET6` with
    /// v4-mapped addresses).
    pub family: u8,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub cookie: u64,
    /// The raw `inet_diag_sockid`, sent back as is to destroy exactly this socket.
    id: [u8; SOCKID_LEN],
}

/// A netlink socket for inet_diag requests.
pub(crate) struct SockDiag {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl SockDiag {
    pub(crate) fn open() -> io::Result<SockDiag> {
        // socket2 creates it close-on-exec.
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::DGRAM,
            Some(Protocol::from(NETLINK_SOCK_DIAG)),
        )?;
        sock.set_read_timeout(Some(RECV_TIMEOUT))?;
        Ok(SockDiag {
            sock,
            seq: 0,
            buf: vec![0u8; RECV_BUF],
        })
    }

    /// The TCP sockets of `family` (`AF_INET`/`AF_INET6`) in `states` (bits of
    /// [`state_bit`]).
    pub(crate) fn dump(&mut self, family: u8, states: u32) -> io::Result<Vec<DiagSocket>> {
        let seq = self.send(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            family,
            states,
            &[0; SOCKID_LEN],
        )?;
        let mut out = Vec::new();
        loop {
            let n = self.recv()?;
            let mut done = false;
            for msg in messages(&self.buf[..n]) {
                let (kind, msg_seq, payload) = msg?;
                if msg_seq != seq {
                    continue; // a late reply to an earlier, abandoned request
                }
                match kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => match error_code(payload)? {
                        0 => done = true,
                        errno => return Err(io::Error::from_raw_os_error(errno)),
                    },
                    SOCK_DIAG_BY_FAMILY => out.push(parse_msg(payload)?),
                    _ => {}
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Destroys `sock` (`SOCK_DESTROY`). ENOENT: it no longer exists (or its cookie no
    /// longer matches: ESTALE); EPERM: no CAP_NET_ADMIN; EOPNOTSUPP: the kernel cannot.
    pub(crate) fn destroy(&mut self, sock: &DiagSocket) -> io::Result<()> {
        self.exact(SOCK_DESTROY, sock.family, &sock.id)
    }

    /// Whether this kernel implements `SOCK_DESTROY` for TCP: destroys a socket that cannot
    /// exist (all-zero id), which is ENOENT when the operation exists and EOPNOTSUPP when not.
    pub(crate) fn probe_destroy(&mut self) -> io::Result<bool> {
        match self.exact(SOCK_DESTROY, libc::AF_INET as u8, &[0; SOCKID_LEN]) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
            // Found and destroyed a socket with an all-zero id: there is none to find.
            Ok(()) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// A request on one socket, acknowledged by an `NLMSG_ERROR` carrying 0 or -errno.
    fn exact(&mut self, kind: u16, family: u8, id: &[u8; SOCKID_LEN]) -> io::Result<()> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_ACK, family, u32::MAX, id)?;
        loop {
            let n = self.recv()?;
            for msg in messages(&self.buf[..n]) {
                let (kind, msg_seq, payload) = msg?;
                if msg_seq == seq && kind == NLMSG_ERROR {
                    return match error_code(payload)? {
                        0 => Ok(()),
                        errno => Err(io::Error::from_raw_os_error(errno)),
                    };
                }
            }
        }
    }

    fn send(
        &mut self,
        kind: u16,
        flags: u16,
        family: u8,
        states: u32,
        id: &[u8; SOCKID_LEN],
    ) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(NLMSG_HDR_LEN + REQ_LEN);
        msg.extend_from_slice(&((NLMSG_HDR_LEN + REQ_LEN) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // pid 0: the kernel fills in ours
        msg.push(family);
        msg.push(libc::IPPROTO_TCP as u8);
        msg.push(0); // idiag_ext: no extensions wanted
        msg.push(0);
        msg.extend_from_slice(&states.to_ne_bytes());
        msg.extend_from_slice(id);
        // An unconnected, unbound netlink socket sends to the kernel (port id 0).
        let sent = self.sock.send(&msg)?;
        if sent != msg.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(self.seq)
    }

    fn recv(&mut self) -> io::Result<usize> {
        let n = (&self.sock).read(&mut self.buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "netlink socket closed",
            ));
        }
        Ok(n)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"))
}

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| bad("truncated message"))
}

/// Splits a datagram into netlink messages: (type, seq, payload).
fn messages(mut buf: &[u8]) -> impl Iterator<Item = io::Result<(u16, u32, &[u8])>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDR_LEN {
            return None;
        }
        let parsed = (|| {
            let len = u32_at(buf, 0)? as usize;
            if len < NLMSG_HDR_LEN || len > buf.len() {
                return Err(bad("message length out of bounds"));
            }
            let kind = u16::from_ne_bytes([buf[4], buf[5]]);
            let seq = u32_at(buf, 8)?;
            Ok((kind, seq, len))
        })();
        match parsed {
            Ok((kind, seq, len)) => {
                let payload = &buf[NLMSG_HDR_LEN..len];
                // Messages are 4-byte aligned; the last one may end without padding.
                let next = len.next_multiple_of(4).min(buf.len());
                buf = &buf[next..];
                Some(Ok((kind, seq, payload)))
            }
            Err(e) => {
                buf = &[];
                Some(Err(e))
            }
        }
    })
}

/// The errno of an `NLMSG_ERROR` payload (0 for an acknowledgement).
fn error_code(payload: &[u8]) -> io::Result<i32> {
    let code = u32_at(payload, 0)? as i32;
    Ok(code.saturating_neg())
}

fn parse_msg(p: &[u8]) -> io::Result<DiagSocket> {
    if p.len() < MSG_LEN {
        return Err(bad("short inet_diag_msg"));
    }
    let family = p[0];
    let state = p[1];
    let id: [u8; SOCKID_LEN] = p[4..4 + SOCKID_LEN]
        .try_into()
        .map_err(|_| bad("short sockid"))?;
    let sport = u16::from_be_bytes([id[0], id[1]]);
    let dport = u16::from_be_bytes([id[2], id[3]]);
    let ip = |at: usize| -> io::Result<IpAddr> {
        let bytes: [u8; 16] = id[at..at + 16]
            .try_into()
            .map_err(|_| bad("short address"))?;
        match i32::from(family) {
            libc::AF_INET => Ok(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()),
            libc::AF_INET6 => Ok(Ipv6Addr::from(bytes).into()),
            _ => Err(bad("unknown address family")),
        }
    };
    let addr = |ip: IpAddr, port| match ip {
        IpAddr::V4(_) => SocketAddr::new(ip, port),
        // Scope ids are not part of the match: the key and the target carry none either.
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
    };
    // idiag_cookie is two u32 words, low word first (sock_diag_save_cookie).
    let cookie_lo = u64::from(u32_at(&id, 40)?);
    let cookie_hi = u64::from(u32_at(&id, 44)?);
    Ok(DiagSocket {
        family,
        state,
        local: addr(ip(4)?, sport),
        remote: addr(ip(20)?, dport),
        cookie: cookie_hi << 32 | cookie_lo,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn diag_msg_v4(sport: u16, dport: u16, src: [u8; 4], dst: [u8; 4], cookie: u64) -> Vec<u8> {
        let mut p = vec![libc::AF_INET as u8, TCP_ESTABLISHED, 0, 0];
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&src);
        p.extend_from_slice(&s);
        let mut d = [0u8; 16];
        d[..4].copy_from_slice(&dst);
        p.extend_from_slice(&d);
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend_from_slice(&(cookie as u32).to_ne_bytes());
        p.extend_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        p.extend_from_slice(&[0; 20]);
        p
    }

    #[test]
    fn parses_a_dump_batch() {
        let mut buf = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            7,
            &diag_msg_v4(40000, 3306, [127, 0, 0, 1], [10, 0, 0, 2], 0x1_0000_0002),
        );
        buf.extend(nlmsg(NLMSG_DONE, 7, &0i32.to_ne_bytes()));
        let msgs: Vec<_> = messages(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        let sock = parse_msg(msgs[0].2).unwrap();
        assert_eq!(sock.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(sock.remote, "10.0.0.2:3306".parse().unwrap());
        assert_eq!(sock.cookie, 0x1_0000_0002);
        assert_eq!(msgs[1].0, NLMSG_DONE);
    }

    #[test]
    fn malformed_replies_are_errors() {
        // A length beyond the datagram.
        let mut buf = nlmsg(SOCK_DIAG_BY_FAMILY, 1, &[0; 8]);
        buf[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(messages(&buf).next().unwrap().is_err());
        // A length below the header.
        buf[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(messages(&buf).next().unwrap().is_err());
        // A truncated inet_diag_msg and an unknown family.
        assert!(parse_msg(&[0; 10]).is_err());
        let mut m = diag_msg_v4(1, 2, [0; 4], [0; 4], 0);
        m[0] = 99;
        assert!(parse_msg(&m).is_err());
        assert!(error_code(&[1]).is_err());
        assert_eq!(error_code(&(-2i32).to_ne_bytes()).unwrap(), 2);
    }
}
