//! The one mapping from the service's errors to gRPC status codes. Exhaustive on
//! purpose: a new error variant does not compile until someone decides its code.

use tonic::{Code, Status};

use crate::error::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = code_of(&error);
        match &error {
            Error::Unavailable(source) => {
                tracing::warn!(error = %source, detail = ?source, "storage unavailable");
                Status::new(code, "storage unavailable, retry later")
            }
            Error::Integrity | Error::Internal(_) => {
                tracing::error!(%error, "internal error");
                Status::new(code, "internal error")
            }
            Error::LockedOut { retry_after_secs }
            | Error::AuditWalkRunning { retry_after_secs } => {
                // The hint in metadata too, for clients that back off by it.
                let mut status = Status::new(code, error.to_string());
                if let Ok(value) = retry_after_secs.to_string().parse() {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            _ => Status::new(code, error.to_string()),
        }
    }
}

pub fn code_of(error: &Error) -> Code {
    match error {
        Error::InvalidInput(_) => Code::InvalidArgument,
        Error::Envelope(_) => Code::InvalidArgument,
        Error::EnvelopeNotOpened { .. } => Code::InvalidArgument,
        Error::Unauthenticated => Code::Unauthenticated,
        Error::WrongRole => Code::PermissionDenied,
        Error::PurposeNotConsented => Code::PermissionDenied,
        Error::NoTemplate => Code::NotFound,
        Error::ResurrectionRefused => Code::NotFound,
        Error::TicketNotFound => Code::NotFound,
        Error::AccountCancelled => Code::FailedPrecondition,
        Error::TenantDecommissioned => Code::FailedPrecondition,
        Error::NoDecommission => Code::NotFound,
        Error::TemplateLimit => Code::FailedPrecondition,
        Error::LockedOut { .. } => Code::ResourceExhausted,
        Error::TemplatesDisabled => Code::ResourceExhausted,
        // A concurrency conflict the client may retry at once.
        Error::SubjectBusy => Code::Aborted,
        // Bounded work: one walk of a tenant's log at a time.
        Error::AuditWalkRunning { .. } => Code::ResourceExhausted,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Integrity => Code::Internal,
        Error::Internal(_) => Code::Internal,
        Error::AuditProof(_) => Code::OutOfRange,
        Error::AuditNotFound(_) => Code::NotFound,
        Error::AuditNotYetHeaded(_) => Code::FailedPrecondition,
    }
}
