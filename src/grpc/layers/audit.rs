//! Every admitted call of the facevault API, allowed or refused, becomes exactly
//! one audit event, and the response is released only after the event is
//! recorded. Handlers add what only they know (the subject pseudonym, the
//! purpose, the decision) through the `AuditNote` in the request's extensions.
//! This layer runs inside `detach`, so the event is written with the call's true
//! outcome even when its caller has gone (detail `caller-gone`).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::body::Body;
use tower::{Layer, Service};

use super::detach::CallerGone;
use super::{BoxFuture, code_name, is_api_call, response_code, split_path, status_response};
use crate::audit::AuditSink;
use crate::domain::Tenant;
use crate::grpc::tls::PeerInfo;
use crate::proto::AuditEvent;

#[derive(Debug, Default, Clone)]
struct NoteFields {
    subject_ref: String,
    purpose: String,
    detail: String,
}

/// Shared between the layer and the handler of one call.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    event_id: String,
    fields: Arc<Mutex<NoteFields>>,
}

impl AuditNote {
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    pub fn subject(&self, subject_ref: &str) {
        if let Ok(mut f) = self.fields.lock() {
            f.subject_ref = subject_ref.to_owned();
        }
    }

    pub fn purpose(&self, purpose: &str) {
        if let Ok(mut f) = self.fields.lock() {
            f.purpose = purpose.to_owned();
        }
    }

    pub fn detail(&self, detail: &str) {
        if let Ok(mut f) = self.fields.lock() {
            f.detail = detail.to_owned();
        }
    }

    fn take(&self) -> NoteFields {
        self.fields.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct AuditLayer {
    sink: AuditSink,
}

impl AuditLayer {
    pub fn new(sink: AuditSink) -> Self {
        Self { sink }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            sink: self.sink.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Audit<S> {
    inner: S,
    sink: AuditSink,
}

impl<S> Service<http::Request<Body>> for Audit<S>
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
        // Health checks and reflection carry no personal data and would drown
        // the log; the API services are audited.
        if !is_api_call(&request) {
            return Box::pin(self.inner.call(request));
        }
        let (_, method) = split_path(request.uri().path());
        let op = method.to_owned();
        let event_id = crate::audit::new_event_id();
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| event_id.clone());
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let gone = request.extensions().get::<CallerGone>().cloned();
        let note = AuditNote {
            event_id: event_id.clone(),
            fields: Arc::default(),
        };
        request.extensions_mut().insert(note.clone());
        let sink = self.sink.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let code = response_code(&response);
            let mut fields = note.take();
            if gone.is_some_and(|g| g.is_gone()) {
                crate::audit::mark_detail(&mut fields.detail, "caller-gone");
            }
            let caller = peer.as_ref().and_then(|p| p.caller.as_ref().ok());
            let tenant = caller.map_or_else(Tenant::unauthenticated, |c| c.audit_stream());
            let event = AuditEvent {
                event_id,
                time: Some(crate::vault::timestamp(crate::vault::now_unix_ms())),
                tenant: tenant.as_str().to_owned(),
                caller: caller.map(|c| c.identity.clone()).unwrap_or_default(),
                caller_cert_sha256: caller.map(|c| c.cert_sha256.clone()).unwrap_or_default(),
                op,
                subject_ref: fields.subject_ref,
                purpose: fields.purpose,
                outcome: outcome(code).to_owned(),
                code: code_name(code).to_owned(),
                request_id,
                trace_id: crate::telemetry::current_trace_id().unwrap_or_default(),
                detail: fields.detail,
                ..AuditEvent::default()
            };
            match sink.record(tenant, event).await {
                Ok(()) => Ok(response),
                Err(error) => {
                    tracing::error!(%error, "call answered UNAVAILABLE: its audit event is not recorded yet");
                    Ok(status_response(tonic::Status::unavailable(
                        "the audit log could not record this call in time: its outcome is unknown to you; the log records it once it can",
                    )))
                }
            }
        })
    }
}

fn outcome(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "allowed",
        InvalidArgument | Unauthenticated | PermissionDenied | NotFound | FailedPrecondition
        | ResourceExhausted | Aborted | AlreadyExists | OutOfRange | DeadlineExceeded
        | Cancelled => "refused",
        Unknown | Internal | Unavailable | DataLoss | Unimplemented => "error",
    }
}
