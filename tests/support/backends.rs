//! Scripted TCP backends for byte-level tests: they behave like a MySQL server only in that they
//! speak first (a greeting), which the proxy waits for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Greeting every scripted backend sends first.
pub const GREETING: &[u8] = b"HELLO\n";
/// What the echo backend sends after the client half-closed.
pub const FAREWELL: &[u8] = b"BYE\n";

/// Echo backend: sends [`GREETING`], echoes everything, and after the client's EOF sends
/// [`FAREWELL`] and closes its side. Runs until dropped.
pub struct EchoBackend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoBackend {
    pub async fn start() -> EchoBackend {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> EchoBackend {
        let listener = TcpListener::bind(addr).await.expect("bind echo backend");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    if sock.write_all(GREETING).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match sock.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => {
                                if sock.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                    let _ = sock.write_all(FAREWELL).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        EchoBackend { addr, task }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A port on 127.0.0.1 with nothing listening (bound once, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A backend that accepts TCP but never sends anything (a hung server). Runs until dropped.
pub struct SilentBackend {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SilentBackend {
    pub async fn start() -> SilentBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        SilentBackend {
            addr,
            accepted,
            task,
        }
    }

    /// How many connections it has accepted (each then waits for a greeting that never comes).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (polling every 10 ms, at most `limit`) until it has accepted `n` connections;
    /// panics on timeout.
    pub async fn wait_accepted(&self, n: usize, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        while self.accepted() < n {
            assert!(
                start.elapsed() < limit,
                "the silent backend accepted {} connections, not {n}, within {limit:?}",
                self.accepted()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for SilentBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to `addr` (the proxy) and reads the scripted backend's [`GREETING`].
pub async fn greeted(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut g = [0u8; GREETING.len()];
    tokio::time::timeout(std::time::Duration::from_secs(30), c.read_exact(&mut g))
        .await
        .expect("greeting timed out")
        .expect("greeting");
    assert_eq!(&g, GREETING);
    c
}

/// Sends a ping through an echo connection; true when it comes back within 5 s.
pub async fn echoes(c: &mut tokio::net::TcpStream) -> bool {
    if c.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut b = [0u8; 4];
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), c.read_exact(&mut b)).await,
        Ok(Ok(_))
    ) && &b == b"ping"
}
