//! Cryptography, composed from ring and RFC 9180 HPKE; no primitive is written here.
//!
//! - `sealing`: HPKE opening of embeddings sealed by clients (end-to-end, past any
//!   TLS-terminating proxy).
//! - `hpke_recipient`: the recipient side of RFC 9180 composed from x25519-dalek,
//!   ML-KEM, SHA-3 and ring, so key-only work is done once per key, not per open.
//! - `sessions`: sealing sessions, one HPKE setup and then AES-256-GCM per message,
//!   and the service's bounded cache of their keys.
//! - `keyring`: the identity root, the KEK epochs and the per-tenant keys derived from them.
//! - `live`: the key files as the running service sees them, re-read on a timer.
//! - `transform`: the salted orthogonal transform (cancelable templates).
//! - `envelope`: encryption of templates at rest under per-enrollment DEKs.
//! - `keyfiles`: the on-disk formats of all secrets, and their generation.

#[cfg(feature = "server")]
pub mod envelope;
pub mod hpke_recipient;
#[cfg(feature = "server")]
pub mod keyfiles;
#[cfg(feature = "server")]
pub mod keyring;
#[cfg(feature = "server")]
pub mod live;
pub mod sealing;
pub mod sessions;
#[cfg(feature = "server")]
pub mod transform;

use ring::rand::{SecureRandom, SystemRandom};

/// Fills a fresh array from the OS CSPRNG. Failure of the system RNG leaves
/// nothing safe to do, so callers get an error and fail closed.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Rng)?;
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random number generator failed")]
    Rng,
    #[error("key derivation failed")]
    KeyDerivation,
    #[error("encryption failed")]
    Seal,
}
