//! Any bytes as a SealedEmbedding, opened with real keys: refusals, never panics.
#![no_main]

use std::sync::LazyLock;

use facevault::crypto::sealing::{OpeningKey, SealedFor, SealingKeys, Suite, aad};
use facevault::proto::SealedEmbedding;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

static KEYS: LazyLock<SealingKeys> = LazyLock::new(|| {
    SealingKeys::new(vec![
        OpeningKey::from_seed("x".into(), Suite::X25519Sha256Aes256Gcm, &[1; 32], i64::MAX),
        OpeningKey::from_seed("w".into(), Suite::XWingSha256Aes256Gcm, &[2; 32], i64::MAX),
    ])
});

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = SealedEmbedding::decode(data) {
        let aad = aad(SealedFor::Verify, "demo", "alice");
        let _ = KEYS.open(&sealed.suite, &sealed.key_id, &sealed.enc, &sealed.ciphertext, &aad, 0);
    }
});
