//! Parse, don't validate: wire messages become domain commands here, or are
//! refused with INVALID_ARGUMENT before anything else happens.

use crate::domain::deletion::CancelReason;
use crate::domain::{Consent, ConsentFields, ConsentMethod, InvalidInput, Purpose, SubjectId};
use crate::proto;
use crate::vault::{
    CancelCommand, DeleteCommand, EnrollCommand, SealedEnvelope, VerifyCommand, WithdrawCommand,
};

/// Upper bounds on envelope fields, far above legitimate sizes (X-Wing enc is
/// 1120 bytes), so garbage is refused before any cryptography runs.
const MAX_ENC_BYTES: usize = 2048;

impl TryFrom<Option<proto::SealedEmbedding>> for SealedEnvelope {
    type Error = InvalidInput;

    fn try_from(value: Option<proto::SealedEmbedding>) -> Result<Self, Self::Error> {
        let sealed = value.ok_or(InvalidInput::EnvelopeMissing)?;
        if sealed.suite.is_empty()
            || sealed.suite.len() > 64
            || sealed.key_id.is_empty()
            || sealed.key_id.len() > 64
            || sealed.enc.is_empty()
            || sealed.enc.len() > MAX_ENC_BYTES
            || sealed.ciphertext.is_empty()
            || sealed.ciphertext.len() > crate::crypto::sealing::MAX_CIPHERTEXT_BYTES
        {
            return Err(InvalidInput::EnvelopeMalformed);
        }
        let session_nonce = match sealed.session_nonce.len() {
            0 => None,
            _ => Some(
                <[u8; crate::crypto::sessions::NONCE_LEN]>::try_from(
                    sealed.session_nonce.as_slice(),
                )
                .map_err(|_| InvalidInput::SessionNonce)?,
            ),
        };
        Ok(Self {
            suite: sealed.suite,
            key_id: sealed.key_id,
            enc: sealed.enc,
            ciphertext: sealed.ciphertext,
            session_nonce,
        })
    }
}

pub fn consent(value: Option<proto::Consent>, now_unix_ms: i64) -> Result<Consent, InvalidInput> {
    let c = value.ok_or(InvalidInput::ConsentMissing)?;
    let method = match proto::ConsentMethod::try_from(c.method) {
        Ok(proto::ConsentMethod::SeparateInApp) => Some(ConsentMethod::SeparateInApp),
        Ok(proto::ConsentMethod::Written) => Some(ConsentMethod::Written),
        Ok(proto::ConsentMethod::Guardian) => Some(ConsentMethod::Guardian),
        Ok(proto::ConsentMethod::Unspecified) | Err(_) => None,
    };
    Consent::new(
        ConsentFields {
            granted_at_unix_ms: c.granted_at.as_ref().map(crate::vault::unix_ms),
            consent_id: c.consent_id,
            purposes: c.purposes,
            method,
            notice_version: c.notice_version,
            off_device_storage: c.off_device_storage,
            subject_under_14: c.subject_under_14,
        },
        now_unix_ms,
    )
}

/// A stored consent, for subject access.
pub fn consent_to_proto(c: crate::vault::ConsentSummary) -> proto::Consent {
    let method = match ConsentMethod::parse(&c.method) {
        Some(ConsentMethod::SeparateInApp) => proto::ConsentMethod::SeparateInApp,
        Some(ConsentMethod::Written) => proto::ConsentMethod::Written,
        Some(ConsentMethod::Guardian) => proto::ConsentMethod::Guardian,
        None => proto::ConsentMethod::Unspecified,
    };
    proto::Consent {
        consent_id: c.consent_id,
        purposes: c.purposes,
        granted_at: Some(crate::vault::timestamp(c.granted_at_unix_ms)),
        method: method.into(),
        notice_version: c.notice_version,
        off_device_storage: c.off_device_storage,
        subject_under_14: c.subject_under_14,
    }
}

impl TryFrom<proto::EnrollRequest> for EnrollCommand {
    type Error = InvalidInput;

    fn try_from(request: proto::EnrollRequest) -> Result<Self, Self::Error> {
        if request == proto::EnrollRequest::default() {
            return Err(InvalidInput::EmptyRequest);
        }
        Ok(Self {
            subject: SubjectId::try_from(request.subject_id)?,
            sealed: SealedEnvelope::try_from(request.embedding)?,
            consent: consent(request.consent, crate::vault::now_unix_ms())?,
            replace: request.replace,
        })
    }
}

impl TryFrom<proto::VerifyRequest> for VerifyCommand {
    type Error = InvalidInput;

    fn try_from(request: proto::VerifyRequest) -> Result<Self, Self::Error> {
        if request == proto::VerifyRequest::default() {
            return Err(InvalidInput::EmptyRequest);
        }
        Ok(Self {
            subject: SubjectId::try_from(request.subject_id)?,
            sealed: SealedEnvelope::try_from(request.probe)?,
            purpose: Purpose::try_from(request.purpose.as_str())?,
        })
    }
}

impl TryFrom<proto::DeleteSubjectRequest> for DeleteCommand {
    type Error = InvalidInput;

    fn try_from(request: proto::DeleteSubjectRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            subject: SubjectId::try_from(request.subject_id)?,
        })
    }
}

impl TryFrom<proto::WithdrawConsentRequest> for WithdrawCommand {
    type Error = InvalidInput;

    fn try_from(request: proto::WithdrawConsentRequest) -> Result<Self, Self::Error> {
        let subject = SubjectId::try_from(request.subject_id)?;
        if request.purposes.is_empty() || request.purposes.len() > Consent::MAX_PURPOSES {
            return Err(InvalidInput::ConsentPurposes);
        }
        let purposes = request
            .purposes
            .iter()
            .map(|p| Purpose::try_from(p.as_str()))
            .collect::<Result<_, _>>()?;
        Ok(Self { subject, purposes })
    }
}

impl TryFrom<proto::CancelAccountRequest> for CancelCommand {
    type Error = InvalidInput;

    fn try_from(request: proto::CancelAccountRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            subject: SubjectId::try_from(request.subject_id)?,
            reason: CancelReason::try_from(request.reason)?,
        })
    }
}
