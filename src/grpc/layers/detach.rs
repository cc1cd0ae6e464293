//! A call that has started runs to its end on a task of its own, whatever its
//! caller does: a client that cancels or hangs up, its `grpc-timeout`, or the
//! server's own deadline drop the response future, and dropping it must not cut a
//! use case between two writes or lose its audit event. The caller waits at most
//! `limit` and then gets DEADLINE_EXCEEDED (outcome unknown to it); the call goes
//! on within its own bound (every Redis step has `redis.timeout_ms`) and its audit
//! event records what really happened, marked `caller-gone`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

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

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let limit = self.limit;
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
