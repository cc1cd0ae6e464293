//! Per-caller rate limit (token bucket keyed by client certificate, or by peer
//! address for a connection without an identity), so one compromised or buggy
//! backend cannot brute-force or starve the others. Refused calls get
//! RESOURCE_EXHAUSTED at once; nothing queues, and the audit log gets their count
//! per window instead of one event each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tower::{Layer, Service};

use super::{BoxFuture, count_refusal, status_response};
use crate::audit::refusals::{Refusal, RefusalTally};
use crate::grpc::tls::PeerInfo;

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets are dropped once full again, so the map holds only active callers.
const MAX_TRACKED_CALLERS: usize = 100_000;

#[derive(Clone)]
pub struct RateLimitLayer {
    limit: RateLimit,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    refusals: RefusalTally,
}

impl RateLimitLayer {
    pub fn new(limit: RateLimit, refusals: RefusalTally) -> Self {
        Self {
            limit,
            buckets: Arc::default(),
            refusals,
        }
    }

    /// Takes a token for `caller`; false when the caller is over its rate.
    fn admit(&self, caller: &str) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        let now = Instant::now();
        if buckets.len() >= MAX_TRACKED_CALLERS {
            let (rate, burst) = (self.limit.per_second, self.limit.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: self.limit.burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.limit.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimited<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S> Service<http::Request<Body>> for RateLimited<S>
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
        let peer = request.extensions().get::<PeerInfo>();
        let caller = peer.and_then(|p| p.caller.as_ref().ok());
        let bucket = match (caller, peer.and_then(|p| p.remote)) {
            (Some(c), _) => c.cert_sha256.clone(),
            (None, Some(remote)) => format!("peer:{}", remote.ip()),
            (None, None) => "peer:unknown".to_owned(),
        };
        if !self.layer.admit(&bucket) {
            crate::telemetry::metrics().rate_limited.add(1, &[]);
            count_refusal(&self.layer.refusals, &request, Refusal::RateLimited);
            let status =
                tonic::Status::resource_exhausted("rate limit exceeded for this client; slow down");
            return Box::pin(async move { Ok(status_response(status)) });
        }
        Box::pin(self.inner.call(request))
    }
}
