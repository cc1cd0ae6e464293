//! facevault: sealed 1:1 face-template verification over mTLS gRPC.
//!
//! Rooms: `grpc` (transport), `vault` (use cases), `domain` (pure rules),
//! `crypto`, `storage` (Redis), `config`, `telemetry`, `startup`, `cli`.

pub mod audit;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod pki;
pub mod redis_server;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod vault;
pub mod worker;

pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("facevault.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("facevault_descriptor");
}

pub use error::Error;
