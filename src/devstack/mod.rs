//! Dev and test support, apart from the service: a private real `redis-server`
//! (and a Redis Cluster of them). `facevault dev`, the benchmark and the test
//! suite use it; `serve` never does. Certificates are in `crate::pki`, which the
//! operator's `facevault pki` uses too.

pub mod redis_server;
