//! The service's one error type. Transports map it to their status codes (see
//! `grpc::status`); every message here is safe to show a caller: none echoes an
//! embedding, a subject id or a key.

use crate::crypto::CryptoError;
use crate::crypto::envelope::EnvelopeError;
use crate::crypto::sealing::SealingError;
use crate::domain::InvalidInput;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidInput(#[from] InvalidInput),
    #[error("{0}")]
    Envelope(#[from] EnvelopeRefusal),
    /// HPKE open failed: most often an envelope sealed for another tenant,
    /// operation or subject. The hint names only what the caller already
    /// knows, the RPC it called and the tenant of its own certificate; never
    /// the subject, a key or anything decrypted.
    #[error(
        "the envelope could not be opened: seal it to a current key of this service \
         with the AAD \"facevault/v1|{op}|{tenant}|<subject_id>\" \
         ({tenant} is the tenant of your certificate; see docs/protocol.md)"
    )]
    EnvelopeNotOpened {
        op: &'static str,
        tenant: crate::domain::Tenant,
    },
    #[error("client certificate missing or not acceptable")]
    Unauthenticated,
    #[error("this role may not call this method")]
    WrongRole,
    #[error("the subject's consent does not cover this purpose")]
    PurposeNotConsented,
    #[error("no template is enrolled for this subject")]
    NoTemplate,
    /// Every stored template is a restored copy of erased data (enrolled
    /// before a verified erasure of the subject): answered as no template.
    #[error("no template is enrolled for this subject")]
    ResurrectionRefused,
    #[error("no deletion ticket with this id in your tenant")]
    TicketNotFound,
    #[error("the subject's account is cancelled")]
    AccountCancelled,
    #[error("this tenant is decommissioned: it no longer enrolls or verifies")]
    TenantDecommissioned,
    #[error("this tenant has no decommission")]
    NoDecommission,

    #[error("the subject already holds the maximum number of templates; enroll with replace")]
    TemplateLimit,
    #[error("too many failed verifications; retry after {retry_after_secs} s")]
    LockedOut { retry_after_secs: u64 },
    #[error("templates disabled after repeated failed verifications; re-enroll with replace")]
    TemplatesDisabled,
    #[error("another verification of this subject is in progress")]
    SubjectBusy,
    /// `VerifyChain` while a walk of the same tenant's log runs in this process.
    #[error(
        "a verification of this tenant's audit log is already running; retry after {retry_after_secs} s"
    )]
    AuditWalkRunning { retry_after_secs: u64 },
    #[error("storage unavailable")]
    Unavailable(#[from] StorageError),
    #[error("a stored template failed its integrity check")]
    Integrity,
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("{0}")]
    AuditProof(String),
    #[error("{0}")]
    AuditNotFound(String),
    #[error("{0}")]
    AuditNotYetHeaded(String),
}

impl From<crate::audit::ProofError> for Error {
    fn from(e: crate::audit::ProofError) -> Self {
        use crate::audit::ProofError;
        match e {
            ProofError::Storage(s) => Self::Unavailable(s),
            ProofError::UnknownChain(_) | ProofError::UnknownEvent => {
                Self::AuditNotFound(e.to_string())
            }
            ProofError::Sizes(_) => Self::AuditProof(e.to_string()),
            ProofError::NotYetHeaded => Self::AuditNotYetHeaded(e.to_string()),
        }
    }
}

/// Why a sealed embedding was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeRefusal {
    #[error("{0}")]
    Sealing(#[from] SealingError),
    #[error("the sealed payload is malformed")]
    Payload,
    #[error("the sealed payload is older than the replay window")]
    Stale,
    #[error("the sealed payload is dated in the future")]
    FromFuture,
    #[error("the sealed embedding was already used (replay)")]
    Replayed,
}

impl From<EnvelopeError> for Error {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Integrity | EnvelopeError::UnknownKekVersion => Self::Integrity,
            EnvelopeError::Crypto(_) => Self::Internal("cryptographic operation failed"),
        }
    }
}

impl From<CryptoError> for Error {
    fn from(_: CryptoError) -> Self {
        Self::Internal("cryptographic operation failed")
    }
}
