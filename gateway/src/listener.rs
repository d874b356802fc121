//! The gateway's TCP listener: no Nagle delay on its connections, and one guard: a connection whose peer stops reading cannot
//! hold a write, and with it the connection's buffers and tasks, forever.
//!
//! A client that never reads fills the kernel's send buffer; the server's next write then
//! waits indefinitely, and Socket.IO's own disconnect cannot get through the full queue behind
//! it. [`StallGuard`] fails a write that has made no progress for `write_stall`, which closes
//! the connection: the socket's disconnect handler runs and its user goes offline as usual.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// A TCP listener whose connections give up on stalled writes.
pub struct GuardedListener {
    inner: TcpListener,
    write_stall: Duration,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, write_stall: Duration) -> Self {
        Self { inner, write_stall }
    }
}

impl Listener for GuardedListener {
    type Io = StallGuard<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, address) = Listener::accept(&mut self.inner).await;
        // Socket.IO writes small frames, often two in a row (a sender's own `receive-message`,
        // then its `message-sent`): with Nagle's algorithm the second waits for the peer's
        // delayed ACK, tens of milliseconds.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%address, error = %e, "cannot set TCP_NODELAY");
        }
        (StallGuard::new(stream, self.write_stall), address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The peer address of a connection, for handlers (`ConnectInfo<ClientAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, GuardedListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// An I/O stream whose writes fail after `write_stall` without progress.
pub struct StallGuard<T> {
    inner: T,
    write_stall: Duration,
    /// Running while a write or flush is pending.
    stall: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, write_stall: Duration) -> Self {
        Self { inner, write_stall, stall: None }
    }

    /// Progress resets the clock; no progress runs it down, then fails.
    fn guard<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stall = None;
            return polled;
        }
        let write_stall = self.write_stall;
        let stall = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(write_stall)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading: write stalled")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_to_a_peer_that_never_reads_fails_after_the_stall() {
        let (ours, _theirs) = tokio::io::duplex(1024); // the other end is never read
        let mut guarded = StallGuard::new(ours, Duration::from_millis(200));
        let started = tokio::time::Instant::now();
        let result = guarded.write_all(&[0u8; 64 * 1024]).await;
        let err = result.expect_err("the write must give up");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_reading_peer_is_never_cut() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut sink).await.map(|_| sink.len())
        });
        let mut guarded = StallGuard::new(ours, Duration::from_millis(200));
        guarded.write_all(&[1u8; 256 * 1024]).await.expect("a reading peer takes it all");
        guarded.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 256 * 1024);
    }
}
