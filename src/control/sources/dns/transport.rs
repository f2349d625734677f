//! Asking a DNS server one question: UDP with EDNS0 (4096-byte payload), TCP when the answer
//! comes back truncated, one deadline (`dns_timeout`) per server for the whole exchange.
//!
//! Nothing is cached: every lookup goes to the server (Consul answers with TTL 0, and a cached
//! answer would be a stale primary). Each query uses a fresh connected UDP socket (random source
//! port from the OS, ICMP "port unreachable" surfaces as "connection refused") and a random ID;
//! datagrams whose ID or question do not match are dropped, so a late answer to an earlier query
//! is never taken for the current one.
//!
//! Servers: the configured `dns_server`, or the `nameserver`s of /etc/resolv.conf, tried in order
//! until one gives a NOERROR or NXDOMAIN answer (resolv.conf is read again after a lookup in which
//! every server failed, so a changed file is picked up).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use super::answer::display_name;

/// EDNS0 UDP payload size we advertise. Consul answers at most 3 records over UDP to a client
/// without EDNS (and does not set TC); with EDNS it fills up to this size.
pub const EDNS_PAYLOAD: u16 = 4096;
/// Receive buffer: the largest UDP payload, whatever a server sends.
const RECV_BUFFER: usize = 65_535;

/// Why a question got no answer from a server.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no answer from {server} within {} for {name} {qtype} (DNS server down or unreachable?)", humantime::format_duration(*.timeout))]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
        name: String,
        qtype: RecordType,
    },
    #[error("asking {server} for {name} {qtype} over {transport}: {source}")]
    Io {
        server: SocketAddr,
        transport: &'static str,
        name: String,
        qtype: RecordType,
        source: std::io::Error,
    },
    #[error("undecodable answer from {server} for {name} {qtype}: {detail}")]
    Undecodable {
        server: SocketAddr,
        name: String,
        qtype: RecordType,
        detail: String,
    },
    #[error("no DNS server to ask: {0}")]
    NoServer(String),
}

impl AskError {
    /// True when the server answered something that is not DNS (metrics: `invalid`).
    pub fn is_invalid(&self) -> bool {
        matches!(self, AskError::Undecodable { .. })
    }
}

/// A response and the server that sent it.
#[derive(Debug, Clone)]
pub struct Answered {
    pub server: SocketAddr,
    pub message: Message,
}

/// Where the questions go.
#[derive(Debug)]
enum Servers {
    Fixed(SocketAddr),
    /// resolv.conf's name servers, read lazily; `None` after a lookup where all failed.
    System(Mutex<Option<Vec<SocketAddr>>>),
}

/// Asks DNS servers; cheap to share (the system server list sits behind a mutex held only to
/// copy it).
#[derive(Debug)]
pub struct Transport {
    servers: Servers,
    timeout: Duration,
}

impl Transport {
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Transport {
        Transport {
            servers: match server {
                Some(s) => Servers::Fixed(s),
                None => Servers::System(Mutex::new(None)),
            },
            timeout,
        }
    }

    /// The deadline of one question (`dns_timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn server_list(&self) -> Result<Vec<SocketAddr>, AskError> {
        match &self.servers {
            Servers::Fixed(s) => Ok(vec![*s]),
            Servers::System(cached) => {
                let mut cached = cached.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(list) = cached.as_ref() {
                    return Ok(list.clone());
                }
                let list = system_servers()?;
                *cached = Some(list.clone());
                Ok(list)
            }
        }
    }

    fn forget_system_servers(&self) {
        if let Servers::System(cached) = &self.servers {
            *cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Asks the servers in order for (`name`, `qtype`); the first NOERROR or NXDOMAIN answer
    /// wins. Otherwise the last error answer (SERVFAIL, REFUSED, …) or failure is returned.
    pub async fn ask_servers(&self, name: &Name, qtype: RecordType) -> Result<Answered, AskError> {
        let servers = self.server_list()?;
        let mut last = Err(AskError::NoServer(
            "no nameserver in /etc/resolv.conf".into(),
        ));
        for server in servers {
            let result = query(server, name, qtype, self.timeout).await;
            match result {
                Ok(message)
                    if matches!(
                        message.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    return Ok(Answered { server, message });
                }
                Ok(message) => last = Ok(Answered { server, message }),
                Err(e) => last = Err(e),
            }
        }
        self.forget_system_servers();
        last
    }
}

/// The name servers of /etc/resolv.conf (UDP port of each).
fn system_servers() -> Result<Vec<SocketAddr>, AskError> {
    let (config, _options) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| AskError::NoServer(format!("reading the system resolver config: {e}")))?;
    let mut servers: Vec<SocketAddr> = Vec::new();
    for ns in config.name_servers() {
        let port = ns.connections.first().map(|c| c.port).unwrap_or(53);
        let addr = SocketAddr::new(ns.ip, port);
        if !servers.contains(&addr) {
            servers.push(addr);
        }
    }
    if servers.is_empty() {
        return Err(AskError::NoServer(
            "no nameserver in the system resolver config".into(),
        ));
    }
    Ok(servers)
}

/// The query message: one question, recursion desired (for forwarding resolvers), EDNS0.
pub fn build_query(id: u16, name: &Name, qtype: RecordType) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD).set_version(0);
    m.set_edns(edns);
    m
}

/// Is `m` the answer to our query `id` for (`name`, `qtype`)? An error answer may come without
/// the question section (some servers do that on SERVFAIL/FORMERR).
pub fn answers_query(m: &Message, id: u16, name: &Name, qtype: RecordType) -> bool {
    if m.metadata.id != id || m.metadata.message_type != MessageType::Response {
        return false;
    }
    match m.queries.as_slice() {
        [q] => q.name() == name && q.query_type() == qtype,
        [] => !matches!(
            m.metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ),
        _ => false,
    }
}

/// One question to one server: UDP, then TCP if the UDP answer is truncated.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
    timeout: Duration,
) -> Result<Message, AskError> {
    let deadline = Instant::now() + timeout;
    let id = fastrand::u16(..);
    let shown = display_name(name);
    let request = build_query(id, name, qtype)
        .to_vec()
        .map_err(|e| AskError::Undecodable {
            server,
            name: shown.clone(),
            qtype,
            detail: format!("cannot encode the query: {e}"),
        })?;
    let io = |transport: &'static str| {
        let shown = shown.clone();
        move |source: std::io::Error| AskError::Io {
            server,
            transport,
            name: shown,
            qtype,
            source,
        }
    };
    let timed_out = || AskError::Timeout {
        server,
        timeout,
        name: shown.clone(),
        qtype,
    };
    let undecodable = |detail: String| AskError::Undecodable {
        server,
        name: shown.clone(),
        qtype,
        detail,
    };

    let udp = match udp_exchange(server, &request, id, name, qtype, deadline).await {
        Ok(m) => m,
        Err(UdpError::Io(e)) => return Err(io("UDP")(e)),
        Err(UdpError::TimedOut { garbage: None }) => return Err(timed_out()),
        Err(UdpError::TimedOut {
            garbage: Some(detail),
        }) => return Err(undecodable(detail)),
    };
    if !udp.metadata.truncation {
        return Ok(udp);
    }
    let tcp = match timeout_at(deadline, tcp_exchange(server, &request)).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) => return Err(io("TCP")(e)),
        Ok(Ok(bytes)) => bytes,
    };
    let m = Message::from_vec(&tcp).map_err(|e| undecodable(format!("over TCP: {e}")))?;
    if !answers_query(&m, id, name, qtype) {
        return Err(undecodable(
            "the TCP answer does not match the question".into(),
        ));
    }
    Ok(m)
}

enum UdpError {
    Io(std::io::Error),
    /// Nothing matching arrived; `garbage` describes the last undecodable datagram, if any.
    TimedOut {
        garbage: Option<String>,
    },
}

async fn udp_exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    name: &Name,
    qtype: RecordType,
    deadline: Instant,
) -> Result<Message, UdpError> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await.map_err(UdpError::Io)?;
    sock.connect(server).await.map_err(UdpError::Io)?;
    sock.send(request).await.map_err(UdpError::Io)?;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut garbage = None;
    loop {
        let n = match timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Err(UdpError::TimedOut { garbage }),
            Ok(Err(e)) => return Err(UdpError::Io(e)),
            Ok(Ok(n)) => n,
        };
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        match Message::from_vec(datagram) {
            Ok(m) if answers_query(&m, id, name, qtype) => return Ok(m),
            // A late answer to an earlier query, or not for us: keep waiting.
            Ok(_) => {}
            Err(e) => garbage = Some(e.to_string()),
        }
    }
}

/// One length-prefixed exchange over a new TCP connection; returns the raw answer.
async fn tcp_exchange(server: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(request.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hickory_resolver::proto::rr::rdata::A;
    use hickory_resolver::proto::rr::{RData, Record};
    use tokio::net::TcpListener;

    use super::*;

    const Q: &str = "primary.mysql.service.consul.";

    fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    /// An answer to `req` with `count` A records and the TC bit as given.
    fn answer(req: &Message, count: u8, truncated: bool) -> Vec<u8> {
        let mut m = Message::response(req.metadata.id, OpCode::Query);
        m.queries = req.queries.clone();
        m.metadata.truncation = truncated;
        for i in 0..count {
            m.add_answer(Record::from_rdata(
                n(Q),
                0,
                RData::A(A(Ipv4Addr::new(127, 0, 0, i + 1))),
            ));
        }
        m.to_vec().expect("encode")
    }

    /// A fake server on one port: UDP answers with TC and one record (after first sending a
    /// stray datagram and garbage), TCP answers with `tcp_records` records.
    async fn truncating_server(tcp_records: u8) -> (SocketAddr, Arc<AtomicUsize>) {
        // The same port for UDP and TCP: another test may hold the TCP side, so retry.
        let mut bound = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                bound = Some((udp, addr, tcp));
                break;
            }
        }
        let (udp, addr, tcp) = bound.expect("a port free for both UDP and TCP");
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                let req = Message::from_vec(&buf[..n]).unwrap();
                assert_eq!(
                    req.edns.as_ref().map(|e| e.max_payload()),
                    Some(EDNS_PAYLOAD),
                    "queries carry EDNS0"
                );
                let mut stray = req.clone();
                stray.metadata.id = stray.metadata.id.wrapping_add(1);
                let _ = udp.send_to(&answer(&stray, 1, false), peer).await.unwrap();
                let _ = udp.send_to(b"\x01garbage", peer).await.unwrap();
                let _ = udp.send_to(&answer(&req, 1, true), peer).await.unwrap();
            }
        });
        let counter = tcp_queries.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.unwrap();
                let mut req = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut req).await.unwrap();
                let req = Message::from_vec(&req).unwrap();
                let out = answer(&req, tcp_records, false);
                let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                s.write_all(&framed).await.unwrap();
            }
        });
        (addr, tcp_queries)
    }

    #[tokio::test]
    async fn truncated_udp_answer_is_asked_again_over_tcp_and_strays_are_ignored() {
        let (addr, tcp_queries) = truncating_server(5).await;
        let m = query(addr, &n(Q), RecordType::A, Duration::from_secs(2))
            .await
            .expect("answer");
        assert_eq!(m.answers.len(), 5, "the full answer came over TCP");
        assert!(!m.metadata.truncation);
        assert_eq!(tcp_queries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn silent_server_times_out_naming_the_server() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let start = Instant::now();
        let err = query(addr, &n(Q), RecordType::SRV, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(matches!(err, AskError::Timeout { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&addr.to_string()) && text.contains("200ms"),
            "{text}"
        );
        drop(silent);
    }

    #[tokio::test]
    async fn garbage_only_is_reported_as_undecodable() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((_, peer)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(b"\x00\x01\x02", peer).await;
            }
        });
        let err = query(addr, &n(Q), RecordType::SRV, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.is_invalid(), "{err}");
    }

    #[tokio::test]
    async fn closed_port_is_an_error_not_a_hang() {
        // Bind and drop: nothing listens there any more (ICMP port unreachable on loopback).
        let addr = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let t = Transport::new(Some(addr), Duration::from_millis(300));
        let err = t.ask_servers(&n(Q), RecordType::SRV).await.unwrap_err();
        assert!(
            matches!(err, AskError::Io { .. } | AskError::Timeout { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn answers_query_checks_id_direction_and_question() {
        let q = build_query(42, &n(Q), RecordType::SRV);
        let mut r = q.clone();
        assert!(!answers_query(&r, 42, &n(Q), RecordType::SRV), "a query");
        r.metadata.message_type = MessageType::Response;
        assert!(answers_query(&r, 42, &n(Q), RecordType::SRV));
        assert!(!answers_query(&r, 43, &n(Q), RecordType::SRV));
        assert!(!answers_query(&r, 42, &n(Q), RecordType::A));
        assert!(!answers_query(&r, 42, &n("other.consul."), RecordType::SRV));
        r.queries.clear();
        assert!(!answers_query(&r, 42, &n(Q), RecordType::SRV));
        r.metadata.response_code = ResponseCode::ServFail;
        assert!(answers_query(&r, 42, &n(Q), RecordType::SRV));
    }
}
