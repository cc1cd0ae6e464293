//! The gRPC transport: mTLS termination, caller extraction, request parsing and
//! the status mapping. No business rule lives here.

pub mod admin_api;
pub mod audit_api;
pub mod caller;
pub mod convert;
pub mod facevault_api;
pub mod layers;
pub mod status;
pub mod tls;
