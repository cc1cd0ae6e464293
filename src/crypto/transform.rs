//! Salted orthogonal transform of face embeddings ("cancelable biometrics").
//!
//! Why this exists, and why it is built this way:
//!
//! - **Scores survive.** Every step (sign flip, permutation, orthonormal
//!   Walsh–Hadamard) is an orthogonal map, so inner products and hence cosine
//!   scores between two vectors protected under the same key and salt equal
//!   the plain scores up to float rounding. Matching runs on protected
//!   vectors only; the plain embedding never has to be stored.
//! - **Salt ⇒ renewable and unlinkable.** The per-enrollment salt selects a
//!   fresh transform, so a leaked template is revoked by re-enrolling under a
//!   new salt, and templates of one face under different salts (another
//!   enrollment, another tenant) look like unrelated random vectors: records
//!   cannot be joined across databases.
//! - **Separate key ⇒ split knowledge.** The transform depends on a tenant key
//!   held apart from the template store and from the encryption keys, so
//!   whoever holds only the stored records (and their salts) cannot undo the
//!   transform. It is not encryption on its own: key + salt invert it, which
//!   is why the vault still encrypts the result.
//! - **No home-made crypto.** Seeds come from HKDF-SHA256 (ring) and the
//!   randomness from ChaCha20; this module only does linear algebra.
//!
//! The exact bit-level algorithm is part of the stored-template format: any
//! change makes every existing enrollment unmatchable, hence the
//! known-answer test.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use ring::hkdf;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Versioned so that a future algorithm can coexist with stored v1 templates.
const SEED_INFO: &[u8] = b"facevault/v1 transform seed";

/// One round mixes a single coordinate into all of them; later rounds
/// re-randomise signs and order so that structured inputs (one-hot, constant)
/// do not come out as a recognisable Hadamard row.
const ROUNDS: usize = 3;

/// Tenant transform key: 32 secret bytes, zeroized on drop, no Debug that prints bytes.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TransformKey([u8; 32]);

impl TransformKey {
    /// Wraps secret key bytes; the caller should zeroize its own copy.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for TransformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransformKey(<redacted>)")
    }
}

/// Length of a protected vector for an embedding of `dim` values (next power of two, min 1).
///
/// # Panics
/// If the next power of two does not fit in `usize` (unreachable for any
/// slice of `f32` that fits in memory).
pub fn protected_len(dim: usize) -> usize {
    dim.max(1)
        .checked_next_power_of_two()
        .expect("embedding dimension too large")
}

/// Errors: input empty, any NaN/inf, or zero norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformError {
    /// The embedding has no values.
    Empty,
    /// At least one value is NaN or infinite.
    NotFinite,
    /// Every value is zero, so there is no direction to normalise.
    ZeroNorm,
}

impl std::fmt::Display for TransformError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "embedding is empty",
            Self::NotFinite => "embedding contains NaN or infinity",
            Self::ZeroNorm => "embedding has zero norm",
        })
    }
}

impl std::error::Error for TransformError {}

/// Normalise `input`, pad, transform under (key, salt); writes protected_len(input.len()) values into `out` (cleared first, capacity reused).
///
/// On error `out` is left empty.
pub fn protect(
    key: &TransformKey,
    salt: &[u8; 32],
    input: &[f32],
    out: &mut Vec<f32>,
) -> Result<(), TransformError> {
    out.clear();
    if input.is_empty() {
        return Err(TransformError::Empty);
    }
    // f64 cannot overflow on the square of any finite f32, nor underflow to
    // zero on a subnormal one, so "zero norm" really means all zeros.
    let mut sum_sq = 0.0f64;
    for &x in input {
        if !x.is_finite() {
            return Err(TransformError::NotFinite);
        }
        sum_sq += f64::from(x) * f64::from(x);
    }
    if sum_sq == 0.0 {
        return Err(TransformError::ZeroNorm);
    }
    let inv_norm = 1.0 / sum_sq.sqrt();

    let n = protected_len(input.len());
    if out.capacity() < n {
        // Growing would free the old buffer, which may still hold an earlier
        // protected vector, without wiping it.
        out.zeroize();
        out.reserve_exact(n);
    }
    out.extend(input.iter().map(|&x| (f64::from(x) * inv_norm) as f32));
    out.resize(n, 0.0);

    let mut rng = round_rng(key, salt);
    // Scaling by 1/sqrt(n) once per round, folded into the sign flip, keeps
    // every round orthonormal without an extra pass over the data.
    let scale = 1.0 / (n as f32).sqrt();
    for _ in 0..ROUNDS {
        flip_signs_and_scale(out, scale, &mut rng);
        shuffle(out, &mut rng);
        fwht(out);
    }
    Ok(())
}

/// Cosine similarity of two protected vectors of equal length (both are unit length already, so this is the dot product, accumulated in f64, clamped to [-1,1]).
///
/// Fails closed: returns -1.0, the lowest possible score, when the lengths
/// differ, either is empty, or the result is not finite (a corrupt record
/// must never pass a match threshold).
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return -1.0;
    }
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    if dot.is_finite() {
        dot.clamp(-1.0, 1.0) as f32
    } else {
        -1.0
    }
}

/// Salt as HKDF salt and key as IKM: the key stays the only secret, and each
/// enrollment salt yields an independent PRK.
fn round_rng(key: &TransformKey, salt: &[u8; 32]) -> ChaCha20Rng {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&key.0);
    let mut seed = Zeroizing::new([0u8; 32]);
    prk.expand(&[SEED_INFO], hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut seed[..]))
        .expect("32 bytes is within HKDF-SHA256's output limit");
    ChaCha20Rng::from_seed(*seed)
}

/// Bit k of the j-th `u32` flips element 32*j + k; XOR on the sign bit keeps
/// it branch-free and exact.
fn flip_signs_and_scale(v: &mut [f32], scale: f32, rng: &mut ChaCha20Rng) {
    for chunk in v.chunks_mut(32) {
        let bits = rng.next_u32();
        for (k, x) in chunk.iter_mut().enumerate() {
            let sign = ((bits >> k) & 1) << 31;
            *x = f32::from_bits((*x * scale).to_bits() ^ sign);
        }
    }
}

/// Fisher–Yates applied directly to the data: equivalent to shuffling an
/// index array and gathering `v[perm[i]]`, but needs no second buffer that
/// would hold (and have to wipe) plaintext-derived values. The index uses
/// Lemire's multiply-shift without rejection; its bias (< n / 2^32) is far
/// below anything that matters for a permutation of at most a few thousand.
fn shuffle(v: &mut [f32], rng: &mut ChaCha20Rng) {
    for i in (1..v.len()).rev() {
        let j = ((u64::from(rng.next_u32()) * (i as u64 + 1)) >> 32) as usize;
        v.swap(i, j);
    }
}

/// Unnormalised in-place fast Walsh–Hadamard transform (Sylvester order),
/// O(n log n); `v.len()` must be a power of two.
fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    if n >= 8 {
        // The first three stages fused per 8-element block: the generic loop
        // below spends more on loop overhead than arithmetic for h < 8. Same
        // additions in the same order, so the result is bit-identical.
        for c in v.chunks_exact_mut(8) {
            let a = [
                c[0] + c[1],
                c[0] - c[1],
                c[2] + c[3],
                c[2] - c[3],
                c[4] + c[5],
                c[4] - c[5],
                c[6] + c[7],
                c[6] - c[7],
            ];
            let b = [
                a[0] + a[2],
                a[1] + a[3],
                a[0] - a[2],
                a[1] - a[3],
                a[4] + a[6],
                a[5] + a[7],
                a[4] - a[6],
                a[5] - a[7],
            ];
            for k in 0..4 {
                c[k] = b[k] + b[k + 4];
                c[k + 4] = b[k] - b[k + 4];
            }
        }
        h = 8;
    }
    while h < n {
        for block in v.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = x + y;
                *b = x - y;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand::rngs::StdRng;

    const KEY: [u8; 32] = [0x42; 32];

    fn key() -> TransformKey {
        TransformKey::from_bytes(KEY)
    }

    fn salt_from(rng: &mut StdRng) -> [u8; 32] {
        let mut s = [0u8; 32];
        rng.fill(&mut s);
        s
    }

    fn random_vec(rng: &mut StdRng, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Face embeddings are often not zero-mean; a positive bias exercises
    /// high-similarity pairs as well.
    fn biased_vec(rng: &mut StdRng, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| rng.random_range(0.0f32..1.0)).collect()
    }

    fn noisy_copy(rng: &mut StdRng, a: &[f32], noise: f32) -> Vec<f32> {
        a.iter()
            .map(|&x| x + noise * rng.random_range(-1.0f32..1.0))
            .collect()
    }

    fn plain_cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    fn protected(key: &TransformKey, salt: &[u8; 32], input: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        protect(key, salt, input, &mut out).expect("valid input");
        out
    }

    /// Cosine of two unit vectors, computed independently of `similarity`
    /// (no clamping, so a broken transform cannot hide behind it).
    fn raw_cos(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    fn check_scores_preserved(dim: usize, pairs: usize, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let k = key();
        let salt = salt_from(&mut rng);
        let mut worst = 0.0f64;
        for i in 0..pairs {
            let a = if i % 2 == 0 {
                random_vec(&mut rng, dim)
            } else {
                biased_vec(&mut rng, dim)
            };
            let b = match i % 5 {
                0 | 1 => random_vec(&mut rng, dim),
                2 => noisy_copy(&mut rng, &a, 0.05),
                3 => noisy_copy(&mut rng, &a, 0.5),
                _ => a.iter().map(|&x| -x).collect::<Vec<_>>(),
            };
            let pa = protected(&k, &salt, &a);
            let pb = protected(&k, &salt, &b);
            assert_eq!(pa.len(), protected_len(dim));
            let plain = plain_cosine(&a, &b);
            let diff = (similarity(&pa, &pb) as f64 - plain).abs();
            worst = worst.max(diff);
            assert!(
                diff <= 1e-5,
                "dim {dim} pair {i}: plain {plain}, protected differs by {diff}"
            );
        }
        // Guards against a vacuous run (e.g. everything clamped to the same value).
        assert!(worst > 0.0 || dim == 1);
    }

    #[test]
    fn scores_preserved_512() {
        check_scores_preserved(512, 1000, 1);
    }

    #[test]
    fn scores_preserved_non_power_of_two_and_other_dims() {
        check_scores_preserved(300, 300, 2);
        check_scores_preserved(128, 300, 3);
        check_scores_preserved(1024, 300, 4);
        check_scores_preserved(1, 10, 5);
        check_scores_preserved(3, 50, 6);
    }

    #[test]
    fn near_duplicates_stay_near_one() {
        let mut rng = StdRng::seed_from_u64(7);
        let k = key();
        let salt = salt_from(&mut rng);
        let a = random_vec(&mut rng, 512);
        let b = noisy_copy(&mut rng, &a, 0.01);
        let s = similarity(&protected(&k, &salt, &a), &protected(&k, &salt, &b));
        assert!(s > 0.999, "{s}");
        let same = similarity(&protected(&k, &salt, &a), &protected(&k, &salt, &a));
        assert!((same - 1.0).abs() <= 1e-6, "{same}");
    }

    #[test]
    fn output_is_unit_length() {
        let mut rng = StdRng::seed_from_u64(8);
        let k = key();
        for dim in [1, 2, 3, 100, 128, 300, 512, 1000, 1024] {
            for scale in [1e-30f32, 1.0, 1e30] {
                let salt = salt_from(&mut rng);
                let a: Vec<f32> = random_vec(&mut rng, dim)
                    .iter()
                    .map(|x| x * scale)
                    .collect();
                let p = protected(&k, &salt, &a);
                let norm = raw_cos(&p, &p).sqrt();
                assert!(
                    (norm - 1.0).abs() <= 1e-5,
                    "dim {dim} scale {scale}: {norm}"
                );
            }
        }
    }

    /// Structured inputs are the ones a weak mixing would leak through.
    fn probe_inputs(rng: &mut StdRng) -> Vec<Vec<f32>> {
        let mut one_hot = vec![0.0f32; 512];
        one_hot[0] = 1.0;
        vec![
            random_vec(rng, 512),
            biased_vec(rng, 512),
            vec![1.0f32; 512],
            one_hot,
        ]
    }

    fn check_unlinkable(
        mut keys_and_salts: impl FnMut(&mut StdRng) -> [(TransformKey, [u8; 32]); 2],
    ) {
        let mut rng = StdRng::seed_from_u64(9);
        for input in probe_inputs(&mut rng) {
            let mut sum = 0.0f64;
            const TRIALS: usize = 200;
            for _ in 0..TRIALS {
                let [(k1, s1), (k2, s2)] = keys_and_salts(&mut rng);
                let c = raw_cos(&protected(&k1, &s1, &input), &protected(&k2, &s2, &input)).abs();
                assert!(c < 0.2, "linkable: |cos| = {c}");
                sum += c;
            }
            let mean = sum / TRIALS as f64;
            assert!(mean < 0.06, "mean |cos| = {mean}");
        }
    }

    #[test]
    fn different_salts_are_unlinkable() {
        check_unlinkable(|rng| [(key(), salt_from(rng)), (key(), salt_from(rng))]);
    }

    #[test]
    fn different_keys_same_salt_are_unlinkable() {
        check_unlinkable(|rng| {
            let salt = salt_from(rng);
            [
                (TransformKey::from_bytes(salt_from(rng)), salt),
                (TransformKey::from_bytes(salt_from(rng)), salt),
            ]
        });
    }

    #[test]
    fn output_does_not_resemble_input() {
        let mut rng = StdRng::seed_from_u64(10);
        let k = key();
        for input in probe_inputs(&mut rng) {
            let p = protected(&k, &salt_from(&mut rng), &input);
            let c = plain_cosine(&input, &p).abs();
            assert!(c < 0.2, "|cos(input, protected)| = {c}");
        }
    }

    #[test]
    fn deterministic() {
        let mut rng = StdRng::seed_from_u64(11);
        let salt = salt_from(&mut rng);
        let a = random_vec(&mut rng, 300);
        let first = protected(&key(), &salt, &a);
        // Reused, dirty, larger buffer must give the same bits.
        let mut out = vec![f32::NAN; 4096];
        let ptr = out.as_ptr();
        protect(&key(), &salt, &a, &mut out).unwrap();
        assert_eq!(out.as_ptr(), ptr, "capacity should be reused");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&first), bits(&out));
    }

    /// Pins the v1 format: stored templates are only matchable while these
    /// bits stay the same.
    #[test]
    fn known_answer_v1() {
        let key = TransformKey::from_bytes(core::array::from_fn(|i| i as u8));
        let salt: [u8; 32] = core::array::from_fn(|i| 0xa0 ^ i as u8);
        let input: Vec<f32> = (0..5).map(|i| i as f32 - 1.5).collect();
        let out = protected(&key, &salt, &input);
        let bits: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, KAT_BITS);
    }

    const KAT_BITS: [u32; 8] = [
        0x3dd7_e0cc,
        0xbe57_e0cc,
        0x3e86_ec81,
        0xbd57_e0d8,
        0x3ed7_e0cd,
        0x3200_0000,
        0x3ef2_dce7,
        0xbf2f_66a8,
    ];

    /// Independent reference: RFC 5869 HKDF spelled out with HMAC, explicit
    /// permutation array, and a dense Hadamard matrix. Catches swapped HKDF
    /// roles, wrong bit order, or a non-orthonormal butterfly.
    fn reference(key: &[u8; 32], salt: &[u8; 32], input: &[f32]) -> Vec<f64> {
        use ring::hmac;
        let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), key);
        let mut msg = SEED_INFO.to_vec();
        msg.push(1);
        let okm = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()), &msg);
        let seed: [u8; 32] = okm.as_ref().try_into().unwrap();
        let mut rng = ChaCha20Rng::from_seed(seed);

        let n = protected_len(input.len());
        let norm = input
            .iter()
            .map(|&x| x as f64 * x as f64)
            .sum::<f64>()
            .sqrt();
        let mut v: Vec<f64> = input.iter().map(|&x| x as f64 / norm).collect();
        v.resize(n, 0.0);
        for _ in 0..ROUNDS {
            let mut signs = Vec::with_capacity(n);
            while signs.len() < n {
                let bits = rng.next_u32();
                for k in 0..32 {
                    signs.push(if (bits >> k) & 1 == 1 { -1.0 } else { 1.0 });
                }
            }
            for (x, s) in v.iter_mut().zip(&signs) {
                *x *= s;
            }
            let mut perm: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                let j = ((rng.next_u32() as u64 * (i as u64 + 1)) >> 32) as usize;
                perm.swap(i, j);
            }
            let permuted: Vec<f64> = perm.iter().map(|&p| v[p]).collect();
            let scale = 1.0 / (n as f64).sqrt();
            v = (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| {
                            let h = if (i & j).count_ones() % 2 == 0 {
                                1.0
                            } else {
                                -1.0
                            };
                            h * permuted[j]
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
        }
        v
    }

    #[test]
    fn matches_independent_reference() {
        let mut rng = StdRng::seed_from_u64(12);
        for dim in [1, 2, 5, 8, 33, 100] {
            let key_bytes = salt_from(&mut rng);
            let salt = salt_from(&mut rng);
            let input = random_vec(&mut rng, dim);
            let got = protected(&TransformKey::from_bytes(key_bytes), &salt, &input);
            let want = reference(&key_bytes, &salt, &input);
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-6, "dim {dim}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn rejects_bad_input_and_leaves_out_empty() {
        let k = key();
        let salt = [7u8; 32];
        let mut out = vec![1.0f32; 8];
        let cases: [(&[f32], TransformError); 6] = [
            (&[], TransformError::Empty),
            (&[1.0, f32::NAN, 2.0], TransformError::NotFinite),
            (&[f32::INFINITY, 1.0], TransformError::NotFinite),
            (&[0.5, f32::NEG_INFINITY], TransformError::NotFinite),
            (&[0.0; 512], TransformError::ZeroNorm),
            (&[-0.0, 0.0], TransformError::ZeroNorm),
        ];
        for (input, want) in cases {
            out.resize(8, 1.0);
            assert_eq!(protect(&k, &salt, input, &mut out), Err(want));
            assert!(out.is_empty());
        }
        // Tiny but non-zero is valid: the norm is taken in f64.
        let mut tiny = vec![0.0f32; 16];
        tiny[3] = f32::from_bits(1); // smallest subnormal
        protect(&k, &salt, &tiny, &mut out).unwrap();
        assert!((raw_cos(&out, &out) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn similarity_fails_closed() {
        assert_eq!(similarity(&[1.0, 0.0], &[1.0]), -1.0);
        assert_eq!(similarity(&[], &[]), -1.0);
        assert_eq!(similarity(&[f32::NAN], &[1.0]), -1.0);
        assert_eq!(similarity(&[1.0, 0.0], &[1.0, 0.0]), 1.0);
        // Clamped: rounding may push a unit dot product past 1.
        assert_eq!(similarity(&[1.0001], &[1.0]), 1.0);
        assert_eq!(similarity(&[-1.0001], &[1.0]), -1.0);
    }

    #[test]
    fn protected_len_values() {
        for (dim, n) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (128, 128),
            (300, 512),
            (512, 512),
            (513, 1024),
        ] {
            assert_eq!(protected_len(dim), n, "dim {dim}");
        }
    }

    #[test]
    fn key_is_redacted_and_wiped() {
        fn zeroized_on_drop<T: ZeroizeOnDrop>() {}
        zeroized_on_drop::<TransformKey>();
        let shown = format!("{:?}", TransformKey::from_bytes([0xab; 32]));
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab"),
            "{shown}"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn plain_cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    fn vectors() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (1usize..600).prop_flat_map(|dim| {
            (
                prop::collection::vec(-10.0f32..10.0, dim),
                prop::collection::vec(-10.0f32..10.0, dim),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Orthogonal: unit length out, and scores preserved, for any dimension.
        #[test]
        fn protects_orthogonally((a, b) in vectors(), salt in any::<[u8; 32]>(), key in any::<[u8; 32]>()) {
            prop_assume!(a.iter().any(|v| *v != 0.0) && b.iter().any(|v| *v != 0.0));
            let key = TransformKey::from_bytes(key);
            let (mut pa, mut pb) = (Vec::new(), Vec::new());
            protect(&key, &salt, &a, &mut pa).unwrap();
            protect(&key, &salt, &b, &mut pb).unwrap();
            prop_assert_eq!(pa.len(), protected_len(a.len()));
            let norm: f64 = pa.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            prop_assert!((norm - 1.0).abs() < 1e-4, "norm {}", norm);
            let diff = (f64::from(similarity(&pa, &pb)) - plain_cosine(&a, &b)).abs();
            prop_assert!(diff < 1e-4, "score drift {}", diff);
        }
    }
}
