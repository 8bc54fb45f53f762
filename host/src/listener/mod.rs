//! What every listener of the host (the API and app traffic, HTTP and
//! HTTPS) bounds, so slow or idle clients cannot hold it:
//!
//! - connections at once (`max_connections`): past it a new connection is
//!   closed as soon as it is accepted;
//! - the time from a connection's start, or the end of its previous answer,
//!   to the complete headers of its next request (`header_read_timeout_ms`,
//!   on a coarse clock, see [`timer`]): slow headers and idle keep-alive
//!   connections are closed;
//! - silence (`idle_timeout_ms`): a connection on which nothing is read or
//!   written for that long is closed, whatever it is doing (a body trickling
//!   in, a client that stopped reading an answer).

mod timer;

use hyper::server::conn::http1;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// One listener's bounds (from `[api]` or `[router]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
    pub max_connections: usize,
}

/// Admits a listener's connections and serves them within its limits.
#[derive(Clone)]
pub struct Admission {
    limits: Limits,
    slots: Arc<Semaphore>,
    header_timer: timer::CoarseTimer,
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        // The header read timeout fires within an eighth of itself (at most
        // a second late).
        let tick = (limits.header_read / 8).clamp(Duration::from_millis(5), Duration::from_secs(1));
        Admission { limits, slots: Arc::new(Semaphore::new(limits.max_connections)), header_timer: timer::CoarseTimer::new(tick) }
    }

    /// A slot for a new connection, or `None` (close it at once) when the
    /// listener already holds `max_connections`.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Wraps an admitted connection; call it on the runtime that serves it
    /// (its timer lives there).
    pub fn watch<IO>(&self, io: IO, slot: OwnedSemaphorePermit) -> Watched<IO> {
        let idle = self.limits.idle;
        Watched { io, idle, last: Instant::now(), timer: Box::pin(tokio::time::sleep(idle)), _permit: slot }
    }

    #[cfg(test)]
    fn admit<IO>(&self, io: IO) -> Option<Watched<IO>> {
        Some(self.watch(io, self.slot()?))
    }

    /// Ends when a request head awaited since `since` is late (the header
    /// read timeout, on the same coarse clock).
    pub fn header_deadline(&self, since: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        hyper::rt::Timer::sleep_until(&self.header_timer, since + self.limits.header_read)
    }

    /// An HTTP/1 server builder with the header read timeout.
    pub fn http1(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder.timer(self.header_timer.clone()).header_read_timeout(self.limits.header_read);
        builder
    }
}

/// A connection that fails its next read or write once nothing has moved on
/// it for `idle`; it holds its listener slot until dropped.
pub struct Watched<IO> {
    io: IO,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl<IO> Watched<IO> {
    fn moved(&mut self) {
        self.last = Instant::now();
    }

    /// What a write came to: progress is noted, waiting is bounded.
    fn wrote(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check_idle(cx).map(Err),
        }
    }

    /// Called when the connection waits: fails once it has waited `idle`.
    /// The timer is moved only when it fires early (traffic came since it
    /// was set), not on every wait: one timer operation per idle period
    /// rather than per request.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last + self.idle;
            if deadline <= Instant::now() {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "the connection was idle too long"));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.check_idle(cx).map(Err),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        self.wrote(cx, polled)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.check_idle(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn admission(max: usize) -> Admission {
        Admission::new(Limits { header_read: Duration::from_secs(1), idle: Duration::from_millis(100), max_connections: max })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_past_the_cap_are_refused_and_slots_come_back() {
        let a = admission(1);
        let first = a.admit(tokio::io::empty());
        assert!(first.is_some());
        assert!(a.admit(tokio::io::empty()).is_none());
        drop(first);
        assert!(a.admit(tokio::io::empty()).is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_connection_fails_after_idle_and_traffic_keeps_it() {
        let (client, server) = tokio::io::duplex(64);
        let mut watched = admission(1).admit(server).unwrap();
        let mut client = client;
        let mut byte = [0u8; 1];
        // Traffic every 50 ms keeps it open past the 100 ms idle.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"x").await.unwrap();
            watched.read_exact(&mut byte).await.unwrap();
        }
        let started = std::time::Instant::now();
        let err = watched.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(90), "{:?}", started.elapsed());
    }
}
