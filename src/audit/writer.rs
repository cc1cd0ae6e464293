//! Group commit: RPCs hand their event to one writer task and wait; the task
//! chains whatever has queued up, appends it per tenant in one MULTI, and only then
//! acknowledges. One round trip serves many RPCs; no RPC returns before its event
//! is in Redis; a failed write fails every RPC in it (fail closed).
//!
//! A failed write does not lose its events: they record what calls really did
//! (some changed state before their event could be written), so the writer keeps
//! them and appends them again, marked `recorded-late`, once it knows from the
//! chain's head in Redis that they did not land. It never appends an event twice
//! and never reuses a sequence number.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use super::chain;
use super::{AuditError, AuditSettings};
use crate::crypto::live::LiveKeys;
use crate::domain::Tenant;
use crate::proto::AuditEvent;
use crate::storage::Store;
use crate::storage::audit::{AuditAppend, ChainHead, CheckpointAppend};

pub(super) struct Pending {
    pub tenant: Tenant,
    pub event: AuditEvent,
    pub ack: oneshot::Sender<Result<(), AuditError>>,
}

struct Head {
    seq: u64,
    hash: Vec<u8>,
    checkpointed_seq: u64,
    last_checkpoint: Instant,
    /// The last append's outcome is unknown (a timeout, or too few replica
    /// acknowledgements after the MULTI ran).
    uncertain: Option<Uncertain>,
    /// Events known not to have landed, appended first in the next commit.
    unrecorded: Vec<AuditEvent>,
}

/// An append of unknown outcome: what it would have made the head, whether it
/// carried a checkpoint, and its events (to append again if it did not land).
struct Uncertain {
    seq: u64,
    hash: Vec<u8>,
    checkpointed: bool,
    events: Vec<AuditEvent>,
}

/// How often events whose append failed are tried again while no call brings a
/// new batch.
const RETRY_UNRECORDED_EVERY: Duration = Duration::from_millis(250);

pub(super) struct Writer {
    pub rx: mpsc::Receiver<Pending>,
    pub store: Store,
    pub keys: Arc<LiveKeys>,
    pub chain_id: String,
    pub settings: AuditSettings,
}

impl Writer {
    pub async fn run(mut self) {
        let mut heads: HashMap<Tenant, Head> = HashMap::new();
        let mut last_trim: Option<Instant> = None;
        loop {
            let owed = heads
                .values()
                .any(|h| h.uncertain.is_some() || !h.unrecorded.is_empty());
            let first = if owed {
                match tokio::time::timeout(RETRY_UNRECORDED_EVERY, self.rx.recv()).await {
                    Ok(Some(p)) => Some(p),
                    Ok(None) => break,
                    Err(_) => None,
                }
            } else {
                match self.rx.recv().await {
                    Some(p) => Some(p),
                    None => break,
                }
            };
            let mut batch: Vec<Pending> = first.into_iter().collect();
            while batch.len() < self.settings.max_batch {
                match self.rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.commit(batch, &mut heads).await;
            if last_trim.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                self.trim(heads.keys()).await;
                last_trim = Some(Instant::now());
            }
        }
        // Shutdown: a last try for events owed, then every chain's head gets a
        // final signed checkpoint.
        self.commit(Vec::new(), &mut heads).await;
        self.final_checkpoints(&mut heads).await;
    }

    async fn commit(&self, batch: Vec<Pending>, heads: &mut HashMap<Tenant, Head>) {
        let mut by_tenant: Vec<(Tenant, Vec<Pending>)> = Vec::new();
        for p in batch {
            match by_tenant.iter_mut().find(|(t, _)| *t == p.tenant) {
                Some((_, list)) => list.push(p),
                None => by_tenant.push((p.tenant.clone(), vec![p])),
            }
        }
        // Chains that owe events are written even when no call brings one.
        for (tenant, head) in heads.iter() {
            let owes = head.uncertain.is_some() || !head.unrecorded.is_empty();
            if owes && !by_tenant.iter().any(|(t, _)| t == tenant) {
                by_tenant.push((tenant.clone(), Vec::new()));
            }
        }
        let mut writes = Vec::new();
        for (tenant, pending) in by_tenant {
            let keys = match self.keys.current().keyring.tenant(&tenant) {
                Ok(k) => k,
                Err(_) => {
                    for p in pending {
                        let _ = p.ack.send(Err(AuditError::Unavailable));
                    }
                    continue;
                }
            };
            let head = heads.entry(tenant.clone()).or_insert_with(|| Head {
                seq: 0,
                hash: Vec::new(),
                checkpointed_seq: 0,
                last_checkpoint: Instant::now(),
                uncertain: None,
                unrecorded: Vec::new(),
            });
            // Never fork: after an append of unknown outcome, go on from where
            // the chain really ends in Redis. Until that can be read, refuse.
            if let Err(error) = self.settle(&tenant, head).await {
                tracing::error!(%error, "audit chain head unknown; refusing the calls it would record");
                for p in pending {
                    head.unrecorded.push(recorded_late(p.event));
                    let _ = p.ack.send(Err(AuditError::Unavailable));
                }
                continue;
            }
            // A writer's first batch for a tenant registers the tenant's stream.
            let first_batch = head.seq == 0;
            let (mut seq, mut prev) = (head.seq, head.hash.clone());
            let owed = std::mem::take(&mut head.unrecorded);
            let mut entries = Vec::with_capacity(owed.len() + pending.len());
            let mut acks = Vec::with_capacity(pending.len());
            let replicas_hold = self.store.waits_for_replicas();
            for event in owed.into_iter().chain(pending.into_iter().map(|p| {
                acks.push((replicas_hold && records_durable_write(&p.event), p.ack));
                p.event
            })) {
                seq += 1;
                let (event, hash) =
                    chain::link(keys.audit_key(), event, &self.chain_id, seq, &prev);
                prev = hash.clone();
                entries.push(AuditAppend { event, hash });
            }
            if entries.is_empty() {
                continue;
            }
            let checkpoint = (head.last_checkpoint.elapsed() >= self.settings.checkpoint_interval)
                .then(|| self.checkpoint(&tenant, seq, &prev));
            writes.push((tenant, first_batch, entries, checkpoint, acks, seq, prev));
        }
        let head_kept_until =
            chrono::Utc::now().timestamp_millis() + self.settings.retention.as_millis() as i64;
        let results = futures::future::join_all(writes.iter().map(
            |(tenant, first_batch, entries, checkpoint, _, seq, hash)| async move {
                if *first_batch {
                    self.store.audit_register_tenant(tenant.as_str()).await?;
                }
                let head = ChainHead {
                    chain_id: &self.chain_id,
                    seq: *seq,
                    hash,
                    expires_at_ms: head_kept_until,
                };
                self.store
                    .audit_append(tenant.as_str(), &head, entries, checkpoint.as_ref())
                    .await
            },
        ))
        .await;
        for ((tenant, _, entries, checkpoint, acks, seq, hash), result) in
            writes.into_iter().zip(results)
        {
            match result {
                Ok(_) => {
                    if let Some(head) = heads.get_mut(&tenant) {
                        head.seq = seq;
                        head.hash = hash;
                        if checkpoint.is_some() {
                            head.checkpointed_seq = seq;
                            head.last_checkpoint = Instant::now();
                        }
                    }
                    crate::telemetry::metrics()
                        .audit_events
                        .add(entries.len() as u64, &[]);
                    // Calls that made a durable write are answered once replicas
                    // hold their event (off this loop, so a lagging replica
                    // holds up only them); the others at once, like their reads.
                    let mut durable = Vec::new();
                    for (needs_replicas, ack) in acks {
                        if needs_replicas {
                            durable.push(ack);
                        } else {
                            let _ = ack.send(Ok(()));
                        }
                    }
                    if !durable.is_empty() {
                        let store = self.store.clone();
                        let chain_id = self.chain_id.clone();
                        tokio::spawn(async move {
                            let result = store
                                .audit_replicated(tenant.as_str(), &chain_id)
                                .await
                                .map_err(|error| {
                                    tracing::error!(%error, "audit events not replicated in time; refusing the calls they record");
                                    AuditError::Unavailable
                                });
                            for ack in durable {
                                let _ = ack.send(result);
                            }
                        });
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "audit write failed; refusing the calls it recorded");
                    if let Some(head) = heads.get_mut(&tenant) {
                        let events = entries
                            .iter()
                            .filter_map(|e| AuditEvent::decode(e.event.as_slice()).ok())
                            .collect();
                        head.uncertain = Some(Uncertain {
                            seq,
                            hash,
                            checkpointed: checkpoint.is_some(),
                            events,
                        });
                    }
                    for (_, ack) in acks {
                        let _ = ack.send(Err(AuditError::Unavailable));
                    }
                }
            }
        }
    }

    /// Resolves an append of unknown outcome from the chain's head in Redis: if
    /// the append went through, the chain goes on after it; if not, after the
    /// last known event. Either way it never reuses a sequence number.
    async fn settle(&self, tenant: &Tenant, head: &mut Head) -> Result<(), AuditError> {
        let Some(uncertain) = head.uncertain.take() else {
            return Ok(());
        };
        let stored = match self
            .store
            .audit_chain_head(tenant.as_str(), &self.chain_id)
            .await
        {
            Ok(stored) => stored,
            Err(_) => {
                head.uncertain = Some(uncertain);
                return Err(AuditError::Unavailable);
            }
        };
        match stored {
            Some((stored_seq, stored_hash))
                if stored_seq == uncertain.seq && stored_hash == uncertain.hash =>
            {
                tracing::warn!(
                    seq = uncertain.seq,
                    "audit append of unknown outcome had gone through; the chain goes on after it"
                );
                head.seq = uncertain.seq;
                head.hash = uncertain.hash;
                if uncertain.checkpointed {
                    head.checkpointed_seq = uncertain.seq;
                    head.last_checkpoint = Instant::now();
                }
                Ok(())
            }
            // Past what this writer ever tried: someone else writes this chain.
            // Refuse rather than guess.
            Some((stored_seq, _)) if stored_seq >= uncertain.seq => {
                head.uncertain = Some(uncertain);
                Err(AuditError::Unavailable)
            }
            // The append did not land (its head record is written in the same
            // MULTI): its events are owed, and the chain goes on after the last
            // known event. A head older than that, or none, means Redis lost
            // acknowledged writes, which the verifier reports as a gap.
            _ => {
                let mut owed: Vec<AuditEvent> =
                    uncertain.events.into_iter().map(recorded_late).collect();
                // Events refused while this was unknown come after these.
                owed.append(&mut head.unrecorded);
                let cap = self.settings.queue_capacity;
                if owed.len() > cap {
                    let lost = owed.len() - cap;
                    tracing::error!(
                        lost,
                        "audit events owed beyond the queue capacity are dropped"
                    );
                    owed.drain(..lost);
                }
                head.unrecorded = owed;
                Ok(())
            }
        }
    }

    fn checkpoint(&self, tenant: &Tenant, seq: u64, head: &[u8]) -> CheckpointAppend {
        let time_ms = chrono::Utc::now().timestamp_millis();
        let message =
            chain::checkpoint_message(tenant.as_str(), &self.chain_id, seq, head, time_ms);
        CheckpointAppend {
            chain_id: self.chain_id.clone(),
            seq,
            head: head.to_vec(),
            time_ms,
            signature: self
                .keys
                .current()
                .receipt_signer
                .sign(&message)
                .as_ref()
                .to_vec(),
        }
    }

    async fn final_checkpoints(&self, heads: &mut HashMap<Tenant, Head>) {
        for (tenant, head) in heads.iter_mut() {
            if head.seq == head.checkpointed_seq {
                continue;
            }
            let cp = self.checkpoint(tenant, head.seq, &head.hash);
            // A checkpoint alone: no events, just the signed head.
            if let Err(error) = self.store.audit_checkpoint(tenant.as_str(), &cp).await {
                tracing::warn!(%error, "final audit checkpoint not written");
            }
            head.checkpointed_seq = head.seq;
        }
    }

    async fn trim<'a>(&self, tenants: impl Iterator<Item = &'a Tenant>) {
        let cutoff =
            chrono::Utc::now().timestamp_millis() - self.settings.retention.as_millis() as i64;
        for tenant in tenants {
            if let Err(error) = self.store.audit_trim(tenant.as_str(), cutoff).await {
                tracing::warn!(%error, "audit retention trim failed; retried in an hour");
            }
        }
    }
}

/// Whether an event records a durable write (enrollment, erasure, consent
/// change, cancellation), which `redis.replica_acks` replicas must hold before the
/// call is answered. Reads, verifications and refusals are answered once the
/// primary holds their event, like the lockout counter a verification writes.
fn records_durable_write(event: &AuditEvent) -> bool {
    const DURABLE: [&str; 4] = [
        "Enroll",
        "DeleteSubject",
        "WithdrawConsent",
        "CancelAccount",
    ];
    event.outcome == "allowed" && DURABLE.contains(&event.op.as_str())
}

/// Marks an event written after its call was answered (the call saw its audit
/// write fail; the event still says what the call did).
fn recorded_late(mut event: AuditEvent) -> AuditEvent {
    super::mark_detail(&mut event.detail, "recorded-late");
    event
}
