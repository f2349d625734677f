//! Proxy core against scripted TCP backends: relay, half-close, connection cap, hold and ERR
//! packet, greeting timeout, configuration errors and graceful shutdown.

mod support;

use std::time::Duration;

use support::backends::{EchoBackend, FAREWELL, GREETING, SilentBackend, closed_port};
use support::proxy::{Proxy, run_to_exit};
use support::refusal::parse_err;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

async fn read_exact_n(sock: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(T, sock.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .expect("read failed");
    buf
}

async fn read_to_end(sock: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(T, sock.read_to_end(&mut buf))
        .await
        .expect("read timed out")
        .expect("read failed");
    buf
}

#[tokio::test]
async fn pump_relays_both_ways_and_keeps_flowing_after_client_half_close() {
    relay_both_ways_with_half_close("pump").await;
}

#[tokio::test]
async fn copy_relays_both_ways_and_keeps_flowing_after_client_half_close() {
    relay_both_ways_with_half_close("copy").await;
}

async fn relay_both_ways_with_half_close(relay: &str) {
    let backend = EchoBackend::start().await;
    let proxy = Proxy::start(&["--backend", &backend.addr.to_string(), "--relay", relay]);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(read_exact_n(&mut client, GREETING.len()).await, GREETING);

    // Random-ish payload larger than any socket buffer, written while reading the echo.
    let payload: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (mut rd, mut wr) = client.into_split();
    let to_send = payload.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&to_send).await.unwrap();
        // Half-close: the backend must see EOF, and its reply must still reach us.
        wr.shutdown().await.unwrap();
        wr
    });
    let mut received = Vec::new();
    tokio::time::timeout(T, rd.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    let _wr = writer.await.unwrap();
    assert_eq!(received.len(), payload.len() + FAREWELL.len());
    assert!(
        received[..payload.len()] == payload[..],
        "echoed bytes differ"
    );
    assert_eq!(
        &received[payload.len()..],
        FAREWELL,
        "backend's reply after our EOF arrived"
    );
}

#[tokio::test]
async fn client_is_held_until_the_backend_comes_up() {
    let addr = closed_port();
    let proxy = Proxy::start(&["--backend", &addr.to_string(), "--hold-timeout", "20s"]);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    // The first connect attempt fails (nothing listens): the client is held, not refused.
    proxy
        .wait_for_log("backend connect failed; client held", T)
        .await;
    let backend = EchoBackend::start_on(addr).await;
    assert_eq!(read_exact_n(&mut client, GREETING.len()).await, GREETING);
    client.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact_n(&mut client, 4).await, b"ping");
    drop(backend);
}

#[tokio::test]
async fn unreachable_backend_gets_an_err_packet_naming_the_cause() {
    let addr = closed_port();
    let proxy = Proxy::start(&[
        "--backend",
        &addr.to_string(),
        "--hold-timeout",
        "1s",
        "--service",
        "orders-db",
    ]);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let packet = read_to_end(&mut client).await;
    let (seq, code, msg) = parse_err(&packet);
    assert_eq!((seq, code), (0, 1105));
    assert!(msg.starts_with("consul-mysql-proxy: "), "{msg}");
    assert!(msg.contains(&format!("primary {addr}")), "{msg}");
    assert!(msg.contains("\"orders-db\" unreachable after 1s"), "{msg}");
    assert!(msg.contains("refused"), "{msg}");
}

#[tokio::test]
async fn silent_backend_fails_the_greeting_check() {
    let backend = SilentBackend::start().await;
    let proxy = Proxy::start(&[
        "--backend",
        &backend.addr.to_string(),
        "--hold-timeout",
        "1s",
        "--backend-greeting-timeout",
        "300ms",
    ]);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let packet = read_to_end(&mut client).await;
    let (_, code, msg) = parse_err(&packet);
    assert_eq!(code, 1105);
    assert!(msg.contains("no greeting within 300ms"), "{msg}");
}

#[tokio::test]
async fn mysql_async_shows_the_proxy_error() {
    let addr = closed_port();
    let proxy = Proxy::start(&["--backend", &addr.to_string(), "--hold-timeout", "1s"]);
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy.addr().port())
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false);
    let err = mysql_async::Conn::new(opts).await.expect_err("must fail");
    let text = err.to_string();
    assert!(text.contains("consul-mysql-proxy: primary"), "{text}");
    assert!(text.contains("unreachable after 1s"), "{text}");
    match err {
        mysql_async::Error::Server(e) => {
            assert_eq!(e.code, 1105);
            assert!(
                e.message.starts_with("consul-mysql-proxy: primary"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_cap_leaves_extra_clients_in_the_backlog() {
    let backend = EchoBackend::start().await;
    let proxy = Proxy::start(&[
        "--backend",
        &backend.addr.to_string(),
        "--max-connections",
        "2",
    ]);
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    read_exact_n(&mut first, GREETING.len()).await;
    read_exact_n(&mut second, GREETING.len()).await;
    // The third TCP connect succeeds (kernel backlog) but the proxy does not accept it yet.
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "third client must not be served while two are open"
    );
    drop(first);
    assert_eq!(read_exact_n(&mut third, GREETING.len()).await, GREETING);
    let log = proxy.log.text();
    assert!(log.contains("max_connections=2"), "{log}");
}

#[tokio::test]
async fn sigterm_stops_accepting_and_lets_open_connections_finish() {
    let backend = EchoBackend::start().await;
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend.addr.to_string(),
        "--shutdown-grace",
        "30s",
    ]);
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    read_exact_n(&mut open, GREETING.len()).await;

    proxy.signal(libc::SIGTERM);
    proxy.wait_for_log("no longer accepting", T).await;
    assert!(
        TcpStream::connect(proxy.addr()).await.is_err(),
        "listener must be closed"
    );
    // The open connection still relays during the grace period.
    open.write_all(b"still here").await.unwrap();
    assert_eq!(read_exact_n(&mut open, 10).await, b"still here");
    open.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut open).await, FAREWELL);
    let status = proxy.wait_exit(T).await;
    assert_eq!(status.code(), Some(0), "{}", proxy.log.text());
}

#[tokio::test]
async fn shutdown_grace_expiry_closes_the_rest_and_exits_zero() {
    let backend = EchoBackend::start().await;
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend.addr.to_string(),
        "--shutdown-grace",
        "300ms",
    ]);
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    read_exact_n(&mut open, GREETING.len()).await;
    proxy.signal(libc::SIGTERM);
    // The proxy closes our connection after the grace period: we read EOF.
    assert_eq!(read_to_end(&mut open).await, b"");
    assert_eq!(proxy.wait_exit(T).await.code(), Some(0));
    assert!(proxy.log.text().contains("shutdown grace expired"));
}

#[tokio::test]
async fn second_signal_exits_at_once() {
    let backend = EchoBackend::start().await;
    let mut proxy = Proxy::start(&[
        "--backend",
        &backend.addr.to_string(),
        "--shutdown-grace",
        "60s",
    ]);
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    read_exact_n(&mut open, GREETING.len()).await;
    proxy.signal(libc::SIGTERM);
    proxy.wait_for_log("no longer accepting", T).await;
    proxy.signal(libc::SIGINT);
    assert_eq!(proxy.wait_exit(T).await.code(), Some(130));
}

#[test]
fn bad_configuration_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");

    std::fs::write(
        &file,
        "backend = \"127.0.0.1:3307\"\nhold_timout = \"5s\"\n",
    )
    .unwrap();
    let (status, err) = run_to_exit(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("unknown field `hold_timout`"), "{err}");

    let (status, err) = run_to_exit(
        &["--backend", "127.0.0.1:3307", "--hold-timeout", "soon"],
        &[],
    );
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("--hold-timeout") && err.contains("not a duration"),
        "{err}"
    );

    let (status, err) = run_to_exit(
        &[],
        &[
            ("CONSUL_MYSQL_PROXY_BACKEND", "127.0.0.1:3307"),
            ("CONSUL_MYSQL_PROXY_HOLD_TIMEOUT", "0s"),
        ],
    );
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("`hold_timeout`: must be greater than 0"),
        "{err}"
    );

    let (status, err) = run_to_exit(
        &["--backend", "127.0.0.1:3307", "--max-connections", "15000"],
        &[],
    );
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("`max_connections` = 15000") && err.contains("open-files limit"),
        "{err}"
    );

    let (status, err) = run_to_exit(&["--config", "/nonexistent/proxy.toml"], &[]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("/nonexistent/proxy.toml"), "{err}");
}

#[tokio::test]
async fn flags_override_env_which_overrides_the_file() {
    let backend = EchoBackend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        format!(
            "backend = \"{}\"\nservice = \"from-file\"\nmax_connections = 7\nworkers = 1\n",
            closed_port()
        ),
    )
    .unwrap();
    let backend_addr = backend.addr.to_string();
    let proxy = Proxy::start_with_env(
        &["--config", file.to_str().unwrap(), "--max-connections", "9"],
        &[
            ("CONSUL_MYSQL_PROXY_BACKEND", backend_addr.as_str()),
            ("CONSUL_MYSQL_PROXY_MAX_CONNECTIONS", "8"),
        ],
    );
    let log = proxy.log.text();
    assert!(log.contains("max_connections=9"), "flag wins: {log}");
    // The env backend (a live echo server) won over the file's closed port.
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(read_exact_n(&mut client, GREETING.len()).await, GREETING);
}

#[tokio::test]
async fn two_workers_share_the_port_and_drain_together() {
    let backend = EchoBackend::start().await;
    let mut proxy = Proxy::start(&["--backend", &backend.addr.to_string(), "--workers", "2"]);
    let mut clients = Vec::new();
    for _ in 0..40 {
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(read_exact_n(&mut c, GREETING.len()).await, GREETING);
        clients.push(c);
    }
    for c in clients.iter_mut() {
        c.write_all(b"w").await.unwrap();
        assert_eq!(read_exact_n(c, 1).await, b"w");
    }
    proxy.signal(libc::SIGTERM);
    proxy.wait_for_log("no longer accepting", T).await;
    assert!(
        TcpStream::connect(proxy.addr()).await.is_err(),
        "both listeners closed"
    );
    drop(clients);
    assert_eq!(proxy.wait_exit(T).await.code(), Some(0));
}
