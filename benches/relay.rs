//! Relay micro-benchmarks: what one relay hop costs, on loopback, in one process.
//!
//! Three paths to the same in-process backend server:
//!
//! * `direct`: the client talks to the backend itself (the floor);
//! * `pump`: through [`consul_mysql_proxy::data::relay::pump::pump`], the lean readiness-based relay
//!   (`--relay pump`, the default);
//! * `copy`: through [`consul_mysql_proxy::data::relay::copy::copy`] (tokio's `copy_bidirectional`,
//!   `--relay copy`, the reference).
//!
//! ```text
//!   bench thread (blocking std client) ──▶ relay thread (current_thread runtime, like one
//!   proxy worker: accept, connect, TCP_NODELAY, one task per connection running pump/copy)
//!   ──▶ backend thread (current_thread runtime: echo, bulk and greeting servers)
//! ```
//!
//! Benchmarks (each for the three paths):
//!
//! * `pingpong_128B`: one 128-byte request, one 128-byte answer on an open connection — the
//!   latency a relay adds to every small MySQL query;
//! * `download_8MiB` / `upload_8MiB`: one 8 MiB transfer backend→client (a large result set or
//!   blob SELECT) or client→backend (a blob INSERT) on an open connection; reported as bytes/s;
//! * `connect_greeting`: connect, read a 78-byte server greeting (MySQL servers speak first),
//!   close — the new-connection rate, including the relay's own connect to the backend.
//!
//! Nothing here asserts a timing. The default run is short (3 s per benchmark, 20 samples;
//! about 1.5 minutes in all); `cargo test --benches` runs each benchmark once as a smoke test.
//! The end-to-end numbers against MariaDB and HAProxy come from `scripts/bench.sh`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of the ping-pong messages: a typical small query and its small result.
/// One bulk transfer direction over an established stream, with a scratch buffer.
type BulkOp = fn(&mut StdStream, &mut [u8]);

const PING: usize = 128;
/// Size of one bulk transfer.
const BULK: u64 = 8 * 1024 * 1024;
/// Size of the greeting the backend sends on accept (a MariaDB 10.11 handshake is ~78 bytes).
const GREETING: usize = 78;
/// Deadline for any single blocking client operation: a broken relay fails the bench instead of
/// hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The path a benchmark client takes to the backend.
#[derive(Clone, Copy, Debug)]
enum Path {
    Direct,
    Pump,
    Copy,
}

impl Path {
    const ALL: [Path; 3] = [Path::Direct, Path::Pump, Path::Copy];

    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Pump => "pump",
            Path::Copy => "copy",
        }
    }
}

/// Backend servers, running on their own thread for the life of the process.
#[derive(Clone, Copy)]
struct Backend {
    /// Echoes every byte back.
    echo: SocketAddr,
    /// Reads requests `op:u8, len:u64 BE`: `D` → writes `len` bytes; `U` → reads `len` bytes,
    /// then writes a 1-byte ack.
    bulk: SocketAddr,
    /// Writes a [`GREETING`]-byte greeting on accept, then waits for EOF and closes.
    greeting: SocketAddr,
}

/// Runs `serve` on a new thread with a current_thread runtime, and returns once `setup` (run on
/// that runtime first) has produced its value (typically bound addresses).
fn spawn_runtime_thread<T, S, F>(name: &str, setup: S) -> T
where
    T: Send + 'static,
    S: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                tx.send(setup().await).expect("send setup result");
                // Keep the runtime (and the tasks spawned by `setup`) alive forever; the thread
                // ends with the process.
                std::future::pending::<()>().await;
            });
        })
        .expect("spawn runtime thread");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("runtime thread setup")
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("local addr");
    (l, addr)
}

fn start_backend() -> Backend {
    spawn_runtime_thread("backend", || async {
        let (echo_l, echo) = bind().await;
        let (bulk_l, bulk) = bind().await;
        let (greet_l, greeting) = bind().await;
        tokio::task::spawn_local(accept_each(echo_l, serve_echo));
        tokio::task::spawn_local(accept_each(bulk_l, serve_bulk));
        tokio::task::spawn_local(accept_each(greet_l, serve_greeting));
        Backend {
            echo,
            bulk,
            greeting,
        }
    })
}

/// Accepts forever, one local task per connection; per-connection errors just end that task.
async fn accept_each<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + 'static,
{
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        let fut = serve(s);
        tokio::task::spawn_local(async move {
            let _ = fut.await;
        });
    }
}

async fn serve_echo(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn serve_bulk(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0x5au8; 64 * 1024];
    loop {
        let mut hdr = [0u8; 9];
        match s.read_exact(&mut hdr).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut left = u64::from_be_bytes(hdr[1..].try_into().expect("8 bytes"));
        match hdr[0] {
            b'D' => {
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    s.write_all(&buf[..n]).await?;
                    left -= n as u64;
                }
            }
            b'U' => {
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = s.read(&mut buf[..want]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    left -= n as u64;
                }
                s.write_all(b"k").await?;
            }
            op => {
                return Err(std::io::Error::other(format!("bad bulk op {op}")));
            }
        }
    }
}

async fn serve_greeting(mut s: TcpStream) -> std::io::Result<()> {
    s.write_all(&[0x0a; GREETING]).await?;
    let mut sink = [0u8; 256];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}

/// A relay listener in front of one backend address, on its own single-threaded runtime (one
/// proxy worker): per accepted client it connects to the backend, sets TCP_NODELAY on both
/// sockets as the proxy does, and runs the pump in a task of its own.
fn start_relay(path: Path, backend: SocketAddr) -> SocketAddr {
    spawn_runtime_thread(&format!("relay-{}", path.name()), move || async move {
        let (listener, addr) = bind().await;
        tokio::task::spawn_local(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::task::spawn_local(async move {
                    let Ok(mut server) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = match path {
                        Path::Pump => {
                            consul_mysql_proxy::data::relay::pump::pump(&mut client, &mut server)
                                .await
                        }
                        Path::Copy => {
                            consul_mysql_proxy::data::relay::copy::copy(&mut client, &mut server)
                                .await
                        }
                        Path::Direct => unreachable!("no relay for the direct path"),
                    };
                });
            }
        });
        addr
    })
}

/// Where each path connects to, per backend server.
struct Targets {
    echo: SocketAddr,
    bulk: SocketAddr,
    greeting: SocketAddr,
}

fn targets(path: Path, backend: Backend) -> Targets {
    match path {
        Path::Direct => Targets {
            echo: backend.echo,
            bulk: backend.bulk,
            greeting: backend.greeting,
        },
        relayed => Targets {
            echo: start_relay(relayed, backend.echo),
            bulk: start_relay(relayed, backend.bulk),
            greeting: start_relay(relayed, backend.greeting),
        },
    }
}

fn connect(addr: SocketAddr) -> StdStream {
    let s = StdStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s
}

fn pingpong(s: &mut StdStream, msg: &[u8; PING], back: &mut [u8; PING]) {
    s.write_all(msg).expect("ping write");
    s.read_exact(back).expect("pong read");
}

fn download(s: &mut StdStream, buf: &mut [u8]) {
    let mut req = [b'D'; 9];
    req[1..].copy_from_slice(&BULK.to_be_bytes());
    s.write_all(&req).expect("download request");
    let mut left = BULK as usize;
    while left > 0 {
        let want = left.min(buf.len());
        let n = s.read(&mut buf[..want]).expect("download read");
        assert!(n > 0, "download: EOF with {left} bytes to go");
        left -= n;
    }
}

fn upload(s: &mut StdStream, buf: &mut [u8]) {
    let mut req = [b'U'; 9];
    req[1..].copy_from_slice(&BULK.to_be_bytes());
    s.write_all(&req).expect("upload request");
    let mut left = BULK as usize;
    while left > 0 {
        let n = left.min(buf.len());
        s.write_all(&buf[..n]).expect("upload write");
        left -= n;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).expect("upload ack");
}

fn connect_greeting(addr: SocketAddr) {
    let mut s = connect(addr);
    let mut greeting = [0u8; GREETING];
    s.read_exact(&mut greeting).expect("greeting");
    // Close first, as a MySQL client does after COM_QUIT (loopback reuses TIME_WAIT ports).
    drop(s);
}

fn relay_benches(c: &mut Criterion) {
    let backend = start_backend();
    let paths: Vec<(Path, Targets)> = Path::ALL
        .iter()
        .map(|&p| (p, targets(p, backend)))
        .collect();

    let mut group = c.benchmark_group("pingpong_128B");
    group.throughput(Throughput::Elements(1));
    for (path, t) in &paths {
        let mut s = connect(t.echo);
        let (msg, mut back) = ([0x42u8; PING], [0u8; PING]);
        pingpong(&mut s, &msg, &mut back); // warm the connection
        group.bench_function(BenchmarkId::from_parameter(path.name()), |b| {
            b.iter(|| pingpong(&mut s, &msg, &mut back))
        });
    }
    group.finish();

    let mut buf = vec![0x33u8; 256 * 1024];
    let bulk_ops: [(&str, BulkOp); 2] = [("download_8MiB", download), ("upload_8MiB", upload)];
    for (name, op) in bulk_ops {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(BULK));
        group.sample_size(10);
        for (path, t) in &paths {
            let mut s = connect(t.bulk);
            group.bench_function(BenchmarkId::from_parameter(path.name()), |b| {
                b.iter(|| op(&mut s, &mut buf))
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("connect_greeting");
    group.throughput(Throughput::Elements(1));
    for (path, t) in &paths {
        let addr = t.greeting;
        group.bench_function(BenchmarkId::from_parameter(path.name()), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    connect_greeting(addr);
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// Short by default so `cargo bench` stays a few-minute run; override on the command line
/// (`cargo bench --bench relay -- --measurement-time 10`).
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = relay_benches
}
criterion_main!(benches);
