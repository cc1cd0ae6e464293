//! Erasure: delete now, withdraw consent, cancel the account (erased by the
//! statutory deadline by the deletion worker), retention expiry. Every erasure
//! yields a ticket with an Ed25519-signed receipt; tickets carry no biometric data
//! and are kept for the audit retention period.

use std::collections::BTreeSet;

use prost::Message as _;

use super::{Vault, now_unix_ms, random_id};
use crate::crypto::envelope::{self, SealedTemplate, seal_ticket_note};
use crate::crypto::keyring::{SubjectRef, TenantKeys};
use crate::domain::deletion::{CancelReason, DeletionKind};
use crate::domain::{InvalidInput, Purpose, SubjectId, Tenant};
use crate::error::Error;
use crate::storage::deletions::TicketRecord;
use crate::storage::{SubjectKeys, TemplateChange};

pub struct DeleteCommand {
    pub subject: SubjectId,
}

pub struct WithdrawCommand {
    pub subject: SubjectId,
    pub purposes: BTreeSet<Purpose>,
}

pub struct CancelCommand {
    pub subject: SubjectId,
    pub reason: CancelReason,
}

/// A deletion ticket as callers see it.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub ticket_id: String,
    pub kind: Option<DeletionKind>,
    pub subject_ref: String,
    pub requested_at_unix_ms: i64,
    pub deadline_unix_ms: i64,
    pub completed_at_unix_ms: Option<i64>,
    pub receipt: Option<crate::proto::DeletionReceipt>,
}

impl From<TicketRecord> for Ticket {
    fn from(t: TicketRecord) -> Self {
        let receipt = t.completed.then_some(crate::proto::DeletionReceipt {
            body: t.receipt_body,
            signature: t.receipt_signature,
        });
        Self {
            ticket_id: t.ticket_id,
            kind: DeletionKind::parse(&t.kind),
            subject_ref: t.subject_ref,
            requested_at_unix_ms: t.requested_at_ms,
            deadline_unix_ms: t.deadline_ms,
            completed_at_unix_ms: t.completed_at_ms.filter(|_| t.completed),
            receipt,
        }
    }
}

/// Signed receipts are domain-separated from anything else the key signs.
pub const RECEIPT_CONTEXT: &[u8] = b"facevault/v1 receipt";

/// Attempts at a compare-and-set rewrite before giving up (a concurrent
/// enrollment of the same subject on every attempt).
const REWRITE_ATTEMPTS: usize = 5;

pub fn is_valid_ticket_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Vault {
    /// Erases everything held for the subject now: templates (with their DEKs,
    /// salts and consents), counters, replay entries.
    pub async fn delete_subject(
        &self,
        tenant: &Tenant,
        cmd: DeleteCommand,
    ) -> Result<Ticket, Error> {
        let requested_at = now_unix_ms();
        let keys = self.keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);
        let held = self.erase_everything(tenant, &subject_ref).await?;
        let erased = vec![
            format!("templates:{held}"),
            "consents".to_owned(),
            "lockout-counters".to_owned(),
            "replay-cache".to_owned(),
        ];
        self.completed_ticket(
            tenant,
            &subject_ref,
            DeletionKind::Delete,
            requested_at,
            held,
            erased,
        )
        .await
    }

    /// Removes the purposes from every template's consent; templates left with no
    /// purpose are erased at once (and everything else of the subject with the last).
    pub async fn withdraw_consent(
        &self,
        tenant: &Tenant,
        cmd: WithdrawCommand,
    ) -> Result<Ticket, Error> {
        let requested_at = now_unix_ms();
        let keys = self.keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);
        let subject_keys = SubjectKeys::new(tenant, &subject_ref);
        for _ in 0..REWRITE_ATTEMPTS {
            let stored = self.store.read_subject(&subject_keys).await?;
            if stored.state.cancelled {
                return Err(Error::AccountCancelled);
            }
            if stored.templates.is_empty() {
                return Err(Error::NoTemplate);
            }
            let mut changes = Vec::new();
            let mut remaining = BTreeSet::new();
            let mut erased = 0u64;
            for (template_id, bytes) in stored.templates {
                let sealed =
                    SealedTemplate::decode(bytes.as_slice()).map_err(|_| Error::Integrity)?;
                let record =
                    envelope::open_template(&keys, tenant, &subject_ref, &template_id, sealed)?;
                let Some(consent) = record.consent.as_ref() else {
                    return Err(Error::Integrity);
                };
                let kept: Vec<String> = consent
                    .purposes
                    .iter()
                    .filter(|p| !cmd.purposes.iter().any(|w| w.as_str() == p.as_str()))
                    .cloned()
                    .collect();
                if kept.len() == consent.purposes.len() {
                    remaining.extend(kept);
                    continue;
                }
                let replacement = if kept.is_empty() {
                    erased += 1;
                    None
                } else {
                    remaining.extend(kept.iter().cloned());
                    let mut updated = record.clone();
                    if let Some(c) = updated.consent.as_mut() {
                        c.purposes = kept;
                    }
                    let sealed = envelope::seal_template(
                        &keys,
                        tenant,
                        &subject_ref,
                        &template_id,
                        &updated,
                    )?;
                    Some(sealed.encode_to_vec())
                };
                changes.push(TemplateChange {
                    template_id,
                    expected: bytes,
                    replacement,
                });
            }
            let held = if changes.is_empty() {
                None
            } else {
                match self
                    .store
                    .rewrite_templates(&subject_keys, &changes)
                    .await?
                {
                    Some(held) => Some(held),
                    None => continue,
                }
            };
            for c in changes.iter().filter(|c| c.replacement.is_none()) {
                self.store
                    .ledger_unschedule_expiry(tenant.as_str(), subject_ref.as_str(), &c.template_id)
                    .await?;
            }
            let mut erased_what = vec![format!("templates:{erased}")];
            erased_what.extend(cmd.purposes.iter().map(|p| format!("consent-purpose:{p}")));
            if held == Some(0) {
                self.erase_everything(tenant, &subject_ref).await?;
                erased_what.extend(["lockout-counters".to_owned(), "replay-cache".to_owned()]);
            } else {
                let remaining: Vec<String> = remaining.into_iter().collect();
                self.store
                    .ledger_set_subject(tenant.as_str(), subject_ref.as_str(), &remaining)
                    .await?;
            }
            return self
                .completed_ticket(
                    tenant,
                    &subject_ref,
                    DeletionKind::Withdraw,
                    requested_at,
                    erased,
                    erased_what,
                )
                .await;
        }
        Err(Error::SubjectBusy)
    }

    /// Makes the subject unusable at once and queues its erasure, due after the
    /// configured grace (at once by default) and at the latest by the end of the
    /// 15th working day. Cancelling again returns the same ticket.
    pub async fn cancel_account(
        &self,
        tenant: &Tenant,
        cmd: CancelCommand,
    ) -> Result<Ticket, Error> {
        let keys = self.keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);
        let ticket_id = keys.cancel_ticket_id(&subject_ref);
        if let Some(existing) = self.store.ticket(tenant.as_str(), &ticket_id).await? {
            return Ok(existing.into());
        }
        let requested_at = now_unix_ms();
        let (_, held) = self
            .store
            .cancel_subject(&SubjectKeys::new(tenant, &subject_ref), &ticket_id)
            .await?;
        let requested = chrono::DateTime::from_timestamp_millis(requested_at)
            .ok_or(Error::Internal("clock"))?;
        let schedule = self
            .lifecycle
            .policy
            .schedule(requested)
            .map_err(|_| Error::Internal("deadline computation failed"))?;
        if !schedule.fallback_years.is_empty() {
            tracing::warn!(
                years = ?schedule.fallback_years,
                "no published holiday schedule for these years: the deadline counts Monday-Friday only (earliest, safest); add a holiday file"
            );
        }
        let record = TicketRecord {
            tenant: tenant.as_str().to_owned(),
            ticket_id: ticket_id.clone(),
            kind: DeletionKind::Cancel.as_str().to_owned(),
            subject_ref: subject_ref.as_str().to_owned(),
            completed: false,
            requested_at_ms: requested_at,
            deadline_ms: schedule.deadline.timestamp_millis(),
            due_ms: schedule.due.timestamp_millis(),
            templates: held,
            sealed_reason: seal_ticket_note(&keys, tenant, &ticket_id, cmd.reason.as_str())
                .map_err(|_| Error::Internal("sealing the cancellation note failed"))?,
            ..TicketRecord::default()
        };
        self.store
            .create_ticket(&record, self.lifecycle.ticket_retention_ms)
            .await?;
        self.lifecycle.wake.notify_one();
        let stored = self.store.ticket(tenant.as_str(), &ticket_id).await?;
        Ok(stored.unwrap_or(record).into())
    }

    pub async fn deletion_ticket(&self, tenant: &Tenant, ticket_id: &str) -> Result<Ticket, Error> {
        if !is_valid_ticket_id(ticket_id) {
            return Err(InvalidInput::TicketId.into());
        }
        self.store
            .ticket(tenant.as_str(), ticket_id)
            .await?
            .map(Ticket::from)
            .ok_or(Error::TicketNotFound)
    }

    /// Runs due erasures (the deletion worker's step). Each claimed ticket is erased
    /// once; a claim whose worker dies expires and is taken by another.
    pub async fn run_due_deletions(&self, max: usize) -> Result<usize, Error> {
        let now = now_unix_ms();
        let claimed = self
            .store
            .claim_due(now, self.lifecycle.claim_ttl_ms, max)
            .await?;
        let mut done = 0;
        for (tenant, ticket_id) in claimed {
            match self.complete_cancellation(&tenant, &ticket_id).await {
                Ok(()) => done += 1,
                Err(error) => {
                    tracing::error!(%ticket_id, %error, "erasure failed; the claim expires and it is retried")
                }
            }
        }
        Ok(done)
    }

    async fn complete_cancellation(&self, tenant: &str, ticket_id: &str) -> Result<(), Error> {
        let Some(ticket) = self.store.ticket(tenant, ticket_id).await? else {
            tracing::error!(%ticket_id, "queued ticket has no record");
            return Ok(());
        };
        let tenant_id = Tenant::try_from(tenant)?;
        let subject_ref = SubjectRef::parse(&ticket.subject_ref).ok_or(Error::Integrity)?;
        self.store.count_erasure(tenant, ticket_id).await?;
        self.erase_everything(&tenant_id, &subject_ref).await?;
        let completed_at = now_unix_ms();
        let (body, signature) = self.receipt(
            ticket_id,
            &tenant_id,
            &subject_ref,
            ticket.requested_at_ms,
            ticket.deadline_ms,
            completed_at,
            vec![
                format!("templates:{}", ticket.templates),
                "consents".to_owned(),
                "lockout-counters".to_owned(),
                "replay-cache".to_owned(),
            ],
        );
        let first = self
            .store
            .complete_ticket(
                tenant,
                ticket_id,
                completed_at,
                &body,
                &signature,
                self.lifecycle.ticket_retention_ms,
            )
            .await?;
        if first {
            tracing::info!(%ticket_id, %subject_ref, "account cancellation erased");
        }
        Ok(())
    }

    /// Erases templates past the tenant's maximum age.
    pub async fn expire_templates(&self, max: usize) -> Result<usize, Error> {
        let now = now_unix_ms();
        let mut done = 0;
        for (tenant, _) in self.lifecycle.max_template_age.iter() {
            let keys = self.keyring.tenant(tenant)?;
            for (subject, template_id) in
                self.store.ledger_expired(tenant.as_str(), now, max).await?
            {
                let Some(subject_ref) = SubjectRef::parse(&subject) else {
                    continue;
                };
                self.expire_one(&keys, tenant, &subject_ref, &template_id)
                    .await?;
                done += 1;
            }
        }
        Ok(done)
    }

    async fn expire_one(
        &self,
        keys: &TenantKeys,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        template_id: &str,
    ) -> Result<(), Error> {
        let requested_at = now_unix_ms();
        let subject_keys = SubjectKeys::new(tenant, subject_ref);
        for _ in 0..REWRITE_ATTEMPTS {
            let stored = self.store.read_subject(&subject_keys).await?;
            let Some((_, bytes)) = stored.templates.iter().find(|(id, _)| id == template_id) else {
                break;
            };
            let mut purposes = BTreeSet::new();
            for (id, other) in stored.templates.iter().filter(|(id, _)| id != template_id) {
                let sealed =
                    SealedTemplate::decode(other.as_slice()).map_err(|_| Error::Integrity)?;
                let record = envelope::open_template(keys, tenant, subject_ref, id, sealed)?;
                if let Some(c) = record.consent.as_ref() {
                    purposes.extend(c.purposes.iter().cloned());
                }
            }
            let change = TemplateChange {
                template_id: template_id.to_owned(),
                expected: bytes.clone(),
                replacement: None,
            };
            match self
                .store
                .rewrite_templates(&subject_keys, &[change])
                .await?
            {
                None => continue,
                Some(0) => {
                    self.erase_everything(tenant, subject_ref).await?;
                }
                Some(_) => {
                    let purposes: Vec<String> = purposes.into_iter().collect();
                    self.store
                        .ledger_set_subject(tenant.as_str(), subject_ref.as_str(), &purposes)
                        .await?;
                }
            }
            self.completed_ticket(
                tenant,
                subject_ref,
                DeletionKind::Retention,
                requested_at,
                1,
                vec!["templates:1".to_owned()],
            )
            .await?;
            break;
        }
        self.store
            .ledger_unschedule_expiry(tenant.as_str(), subject_ref.as_str(), template_id)
            .await?;
        Ok(())
    }

    /// Removes every key of the subject and its entries in the ledger. Idempotent.
    async fn erase_everything(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
    ) -> Result<u64, Error> {
        let held = self
            .store
            .erase_subject(&SubjectKeys::new(tenant, subject_ref))
            .await?;
        for template_id in &held {
            self.store
                .ledger_unschedule_expiry(tenant.as_str(), subject_ref.as_str(), template_id)
                .await?;
        }
        self.store
            .ledger_forget_subject(tenant.as_str(), subject_ref.as_str())
            .await?;
        Ok(held.len() as u64)
    }

    #[allow(clippy::too_many_arguments)]
    async fn completed_ticket(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        kind: DeletionKind,
        requested_at: i64,
        templates: u64,
        erased: Vec<String>,
    ) -> Result<Ticket, Error> {
        let ticket_id = random_id()?;
        let completed_at = now_unix_ms();
        let (body, signature) = self.receipt(
            &ticket_id,
            tenant,
            subject_ref,
            requested_at,
            requested_at,
            completed_at,
            erased,
        );
        let record = TicketRecord {
            tenant: tenant.as_str().to_owned(),
            ticket_id,
            kind: kind.as_str().to_owned(),
            subject_ref: subject_ref.as_str().to_owned(),
            completed: true,
            requested_at_ms: requested_at,
            deadline_ms: requested_at,
            due_ms: requested_at,
            completed_at_ms: Some(completed_at),
            templates,
            sealed_reason: Vec::new(),
            receipt_body: body,
            receipt_signature: signature,
            erasures: 1,
        };
        self.store
            .create_ticket(&record, self.lifecycle.ticket_retention_ms)
            .await?;
        Ok(record.into())
    }

    #[allow(clippy::too_many_arguments)]
    fn receipt(
        &self,
        ticket_id: &str,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        requested_at: i64,
        deadline: i64,
        completed_at: i64,
        erased: Vec<String>,
    ) -> (Vec<u8>, Vec<u8>) {
        let body = crate::proto::ReceiptBody {
            ticket_id: ticket_id.to_owned(),
            tenant: tenant.as_str().to_owned(),
            subject_ref: subject_ref.as_str().to_owned(),
            requested_at: Some(timestamp(requested_at)),
            deadline: Some(timestamp(deadline)),
            completed_at: Some(timestamp(completed_at)),
            erased,
        }
        .encode_to_vec();
        let mut message = Vec::with_capacity(RECEIPT_CONTEXT.len() + body.len());
        message.extend_from_slice(RECEIPT_CONTEXT);
        message.extend_from_slice(&body);
        let signature = self.receipt_signer.sign(&message).as_ref().to_vec();
        (body, signature)
    }
}

/// Verifies a receipt offline against the published Ed25519 key.
pub fn verify_receipt(
    public_key: &[u8],
    receipt: &crate::proto::DeletionReceipt,
) -> Option<crate::proto::ReceiptBody> {
    let mut message = Vec::with_capacity(RECEIPT_CONTEXT.len() + receipt.body.len());
    message.extend_from_slice(RECEIPT_CONTEXT);
    message.extend_from_slice(&receipt.body);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(&message, &receipt.signature)
        .ok()?;
    crate::proto::ReceiptBody::decode(receipt.body.as_slice()).ok()
}

/// The inverse of `timestamp`, saturating rather than overflowing on absurd input.
pub fn unix_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000))
}

pub fn timestamp(unix_ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_ms.div_euclid(1000),
        nanos: (unix_ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}
