//! Any bytes as a decrypted EmbeddingPayload, checked and transformed as the
//! service does: refusals, never panics.
#![no_main]

use facevault::crypto::transform::{TransformKey, protect};
use facevault::domain::{Embedding, EmbeddingModel, ModelId};
use facevault::proto::EmbeddingPayload;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = EmbeddingPayload::decode(data) else { return };
    let model = EmbeddingModel {
        id: ModelId::try_from("m").unwrap(),
        dimension: payload.values.len().clamp(1, Embedding::MAX_DIMENSION),
        threshold: 0.5,
    };
    if let Ok(embedding) = Embedding::new(&model, Zeroizing::new(payload.values)) {
        let mut out = Vec::new();
        let _ = protect(&TransformKey::from_bytes([3; 32]), &[4; 32], embedding.values(), &mut out);
    }
});
