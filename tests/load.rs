//! Load tests: many held connections, connection churn, and byte integrity of bulk transfers,
//! against the real proxy binary on loopback.
//!
//! Every loop here is bounded in count and in time. The CI defaults are small enough to run in
//! a few seconds each on two cores; `CMP_LONG=1` runs the long variants:
//!
//! | test | default | `CMP_LONG=1` |
//! |---|---|---|
//! | [`holds_8000_usable_connections`] | 8 000 held connections | 8 000 (same) |
//! | [`churn_leaks_no_fds_or_memory`] | 20 000 short connections | 200 000 |
//! | [`bulk_bytes_arrive_intact_both_ways`] | 128 MiB each way | 1 GiB each way |
//!
//! Numbers (RSS per connection, fds, throughput) are printed with `--nocapture`.
//! The tests take a process-wide lock so that they do not measure each other.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

use support::backends::{EchoBackend, FAREWELL, GREETING};
use support::process::{fd_count, rss_kib, wait_fds_at_most};
use support::proxy::{Proxy, ProxyArgs, run_to_exit};

/// One load test at a time: they measure the proxy's memory and share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn long() -> bool {
    std::env::var("CMP_LONG").is_ok_and(|v| v == "1")
}

/// (soft, hard) RLIMIT_NOFILE of this process.
fn nofile() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    (limit.rlim_cur, limit.rlim_max)
}

/// Raises this process's soft open-files limit to the hard limit and returns it: the test
/// holds the client sockets and the echo backend's sockets.
fn raise_nofile() -> u64 {
    let (soft, hard) = nofile();
    if soft < hard {
        let limit = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    }
    hard
}

/// Waits until the proxy is back to its idle descriptor count `idle` (connections of a
/// previous step may still be closing); fails after 20 s.
async fn settle(pid: i32, idle: usize) {
    let n = wait_fds_at_most(pid, idle, Duration::from_secs(20)).await;
    assert!(
        n <= idle,
        "proxy still has {n} descriptors, {idle} when idle"
    );
}

/// A loopback source address from 127.0.0.2..=127.0.0.254, so that tens of thousands of
/// connections (and their TIME_WAIT entries) do not exhaust one address's ephemeral ports.
fn source_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 253) as u8))
}

async fn connect_from(i: usize, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source_ip(i), 0))?;
    socket.connect(to).await
}

/// Reads exactly `want.len()` bytes and compares them.
async fn expect_bytes<R: AsyncRead + Unpin>(r: &mut R, want: &[u8], what: &str) {
    let mut got = vec![0u8; want.len()];
    match timeout(Duration::from_secs(20), r.read_exact(&mut got)).await {
        Ok(Ok(_)) => assert_eq!(got, want, "{what}: wrong bytes"),
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within 20s"),
    }
}

fn start_proxy(backend: SocketAddr, extra: &[&str]) -> Proxy {
    ProxyArgs::backend(backend)
        .with(&["--log-level", "info"])
        .with(extra)
        .start()
}

// ---------------------------------------------------------------------------------------------
// held connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_8000_usable_connections() {
    let _serial = SERIAL.lock().await;
    let hard = raise_nofile();
    const N: usize = 8000;
    // Test process: N client sockets + N echo-backend sockets + a few.
    assert!(
        hard >= (2 * N + 200) as u64,
        "hard open-files limit {hard} is too low for {N} connections in one test process"
    );
    let echo = EchoBackend::start().await;
    let proxy = start_proxy(echo.addr, &["--max-connections", "9000"]);
    let pid = proxy.pid();
    let addr = proxy.addr();

    // Warm up (runtime, scratch buffer, allocator), then take the baseline.
    let base_fds = fd_count(pid);
    for i in 0..20 {
        let mut c = connect_from(i, addr).await.unwrap();
        expect_bytes(&mut c, GREETING, "warm-up greeting").await;
    }
    settle(pid, base_fds).await;
    let base_rss = rss_kib(pid);

    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(512)); // connects in flight (the proxy's backlog is 1024)
    let mut set = JoinSet::new();
    for i in 0..N {
        let gate = gate.clone();
        set.spawn(async move {
            let _p = gate.acquire_owned().await.unwrap();
            let mut c = timeout(Duration::from_secs(20), connect_from(i, addr))
                .await
                .unwrap_or_else(|_| panic!("connection {i}: connect timed out"))
                .unwrap_or_else(|e| panic!("connection {i}: connect: {e}"));
            expect_bytes(&mut c, GREETING, "greeting").await;
            let ping = format!("ping {i}\n");
            c.write_all(ping.as_bytes()).await.unwrap();
            expect_bytes(&mut c, ping.as_bytes(), "first echo").await;
            c
        });
    }
    let mut conns = Vec::with_capacity(N);
    while let Some(c) = set.join_next().await {
        conns.push(c.expect("client task"));
    }
    let established = started.elapsed();
    assert_eq!(conns.len(), N);
    let held_fds = fd_count(pid);
    let held_rss = rss_kib(pid);

    // All N held at once: every one still relays.
    let started_round = Instant::now();
    let mut set = JoinSet::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let gate = gate.clone();
        set.spawn(async move {
            let _p = gate.acquire_owned().await.unwrap();
            let ping = format!("again {i}\n");
            c.write_all(ping.as_bytes()).await.unwrap();
            expect_bytes(&mut c, ping.as_bytes(), "second echo").await;
            c
        });
    }
    let mut conns = Vec::with_capacity(N);
    while let Some(c) = set.join_next().await {
        conns.push(c.expect("client task"));
    }
    let round = started_round.elapsed();
    assert_eq!(conns.len(), N);
    let per_conn = (held_rss.saturating_sub(base_rss) as f64 * 1024.0) / N as f64;
    eprintln!(
        "hold: {N} connections established in {established:.2?}, all re-pinged in {round:.2?}; \
         proxy fds {base_fds} -> {held_fds}; VmRSS {base_rss} KiB -> {held_rss} KiB \
         = {per_conn:.0} bytes per connection"
    );
    assert!(
        held_fds >= base_fds + 2 * N,
        "proxy holds {held_fds} fds, expected at least {} (2 per connection)",
        base_fds + 2 * N
    );
    // README: about 1.7 KiB per idle connection with the pump; fail well before copy's 17.6.
    assert!(
        per_conn < 8.0 * 1024.0,
        "{per_conn:.0} bytes of proxy RSS per idle connection"
    );

    drop(conns);
    let after_fds = wait_fds_at_most(pid, base_fds, Duration::from_secs(20)).await;
    assert_eq!(
        after_fds, base_fds,
        "proxy fds after all {N} clients closed"
    );
}

#[test]
fn max_connections_beyond_the_fd_limit_fails_at_start_up() {
    let (_, hard) = nofile();
    // Children inherit our hard limit; the proxy raises its soft limit to it and then checks.
    let max = 15000.max(hard / 2 + 1).to_string();
    let (status, err) = run_to_exit(
        &["--backend", "127.0.0.1:3307", "--max-connections", &max],
        &[],
    );
    assert_eq!(status.code(), Some(64), "stderr: {err}");
    assert!(
        err.contains(&format!("`max_connections` = {max}"))
            && err.contains(&format!("open-files limit is {hard}")),
        "stderr does not name max_connections and the fd limit: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// churn

/// Connect, read the greeting, close — `total` times with `parallel` clients.
async fn churn(addr: SocketAddr, total: usize, parallel: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    let deadline = started + limit;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..parallel {
        let next = next.clone();
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "churn: only {i} of {total} connections within {limit:?}"
                );
                let mut c = timeout(Duration::from_secs(10), connect_from(i, addr))
                    .await
                    .unwrap_or_else(|_| panic!("churn connection {i}: connect timed out"))
                    .unwrap_or_else(|e| panic!("churn connection {i}: connect: {e}"));
                expect_bytes(&mut c, GREETING, "churn greeting").await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("churn task");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaks_no_fds_or_memory() {
    let _serial = SERIAL.lock().await;
    raise_nofile();
    let total = if long() { 200_000 } else { 20_000 };
    let limit = if long() {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(60)
    };
    let echo = EchoBackend::start().await;
    let proxy = start_proxy(echo.addr, &[]);
    let pid = proxy.pid();
    let addr = proxy.addr();

    // Warm-up so that the runtime and allocator reach their steady state before the baseline.
    let base_fds = fd_count(pid);
    churn(addr, 2_000, 64, Duration::from_secs(30)).await;
    settle(pid, base_fds).await;
    let base_rss = rss_kib(pid);

    let took = churn(addr, total, 64, limit).await;
    let after_fds = wait_fds_at_most(pid, base_fds, Duration::from_secs(10)).await;
    let after_rss = rss_kib(pid);
    eprintln!(
        "churn: {total} connections in {took:.2?} ({:.0}/s); proxy fds {base_fds} -> {after_fds}; \
         VmRSS {base_rss} KiB -> {after_rss} KiB",
        total as f64 / took.as_secs_f64()
    );
    assert_eq!(after_fds, base_fds, "proxy fds after {total} connections");
    assert!(
        after_rss <= base_rss + base_rss / 10,
        "proxy VmRSS grew from {base_rss} KiB to {after_rss} KiB over {total} connections"
    );
}

// ---------------------------------------------------------------------------------------------
// integrity

/// A reproducible byte stream: 64 KiB blocks, each from its own seeded generator, so a writer and
/// a reader that consume it in different chunk sizes see the same bytes.
struct Stream {
    seed: u64,
    block: Vec<u8>,
    index: u64,
    pos: usize,
}

impl Stream {
    const BLOCK: usize = 64 * 1024;

    fn new(seed: u64) -> Stream {
        let mut s = Stream {
            seed,
            block: vec![0; Self::BLOCK],
            index: 0,
            pos: 0,
        };
        s.refill();
        s
    }

    fn refill(&mut self) {
        let mut rng =
            fastrand::Rng::with_seed(self.seed ^ self.index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.fill(&mut self.block);
    }

    /// The next `out.len()` bytes of the stream.
    fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == Self::BLOCK {
                self.index += 1;
                self.pos = 0;
                self.refill();
            }
            let n = (out.len() - done).min(Self::BLOCK - self.pos);
            out[done..done + n].copy_from_slice(&self.block[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
    }
}

/// Writes `len` bytes of stream `seed` in random chunk sizes (1 byte .. 256 KiB, biased small),
/// then half-closes.
async fn send_stream<W: AsyncWrite + Unpin>(w: &mut W, seed: u64, len: u64) {
    let mut stream = Stream::new(seed);
    let mut rng = fastrand::Rng::with_seed(seed.rotate_left(17));
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < len {
        let max = match rng.u8(0..4) {
            0 => 64,
            1 => 1500,
            2 => 16 * 1024,
            _ => 256 * 1024,
        };
        let n = (rng.usize(1..=max) as u64).min(len - sent) as usize;
        stream.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).await.expect("send stream");
        sent += n as u64;
    }
    w.shutdown().await.expect("half-close after the stream");
}

/// Reads `len` bytes in random read sizes and checks them against stream `seed`; then expects
/// `trailer` and EOF.
async fn check_stream<R: AsyncRead + Unpin>(r: &mut R, seed: u64, len: u64, trailer: &[u8]) {
    let mut stream = Stream::new(seed);
    let mut rng = fastrand::Rng::with_seed(seed.rotate_left(29));
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < len {
        let cap = (rng.usize(1..=buf.len()) as u64).min(len - got) as usize;
        let n = r.read(&mut buf[..cap]).await.expect("read stream");
        assert!(n > 0, "EOF after {got} of {len} bytes of stream {seed:#x}");
        stream.fill(&mut want[..n]);
        if buf[..n] != want[..n] {
            let at = (0..n).find(|&k| buf[k] != want[k]).unwrap();
            panic!(
                "stream {seed:#x}: byte {} differs (got {:#04x}, want {:#04x})",
                got + at as u64,
                buf[at],
                want[at]
            );
        }
        got += n as u64;
    }
    expect_bytes(r, trailer, "trailer").await;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.expect("read to EOF");
    assert!(rest.is_empty(), "{} bytes after the stream", rest.len());
}

/// A backend that greets, reads the client's 8-byte connection number `k`, then at once sends
/// stream `2k+2` and checks the client's stream `2k+1`, each direction half-closing on its own
/// schedule. Sends `()` on `done` per connection that checked out.
async fn duplex_backend(
    len: u64,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let done = done.clone();
            tokio::spawn(async move {
                let (mut rd, mut wr) = sock.into_split();
                wr.write_all(GREETING).await.unwrap();
                let k = rd.read_u64().await.expect("connection number");
                tokio::join!(
                    send_stream(&mut wr, 2 * k + 2, len),
                    check_stream(&mut rd, 2 * k + 1, len, b"")
                );
                let _ = done.send(());
            });
        }
    });
    (addr, rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_bytes_arrive_intact_both_ways() {
    let _serial = SERIAL.lock().await;
    const MIB: u64 = 1024 * 1024;
    let per_direction = if long() { 1024 * MIB } else { 128 * MIB };
    let limit = Duration::from_secs(if long() { 600 } else { 60 });
    const STREAMS: u64 = 4;
    let len = per_direction / STREAMS;

    // Independent streams in each direction, to a backend that sends while it receives.
    let (backend, mut done, backend_task) = duplex_backend(len).await;
    let proxy = start_proxy(backend, &[]);
    let addr = proxy.addr();
    let started = Instant::now();
    let mut set = JoinSet::new();
    for k in 0..STREAMS {
        set.spawn(async move {
            let c = TcpStream::connect(addr).await.unwrap();
            let (mut rd, mut wr) = c.into_split();
            expect_bytes(&mut rd, GREETING, "duplex greeting").await;
            wr.write_u64(k).await.unwrap();
            tokio::join!(
                send_stream(&mut wr, 2 * k + 1, len),
                check_stream(&mut rd, 2 * k + 2, len, b"")
            );
        });
    }
    timeout(limit, async {
        while let Some(r) = set.join_next().await {
            r.expect("duplex client");
        }
        for _ in 0..STREAMS {
            done.recv().await.expect("backend side finished");
        }
    })
    .await
    .expect("bulk duplex transfer within the time limit");
    let took = started.elapsed();
    eprintln!(
        "integrity (duplex, {STREAMS} connections): {} MiB each way in {took:.2?} = {:.0} MiB/s \
         through the proxy (both directions counted)",
        per_direction / MIB,
        (2 * per_direction / MIB) as f64 / took.as_secs_f64()
    );
    backend_task.abort();
    drop(proxy);

    // The echo backend: one connection, writes and reads concurrently, half-close then FAREWELL.
    let echo = EchoBackend::start().await;
    let proxy = start_proxy(echo.addr, &[]);
    let echo_len = per_direction / 4;
    let started = Instant::now();
    let c = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    expect_bytes(&mut rd, GREETING, "echo greeting").await;
    timeout(limit, async {
        tokio::join!(
            send_stream(&mut wr, 0xEC40, echo_len),
            check_stream(&mut rd, 0xEC40, echo_len, FAREWELL)
        );
    })
    .await
    .expect("echo transfer within the time limit");
    let took = started.elapsed();
    eprintln!(
        "integrity (echo, half-close): {} MiB in {took:.2?} = {:.0} MiB/s",
        echo_len / MIB,
        (echo_len / MIB) as f64 / took.as_secs_f64()
    );
}
