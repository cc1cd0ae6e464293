//! Calls to the facevault API from a connection whose certificate names no
//! acceptable identity are refused here, before any per-call work or auditing;
//! the audit log gets their count per window (`audit::refusals`). Roles are
//! checked by the handlers, which know which role each call needs.

use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{BoxFuture, count_refusal, is_api_call, status_response};
use crate::audit::refusals::{Refusal, RefusalTally};
use crate::grpc::tls::PeerInfo;

#[derive(Clone)]
pub struct AuthenticateLayer {
    refusals: RefusalTally,
}

impl AuthenticateLayer {
    pub fn new(refusals: RefusalTally) -> Self {
        Self { refusals }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    refusals: RefusalTally,
}

impl<S> Service<http::Request<Body>> for Authenticate<S>
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
        if is_api_call(&request) {
            let peer = request.extensions().get::<PeerInfo>();
            if peer.is_none_or(|p| p.caller.is_err()) {
                count_refusal(&self.refusals, &request, Refusal::NoIdentity);
                let status = tonic::Status::unauthenticated(
                    "the client certificate names no acceptable identity",
                );
                return Box::pin(async move { Ok(status_response(status)) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}
