//! Keep-alive connections to backends for the byte-level path, per
//! data-plane thread (no lock, no shared pool, no task per connection): a
//! request takes an idle connection to its address, else opens one, and
//! gives it back once the answer's body is through. A connection the
//! backend closed while idle is seen when taken (its readiness, kept by
//! the thread's reactor) and dropped; those idle past [`IDLE`] go when the
//! pool is swept.

use bytes::BytesMut;
use std::cell::RefCell;
use std::collections::HashMap;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::net::TcpStream;

// The hyper path's bounds, so both paths keep and drop connections alike.
use crate::dataplane::forward::{CONNECT_TIMEOUT, IDLE, MAX_PER_ADDRESS, SWEEP_EVERY};

/// A connection to a backend, and what was read from it and not yet used.
pub struct Backend {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

#[derive(Default)]
struct Pool {
    by_address: HashMap<String, Vec<(Backend, Instant)>>,
    takes: u32,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

/// An idle connection to `address` the backend has not closed, if any.
pub fn take(address: &str) -> Option<Backend> {
    POOL.with_borrow_mut(|pool| {
        pool.takes = pool.takes.wrapping_add(1);
        if pool.takes.is_multiple_of(SWEEP_EVERY) {
            let now = Instant::now();
            for idle in pool.by_address.values_mut() {
                idle.retain(|(_, since)| now.duration_since(*since) < IDLE);
            }
            pool.by_address.retain(|_, idle| !idle.is_empty());
        }
        let idle = pool.by_address.get_mut(address)?;
        while let Some((backend, since)) = idle.pop() {
            if since.elapsed() < IDLE && open(&backend.stream) {
                return Some(backend);
            }
        }
        None
    })
}

/// Gives a connection back once an answer has been read from it whole.
pub fn put(address: &str, backend: Backend) {
    if !backend.buf.is_empty() {
        // Bytes past the answer: the connection is out of step.
        return;
    }
    POOL.with_borrow_mut(|pool| {
        let idle = match pool.by_address.get_mut(address) {
            Some(idle) => idle,
            None => pool.by_address.entry(address.to_string()).or_default(),
        };
        if idle.len() < MAX_PER_ADDRESS {
            idle.push((backend, Instant::now()));
        }
    });
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
