//! Every call ends within a configured time (DEADLINE_EXCEEDED), whatever the
//! client's own deadline, so stuck calls cannot pile up.

use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tower::{Layer, Service};

use super::{BoxFuture, status_response};

#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<http::Request<Body>> for Timeout<S>
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
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, future).await {
                Ok(result) => result,
                Err(_) => Ok(status_response(tonic::Status::deadline_exceeded(
                    "the call took longer than the server allows",
                ))),
            }
        })
    }
}
