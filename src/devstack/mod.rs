//! Dev and test support, apart from the service: the dev PKI, a private real
//! `redis-server` (and a Redis Cluster of them). `facevault dev`, the benchmark
//! and the test suite use them; `serve` never does.

pub mod pki;
pub mod redis_server;
