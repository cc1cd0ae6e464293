//! Key epochs as use cases: re-wrapping DEKs to the active epoch, counting what
//! each epoch still wraps, the shred statement once the epochs an erasure could
//! have used are all retired, and the epoch status that the compliance report
//! and the metrics show.

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt as _;
use prost::Message as _;

use super::lifecycle::verify_statement;
use super::{Vault, now_unix_ms, timestamp};
use crate::crypto::envelope::{self, SealedTemplate};
use crate::crypto::keyring::SubjectRef;
use crate::domain::Tenant;
use crate::domain::erasures::ErasureIndex;
use crate::error::Error;
use crate::storage::{Store, SubjectKeys, TemplateChange};

/// Shred statements are domain-separated from receipts and checkpoints.
pub const SHRED_CONTEXT: &[u8] = b"facevault/v1 shred-receipt";
pub const SHRED_STATEMENT: &str = "copies made before completed_at are unreadable";

/// Subjects read at once by a walk.
const WALK_CONCURRENCY: usize = 16;

/// What each epoch still wraps, counted from the templates themselves.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DekCensus {
    /// DEKs per epoch number.
    pub by_epoch: BTreeMap<u32, u64>,
    /// Subjects read.
    pub subjects: u64,
    /// Stored templates that are not a readable record at all.
    pub corrupt: u64,
}

/// One page of the re-wrap walk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RewrapPage {
    /// The cursor to resume from; 0 when the tenant's walk is done.
    pub next_cursor: u64,
    /// DEKs read.
    pub visited: u64,
    /// DEKs found under another epoch and moved to the active one.
    pub rewrapped: u64,
    /// DEKs found under another epoch and left (their epoch is not in the
    /// keyring, or the subject kept changing): they keep the old epoch in use.
    pub left: u64,
    /// Templates deleted instead: restored copies of erased data
    /// (`resurrection-refused`).
    pub refused: u64,
}

/// What re-wrapping one subject did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SubjectRewrap {
    pub visited: u64,
    pub rewrapped: u64,
    pub left: u64,
    pub refused: u64,
}

/// The oldest epoch, and by when it must be retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStatus {
    pub oldest_epoch: u32,
    pub active_epoch: u32,
    pub retire_by_unix_ms: Option<i64>,
    pub overdue: bool,
    pub oldest_age_days: u64,
}

/// Counts the DEKs each epoch wraps, across every tenant's subjects (the ledger,
/// and subjects whose change is under way). Every command names one slot, so
/// on a Redis Cluster it counts across all primaries.
pub async fn dek_census(store: &Store) -> Result<DekCensus, Error> {
    let mut census = DekCensus::default();
    for tenant in store.ledger_tenants().await? {
        let Ok(tenant) = Tenant::try_from(tenant.as_str()) else {
            continue;
        };
        // SSCAN may repeat a member; each subject is counted once.
        let mut seen: HashSet<String> = store
            .ledger_intents(tenant.as_str(), i64::MAX, 1_000_000)
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let mut pending: Vec<String> = seen.iter().cloned().collect();
        let mut cursor = 0;
        loop {
            let (next, page) = store
                .ledger_subjects_page(tenant.as_str(), cursor, 500)
                .await?;
            pending.extend(page.into_iter().filter(|s| seen.insert(s.clone())));
            let reads = futures::stream::iter(pending.drain(..).filter_map(|s| {
                let subject = SubjectRef::parse(&s)?;
                let keys = SubjectKeys::new(&tenant, &subject);
                Some(async move { store.read_subject(&keys).await })
            }))
            .buffer_unordered(WALK_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
            for stored in reads {
                census.subjects += 1;
                for (_, bytes) in stored?.templates {
                    match SealedTemplate::decode(bytes.as_slice()) {
                        Ok(sealed) => *census.by_epoch.entry(sealed.kek_version).or_default() += 1,
                        Err(_) => census.corrupt += 1,
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(census)
}

impl Vault {
    /// Re-wraps, under the active epoch, every DEK of one page of the tenant's
    /// subjects that is under another epoch. The template ciphertext is left as
    /// it is; the write is a compare-and-set, so a concurrent enroll or erase
    /// wins and the subject is read again.
    ///
    /// `erasures` is the tenant's verified erasure history: a template it says
    /// was erased is deleted, never carried into the new epoch.
    pub async fn rewrap_page(
        &self,
        tenant: &Tenant,
        cursor: u64,
        count: usize,
        erasures: &ErasureIndex,
    ) -> Result<RewrapPage, Error> {
        let (next_cursor, subjects) = self
            .store
            .ledger_subjects_page(tenant.as_str(), cursor, count)
            .await?;
        let subjects: Vec<SubjectRef> = subjects
            .iter()
            .filter_map(|s| SubjectRef::parse(s))
            .collect();
        let mut page = RewrapPage {
            next_cursor,
            ..RewrapPage::default()
        };
        for chunk in subjects.chunks(WALK_CONCURRENCY) {
            let results = futures::future::join_all(
                chunk
                    .iter()
                    .map(|s| self.rewrap_subject(tenant, s, erasures)),
            )
            .await;
            for result in results {
                let done = result?;
                page.visited += done.visited;
                page.rewrapped += done.rewrapped;
                page.left += done.left;
                page.refused += done.refused;
            }
        }
        Ok(page)
    }

    /// Re-wraps one subject's DEKs to the active epoch. A subject the erasure
    /// history names has every template opened (whatever its epoch: one may
    /// have been re-wrapped while its erasure's event was still on its way) and
    /// each one enrolled before a verified erasure that covers it is deleted.
    pub async fn rewrap_subject(
        &self,
        tenant: &Tenant,
        subject: &SubjectRef,
        erasures: &ErasureIndex,
    ) -> Result<SubjectRewrap, Error> {
        let keys = SubjectKeys::new(tenant, subject);
        let tenant_keys = self.keys.current().keyring.tenant(tenant)?;
        let active = tenant_keys.active_kek().0;
        let named = erasures.names(subject.as_str());
        let mut visited = 0;
        for _ in 0..super::lifecycle::REWRITE_ATTEMPTS {
            let stored = self.store.read_subject(&keys).await?;
            visited = stored.templates.len() as u64;
            let mut changes = Vec::new();
            let mut refused = Vec::new();
            let mut left = 0;
            for (template_id, bytes) in stored.templates {
                let Ok(sealed) = SealedTemplate::decode(bytes.as_slice()) else {
                    left += 1;
                    continue;
                };
                if named {
                    // Authenticated: `enrolled_at` is inside the template's AEAD.
                    let enrolled_at = envelope::open_template(
                        &tenant_keys,
                        tenant,
                        subject,
                        &template_id,
                        sealed.clone(),
                    )
                    .map(|r| r.enrolled_at_unix_ms);
                    if let Some(erased_at) = enrolled_at
                        .ok()
                        .and_then(|at| erasures.erased_at(subject.as_str(), &template_id, at))
                    {
                        refused.push((template_id.clone(), sealed.kek_version, erased_at));
                        changes.push(TemplateChange {
                            template_id,
                            expected: bytes,
                            replacement: None,
                        });
                        continue;
                    }
                }
                if sealed.kek_version == active {
                    continue;
                }
                match envelope::rewrap(&tenant_keys, tenant, subject, &template_id, sealed) {
                    Ok(rewrapped) => changes.push(TemplateChange {
                        template_id,
                        expected: bytes,
                        replacement: Some(rewrapped.encode_to_vec()),
                    }),
                    Err(error) => {
                        tracing::warn!(%error, %subject, "a stored DEK cannot be re-wrapped; it stays under its epoch");
                        left += 1;
                    }
                }
            }
            if changes.is_empty() {
                return Ok(SubjectRewrap {
                    visited,
                    left,
                    ..SubjectRewrap::default()
                });
            }
            let rewrapped = (changes.len() - refused.len()) as u64;
            let intent = if refused.is_empty() {
                None
            } else {
                Some(
                    self.store
                        .ledger_intend(tenant.as_str(), subject.as_str(), now_unix_ms())
                        .await?,
                )
            };
            let Some(held) = self.store.rewrite_templates(&keys, &changes).await? else {
                continue;
            };
            crate::telemetry::metrics().rewrapped.add(rewrapped, &[]);
            if let Some(intent) = intent {
                self.refused_resurrection(tenant, subject, &refused, held, intent)
                    .await?;
            }
            return Ok(SubjectRewrap {
                visited,
                rewrapped,
                left,
                refused: refused.len() as u64,
            });
        }
        Ok(SubjectRewrap {
            visited,
            left: visited,
            ..SubjectRewrap::default()
        })
    }

    /// After restored copies of erased templates were deleted: the ledger
    /// follows (the rest of the subject goes too if nothing is left), and each
    /// is said: a log line (pseudonym only), a metric and an audit event.
    async fn refused_resurrection(
        &self,
        tenant: &Tenant,
        subject: &SubjectRef,
        refused: &[(String, u32, i64)],
        held: u64,
        intent: i64,
    ) -> Result<(), Error> {
        let dropped: Vec<String> = refused.iter().map(|(id, _, _)| id.clone()).collect();
        if held == 0 {
            self.erase_everything(tenant, subject, None, dropped)
                .await?;
        } else {
            self.finish_ledger(tenant, subject, dropped, intent).await;
        }
        crate::telemetry::metrics()
            .resurrections_refused
            .add(refused.len() as u64, &[]);
        for (template_id, epoch, erased_at) in refused {
            tracing::warn!(%subject, epoch, erased_at_unix_ms = erased_at, "a stored template was enrolled before a verified erasure of its subject (a restored copy): deleted, not re-wrapped");
            self.log_key_event(
                tenant,
                subject.as_str(),
                "FAILED_PRECONDITION",
                format!("resurrection-refused, template:{template_id}, epoch:{epoch}, erased-from:{erased_at}"),
            )
            .await?;
        }
        Ok(())
    }

    /// Records an event of the re-wrap worker (caller `facevault/rewrap`, op
    /// `KeyRewrap`, outcome `refused`). Without a running audit writer (tools),
    /// none.
    pub async fn log_key_event(
        &self,
        tenant: &Tenant,
        subject_ref: &str,
        code: &str,
        detail: String,
    ) -> Result<(), Error> {
        let sink = self.lifecycle.audit.read().ok().and_then(|a| a.clone());
        let Some(sink) = sink else {
            return Ok(());
        };
        let event = crate::proto::AuditEvent {
            event_id: crate::audit::new_event_id(),
            time: Some(timestamp(now_unix_ms())),
            tenant: tenant.as_str().to_owned(),
            caller: "facevault/rewrap".to_owned(),
            op: "KeyRewrap".to_owned(),
            subject_ref: subject_ref.to_owned(),
            outcome: "refused".to_owned(),
            code: code.to_owned(),
            detail,
            ..crate::proto::AuditEvent::default()
        };
        sink.record(tenant.clone(), event)
            .await
            .map_err(|_| Error::Unavailable(crate::storage::StorageError::unavailable()))
    }

    /// Adds the shred statement to completed tickets whose key epochs have all
    /// been retired. Returns how many gained one.
    pub async fn shred_retired(&self, max: usize) -> Result<usize, Error> {
        let oldest = self.keys.current().keyring.oldest_epoch();
        let mut done = 0;
        for (tenant, ticket_id) in self.store.shreddable_tickets(oldest, max).await? {
            let Some(ticket) = self.store.ticket(&tenant, &ticket_id).await? else {
                // Expired with its retention: forget it.
                self.store
                    .forget_shred_candidate(&tenant, &ticket_id)
                    .await?;
                continue;
            };
            // The index says every epoch is older than the oldest present; the
            // ticket's own list is checked again before anything is signed.
            let present: Vec<u32> = self
                .keys
                .current()
                .keyring
                .epochs()
                .map(|(n, _)| n)
                .collect();
            if !ticket.completed
                || ticket.key_epochs.is_empty()
                || ticket.key_epochs.iter().any(|e| present.contains(e))
            {
                // The index and the ticket disagree (damaged, or written by
                // hand): nothing is claimed, and the entry must not block the
                // ones behind it.
                tracing::error!(%ticket_id, "a shred candidate's epochs are not all retired; it is not shredded");
                self.store
                    .forget_shred_candidate(&tenant, &ticket_id)
                    .await?;
                continue;
            }
            let shredded_at = now_unix_ms();
            let body = crate::proto::ShredBody {
                ticket_id: ticket.ticket_id.clone(),
                tenant: tenant.clone(),
                subject_ref: ticket.subject_ref.clone(),
                completed_at: ticket.completed_at_ms.map(timestamp),
                shredded_at: Some(timestamp(shredded_at)),
                retired_epochs: ticket.key_epochs.clone(),
                statement: SHRED_STATEMENT.to_owned(),
            }
            .encode_to_vec();
            let signature = self.sign_statement(SHRED_CONTEXT, &body);
            if self
                .store
                .shred_ticket(&tenant, &ticket_id, shredded_at, &body, &signature)
                .await?
            {
                tracing::info!(%ticket_id, epochs = ?ticket.key_epochs, "erasure shredded: its key epochs are retired");
                done += 1;
            }
        }
        Ok(done)
    }

    pub fn epoch_status(&self, now_unix_ms: i64) -> EpochStatus {
        let keys = self.keys.current();
        let ring = &keys.keyring;
        let epochs: Vec<(u32, Option<i64>)> = ring.epochs().collect();
        let oldest = ring.oldest_epoch();
        let created = epochs.first().and_then(|(_, c)| *c);
        let successor = epochs.get(1).and_then(|(_, c)| *c);
        let policy = &self.lifecycle.epochs;
        let retire_by = if oldest == ring.active_epoch() {
            // The only epoch: it must be rotated by then, and retired a rewrap
            // period later.
            policy.retire_by(created, None)
        } else {
            policy.retire_by(created, successor)
        };
        EpochStatus {
            oldest_epoch: oldest,
            active_epoch: ring.active_epoch(),
            retire_by_unix_ms: retire_by,
            overdue: retire_by.is_none_or(|t| t < now_unix_ms),
            oldest_age_days: created.map_or(0, |c| ((now_unix_ms - c).max(0) / 86_400_000) as u64),
        }
    }

    /// Tells every `keys retire` which epoch this process wraps new DEKs under,
    /// each `interval`, until aborted. The entry outlives three missed renewals.
    pub async fn announce_keys_in_use(self: std::sync::Arc<Self>, interval: std::time::Duration) {
        let id = &self.lifecycle.process_id;
        let ttl = interval.as_millis() as i64 * 3 + 1_000;
        loop {
            let now = now_unix_ms();
            let active = self.keys.current().keyring.active_epoch();
            if let Err(error) = self
                .store
                .announce_epoch_in_use(id, active, now + ttl, now)
                .await
            {
                tracing::debug!(%error, "cannot announce the key epoch in use; retrying");
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Removes this process's entry at a clean stop, so `keys retire` does not
    /// wait for it to expire.
    pub async fn withdraw_keys_in_use(&self) {
        if let Err(error) = self
            .store
            .withdraw_epoch_in_use(&self.lifecycle.process_id)
            .await
        {
            tracing::debug!(%error, "cannot withdraw the key epoch in use; it expires by itself");
        }
    }

    pub fn rewrap_per_second(&self) -> u32 {
        self.lifecycle.rewrap_per_second
    }

    /// Records what the re-wrap worker's last complete walk left (the gauge).
    pub fn set_rewrap_pending(&self, pending: u64) {
        self.lifecycle
            .rewrap_pending
            .store(pending, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn rewrap_pending(&self) -> u64 {
        self.lifecycle
            .rewrap_pending
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Verifies a shred statement offline against the published Ed25519 key.
pub fn verify_shred_receipt(
    public_key: &[u8],
    statement: &crate::proto::DeletionReceipt,
) -> Option<crate::proto::ShredBody> {
    verify_statement(public_key, SHRED_CONTEXT, statement)
}
