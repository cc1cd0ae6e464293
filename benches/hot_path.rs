//! Micro-benchmarks of the verify and enroll hot path: HPKE open (both suites),
//! the salted transform, template decryption, cosine, and the whole per-template
//! verify core for 512 dimensions (target: ≤ 50 µs).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use facevault::client::{PayloadSpec, SealingTarget, seal_embedding};
use facevault::crypto::envelope::{self, TemplateRecord};
use facevault::crypto::keyring::Keyring;
use facevault::crypto::sealing::{self, OpeningKey, SealedFor, SealingKeys, Suite};
use facevault::crypto::transform;
use facevault::domain::{SubjectId, Tenant};
use prost::Message as _;
use zeroize::Zeroizing;

const NOW: i64 = 1_800_000_000_000;

fn vector(dim: usize, seed: u32) -> Vec<f32> {
    (0..dim)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn setup() -> (SealingKeys, Keyring, Tenant) {
    let keys = SealingKeys::new(vec![
        OpeningKey::from_seed(
            "x".into(),
            Suite::X25519Sha256Aes256Gcm,
            &[1; 32],
            NOW + 1_000_000,
        ),
        OpeningKey::from_seed(
            "w".into(),
            Suite::XWingSha256Aes256Gcm,
            &[2; 32],
            NOW + 1_000_000,
        ),
    ]);
    let ring = Keyring::from_versioned_masters(
        1,
        BTreeMap::from([(1, Zeroizing::new([3u8; 32]))]),
        Zeroizing::new([4u8; 32]),
    )
    .unwrap();
    (keys, ring, Tenant::try_from("demo").unwrap())
}

fn target(keys: &SealingKeys, suite: Suite) -> SealingTarget {
    let key = keys
        .current(NOW)
        .into_iter()
        .find(|k| k.suite == suite)
        .unwrap();
    SealingTarget {
        key_id: key.key_id.clone(),
        suite,
        public_key: key.public_key.clone(),
    }
}

fn hpke_open(c: &mut Criterion) {
    let (keys, _, _) = setup();
    let aad = sealing::aad(SealedFor::Verify, "demo", "alice");
    let mut group = c.benchmark_group("hpke_open_512");
    for suite in Suite::ALL {
        let sealed = seal_embedding(
            &target(&keys, suite),
            &PayloadSpec {
                op: SealedFor::Verify,
                tenant: "demo",
                subject_id: "alice",
                model: "m",
                values: &vector(512, 1),
                sealed_at_unix_ms: NOW,
            },
        )
        .unwrap();
        group.bench_function(suite.as_str(), |b| {
            b.iter(|| {
                keys.open(
                    &sealed.suite,
                    &sealed.key_id,
                    &sealed.enc,
                    &sealed.ciphertext,
                    &aad,
                    NOW,
                )
                .unwrap()
            })
        });
        // The same envelope through `hpke` 0.15's own single-shot open: what the
        // service ran before `crypto::hpke_recipient` (it recomputes pkR, or
        // re-expands the X-Wing seed, on every call).
        let seed = if suite == Suite::X25519Sha256Aes256Gcm {
            [1; 32]
        } else {
            [2; 32]
        };
        group.bench_function(format!("{}/hpke_crate", suite.as_str()), |b| {
            use hpke::{Deserializable as _, Kem as _, OpModeR};
            use hpke::{aead::AesGcm256, kdf::HkdfSha256, kem::X25519HkdfSha256, kem::XWing};
            match suite {
                Suite::X25519Sha256Aes256Gcm => {
                    let (sk, _) = X25519HkdfSha256::derive_keypair(&seed);
                    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc)
                        .unwrap();
                    b.iter(|| {
                        hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                            &OpModeR::Base,
                            &sk,
                            &enc,
                            sealing::INFO,
                            &sealed.ciphertext,
                            &aad,
                        )
                        .unwrap()
                    })
                }
                Suite::XWingSha256Aes256Gcm => {
                    let (sk, _) = XWing::derive_keypair(&seed);
                    let enc = <XWing as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc).unwrap();
                    b.iter(|| {
                        hpke::single_shot_open::<AesGcm256, HkdfSha256, XWing>(
                            &OpModeR::Base,
                            &sk,
                            &enc,
                            sealing::INFO,
                            &sealed.ciphertext,
                            &aad,
                        )
                        .unwrap()
                    })
                }
            }
        });
        // A message of a sealing session whose key is cached: one AES-256-GCM.
        let tgt = target(&keys, suite);
        let mut session = facevault::client::SealingSession::start(
            &tgt,
            "demo",
            std::time::Duration::from_secs(600),
        )
        .unwrap();
        let cache = facevault::crypto::sessions::SessionCache::new(
            std::num::NonZeroUsize::new(16).unwrap(),
            ["demo"],
            std::time::Duration::from_secs(600),
        );
        let message = session
            .seal(&PayloadSpec {
                op: SealedFor::Verify,
                tenant: "demo",
                subject_id: "alice",
                model: "m",
                values: &vector(512, 1),
                sealed_at_unix_ms: NOW,
            })
            .unwrap();
        let nonce: [u8; 12] = message.session_nonce.as_slice().try_into().unwrap();
        let open_session = || {
            keys.open_session(
                &cache,
                "demo",
                &message.suite,
                &message.key_id,
                &message.enc,
                &nonce,
                &message.ciphertext,
                &aad,
                NOW,
            )
            .unwrap()
        };
        open_session();
        group.bench_function(format!("{}/session_cached", suite.as_str()), |b| {
            b.iter(open_session)
        });
    }
    group.finish();
}

/// Where an HPKE open's time goes: the KEM decapsulation alone, then the key
/// schedule on top of it, for both suites.
fn hpke_parts(c: &mut Criterion) {
    use facevault::crypto::hpke_recipient::{Aead, Recipient};
    use hpke::{Kem as _, Serializable as _};
    let (keys, _, _) = setup();
    let mut group = c.benchmark_group("hpke_parts");
    for suite in Suite::ALL {
        let recipient = match suite {
            Suite::X25519Sha256Aes256Gcm => {
                let (sk, pk) = hpke::kem::X25519HkdfSha256::derive_keypair(&[1; 32]);
                Recipient::x25519(sk.to_bytes().into(), pk.to_bytes().into())
            }
            Suite::XWingSha256Aes256Gcm => {
                let (sk, _) = hpke::kem::XWing::derive_keypair(&[2; 32]);
                Recipient::xwing(&sk.to_bytes().into())
            }
        };
        let tgt = target(&keys, suite);
        let (enc, _) = sealing::seal(suite, &tgt.public_key, b"aad", b"pt").unwrap();
        group.bench_function(format!("{}/decapsulate", suite.as_str()), |b| {
            b.iter(|| recipient.decapsulate(black_box(&enc)).unwrap())
        });
        group.bench_function(
            format!("{}/decapsulate_and_key_schedule", suite.as_str()),
            |b| {
                b.iter(|| {
                    recipient
                        .setup(black_box(&enc), sealing::INFO, Aead::Aes256Gcm)
                        .unwrap()
                })
            },
        );
    }
    let payload = vec![7u8; 2100];
    let key = [3u8; 32];
    let nonce = [4u8; 12];
    let ct = facevault::crypto::sessions::seal(&key, &nonce, b"aad", &payload).unwrap();
    group.bench_function("aes256gcm_open_2100_bytes", |b| {
        b.iter(|| facevault::crypto::sessions::open(&key, &nonce, b"aad", black_box(&ct)).unwrap())
    });
    group.finish();
}

fn salted_transform(c: &mut Criterion) {
    let key = transform::TransformKey::from_bytes([9; 32]);
    let mut group = c.benchmark_group("transform");
    for dim in [128, 512, 1024] {
        let input = vector(dim, 2);
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::from_parameter(dim), &input, |b, input| {
            b.iter(|| transform::protect(&key, &[5; 32], black_box(input), &mut out).unwrap())
        });
    }
    group.finish();
}

fn record(ring: &Keyring, tenant: &Tenant, dim: usize) -> TemplateRecord {
    let keys = ring.tenant(tenant).unwrap();
    let mut protected = Vec::new();
    transform::protect(
        keys.transform_key(),
        &[5; 32],
        &vector(dim, 3),
        &mut protected,
    )
    .unwrap();
    TemplateRecord {
        model: "m".into(),
        salt: vec![5; 32],
        protected,
        enrolled_at_unix_ms: NOW,
        consent: None,
    }
}

fn template_open_and_cosine(c: &mut Criterion) {
    let (_, ring, tenant) = setup();
    let keys = ring.tenant(&tenant).unwrap();
    let subject = keys.subject_ref(&SubjectId::try_from("alice".to_owned()).unwrap());
    let sealed =
        envelope::seal_template(&keys, &tenant, &subject, "t1", &record(&ring, &tenant, 512))
            .unwrap();
    c.bench_function("template_open_512", |b| {
        b.iter(|| envelope::open_template(&keys, &tenant, &subject, "t1", sealed.clone()).unwrap())
    });
    let a = vector(512, 4);
    let bv = vector(512, 5);
    c.bench_function("cosine_512", |b| {
        b.iter(|| transform::similarity(black_box(&a), black_box(&bv)))
    });
}

/// Everything the service does per verify in CPU, for one template: HPKE open,
/// payload decode, probe transform, template decryption, cosine.
fn verify_core(c: &mut Criterion) {
    let (keys, ring, tenant) = setup();
    let tkeys = ring.tenant(&tenant).unwrap();
    let subject = tkeys.subject_ref(&SubjectId::try_from("alice".to_owned()).unwrap());
    let stored = envelope::seal_template(
        &tkeys,
        &tenant,
        &subject,
        "t1",
        &record(&ring, &tenant, 512),
    )
    .unwrap()
    .encode_to_vec();
    let aad = sealing::aad(SealedFor::Verify, "demo", "alice");
    let sealed = seal_embedding(
        &target(&keys, Suite::X25519Sha256Aes256Gcm),
        &PayloadSpec {
            op: SealedFor::Verify,
            tenant: "demo",
            subject_id: "alice",
            model: "m",
            values: &vector(512, 3),
            sealed_at_unix_ms: NOW,
        },
    )
    .unwrap();
    // HPKE open and payload decoding: the first step of both verify and enroll.
    let open_payload = || {
        let plain = keys
            .open(
                &sealed.suite,
                &sealed.key_id,
                &sealed.enc,
                &sealed.ciphertext,
                &aad,
                NOW,
            )
            .unwrap();
        facevault::proto::EmbeddingPayload::decode(plain.as_slice()).unwrap()
    };
    let mut probe = Vec::new();
    c.bench_function("verify_core_512_x25519", |b| {
        b.iter(|| {
            let payload = open_payload();
            let template = envelope::SealedTemplate::decode(stored.as_slice()).unwrap();
            let record =
                envelope::open_template(&tkeys, &tenant, &subject, "t1", template).unwrap();
            let salt: [u8; 32] = record.salt.as_slice().try_into().unwrap();
            transform::protect(tkeys.transform_key(), &salt, &payload.values, &mut probe).unwrap();
            black_box(transform::similarity(&probe, &record.protected))
        })
    });
    c.bench_function("enroll_core_512_x25519", |b| {
        b.iter(|| {
            let payload = open_payload();
            let mut protected = Vec::new();
            transform::protect(
                tkeys.transform_key(),
                &[6; 32],
                &payload.values,
                &mut protected,
            )
            .unwrap();
            let record = TemplateRecord {
                model: "m".into(),
                salt: vec![6; 32],
                protected,
                enrolled_at_unix_ms: NOW,
                consent: None,
            };
            black_box(envelope::seal_template(&tkeys, &tenant, &subject, "t1", &record).unwrap())
        })
    });
}

criterion_group!(
    benches,
    hpke_open,
    hpke_parts,
    salted_transform,
    template_open_and_cosine,
    verify_core
);
criterion_main!(benches);
