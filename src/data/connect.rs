//! Opening the backend side of a connection: TCP connect with a timeout, the socket options a
//! long-lived database connection needs (TCP_NODELAY, keepalive, TCP_USER_TIMEOUT), and the
//! greeting wait — a MySQL server speaks first, so a server that accepts TCP but sends nothing
//! is hung and counts as a failed connect. The greeting is never consumed: the socket turning
//! readable is the proof, and its bytes are peeked at only when the socket also says closed.
//!
//! A PHP-style client pays for this on every request, so an attempt is kept to the syscalls
//! it needs: the options go on the socket before its connect, the outcome of the handshake and
//! the greeting are read from the socket's readiness (no `getsockopt`, no peek when all is
//! well), and one timer carries every limit of the attempt (connect, then greeting, never past
//! the caller's hold deadline).
//!
//! Failures are a typed [`ConnectError`]; its [`label`](ConnectError::label) is the `reason` of
//! `backend_connect_errors_total`, its `Display` the one-line cause a held client's ERR packet
//! carries.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncWriteExt, Interest, Ready};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::Config;
use crate::control::primary::Backend;

/// Why a connect to the primary failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Refused(std::io::Error),
    #[error("connect timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("backend sent no greeting within {} (hung server?)", humantime::format_duration(*.0))]
    NoGreeting(Duration),
    #[error("backend closed the connection before its greeting")]
    ClosedBeforeGreeting,
    #[error("error waiting for greeting: {0}")]
    Reset(std::io::Error),
    #[error("{0}")]
    Unreachable(std::io::Error),
    #[error("cannot create socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot set socket options: {0}")]
    SocketOptions(std::io::Error),
    #[error("cannot send the PROXY protocol header: {0}")]
    ProxyHeader(std::io::Error),
    #[error("{0}")]
    Other(std::io::Error),
    /// The caller's deadline (the held client's `hold_timeout`) came before the attempt ended:
    /// not the backend's failure, so it is reported by the caller and never counted.
    #[error("the attempt was still under way when the caller's deadline came")]
    OutOfTime,
}

impl ConnectError {
    /// The `reason` label of `backend_connect_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectError::Refused(_) => "refused",
            ConnectError::Timeout(_) => "timeout",
            ConnectError::NoGreeting(_) => "no_greeting",
            ConnectError::ClosedBeforeGreeting
            | ConnectError::Reset(_)
            | ConnectError::ProxyHeader(_) => "reset",
            ConnectError::Unreachable(_) => "unreachable",
            ConnectError::Socket(_)
            | ConnectError::SocketOptions(_)
            | ConnectError::Other(_)
            | ConnectError::OutOfTime => "other",
        }
    }

    fn from_connect(e: std::io::Error) -> ConnectError {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::ConnectionRefused => ConnectError::Refused(e),
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                ConnectError::Unreachable(e)
            }
            ErrorKind::TimedOut => ConnectError::Unreachable(e),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => ConnectError::Reset(e),
            _ => ConnectError::Other(e),
        }
    }
}

/// Connects to `backend` and waits for its greeting, within `connect_timeout` for the TCP
/// handshake and then `backend_greeting_timeout` for the first bytes, and never past
/// `give_up` (the client's hold deadline; [`ConnectError::OutOfTime`]).
/// `proxy_header` (PROXY protocol) is written first, before the server's greeting is awaited:
/// the server reads it with the client's first packet.
pub async fn connect(
    config: &Config,
    backend: &Backend,
    proxy_header: Option<&[u8]>,
    give_up: Instant,
) -> Result<TcpStream, ConnectError> {
    let mut stream = start_connect(config, backend.addr)?;
    // One timer for the whole attempt: moving its deadline later (connect limit, then greeting
    // limit) is an update in place, where a timer per limit would be two more registrations.
    let connect_by = Instant::now() + config.connect_timeout;
    let limit = tokio::time::sleep_until(connect_by.min(give_up));
    tokio::pin!(limit);
    let out_of_time = |limit_was: Instant, error: ConnectError| {
        if limit_was >= give_up {
            ConnectError::OutOfTime
        } else {
            error
        }
    };

    let ready = within(
        &mut limit,
        stream.ready(Interest::READABLE | Interest::WRITABLE),
    )
    .await
    .ok_or_else(|| out_of_time(connect_by, ConnectError::Timeout(config.connect_timeout)))?
    .map_err(ConnectError::from_connect)?;
    if ready.is_error() || ready.is_write_closed() {
        // The handshake failed (refused, unreachable): the socket's error says why. Without
        // one the peer closed right after accepting, which the greeting check reports.
        if let Some(e) = stream.take_error().map_err(ConnectError::Other)? {
            return Err(ConnectError::from_connect(e));
        }
    }

    let greet_by = Instant::now() + config.backend_greeting_timeout;
    limit.as_mut().reset(greet_by.min(give_up));
    let no_greeting = || {
        out_of_time(
            greet_by,
            ConnectError::NoGreeting(config.backend_greeting_timeout),
        )
    };
    if let Some(header) = proxy_header {
        // A fresh socket's send buffer takes these few dozen bytes at once.
        within(&mut limit, stream.write_all(header))
            .await
            .ok_or_else(no_greeting)?
            .map_err(ConnectError::ProxyHeader)?;
    }
    let ready = if ready.is_readable() {
        ready
    } else {
        within(&mut limit, stream.ready(Interest::READABLE))
            .await
            .ok_or_else(no_greeting)?
            .map_err(ConnectError::Reset)?
    };
    check_greeting(&stream, ready).await?;
    Ok(stream)
}

/// Creates the backend socket with its options and starts a non-blocking connect.
///
/// The options are set before the SYN is sent (they hold for the connection's life either
/// way), and the connect's outcome is read from the socket's readiness afterwards: writable
/// and no error is established, so the `getsockopt(SO_ERROR)` a plain connect makes is only
/// needed when the handshake failed.
fn start_connect(config: &Config, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )
    .map_err(ConnectError::Socket)?;
    tune_backend_socket(config, &socket).map_err(ConnectError::SocketOptions)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(ConnectError::from_connect(e)),
    }
    TcpStream::from_std(socket.into()).map_err(ConnectError::Socket)
}

fn tune_backend_socket(config: &Config, sock: &Socket) -> std::io::Result<()> {
    sock.set_tcp_nodelay(true)?;
    if let Some(idle) = config.backend_keepalive {
        // Probe every third of the idle time, three times: a dead peer is found in ~2×idle.
        let interval = (idle / 3).max(Duration::from_secs(1));
        let keepalive = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval)
            .with_retries(3);
        sock.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(user_timeout) = config.backend_user_timeout {
        sock.set_tcp_user_timeout(Some(user_timeout))?;
    }
    Ok(())
}

/// Runs `work` until `limit` fires; `None` if it fired first.
async fn within<T>(limit: &mut Pin<&mut Sleep>, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        done = work => Some(done),
        () = limit.as_mut() => None,
    }
}

/// The server has spoken (MySQL servers speak first) when its socket turned readable, and the
/// bytes stay in the socket for the relay. Only a readiness that also says closed or failed
/// needs a look at the bytes themselves (a peek, never a read): a greeting followed at once by
/// a close (an ERR such as "too many connections") still counts as spoken.
async fn check_greeting(stream: &TcpStream, ready: Ready) -> Result<(), ConnectError> {
    if !ready.is_read_closed() && !ready.is_error() {
        return Ok(());
    }
    let mut header = [0u8; 4];
    match stream.peek(&mut header).await {
        Ok(0) => Err(ConnectError::ClosedBeforeGreeting),
        Ok(_) => Ok(()),
        Err(e) => Err(ConnectError::Reset(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const GREETING: &[u8] = b"\x0a\x00\x00\x00\x0agreeting";

    fn config(greeting_timeout: Duration) -> Config {
        Config::resolve(Settings {
            backend: Some("127.0.0.1:1".parse().unwrap()),
            backend_greeting_timeout: Some(greeting_timeout),
            ..Settings::default()
        })
        .unwrap()
    }

    /// A backend on a free port whose accepted socket is handed to `serve`; every test ends on
    /// the connect's own outcome, bounded by the 5 s below.
    async fn backend<F, Fut>(serve: F) -> Backend
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((socket, _)) = listener.accept().await {
                serve(socket).await;
            }
        });
        Backend::new(addr, addr.to_string())
    }

    /// A backend that accepts and says nothing until the returned sender is dropped.
    async fn silent_backend() -> (Backend, tokio::sync::oneshot::Sender<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let b = backend(|s| async move {
            let _ = rx.await;
            drop(s);
        })
        .await;
        (b, tx)
    }

    async fn attempt(
        config: &Config,
        backend: &Backend,
        give_up: Duration,
    ) -> Result<TcpStream, ConnectError> {
        let give_up = Instant::now() + give_up;
        tokio::time::timeout(
            Duration::from_secs(5),
            connect(config, backend, None, give_up),
        )
        .await
        .expect("connect ended within 5 s")
    }

    #[tokio::test]
    async fn greeting_is_left_in_the_socket_for_the_relay() {
        let b = backend(|mut s| async move {
            s.write_all(GREETING).await.unwrap();
            let _ = s.read(&mut [0u8; 1]).await;
        })
        .await;
        let mut stream = attempt(&config(Duration::from_secs(2)), &b, Duration::from_secs(4))
            .await
            .unwrap();
        let mut got = vec![0u8; GREETING.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, GREETING);
        assert!(stream.nodelay().unwrap(), "backend socket has TCP_NODELAY");
    }

    #[tokio::test]
    async fn greeting_then_close_counts_as_spoken() {
        // e.g. an ERR packet ("too many connections") and a close: the client must see it.
        let b = backend(|mut s| async move {
            s.write_all(GREETING).await.unwrap();
        })
        .await;
        let mut stream = attempt(&config(Duration::from_secs(2)), &b, Duration::from_secs(4))
            .await
            .unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, GREETING);
    }

    #[tokio::test]
    async fn close_without_greeting_and_silence_are_failures() {
        let closes = backend(|s| async move { drop(s) }).await;
        let e = attempt(
            &config(Duration::from_secs(2)),
            &closes,
            Duration::from_secs(4),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConnectError::ClosedBeforeGreeting | ConnectError::Reset(_)
            ),
            "{e:?}"
        );

        let (silent, _quiet) = silent_backend().await;
        let e = attempt(
            &config(Duration::from_millis(200)),
            &silent,
            Duration::from_secs(4),
        )
        .await
        .unwrap_err();
        assert_eq!(e.label(), "no_greeting", "{e:?}");
    }

    #[tokio::test]
    async fn refused_and_the_callers_deadline_are_told_apart() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = Backend::new(listener.local_addr().unwrap(), "closed");
        drop(listener);
        let e = attempt(
            &config(Duration::from_secs(2)),
            &closed,
            Duration::from_secs(4),
        )
        .await
        .unwrap_err();
        assert_eq!(e.label(), "refused", "{e:?}");

        // A silent server with a greeting limit beyond the caller's deadline: out of time.
        let (silent, _quiet) = silent_backend().await;
        let e = attempt(
            &config(Duration::from_secs(3)),
            &silent,
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ConnectError::OutOfTime), "{e:?}");
    }

    #[test]
    fn labels_are_listed_and_messages_unchanged() {
        let refused =
            ConnectError::from_connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(refused.label(), "refused");
        let timeout = ConnectError::Timeout(Duration::from_secs(2));
        assert_eq!(timeout.to_string(), "connect timed out after 2s");
        let hung = ConnectError::NoGreeting(Duration::from_millis(500));
        assert_eq!(
            hung.to_string(),
            "backend sent no greeting within 500ms (hung server?)"
        );
        for e in [refused, timeout, hung, ConnectError::ClosedBeforeGreeting] {
            assert!(["refused", "timeout", "no_greeting", "reset"].contains(&e.label()));
        }
    }
}
