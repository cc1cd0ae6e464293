use prost::Message as _;

use super::{Vault, now_unix_ms, random_id};
use crate::crypto::keyring::SubjectRef;
use crate::domain::{SubjectId, Tenant};
use crate::error::Error;
use crate::storage::SubjectKeys;

pub struct DeleteCommand {
    pub subject: SubjectId,
}

/// A completed erasure and its signed receipt.
#[derive(Debug, Clone)]
pub struct ErasureTicket {
    pub ticket_id: String,
    pub subject_ref: SubjectRef,
    pub requested_at_unix_ms: i64,
    pub deadline_unix_ms: i64,
    pub completed_at_unix_ms: Option<i64>,
    pub receipt: Option<crate::proto::DeletionReceipt>,
}

pub const RECEIPT_CONTEXT: &[u8] = b"facevault/v1 receipt";

impl Vault {
    /// Erases everything held for the subject now: templates (and with them their
    /// DEKs, salts and consents), counters, replay entries.
    pub async fn delete_subject(
        &self,
        tenant: &Tenant,
        cmd: DeleteCommand,
    ) -> Result<ErasureTicket, Error> {
        let requested_at = now_unix_ms();
        let keys = self.keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);
        let held = self
            .store
            .erase_subject(&SubjectKeys::new(tenant, &subject_ref))
            .await?;
        let completed_at = now_unix_ms();
        let ticket_id = random_id()?;
        let body = crate::proto::ReceiptBody {
            ticket_id: ticket_id.clone(),
            tenant: tenant.as_str().to_owned(),
            subject_ref: subject_ref.as_str().to_owned(),
            requested_at: Some(timestamp(requested_at)),
            deadline: Some(timestamp(requested_at)),
            completed_at: Some(timestamp(completed_at)),
            erased: vec![
                format!("templates:{held}"),
                "consents".to_owned(),
                "lockout-counters".to_owned(),
                "replay-cache".to_owned(),
            ],
        }
        .encode_to_vec();
        let receipt = self.sign_receipt(body);
        Ok(ErasureTicket {
            ticket_id,
            subject_ref,
            requested_at_unix_ms: requested_at,
            deadline_unix_ms: requested_at,
            completed_at_unix_ms: Some(completed_at),
            receipt: Some(receipt),
        })
    }

    fn sign_receipt(&self, body: Vec<u8>) -> crate::proto::DeletionReceipt {
        let mut message = Vec::with_capacity(RECEIPT_CONTEXT.len() + body.len());
        message.extend_from_slice(RECEIPT_CONTEXT);
        message.extend_from_slice(&body);
        let signature = self.receipt_signer.sign(&message).as_ref().to_vec();
        crate::proto::DeletionReceipt { body, signature }
    }
}

pub fn timestamp(unix_ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_ms.div_euclid(1000),
        nanos: (unix_ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}
