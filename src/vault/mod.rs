//! The application core: enrollment, verification and erasure, composed from the
//! domain rules, the crypto and the store. Transport-agnostic: gRPC handlers parse
//! requests into the commands below and map `Error` to status codes.

mod compliance;
mod decommission;
mod enroll;
mod key_epochs;
mod lifecycle;
mod subject_record;
mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use zeroize::Zeroizing;

pub use compliance::{ComplianceReport, DeploymentReport, FilingClock};
pub use decommission::{
    DECOMMISSION_CONTEXT, DECOMMISSION_STATEMENT, DECOMMISSION_WORKING_DAYS, TenantDecommission,
    verify_decommission_receipt,
};
pub use enroll::{EnrollCommand, Enrollment};
pub use key_epochs::{
    DekCensus, EpochStatus, RewrapPage, SHRED_CONTEXT, SHRED_REFUSED_OP, SHRED_STATEMENT,
    dek_census, shred_matches_receipt, verify_shred_receipt,
};
pub use lifecycle::{
    CancelCommand, DeleteCommand, RECEIPT_CONTEXT, Ticket, WithdrawCommand, is_valid_ticket_id,
    timestamp, unix_ms, verify_receipt,
};
pub use subject_record::{ConsentSummary, SubjectRecord, TemplateSummary};
pub use verify::{Verification, VerifyCommand};

use crate::crypto::keyfiles::KeyMaterial;
use crate::crypto::live::LiveKeys;
use crate::crypto::sealing::{self, SealedFor, SealingError};
use crate::domain::deletion::DeletionPolicy;
use crate::domain::{Embedding, EmbeddingModel, LockoutPolicy, SubjectId, Tenant};
use crate::error::{EnvelopeRefusal, Error};
use crate::storage::Store;

/// A sealed embedding as received, before it is opened.
#[derive(Debug, Clone)]
pub struct SealedEnvelope {
    pub suite: String,
    pub key_id: String,
    pub enc: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// Set for a message of a sealing session (`crypto::sessions`), None for
    /// one-shot HPKE.
    pub session_nonce: Option<[u8; crate::crypto::sessions::NONCE_LEN]>,
}

pub struct VaultSettings {
    pub models: Vec<EmbeddingModel>,
    pub lockout: LockoutPolicy,
    pub max_templates_per_subject: u32,
    pub replay_window: Duration,
    pub max_clock_skew: Duration,
    /// Sealing sessions this process remembers (an equal share per declared
    /// tenant), and how long one lasts.
    pub session_cache_entries: std::num::NonZeroUsize,
    pub declared_tenants: std::collections::BTreeSet<Tenant>,
    pub session_ttl: Duration,
    pub tenants_exposing_scores: Vec<Tenant>,
    pub deletion_policy: DeletionPolicy,
    /// The key-epoch policy (checked against the deletion deadline at start-up).
    pub epoch_policy: crate::domain::key_epochs::EpochPolicy,
    /// Most DEKs this process's worker re-wraps per second.
    pub rewrap_per_second: u32,
    pub ticket_retention: Duration,
    pub claim_ttl: Duration,
    pub filing_threshold: u64,
    /// The operator's filing number (`compliance.filing_reference`).
    pub filing_reference: String,
    pub max_template_age: Vec<(Tenant, Duration)>,
    /// Longest a verification can run (its Redis steps' deadlines and more):
    /// how long its hold on the subject's in-flight slot lasts.
    pub verify_bound: Duration,
}

/// What erasure and compliance need.
struct Lifecycle {
    policy: DeletionPolicy,
    epochs: crate::domain::key_epochs::EpochPolicy,
    rewrap_per_second: u32,
    /// What the re-wrap worker's last complete walk left under old epochs.
    rewrap_pending: std::sync::atomic::AtomicU64,
    /// This process, as it names itself in `fv:keys:in-use`.
    process_id: String,
    ticket_retention_ms: i64,
    claim_ttl_ms: i64,
    filing_threshold: u64,
    max_template_age: Vec<(Tenant, Duration)>,
    /// Wakes the local deletion worker when a ticket is queued.
    wake: Arc<tokio::sync::Notify>,
    /// Where erasures record their own audit event, while the service runs.
    audit: std::sync::RwLock<Option<crate::audit::AuditSink>>,
    /// Tenants refused for enrollment and verification (`decommission`).
    decommissioned: std::sync::RwLock<std::collections::BTreeSet<String>>,
    filing_reference: String,
    /// When this process last warned that a new deadline is provisional (ms).
    provisional_warned_ms: std::sync::atomic::AtomicI64,
    /// Per tenant, the erasure history its re-wrap worker last verified: Verify
    /// skips a template it says was erased, at no extra Redis round trip.
    erasures: std::sync::RwLock<HashMap<String, Arc<crate::domain::erasures::ErasureIndex>>>,
}

pub struct Vault {
    keys: Arc<LiveKeys>,
    store: Store,
    models: HashMap<String, EmbeddingModel>,
    lockout: LockoutPolicy,
    max_templates: u32,
    replay_window: Duration,
    max_clock_skew: Duration,
    sessions: crate::crypto::sessions::SessionCache,
    tenants_exposing_scores: Vec<Tenant>,
    verify_bound: Duration,
    lifecycle: Lifecycle,
}

/// An opened, checked embedding and the model it belongs to.
struct OpenedEmbedding<'a> {
    embedding: Embedding,
    model: &'a EmbeddingModel,
    /// The replay-cache entry: SHA-256(enc) for one-shot sealing, SHA-256(enc ||
    /// session_nonce) for a message of a sealing session.
    envelope_digest: [u8; 32],
    replay_expires_unix_ms: i64,
}

impl Vault {
    pub fn new(keys: Arc<LiveKeys>, store: Store, settings: VaultSettings) -> Self {
        Self {
            keys,
            store,
            models: settings
                .models
                .into_iter()
                .map(|m| (m.id.as_str().to_owned(), m))
                .collect(),
            lockout: settings.lockout,
            max_templates: settings.max_templates_per_subject,
            replay_window: settings.replay_window,
            max_clock_skew: settings.max_clock_skew,
            sessions: crate::crypto::sessions::SessionCache::new(
                settings.session_cache_entries,
                settings.declared_tenants.iter().map(Tenant::as_str),
                settings.session_ttl,
            ),
            tenants_exposing_scores: settings.tenants_exposing_scores,
            verify_bound: settings.verify_bound,
            lifecycle: Lifecycle {
                policy: settings.deletion_policy,
                epochs: settings.epoch_policy,
                rewrap_per_second: settings.rewrap_per_second,
                rewrap_pending: std::sync::atomic::AtomicU64::new(0),
                process_id: format!("{:016x}", rand::random::<u64>()),
                ticket_retention_ms: settings.ticket_retention.as_millis() as i64,
                claim_ttl_ms: settings.claim_ttl.as_millis() as i64,
                filing_threshold: settings.filing_threshold,
                max_template_age: settings.max_template_age,
                wake: Arc::new(tokio::sync::Notify::new()),
                audit: std::sync::RwLock::new(None),
                decommissioned: std::sync::RwLock::new(std::collections::BTreeSet::new()),
                filing_reference: settings.filing_reference,
                provisional_warned_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
                erasures: std::sync::RwLock::new(HashMap::new()),
            },
        }
    }

    /// Keeps the tenant's verified erasure history for Verify (set by the
    /// re-wrap worker after each verification of the tenant's log).
    pub fn remember_erasures(
        &self,
        tenant: &Tenant,
        index: &crate::domain::erasures::ErasureIndex,
    ) {
        if let Ok(mut all) = self.lifecycle.erasures.write() {
            all.insert(tenant.as_str().to_owned(), Arc::new(index.clone()));
        }
    }

    /// The tenant's verified erasure history as this process last saw it (see
    /// `remember_erasures`), if it has seen one.
    fn known_erasures(
        &self,
        tenant: &Tenant,
    ) -> Option<Arc<crate::domain::erasures::ErasureIndex>> {
        self.lifecycle
            .erasures
            .read()
            .ok()?
            .get(tenant.as_str())
            .cloned()
    }

    /// Erasures record an audit event through `sink` from now on.
    pub fn attach_audit(&self, sink: crate::audit::AuditSink) {
        if let Ok(mut audit) = self.lifecycle.audit.write() {
            *audit = Some(sink);
        }
    }

    /// Lets go of the audit sink, so the audit writer can finish at shutdown.
    pub fn detach_audit(&self) {
        if let Ok(mut audit) = self.lifecycle.audit.write() {
            *audit = None;
        }
    }

    /// Notified when a deletion ticket is queued.
    pub fn deletion_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.lifecycle.wake.clone()
    }

    pub fn deletion_policy(&self) -> &DeletionPolicy {
        &self.lifecycle.policy
    }

    fn max_template_age(&self, tenant: &Tenant) -> Option<Duration> {
        self.lifecycle
            .max_template_age
            .iter()
            .find(|(t, _)| t == tenant)
            .map(|(_, age)| *age)
    }

    /// The pseudonym of a subject in a tenant (what audit records and tickets name).
    pub fn subject_ref(
        &self,
        tenant: &Tenant,
        subject: &SubjectId,
    ) -> Result<crate::crypto::keyring::SubjectRef, Error> {
        Ok(self
            .keys
            .current()
            .keyring
            .tenant(tenant)?
            .subject_ref(subject))
    }

    /// The keys in use now (sealing keys, keyring, receipt key).
    pub fn keys(&self) -> Arc<KeyMaterial> {
        self.keys.current()
    }

    /// `sealing.session_ttl_secs`, as `GetSealingKeys` publishes it.
    pub fn session_ttl(&self) -> Duration {
        self.sessions.ttl()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Opens a sealed embedding for (op, tenant, subject) and checks it fully:
    /// freshness, model, dimension, finiteness. The replay cache is consulted by
    /// the caller in the same Redis round trip as its read.
    fn open_embedding(
        &self,
        op: SealedFor,
        tenant: &Tenant,
        subject: &SubjectId,
        sealed: &SealedEnvelope,
        now_unix_ms: i64,
    ) -> Result<OpenedEmbedding<'_>, Error> {
        let aad = sealing::aad(op, tenant.as_str(), subject.as_str());
        let keys = self.keys.current();
        let opened = match &sealed.session_nonce {
            None => keys.sealing.open(
                &sealed.suite,
                &sealed.key_id,
                &sealed.enc,
                &sealed.ciphertext,
                &aad,
                now_unix_ms,
            ),
            Some(nonce) => keys.sealing.open_session(
                &self.sessions,
                tenant.as_str(),
                &sealed.suite,
                &sealed.key_id,
                &sealed.enc,
                nonce,
                &sealed.ciphertext,
                &aad,
                now_unix_ms,
            ),
        };
        let plaintext = opened.map_err(|refusal| match refusal {
            SealingError::Open => Error::EnvelopeNotOpened {
                op: op.as_str(),
                tenant: tenant.clone(),
            },
            other => EnvelopeRefusal::from(other).into(),
        })?;
        let mut payload = crate::proto::EmbeddingPayload::decode(plaintext.as_slice())
            .map_err(|_| EnvelopeRefusal::Payload)?;
        let values = Zeroizing::new(std::mem::take(&mut payload.values));
        let window = self.replay_window.as_millis() as i64;
        let skew = self.max_clock_skew.as_millis() as i64;
        if payload.sealed_at_unix_ms < now_unix_ms - window {
            return Err(EnvelopeRefusal::Stale.into());
        }
        if payload.sealed_at_unix_ms > now_unix_ms + skew {
            return Err(EnvelopeRefusal::FromFuture.into());
        }
        if payload.nonce.len() > 64 {
            return Err(crate::domain::InvalidInput::PayloadNonce.into());
        }
        let model = self
            .models
            .get(&payload.model)
            .ok_or(crate::domain::InvalidInput::UnknownModel)?;
        let embedding = Embedding::new(model, values)?;
        Ok(OpenedEmbedding {
            embedding,
            model,
            envelope_digest: {
                let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
                digest.update(&sealed.enc);
                if let Some(nonce) = &sealed.session_nonce {
                    digest.update(nonce);
                }
                digest
                    .finish()
                    .as_ref()
                    .try_into()
                    .map_err(|_| Error::Internal("digest length"))?
            },
            // Anything sealed later than now + skew is refused above, so an entry
            // kept for window + skew outlives every payload it could be replayed with.
            replay_expires_unix_ms: now_unix_ms + window + skew,
        })
    }
}

pub fn now_unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn random_id() -> Result<String, Error> {
    use base64::Engine as _;
    let bytes = crate::crypto::random_bytes::<16>()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
