//! The recipient side of RFC 9180 HPKE, base mode, with HKDF-SHA256 and AES-256-GCM,
//! for the two KEMs the service offers. It is composed from reviewed primitives
//! (x25519-dalek, RustCrypto's ML-KEM, SHA-3 and SHAKE, ring's HMAC, HKDF and
//! AES-GCM) so that what depends only on the recipient key is computed once, when
//! the key is loaded, and not on every open:
//!
//! - DHKEM(X25519): `hpke` 0.15 recomputes pkR from skR on every decapsulation, a
//!   second scalar multiplication. Here pkR is kept beside skR: one X25519 per open.
//! - X-Wing: the `x-wing` crate expands the 32-byte seed on every decapsulation
//!   (SHAKE256, an ML-KEM-768 key generation, an X25519 base multiplication). Here
//!   the expanded ML-KEM key, `sk_X` and `pk_X` are kept: one ML-KEM decapsulation
//!   and one X25519 per open.
//!
//! Sealing and DeriveKeyPair stay with `hpke`. The tests check this module against
//! the RFC 9180 vectors (Appendix A.1), the X-Wing draft's vectors, and `hpke`
//! itself byte for byte (shared secret, plaintext and exported secrets).

use ml_kem::{Decapsulate as _, KeyExport as _};
use ring::{aead, hkdf, hmac};
use sha3::Digest as _;
use shake::{ExtendableOutput as _, Update as _, XofReader as _};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// `HPKE-v1`, the version label of every labeled KDF call (RFC 9180 §4).
const VERSION_LABEL: &[u8] = b"HPKE-v1";
/// HKDF-SHA256 (RFC 9180 §7.2).
const KDF_ID: u16 = 0x0001;
/// Nh of HKDF-SHA256.
const NH: usize = 32;
/// Nn of every AEAD used here.
const NONCE_LEN: usize = 12;
/// X-Wing's combiner label (draft-connolly-cfrg-xwing-kem).
const XWING_LABEL: &[u8] = br"\.//^\";
const MLKEM768_CIPHERTEXT_LEN: usize = 1088;
const X25519_LEN: usize = 32;

/// Why an open failed. Deliberately coarse: a caller learns only that the
/// envelope did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the encapsulated key has the wrong length")]
    EncLength,
    /// The X25519 share was of low order (an all-zero shared secret, RFC 9180 §7.1.4).
    #[error("the encapsulated key is not contributory")]
    NotContributory,
    #[error("the envelope could not be opened")]
    Open,
}

/// A KEM private key, expanded for decapsulation.
pub enum Recipient {
    /// DHKEM(X25519, HKDF-SHA256), KEM id 0x0020.
    X25519 { sk: StaticSecret, pk: [u8; 32] },
    /// X-Wing (ML-KEM-768 + X25519), KEM id 0x647a.
    XWing(Box<XWingKey>),
}

pub struct XWingKey {
    sk_m: ml_kem::ml_kem_768::DecapsulationKey,
    sk_x: StaticSecret,
    pk_x: PublicKey,
}

impl Recipient {
    /// A DHKEM(X25519) recipient from skR and its pkR (as DeriveKeyPair gave them).
    pub fn x25519(sk: [u8; 32], pk: [u8; 32]) -> Self {
        Self::X25519 {
            sk: StaticSecret::from(sk),
            pk,
        }
    }

    /// An X-Wing recipient from its 32-byte decapsulation key (the seed of the
    /// draft's `expandDecapsulationKey`).
    pub fn xwing(seed: &[u8; 32]) -> Self {
        let mut xof = shake::Shake256::default();
        xof.update(seed);
        let mut reader = xof.finalize_xof();
        let mut expanded = Zeroizing::new([0u8; 96]);
        reader.read(expanded.as_mut());
        let mut mlkem_seed = ml_kem::Seed::default();
        mlkem_seed.copy_from_slice(&expanded[..64]);
        let sk_m = ml_kem::ml_kem_768::DecapsulationKey::from_seed(mlkem_seed);
        let mut sk_x = [0u8; 32];
        sk_x.copy_from_slice(&expanded[64..]);
        let sk_x = StaticSecret::from(sk_x);
        let pk_x = PublicKey::from(&sk_x);
        Self::XWing(Box::new(XWingKey { sk_m, sk_x, pk_x }))
    }

    fn kem_id(&self) -> u16 {
        match self {
            Self::X25519 { .. } => 0x0020,
            Self::XWing(_) => 0x647a,
        }
    }

    /// The public key this recipient answers to (pkR; for X-Wing `pk_M || pk_X`).
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            Self::X25519 { pk, .. } => pk.to_vec(),
            Self::XWing(k) => {
                let mut out = ml_kem::kem::Decapsulator::encapsulation_key(&k.sk_m)
                    .to_bytes()
                    .to_vec();
                out.extend_from_slice(k.pk_x.as_bytes());
                out
            }
        }
    }

    /// Decap(enc, skR): the KEM shared secret.
    pub fn decapsulate(&self, enc: &[u8]) -> Result<Zeroizing<[u8; 32]>, OpenError> {
        match self {
            Self::X25519 { sk, pk } => {
                let enc: [u8; X25519_LEN] = enc.try_into().map_err(|_| OpenError::EncLength)?;
                let dh = sk.diffie_hellman(&PublicKey::from(enc));
                if !dh.was_contributory() {
                    return Err(OpenError::NotContributory);
                }
                // ExtractAndExpand(dh, enc || pkR), RFC 9180 §4.1.
                let suite = kem_suite_id(self.kem_id());
                let eae_prk = labeled_extract(&suite, b"", b"eae_prk", dh.as_bytes());
                let mut kem_context = [0u8; 2 * X25519_LEN];
                kem_context[..X25519_LEN].copy_from_slice(&enc);
                kem_context[X25519_LEN..].copy_from_slice(pk);
                let mut shared = Zeroizing::new([0u8; NH]);
                labeled_expand(
                    &suite,
                    &eae_prk,
                    b"shared_secret",
                    &kem_context,
                    shared.as_mut(),
                )?;
                Ok(shared)
            }
            Self::XWing(k) => {
                if enc.len() != MLKEM768_CIPHERTEXT_LEN + X25519_LEN {
                    return Err(OpenError::EncLength);
                }
                let (ct_m, ct_x) = enc.split_at(MLKEM768_CIPHERTEXT_LEN);
                let ct_m = ml_kem::ml_kem_768::Ciphertext::try_from(ct_m)
                    .map_err(|_| OpenError::EncLength)?;
                let ct_x: [u8; X25519_LEN] = ct_x.try_into().map_err(|_| OpenError::EncLength)?;
                let ss_m = Zeroizing::new(<[u8; 32]>::from(k.sk_m.decapsulate(&ct_m)));
                let ss_x = k.sk_x.diffie_hellman(&PublicKey::from(ct_x));
                // Fail closed: an honest sender never produces a low-order share.
                if !ss_x.was_contributory() {
                    return Err(OpenError::NotContributory);
                }
                let mut combiner = sha3::Sha3_256::new();
                sha3::Digest::update(&mut combiner, ss_m.as_slice());
                sha3::Digest::update(&mut combiner, ss_x.as_bytes());
                sha3::Digest::update(&mut combiner, ct_x);
                sha3::Digest::update(&mut combiner, k.pk_x.as_bytes());
                sha3::Digest::update(&mut combiner, XWING_LABEL);
                Ok(Zeroizing::new(combiner.finalize().into()))
            }
        }
    }

    /// SetupBaseR(enc, skR, info) with `aead` (RFC 9180 §5.1.1).
    pub fn setup(&self, enc: &[u8], info: &[u8], aead: Aead) -> Result<ReceiverContext, OpenError> {
        let shared = self.decapsulate(enc)?;
        key_schedule_base(self.kem_id(), &shared, info, aead)
    }
}

/// The AEADs of RFC 9180 §7.3 this module can run (the service uses AES-256-GCM;
/// AES-128-GCM is here for the RFC's own test vectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    Aes128Gcm,
    Aes256Gcm,
}

impl Aead {
    fn id(self) -> u16 {
        match self {
            Self::Aes128Gcm => 0x0001,
            Self::Aes256Gcm => 0x0002,
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Self::Aes128Gcm => &aead::AES_128_GCM,
            Self::Aes256Gcm => &aead::AES_256_GCM,
        }
    }
}

/// The recipient's context after setup: seq 0 only, since each envelope is a
/// single-shot message, plus the exporter.
pub struct ReceiverContext {
    key: aead::LessSafeKey,
    base_nonce: [u8; NONCE_LEN],
    exporter_secret: Zeroizing<[u8; NH]>,
    suite_id: [u8; 10],
}

impl ReceiverContext {
    /// Open(aad, ct) at sequence number 0 (the nonce is base_nonce).
    pub fn open_first(
        self,
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(self.base_nonce),
                aead::Aad::from(aad),
                buffer.as_mut_slice(),
            )
            .map_err(|_| OpenError::Open)?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }

    /// Export(exporter_context, L) (RFC 9180 §5.3).
    pub fn export(&self, context: &[u8], out: &mut [u8]) -> Result<(), OpenError> {
        labeled_expand(&self.suite_id, &self.exporter_secret, b"sec", context, out)
    }
}

fn kem_suite_id(kem_id: u16) -> [u8; 5] {
    let [a, b] = kem_id.to_be_bytes();
    [b'K', b'E', b'M', a, b]
}

fn hpke_suite_id(kem_id: u16, aead: Aead) -> [u8; 10] {
    let mut out = *b"HPKE\0\0\0\0\0\0";
    out[4..6].copy_from_slice(&kem_id.to_be_bytes());
    out[6..8].copy_from_slice(&KDF_ID.to_be_bytes());
    out[8..10].copy_from_slice(&aead.id().to_be_bytes());
    out
}

/// KeySchedule<ROLE>(mode_base, shared_secret, info, psk = "", psk_id = "") (§5.1).
fn key_schedule_base(
    kem_id: u16,
    shared_secret: &[u8; NH],
    info: &[u8],
    aead: Aead,
) -> Result<ReceiverContext, OpenError> {
    const MODE_BASE: u8 = 0x00;
    let suite_id = hpke_suite_id(kem_id, aead);
    let psk_id_hash = labeled_extract(&suite_id, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(&suite_id, b"", b"info_hash", info);
    let mut context = [0u8; 1 + 2 * NH];
    context[0] = MODE_BASE;
    context[1..1 + NH].copy_from_slice(psk_id_hash.as_ref());
    context[1 + NH..].copy_from_slice(info_hash.as_ref());
    let secret = labeled_extract(&suite_id, shared_secret, b"secret", b"");

    let algorithm = aead.algorithm();
    let mut key = Zeroizing::new([0u8; 32]);
    let key = &mut key[..algorithm.key_len()];
    labeled_expand(&suite_id, &secret, b"key", &context, key)?;
    let mut base_nonce = [0u8; NONCE_LEN];
    labeled_expand(&suite_id, &secret, b"base_nonce", &context, &mut base_nonce)?;
    let mut exporter_secret = Zeroizing::new([0u8; NH]);
    labeled_expand(
        &suite_id,
        &secret,
        b"exp",
        &context,
        exporter_secret.as_mut(),
    )?;
    let key = aead::UnboundKey::new(algorithm, key).map_err(|_| OpenError::Open)?;
    Ok(ReceiverContext {
        key: aead::LessSafeKey::new(key),
        base_nonce,
        exporter_secret,
        suite_id,
    })
}

/// LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm).
/// HKDF-Extract is HMAC keyed with the salt (RFC 5869 §2.2); an empty salt keys
/// HMAC exactly as Nh zero bytes would.
fn labeled_extract(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; NH]> {
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, salt));
    for part in [VERSION_LABEL, suite_id, label, ikm] {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; NH]);
    out.copy_from_slice(mac.sign().as_ref());
    out
}

/// LabeledExpand(prk, label, info, L) = HKDF-Expand(prk, I2OSP(L, 2) || "HPKE-v1" ||
/// suite_id || label || info, L).
fn labeled_expand(
    suite_id: &[u8],
    prk: &[u8; NH],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), OpenError> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let length = u16::try_from(out.len()).map_err(|_| OpenError::Open)?;
    let length = length.to_be_bytes();
    let pieces = [&length[..], VERSION_LABEL, suite_id, label, info];
    hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk)
        .expand(&pieces, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| OpenError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpke::kem::{X25519HkdfSha256, XWing};
    use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, Base.
    #[test]
    fn rfc9180_a_1_1_base_mode_byte_for_byte() {
        let sk_rm: [u8; 32] =
            unhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
                .try_into()
                .unwrap();
        let pk_rm: [u8; 32] =
            unhex("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
                .try_into()
                .unwrap();
        let enc = unhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431");
        let info = unhex("4f6465206f6e2061204772656369616e2055726e");
        let recipient = Recipient::x25519(sk_rm, pk_rm);

        let shared = recipient.decapsulate(&enc).unwrap();
        assert_eq!(
            hex(shared.as_ref()),
            "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc"
        );
        let context = recipient.setup(&enc, &info, Aead::Aes128Gcm).unwrap();
        assert_eq!(hex(&context.base_nonce), "56d890e5accaaf011cff4b7d");
        // The key itself is inside ring; the sequence-0 vector proves it.
        for (exporter_context, value) in [
            (
                "",
                "3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee",
            ),
            (
                "00",
                "2e8f0b54673c7029649d4eb9d5e33bf1872cf76d623ff164ac185da9e88c21a5",
            ),
            (
                "54657374436f6e74657874",
                "e9e43065102c3836401bed8c3c3c75ae46be1639869391d62c61f1ec7af54931",
            ),
        ] {
            let mut out = [0u8; 32];
            context.export(&unhex(exporter_context), &mut out).unwrap();
            assert_eq!(hex(&out), value, "export({exporter_context})");
        }
        let opened = context
            .open_first(
                &unhex("436f756e742d30"),
                &unhex(
                    "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
                ),
            )
            .unwrap();
        assert_eq!(
            hex(&opened),
            "4265617574792069732074727574682c20747275746820626561757479"
        );
    }

    /// RFC 9180 A.1.1 again, through DeriveKeyPair (`hpke`): ikmR gives pkR, and
    /// the derived skR is what this module opens with.
    #[test]
    fn rfc9180_a_1_1_derive_key_pair_feeds_this_recipient() {
        let ikm_r = unhex("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037");
        let (sk, pk) = X25519HkdfSha256::derive_keypair(&ikm_r);
        assert_eq!(
            hex(&pk.to_bytes()),
            "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"
        );
        let recipient = Recipient::x25519(sk.to_bytes().into(), pk.to_bytes().into());
        assert_eq!(recipient.public_key(), pk.to_bytes().to_vec());
    }

    /// The three vectors of draft-connolly-cfrg-xwing-kem (its test-vectors.json):
    /// sk → pk, and Decap(ct) = ss.
    #[test]
    #[cfg(feature = "server")]
    fn xwing_draft_vectors() {
        let vectors: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("kat/xwing-draft.json")).unwrap();
        assert_eq!(vectors.len(), 3);
        for v in vectors {
            let field = |k: &str| unhex(v[k].as_str().unwrap());
            let recipient = Recipient::xwing(&field("sk").try_into().unwrap());
            assert_eq!(hex(&recipient.public_key()), hex(&field("pk")));
            let ss = recipient.decapsulate(&field("ct")).unwrap();
            assert_eq!(hex(ss.as_ref()), hex(&field("ss")));
        }
    }

    /// Differential check against `hpke` for the suites the service runs: the same
    /// plaintext and the same exported secrets, for many keys and messages.
    #[test]
    fn agrees_with_hpke_for_both_service_suites() {
        use hpke::aead::AesGcm256;
        use hpke::kdf::HkdfSha256;
        for i in 0u8..16 {
            let seed = [i; 32];
            let info = format!("facevault/v1 test {i}");
            let aad = [i; 9];
            let plaintext = vec![i; 17 + 100 * usize::from(i)];

            let (sk, pk) = X25519HkdfSha256::derive_keypair(&seed);
            let recipient = Recipient::x25519(sk.to_bytes().into(), pk.to_bytes().into());
            let (enc, mut sender) = hpke::setup_sender::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &pk,
                info.as_bytes(),
            )
            .unwrap();
            check(
                &recipient,
                &enc.to_bytes(),
                &info,
                &aad,
                &plaintext,
                &mut sender,
            );

            let (sk, pk) = XWing::derive_keypair(&seed);
            let recipient = Recipient::xwing(&sk.to_bytes().into());
            assert_eq!(recipient.public_key(), pk.to_bytes().to_vec());
            let (enc, mut sender) = hpke::setup_sender::<AesGcm256, HkdfSha256, XWing>(
                &OpModeS::Base,
                &pk,
                info.as_bytes(),
            )
            .unwrap();
            check(
                &recipient,
                &enc.to_bytes(),
                &info,
                &aad,
                &plaintext,
                &mut sender,
            );

            // And `hpke`'s receiver agrees on the exporter too.
            let enc_parsed =
                <XWing as hpke::Kem>::EncappedKey::from_bytes(&enc.to_bytes()).unwrap();
            let receiver = hpke::setup_receiver::<AesGcm256, HkdfSha256, XWing>(
                &OpModeR::Base,
                &sk,
                &enc_parsed,
                info.as_bytes(),
            )
            .unwrap();
            let (mut theirs, mut ours) = ([0u8; 32], [0u8; 32]);
            receiver.export(b"ctx", &mut theirs).unwrap();
            recipient
                .setup(&enc.to_bytes(), info.as_bytes(), Aead::Aes256Gcm)
                .unwrap()
                .export(b"ctx", &mut ours)
                .unwrap();
            assert_eq!(theirs, ours);
        }

        fn check<K: hpke::Kem>(
            recipient: &Recipient,
            enc: &[u8],
            info: &str,
            aad: &[u8],
            plaintext: &[u8],
            sender: &mut hpke::aead::AeadCtxS<AesGcm256, HkdfSha256, K>,
        ) {
            let ciphertext = sender.seal(plaintext, aad).unwrap();
            let mut exported = [0u8; 32];
            sender
                .export(b"facevault/v1 session key", &mut exported)
                .unwrap();
            let context = recipient
                .setup(enc, info.as_bytes(), Aead::Aes256Gcm)
                .unwrap();
            let mut ours = [0u8; 32];
            context
                .export(b"facevault/v1 session key", &mut ours)
                .unwrap();
            assert_eq!(exported, ours);
            assert_eq!(
                context.open_first(aad, &ciphertext).unwrap().as_slice(),
                plaintext
            );
        }
    }

    #[test]
    fn refuses_bad_lengths_low_order_shares_and_tampering() {
        let (sk, pk) = X25519HkdfSha256::derive_keypair(&[3; 32]);
        let recipient = Recipient::x25519(sk.to_bytes().into(), pk.to_bytes().into());
        assert_eq!(
            recipient.decapsulate(&[9; 31]).err(),
            Some(OpenError::EncLength)
        );
        // The identity point: every scalar maps it to zero.
        assert_eq!(
            recipient.decapsulate(&[0; 32]).err(),
            Some(OpenError::NotContributory)
        );
        let (enc, ct) = hpke::single_shot_seal::<
            hpke::aead::AesGcm256,
            hpke::kdf::HkdfSha256,
            X25519HkdfSha256,
        >(&OpModeS::Base, &pk, b"info", b"plaintext", b"aad")
        .unwrap();
        let open = |enc: &[u8], info: &[u8], aad: &[u8], ct: &[u8]| {
            recipient
                .setup(enc, info, Aead::Aes256Gcm)
                .and_then(|c| c.open_first(aad, ct))
        };
        assert_eq!(
            open(&enc.to_bytes(), b"info", b"aad", &ct)
                .unwrap()
                .as_slice(),
            b"plaintext"
        );
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(
            open(&enc.to_bytes(), b"info", b"aad", &bad).err(),
            Some(OpenError::Open)
        );
        assert_eq!(
            open(&enc.to_bytes(), b"other", b"aad", &ct).err(),
            Some(OpenError::Open)
        );
        assert_eq!(
            open(&enc.to_bytes(), b"info", b"other", &ct).err(),
            Some(OpenError::Open)
        );

        let (sk, _) = XWing::derive_keypair(&[4; 32]);
        let recipient = Recipient::xwing(&sk.to_bytes().into());
        assert_eq!(
            recipient.decapsulate(&[0; 1119]).err(),
            Some(OpenError::EncLength)
        );
        assert_eq!(
            recipient.decapsulate(&[0; 1120]).err(),
            Some(OpenError::NotContributory)
        );
    }
}
