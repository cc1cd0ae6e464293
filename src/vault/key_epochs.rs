//! Key epochs as use cases: re-wrapping DEKs to the active epoch, counting what
//! each epoch still wraps, the shred statement once the epochs an erasure could
//! have used are all retired, and the epoch status that the compliance report
//! and the metrics show.

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt as _;
use prost::Message as _;

use super::lifecycle::{Ticket, unix_ms, verify_receipt, verify_statement};
use super::{Vault, now_unix_ms, timestamp};
use crate::crypto::envelope::{self, SealedTemplate};
use crate::crypto::keyring::SubjectRef;
use crate::domain::Tenant;
use crate::domain::erasures::ErasureIndex;
use crate::domain::key_epochs::{ErasureScope, ShredRefusal, epochs_covered, epochs_shredded};
use crate::error::Error;
use crate::storage::deletions::TicketRecord;
use crate::storage::{Store, SubjectKeys, TemplateChange};

/// Shred statements are domain-separated from receipts and checkpoints.
pub const SHRED_CONTEXT: &[u8] = b"facevault/v1 shred-receipt";
pub const SHRED_STATEMENT: &str = "copies made before completed_at are unreadable";

/// The audit op of a refused shred statement (`detail: shred-refused:<reason>`).
pub const SHRED_REFUSED_OP: &str = "ShredStatement";

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

/// What the shred check decided for one ticket.
enum ShredOutcome {
    Signed {
        body: SignedShred,
        signature: Vec<u8>,
    },
    Refused {
        refusal: ShredRefusal,
        subject_ref: String,
        /// File the ticket again under this epoch (it waits for its
        /// retirement); None: drop it from the index, nothing would do.
        retry_after_epoch: Option<u32>,
    },
}

struct SignedShred {
    bytes: Vec<u8>,
    shredded_at_ms: i64,
    retired_epochs: Vec<u32>,
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
                    .map(|r| {
                        let purposes = r.consent.as_ref().map(|c| c.purposes.clone());
                        (r.enrolled_at_unix_ms, purposes.unwrap_or_default())
                    });
                    if let Some(erased_at) = enrolled_at.ok().and_then(|(at, purposes)| {
                        erasures.erased_at(subject.as_str(), &template_id, at, &purposes)
                    }) {
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
    ///
    /// The index in Redis only says which tickets to look at. What is signed
    /// comes from the ticket's receipt, verified under the service's own key,
    /// and from the keyring: every epoch the receipt names must be gone from
    /// it and none may be the identity-bound one, and no template the erasure
    /// covered may still open. Anything else is refused (log, metric, audit
    /// event), and the ticket is filed again for the retirement it waits for,
    /// or dropped when none would do.
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
            match self.shred_statement(&tenant, &ticket_id, ticket).await? {
                ShredOutcome::Signed { body, signature } => {
                    if self
                        .store
                        .shred_ticket(
                            &tenant,
                            &ticket_id,
                            body.shredded_at_ms,
                            &body.bytes,
                            &signature,
                        )
                        .await?
                    {
                        tracing::info!(%ticket_id, epochs = ?body.retired_epochs, "erasure shredded: its key epochs are retired");
                        done += 1;
                    }
                }
                ShredOutcome::Refused {
                    refusal,
                    subject_ref,
                    retry_after_epoch,
                } => {
                    if !self
                        .refuse_shred(&tenant, &ticket_id, &subject_ref, refusal)
                        .await
                    {
                        // Not recorded: the entry stays as it is, to be
                        // refused (and recorded) again next round.
                        continue;
                    }
                    match retry_after_epoch {
                        Some(epoch) => {
                            self.store
                                .reindex_shred_candidate(&tenant, &ticket_id, epoch)
                                .await?
                        }
                        None => {
                            self.store
                                .forget_shred_candidate(&tenant, &ticket_id)
                                .await?
                        }
                    }
                }
            }
        }
        Ok(done)
    }

    /// Decides one candidate from its signed receipt, the keyring and the
    /// subject's templates.
    async fn shred_statement(
        &self,
        tenant: &str,
        ticket_id: &str,
        ticket: TicketRecord,
    ) -> Result<ShredOutcome, Error> {
        let keys = self.keys.current();
        let refused = |refusal, subject_ref: &str, retry_after_epoch| ShredOutcome::Refused {
            refusal,
            subject_ref: subject_ref.to_owned(),
            retry_after_epoch,
        };
        let receipt = crate::proto::DeletionReceipt {
            body: ticket.receipt_body,
            signature: ticket.receipt_signature,
        };
        let body = match verify_receipt(&keys.receipt_public_key(), &receipt) {
            Some(body) if ticket.completed => body,
            _ => {
                return Ok(refused(
                    ShredRefusal::ReceiptUnverified,
                    &ticket.subject_ref,
                    None,
                ));
            }
        };
        let subject = SubjectRef::parse(&body.subject_ref);
        let (Some(subject), Ok(tenant_name), Some(completed_at)) = (
            subject,
            Tenant::try_from(body.tenant.as_str()),
            body.completed_at.as_ref().map(unix_ms),
        ) else {
            return Ok(refused(ShredRefusal::OtherErasure, &body.subject_ref, None));
        };
        if body.ticket_id != ticket_id || body.tenant != tenant {
            return Ok(refused(ShredRefusal::OtherErasure, &body.subject_ref, None));
        }
        let ring = &keys.keyring;
        let in_keyring = |e: u32| ring.epochs().any(|(n, _)| n == e);
        if let Err(refusal) =
            epochs_shredded(&body.key_epochs, in_keyring, ring.identity_bound_epoch())
        {
            // Not yet: filed again under the newest signed epoch, so it comes
            // back when that one is retired, whatever the index said.
            let retry = (refusal == ShredRefusal::EpochNotRetired)
                .then(|| body.key_epochs.iter().max().copied())
                .flatten();
            return Ok(refused(refusal, &body.subject_ref, retry));
        }
        // A copy the erasure covered that still opens (restored into Redis,
        // perhaps re-wrapped since) makes the statement false: it waits until
        // the newest epoch, which could wrap that copy now, is retired too.
        let tenant_keys = ring.tenant(&tenant_name)?;
        let stored = self
            .store
            .read_subject(&SubjectKeys::new(&tenant_name, &subject))
            .await?;
        let scope = ErasureScope::from_erased(&body.erased);
        for (template_id, bytes) in stored.templates {
            let Ok(sealed) = SealedTemplate::decode(bytes.as_slice()) else {
                continue;
            };
            let Ok(record) =
                envelope::open_template(&tenant_keys, &tenant_name, &subject, &template_id, sealed)
            else {
                continue;
            };
            let purposes = record
                .consent
                .as_ref()
                .map_or(&[][..], |c| c.purposes.as_slice());
            let is_ticket_template =
                tenant_keys.retention_ticket_id(&subject, &template_id) == body.ticket_id;
            if scope.covers(
                record.enrolled_at_unix_ms,
                completed_at,
                purposes,
                is_ticket_template,
            ) {
                let newest = ring.epochs().map(|(n, _)| n).max();
                return Ok(refused(
                    ShredRefusal::TemplateReadable,
                    &body.subject_ref,
                    newest,
                ));
            }
        }
        let shredded_at_ms = now_unix_ms();
        let statement = crate::proto::ShredBody {
            ticket_id: body.ticket_id,
            tenant: body.tenant,
            subject_ref: body.subject_ref,
            completed_at: body.completed_at,
            shredded_at: Some(timestamp(shredded_at_ms)),
            retired_epochs: body.key_epochs.clone(),
            statement: SHRED_STATEMENT.to_owned(),
        }
        .encode_to_vec();
        let signature = self.sign_statement(SHRED_CONTEXT, &statement);
        Ok(ShredOutcome::Signed {
            body: SignedShred {
                bytes: statement,
                shredded_at_ms,
                retired_epochs: body.key_epochs,
            },
            signature,
        })
    }

    /// Says why a shred statement is refused: a log line, a metric and an
    /// audit event. False when the event could not be recorded.
    async fn refuse_shred(
        &self,
        tenant: &str,
        ticket_id: &str,
        subject_ref: &str,
        refusal: ShredRefusal,
    ) -> bool {
        let reason = refusal.as_str();
        crate::telemetry::metrics()
            .shred_refused
            .add(1, &[opentelemetry::KeyValue::new("reason", reason)]);
        // The id comes from an index entry anyone who writes Redis can add:
        // only a well-formed one is logged.
        let ticket_id = Some(ticket_id).filter(|id| crate::vault::is_valid_ticket_id(id));
        tracing::error!(
            ticket_id = ticket_id.unwrap_or("<malformed>"),
            reason,
            "no shred statement for this erasure: its signed receipt, the keyring or a readable template says no"
        );
        let sink = self.lifecycle.audit.read().ok().and_then(|a| a.clone());
        let (Some(sink), Ok(tenant)) = (sink, Tenant::try_from(tenant)) else {
            // Tools run without an audit writer, and an index entry naming
            // no valid tenant has no chain to record in.
            return true;
        };
        let event = crate::proto::AuditEvent {
            event_id: crate::audit::new_event_id(),
            time: Some(timestamp(now_unix_ms())),
            tenant: tenant.as_str().to_owned(),
            caller: "facevault/deletion".to_owned(),
            op: SHRED_REFUSED_OP.to_owned(),
            // Only a well-formed pseudonym goes into the log.
            subject_ref: SubjectRef::parse(subject_ref)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            outcome: "refused".to_owned(),
            code: "FAILED_PRECONDITION".to_owned(),
            request_id: ticket_id.unwrap_or_default().to_owned(),
            detail: format!("shred-refused:{reason}"),
            ..crate::proto::AuditEvent::default()
        };
        match sink.record(tenant, event).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "the shred refusal cannot be audited yet; retried next round");
                false
            }
        }
    }

    /// A ticket as served: its shred statement only if it verifies, names the
    /// same erasure as the verified receipt and retires every epoch that
    /// receipt names. Otherwise the statement (written in Redis by someone
    /// else, or damaged) is withheld, and the refusal recorded.
    pub(super) async fn with_proven_shred(&self, tenant: &Tenant, mut ticket: Ticket) -> Ticket {
        let Some(shred) = ticket.shred_receipt.as_ref() else {
            return ticket;
        };
        let keys = self.keys.current();
        let public = keys.receipt_public_key();
        let ring = &keys.keyring;
        let checked = match (
            ticket
                .receipt
                .as_ref()
                .and_then(|r| verify_receipt(&public, r)),
            verify_shred_receipt(&public, shred),
        ) {
            (Some(receipt), Some(shred)) => {
                shred_matches_receipt(&receipt, &shred).and_then(|()| {
                    epochs_shredded(
                        &shred.retired_epochs,
                        |e| ring.epochs().any(|(n, _)| n == e),
                        ring.identity_bound_epoch(),
                    )
                })
            }
            _ => Err(ShredRefusal::ReceiptUnverified),
        };
        if let Err(refusal) = checked {
            self.refuse_shred(
                tenant.as_str(),
                &ticket.ticket_id,
                &ticket.subject_ref,
                refusal,
            )
            .await;
            ticket.shred_receipt = None;
            ticket.shredded_at_unix_ms = None;
        }
        ticket
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

/// A shred statement backs a receipt only when both name the same erasure
/// (ticket, tenant, subject, completion time) and its retired epochs include
/// every epoch the receipt names. The signatures are checked by the caller.
pub fn shred_matches_receipt(
    receipt: &crate::proto::ReceiptBody,
    shred: &crate::proto::ShredBody,
) -> Result<(), ShredRefusal> {
    if receipt.completed_at.is_none()
        || shred.ticket_id != receipt.ticket_id
        || shred.tenant != receipt.tenant
        || shred.subject_ref != receipt.subject_ref
        || shred.completed_at != receipt.completed_at
    {
        return Err(ShredRefusal::OtherErasure);
    }
    epochs_covered(&shred.retired_epochs, &receipt.key_epochs)
}

/// Verifies a shred statement offline against the published Ed25519 key.
pub fn verify_shred_receipt(
    public_key: &[u8],
    statement: &crate::proto::DeletionReceipt,
) -> Option<crate::proto::ShredBody> {
    verify_statement(public_key, SHRED_CONTEXT, statement)
}
