//! Integration tests: one binary, real redis-server per test, real mTLS.

mod enroll_verify;
mod envelope;
mod helpers;
mod lifecycle;
mod mtls;
mod outage;
mod storage_at_rest;
