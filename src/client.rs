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
