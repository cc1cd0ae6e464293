//! Erasure: delete now, withdraw consent, cancel the account (erased by the
//! statutory deadline by the deletion worker), retention expiry. Every erasure
//! yields a ticket with an Ed25519-signed receipt; tickets carry no biometric data
//! and are kept for the audit retention period.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use prost::Message as _;

use super::{Vault, now_unix_ms, random_id};
use crate::crypto::envelope::{self, SealedTemplate, seal_ticket_note};
use crate::crypto::keyring::SubjectRef;
use crate::domain::deletion::{CancelReason, DeletionKind};
use crate::domain::erasures::{Erasure, ErasureScope};
use crate::domain::{InvalidInput, Purpose, SubjectId, Tenant};
use crate::error::Error;
use crate::storage::deletions::{Completion, Pickup, TicketRecord};
use crate::storage::ledger::LedgerEntry;
use crate::storage::{StorageError, SubjectKeys, TemplateChange, Tombstone};

/// Intents and unmarked cancellations younger than this are left to the calls
/// still making them; older ones were cut short and the reconciler finishes them.
const INTENT_SETTLE_MS: i64 = 1_000;

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
    /// The deadline was counted without a published holiday schedule for some
    /// of its days: earlier than the official one or equal, never later.
    pub deadline_provisional: bool,
    pub completed_at_unix_ms: Option<i64>,
    pub receipt: Option<crate::proto::DeletionReceipt>,
    /// Set once every key epoch that could have wrapped the erased DEKs is retired.
    pub shredded_at_unix_ms: Option<i64>,
    pub shred_receipt: Option<crate::proto::DeletionReceipt>,
    /// The erasure event's inclusion proof, once a signed head covers it.
    pub erasure_proof: Option<crate::proto::InclusionProof>,
}

impl From<TicketRecord> for Ticket {
    fn from(t: TicketRecord) -> Self {
        let receipt = t.completed.then_some(crate::proto::DeletionReceipt {
            body: t.receipt_body,
            signature: t.receipt_signature,
        });
        let shred_receipt =
            (t.completed && t.shredded_at_ms.is_some()).then_some(crate::proto::DeletionReceipt {
                body: t.shred_body,
                signature: t.shred_signature,
            });
        Self {
            ticket_id: t.ticket_id,
            kind: DeletionKind::parse(&t.kind),
            subject_ref: t.subject_ref,
            requested_at_unix_ms: t.requested_at_ms,
            deadline_unix_ms: t.deadline_ms,
            deadline_provisional: t.deadline_provisional,
            completed_at_unix_ms: t.completed_at_ms.filter(|_| t.completed),
            receipt,
            shredded_at_unix_ms: t.shredded_at_ms.filter(|_| t.completed),
            shred_receipt,
            erasure_proof: None,
        }
    }
}

/// How often a process repeats that new deadlines are provisional.
const PROVISIONAL_WARNING_EVERY_MS: i64 = 10 * 60 * 1000;

/// Signed receipts are domain-separated from anything else the key signs.
pub const RECEIPT_CONTEXT: &[u8] = b"facevault/v1 receipt";

/// Attempts at a compare-and-set rewrite before giving up (a concurrent
/// enrollment of the same subject on every attempt).
pub(super) const REWRITE_ATTEMPTS: usize = 5;

pub fn is_valid_ticket_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What one erasure removed, for its receipt.
struct Erased {
    templates: u64,
    what: Vec<String>,
    /// What the erasure event states was erased: the re-wrap worker keeps no
    /// template this names (`domain::erasures`).
    scope: ErasureScope,
    /// Templates a withdrawal kept with fewer purposes: a copy of one from
    /// before it is dead too.
    narrowed: Vec<String>,
}

impl Vault {
    /// Erases everything held for the subject now: templates (with their DEKs,
    /// salts and consents) and counters.
    pub async fn delete_subject(
        &self,
        tenant: &Tenant,
        cmd: DeleteCommand,
    ) -> Result<Ticket, Error> {
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);
        let ticket = self
            .open_ticket(
                tenant,
                &subject_ref,
                DeletionKind::Delete,
                random_id()?,
                Vec::new(),
            )
            .await?;
        self.carry_out(ticket).await
    }

    /// Removes the purposes from every template's consent; templates left with no
    /// purpose are erased at once (and everything else of the subject with the last).
    pub async fn withdraw_consent(
        &self,
        tenant: &Tenant,
        cmd: WithdrawCommand,
    ) -> Result<Ticket, Error> {
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);
        let stored = self
            .store
            .read_subject(&SubjectKeys::new(tenant, &subject_ref))
            .await?;
        if stored.state.cancelled {
            return Err(Error::AccountCancelled);
        }
        if stored.templates.is_empty() {
            return Err(Error::NoTemplate);
        }
        let purposes = cmd.purposes.iter().map(|p| p.as_str().to_owned()).collect();
        let ticket = self
            .open_ticket(
                tenant,
                &subject_ref,
                DeletionKind::Withdraw,
                random_id()?,
                purposes,
            )
            .await?;
        self.carry_out(ticket).await
    }

    /// Makes the subject unusable at once and queues its erasure, due after the
    /// configured grace (at once by default) and at the latest by the end of the
    /// 15th working day. Cancelling again returns the same ticket.
    ///
    /// The ticket is written first and is the cancellation's intent: if the call
    /// stops before the subject is marked, the reconciler marks it.
    pub async fn cancel_account(
        &self,
        tenant: &Tenant,
        cmd: CancelCommand,
    ) -> Result<Ticket, Error> {
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);
        let ticket_id = keys.cancel_ticket_id(&subject_ref);
        match self.store.ticket(tenant.as_str(), &ticket_id).await? {
            Some(existing) if existing.completed => {
                return Ok(self.with_proven_shred(tenant, existing.into()).await);
            }
            Some(_) => {}
            None => {
                let requested_at = now_unix_ms();
                let schedule = self.schedule(requested_at)?;
                let record = TicketRecord {
                    tenant: tenant.as_str().to_owned(),
                    ticket_id: ticket_id.clone(),
                    kind: DeletionKind::Cancel.as_str().to_owned(),
                    subject_ref: subject_ref.as_str().to_owned(),
                    requested_at_ms: requested_at,
                    deadline_ms: schedule.deadline.timestamp_millis(),
                    deadline_provisional: schedule.provisional,
                    due_ms: schedule.due.timestamp_millis(),
                    sealed_reason: seal_ticket_note(&keys, tenant, &ticket_id, cmd.reason.as_str())
                        .map_err(|_| Error::Internal("sealing the cancellation note failed"))?,
                    ..TicketRecord::default()
                };
                self.store
                    .create_ticket(&record, Pickup::Queued, requested_at)
                    .await?;
            }
        }
        self.mark_cancelled(tenant, &subject_ref, &ticket_id)
            .await?;
        self.lifecycle.wake.notify_one();
        let ticket = self
            .store
            .ticket(tenant.as_str(), &ticket_id)
            .await?
            .map(Ticket::from)
            .ok_or(Error::Integrity)?;
        Ok(self.with_proven_shred(tenant, ticket).await)
    }

    /// Marks the subject of a cancellation ticket cancelled (idempotent) and
    /// records on the ticket what it held then.
    async fn mark_cancelled(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        ticket_id: &str,
    ) -> Result<(), Error> {
        let (_, held) = self
            .store
            .cancel_subject(&SubjectKeys::new(tenant, subject_ref), ticket_id)
            .await?;
        self.store
            .ticket_flagged(tenant.as_str(), ticket_id, held)
            .await?;
        Ok(())
    }

    /// The reconciler's step for cancellations: marks the subjects of tickets
    /// whose call stopped before it marked them.
    pub async fn finish_cancellations(&self, max: usize) -> Result<usize, Error> {
        let before = now_unix_ms() - INTENT_SETTLE_MS;
        let mut done = 0;
        for (tenant, ticket_id) in self.store.unflagged_tickets(before, max).await? {
            let Some(ticket) = self.store.ticket(&tenant, &ticket_id).await? else {
                continue;
            };
            let tenant = Tenant::try_from(tenant.as_str())?;
            let subject_ref = SubjectRef::parse(&ticket.subject_ref).ok_or(Error::Integrity)?;
            self.mark_cancelled(&tenant, &subject_ref, &ticket_id)
                .await?;
            done += 1;
        }
        Ok(done)
    }

    /// The reconciler's step for the ledger: finishes every change of a subject's
    /// templates that stopped before its ledger update.
    pub async fn finish_ledger_intents(&self, max: usize) -> Result<usize, Error> {
        let before = now_unix_ms() - INTENT_SETTLE_MS;
        let mut done = 0;
        for tenant in self.store.ledger_tenants().await? {
            let Ok(tenant) = Tenant::try_from(tenant.as_str()) else {
                continue;
            };
            for (subject, at) in self
                .store
                .ledger_intents(tenant.as_str(), before, max)
                .await?
            {
                let Some(subject_ref) = SubjectRef::parse(&subject) else {
                    tracing::error!("ledger intent names no valid pseudonym; skipped");
                    continue;
                };
                self.sync_ledger(&tenant, &subject_ref, Vec::new(), at)
                    .await?;
                done += 1;
            }
        }
        Ok(done)
    }

    /// Reads the subject's templates and makes the ledger say what they hold:
    /// subject count, consented purposes and retention schedule. The one way the
    /// ledger changes; `dropped` names templates known to be gone, and `intent`
    /// the intent (begun before the change) this update answers. If a newer
    /// change of the subject began meanwhile, its update wins.
    pub(super) async fn sync_ledger(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        dropped: Vec<String>,
        intent: i64,
    ) -> Result<(), Error> {
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let stored = self
            .store
            .read_subject(&SubjectKeys::new(tenant, subject_ref))
            .await?;
        let age = self.max_template_age(tenant);
        let mut purposes = BTreeSet::new();
        let mut expiries = Vec::new();
        for (template_id, bytes) in &stored.templates {
            let opened = SealedTemplate::decode(bytes.as_slice())
                .map_err(|_| Error::Integrity)
                .and_then(|sealed| {
                    Ok(envelope::open_template(
                        &keys,
                        tenant,
                        subject_ref,
                        template_id,
                        sealed,
                    )?)
                });
            // An unreadable template still counts as held: the ledger must not
            // under-count what is stored.
            let Ok(record) = opened else {
                tracing::error!(%subject_ref, "stored template failed to open; counted without purposes");
                continue;
            };
            if let Some(c) = record.consent.as_ref() {
                purposes.extend(c.purposes.iter().cloned());
            }
            if let Some(age) = age {
                expiries.push((
                    template_id.clone(),
                    record.enrolled_at_unix_ms + age.as_millis() as i64,
                ));
            }
        }
        let entry = LedgerEntry {
            purposes: purposes.into_iter().collect(),
            expiries,
            dropped,
            holds_templates: !stored.templates.is_empty(),
        };
        self.store
            .ledger_sync(
                tenant.as_str(),
                subject_ref.as_str(),
                &entry,
                intent,
                self.lifecycle.filing_threshold,
            )
            .await?;
        Ok(())
    }

    /// The ledger update that follows a change of the subject's templates. The
    /// change is done once its own write is: if this update fails, the change's
    /// intent stays and the reconciler makes it, so the call still reports what
    /// it did.
    pub(super) async fn finish_ledger(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        dropped: Vec<String>,
        intent: i64,
    ) {
        if let Err(error) = self.sync_ledger(tenant, subject_ref, dropped, intent).await {
            tracing::warn!(%error, "ledger update left to the reconciler");
        }
    }

    pub async fn deletion_ticket(&self, tenant: &Tenant, ticket_id: &str) -> Result<Ticket, Error> {
        if !is_valid_ticket_id(ticket_id) {
            return Err(InvalidInput::TicketId.into());
        }
        let mut ticket = self
            .store
            .ticket(tenant.as_str(), ticket_id)
            .await?
            .map(Ticket::from)
            .ok_or(Error::TicketNotFound)?;
        ticket.erasure_proof = self.erasure_proof(tenant, ticket.receipt.as_ref()).await;
        Ok(self.with_proven_shred(tenant, ticket).await)
    }

    /// The inclusion proof of the erasure event a receipt names, against its
    /// chain's latest signed head; none before a head covers it (or for
    /// receipts from before erasures were logged as their own events).
    async fn erasure_proof(
        &self,
        tenant: &Tenant,
        receipt: Option<&crate::proto::DeletionReceipt>,
    ) -> Option<crate::proto::InclusionProof> {
        let body = crate::proto::ReceiptBody::decode(receipt?.body.as_slice()).ok()?;
        if body.audit_chain_id.is_empty() {
            return None;
        }
        let location = crate::audit::EventLocation {
            chain_id: body.audit_chain_id,
            seq: body.audit_seq,
            hash: body.audit_event_hash,
        };
        let public = self.keys.current().receipt_public_key();
        match crate::audit::prove_inclusion(&self.store, &public, tenant, location, 0).await {
            Ok(inclusion) => Some(inclusion.to_proto()),
            Err(crate::audit::ProofError::NotYetHeaded) => None,
            Err(error) => {
                tracing::warn!(%error, "no inclusion proof for an erasure event");
                None
            }
        }
    }

    /// Records the erasure's own audit event and says where it landed, so the
    /// receipt can name it. Without a running audit writer (tools), none.
    async fn log_erasure(
        &self,
        tenant: &Tenant,
        ticket: &TicketRecord,
        kind: DeletionKind,
        erasure: &Erasure,
    ) -> Result<Option<crate::audit::EventLocation>, Error> {
        self.record_erasure(
            tenant,
            &ticket.subject_ref,
            ("facevault/deletion", &ticket.ticket_id),
            kind.as_str(),
            erasure,
        )
        .await
    }

    /// Records an `Erasure` event: `by` names the caller and the request id.
    pub(super) async fn record_erasure(
        &self,
        tenant: &Tenant,
        subject_ref: &str,
        by: (&str, &str),
        kind: &str,
        erasure: &Erasure,
    ) -> Result<Option<crate::audit::EventLocation>, Error> {
        let sink = self.lifecycle.audit.read().ok().and_then(|a| a.clone());
        let Some(sink) = sink else {
            return Ok(None);
        };
        let event = crate::proto::AuditEvent {
            event_id: crate::audit::new_event_id(),
            time: Some(timestamp(now_unix_ms())),
            tenant: tenant.as_str().to_owned(),
            caller: by.0.to_owned(),
            op: "Erasure".to_owned(),
            subject_ref: subject_ref.to_owned(),
            outcome: "allowed".to_owned(),
            code: "OK".to_owned(),
            request_id: by.1.to_owned(),
            detail: std::iter::once(kind.to_owned())
                .chain(erasure.detail_markers())
                .collect::<Vec<_>>()
                .join(", "),
            ..crate::proto::AuditEvent::default()
        };
        sink.record_located(tenant.clone(), event)
            .await
            .map(Some)
            .map_err(|_| Error::Unavailable(crate::storage::StorageError::unavailable()))
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
            let Some(ticket) = self.store.ticket(&tenant, &ticket_id).await? else {
                tracing::error!(%ticket_id, "queued ticket has no record");
                continue;
            };
            match self.carry_out(ticket).await {
                Ok(_) => done += 1,
                Err(error) => {
                    tracing::error!(%ticket_id, %error, "erasure failed; the claim expires and it is retried")
                }
            }
        }
        Ok(done)
    }

    /// Creates a pending ticket claimed by this call, which carries it out at
    /// once; if the call stops first, the claim expires and the deletion worker
    /// carries it out.
    pub(super) async fn open_ticket(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        kind: DeletionKind,
        ticket_id: String,
        scope: Vec<String>,
    ) -> Result<TicketRecord, Error> {
        let requested_at = now_unix_ms();
        let schedule = self.schedule(requested_at)?;
        let record = TicketRecord {
            tenant: tenant.as_str().to_owned(),
            ticket_id,
            kind: kind.as_str().to_owned(),
            subject_ref: subject_ref.as_str().to_owned(),
            requested_at_ms: requested_at,
            deadline_ms: schedule.deadline.timestamp_millis(),
            deadline_provisional: schedule.provisional,
            due_ms: requested_at,
            scope,
            ..TicketRecord::default()
        };
        self.store
            .create_ticket(
                &record,
                Pickup::ClaimedUntil(requested_at + self.lifecycle.claim_ttl_ms),
                requested_at,
            )
            .await?;
        Ok(record)
    }

    /// Carries out a pending ticket: erases what its kind says, then completes
    /// it with a signed receipt. Idempotent, so a ticket taken over from a call
    /// that stopped can be carried out again; the first completion wins.
    pub(super) async fn carry_out(&self, mut ticket: TicketRecord) -> Result<Ticket, Error> {
        let tenant = Tenant::try_from(ticket.tenant.as_str())?;
        let subject_ref = SubjectRef::parse(&ticket.subject_ref).ok_or(Error::Integrity)?;
        let kind = DeletionKind::parse(&ticket.kind).ok_or(Error::Integrity)?;
        self.store
            .count_erasure(tenant.as_str(), &ticket.ticket_id)
            .await?;
        // The completed ticket and a cancelled account's mark are kept as long
        // as each other.
        let kept_until = now_unix_ms() + self.lifecycle.ticket_retention_ms;
        // Taken before anything is erased: a whole erasure removes every
        // template enrolled before it (a later one may be a re-enrollment).
        let erasing_from = now_unix_ms();
        let erased = match kind {
            DeletionKind::Delete | DeletionKind::Cancel | DeletionKind::Decommission => {
                let tombstone = (kind == DeletionKind::Cancel).then(|| Tombstone {
                    ticket_id: ticket.ticket_id.clone(),
                    expires_unix_ms: kept_until,
                });
                let held = self
                    .erase_everything(&tenant, &subject_ref, tombstone.as_ref(), Vec::new())
                    .await?;
                // A cancellation records what the subject held when marked.
                let templates = held.max(ticket.templates);
                Erased {
                    templates,
                    what: vec![
                        format!("templates:{templates}"),
                        "consents".to_owned(),
                        "lockout-counters".to_owned(),
                    ],
                    scope: ErasureScope::Subject,
                    narrowed: Vec::new(),
                }
            }
            DeletionKind::Withdraw => {
                self.withdraw_purposes(&tenant, &subject_ref, &ticket.scope)
                    .await?
            }
            DeletionKind::Retention => {
                let template_id = ticket.scope.first().ok_or(Error::Integrity)?;
                self.expire_template(&tenant, &subject_ref, template_id)
                    .await?
            }
        };
        // The erasure is logged before its receipt names the event; a failed
        // log leaves the ticket pending, to be carried out again.
        let withdrawn = if erased.narrowed.is_empty() {
            Vec::new()
        } else {
            ticket.scope.clone()
        };
        let erasure = Erasure {
            narrowed: erased.narrowed,
            withdrawn,
            ..Erasure::of(erasing_from, erased.scope)
        };
        let logged = self.log_erasure(&tenant, &ticket, kind, &erasure).await?;
        let completed_at = now_unix_ms();
        // Every epoch in the keyring now could have wrapped these DEKs in some
        // copy of Redis (a DEK moves to newer epochs as it is re-wrapped);
        // epochs retired before now are unreadable already.
        let keys = self.keys.current();
        let key_epochs: Vec<u32> = keys.keyring.epochs().map(|(n, _)| n).collect();
        let shred_after_epoch = match keys.keyring.identity_bound_epoch() {
            Some(bound) if key_epochs.contains(&bound) => None,
            _ => key_epochs.iter().max().copied(),
        };
        let (body, signature) = self.receipt(
            &ticket.ticket_id,
            &tenant,
            &subject_ref,
            ticket.requested_at_ms,
            ticket.deadline_ms,
            completed_at,
            erased.what,
            key_epochs.clone(),
            logged,
        );
        let first = self
            .store
            .complete_ticket(
                tenant.as_str(),
                &ticket.ticket_id,
                &Completion {
                    subject_ref: &ticket.subject_ref,
                    completed_at_ms: completed_at,
                    receipt_body: &body,
                    receipt_signature: &signature,
                    expires_at_ms: kept_until,
                    key_epochs: &key_epochs,
                    shred_after_epoch,
                },
            )
            .await?;
        if !first {
            // Another run completed it first: its receipt is the one kept.
            let kept = self
                .store
                .ticket(tenant.as_str(), &ticket.ticket_id)
                .await?
                .map(Ticket::from)
                .ok_or(Error::Integrity)?;
            return Ok(self.with_proven_shred(&tenant, kept).await);
        }
        tracing::info!(ticket_id = %ticket.ticket_id, kind = kind.as_str(), templates = erased.templates, "erasure completed");
        ticket.completed = true;
        ticket.completed_at_ms = Some(completed_at);
        ticket.receipt_body = body;
        ticket.receipt_signature = signature;
        ticket.key_epochs = key_epochs;
        Ok(ticket.into())
    }

    /// Removes the purposes from every template's consent; templates left with
    /// none are erased, and everything else of the subject with the last.
    async fn withdraw_purposes(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        withdrawn: &[String],
    ) -> Result<Erased, Error> {
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let subject_keys = SubjectKeys::new(tenant, subject_ref);
        for _ in 0..REWRITE_ATTEMPTS {
            let stored = self.store.read_subject(&subject_keys).await?;
            let mut changes = Vec::new();
            let mut erased = 0u64;
            for (template_id, bytes) in stored.templates {
                let sealed =
                    SealedTemplate::decode(bytes.as_slice()).map_err(|_| Error::Integrity)?;
                let record =
                    envelope::open_template(&keys, tenant, subject_ref, &template_id, sealed)?;
                let Some(consent) = record.consent.as_ref() else {
                    return Err(Error::Integrity);
                };
                let kept: Vec<String> = consent
                    .purposes
                    .iter()
                    .filter(|p| !withdrawn.contains(p))
                    .cloned()
                    .collect();
                if kept.len() == consent.purposes.len() {
                    continue;
                }
                let replacement = if kept.is_empty() {
                    erased += 1;
                    None
                } else {
                    let mut updated = record.clone();
                    if let Some(c) = updated.consent.as_mut() {
                        c.purposes = kept;
                    }
                    let sealed = envelope::seal_template(
                        &keys,
                        tenant,
                        subject_ref,
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
            let mut what = vec![format!("templates:{erased}")];
            what.extend(withdrawn.iter().map(|p| format!("consent-purpose:{p}")));
            if changes.is_empty() {
                return Ok(Erased {
                    templates: 0,
                    what,
                    scope: ErasureScope::Templates(Vec::new()),
                    narrowed: Vec::new(),
                });
            }
            let intent = self
                .store
                .ledger_intend(tenant.as_str(), subject_ref.as_str(), now_unix_ms())
                .await?;
            let Some(held) = self
                .store
                .rewrite_templates(&subject_keys, &changes)
                .await?
            else {
                continue;
            };
            let (dropped, narrowed): (Vec<_>, Vec<_>) =
                changes.iter().partition(|c| c.replacement.is_none());
            let dropped: Vec<String> = dropped.into_iter().map(|c| c.template_id.clone()).collect();
            let narrowed: Vec<String> = narrowed
                .into_iter()
                .map(|c| c.template_id.clone())
                .collect();
            let scope = if held == 0 {
                self.erase_everything(tenant, subject_ref, None, dropped)
                    .await?;
                what.push("lockout-counters".to_owned());
                ErasureScope::Subject
            } else {
                self.finish_ledger(tenant, subject_ref, dropped.clone(), intent)
                    .await;
                ErasureScope::Templates(dropped)
            };
            return Ok(Erased {
                templates: erased,
                what,
                scope,
                narrowed,
            });
        }
        Err(Error::SubjectBusy)
    }

    /// Queues an erasure ticket for every template past its tenant's maximum age
    /// and carries it out. A bad entry is reported and skipped, and the sweep
    /// goes on; only storage being unreachable stops it.
    pub async fn expire_templates(&self, max: usize) -> Result<usize, Error> {
        let now = now_unix_ms();
        let mut done = 0;
        for (tenant, _) in self.lifecycle.max_template_age.iter() {
            let keys = self.keys.current().keyring.tenant(tenant)?;
            for (subject, template_id) in
                self.store.ledger_expired(tenant.as_str(), now, max).await?
            {
                let Some(subject_ref) = SubjectRef::parse(&subject) else {
                    tracing::error!("retention entry names no valid pseudonym; removed");
                    self.store
                        .ledger_unschedule_expiry(tenant.as_str(), &subject, &template_id)
                        .await?;
                    continue;
                };
                let ticket_id = keys.retention_ticket_id(&subject_ref, &template_id);
                let expired = match self.store.ticket(tenant.as_str(), &ticket_id).await? {
                    Some(existing) if existing.completed => {
                        self.store
                            .ledger_unschedule_expiry(tenant.as_str(), &subject, &template_id)
                            .await?;
                        continue;
                    }
                    Some(pending) => self.carry_out(pending).await,
                    None => {
                        let ticket = self
                            .open_ticket(
                                tenant,
                                &subject_ref,
                                DeletionKind::Retention,
                                ticket_id,
                                vec![template_id.clone()],
                            )
                            .await?;
                        self.carry_out(ticket).await
                    }
                };
                match expired {
                    Ok(_) => done += 1,
                    Err(
                        e @ Error::Unavailable(
                            StorageError::Unavailable(_) | StorageError::NotReplicated { .. },
                        ),
                    ) => return Err(e),
                    Err(error) => {
                        crate::telemetry::metrics().retention_skipped.add(1, &[]);
                        tracing::error!(%error, %subject_ref, "retention entry could not be carried out; skipped, the sweep goes on");
                        self.store
                            .ledger_unschedule_expiry(tenant.as_str(), &subject, &template_id)
                            .await?;
                    }
                }
            }
        }
        Ok(done)
    }

    /// Erases one template (and the rest of the subject if it was the last).
    async fn expire_template(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        template_id: &str,
    ) -> Result<Erased, Error> {
        let subject_keys = SubjectKeys::new(tenant, subject_ref);
        for _ in 0..REWRITE_ATTEMPTS {
            let stored = self.store.read_subject(&subject_keys).await?;
            let Some((_, bytes)) = stored.templates.iter().find(|(id, _)| id == template_id) else {
                let intent = self
                    .store
                    .ledger_intend(tenant.as_str(), subject_ref.as_str(), now_unix_ms())
                    .await?;
                self.finish_ledger(tenant, subject_ref, vec![template_id.to_owned()], intent)
                    .await;
                return Ok(Erased {
                    templates: 0,
                    what: vec!["templates:0".to_owned()],
                    scope: ErasureScope::Templates(vec![template_id.to_owned()]),
                    narrowed: Vec::new(),
                });
            };
            let change = TemplateChange {
                template_id: template_id.to_owned(),
                expected: bytes.clone(),
                replacement: None,
            };
            let intent = self
                .store
                .ledger_intend(tenant.as_str(), subject_ref.as_str(), now_unix_ms())
                .await?;
            let scope = match self
                .store
                .rewrite_templates(&subject_keys, &[change])
                .await?
            {
                None => continue,
                Some(0) => {
                    self.erase_everything(tenant, subject_ref, None, vec![template_id.to_owned()])
                        .await?;
                    ErasureScope::Subject
                }
                Some(_) => {
                    self.finish_ledger(tenant, subject_ref, vec![template_id.to_owned()], intent)
                        .await;
                    ErasureScope::Templates(vec![template_id.to_owned()])
                }
            };
            return Ok(Erased {
                templates: 1,
                what: vec!["templates:1".to_owned()],
                scope,
                narrowed: Vec::new(),
            });
        }
        Err(Error::SubjectBusy)
    }

    /// Removes every key of the subject (but what `storage::scripts::ERASE`
    /// keeps) and its entries in the ledger. Idempotent.
    /// `already_gone` names templates the caller removed just before, whose
    /// retention entries go with the rest (this update supersedes the caller's).
    pub(super) async fn erase_everything(
        &self,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        tombstone: Option<&Tombstone>,
        already_gone: Vec<String>,
    ) -> Result<u64, Error> {
        let intent = self
            .store
            .ledger_intend(tenant.as_str(), subject_ref.as_str(), now_unix_ms())
            .await?;
        let held = self
            .store
            .erase_subject(&SubjectKeys::new(tenant, subject_ref), tombstone)
            .await?;
        let count = held.len() as u64;
        let mut dropped = already_gone;
        dropped.extend(held);
        self.finish_ledger(tenant, subject_ref, dropped, intent)
            .await;
        Ok(count)
    }

    /// The statutory deadline and due time of an erasure requested now.
    fn schedule(&self, requested_at: i64) -> Result<crate::domain::deletion::Schedule, Error> {
        let requested = chrono::DateTime::from_timestamp_millis(requested_at)
            .ok_or(Error::Internal("clock"))?;
        let schedule = self
            .lifecycle
            .policy
            .schedule(requested)
            .map_err(|_| Error::Internal("deadline computation failed"))?;
        // Once per interval, not per ticket: a decommission opens one ticket
        // per subject, and the start-up check has already said it.
        let last = self.lifecycle.provisional_warned_ms.load(Ordering::Relaxed);
        if schedule.provisional
            && requested_at.saturating_sub(last) >= PROVISIONAL_WARNING_EVERY_MS
            && self
                .lifecycle
                .provisional_warned_ms
                .compare_exchange(last, requested_at, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                years = ?schedule.fallback_years,
                "no published holiday schedule for these years: the deadline is provisional (law-fixed holidays only, nearby weekends counted as working days; never later than the official one); add a holiday file"
            );
        }
        Ok(schedule)
    }

    /// Recounts the deadline of every pending ticket whose deadline was
    /// provisional, with the calendar loaded now (a holiday file may have
    /// published its years since). Returns how many tickets were restated.
    pub async fn restate_provisional_deadlines(&self) -> Result<u64, Error> {
        let mut restated = 0;
        for (tenant, ticket_id) in self.store.pending_tickets(256).await? {
            let Some(ticket) = self.store.ticket(&tenant, &ticket_id).await? else {
                continue;
            };
            if ticket.completed || !ticket.deadline_provisional {
                continue;
            }
            // The policy directly: `schedule` would warn once per ticket.
            let requested = chrono::DateTime::from_timestamp_millis(ticket.requested_at_ms)
                .ok_or(Error::Internal("clock"))?;
            let schedule = self
                .lifecycle
                .policy
                .schedule(requested)
                .map_err(|_| Error::Internal("deadline computation failed"))?;
            let deadline_ms = schedule.deadline.timestamp_millis();
            if deadline_ms == ticket.deadline_ms && schedule.provisional {
                continue;
            }
            if !self
                .store
                .restate_deadline(&tenant, &ticket_id, deadline_ms, schedule.provisional)
                .await?
            {
                continue;
            }
            restated += 1;
            if deadline_ms > ticket.deadline_ms {
                // The provisional deadline is the one first stated; moving past
                // it must be explained.
                tracing::warn!(
                    ticket_id = %ticket_id,
                    first_stated_unix_ms = ticket.deadline_ms,
                    deadline_unix_ms = deadline_ms,
                    provisional = schedule.provisional,
                    "deadline moved later than first stated: the published holiday schedule has more holidays or fewer working weekends than the provisional count assumed"
                );
            } else {
                tracing::info!(
                    ticket_id = %ticket_id,
                    first_stated_unix_ms = ticket.deadline_ms,
                    deadline_unix_ms = deadline_ms,
                    provisional = schedule.provisional,
                    "provisional deadline recounted with the published holiday schedule"
                );
            }
        }
        Ok(restated)
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
        key_epochs: Vec<u32>,
        logged: Option<crate::audit::EventLocation>,
    ) -> (Vec<u8>, Vec<u8>) {
        let logged = logged.unwrap_or(crate::audit::EventLocation {
            chain_id: String::new(),
            seq: 0,
            hash: Vec::new(),
        });
        let body = crate::proto::ReceiptBody {
            ticket_id: ticket_id.to_owned(),
            tenant: tenant.as_str().to_owned(),
            subject_ref: subject_ref.as_str().to_owned(),
            requested_at: Some(timestamp(requested_at)),
            deadline: Some(timestamp(deadline)),
            completed_at: Some(timestamp(completed_at)),
            erased,
            key_epochs,
            audit_chain_id: logged.chain_id,
            audit_seq: logged.seq,
            audit_event_hash: logged.hash,
        }
        .encode_to_vec();
        let signature = self.sign_statement(RECEIPT_CONTEXT, &body);
        (body, signature)
    }

    /// Ed25519 over `context || body` with the receipt key in use now.
    pub(super) fn sign_statement(&self, context: &[u8], body: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(context.len() + body.len());
        message.extend_from_slice(context);
        message.extend_from_slice(body);
        self.keys
            .current()
            .receipt_signer
            .sign(&message)
            .as_ref()
            .to_vec()
    }
}

/// Verifies a receipt offline against the published Ed25519 key.
pub fn verify_receipt(
    public_key: &[u8],
    receipt: &crate::proto::DeletionReceipt,
) -> Option<crate::proto::ReceiptBody> {
    verify_statement(public_key, RECEIPT_CONTEXT, receipt)
}

/// Checks `signature` over `context || body` and decodes the body.
pub(super) fn verify_statement<M: prost::Message + Default>(
    public_key: &[u8],
    context: &[u8],
    statement: &crate::proto::DeletionReceipt,
) -> Option<M> {
    let mut message = Vec::with_capacity(context.len() + statement.body.len());
    message.extend_from_slice(context);
    message.extend_from_slice(&statement.body);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(&message, &statement.signature)
        .ok()?;
    M::decode(statement.body.as_slice()).ok()
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
