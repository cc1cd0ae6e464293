//! Key hierarchy: a versioned master keyring (a mounted secret) from which each
//! tenant gets its own keys by HKDF-SHA256, one per use, so that no key ever
//! serves two purposes and one tenant's keys say nothing about another's.
//!
//! - `kek` (per master version): wraps per-enrollment DEKs. Rotating the master
//!   adds a version; old DEKs stay readable and are re-wrapped, templates untouched.
//! - `index`: HMAC key for subject pseudonyms (`subject_ref`). Derived from the
//!   *first* master version so that pseudonyms survive rotation; never remove it.
//! - `audit`: HMAC key for the audit hash chain, anchored the same way.
//! - the transform key comes from a *separate* secret (split knowledge): Redis plus
//!   the keyring yields only transformed vectors.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use ring::{aead, hkdf, hmac};
use zeroize::Zeroizing;

use super::CryptoError;
use super::transform::TransformKey;
use crate::domain::{SubjectId, Tenant};

pub type MasterSecret = Zeroizing<[u8; 32]>;

pub struct Keyring {
    active_version: u32,
    masters: BTreeMap<u32, MasterSecret>,
    transform_secret: MasterSecret,
    // Derivation is cheap, but caching keeps the hot path free of it; the lock is
    // never held across an await (std lock, synchronous use only).
    tenants: RwLock<HashMap<Tenant, Arc<TenantKeys>>>,
}

pub struct TenantKeys {
    active_kek_version: u32,
    keks: BTreeMap<u32, aead::LessSafeKey>,
    index: hmac::Key,
    audit: hmac::Key,
    transform: TransformKey,
}

const DERIVATION_SALT: &[u8] = b"facevault/v1 tenant-keys";

impl Keyring {
    pub fn new(
        active_version: u32,
        masters: BTreeMap<u32, MasterSecret>,
        transform_secret: MasterSecret,
    ) -> Result<Self, KeyringError> {
        if masters.is_empty() {
            return Err(KeyringError::Empty);
        }
        if !masters.contains_key(&active_version) {
            return Err(KeyringError::ActiveVersionMissing(active_version));
        }
        if masters
            .values()
            .any(|m| m.as_slice() == transform_secret.as_slice())
        {
            return Err(KeyringError::TransformNotSeparate);
        }
        Ok(Self {
            active_version,
            masters,
            transform_secret,
            tenants: RwLock::new(HashMap::new()),
        })
    }

    pub fn active_version(&self) -> u32 {
        self.active_version
    }

    pub fn tenant(&self, tenant: &Tenant) -> Result<Arc<TenantKeys>, CryptoError> {
        if let Some(keys) = self
            .tenants
            .read()
            .ok()
            .and_then(|m| m.get(tenant).cloned())
        {
            return Ok(keys);
        }
        let keys = Arc::new(self.derive(tenant)?);
        if let Ok(mut map) = self.tenants.write() {
            map.insert(tenant.clone(), keys.clone());
        }
        Ok(keys)
    }

    fn derive(&self, tenant: &Tenant) -> Result<TenantKeys, CryptoError> {
        let t = tenant.as_str().as_bytes();
        let mut keks = BTreeMap::new();
        for (version, master) in &self.masters {
            let prk =
                hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVATION_SALT).extract(master.as_slice());
            let info = [b"kek|".as_slice(), t];
            let okm = prk
                .expand(&info, &aead::AES_256_GCM)
                .map_err(|_| CryptoError::KeyDerivation)?;
            keks.insert(
                *version,
                aead::LessSafeKey::new(aead::UnboundKey::from(okm)),
            );
        }
        let (_, anchor) = self
            .masters
            .first_key_value()
            .ok_or(CryptoError::KeyDerivation)?;
        let anchor = hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVATION_SALT).extract(anchor.as_slice());
        let index_info = [b"index|".as_slice(), t];
        let index = anchor
            .expand(&index_info, hmac::HMAC_SHA256)
            .map_err(|_| CryptoError::KeyDerivation)?;
        let audit_info = [b"audit|".as_slice(), t];
        let audit = anchor
            .expand(&audit_info, hmac::HMAC_SHA256)
            .map_err(|_| CryptoError::KeyDerivation)?;
        let transform_prk = hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVATION_SALT)
            .extract(self.transform_secret.as_slice());
        let mut transform = Zeroizing::new([0u8; 32]);
        transform_prk
            .expand(&[b"transform|".as_slice(), t], Len32)
            .and_then(|okm| okm.fill(transform.as_mut_slice()))
            .map_err(|_| CryptoError::KeyDerivation)?;
        Ok(TenantKeys {
            active_kek_version: self.active_version,
            keks,
            index: hmac::Key::from(index),
            audit: hmac::Key::from(audit),
            transform: TransformKey::from_bytes(*transform),
        })
    }
}

impl TenantKeys {
    /// `subject_ref = base64url(HMAC-SHA256(index_key, subject_id))`: stable per
    /// tenant, unlinkable across tenants, not invertible without the keyring.
    pub fn subject_ref(&self, subject: &SubjectId) -> SubjectRef {
        let tag = hmac::sign(&self.index, subject.as_str().as_bytes());
        SubjectRef(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The ticket id of the subject's account cancellation: derived, so that a
    /// repeated cancellation finds the same ticket without any index naming the
    /// subject.
    pub fn cancel_ticket_id(&self, subject: &SubjectRef) -> String {
        let tag = hmac::sign(
            &self.index,
            format!("cancel-ticket|{}", subject.as_str()).as_bytes(),
        );
        format!(
            "c{}",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())[..22]
        )
    }

    /// The ticket of one template's retention expiry, derived like
    /// `cancel_ticket_id`, so a sweep that runs twice finds the same ticket.
    pub fn retention_ticket_id(&self, subject: &SubjectRef, template_id: &str) -> String {
        let tag = hmac::sign(
            &self.index,
            format!("retention-ticket|{}|{template_id}", subject.as_str()).as_bytes(),
        );
        format!(
            "r{}",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())[..22]
        )
    }

    pub fn active_kek(&self) -> (u32, &aead::LessSafeKey) {
        (
            self.active_kek_version,
            &self.keks[&self.active_kek_version],
        )
    }

    pub fn kek(&self, version: u32) -> Option<&aead::LessSafeKey> {
        self.keks.get(&version)
    }

    pub fn audit_key(&self) -> &hmac::Key {
        &self.audit
    }

    pub fn transform_key(&self) -> &TransformKey {
        &self.transform
    }
}

/// Pseudonym of a subject within a tenant; safe to store, log and audit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectRef(String);

impl SubjectRef {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts a pseudonym given back by a caller (e.g. an audit filter); only its
    /// shape is checked.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(value.to_owned()))
    }
}

impl std::fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("the keyring holds no master key")]
    Empty,
    #[error("the keyring's active version {0} is not in the keyring")]
    ActiveVersionMissing(u32),
    #[error("the transform secret must differ from every master key (split knowledge)")]
    TransformNotSeparate,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(versions: &[(u32, u8)], active: u32) -> Keyring {
        let masters = versions
            .iter()
            .map(|(v, b)| (*v, Zeroizing::new([*b; 32])))
            .collect();
        Keyring::new(active, masters, Zeroizing::new([0xee; 32])).unwrap()
    }

    fn subject(s: &str) -> SubjectId {
        SubjectId::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn pseudonyms_are_per_tenant_and_stable() {
        let ring = keyring(&[(1, 1)], 1);
        let a = ring.tenant(&Tenant::try_from("a").unwrap()).unwrap();
        let b = ring.tenant(&Tenant::try_from("b").unwrap()).unwrap();
        let alice = subject("alice");
        assert_eq!(a.subject_ref(&alice), a.subject_ref(&alice));
        assert_ne!(a.subject_ref(&alice), b.subject_ref(&alice));
        assert_eq!(a.subject_ref(&alice).as_str().len(), 43);
        assert!(!a.subject_ref(&alice).as_str().contains("alice"));
    }

    #[test]
    fn pseudonyms_survive_master_rotation() {
        let before = keyring(&[(1, 1)], 1);
        let after = keyring(&[(1, 1), (2, 2)], 2);
        let t = Tenant::try_from("a").unwrap();
        let alice = subject("alice");
        assert_eq!(
            before.tenant(&t).unwrap().subject_ref(&alice),
            after.tenant(&t).unwrap().subject_ref(&alice)
        );
        assert_eq!(after.tenant(&t).unwrap().active_kek().0, 2);
        assert!(after.tenant(&t).unwrap().kek(1).is_some());
    }

    #[test]
    fn refuses_inconsistent_keyrings() {
        assert!(matches!(
            Keyring::new(1, BTreeMap::new(), Zeroizing::new([0; 32])),
            Err(KeyringError::Empty)
        ));
        let masters: BTreeMap<u32, MasterSecret> = [(1, Zeroizing::new([1; 32]))].into();
        assert!(matches!(
            Keyring::new(2, masters.clone(), Zeroizing::new([0; 32])),
            Err(KeyringError::ActiveVersionMissing(2))
        ));
        assert!(matches!(
            Keyring::new(1, masters, Zeroizing::new([1; 32])),
            Err(KeyringError::TransformNotSeparate)
        ));
    }
}
