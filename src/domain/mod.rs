//! The domain: what a subject, a purpose, an embedding and a consent are, and the
//! rules about them. Pure: no transport, no storage, no clocks read here.

pub mod calendar;
pub mod caller;
pub mod consent;
pub mod deletion;
pub mod embedding;
pub mod erasures;
pub mod key_epochs;
pub mod lockout;
pub mod subject;

pub use caller::{Caller, OperatorName, Principal, Role};
pub use consent::{Consent, ConsentFields, ConsentMethod, Purpose};
pub use embedding::{Embedding, EmbeddingModel, ModelId};
pub use lockout::{LockoutPolicy, LockoutState};
pub use subject::{SubjectId, Tenant};

/// Why an input was refused. The text is safe to return to a caller: it never
/// echoes the offending value (it may be a subject id or part of an embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("subject_id must be 1 to 256 bytes without control characters")]
    SubjectId,
    #[error("tenant must be 1 to 63 characters of [a-z0-9-]")]
    Tenant,
    #[error("purpose must be 1 to 64 characters of [a-z0-9_.-]")]
    Purpose,
    #[error("consent is required")]
    ConsentMissing,
    #[error("consent_id must be 1 to 128 printable characters")]
    ConsentId,
    #[error("consent must name at least one purpose, at most 32, without duplicates")]
    ConsentPurposes,
    #[error("consent.granted_at is missing or in the future")]
    ConsentGrantedAt,
    #[error("consent.method must be SEPARATE_IN_APP, WRITTEN or GUARDIAN")]
    ConsentMethod,
    #[error("consent.notice_version must be 1 to 64 printable characters")]
    NoticeVersion,
    #[error(
        "consent.off_device_storage must be true: the person must separately consent to their face data being stored off the device"
    )]
    OffDeviceStorage,
    #[error("consent.subject_under_14 requires consent.method GUARDIAN")]
    GuardianRequired,
    #[error("the embedding model is not configured")]
    UnknownModel,
    #[error("the embedding has the wrong dimension for its model")]
    Dimension,
    #[error("the embedding contains NaN or infinite values")]
    NotFinite,
    #[error("the embedding is a zero vector")]
    ZeroVector,
    /// Every field at its default: what grpcurl sends when the command piped
    /// into it (`facevault seal …`) printed nothing.
    #[error("empty request: did the sealing step fail?")]
    EmptyRequest,
    #[error("the sealed embedding is missing")]
    EnvelopeMissing,
    #[error("the sealed embedding is malformed or too large")]
    EnvelopeMalformed,
    #[error("the payload nonce must be at most 64 bytes")]
    PayloadNonce,
    #[error("session_nonce must be empty (one-shot sealing) or 12 bytes (a sealing session)")]
    SessionNonce,
    #[error("reason must be at most 256 characters")]
    Reason,
    #[error("ticket_id is malformed")]
    TicketId,
    #[error("page_token is malformed")]
    PageToken,
    #[error("chain_id must be a chain id as the log names them (w- and 16 hex digits)")]
    ChainId,
    #[error("tree sizes must satisfy 0 < first_size <= second_size")]
    TreeSizes,
    #[error("event_id must be an audit event id (1 to 64 bytes)")]
    EventId,
    #[error("no template of the probe's embedding model is enrolled")]
    ModelMismatch,
}
