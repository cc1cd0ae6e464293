//! A global bound on calls in flight. Past it, calls are refused at once with
//! UNAVAILABLE (retry elsewhere or later) instead of queueing without bound, and
//! counted per window in the audit log. The permit travels with the request
//! (`InFlight`), so a call that runs on after its caller left (`detach`) still
//! holds it until it really ends.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::{Layer, Service};

use super::{BoxFuture, count_refusal, status_response};
use crate::audit::refusals::{Refusal, RefusalTally};

/// A call's share of the in-flight bound, released when the last holder drops it.
#[derive(Clone)]
pub struct InFlight(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    refusals: RefusalTally,
}

impl LoadShedLayer {
    pub fn new(max_in_flight: usize, refusals: RefusalTally) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            refusals,
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
    refusals: RefusalTally,
}

impl<S> Service<http::Request<Body>> for LoadShed<S>
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
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            crate::telemetry::metrics().load_shed.add(1, &[]);
            count_refusal(&self.refusals, &request, Refusal::LoadShed);
            let status = tonic::Status::unavailable("server overloaded; retry with backoff");
            return Box::pin(async move { Ok(status_response(status)) });
        };
        let permit = InFlight(Arc::new(permit));
        request.extensions_mut().insert(permit.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(permit);
            response
        })
    }
}
