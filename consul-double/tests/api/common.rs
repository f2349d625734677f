//! Test helpers: a minimal HTTP/1.1 client (one request per connection), a DNS client on
//! hickory-proto, and waits that ride on blocking queries instead of sleeping.

use std::net::SocketAddr;
use std::time::Duration;

use consul_double::{ConsulDouble, DoubleConfig};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every wait in these tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(10);

pub fn test_config() -> DoubleConfig {
    DoubleConfig {
        enable_script_checks: true,
        min_check_interval: Duration::from_millis(20),
        check_update_interval: Duration::ZERO,
        ..DoubleConfig::default()
    }
}

pub async fn start() -> ConsulDouble {
    start_with(test_config()).await
}

pub async fn start_with(cfg: DoubleConfig) -> ConsulDouble {
    consul_double::start(cfg).await.expect("double starts")
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .expect("X-Consul-Index present")
            .parse()
            .expect("numeric index")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Resp {
    tokio::time::timeout(LIMIT * 2, request_inner(addr, method, path, body, headers))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Resp {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    request_on(s, &addr.to_string(), method, path, body, headers)
        .await
        .expect("HTTP exchange")
}

/// One HTTP/1.1 request on an already connected stream (TCP, unix socket, TLS).
pub async fn request_on<S>(
    mut s: S,
    host: &str,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> std::io::Result<Resp>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .expect("hex size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 2 + size + 2..];
        }
        body = out;
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub async fn get(d: &ConsulDouble, path: &str) -> Resp {
    request(d.http_addr(), "GET", path, b"", &[]).await
}

pub async fn put(d: &ConsulDouble, path: &str, body: &str) -> Resp {
    request(d.http_addr(), "PUT", path, body.as_bytes(), &[]).await
}

pub async fn put_ok(d: &ConsulDouble, path: &str, body: &str) -> Resp {
    let r = put(d, path, body).await;
    assert_eq!(r.status, 200, "PUT {path}: {}", r.text());
    r
}

pub async fn delete(d: &ConsulDouble, path: &str) -> Resp {
    request(d.http_addr(), "DELETE", path, b"", &[]).await
}

/// Registers a service from a JSON body, optionally on another node (`?node=&node_address=`).
pub async fn register(d: &ConsulDouble, body: Value) {
    put_ok(d, "/v1/agent/service/register", &body.to_string()).await;
}

/// Waits, with blocking queries (no polling sleeps), until `pred` holds for the unfiltered
/// health result of `svc`; returns that result.
pub async fn wait_health(d: &ConsulDouble, svc: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut index = 0;
    loop {
        let r = get(
            d,
            &format!("/v1/health/service/{svc}?index={index}&wait=2s"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition on {svc} not reached; last result {v:#}"
        );
        index = r.index();
    }
}

/// Status of check `check_id` in a health result.
pub fn check_status(result: &Value, check_id: &str) -> Option<String> {
    result.as_array()?.iter().find_map(|e| {
        e["Checks"].as_array()?.iter().find_map(|c| {
            (c["CheckID"] == check_id).then(|| c["Status"].as_str().unwrap_or("").to_string())
        })
    })
}

pub fn check_output(result: &Value, check_id: &str) -> Option<String> {
    result.as_array()?.iter().find_map(|e| {
        e["Checks"].as_array()?.iter().find_map(|c| {
            (c["CheckID"] == check_id).then(|| c["Output"].as_str().unwrap_or("").to_string())
        })
    })
}

pub fn ids(result: &Value) -> Vec<String> {
    let mut v: Vec<String> = result
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["Service"]["ID"].as_str().expect("ID").to_string())
        .collect();
    v.sort();
    v
}

pub async fn dns(
    addr: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
    tcp: bool,
) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    let bytes = m.to_vec().unwrap();
    let fut = async {
        if tcp {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            s.write_all(&framed).await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut buf).await.unwrap();
            Message::from_vec(&buf).unwrap()
        } else {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.send_to(&bytes, addr).await.unwrap();
            let mut buf = vec![0u8; 65535];
            let (n, _) = sock.recv_from(&mut buf).await.unwrap();
            Message::from_vec(&buf[..n]).unwrap()
        }
    };
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("DNS answer in time")
}

/// Waits (bounded) until more than `seen` requests under `prefix` reached the double: the
/// only signal that a spawned request is in flight.
pub async fn wait_requests(d: &ConsulDouble, prefix: &str, seen: u64) {
    tokio::time::timeout(LIMIT, async {
        while d.faults().request_count(prefix) <= seen {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("request reached the double");
    // Let the handler reach its wait point.
    tokio::time::sleep(Duration::from_millis(20)).await;
}
