//! Integration tests: one binary, real redis-server per test, real mTLS.

mod admin;
mod audit;
mod audit_tamper;
mod bad_input;
mod calendar;
mod chaos;
mod client_sdk;
mod cluster;
mod consent;
mod enroll_verify;
mod envelope;
mod flood;
mod helpers;
mod key_rotation;
mod keys;
mod lifecycle;
mod limits;
mod mtls;
mod outage;
mod races;
mod redis_tls;
mod reload;
mod shutdown;
mod storage_at_rest;
mod telemetry;
mod tenants;
