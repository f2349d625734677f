//! The accept loop: binds the listening sockets and turns accepted sockets into connection tasks.
//!
//! The connection cap is a semaphore whose permit is taken *before* `accept()`: while the proxy
//! is full it stops accepting, so extra clients wait in the kernel's backlog and cost us no
//! memory. The permit moves into the connection task and is released when it ends. Accept
//! errors (EMFILE, ENOBUFS…) back off exponentially instead of spinning.
//!
//! A PHP-style client connects for every request, so the accept path is kept to the syscalls a
//! connection needs: TCP_NODELAY is set once on the listening socket, which Linux copies to
//! every accepted socket, and the one stop-signal waiter lives as long as the loop instead of
//! being registered twice per accept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, warn};

use super::connection::{self, ConnContext};

/// Kernel accept backlog: clients beyond `max_connections` wait here.
const BACKLOG: i32 = 1024;

/// Binds a listening socket. With `reuse_port`, several workers can bind the same address.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts clients on `listener` until `stop` is cancelled; each runs as a task of `tracker`.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: ConnContext,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(10);
    // Connections log inside the accept loop's span (the route's name); looked up once, not
    // per connection.
    let span = tracing::Span::current();
    let inherits_nodelay = nodelay_on_listener(&listener);
    let single_threaded = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread;
    // One waiter for the whole loop: a fresh `cancelled()` per select would register and
    // unregister a waiter on the token twice per accepted connection.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // semaphore closed: shutting down
            },
            () = &mut stopped => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => return,
        };
        match accepted {
            Ok((socket, client_addr)) => {
                backoff = Duration::from_millis(10);
                if single_threaded {
                    forget_assumed_readable(&socket);
                }
                if !inherits_nodelay && let Err(e) = socket.set_nodelay(true) {
                    tracing::debug!(side = "client", %client_addr, error = %e, "cannot set TCP_NODELAY");
                }
                let ctx = ctx.clone();
                tracker.spawn(
                    async move {
                        connection::serve(socket, client_addr, ctx).await;
                        drop(permit);
                    }
                    .instrument(span.clone()),
                );
            }
            Err(e) => {
                warn!(side = "client", error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut stopped => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Sets TCP_NODELAY on the listening socket. Linux copies a listener's TCP_NODELAY to the
/// sockets it accepts, which saves a `setsockopt` per connection; elsewhere (or if the listener
/// refuses) every accepted socket is set on its own. Returns whether accepted sockets inherit it.
fn nodelay_on_listener(listener: &TcpListener) -> bool {
    cfg!(any(target_os = "linux", target_os = "android"))
        && SockRef::from(listener).set_tcp_nodelay(true).is_ok()
}

/// tokio marks a freshly accepted socket readable before any event, betting that the client
/// spoke first. A MySQL client never does (the server greets first), and the relay only starts
/// after the greeting, so the bet costs one `recv` that returns EAGAIN on every connection.
/// Dropping the assumption right after `accept` is exact on a single-threaded runtime (the
/// proxy's workers): no event for this socket can have been processed yet, since that
/// runtime's driver never runs inside a task's poll, and epoll reports bytes that arrived
/// before or after the registration as a fresh event, so nothing the client sends is missed.
/// On a multi-threaded runtime another thread's driver could already have seen a real event,
/// which this would erase, so the caller keeps tokio's default there.
fn forget_assumed_readable(socket: &TcpStream) {
    // `try_io` clears the readiness it saw when the closure says WouldBlock; no syscall is made.
    let _ = socket.try_io(Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
}
