//! Bounds on calls in flight: globally, and per caller. Past the global bound,
//! calls are refused at once with UNAVAILABLE (retry elsewhere or later); past
//! a caller's own share (`limits.max_in_flight_per_caller`, by default a quarter
//! of the global bound), that caller's calls are refused at once with
//! RESOURCE_EXHAUSTED, like its rate limit, before they take a global permit.
//! Nothing queues; refusals are counted per window in the audit log. The
//! permits travel with the request (`InFlight`), so a call that runs on after
//! its caller left (`detach`) still holds them until it really ends: a caller
//! that hangs up and calls again holds at most its share, never every permit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::body::Body;
use tower::{Layer, Service};

use super::{BoxFuture, count_refusal, status_response};
use crate::audit::refusals::{Refusal, RefusalTally};
use crate::grpc::tls::PeerInfo;

/// A call's share of the in-flight bounds, released when the last holder drops it.
#[derive(Clone)]
pub struct InFlight(#[allow(dead_code)] Arc<Permits>);

struct Permits {
    _global: tokio::sync::OwnedSemaphorePermit,
    _caller: CallerSlot,
}

/// One of a caller's in-flight calls; the caller's count goes down when dropped.
struct CallerSlot {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(n) = counts.get_mut(&self.caller)
        {
            *n -= 1;
            // Only callers with calls in flight are tracked.
            if *n == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    per_caller: usize,
    callers: Arc<Mutex<HashMap<String, usize>>>,
    refusals: RefusalTally,
}

impl LoadShedLayer {
    pub fn new(max_in_flight: usize, per_caller: usize, refusals: RefusalTally) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            per_caller,
            callers: Arc::default(),
            refusals,
        }
    }

    /// Takes one of `caller`'s slots; `None` when it has its share in flight.
    fn caller_slot(&self, caller: String) -> Option<CallerSlot> {
        let mut counts = self.callers.lock().ok()?;
        let n = counts.entry(caller.clone()).or_default();
        if *n >= self.per_caller {
            return None;
        }
        *n += 1;
        Some(CallerSlot {
            counts: self.callers.clone(),
            caller,
        })
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    layer: LoadShedLayer,
}

/// Whose share a call counts against: its certificate, or its peer address for
/// a connection without an identity (as the rate limit keys its buckets).
fn caller_key<B>(request: &http::Request<B>) -> String {
    let peer = request.extensions().get::<PeerInfo>();
    match (
        peer.and_then(|p| p.caller.as_ref().ok()),
        peer.and_then(|p| p.remote),
    ) {
        (Some(c), _) => c.cert_sha256.clone(),
        (None, Some(remote)) => format!("peer:{}", remote.ip()),
        (None, None) => "peer:unknown".to_owned(),
    }
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
        let Some(slot) = self.layer.caller_slot(caller_key(&request)) else {
            crate::telemetry::metrics().caller_in_flight.add(1, &[]);
            count_refusal(&self.layer.refusals, &request, Refusal::CallerInFlight);
            let status = tonic::Status::resource_exhausted(
                "too many calls in flight for this client; wait for some to finish",
            );
            return Box::pin(async move { Ok(status_response(status)) });
        };
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            crate::telemetry::metrics().load_shed.add(1, &[]);
            count_refusal(&self.layer.refusals, &request, Refusal::LoadShed);
            let status = tonic::Status::unavailable("server overloaded; retry with backoff");
            return Box::pin(async move { Ok(status_response(status)) });
        };
        let permit = InFlight(Arc::new(Permits {
            _global: permit,
            _caller: slot,
        }));
        request.extensions_mut().insert(permit.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(permit);
            response
        })
    }
}
