//! The reference relay: tokio's `copy_bidirectional` (two 8 KiB buffers per connection for its
//! whole life), with the same result type as the [`pump`](super::pump). Kept as `--relay copy`
//! so the lean pump can always be compared with, and tested against, the obvious implementation.

#![forbid(unsafe_code)]

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{RelayError, RelayStats, Side, Tap};

/// Reference relay: [`tokio::io::copy_bidirectional`] (two 8 KiB buffers per
/// connection for its whole life) with the same result type as [`pump`].
/// Byte counts, first EOF and the failing side are recorded by thin wrappers
/// around the sockets, so they are exact rather than guessed.
///
/// [`pump`]: super::pump::pump
pub async fn copy(
    client: &mut TcpStream,
    backend: &mut TcpStream,
) -> Result<RelayStats, RelayError> {
    copy_tapped(client, backend, &mut ()).await
}

/// [`copy`] with `tap` shown every chunk as `copy_bidirectional` writes it, and asked after
/// every poll in which nothing read is left unwritten whether the relay should end.
pub async fn copy_tapped<T: Tap + Send>(
    client: &mut TcpStream,
    backend: &mut TcpStream,
    tap: &mut T,
) -> Result<RelayStats, RelayError> {
    let shared = Shared {
        first_eof: AtomicU8::new(NO_EOF),
        read: Default::default(),
        written: Default::default(),
        tap: Mutex::new(tap),
    };
    let mut c = Tracked::new(client, Side::Client, &shared);
    let mut b = Tracked::new(backend, Side::Backend, &shared);
    let result = {
        let mut copying = pin!(tokio::io::copy_bidirectional(&mut c, &mut b));
        poll_fn(|cx| {
            if let Poll::Ready(r) = copying.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            if shared.nothing_unwritten() && shared.with_tap(|t| t.leave_now()) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    };
    let stats = RelayStats {
        from_client: shared.written(Side::Backend),
        from_backend: shared.written(Side::Client),
        first_eof: match shared.first_eof.load(Ordering::Relaxed) {
            CLIENT_EOF => Some(Side::Client),
            BACKEND_EOF => Some(Side::Backend),
            _ => None,
        },
        left_idle: result.is_none(),
    };
    match result {
        None | Some(Ok(_)) => Ok(stats),
        Some(Err(source)) => Err(RelayError {
            side: if c.failed {
                Side::Client
            } else {
                Side::Backend
            },
            source,
            stats,
        }),
    }
}

const NO_EOF: u8 = 0;
const CLIENT_EOF: u8 = 1;
const BACKEND_EOF: u8 = 2;

/// What both socket wrappers record, and the tap they show written bytes to. (Atomics and a
/// mutex rather than cells keep the future `Send`; the mutex is never contended: one task.)
struct Shared<'t, T> {
    first_eof: AtomicU8,
    /// Bytes read from each side's socket (index: `Side as usize`).
    read: [AtomicU64; 2],
    /// Bytes written to each side's socket.
    written: [AtomicU64; 2],
    tap: Mutex<&'t mut T>,
}

impl<T: Tap> Shared<'_, T> {
    fn written(&self, to: Side) -> u64 {
        self.written[to as usize].load(Ordering::Relaxed)
    }

    /// Everything read from either side has been written to the other.
    fn nothing_unwritten(&self) -> bool {
        let read = |s: Side| self.read[s as usize].load(Ordering::Relaxed);
        read(Side::Client) == self.written(Side::Backend)
            && read(Side::Backend) == self.written(Side::Client)
    }

    fn with_tap<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut tap = self
            .tap
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut tap)
    }
}

/// A socket as seen by `copy_bidirectional`, recording bytes read and written, EOF order and
/// whether its I/O failed.
struct Tracked<'a, 't, T> {
    io: &'a mut TcpStream,
    side: Side,
    failed: bool,
    shared: &'a Shared<'t, T>,
}

impl<'a, 't, T> Tracked<'a, 't, T> {
    fn new(io: &'a mut TcpStream, side: Side, shared: &'a Shared<'t, T>) -> Self {
        Tracked {
            io,
            side,
            failed: false,
            shared,
        }
    }

    fn note<R>(&mut self, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(_)) = r {
            self.failed = true;
        }
        r
    }
}

impl<T: Tap> AsyncRead for Tracked<'_, '_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            this.shared.read[this.side as usize].fetch_add(n, Ordering::Relaxed);
        }
        // A successful read that added nothing to a non-full buffer is EOF.
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            let code = match this.side {
                Side::Client => CLIENT_EOF,
                Side::Backend => BACKEND_EOF,
            };
            // Only the first EOF is recorded.
            let _ = this.shared.first_eof.compare_exchange(
                NO_EOF,
                code,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        this.note(r)
    }
}

impl<T: Tap> AsyncWrite for Tracked<'_, '_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            // Bytes written to this socket came from the other side.
            let from = this.side.peer();
            this.shared.with_tap(|t| t.relayed(from, &buf[..n]));
            this.shared.written[this.side as usize].fetch_add(n as u64, Ordering::Relaxed);
        }
        this.note(r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.io).poll_flush(cx);
        this.note(r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.io).poll_shutdown(cx);
        this.note(r)
    }
}
