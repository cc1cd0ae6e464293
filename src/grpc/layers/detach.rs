//! A call that has started runs to its end on a task of its own, whatever its
//! caller does: a client that cancels or hangs up, its `grpc-timeout`, or the
//! server's own deadline drop the response future, and dropping it must not cut a
//! use case between two writes or lose its audit event. The caller waits at most
//! `limit` and then gets DEADLINE_EXCEEDED (outcome unknown to it); the call goes
//! on within its own bound (every Redis step has `redis.timeout_ms`) and its audit
//! event records what really happened, marked `caller-gone`.
//!
//! The request body is read by the call, on its task: a client that sends a
//! call's headers and then stalls its body would hold the call's in-flight
//! permit for as long as the connection lives. So the body gets the same
//! deadline as the caller's wait: not complete by then, it fails, the call ends
//! (DEADLINE_EXCEEDED, audited) and its permit is released.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Frame, SizeHint};

use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::load_shed::InFlight;
use super::{BoxFuture, status_response};

/// Set once nobody waits for the call's response any more.
#[derive(Debug, Clone, Default)]
pub struct CallerGone(Arc<AtomicBool>);

impl CallerGone {
    pub fn is_gone(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Marks the caller gone when the waiting future ends without the response.
struct Waiting(Option<CallerGone>);

impl Waiting {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(gone) = self.0.take() {
            gone.0.store(true, Ordering::Release);
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DetachLayer {
    limit: Duration,
}

impl DetachLayer {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for DetachLayer {
    type Service = Detach<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Detach {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Detach<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<http::Request<Body>> for Detach<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let limit = self.limit;
        let (parts, body) = request.into_parts();
        let body = Body::new(BodyDeadline {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(limit)),
        });
        let mut request = http::Request::from_parts(parts, body);
        let gone = CallerGone::default();
        request.extensions_mut().insert(gone.clone());
        // The in-flight permit stays with the call, not with its caller.
        let in_flight = request.extensions().get::<InFlight>().cloned();
        let future = self.inner.call(request);
        Box::pin(async move {
            let waiting = Waiting(Some(gone));
            // Spawned on first poll, inside the caller's span, so the call's trace
            // and audit event keep their trace id.
            let call = tokio::spawn(
                async move {
                    let response = future.await;
                    drop(in_flight);
                    response
                }
                .in_current_span(),
            );
            match tokio::time::timeout(limit, call).await {
                Ok(Ok(response)) => {
                    waiting.answered();
                    response
                }
                Ok(Err(_panicked)) => {
                    waiting.answered();
                    Ok(status_response(tonic::Status::internal(
                        "the call failed inside the server",
                    )))
                }
                Err(_) => Ok(status_response(tonic::Status::deadline_exceeded(
                    "the call took longer than the server waits; it runs to its end and its outcome is in the audit log",
                ))),
            }
        })
    }
}

/// A request body that fails if it has not ended by its deadline.
struct BodyDeadline {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for BodyDeadline {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(
                "the request body did not arrive within the request timeout",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
