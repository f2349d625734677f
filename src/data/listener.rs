//! The accept loop: binds the listening sockets and turns accepted sockets into connection tasks.
//!
//! The connection cap is a semaphore whose permit is taken *before* `accept()`: while the proxy
//! is full it stops accepting, so extra clients wait in the kernel's backlog and cost us no
//! memory. The permit moves into the connection task and is released when it ends. Accept
//! errors (EMFILE, ENOBUFS…) back off exponentially instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
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
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // semaphore closed: shutting down
            },
            () = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((socket, client_addr)) => {
                backoff = Duration::from_millis(10);
                if let Err(e) = socket.set_nodelay(true) {
                    tracing::debug!(side = "client", %client_addr, error = %e, "cannot set TCP_NODELAY");
                }
                let ctx = ctx.clone();
                // The connection logs inside the accept loop's span (the route's name).
                tracker.spawn(
                    async move {
                        connection::serve(socket, client_addr, ctx).await;
                        drop(permit);
                    }
                    .instrument(tracing::Span::current()),
                );
            }
            Err(e) => {
                warn!(side = "client", error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
