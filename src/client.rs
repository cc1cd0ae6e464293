//! What a client does before calling facevault: build the `EmbeddingPayload` and
//! seal it with HPKE to one of the service's public keys. Used by `facevault seal`,
//! the benchmark and the tests; any RFC 9180 library can do the same.

use prost::Message as _;
use zeroize::Zeroizing;

use crate::crypto::sealing::{self, SealedFor, SealingError, Suite};
use crate::proto;

/// A public sealing key as published by `GetSealingKeys`.
#[derive(Debug, Clone)]
pub struct SealingTarget {
    pub key_id: String,
    pub suite: Suite,
    pub public_key: Vec<u8>,
}

pub struct PayloadSpec<'a> {
    pub op: SealedFor,
    pub tenant: &'a str,
    pub subject_id: &'a str,
    pub model: &'a str,
    pub values: &'a [f32],
    pub sealed_at_unix_ms: i64,
}

pub fn seal_embedding(
    target: &SealingTarget,
    spec: &PayloadSpec<'_>,
) -> Result<proto::SealedEmbedding, SealingError> {
    let nonce = crate::crypto::random_bytes::<16>().map_err(|_| SealingError::Seal)?;
    let payload = proto::EmbeddingPayload {
        model: spec.model.to_owned(),
        values: spec.values.to_vec(),
        sealed_at_unix_ms: spec.sealed_at_unix_ms,
        nonce: nonce.to_vec(),
    };
    let plaintext = Zeroizing::new(payload.encode_to_vec());
    let mut values = payload.values;
    zeroize::Zeroize::zeroize(&mut values);
    let aad = sealing::aad(spec.op, spec.tenant, spec.subject_id);
    let (enc, ciphertext) = sealing::seal(target.suite, &target.public_key, &aad, &plaintext)?;
    Ok(proto::SealedEmbedding {
        suite: target.suite.as_str().to_owned(),
        key_id: target.key_id.clone(),
        enc,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use hpke::rand_core::{TryCryptoRng, TryRng};
    use hpke::{Deserializable as _, Kem as _, Serializable as _};
    use serde_json::Value;

    use super::*;
    use crate::crypto::sealing::{OpeningKey, SealingKeys};

    const VECTOR: &str = include_str!("../docs/test-vectors/sealing-x25519.json");

    /// Yields fixed bytes: the ephemeral key's IKM of the test vector.
    struct FixedRng<'a>(&'a [u8]);

    impl TryRng for FixedRng<'_> {
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

    impl TryCryptoRng for FixedRng<'_> {}

    fn hex_field(v: &Value, name: &str) -> Vec<u8> {
        hex::decode(v[name].as_str().unwrap()).unwrap()
    }

    /// The byte-exact vector in docs/protocol.md, also checked by the Python client
    /// with an independent HPKE implementation.
    #[test]
    fn sealing_matches_the_published_test_vector() {
        use hpke::aead::AesGcm256;
        use hpke::kdf::HkdfSha256;
        use hpke::kem::X25519HkdfSha256;

        let v: Value = serde_json::from_str(VECTOR).unwrap();
        let ikm_r: [u8; 32] = hex_field(&v, "ikm_r").try_into().unwrap();
        let service_key =
            OpeningKey::from_seed("tv".into(), Suite::X25519Sha256Aes256Gcm, &ikm_r, i64::MAX);
        assert_eq!(service_key.public_key, hex_field(&v, "pk_r"));

        let payload = proto::EmbeddingPayload {
            model: v["payload_model"].as_str().unwrap().to_owned(),
            values: v["payload_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
            sealed_at_unix_ms: v["payload_sealed_at_unix_ms"].as_i64().unwrap(),
            nonce: hex_field(&v, "payload_nonce"),
        };
        assert_eq!(payload.encode_to_vec(), hex_field(&v, "payload_serialized"));
        let aad = sealing::aad(SealedFor::Verify, "demo", "alice");
        assert_eq!(aad.as_slice(), hex_field(&v, "aad").as_slice());
        assert_eq!(sealing::INFO, hex_field(&v, "info").as_slice());

        let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&service_key.public_key)
            .unwrap();
        let ikm_e = hex_field(&v, "ikm_e");
        let (enc, ciphertext) =
            hpke::single_shot_seal_with_rng::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                &hpke::OpModeS::Base,
                &pk,
                sealing::INFO,
                &payload.encode_to_vec(),
                &aad,
                &mut FixedRng(&ikm_e),
            )
            .unwrap();
        assert_eq!(enc.to_bytes().to_vec(), hex_field(&v, "enc"));
        assert_eq!(ciphertext, hex_field(&v, "ciphertext"));

        // And the service opens it.
        let keys = SealingKeys::new(vec![service_key]);
        let opened = keys
            .open(
                "x25519-sha256-aes256gcm",
                "tv",
                &enc.to_bytes(),
                &ciphertext,
                &aad,
                0,
            )
            .unwrap();
        assert_eq!(opened.as_slice(), payload.encode_to_vec().as_slice());
        let _ = X25519HkdfSha256::derive_keypair(&ikm_e);
    }
}
