//! Sealing sessions: a client pays for one HPKE setup and then seals each embedding
//! with AES-256-GCM under a key exported from it (RFC 9180 §5.3), so the server
//! opens a message with one AEAD instead of one KEM decapsulation.
//!
//! - setup: `SetupBaseS(pkR, info = "facevault/v1 session|" || tenant)`, so a session
//!   belongs to one tenant;
//! - session key: `Export("facevault/v1 session key", 32)`;
//! - each message: AES-256-GCM under the session key, a fresh random 96-bit nonce
//!   (`session_nonce`) and the same AAD as a one-shot envelope.
//!
//! The server keeps session keys by SHA-256(enc) in a bounded cache with an equal
//! share per declared tenant (least recently used goes first within a share), so
//! one tenant's sessions can never evict another's. A miss (another replica, an
//! eviction) costs one decapsulation and is otherwise invisible. An entry stays
//! after its session expires, so that the replica refuses the expired session
//! rather than starting it afresh, until the bound evicts it. The TTL and the
//! message cap are therefore enforced per replica, for as long as it remembers
//! the session: see `docs/protocol.md`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use ring::aead;
use zeroize::Zeroizing;

/// The HPKE info of a session's setup is this followed by the tenant.
pub const INFO_PREFIX: &[u8] = b"facevault/v1 session|";
/// The exporter context of the session key.
pub const KEY_LABEL: &[u8] = b"facevault/v1 session key";
pub const NONCE_LEN: usize = 12;
/// Messages one session may carry. With random 96-bit nonces the chance of a
/// repeated nonce within a session stays below 2^-48 (NIST SP 800-38D §8.3 asks
/// for 2^-32).
pub const MAX_MESSAGES: u32 = 1 << 24;

/// `facevault/v1 session|<tenant>`.
pub fn info(tenant: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(INFO_PREFIX.len() + tenant.len());
    out.extend_from_slice(INFO_PREFIX);
    out.extend_from_slice(tenant.as_bytes());
    out
}

/// What a cached session is bound to, besides its key and its tenant's share.
struct Entry {
    key_id: String,
    key: Zeroizing<[u8; 32]>,
    started_unix_ms: i64,
    messages: u32,
}

/// Why a session message is refused before any decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// Older than the TTL.
    Expired,
    /// The message cap is reached.
    Exhausted,
    /// The session was set up for another tenant or key: it cannot open here.
    Mismatch,
}

/// The answer of `SessionCache::claim`.
pub enum Claim {
    /// The session is known and this message is counted: open with this key.
    Known(Zeroizing<[u8; 32]>),
    /// Not in the cache: set the session up, then `insert` it.
    Unknown,
}

/// One LRU per declared tenant, fixed at start: a tenant's churn evicts only
/// its own sessions, and tenants do not contend for one lock.
pub struct SessionCache {
    shares: HashMap<String, Mutex<LruCache<[u8; 32], Entry>>>,
    ttl: std::time::Duration,
}

impl SessionCache {
    /// `capacity` sessions in all, split evenly (at least one each) between
    /// `tenants`. Sessions of any other tenant are never remembered.
    pub fn new<'a>(
        capacity: NonZeroUsize,
        tenants: impl IntoIterator<Item = &'a str>,
        ttl: std::time::Duration,
    ) -> Self {
        let tenants: std::collections::BTreeSet<&str> = tenants.into_iter().collect();
        let share =
            NonZeroUsize::new(capacity.get() / tenants.len().max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            shares: tenants
                .into_iter()
                .map(|t| (t.to_owned(), Mutex::new(LruCache::new(share))))
                .collect(),
            ttl,
        }
    }

    fn share(&self, tenant: &str) -> Option<std::sync::MutexGuard<'_, LruCache<[u8; 32], Entry>>> {
        let share = self.shares.get(tenant)?;
        Some(share.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How long a session lasts from its first message.
    pub fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    /// SHA-256(enc), the cache key.
    pub fn digest(enc: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, enc).as_ref());
        out
    }

    /// Counts one message of the session `digest` if it is known, live and
    /// under its cap. The count is taken before the message is opened, so the
    /// cap holds under any concurrency.
    pub fn claim(
        &self,
        digest: &[u8; 32],
        tenant: &str,
        key_id: &str,
        now_unix_ms: i64,
    ) -> Result<Claim, SessionRefusal> {
        // A session set up for another tenant is not in this tenant's share:
        // it is set up afresh under this tenant's info, and does not open.
        let Some(mut entries) = self.share(tenant) else {
            return Ok(Claim::Unknown);
        };
        let Some(entry) = entries.get_mut(digest) else {
            return Ok(Claim::Unknown);
        };
        if entry.key_id != key_id {
            return Err(SessionRefusal::Mismatch);
        }
        let ttl_ms = self.ttl.as_millis().min(i64::MAX as u128) as i64;
        if now_unix_ms - entry.started_unix_ms > ttl_ms {
            return Err(SessionRefusal::Expired);
        }
        if entry.messages >= MAX_MESSAGES {
            return Err(SessionRefusal::Exhausted);
        }
        entry.messages += 1;
        Ok(Claim::Known(entry.key.clone()))
    }

    /// Remembers a session whose first message just opened (that message counts).
    pub fn insert(
        &self,
        digest: [u8; 32],
        tenant: &str,
        key_id: &str,
        key: Zeroizing<[u8; 32]>,
        now_unix_ms: i64,
    ) {
        let Some(mut entries) = self.share(tenant) else {
            return;
        };
        // Two first messages raced: keep the entry that counts the most.
        if let Some(existing) = entries.get_mut(&digest)
            && existing.key_id == key_id
        {
            existing.messages = existing.messages.saturating_add(1);
            return;
        }
        entries.put(
            digest,
            Entry {
                key_id: key_id.to_owned(),
                key,
                started_unix_ms: now_unix_ms,
                messages: 1,
            },
        );
    }

    /// Sessions remembered, across every tenant's share.
    pub fn len(&self) -> usize {
        self.shares
            .values()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn aes_256_gcm(key: &[u8; 32]) -> Option<aead::LessSafeKey> {
    Some(aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_256_GCM, key).ok()?,
    ))
}

/// AES-256-GCM open of one session message.
pub fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let key = aes_256_gcm(key)?;
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    let len = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(*nonce),
            aead::Aad::from(aad),
            buffer.as_mut_slice(),
        )
        .ok()?
        .len();
    buffer.truncate(len);
    Some(buffer)
}

/// AES-256-GCM seal of one session message: what a client does.
pub fn seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let key = aes_256_gcm(key)?;
    let mut buffer = plaintext.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(*nonce),
        aead::Aad::from(aad),
        &mut buffer,
    )
    .ok()?;
    Some(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn cache(capacity: usize) -> SessionCache {
        SessionCache::new(
            NonZeroUsize::new(capacity).unwrap(),
            ["demo"],
            std::time::Duration::from_secs(600),
        )
    }

    #[test]
    fn a_known_session_counts_expires_and_belongs_to_its_tenant_and_key() {
        let c = cache(4);
        let d = SessionCache::digest(b"enc");
        assert!(matches!(c.claim(&d, "demo", "k1", T0), Ok(Claim::Unknown)));
        c.insert(d, "demo", "k1", Zeroizing::new([7; 32]), T0);
        match c.claim(&d, "demo", "k1", T0 + 600_000) {
            Ok(Claim::Known(key)) => assert_eq!(*key, [7; 32]),
            _ => panic!("the session should be known"),
        }
        assert_eq!(
            c.claim(&d, "demo", "k1", T0 + 600_001).err(),
            Some(SessionRefusal::Expired)
        );
        // Another tenant never finds it: set up under its own info, it cannot open.
        assert!(matches!(c.claim(&d, "other", "k1", T0), Ok(Claim::Unknown)));
        assert_eq!(
            c.claim(&d, "demo", "k2", T0).err(),
            Some(SessionRefusal::Mismatch)
        );
    }

    #[test]
    fn the_message_cap_holds() {
        let c = cache(4);
        let d = SessionCache::digest(b"enc");
        c.insert(d, "demo", "k1", Zeroizing::new([7; 32]), T0);
        c.share("demo").unwrap().get_mut(&d).unwrap().messages = MAX_MESSAGES - 1;
        assert!(matches!(c.claim(&d, "demo", "k1", T0), Ok(Claim::Known(_))));
        assert_eq!(
            c.claim(&d, "demo", "k1", T0).err(),
            Some(SessionRefusal::Exhausted)
        );
    }

    #[test]
    fn the_bound_evicts_the_least_recently_used() {
        let c = cache(2);
        let (a, b, x) = (
            SessionCache::digest(b"a"),
            SessionCache::digest(b"b"),
            SessionCache::digest(b"x"),
        );
        c.insert(a, "demo", "k", Zeroizing::new([1; 32]), T0);
        c.insert(b, "demo", "k", Zeroizing::new([2; 32]), T0);
        assert!(matches!(c.claim(&a, "demo", "k", T0), Ok(Claim::Known(_))));
        c.insert(x, "demo", "k", Zeroizing::new([3; 32]), T0);
        assert_eq!(c.len(), 2);
        assert!(matches!(c.claim(&b, "demo", "k", T0), Ok(Claim::Unknown)));
        assert!(matches!(c.claim(&a, "demo", "k", T0), Ok(Claim::Known(_))));
    }

    #[test]
    fn a_tenant_evicts_only_within_its_own_share() {
        let c = SessionCache::new(
            NonZeroUsize::new(4).unwrap(),
            ["victim", "flooder"],
            std::time::Duration::from_secs(600),
        );
        let victim = SessionCache::digest(b"victim");
        c.insert(victim, "victim", "k", Zeroizing::new([1; 32]), T0);
        for i in 0..1000u32 {
            let d = SessionCache::digest(&i.to_be_bytes());
            c.insert(d, "flooder", "k", Zeroizing::new([2; 32]), T0);
        }
        assert_eq!(
            c.len(),
            3,
            "the flooder holds its share of 2, the victim its 1"
        );
        assert!(matches!(
            c.claim(&victim, "victim", "k", T0),
            Ok(Claim::Known(_))
        ));
        // An undeclared tenant is never remembered.
        c.insert(victim, "stranger", "k", Zeroizing::new([3; 32]), T0);
        assert!(matches!(
            c.claim(&victim, "stranger", "k", T0),
            Ok(Claim::Unknown)
        ));
    }

    #[test]
    fn seal_and_open_round_trip_and_bind_the_aad() {
        let key = [9u8; 32];
        let nonce = [1u8; NONCE_LEN];
        let ct = seal(&key, &nonce, b"aad", b"payload").unwrap();
        assert_eq!(
            open(&key, &nonce, b"aad", &ct).unwrap().as_slice(),
            b"payload"
        );
        assert!(open(&key, &nonce, b"other", &ct).is_none());
        assert!(open(&key, &[2; NONCE_LEN], b"aad", &ct).is_none());
    }
}
