//! Keep-alive connections to backends for the byte-level path, per
//! data-plane thread (no lock, no shared pool, no task per connection): a
//! request takes an idle connection to its address, else opens one, and
//! gives it back once the answer's body is through (kept in an
//! [`IdlePool`], as the hyper path's are). A connection the backend closed
//! while idle is seen when taken (its readiness, kept by the thread's
//! reactor) and dropped.

use bytes::BytesMut;
use std::cell::RefCell;
use std::task::{Context, Poll, Waker};
use tokio::net::TcpStream;

use crate::dataplane::forward::CONNECT_TIMEOUT;
use crate::dataplane::idle::{IdlePool, Kept};

/// A connection to a backend, and what was read from it and not yet used.
pub struct Backend {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

thread_local! {
    static POOL: RefCell<IdlePool<Backend>> = RefCell::default();
}

/// An idle connection to `address` the backend has not closed, if any.
pub fn take(address: &str) -> Option<Backend> {
    POOL.with_borrow_mut(|pool| pool.take(address, |backend| if open(&backend.stream) { Kept::Ready } else { Kept::Gone }))
}

/// Gives a connection back once an answer has been read from it whole.
pub fn put(address: &str, backend: Backend) {
    if !backend.buf.is_empty() {
        // Bytes past the answer: the connection is out of step.
        return;
    }
    POOL.with_borrow_mut(|pool| pool.put(address, backend));
}

/// Whether an idle connection is still open: nothing may be readable on
/// it (an end, a reset, or bytes nobody asked for). Its readiness is the
/// reactor's record: only when that says readable is the socket asked.
fn open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

/// A new connection to `address`.
pub async fn connect(address: &str) -> Result<Backend, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())),
    };
    let _ = stream.set_nodelay(true);
    Ok(Backend { stream, buf: BytesMut::with_capacity(16 * 1024) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_backend_closed_is_not_taken() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepting = tokio::spawn(async move {
            let (mut kept, _) = listener.accept().await.unwrap();
            let (closed, _) = listener.accept().await.unwrap();
            drop(closed);
            let mut b = [0u8; 2];
            kept.read_exact(&mut b).await.unwrap();
            kept.write_all(b"ok").await.unwrap();
            kept
        });
        let (kept, closed) = (connect(&address).await.unwrap(), connect(&address).await.unwrap());
        put(&address, kept);
        put(&address, closed);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // The last one given back is taken first: the closed one is passed over.
        let mut taken = take(&address).expect("the open connection");
        assert!(take(&address).is_none());
        taken.stream.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        taken.stream.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ok");
        drop(accepting.await.unwrap());
    }
}
