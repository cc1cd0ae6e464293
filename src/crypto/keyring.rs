//! Key hierarchy: a keyring (a mounted secret) with a long-lived **identity
//! root** and short-lived **KEK epochs**, from which each tenant gets its own keys
//! by HKDF-SHA256, one per use, so that no key ever serves two purposes and one
//! tenant's keys say nothing about another's.
//!
//! - `index` and `audit` (from the identity root): HMAC keys for subject
//!   pseudonyms and the audit hash chain. They survive every rotation.
//! - `kek` (one per epoch): wraps per-enrollment DEKs. Rotation adds an epoch and
//!   makes it active; the worker re-wraps every DEK to it (templates untouched);
//!   retiring the old epoch then removes its secret, and with it every copy of a
//!   DEK wrapped under it, in Redis or in any backup of Redis (crypto-shredding).
//! - the transform key comes from a *separate* secret (split knowledge): Redis plus
//!   the keyring yields only transformed vectors.
//!
//! Keyrings from before key epochs had versioned masters and derived `index` and
//! `audit` from the first one. Loading one takes that first master as the identity
//! root, so pseudonyms and audit chains are unchanged. Its first epoch's KEK is
//! then derivable from the identity root: retiring that epoch stops its use but
//! cannot shred it (`identity_bound_epoch`), so no receipt ever claims it did.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use ring::{aead, hkdf, hmac};
use zeroize::Zeroizing;

use super::CryptoError;
use super::transform::TransformKey;
use crate::domain::{SubjectId, Tenant};

pub type MasterSecret = Zeroizing<[u8; 32]>;

/// One KEK epoch as held in the keyring file.
pub struct KekEpoch {
    pub secret: MasterSecret,
    /// When the epoch was created (and made active); unknown for epochs from
    /// keyrings older than key epochs.
    pub created_at_unix_ms: Option<i64>,
}

pub struct Keyring {
    identity_root: MasterSecret,
    active_epoch: u32,
    epochs: BTreeMap<u32, KekEpoch>,
    identity_bound_epoch: Option<u32>,
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
    /// `identity_bound_epoch` names the one epoch allowed to share the identity
    /// root's secret (a keyring from before key epochs); any other sharing would
    /// make retirement shred nothing, and is refused.
    pub fn new(
        identity_root: MasterSecret,
        active_epoch: u32,
        epochs: BTreeMap<u32, KekEpoch>,
        identity_bound_epoch: Option<u32>,
        transform_secret: MasterSecret,
    ) -> Result<Self, KeyringError> {
        if epochs.is_empty() {
            return Err(KeyringError::Empty);
        }
        if !epochs.contains_key(&active_epoch) {
            return Err(KeyringError::ActiveEpochMissing(active_epoch));
        }
        if identity_root.as_slice() == transform_secret.as_slice()
            || epochs
                .values()
                .any(|e| e.secret.as_slice() == transform_secret.as_slice())
        {
            return Err(KeyringError::TransformNotSeparate);
        }
        for (number, epoch) in &epochs {
            if epoch.secret.as_slice() == identity_root.as_slice()
                && identity_bound_epoch != Some(*number)
            {
                return Err(KeyringError::EpochSharesIdentityRoot(*number));
            }
        }
        let distinct: std::collections::HashSet<&[u8]> =
            epochs.values().map(|e| e.secret.as_slice()).collect();
        if distinct.len() != epochs.len() {
            return Err(KeyringError::EpochsNotDistinct);
        }
        Ok(Self {
            identity_root,
            active_epoch,
            epochs,
            identity_bound_epoch,
            transform_secret,
            tenants: RwLock::new(HashMap::new()),
        })
    }

    /// A keyring from before key epochs: versioned masters, the first of which
    /// anchored the pseudonym and audit keys. It becomes the identity root, and
    /// each version an epoch, so nothing stored changes meaning.
    pub fn from_versioned_masters(
        active_version: u32,
        masters: BTreeMap<u32, MasterSecret>,
        transform_secret: MasterSecret,
    ) -> Result<Self, KeyringError> {
        let (first, root) = masters
            .first_key_value()
            .map(|(v, m)| (*v, Zeroizing::new(**m)))
            .ok_or(KeyringError::Empty)?;
        let epochs = masters
            .into_iter()
            .map(|(v, secret)| {
                (
                    v,
                    KekEpoch {
                        secret,
                        created_at_unix_ms: None,
                    },
                )
            })
            .collect();
        Self::new(root, active_version, epochs, Some(first), transform_secret)
    }

    pub fn active_epoch(&self) -> u32 {
        self.active_epoch
    }

    /// The epochs present, oldest first, with when each was created.
    pub fn epochs(&self) -> impl Iterator<Item = (u32, Option<i64>)> + '_ {
        self.epochs.iter().map(|(n, e)| (*n, e.created_at_unix_ms))
    }

    pub fn oldest_epoch(&self) -> u32 {
        self.epochs
            .keys()
            .next()
            .copied()
            .unwrap_or(self.active_epoch)
    }

    /// The epoch whose KEK the identity root can derive, if any (see module docs).
    pub fn identity_bound_epoch(&self) -> Option<u32> {
        self.identity_bound_epoch
    }

    /// True when both keyrings derive the same pseudonyms, audit keys and
    /// transforms: a reload must never change those, or every stored template
    /// and audit chain would stop opening. (Both sides are our own files, so the
    /// comparison's timing tells nobody anything.)
    pub fn same_identity(&self, other: &Keyring) -> bool {
        self.identity_root == other.identity_root && self.transform_secret == other.transform_secret
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
        for (number, epoch) in &self.epochs {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVATION_SALT)
                .extract(epoch.secret.as_slice());
            let info = [b"kek|".as_slice(), t];
            let okm = prk
                .expand(&info, &aead::AES_256_GCM)
                .map_err(|_| CryptoError::KeyDerivation)?;
            keks.insert(*number, aead::LessSafeKey::new(aead::UnboundKey::from(okm)));
        }
        let identity = hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVATION_SALT)
            .extract(self.identity_root.as_slice());
        let index_info = [b"index|".as_slice(), t];
        let index = identity
            .expand(&index_info, hmac::HMAC_SHA256)
            .map_err(|_| CryptoError::KeyDerivation)?;
        let audit_info = [b"audit|".as_slice(), t];
        let audit = identity
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
            active_kek_version: self.active_epoch,
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

    /// The erasure ticket of one subject of a decommissioned tenant, derived
    /// like `cancel_ticket_id`, so replicas sweeping the same page share it.
    pub fn decommission_ticket_id(&self, subject: &SubjectRef) -> String {
        let tag = hmac::sign(
            &self.index,
            format!("decommission-ticket|{}", subject.as_str()).as_bytes(),
        );
        format!(
            "d{}",
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
    #[error("the keyring holds no KEK epoch")]
    Empty,
    #[error("the keyring's active epoch {0} is not in the keyring")]
    ActiveEpochMissing(u32),
    #[error(
        "the transform secret must differ from the identity root and every epoch (split knowledge)"
    )]
    TransformNotSeparate,
    #[error("epoch {0} has the identity root's secret, so retiring it could never shred it")]
    EpochSharesIdentityRoot(u32),
    #[error("two KEK epochs have the same secret")]
    EpochsNotDistinct,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(versions: &[(u32, u8)], active: u32) -> Keyring {
        let masters = versions
            .iter()
            .map(|(v, b)| (*v, Zeroizing::new([*b; 32])))
            .collect();
        Keyring::from_versioned_masters(active, masters, Zeroizing::new([0xee; 32])).unwrap()
    }

    fn epochs(numbers: &[(u32, u8)]) -> BTreeMap<u32, KekEpoch> {
        numbers
            .iter()
            .map(|(n, b)| {
                (
                    *n,
                    KekEpoch {
                        secret: Zeroizing::new([*b; 32]),
                        created_at_unix_ms: Some(0),
                    },
                )
            })
            .collect()
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

    /// The identity root of a keyring from before key epochs is its first master,
    /// so pseudonyms stay what they were, through rotation and through the
    /// retirement of that first epoch.
    #[test]
    fn pseudonyms_survive_rotation_and_retirement() {
        let legacy = keyring(&[(1, 1)], 1);
        let rotated = keyring(&[(1, 1), (2, 2)], 2);
        let retired = Keyring::new(
            Zeroizing::new([1; 32]),
            2,
            epochs(&[(2, 2)]),
            Some(1),
            Zeroizing::new([0xee; 32]),
        )
        .unwrap();
        let t = Tenant::try_from("a").unwrap();
        let alice = subject("alice");
        let reference = legacy.tenant(&t).unwrap().subject_ref(&alice);
        for ring in [&rotated, &retired] {
            assert_eq!(ring.tenant(&t).unwrap().subject_ref(&alice), reference);
            assert!(legacy.same_identity(ring));
        }
        assert_eq!(rotated.tenant(&t).unwrap().active_kek().0, 2);
        assert!(rotated.tenant(&t).unwrap().kek(1).is_some());
        assert!(retired.tenant(&t).unwrap().kek(1).is_none());
        assert_eq!(retired.oldest_epoch(), 2);
    }

    #[test]
    fn refuses_inconsistent_keyrings() {
        let root = || Zeroizing::new([9u8; 32]);
        let transform = || Zeroizing::new([0u8; 32]);
        assert!(matches!(
            Keyring::new(root(), 1, BTreeMap::new(), None, transform()),
            Err(KeyringError::Empty)
        ));
        assert!(matches!(
            Keyring::new(root(), 2, epochs(&[(1, 1)]), None, transform()),
            Err(KeyringError::ActiveEpochMissing(2))
        ));
        assert!(matches!(
            Keyring::new(root(), 1, epochs(&[(1, 0)]), None, transform()),
            Err(KeyringError::TransformNotSeparate)
        ));
        assert!(matches!(
            Keyring::new(
                Zeroizing::new([0u8; 32]),
                1,
                epochs(&[(1, 1)]),
                None,
                transform()
            ),
            Err(KeyringError::TransformNotSeparate)
        ));
        assert!(matches!(
            Keyring::new(root(), 1, epochs(&[(1, 9)]), None, transform()),
            Err(KeyringError::EpochSharesIdentityRoot(1))
        ));
        assert!(matches!(
            Keyring::new(root(), 2, epochs(&[(1, 3), (2, 3)]), None, transform()),
            Err(KeyringError::EpochsNotDistinct)
        ));
        assert!(!keyring(&[(1, 1)], 1).same_identity(&keyring(&[(1, 2)], 1)));
    }
}
