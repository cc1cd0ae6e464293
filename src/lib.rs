//! facevault: sealed 1:1 face-template verification over mTLS gRPC.
//!
//! With `default-features = false, features = ["client"]` only `client`, `proto`
//! and `crypto::sealing` are built: what an app backend needs to call the service.
//!
//! Rooms: `grpc` (transport), `vault` (use cases), `domain` (pure rules),
//! `crypto`, `storage` (Redis), `audit`, `worker`, `config`, `telemetry`,
//! `startup`, `cli`, `pki` (the CA and certificates behind `facevault pki` and
//! `facevault dev`); dev and test support in `devstack`.

pub mod client;
pub mod crypto;

#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "server")]
pub mod bench;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod devstack;
#[cfg(feature = "server")]
pub mod domain;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod grpc;
#[cfg(feature = "server")]
pub mod pki;
#[cfg(feature = "server")]
pub mod startup;
#[cfg(feature = "server")]
pub mod storage;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod vault;
#[cfg(feature = "server")]
pub mod worker;

pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("facevault.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("facevault_descriptor");
}

#[cfg(feature = "server")]
pub use error::Error;
