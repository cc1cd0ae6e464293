//! End-to-end sealing of embeddings with HPKE base mode (RFC 9180).
//!
//! TLS protects the hop, but proxies may terminate it; HPKE seals each embedding to
//! the service process itself. The AAD binds op, tenant and subject, so a sealed
//! probe cannot be replayed for another subject, operation or tenant. Face data is
//! lifelong, so a post-quantum hybrid suite (X-Wing) is offered beside X25519.

use std::collections::HashMap;

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

pub const INFO: &[u8] = b"facevault/v1 embedding";

/// Largest ciphertext accepted: a 4096-dimension payload plus framing, with room.
pub const MAX_CIPHERTEXT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    X25519Sha256Aes256Gcm,
    XWingSha256Aes256Gcm,
}

impl Suite {
    pub const ALL: [Suite; 2] = [Suite::X25519Sha256Aes256Gcm, Suite::XWingSha256Aes256Gcm];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::X25519Sha256Aes256Gcm => "x25519-sha256-aes256gcm",
            Self::XWingSha256Aes256Gcm => "xwing-sha256-aes256gcm",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    pub fn enc_len(self) -> usize {
        match self {
            Self::X25519Sha256Aes256Gcm => <X25519HkdfSha256 as hpke::Kem>::EncappedKey::size(),
            Self::XWingSha256Aes256Gcm => <XWing as hpke::Kem>::EncappedKey::size(),
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operation an embedding is sealed for; part of the AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedFor {
    Enroll,
    Verify,
}

impl SealedFor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Verify => "verify",
        }
    }
}

/// `facevault/v1|<op>|<tenant>|<subject_id>`. It contains the raw subject id, so it
/// is built on demand and never kept or logged.
pub fn aad(op: SealedFor, tenant: &str, subject_id: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Vec::with_capacity(32 + tenant.len() + subject_id.len());
    out.extend_from_slice(b"facevault/v1|");
    out.extend_from_slice(op.as_str().as_bytes());
    out.push(b'|');
    out.extend_from_slice(tenant.as_bytes());
    out.push(b'|');
    out.extend_from_slice(subject_id.as_bytes());
    Zeroizing::new(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealingError {
    #[error("unknown sealing suite")]
    UnknownSuite,
    #[error("unknown or expired sealing key")]
    UnknownKey,
    #[error("the key_id names a key of another suite")]
    SuiteMismatch,
    #[error("the encapsulated key has the wrong length")]
    EncLength,
    #[error("the ciphertext is empty or too large")]
    CiphertextSize,
    #[error("the envelope could not be opened")]
    Open,
    #[error("the public key is malformed")]
    PublicKey,
    #[error("sealing failed")]
    Seal,
}

enum PrivateKey {
    X25519(<X25519HkdfSha256 as hpke::Kem>::PrivateKey),
    XWing(Box<<XWing as hpke::Kem>::PrivateKey>),
}

/// One of the service's sealing key pairs.
pub struct OpeningKey {
    pub key_id: String,
    pub suite: Suite,
    pub public_key: Vec<u8>,
    /// Unix ms after which the key is no longer accepted.
    pub not_after_unix_ms: i64,
    private: PrivateKey,
}

impl OpeningKey {
    /// Derives the key pair from a 32-byte seed with the KEM's RFC 9180
    /// DeriveKeyPair, so the file holds one small secret per key and any RFC 9180
    /// implementation derives the same public key.
    pub fn from_seed(
        key_id: String,
        suite: Suite,
        seed: &[u8; 32],
        not_after_unix_ms: i64,
    ) -> Self {
        let (private, public_key) = match suite {
            Suite::X25519Sha256Aes256Gcm => {
                let (sk, pk) = X25519HkdfSha256::derive_keypair(seed);
                (PrivateKey::X25519(sk), pk.to_bytes().to_vec())
            }
            Suite::XWingSha256Aes256Gcm => {
                let (sk, pk) = XWing::derive_keypair(seed);
                (PrivateKey::XWing(Box::new(sk)), pk.to_bytes().to_vec())
            }
        };
        Self {
            key_id,
            suite,
            public_key,
            not_after_unix_ms,
            private,
        }
    }

    fn open(
        &self,
        enc: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealingError> {
        let plaintext = match &self.private {
            PrivateKey::X25519(sk) => {
                let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)
                    .map_err(|_| SealingError::EncLength)?;
                hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                    &OpModeR::Base,
                    sk,
                    &enc,
                    INFO,
                    ciphertext,
                    aad,
                )
            }
            PrivateKey::XWing(sk) => {
                let enc = <XWing as hpke::Kem>::EncappedKey::from_bytes(enc)
                    .map_err(|_| SealingError::EncLength)?;
                hpke::single_shot_open::<AesGcm256, HkdfSha256, XWing>(
                    &OpModeR::Base,
                    sk,
                    &enc,
                    INFO,
                    ciphertext,
                    aad,
                )
            }
        };
        plaintext
            .map(Zeroizing::new)
            .map_err(|_| SealingError::Open)
    }
}

/// The service's sealing keys, by key id. Several may be live at once so that a
/// new key can be published before the old one stops being accepted.
pub struct SealingKeys {
    keys: HashMap<String, OpeningKey>,
}

impl SealingKeys {
    pub fn new(keys: Vec<OpeningKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.key_id.clone(), k)).collect(),
        }
    }

    /// Keys a client may seal to now, newest expiry first.
    pub fn current(&self, now_unix_ms: i64) -> Vec<&OpeningKey> {
        let mut keys: Vec<_> = self
            .keys
            .values()
            .filter(|k| k.not_after_unix_ms > now_unix_ms)
            .collect();
        keys.sort_by(|a, b| {
            b.not_after_unix_ms
                .cmp(&a.not_after_unix_ms)
                .then(a.key_id.cmp(&b.key_id))
        });
        keys
    }

    pub fn open(
        &self,
        suite: &str,
        key_id: &str,
        enc: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
        now_unix_ms: i64,
    ) -> Result<Zeroizing<Vec<u8>>, SealingError> {
        let suite = Suite::parse(suite).ok_or(SealingError::UnknownSuite)?;
        let key = self
            .keys
            .get(key_id)
            .filter(|k| k.not_after_unix_ms > now_unix_ms)
            .ok_or(SealingError::UnknownKey)?;
        if key.suite != suite {
            return Err(SealingError::SuiteMismatch);
        }
        if enc.len() != suite.enc_len() {
            return Err(SealingError::EncLength);
        }
        if ciphertext.is_empty() || ciphertext.len() > MAX_CIPHERTEXT_BYTES {
            return Err(SealingError::CiphertextSize);
        }
        key.open(enc, ciphertext, aad)
    }
}

/// Seals `plaintext` to a public key: what a client does. Used by the CLI's `seal`,
/// the client SDK and the tests.
pub fn seal(
    suite: Suite,
    public_key: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SealingError> {
    match suite {
        Suite::X25519Sha256Aes256Gcm => {
            let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(public_key)
                .map_err(|_| SealingError::PublicKey)?;
            let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &pk,
                INFO,
                plaintext,
                aad,
            )
            .map_err(|_| SealingError::Seal)?;
            Ok((enc.to_bytes().to_vec(), ct))
        }
        Suite::XWingSha256Aes256Gcm => {
            let pk = <XWing as hpke::Kem>::PublicKey::from_bytes(public_key)
                .map_err(|_| SealingError::PublicKey)?;
            let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, XWing>(
                &OpModeS::Base,
                &pk,
                INFO,
                plaintext,
                aad,
            )
            .map_err(|_| SealingError::Seal)?;
            Ok((enc.to_bytes().to_vec(), ct))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn keys() -> SealingKeys {
        SealingKeys::new(vec![
            OpeningKey::from_seed(
                "x1".into(),
                Suite::X25519Sha256Aes256Gcm,
                &[7; 32],
                NOW + 1000,
            ),
            OpeningKey::from_seed(
                "w1".into(),
                Suite::XWingSha256Aes256Gcm,
                &[8; 32],
                NOW + 1000,
            ),
            OpeningKey::from_seed(
                "old".into(),
                Suite::X25519Sha256Aes256Gcm,
                &[9; 32],
                NOW - 1,
            ),
        ])
    }

    #[test]
    fn both_suites_round_trip_and_have_rfc_sizes() {
        let keys = keys();
        for (key_id, pk_len, enc_len) in [("x1", 32, 32), ("w1", 1216, 1120)] {
            let key = &keys.keys[key_id];
            assert_eq!(key.public_key.len(), pk_len);
            let aad = aad(SealedFor::Verify, "demo", "alice");
            let (enc, ct) = seal(key.suite, &key.public_key, &aad, b"payload").unwrap();
            assert_eq!(enc.len(), enc_len);
            let opened = keys
                .open(key.suite.as_str(), key_id, &enc, &ct, &aad, NOW)
                .unwrap();
            assert_eq!(opened.as_slice(), b"payload");
        }
    }

    #[test]
    fn aad_binds_op_tenant_and_subject() {
        let keys = keys();
        let key = &keys.keys["x1"];
        let sealed_for = aad(SealedFor::Verify, "demo", "alice");
        let (enc, ct) = seal(key.suite, &key.public_key, &sealed_for, b"p").unwrap();
        for other in [
            aad(SealedFor::Enroll, "demo", "alice"),
            aad(SealedFor::Verify, "other", "alice"),
            aad(SealedFor::Verify, "demo", "bob"),
        ] {
            let err = keys
                .open("x25519-sha256-aes256gcm", "x1", &enc, &ct, &other, NOW)
                .unwrap_err();
            assert_eq!(err, SealingError::Open);
        }
    }

    #[test]
    fn refuses_expired_unknown_and_mismatched_keys() {
        let keys = keys();
        let key = &keys.keys["old"];
        let a = aad(SealedFor::Verify, "demo", "alice");
        let (enc, ct) = seal(key.suite, &key.public_key, &a, b"p").unwrap();
        assert_eq!(
            keys.open("x25519-sha256-aes256gcm", "old", &enc, &ct, &a, NOW),
            Err(SealingError::UnknownKey)
        );
        assert_eq!(
            keys.open("x25519-sha256-aes256gcm", "nope", &enc, &ct, &a, NOW),
            Err(SealingError::UnknownKey)
        );
        assert_eq!(
            keys.open("xwing-sha256-aes256gcm", "x1", &enc, &ct, &a, NOW),
            Err(SealingError::SuiteMismatch)
        );
        assert_eq!(
            keys.open("rot13", "x1", &enc, &ct, &a, NOW),
            Err(SealingError::UnknownSuite)
        );
        assert_eq!(
            keys.open("x25519-sha256-aes256gcm", "x1", &enc[..31], &ct, &a, NOW),
            Err(SealingError::EncLength)
        );
        assert_eq!(keys.current(NOW).len(), 2);
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let keys = keys();
        let key = &keys.keys["w1"];
        let a = aad(SealedFor::Enroll, "demo", "alice");
        let (enc, mut ct) = seal(key.suite, &key.public_key, &a, b"payload").unwrap();
        ct[0] ^= 1;
        assert_eq!(
            keys.open("xwing-sha256-aes256gcm", "w1", &enc, &ct, &a, NOW),
            Err(SealingError::Open)
        );
    }
}
