//! Calls to the facevault API from a connection whose certificate names no
//! acceptable identity are refused here, before any per-call work or auditing;
//! the audit log gets their count per window (`audit::refusals`). So are calls
//! whose certificate names a tenant the config does not declare, whichever
//! service they call. Roles are checked by the handlers, which know which role
//! each call needs; an operator's certificate names no tenant and passes here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};

use super::{BoxFuture, count_refusal, is_api_call, status_response};
use crate::audit::refusals::{Refusal, RefusalTally};
use crate::domain::Tenant;
use crate::grpc::tls::PeerInfo;

#[derive(Clone)]
pub struct AuthenticateLayer {
    refusals: RefusalTally,
    tenants: Arc<BTreeSet<Tenant>>,
}

impl AuthenticateLayer {
    /// `tenants`: the tenants served (`[tenants.<name>]`).
    pub fn new(refusals: RefusalTally, tenants: BTreeSet<Tenant>) -> Self {
        Self {
            refusals,
            tenants: Arc::new(tenants),
        }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            refusals: self.refusals.clone(),
            tenants: self.tenants.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    refusals: RefusalTally,
    tenants: Arc<BTreeSet<Tenant>>,
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
            let caller = request
                .extensions()
                .get::<PeerInfo>()
                .and_then(|p| p.caller.as_ref().ok());
            let Some(caller) = caller else {
                count_refusal(&self.refusals, &request, Refusal::NoIdentity);
                let status = tonic::Status::unauthenticated(
                    "the client certificate names no acceptable identity",
                );
                return Box::pin(async move { Ok(status_response(status)) });
            };
            // An operator has no tenant: it passes here, and every handler
            // but the deployment-wide ones refuses it (audited in its stream).
            if let Some(tenant) = caller.tenant()
                && !self.tenants.contains(tenant)
            {
                // A tenant name is not personal data; the operator needs it to
                // tell a missing declaration from a stray certificate.
                tracing::warn!(
                    tenant = tenant.as_str(),
                    identity = %caller.identity,
                    "refused: the client certificate's tenant is not declared under [tenants.<name>]"
                );
                self.refusals.undeclared_tenant(caller);
                let status = tonic::Status::permission_denied(
                    "the client certificate's tenant is not served by this deployment",
                );
                return Box::pin(async move { Ok(status_response(status)) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}
