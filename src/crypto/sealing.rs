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
use hpke::{Deserializable, Kem as _, OpModeS, Serializable};
use zeroize::Zeroizing;

use super::hpke_recipient::{Aead, OpenError, Recipient};
use super::sessions::{self, Claim, SessionCache, SessionRefusal};

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
    #[error(
        "the sealing session is older than the server's session TTL: start a new sealing session"
    )]
    SessionExpired,
    #[error(
        "the sealing session has carried its maximum number of messages: start a new sealing session"
    )]
    SessionExhausted,
}

impl From<SessionRefusal> for SealingError {
    fn from(refusal: SessionRefusal) -> Self {
        match refusal {
            SessionRefusal::Expired => Self::SessionExpired,
            SessionRefusal::Exhausted => Self::SessionExhausted,
            // Set up for another tenant or key: it cannot open here, and saying
            // more would tell a caller about other tenants' sessions.
            SessionRefusal::Mismatch => Self::Open,
        }
    }
}

impl From<OpenError> for SealingError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::EncLength => Self::EncLength,
            OpenError::NotContributory | OpenError::Open => Self::Open,
        }
    }
}

/// One of the service's sealing key pairs.
pub struct OpeningKey {
    pub key_id: String,
    pub suite: Suite,
    pub public_key: Vec<u8>,
    /// Unix ms after which the key is no longer accepted.
    pub not_after_unix_ms: i64,
    recipient: Recipient,
}

impl OpeningKey {
    /// Derives the key pair from a 32-byte seed with the KEM's RFC 9180
    /// DeriveKeyPair, so the file holds one small secret per key and any RFC 9180
    /// implementation derives the same public key. The private key is then
    /// expanded once for opening (`hpke_recipient`).
    pub fn from_seed(
        key_id: String,
        suite: Suite,
        seed: &[u8; 32],
        not_after_unix_ms: i64,
    ) -> Self {
        let (recipient, public_key) = match suite {
            Suite::X25519Sha256Aes256Gcm => {
                let (sk, pk) = X25519HkdfSha256::derive_keypair(seed);
                let sk = Zeroizing::new(<[u8; 32]>::from(sk.to_bytes()));
                let pk = <[u8; 32]>::from(pk.to_bytes());
                (Recipient::x25519(*sk, pk), pk.to_vec())
            }
            Suite::XWingSha256Aes256Gcm => {
                let (sk, pk) = XWing::derive_keypair(seed);
                let sk = Zeroizing::new(<[u8; 32]>::from(sk.to_bytes()));
                (Recipient::xwing(&sk), pk.to_bytes().to_vec())
            }
        };
        debug_assert_eq!(recipient.public_key(), public_key);
        Self {
            key_id,
            suite,
            public_key,
            not_after_unix_ms,
            recipient,
        }
    }

    fn open(
        &self,
        enc: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealingError> {
        Ok(self
            .recipient
            .setup(enc, INFO, Aead::Aes256Gcm)?
            .open_first(aad, ciphertext)?)
    }

    /// The session key of a sealing session set up to this key for `tenant`.
    fn session_key(&self, enc: &[u8], tenant: &str) -> Result<Zeroizing<[u8; 32]>, SealingError> {
        let context = self
            .recipient
            .setup(enc, &sessions::info(tenant), Aead::Aes256Gcm)?;
        let mut key = Zeroizing::new([0u8; 32]);
        context.export(sessions::KEY_LABEL, key.as_mut())?;
        Ok(key)
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
        self.key_for(suite, key_id, enc, ciphertext, now_unix_ms)?
            .open(enc, ciphertext, aad)
    }

    /// Opens one message of a sealing session (`sessions`): from the cache when
    /// the session is known, otherwise by setting it up (one decapsulation) and
    /// remembering it once its first message has opened.
    #[allow(clippy::too_many_arguments)]
    pub fn open_session(
        &self,
        cache: &SessionCache,
        tenant: &str,
        suite: &str,
        key_id: &str,
        enc: &[u8],
        nonce: &[u8; sessions::NONCE_LEN],
        ciphertext: &[u8],
        aad: &[u8],
        now_unix_ms: i64,
    ) -> Result<Zeroizing<Vec<u8>>, SealingError> {
        // The key must still be live, whatever the cache holds.
        let key = self.key_for(suite, key_id, enc, ciphertext, now_unix_ms)?;
        let digest = SessionCache::digest(enc);
        match cache.claim(&digest, tenant, key_id, now_unix_ms)? {
            Claim::Known(session_key) => {
                sessions::open(&session_key, nonce, aad, ciphertext).ok_or(SealingError::Open)
            }
            Claim::Unknown => {
                let session_key = key.session_key(enc, tenant)?;
                let plaintext = sessions::open(&session_key, nonce, aad, ciphertext)
                    .ok_or(SealingError::Open)?;
                cache.insert(digest, tenant, key_id, session_key, now_unix_ms);
                Ok(plaintext)
            }
        }
    }

    /// The live key `key_id` of `suite`, with the envelope's sizes checked.
    fn key_for(
        &self,
        suite: &str,
        key_id: &str,
        enc: &[u8],
        ciphertext: &[u8],
        now_unix_ms: i64,
    ) -> Result<&OpeningKey, SealingError> {
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
        Ok(key)
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

/// Sets up a sealing session to a public key for `tenant`: what a client does
/// once per session. Returns enc and the session key (`sessions`).
pub fn start_session(
    suite: Suite,
    public_key: &[u8],
    tenant: &str,
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), SealingError> {
    // Enough for either KEM's encapsulation (X-Wing draws 64 bytes, DHKEM 32).
    let randomness = Zeroizing::new(super::random_bytes::<64>().map_err(|_| SealingError::Seal)?);
    start_session_with_rng(
        suite,
        public_key,
        tenant,
        &mut SuppliedRng(randomness.as_slice()),
    )
}

/// Hands out the bytes it was given, as the RNG of a deterministic
/// encapsulation; panics when asked for more than it holds, which the tests of
/// both suites would show at once.
pub struct SuppliedRng<'a>(pub &'a [u8]);

impl hpke::rand_core::TryRng for SuppliedRng<'_> {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        hpke::rand_core::utils::next_word_via_fill(self)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        hpke::rand_core::utils::next_word_via_fill(self)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        let (taken, rest) = self.0.split_at(dest.len());
        dest.copy_from_slice(taken);
        self.0 = rest;
        Ok(())
    }
}

impl hpke::rand_core::TryCryptoRng for SuppliedRng<'_> {}

/// `start_session` with the ephemeral randomness given (test vectors).
pub fn start_session_with_rng<R: hpke::rand_core::CryptoRng>(
    suite: Suite,
    public_key: &[u8],
    tenant: &str,
    rng: &mut R,
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), SealingError> {
    fn setup<K: hpke::Kem, R: hpke::rand_core::CryptoRng>(
        public_key: &[u8],
        info: &[u8],
        rng: &mut R,
    ) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), SealingError> {
        let pk = K::PublicKey::from_bytes(public_key).map_err(|_| SealingError::PublicKey)?;
        let (enc, context) =
            hpke::setup_sender_with_rng::<AesGcm256, HkdfSha256, K>(&OpModeS::Base, &pk, info, rng)
                .map_err(|_| SealingError::Seal)?;
        let mut key = Zeroizing::new([0u8; 32]);
        context
            .export(sessions::KEY_LABEL, key.as_mut())
            .map_err(|_| SealingError::Seal)?;
        Ok((enc.to_bytes().to_vec(), key))
    }
    let info = sessions::info(tenant);
    match suite {
        Suite::X25519Sha256Aes256Gcm => setup::<X25519HkdfSha256, R>(public_key, &info, rng),
        Suite::XWingSha256Aes256Gcm => setup::<XWing, R>(public_key, &info, rng),
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
