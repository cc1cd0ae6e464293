//! Tower layers around every gRPC call, one per file, outermost first:
//! `trace` (one span per call) → `authenticate` (an identity, or refused) →
//! `rate_limit` (per caller) → `load_shed` (calls in flight, globally and per
//! caller) → `detach` (the call runs to its end on its own task; the caller
//! waits at most the request timeout, its body arrives by then) → `audit`
//! (one event per admitted call, fail closed).
//!
//! Refusals before admission cost no per-call audit write: they are counted
//! per window (`audit::refusals`), so a flood cannot flood the audit log.

pub mod audit;
pub mod authenticate;
pub mod detach;
pub mod load_shed;
pub mod rate_limit;
pub mod trace;

use std::pin::Pin;

use tonic::body::Body;

pub type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// A gRPC error answered by a layer itself, without calling the service.
pub fn status_response(status: tonic::Status) -> http::Response<Body> {
    status.into_http()
}

/// The status code of a unary response: errors are trailers-only (status in the
/// headers); a response without `grpc-status` in its headers is OK.
pub fn response_code(response: &http::Response<Body>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Counts a refusal before admission under the request's caller, or under its
/// peer address when the connection names no caller.
pub fn count_refusal<B>(
    refusals: &crate::audit::refusals::RefusalTally,
    request: &http::Request<B>,
    reason: crate::audit::refusals::Refusal,
) {
    let peer = request.extensions().get::<crate::grpc::tls::PeerInfo>();
    match peer.and_then(|p| p.caller.as_ref().ok()) {
        Some(caller) => refusals.caller(caller, reason),
        None => refusals.peer(peer.and_then(|p| p.remote).map(|a| a.ip()), reason),
    }
}

/// Calls of the facevault API (not health checks or reflection).
pub fn is_api_call<B>(request: &http::Request<B>) -> bool {
    split_path(request.uri().path()).0.starts_with("facevault.")
}

/// `/facevault.v1.FaceVault/Verify` → ("facevault.v1.FaceVault", "Verify").
pub fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
