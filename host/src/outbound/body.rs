//! Bodies of outbound requests and responses, bounded in bytes and cut at
//! the request's deadline.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use wasmtime_wasi_http::Error;

/// `inner`, failing with `too_big` once more than `cap` bytes passed and
/// with `late` once `deadline` passed.
pub struct Bounded<B> {
    inner: B,
    left: u64,
    cap: u64,
    too_big: fn(u64) -> Error,
    late: fn() -> Error,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Bounded<B> {
    pub fn new(inner: B, cap: u64, deadline: tokio::time::Instant, too_big: fn(u64) -> Error, late: fn() -> Error) -> Self {
        Bounded { inner, left: cap, cap, too_big, late, deadline: Box::pin(tokio::time::sleep_until(deadline)) }
    }
}

impl<B> Body for Bounded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        this.left = 0;
                        return Poll::Ready(Some(Err((this.too_big)(this.cap))));
                    }
                    this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err((this.late)()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    fn never(n: std::convert::Infallible) -> Error {
        match n {}
    }

    fn big(cap: u64) -> Error {
        Error::HttpResponseBodySize(Some(cap))
    }

    #[tokio::test]
    async fn a_body_over_its_cap_fails_and_one_within_passes() {
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let within = Bounded::new(Full::new(Bytes::from_static(b"12345")).map_err(never), 5, far, big, || Error::HttpResponseTimeout);
        assert_eq!(within.collect().await.unwrap().to_bytes(), Bytes::from_static(b"12345"));
        let over = Bounded::new(Full::new(Bytes::from_static(b"123456")).map_err(never), 5, far, big, || Error::HttpResponseTimeout);
        assert!(matches!(over.collect().await, Err(Error::HttpResponseBodySize(Some(5)))));
    }
}
