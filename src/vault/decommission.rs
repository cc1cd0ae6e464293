//! A tenant stops using face recognition: it is refused for new work at once,
//! every subject is erased through the deletion queue, and a signed
//! tenant-level receipt closes it.
//!
//! Refusal: an enrollment records its ledger intent in a script that refuses
//! once the decommission record exists (same hash slot), so no enrollment
//! begins after it; enrollments and verifications are also refused up front
//! from a per-process set, which other replicas refresh on every deletion
//! worker round (`deletion.poll_interval_ms`).
//!
//! Erasure: each worker round takes a random sample of the tenant's ledger
//! and erases each subject under a ticket whose id is derived from the
//! subject, so replicas that pick the same subject share its ticket and a
//! sweep cut short resumes where the ledger stands. The decommission completes only when the ledger
//! holds no subject and no change under way, checked in one script.

use chrono::DateTime;
use prost::Message as _;

use super::lifecycle::verify_statement;
use super::{Vault, now_unix_ms, timestamp};
use crate::crypto::envelope::{
    DecommissionReason, EnvelopeError, open_decommission_reason, seal_decommission_reason,
};
use crate::crypto::keyring::SubjectRef;
use crate::domain::Tenant;
use crate::domain::deletion::{CancelReason, DeletionKind};
use crate::error::Error;
use crate::storage::decommission::{DecommissionCompletion, DecommissionRecord};

/// Signed decommission receipts are domain-separated from anything else the
/// key signs.
pub const DECOMMISSION_CONTEXT: &[u8] = b"facevault/v1 decommission-receipt";
pub const DECOMMISSION_STATEMENT: &str = "every subject of the tenant is erased";
/// A processor that stops using face recognition cancels its filing and deals
/// with the data within 30 working days (2025 measures).
pub const DECOMMISSION_WORKING_DAYS: u32 = 30;

/// A tenant's decommission as callers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantDecommission {
    pub tenant: String,
    pub completed: bool,
    pub requested_at_unix_ms: i64,
    pub deadline_unix_ms: i64,
    pub deadline_provisional: bool,
    /// Opened for the tenant's admin only; `None` in every other view.
    pub reason: Option<DecommissionReason>,
    pub subjects_total: u64,
    pub subjects_erased: u64,
    pub completed_at_unix_ms: Option<i64>,
    pub receipt: Option<crate::proto::DeletionReceipt>,
}

impl Vault {
    /// Records the caller's tenant's decommission, or returns the one recorded.
    pub async fn decommission_tenant(
        &self,
        tenant: &Tenant,
        reason: CancelReason,
    ) -> Result<TenantDecommission, Error> {
        if let Some(existing) = self.tenant_decommission_with_reason(tenant).await? {
            return Ok(existing);
        }
        let requested_at = now_unix_ms();
        let (deadline, provisional) =
            self.working_days_after(requested_at, DECOMMISSION_WORKING_DAYS)?;
        // Free text may name a person whatever the API says: Redis gets it
        // sealed under the tenant KEK, like a cancellation note.
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let sealed_reason = seal_decommission_reason(
            &keys,
            tenant,
            requested_at,
            &DecommissionReason::new(reason.as_str())?,
        )?;
        let created = self
            .store
            .start_decommission(&DecommissionRecord {
                tenant: tenant.as_str().to_owned(),
                requested_at_ms: requested_at,
                deadline_ms: deadline,
                deadline_provisional: provisional,
                sealed_reason,
                ..DecommissionRecord::default()
            })
            .await?;
        self.refuse_tenant(tenant.as_str());
        if created {
            tracing::warn!(
                tenant = tenant.as_str(),
                "tenant decommissioned: refused for new work; its subjects are being erased"
            );
        }
        self.lifecycle.wake.notify_one();
        self.tenant_decommission_with_reason(tenant)
            .await?
            .ok_or(Error::Integrity)
    }

    /// The tenant's decommission without its reason (compliance and
    /// deployment reports).
    pub async fn tenant_decommission(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<TenantDecommission>, Error> {
        let Some(record) = self.store.decommission(tenant.as_str()).await? else {
            return Ok(None);
        };
        let remaining = self.remaining(tenant, &record).await?;
        Ok(Some(view(record, remaining, None)))
    }

    /// The tenant's decommission with its reason opened: for the tenant's
    /// admin only.
    pub async fn tenant_decommission_with_reason(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<TenantDecommission>, Error> {
        let Some(record) = self.store.decommission(tenant.as_str()).await? else {
            return Ok(None);
        };
        let remaining = self.remaining(tenant, &record).await?;
        let reason = self.open_reason(tenant, &record)?;
        Ok(Some(view(record, remaining, reason)))
    }

    async fn remaining(&self, tenant: &Tenant, record: &DecommissionRecord) -> Result<u64, Error> {
        if record.completed {
            return Ok(0);
        }
        Ok(self.store.ledger_tenant_subjects(tenant.as_str()).await?)
    }

    /// Opens the record's sealed reason. A reason that does not open under
    /// the tenant's keys was edited or moved in Redis: refused (never shown,
    /// never signed). One sealed under a retired key epoch is shredded with
    /// it: `None`. A record from before reasons were sealed has none, and is
    /// never acted on (`decommission_step`).
    fn open_reason(
        &self,
        tenant: &Tenant,
        record: &DecommissionRecord,
    ) -> Result<Option<DecommissionReason>, Error> {
        if record.sealed_reason.is_empty() {
            if record.legacy_reason.is_some() {
                return Ok(None);
            }
            // Every record since reasons were sealed has one: deleted in Redis.
            return Err(self.unreadable_reason(tenant));
        }
        let keys = self.keys.current().keyring.tenant(tenant)?;
        match open_decommission_reason(&keys, tenant, record.requested_at_ms, &record.sealed_reason)
        {
            Ok(reason) => Ok(Some(reason)),
            Err(EnvelopeError::UnknownKekVersion) => {
                tracing::info!(
                    tenant = tenant.as_str(),
                    "decommission reason sealed under a retired key epoch: no longer readable"
                );
                Ok(None)
            }
            Err(_) => Err(self.unreadable_reason(tenant)),
        }
    }

    fn unreadable_reason(&self, tenant: &Tenant) -> Error {
        tracing::error!(
            tenant = tenant.as_str(),
            "decommission reason missing or not opening under the tenant's keys: deleted, edited or moved in Redis; refused"
        );
        crate::telemetry::metrics().integrity_refused.add(
            1,
            &[opentelemetry::KeyValue::new("what", "decommission-reason")],
        );
        Error::Integrity
    }

    /// Every tenant's decommission, without reasons, for the deployment report.
    pub async fn tenant_decommissions(&self) -> Result<Vec<TenantDecommission>, Error> {
        let mut out = Vec::new();
        for name in self.store.decommissioned_tenants().await? {
            let tenant = Tenant::try_from(name.as_str())?;
            if let Some(d) = self.tenant_decommission(&tenant).await? {
                out.push(d);
            }
        }
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        Ok(out)
    }

    /// Refused for enrollment and verification in this process.
    pub fn is_decommissioned(&self, tenant: &Tenant) -> bool {
        self.lifecycle
            .decommissioned
            .read()
            .is_ok_and(|set| set.contains(tenant.as_str()))
    }

    fn refuse_tenant(&self, tenant: &str) {
        if let Ok(mut set) = self.lifecycle.decommissioned.write() {
            set.insert(tenant.to_owned());
        }
    }

    /// One round of the deletion worker: refreshes the refused set, erases up
    /// to `max` subjects of each tenant being decommissioned, and completes a
    /// decommission whose ledger is empty. Returns the subjects erased.
    pub async fn decommission_step(&self, max: usize) -> Result<usize, Error> {
        let tenants = self.store.decommissioned_tenants().await?;
        let mut erased = 0;
        for name in tenants {
            let Ok(tenant) = Tenant::try_from(name.as_str()) else {
                tracing::error!("the decommission set names no valid tenant; skipped");
                continue;
            };
            let Some(record) = self.store.decommission(&name).await? else {
                continue;
            };
            // Only a decommission the service recorded is acted on: its sealed
            // reason opens under the tenant's keys, bound to the tenant and the
            // request time. A record written in Redis (or from before reasons
            // were sealed) blocks nothing, erases nothing and is never signed.
            if record.sealed_reason.is_empty() {
                self.unreadable_reason(&tenant);
                self.log_refused_receipt(&tenant).await;
                continue;
            }
            if self.open_reason(&tenant, &record).is_err() {
                self.log_refused_receipt(&tenant).await;
                continue;
            }
            self.refuse_tenant(&name);
            if record.completed {
                continue;
            }
            let keys = self.keys.current().keyring.tenant(&tenant)?;
            // Erased subjects leave the set, so every round takes a fresh
            // sample: no cursor to keep, and nothing skipped.
            let page = self.store.ledger_subjects_sample(&name, max).await?;
            if page.is_empty() {
                self.complete_decommission(&tenant, &record).await?;
                continue;
            }
            for subject in page {
                let Some(subject_ref) = SubjectRef::parse(&subject) else {
                    // Redis's word: skipped, so it stalls no other subject.
                    tracing::error!(tenant = %name, "ledger entry names no valid pseudonym; skipped");
                    continue;
                };
                let ticket_id = keys.decommission_ticket_id(&subject_ref);
                let ticket = match self.store.ticket(&name, &ticket_id).await? {
                    Some(ticket) => ticket,
                    None => {
                        self.open_ticket(
                            &tenant,
                            &subject_ref,
                            DeletionKind::Decommission,
                            ticket_id,
                            Vec::new(),
                        )
                        .await?
                    }
                };
                self.carry_out(ticket).await?;
                erased += 1;
            }
        }
        Ok(erased)
    }

    /// Records in the tenant's audit log that its receipt was refused: once
    /// per tenant and process, so a Redis writer cannot flood the log with it
    /// (every round still logs and counts it, in `open_reason`).
    async fn log_refused_receipt(&self, tenant: &Tenant) {
        static REPORTED: std::sync::Mutex<std::collections::BTreeSet<String>> =
            std::sync::Mutex::new(std::collections::BTreeSet::new());
        if !REPORTED
            .lock()
            .is_ok_and(|mut seen| seen.insert(tenant.as_str().to_owned()))
        {
            return;
        }
        let sink = self.lifecycle.audit.read().ok().and_then(|a| a.clone());
        let Some(sink) = sink else {
            return;
        };
        let event = crate::proto::AuditEvent {
            event_id: crate::audit::new_event_id(),
            time: Some(timestamp(now_unix_ms())),
            tenant: tenant.as_str().to_owned(),
            caller: "facevault/deletion".to_owned(),
            op: "DecommissionReceipt".to_owned(),
            outcome: "refused".to_owned(),
            code: "DATA_LOSS".to_owned(),
            detail: "reason-unreadable".to_owned(),
            ..crate::proto::AuditEvent::default()
        };
        if let Err(error) = sink.record(tenant.clone(), event).await {
            tracing::warn!(%error, "refused decommission receipt not audited");
        }
    }

    async fn complete_decommission(
        &self,
        tenant: &Tenant,
        record: &DecommissionRecord,
    ) -> Result<(), Error> {
        // The receipt signs the reason's commitment, taken from the sealed
        // record only once it opens. An edited or moved reason is refused:
        // nothing is signed, the decommission stays in progress (its erasures
        // are done; only the receipt waits), and other tenants go on.
        let reason_hmac = match self.open_reason(tenant, record) {
            Ok(reason) => reason.map(|r| r.commitment()).unwrap_or_default(),
            Err(_) => {
                self.log_refused_receipt(tenant).await;
                return Ok(());
            }
        };
        let completed_at = now_unix_ms();
        let key_epochs: Vec<u32> = self
            .keys
            .current()
            .keyring
            .epochs()
            .map(|(n, _)| n)
            .collect();
        let body = crate::proto::DecommissionReceiptBody {
            tenant: tenant.as_str().to_owned(),
            reason: String::new(),
            requested_at: Some(timestamp(record.requested_at_ms)),
            deadline: Some(timestamp(record.deadline_ms)),
            completed_at: Some(timestamp(completed_at)),
            subjects_erased: record.subjects_total,
            key_epochs,
            statement: DECOMMISSION_STATEMENT.to_owned(),
            reason_hmac,
        }
        .encode_to_vec();
        let signature = self.sign_statement(DECOMMISSION_CONTEXT, &body);
        match self
            .store
            .complete_decommission(tenant.as_str(), completed_at, &body, &signature)
            .await?
        {
            DecommissionCompletion::Completed => {
                tracing::info!(
                    tenant = tenant.as_str(),
                    subjects = record.subjects_total,
                    "tenant decommission completed"
                );
            }
            DecommissionCompletion::AlreadyCompleted => {}
            // A change begun before the decommission is still being
            // finished (the reconciler does it); the next round completes.
            DecommissionCompletion::NotEmpty => {}
        }
        Ok(())
    }

    /// The end of the `days`-th working day after `requested_at_ms`, and
    /// whether a year without a published schedule decided it.
    pub(super) fn working_days_after(
        &self,
        requested_at_ms: i64,
        days: u32,
    ) -> Result<(i64, bool), Error> {
        let requested =
            DateTime::from_timestamp_millis(requested_at_ms).ok_or(Error::Internal("clock"))?;
        let deadline = self
            .lifecycle
            .policy
            .calendar()
            .deadline(requested, days)
            .map_err(|_| Error::Internal("deadline computation failed"))?;
        Ok((deadline.at.timestamp_millis(), deadline.provisional))
    }
}

fn view(
    record: DecommissionRecord,
    remaining: u64,
    reason: Option<DecommissionReason>,
) -> TenantDecommission {
    let completed = record.completed;
    TenantDecommission {
        subjects_erased: if completed {
            record.subjects_total
        } else {
            record.subjects_total.saturating_sub(remaining)
        },
        receipt: completed.then_some(crate::proto::DeletionReceipt {
            body: record.receipt_body,
            signature: record.receipt_signature,
        }),
        tenant: record.tenant,
        completed,
        requested_at_unix_ms: record.requested_at_ms,
        deadline_unix_ms: record.deadline_ms,
        deadline_provisional: record.deadline_provisional,
        reason,
        subjects_total: record.subjects_total,
        completed_at_unix_ms: record.completed_at_ms.filter(|_| completed),
    }
}

/// Verifies a decommission receipt offline against the published Ed25519 key.
pub fn verify_decommission_receipt(
    public_key: &[u8],
    receipt: &crate::proto::DeletionReceipt,
) -> Option<crate::proto::DecommissionReceiptBody> {
    verify_statement(public_key, DECOMMISSION_CONTEXT, receipt)
}
