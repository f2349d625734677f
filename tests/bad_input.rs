//! Bad input on either side of the relay affects only its own connection.
//!
//! * Clients that connect and never send, send garbage, or leave in the middle of the MySQL
//!   handshake (FIN or RST), in front of a real MariaDB: a well-behaved `mysql_async` client
//!   keeps querying through the same proxy during and after, and the proxy's descriptors return
//!   to their baseline once the bad clients are gone.
//! * A scripted backend that, per connection, echoes (the well-behaved case), sends garbage,
//!   closes in the middle of a packet, resets, floods a client that never reads, or goes silent:
//!   each client sees exactly its own connection's bytes and an end, the echo clients are not
//!   disturbed, and the proxy's memory stays bounded while its clients stall.
//! * Backends whose *greeting* is garbage or a truncated packet.
//!
//! Bad configuration and CLI input are covered in `proxy_core.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

use support::backends::GREETING;
use support::mariadb::{MariaDb, app_opts};
use support::process::{fd_count, rss_kib, wait_fds_at_most};
use support::proxy::{Proxy, ProxyArgs};

/// Upper bound for any one bad client or scripted exchange: nothing here may hang.
const STEP: Duration = Duration::from_secs(15);

fn start_proxy(backend: SocketAddr) -> Proxy {
    ProxyArgs::backend(backend)
        .with(&["--log-level", "info"])
        .start()
}

/// The proxy process exists and is not a zombie.
fn assert_alive(proxy: &Proxy) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", proxy.pid()))
        .unwrap_or_else(|e| panic!("proxy process is gone: {e}\n{}", proxy.log.text()));
    // The state is the first field after the parenthesised command name.
    let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
    assert_ne!(state, Some("Z"), "proxy exited; log:\n{}", proxy.log.text());
}

/// Reads until EOF or an error (a reset counts as an end), at most `STEP`; returns the bytes.
async fn read_until_end(sock: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection did not end within {STEP:?} ({} bytes)",
                out.len()
            ),
        }
    }
}

/// Closes with a RST instead of a FIN.
fn reset(sock: TcpStream) {
    let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    drop(sock);
}

/// A well-behaved MySQL client: queries through `addr` until `stop` (and at least 3 sessions),
/// reconnecting every 20 queries; any failure is the test's failure. Returns the query count.
async fn good_mysql_client(addr: SocketAddr, stop: Arc<AtomicBool>) -> u64 {
    let mut queries = 0u64;
    while !stop.load(Ordering::Relaxed) || queries < 60 {
        let mut conn = timeout(STEP, Conn::new(app_opts(addr)))
            .await
            .expect("good client: connect timed out")
            .expect("good client: connect through the proxy");
        for _ in 0..20 {
            let n: Option<u64> = timeout(STEP, conn.query_first("SELECT 1 + 1"))
                .await
                .expect("good client: query timed out")
                .expect("good client: query through the proxy");
            assert_eq!(n, Some(2));
            queries += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        conn.disconnect().await.expect("good client: disconnect");
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_do_not_disturb_a_real_client() {
    let db = MariaDb::start("127.0.0.1".parse().unwrap()).await;
    let proxy = start_proxy(db.addr());
    let addr = proxy.addr();
    let pid = proxy.pid();
    let base_fds = fd_count(pid); // idle: no connection yet
    support::mariadb::port_via(addr).await;

    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_mysql_client(addr, stop.clone()));

    // 1. Clients that connect and never send (held open until the end).
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }

    // 2.-5. Garbage and mid-handshake departures, concurrently, 25 of each kind.
    let mut bad = JoinSet::new();
    for i in 0..25u64 {
        // 2. Garbage instead of a handshake response (after reading the greeting).
        bad.spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut greeting = [0u8; 4];
            c.read_exact(&mut greeting).await.unwrap();
            let mut rng = fastrand::Rng::with_seed(i);
            let mut junk = vec![0u8; rng.usize(1..=64 * 1024)];
            rng.fill(&mut junk);
            let _ = c.write_all(&junk).await;
            let _ = c.shutdown().await;
            read_until_end(&mut c).await;
        });
        // 3. Garbage before even reading the greeting, then a reset.
        bad.spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let _ = c
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xfe\x00")
                .await;
            tokio::time::sleep(Duration::from_millis(i * 4)).await;
            reset(c);
        });
        // 4. Half of a handshake response packet (header says 200 bytes), then FIN.
        bad.spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut greeting = [0u8; 4];
            c.read_exact(&mut greeting).await.unwrap();
            let mut partial = vec![200u8, 0, 0, 1];
            partial.extend_from_slice(&[0x85, 0xa6, 0xff, 0x01]);
            partial.extend_from_slice(&[0u8; 40]);
            c.write_all(&partial).await.unwrap();
            c.shutdown().await.unwrap();
            read_until_end(&mut c).await;
        });
        // 5. Leave in the middle of the greeting: read a few bytes and reset, or just close.
        bad.spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut part = [0u8; 10];
            c.read_exact(&mut part).await.unwrap();
            if i % 2 == 0 {
                reset(c);
            }
        });
        // 6. Connect and close at once (before the proxy has reached the server).
        bad.spawn(async move {
            let c = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 0 {
                reset(c);
            }
        });
    }
    timeout(Duration::from_secs(60), async {
        while let Some(r) = bad.join_next().await {
            r.expect("bad client task");
        }
    })
    .await
    .expect("bad clients finished within 60s");
    assert_alive(&proxy);

    // The good client kept working through all of that; let it run a little longer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(idle);
    stop.store(true, Ordering::Relaxed);
    let queries = good.await.expect("good client");
    // And a fresh one works after.
    support::mariadb::port_via(addr).await;
    assert_alive(&proxy);
    let fds = wait_fds_at_most(pid, base_fds, Duration::from_secs(20)).await;
    assert_eq!(
        fds, base_fds,
        "proxy descriptors did not return to the baseline after the bad clients left"
    );
    eprintln!("bad clients: good client ran {queries} queries meanwhile; proxy fds back to {fds}");
}

// ---------------------------------------------------------------------------------------------
// misbehaving backend

/// How the scripted backend treats a connection, chosen by the client's first byte after the
/// greeting.
const ECHO: u8 = b'E';
const GARBAGE: u8 = b'G';
const PARTIAL: u8 = b'P';
const RESET: u8 = b'R';
const FLOOD: u8 = b'F';
const SILENT: u8 = b'S';

/// Garbage bytes for connection `seed`: what the backend sends and the client expects.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut v);
    v
}

/// A MySQL packet header announcing 1000 bytes, followed by only 100 of them.
fn truncated_packet() -> Vec<u8> {
    let mut v = vec![0xe8, 0x03, 0x00, 0x00];
    v.extend(std::iter::repeat_n(0xab, 100));
    v
}

/// Greets, reads a mode byte and an 8-byte seed, then behaves as the mode says. `flooded`
/// counts the bytes the flood connections managed to hand to the kernel.
async fn scripted_backend(flooded: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let flooded = flooded.clone();
            tokio::spawn(async move {
                if sock.write_all(GREETING).await.is_err() {
                    return;
                }
                let Ok(mode) = sock.read_u8().await else {
                    return;
                };
                let Ok(seed) = sock.read_u64().await else {
                    return;
                };
                match mode {
                    ECHO => {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match sock.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if sock.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        let _ = sock.shutdown().await;
                    }
                    GARBAGE => {
                        let _ = sock.write_all(&garbage(seed, 256 * 1024)).await;
                        let _ = sock.shutdown().await;
                    }
                    PARTIAL => {
                        let _ = sock.write_all(&truncated_packet()).await;
                        let _ = sock.shutdown().await;
                    }
                    RESET => {
                        let _ = sock.write_all(&garbage(seed, 1000)).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        reset(sock);
                    }
                    FLOOD => {
                        // Until the client's stall fills every buffer on the way: a write
                        // that makes no progress for 1 s ends the flood (bounded at 256 MiB).
                        let chunk = vec![0x5a; 64 * 1024];
                        for _ in 0..4096 {
                            match timeout(Duration::from_secs(1), sock.write_all(&chunk)).await {
                                Ok(Ok(())) => {
                                    flooded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                                }
                                _ => break,
                            }
                        }
                        // Hold the connection until the client leaves.
                        let mut sink = [0u8; 1024];
                        while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                    _ => {
                        // SILENT (and anything unknown): hold the connection, say nothing.
                        let mut sink = [0u8; 1024];
                        while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                }
            });
        }
    });
    addr
}

/// Connects through the proxy, reads the greeting and picks the backend's behaviour.
async fn open(addr: SocketAddr, mode: u8, seed: u64) -> TcpStream {
    let mut c = timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut greeting = vec![0u8; GREETING.len()];
    timeout(STEP, c.read_exact(&mut greeting))
        .await
        .expect("greeting timed out")
        .expect("greeting");
    assert_eq!(greeting, GREETING);
    c.write_u8(mode).await.unwrap();
    c.write_u64(seed).await.unwrap();
    c
}

/// A well-behaved client of the scripted backend: `rounds` echo exchanges, then a half-close.
async fn good_echo_client(addr: SocketAddr, seed: u64, rounds: usize) {
    let mut c = open(addr, ECHO, seed).await;
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..rounds {
        let msg = garbage(rng.u64(..), rng.usize(1..=8 * 1024));
        c.write_all(&msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        timeout(STEP, c.read_exact(&mut back))
            .await
            .expect("echo timed out")
            .expect("echo");
        assert!(back == msg, "echo client {seed}: wrong bytes");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    c.shutdown().await.unwrap();
    assert!(read_until_end(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_backend_connections_end_alone() {
    let flooded = Arc::new(AtomicU64::new(0));
    let backend = scripted_backend(flooded.clone()).await;
    let proxy = start_proxy(backend);
    let addr = proxy.addr();
    let pid = proxy.pid();
    let base_fds = fd_count(pid); // idle: no connection yet
    good_echo_client(addr, 0, 3).await;
    wait_fds_at_most(pid, base_fds, Duration::from_secs(10)).await;
    let base_rss = rss_kib(pid);

    // Stalled clients first: they ask for a flood and never read while everything else runs.
    const FLOODS: usize = 16;
    let mut stalled = Vec::new();
    for i in 0..FLOODS {
        stalled.push(open(addr, FLOOD, 1000 + i as u64).await);
    }

    let mut set = JoinSet::new();
    for i in 0..20u64 {
        set.spawn(good_echo_client(addr, 100 + i, 50));
        set.spawn(async move {
            let mut c = open(addr, GARBAGE, 200 + i).await;
            let got = read_until_end(&mut c).await;
            assert!(
                got == garbage(200 + i, 256 * 1024),
                "garbage connection {i}: got {} bytes, not the backend's",
                got.len()
            );
        });
        set.spawn(async move {
            let mut c = open(addr, PARTIAL, 300 + i).await;
            assert_eq!(read_until_end(&mut c).await, truncated_packet());
        });
        set.spawn(async move {
            let mut c = open(addr, RESET, 400 + i).await;
            let got = read_until_end(&mut c).await;
            let sent = garbage(400 + i, 1000);
            assert!(got.len() <= sent.len() && got == sent[..got.len()]);
        });
        set.spawn(async move {
            let mut c = open(addr, SILENT, 500 + i).await;
            let mut buf = [0u8; 16];
            let quiet = timeout(Duration::from_millis(300), c.read(&mut buf)).await;
            assert!(quiet.is_err(), "silent backend: client read {quiet:?}");
            if i % 2 == 0 {
                reset(c);
            }
        });
    }
    timeout(Duration::from_secs(60), async {
        while let Some(r) = set.join_next().await {
            r.expect("client task");
        }
    })
    .await
    .expect("all scripted connections finished within 60s");
    assert_alive(&proxy);

    // The floods are stuck on their stalled clients: the proxy buffers at most 64 KiB per
    // direction for each, the rest sits in kernel socket buffers.
    let stalled_rss = rss_kib(pid);
    let flooded_mib = flooded.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
    eprintln!(
        "bad backend: {FLOODS} stalled clients, {flooded_mib:.1} MiB handed to the kernel by the \
         backend; proxy VmRSS {base_rss} KiB -> {stalled_rss} KiB"
    );
    assert!(
        stalled_rss < base_rss + (FLOODS as u64) * 256 + 8 * 1024,
        "proxy VmRSS grew from {base_rss} KiB to {stalled_rss} KiB with {FLOODS} stalled clients"
    );
    drop(stalled);

    good_echo_client(addr, 1, 3).await;
    let fds = wait_fds_at_most(pid, base_fds, Duration::from_secs(20)).await;
    assert_eq!(
        fds, base_fds,
        "proxy descriptors after the bad backend connections"
    );
    assert_alive(&proxy);
}

// ---------------------------------------------------------------------------------------------
// bad greetings

/// A backend whose every connection starts with `greeting` and then closes (FIN).
async fn greeting_backend(greeting: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let greeting = Arc::new(greeting);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let greeting = greeting.clone();
            tokio::spawn(async move {
                let _ = sock.write_all(&greeting).await;
                let _ = sock.shutdown().await;
                let mut sink = [0u8; 1024];
                while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_greetings_reach_only_their_client() {
    for (what, greeting) in [
        ("garbage", garbage(7, 64 * 1024)),
        ("truncated packet", truncated_packet()),
        ("one byte", vec![0x0a]),
    ] {
        let backend = greeting_backend(greeting.clone()).await;
        let proxy = start_proxy(backend);
        let addr = proxy.addr();
        let mut set = JoinSet::new();
        for _ in 0..20 {
            let greeting = greeting.clone();
            set.spawn(async move {
                let mut c = TcpStream::connect(addr).await.unwrap();
                // Some clients answer with garbage of their own, all read to the end.
                let _ = c.write_all(b"\x00\x00\x00\x01").await;
                assert!(read_until_end(&mut c).await == greeting, "{what}");
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("client");
        }
        assert_alive(&proxy);
    }
}
