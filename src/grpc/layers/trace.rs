//! One span per call, named like the gRPC method, carrying tenant and outcome, so
//! traces show what each call did without any personal data in them.

use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::{BoxFuture, code_name, response_code, split_path};
use crate::grpc::tls::PeerInfo;

#[derive(Debug, Clone, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for Trace<S>
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
        let (service, method) = split_path(request.uri().path());
        let tenant = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.caller.as_ref().ok())
            .map_or_else(|| "-".to_owned(), |c| c.audit_stream().as_str().to_owned());
        let span = tracing::info_span!(
            "rpc",
            otel.name = format!("{service}/{method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            tenant = %tenant,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let method = method.to_owned();
        let future = self.inner.call(request);
        Box::pin(
            async move {
                let result = future.await;
                if let Ok(response) = &result {
                    let code = response_code(response);
                    tracing::Span::current().record("rpc.grpc.status_code", code_name(code));
                    crate::telemetry::metrics().rpc_duration.record(
                        started.elapsed().as_secs_f64(),
                        &[
                            opentelemetry::KeyValue::new("rpc.method", method),
                            opentelemetry::KeyValue::new("rpc.grpc.status_code", code_name(code)),
                        ],
                    );
                }
                result
            }
            .instrument(span),
        )
    }
}
