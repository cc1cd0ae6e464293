//! Templates at rest. Each enrollment gets a random DEK; the template record is
//! AES-256-GCM under the DEK, and the DEK is wrapped by the tenant KEK of the active
//! master version. Both AADs bind tenant, subject_ref and template id, so a record
//! copied to another subject, tenant or field in Redis fails to open (fail closed)
//! instead of matching someone else's face.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use super::keyring::{SubjectRef, TenantKeys};
use super::{CryptoError, random_bytes};
use crate::domain::Tenant;

const FORMAT_VERSION: u32 = 1;

/// What Redis holds for one template: ciphertext and the wrapped DEK, nothing else.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SealedTemplate {
    #[prost(uint32, tag = "1")]
    pub format_version: u32,
    #[prost(uint32, tag = "2")]
    pub kek_version: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub dek_nonce: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub wrapped_dek: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub nonce: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    pub ciphertext: Vec<u8>,
}

/// The plaintext of a template record: the protected (salted, transformed) vector
/// and what is needed to compare and to honour consent. Zeroized on drop.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TemplateRecord {
    #[prost(string, tag = "1")]
    pub model: String,
    #[prost(bytes = "vec", tag = "2")]
    pub salt: Vec<u8>,
    #[prost(float, repeated, tag = "3")]
    pub protected: Vec<f32>,
    #[prost(int64, tag = "4")]
    pub enrolled_at_unix_ms: i64,
    #[prost(message, optional, tag = "5")]
    pub consent: Option<ConsentRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ConsentRecord {
    #[prost(string, tag = "1")]
    pub consent_id: String,
    #[prost(string, repeated, tag = "2")]
    pub purposes: Vec<String>,
    #[prost(int64, tag = "3")]
    pub granted_at_unix_ms: i64,
    #[prost(string, tag = "4")]
    pub method: String,
    #[prost(string, tag = "5")]
    pub notice_version: String,
    #[prost(bool, tag = "6")]
    pub off_device_storage: bool,
    #[prost(bool, tag = "7")]
    pub subject_under_14: bool,
}

impl Drop for TemplateRecord {
    fn drop(&mut self) {
        self.salt.zeroize();
        self.protected.zeroize();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("stored template failed its integrity check")]
    Integrity,
    #[error("stored template was wrapped with a master key version that is not loaded")]
    UnknownKekVersion,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn template_aad(tenant: &Tenant, subject: &SubjectRef, template_id: &str, what: &str) -> Vec<u8> {
    format!(
        "facevault/v1 {what}|{tenant}|{subject}|{template_id}|v{FORMAT_VERSION}",
        tenant = tenant.as_str(),
        subject = subject.as_str()
    )
    .into_bytes()
}

pub fn seal_template(
    keys: &TenantKeys,
    tenant: &Tenant,
    subject: &SubjectRef,
    template_id: &str,
    record: &TemplateRecord,
) -> Result<SealedTemplate, EnvelopeError> {
    use prost::Message as _;
    let dek_bytes = Zeroizing::new(random_bytes::<32>()?);
    let dek = LessSafeKey::new(
        UnboundKey::new(&aead::AES_256_GCM, dek_bytes.as_slice()).map_err(|_| CryptoError::Seal)?,
    );
    // Random nonces are safe here: each DEK encrypts exactly one message, and the
    // KEK's nonces are 96 random bits per enrollment.
    let nonce = random_bytes::<12>()?;
    let mut buf = Zeroizing::new(record.encode_to_vec());
    let tag = dek
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(template_aad(tenant, subject, template_id, "template")),
            buf.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Seal)?;
    let mut ciphertext = std::mem::take(&mut *buf);
    ciphertext.extend_from_slice(tag.as_ref());

    let (kek_version, kek) = keys.active_kek();
    let dek_nonce = random_bytes::<12>()?;
    let mut wrapped = dek_copy(dek_bytes.as_slice());
    kek.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(dek_nonce),
        Aad::from(template_aad(tenant, subject, template_id, "dek")),
        &mut *wrapped,
    )
    .map_err(|_| CryptoError::Seal)?;
    Ok(SealedTemplate {
        format_version: FORMAT_VERSION,
        kek_version,
        dek_nonce: dek_nonce.to_vec(),
        // Sealed now: ciphertext, nothing left to wipe.
        wrapped_dek: std::mem::take(&mut *wrapped),
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Opens a stored record. Decrypts in place in the buffer it is given (no copy of
/// the plaintext); the buffer is zeroized before return.
pub fn open_template(
    keys: &TenantKeys,
    tenant: &Tenant,
    subject: &SubjectRef,
    template_id: &str,
    sealed: SealedTemplate,
) -> Result<TemplateRecord, EnvelopeError> {
    use prost::Message as _;
    if sealed.format_version != FORMAT_VERSION {
        return Err(EnvelopeError::Integrity);
    }
    let kek = keys
        .kek(sealed.kek_version)
        .ok_or(EnvelopeError::UnknownKekVersion)?;
    let dek_nonce = nonce(&sealed.dek_nonce)?;
    let mut wrapped = Zeroizing::new(sealed.wrapped_dek);
    let dek_bytes = kek
        .open_in_place(
            dek_nonce,
            Aad::from(template_aad(tenant, subject, template_id, "dek")),
            wrapped.as_mut_slice(),
        )
        .map_err(|_| EnvelopeError::Integrity)?;
    let dek = LessSafeKey::new(
        UnboundKey::new(&aead::AES_256_GCM, dek_bytes).map_err(|_| EnvelopeError::Integrity)?,
    );
    let mut buf = Zeroizing::new(sealed.ciphertext);
    let plaintext = dek
        .open_in_place(
            nonce(&sealed.nonce)?,
            Aad::from(template_aad(tenant, subject, template_id, "template")),
            buf.as_mut_slice(),
        )
        .map_err(|_| EnvelopeError::Integrity)?;
    TemplateRecord::decode(&*plaintext).map_err(|_| EnvelopeError::Integrity)
}

/// Re-wraps a record's DEK under the active KEK version; the template ciphertext
/// is untouched (key rotation without re-encrypting templates).
pub fn rewrap(
    keys: &TenantKeys,
    tenant: &Tenant,
    subject: &SubjectRef,
    template_id: &str,
    mut sealed: SealedTemplate,
) -> Result<SealedTemplate, EnvelopeError> {
    let kek = keys
        .kek(sealed.kek_version)
        .ok_or(EnvelopeError::UnknownKekVersion)?;
    let aad = template_aad(tenant, subject, template_id, "dek");
    let mut wrapped = Zeroizing::new(std::mem::take(&mut sealed.wrapped_dek));
    let dek = kek
        .open_in_place(
            nonce(&sealed.dek_nonce)?,
            Aad::from(aad.clone()),
            wrapped.as_mut_slice(),
        )
        .map_err(|_| EnvelopeError::Integrity)?;
    // The plaintext DEK copy is wiped on every path, an error included.
    let mut rewrapped = dek_copy(dek);
    let (version, active) = keys.active_kek();
    let dek_nonce = random_bytes::<12>()?;
    active
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(dek_nonce),
            Aad::from(aad),
            &mut *rewrapped,
        )
        .map_err(|_| CryptoError::Seal)?;
    sealed.kek_version = version;
    sealed.dek_nonce = dek_nonce.to_vec();
    // Sealed now: ciphertext, nothing left to wipe.
    sealed.wrapped_dek = std::mem::take(&mut *rewrapped);
    Ok(sealed)
}

/// A plaintext DEK copy to be sealed in place: wiped when dropped, and with room
/// for the tag, so appending it never moves (and leaves behind, unwiped) the DEK.
fn dek_copy(dek: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut copy = Zeroizing::new(Vec::with_capacity(dek.len() + aead::AES_256_GCM.tag_len()));
    copy.extend_from_slice(dek);
    copy
}

/// Seals a caller's note on a deletion ticket under the tenant's active KEK:
/// `kek_version (4, BE) | nonce (12) | ciphertext | tag`. The AAD binds tenant and
/// ticket id. Random nonces share the KEK's budget with DEK wrapping (one per
/// enrollment or cancellation), far below the 2^32 limit.
pub fn seal_ticket_note(
    keys: &TenantKeys,
    tenant: &Tenant,
    ticket_id: &str,
    note: &str,
) -> Result<Vec<u8>, EnvelopeError> {
    seal_under_kek(keys, &note_aad(tenant, ticket_id), note.as_bytes())
}

/// Opens a note sealed by [`seal_ticket_note`] for the same tenant and ticket.
pub fn open_ticket_note(
    keys: &TenantKeys,
    tenant: &Tenant,
    ticket_id: &str,
    sealed: &[u8],
) -> Result<Zeroizing<String>, EnvelopeError> {
    let plaintext = open_under_kek(keys, &note_aad(tenant, ticket_id), sealed)?;
    let text = std::str::from_utf8(&plaintext).map_err(|_| EnvelopeError::Integrity)?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// `kek_version (4, BE) | nonce (12) | ciphertext | tag` of `plaintext` under
/// the tenant's active KEK.
fn seal_under_kek(
    keys: &TenantKeys,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let (version, kek) = keys.active_kek();
    let nonce = random_bytes::<12>()?;
    let mut sealed = Vec::with_capacity(4 + 12 + plaintext.len() + aead::AES_256_GCM.tag_len());
    sealed.extend_from_slice(&version.to_be_bytes());
    sealed.extend_from_slice(&nonce);
    let mut body = Zeroizing::new(plaintext.to_vec());
    kek.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut *body,
    )
    .map_err(|_| CryptoError::Seal)?;
    sealed.extend_from_slice(&body);
    Ok(sealed)
}

fn open_under_kek(
    keys: &TenantKeys,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let (version, rest) = sealed
        .split_first_chunk::<4>()
        .ok_or(EnvelopeError::Integrity)?;
    let (nonce_bytes, ciphertext) = rest
        .split_first_chunk::<12>()
        .ok_or(EnvelopeError::Integrity)?;
    let kek = keys
        .kek(u32::from_be_bytes(*version))
        .ok_or(EnvelopeError::UnknownKekVersion)?;
    let mut body = Zeroizing::new(ciphertext.to_vec());
    let len = kek
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce_bytes),
            Aad::from(aad),
            body.as_mut_slice(),
        )
        .map_err(|_| EnvelopeError::Integrity)?
        .len();
    body.truncate(len);
    Ok(body)
}

/// A tenant's decommission reason, opened: the free text its admin gave, and
/// the one-time key of the HMAC-SHA256 commitment its receipt signs. Zeroized
/// on drop; its `Debug` shows neither.
#[derive(Clone, PartialEq)]
pub struct DecommissionReason {
    pub text: Zeroizing<String>,
    pub commitment_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DecommissionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecommissionReason(..)")
    }
}

impl DecommissionReason {
    /// A reason with a fresh commitment key.
    pub fn new(text: &str) -> Result<Self, EnvelopeError> {
        Ok(Self {
            text: Zeroizing::new(text.to_owned()),
            commitment_key: Zeroizing::new(random_bytes::<32>()?),
        })
    }

    /// HMAC-SHA256 of the text under the one-time key: what the receipt signs
    /// instead of the text. The key is random and never leaves the sealed
    /// record except to the tenant's admin, so a short reason cannot be found
    /// by trying candidates against the receipt, while whoever holds the text
    /// and the key can check the receipt offline.
    pub fn commitment(&self) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.commitment_key.as_slice());
        ring::hmac::sign(&key, self.text.as_bytes())
            .as_ref()
            .to_vec()
    }
}

/// Seals a decommission reason (commitment key, then text) under the tenant's
/// KEK, bound to the tenant and the decommission's request time, so a sealed
/// reason copied to another tenant or another decommission fails to open.
pub fn seal_decommission_reason(
    keys: &TenantKeys,
    tenant: &Tenant,
    requested_at_ms: i64,
    reason: &DecommissionReason,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut plaintext = Zeroizing::new(Vec::with_capacity(32 + reason.text.len()));
    plaintext.extend_from_slice(reason.commitment_key.as_slice());
    plaintext.extend_from_slice(reason.text.as_bytes());
    seal_under_kek(keys, &decommission_aad(tenant, requested_at_ms), &plaintext)
}

/// Opens a reason sealed by [`seal_decommission_reason`].
pub fn open_decommission_reason(
    keys: &TenantKeys,
    tenant: &Tenant,
    requested_at_ms: i64,
    sealed: &[u8],
) -> Result<DecommissionReason, EnvelopeError> {
    let plaintext = open_under_kek(keys, &decommission_aad(tenant, requested_at_ms), sealed)?;
    let (key, text) = plaintext
        .split_first_chunk::<32>()
        .ok_or(EnvelopeError::Integrity)?;
    let text = std::str::from_utf8(text).map_err(|_| EnvelopeError::Integrity)?;
    Ok(DecommissionReason {
        text: Zeroizing::new(text.to_owned()),
        commitment_key: Zeroizing::new(*key),
    })
}

fn decommission_aad(tenant: &Tenant, requested_at_ms: i64) -> Vec<u8> {
    format!(
        "facevault/v1 decommission-reason|{tenant}|{requested_at_ms}|v{FORMAT_VERSION}",
        tenant = tenant.as_str()
    )
    .into_bytes()
}

fn note_aad(tenant: &Tenant, ticket_id: &str) -> Vec<u8> {
    format!(
        "facevault/v1 ticket-note|{tenant}|{ticket_id}|v{FORMAT_VERSION}",
        tenant = tenant.as_str()
    )
    .into_bytes()
}

fn nonce(bytes: &[u8]) -> Result<Nonce, EnvelopeError> {
    Nonce::try_assume_unique_for_key(bytes).map_err(|_| EnvelopeError::Integrity)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::crypto::keyring::Keyring;
    use crate::domain::SubjectId;

    fn setup() -> (Keyring, Tenant) {
        let masters = BTreeMap::from([
            (1, Zeroizing::new([1u8; 32])),
            (2, Zeroizing::new([2u8; 32])),
        ]);
        (
            Keyring::from_versioned_masters(1, masters, Zeroizing::new([3u8; 32])).unwrap(),
            Tenant::try_from("demo").unwrap(),
        )
    }

    fn record() -> TemplateRecord {
        TemplateRecord {
            model: "m".into(),
            salt: vec![5; 32],
            protected: vec![0.5, -0.5, 0.5, -0.5],
            enrolled_at_unix_ms: 1,
            consent: None,
        }
    }

    #[test]
    fn decommission_reasons_are_sealed_bound_and_committed() {
        let (ring, tenant) = setup();
        let keys = ring.tenant(&tenant).unwrap();
        let reason = DecommissionReason::new("customer Zhang Wei left").unwrap();
        let sealed = seal_decommission_reason(&keys, &tenant, 1_000, &reason).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"Zhang"));
        let opened = open_decommission_reason(&keys, &tenant, 1_000, &sealed).unwrap();
        assert_eq!(opened.text.as_str(), "customer Zhang Wei left");
        assert_eq!(opened.commitment(), reason.commitment());
        assert_eq!(opened.commitment().len(), 32);
        // Another key, same text: another commitment (nothing to brute-force).
        let again = DecommissionReason::new("customer Zhang Wei left").unwrap();
        assert_ne!(again.commitment(), reason.commitment());
        for (t, at) in [
            (tenant.clone(), 1_001),
            (Tenant::try_from("other").unwrap(), 1_000),
        ] {
            let keys = ring.tenant(&t).unwrap();
            assert!(open_decommission_reason(&keys, &t, at, &sealed).is_err());
        }
        // A ticket note cannot pass for a reason, nor a reason for a note.
        let note = seal_ticket_note(&keys, &tenant, "1000", "x".repeat(40).as_str()).unwrap();
        assert!(open_decommission_reason(&keys, &tenant, 1_000, &note).is_err());
        assert!(open_ticket_note(&keys, &tenant, "1000", &sealed).is_err());
    }

    #[test]
    fn ticket_notes_are_sealed_and_bound_to_their_ticket() {
        let (ring, tenant) = setup();
        let keys = ring.tenant(&tenant).unwrap();
        let note = "closed by the user in the app";
        let sealed = seal_ticket_note(&keys, &tenant, "ticket-1", note).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"closed"));
        assert_eq!(
            open_ticket_note(&keys, &tenant, "ticket-1", &sealed)
                .unwrap()
                .as_str(),
            note
        );
        assert_eq!(
            open_ticket_note(&keys, &tenant, "ticket-2", &sealed).map(|_| ()),
            Err(EnvelopeError::Integrity)
        );
        let other = Tenant::try_from("other").unwrap();
        let other_keys = ring.tenant(&other).unwrap();
        assert_eq!(
            open_ticket_note(&other_keys, &other, "ticket-1", &sealed).map(|_| ()),
            Err(EnvelopeError::Integrity)
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            open_ticket_note(&keys, &tenant, "ticket-1", &tampered).map(|_| ()),
            Err(EnvelopeError::Integrity)
        );
        assert_eq!(
            open_ticket_note(&keys, &tenant, "ticket-1", &sealed[..10]).map(|_| ()),
            Err(EnvelopeError::Integrity)
        );
    }

    #[test]
    fn round_trip_and_bindings() {
        let (ring, tenant) = setup();
        let keys = ring.tenant(&tenant).unwrap();
        let alice = keys.subject_ref(&SubjectId::try_from("alice".to_owned()).unwrap());
        let bob = keys.subject_ref(&SubjectId::try_from("bob".to_owned()).unwrap());
        let sealed = seal_template(&keys, &tenant, &alice, "t1", &record()).unwrap();
        let opened = open_template(&keys, &tenant, &alice, "t1", sealed.clone()).unwrap();
        assert_eq!(opened.protected, record().protected);

        assert_eq!(
            open_template(&keys, &tenant, &bob, "t1", sealed.clone()),
            Err(EnvelopeError::Integrity)
        );
        assert_eq!(
            open_template(&keys, &tenant, &alice, "t2", sealed.clone()),
            Err(EnvelopeError::Integrity)
        );
        let other = Tenant::try_from("other").unwrap();
        let other_keys = ring.tenant(&other).unwrap();
        assert_eq!(
            open_template(&other_keys, &other, &alice, "t1", sealed.clone()),
            Err(EnvelopeError::Integrity)
        );
        let mut tampered = sealed;
        tampered.ciphertext[3] ^= 0x80;
        assert_eq!(
            open_template(&keys, &tenant, &alice, "t1", tampered),
            Err(EnvelopeError::Integrity)
        );
    }

    /// The plaintext DEK copy is a `Zeroizing` buffer (wiped on every path),
    /// and sealing it in place appends the tag without reallocating, so no
    /// unwiped copy of the DEK is left in a freed allocation.
    #[test]
    fn sealing_a_dek_copy_never_moves_it() {
        let (ring, tenant) = setup();
        let keys = ring.tenant(&tenant).unwrap();
        let mut copy = dek_copy(&[9u8; 32]);
        let before = copy.as_ptr();
        keys.active_kek()
            .1
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut *copy,
            )
            .unwrap();
        assert_eq!(copy.len(), 48);
        assert_eq!(copy.as_ptr(), before, "the tag was appended in place");
    }

    #[test]
    fn rotation_rewraps_the_dek_only() {
        let (ring, tenant) = setup();
        let keys = ring.tenant(&tenant).unwrap();
        let alice = keys.subject_ref(&SubjectId::try_from("alice".to_owned()).unwrap());
        let sealed = seal_template(&keys, &tenant, &alice, "t1", &record()).unwrap();
        assert_eq!(sealed.kek_version, 1);

        let masters = BTreeMap::from([
            (1, Zeroizing::new([1u8; 32])),
            (2, Zeroizing::new([2u8; 32])),
        ]);
        let rotated =
            Keyring::from_versioned_masters(2, masters, Zeroizing::new([3u8; 32])).unwrap();
        let new_keys = rotated.tenant(&tenant).unwrap();
        let rewrapped = rewrap(&new_keys, &tenant, &alice, "t1", sealed.clone()).unwrap();
        assert_eq!(rewrapped.kek_version, 2);
        assert_eq!(rewrapped.ciphertext, sealed.ciphertext);
        let opened = open_template(&new_keys, &tenant, &alice, "t1", rewrapped).unwrap();
        assert_eq!(opened.protected, record().protected);
    }
}
