//! The X-Wing sealing test vector, `docs/test-vectors/sealing-xwing.json`.
//!
//! Deterministic like the X25519 vector: the recipient key pair is the
//! service's `DeriveKeyPair(ikm_r)`, and the encapsulation randomness is fixed
//! (X-Wing takes 64 bytes, `eseed`: ML-KEM-768's `m`, then the X25519 ephemeral
//! secret). The vector is computed here with the `hpke` crate, the key schedule
//! is recomputed from scratch (RFC 9180 §5.1 with ring's HMAC-SHA256) and the
//! ciphertext opened with ring's AES-256-GCM, and the service's own opening path
//! must accept it. The Node client (`clients/node/test-vectors.ts`, an
//! independent HPKE and X-Wing implementation) reproduces `enc` and
//! `ciphertext` byte for byte.
//!
//! `FACEVAULT_WRITE_VECTORS=1 cargo test --test api sealing_xwing_vector`
//! rewrites the file; otherwise the test fails when the file differs.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::XWing;
use hpke::{Kem as _, Serializable as _};
use prost::Message as _;
use serde_json::{Value, json};

use facevault::crypto::sealing::{self, OpeningKey, SealedFor, SealingKeys, Suite, SuppliedRng};
use facevault::proto;

const VECTOR_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/test-vectors/sealing-xwing.json"
);

const KEM_ID: u16 = 0x647a;
const KDF_ID: u16 = 0x0001;
const AEAD_ID: u16 = 0x0002;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

fn suite_id() -> Vec<u8> {
    let mut id = b"HPKE".to_vec();
    for x in [KEM_ID, KDF_ID, AEAD_ID] {
        id.extend_from_slice(&x.to_be_bytes());
    }
    id
}

/// RFC 9180 §4: LabeledExtract(salt, label, ikm) with HKDF-SHA256.
fn labeled_extract(salt: &[u8], label: &[u8], ikm: &[u8]) -> Vec<u8> {
    let salt = if salt.is_empty() {
        &[0u8; 32][..]
    } else {
        salt
    };
    hmac_sha256(salt, &[b"HPKE-v1", &suite_id(), label, ikm])
}

/// RFC 9180 §4: LabeledExpand(prk, label, info, L), L ≤ 32 here.
fn labeled_expand(prk: &[u8], label: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    assert!(len <= 32);
    let l = (len as u16).to_be_bytes();
    let mut out = hmac_sha256(prk, &[&l, b"HPKE-v1", &suite_id(), label, info, &[1u8]]);
    out.truncate(len);
    out
}

/// RFC 9180 §5.1 KeySchedule for mode_base (no PSK): (key, base_nonce).
fn key_schedule(shared_secret: &[u8], info: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let psk_id_hash = labeled_extract(b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(b"", b"info_hash", info);
    let mut context = vec![0u8];
    context.extend_from_slice(&psk_id_hash);
    context.extend_from_slice(&info_hash);
    let secret = labeled_extract(shared_secret, b"secret", b"");
    (
        labeled_expand(&secret, b"key", &context, 32),
        labeled_expand(&secret, b"base_nonce", &context, 12),
    )
}

/// The vector as JSON text, keys in reading order (like sealing-x25519.json).
fn render(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{\n");
    for (i, (name, value)) in fields.iter().enumerate() {
        let text = match value {
            Value::Array(items) => {
                let inner: Vec<String> = items.iter().map(|v| format!("    {v}")).collect();
                format!("[\n{}\n  ]", inner.join(",\n"))
            }
            other => other.to_string(),
        };
        let comma = if i + 1 < fields.len() { "," } else { "" };
        out.push_str(&format!("  \"{name}\": {text}{comma}\n"));
    }
    out.push_str("}\n");
    out
}

fn compute_vector() -> String {
    let ikm_r: [u8; 32] = core::array::from_fn(|i| (i + 1) as u8); // 0x01..0x20
    let eseed: [u8; 64] = core::array::from_fn(|i| (i + 0x21) as u8); // 0x21..0x60
    let (op, tenant, subject) = (SealedFor::Verify, "demo", "alice");
    let payload = proto::EmbeddingPayload {
        model: "demo-4".into(),
        values: vec![0.5, -0.25, 0.125, 1.0],
        sealed_at_unix_ms: 1_790_000_000_000,
        nonce: vec![0xaa; 16],
    };
    let payload_bytes = payload.encode_to_vec();
    let aad = sealing::aad(op, tenant, subject);

    // The service's key pair, derived as the service derives it.
    let (sk_r, pk_r) = XWing::derive_keypair(&ikm_r);
    let service_key =
        OpeningKey::from_seed("tv".into(), Suite::XWingSha256Aes256Gcm, &ikm_r, i64::MAX);
    assert_eq!(service_key.public_key, pk_r.to_bytes().to_vec());

    // Seal with the encapsulation randomness fixed.
    let (enc, ciphertext) = hpke::single_shot_seal_with_rng::<AesGcm256, HkdfSha256, XWing>(
        &hpke::OpModeS::Base,
        &pk_r,
        sealing::INFO,
        &payload_bytes,
        &aad,
        &mut SuppliedRng(&eseed),
    )
    .unwrap();
    let enc = enc.to_bytes().to_vec();
    assert_eq!(enc.len(), 1120);
    assert_eq!(ciphertext.len(), payload_bytes.len() + 16);

    // The KEM alone, same randomness: the same enc, and its shared secret.
    let (shared_secret, enc_again) =
        XWing::encap_with_rng(&pk_r, None, &mut SuppliedRng(&eseed)).unwrap();
    assert_eq!(enc_again.to_bytes().to_vec(), enc);
    let shared_secret = shared_secret.0.to_vec();

    // An independent key schedule and AES-256-GCM (ring) open the ciphertext.
    let (key, base_nonce) = key_schedule(&shared_secret, sealing::INFO);
    let opening = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key).unwrap(),
    );
    let mut in_out = ciphertext.clone();
    let opened = opening
        .open_in_place(
            ring::aead::Nonce::try_assume_unique_for_key(&base_nonce).unwrap(),
            ring::aead::Aad::from(&aad[..]),
            &mut in_out,
        )
        .unwrap();
    assert_eq!(opened, payload_bytes.as_slice());

    // And the service's opening path accepts it.
    let keys = SealingKeys::new(vec![service_key]);
    let opened = keys
        .open("xwing-sha256-aes256gcm", "tv", &enc, &ciphertext, &aad, 0)
        .unwrap();
    assert_eq!(opened.as_slice(), payload_bytes.as_slice());

    render(&[
        (
            "description",
            json!(
                "facevault/v1 sealing test vector: HPKE base mode (RFC 9180), X-Wing (ML-KEM-768 + X25519, \
                 draft-connolly-cfrg-xwing-kem, HPKE kem_id 0x647A) / HKDF-SHA256 / AES-256-GCM, one message \
                 (sequence 0). (sk_r, pk_r) = DeriveKeyPair(ikm_r) with SHAKE256 LabeledDerive \
                 (draft-ietf-hpke-pq-03 §4.5); sk_r is the 32-byte X-Wing decapsulation key (seed). The \
                 encapsulation randomness is eseed (64 bytes: ML-KEM-768 m, then the X25519 ephemeral secret), \
                 as X-Wing's EncapsulateDerand takes it. Byte strings are hex; payload_* are the \
                 EmbeddingPayload fields (payload_nonce in hex). See docs/protocol.md."
            ),
        ),
        ("suite", json!("xwing-sha256-aes256gcm")),
        ("mode", json!(0)),
        ("kem_id", json!(KEM_ID)),
        ("kdf_id", json!(KDF_ID)),
        ("aead_id", json!(AEAD_ID)),
        ("op", json!(op.as_str())),
        ("tenant", json!(tenant)),
        ("subject_id", json!(subject)),
        ("ikm_r", json!(hex::encode(ikm_r))),
        ("sk_r", json!(hex::encode(sk_r.to_bytes()))),
        ("pk_r", json!(hex::encode(pk_r.to_bytes()))),
        ("eseed", json!(hex::encode(eseed))),
        ("enc", json!(hex::encode(&enc))),
        ("payload_model", json!(payload.model)),
        ("payload_values", json!(payload.values)),
        (
            "payload_sealed_at_unix_ms",
            json!(payload.sealed_at_unix_ms),
        ),
        ("payload_nonce", json!(hex::encode(&payload.nonce))),
        ("payload_serialized", json!(hex::encode(&payload_bytes))),
        ("info", json!(hex::encode(sealing::INFO))),
        ("aad", json!(hex::encode(&aad[..]))),
        ("shared_secret", json!(hex::encode(&shared_secret))),
        ("key", json!(hex::encode(&key))),
        ("base_nonce", json!(hex::encode(&base_nonce))),
        ("ciphertext", json!(hex::encode(&ciphertext))),
    ])
}

#[test]
fn the_xwing_vector_is_what_the_rust_side_computes() {
    let computed = compute_vector();
    if std::env::var_os("FACEVAULT_WRITE_VECTORS").is_some_and(|v| v == "1") {
        std::fs::write(VECTOR_PATH, &computed).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(VECTOR_PATH).unwrap_or_default();
    assert!(
        committed == computed,
        "{VECTOR_PATH} differs from what the hpke crate computes; \
         rewrite it with FACEVAULT_WRITE_VECTORS=1 cargo test --test api sealing_xwing_vector"
    );
}

/// The X25519 vector's payload, AAD and info are shared with the X-Wing vector:
/// only the KEM differs.
#[test]
fn the_xwing_vector_shares_the_x25519_vectors_inputs() {
    let x: Value =
        serde_json::from_str(include_str!("../../docs/test-vectors/sealing-x25519.json")).unwrap();
    let w: Value = serde_json::from_str(&compute_vector()).unwrap();
    for field in [
        "op",
        "tenant",
        "subject_id",
        "ikm_r",
        "payload_model",
        "payload_values",
        "payload_sealed_at_unix_ms",
        "payload_nonce",
        "payload_serialized",
        "info",
        "aad",
    ] {
        assert_eq!(x[field], w[field], "{field}");
    }
}
