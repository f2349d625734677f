//! The reference relay: tokio's `copy_bidirectional` (two 8 KiB buffers per connection for its
//! whole life), with the same result type as the [`pump`](super::pump). Kept as `--relay copy`
//! so the lean pump can always be compared with, and tested against, the obvious implementation.

#![forbid(unsafe_code)]

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{RelayError, RelayStats, Side};

/// Reference relay: [`tokio::io::copy_bidirectional`] (two 8 KiB buffers per
/// connection for its whole life) with the same result type as [`pump`].
/// Byte counts, first EOF and the failing side are recorded by thin wrappers
/// around the sockets, so they are exact rather than guessed.
pub async fn copy(
    client: &mut TcpStream,
    backend: &mut TcpStream,
) -> Result<RelayStats, RelayError> {
    let first_eof = AtomicU8::new(NO_EOF);
    let mut c = Tracked::new(client, Side::Client, &first_eof);
    let mut b = Tracked::new(backend, Side::Backend, &first_eof);
    let result = tokio::io::copy_bidirectional(&mut c, &mut b).await;
    let stats = RelayStats {
        from_client: b.written,
        from_backend: c.written,
        first_eof: match first_eof.load(Ordering::Relaxed) {
            CLIENT_EOF => Some(Side::Client),
            BACKEND_EOF => Some(Side::Backend),
            _ => None,
        },
    };
    match result {
        Ok(_) => Ok(stats),
        Err(source) => Err(RelayError {
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

/// A socket as seen by `copy_bidirectional`, recording bytes written, EOF
/// order and whether its I/O failed. (An atomic rather than a `Cell` for the
/// shared EOF slot keeps the future `Send`.)
struct Tracked<'a> {
    io: &'a mut TcpStream,
    side: Side,
    written: u64,
    failed: bool,
    first_eof: &'a AtomicU8,
}

impl<'a> Tracked<'a> {
    fn new(io: &'a mut TcpStream, side: Side, first_eof: &'a AtomicU8) -> Self {
        Tracked {
            io,
            side,
            written: 0,
            failed: false,
            first_eof,
        }
    }

    fn note<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = r {
            self.failed = true;
        }
        r
    }
}

impl AsyncRead for Tracked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.io).poll_read(cx, buf);
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
            let _ =
                this.first_eof
                    .compare_exchange(NO_EOF, code, Ordering::Relaxed, Ordering::Relaxed);
        }
        this.note(r)
    }
}

impl AsyncWrite for Tracked<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.written += n as u64;
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
