//! Integration tests: one binary, real redis-server per test, real mTLS.

mod audit;
mod bad_input;
mod client_sdk;
mod cluster;
mod enroll_verify;
mod envelope;
mod helpers;
mod lifecycle;
mod limits;
mod mtls;
mod outage;
mod redis_tls;
mod reload;
mod shutdown;
mod storage_at_rest;
mod telemetry;
