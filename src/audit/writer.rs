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
//!
//! Each chain is also an RFC 9162 Merkle tree (leaf `seq - 1` is the event's
//! HMAC). The writer keeps its frontier, appends leaf hashes and tile roots with
//! the events, and signs tree heads on a timer, on request and at shutdown: each
//! goes into the signed registry and out to the anchors (file, log, OTLP logs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use super::anchors::Anchors;
use super::heads::TreeHead;
use super::merkle::{Frontier, Hash, leaf_hash};
use super::{AuditError, AuditSettings, EventLocation, chain, registry};
use crate::crypto::live::LiveKeys;
use crate::domain::Tenant;
use crate::proto::AuditEvent;
use crate::storage::Store;
use crate::storage::audit::{AuditAppend, ChainHead, SubjectIndex, SubjectMarks, TreeAppend};

pub(super) struct Pending {
    pub tenant: Tenant,
    pub event: AuditEvent,
    pub ack: oneshot::Sender<Result<EventLocation, AuditError>>,
}

/// An auditor (or shutdown) wants current heads: of one tenant's chains, or all.
pub(super) struct HeadRequest {
    pub tenant: Option<Tenant>,
    pub done: oneshot::Sender<Result<(), AuditError>>,
}

struct Head {
    seq: u64,
    hash: Vec<u8>,
    /// The tree over leaves `0..seq`.
    frontier: Frontier,
    /// Tree size of the last head published in the registry.
    headed: u64,
    /// The last append's outcome is unknown (a timeout, or too few replica
    /// acknowledgements after the MULTI ran).
    uncertain: Option<Uncertain>,
    /// Events known not to have landed, appended first in the next commit.
    unrecorded: Vec<AuditEvent>,
}

/// An append of unknown outcome: what it would have made the head and the
/// tree, and its events (to append again if it did not land).
struct Uncertain {
    seq: u64,
    hash: Vec<u8>,
    frontier: Frontier,
    events: Vec<AuditEvent>,
}

/// How often events whose append failed are tried again while no call brings a
/// new batch.
const RETRY_UNRECORDED_EVERY: Duration = Duration::from_millis(250);

pub(super) struct Writer {
    pub rx: mpsc::Receiver<Pending>,
    pub head_requests: mpsc::Receiver<HeadRequest>,
    pub store: Store,
    pub keys: Arc<LiveKeys>,
    pub chain_id: String,
    pub settings: AuditSettings,
    pub anchors: Anchors,
    pub registry: registry::Publisher,
}

impl Writer {
    pub async fn run(mut self) {
        let mut heads: HashMap<Tenant, Head> = HashMap::new();
        let mut last_trim: Option<Instant> = None;
        let mut head_timer = tokio::time::interval(self.settings.checkpoint_interval);
        head_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        head_timer.tick().await;
        loop {
            let owed = heads
                .values()
                .any(|h| h.uncertain.is_some() || !h.unrecorded.is_empty());
            let retry = async {
                if owed {
                    tokio::time::sleep(RETRY_UNRECORDED_EVERY).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let first = tokio::select! {
                p = self.rx.recv() => match p {
                    Some(p) => Some(p),
                    None => break,
                },
                _ = head_timer.tick() => {
                    let _ = self.publish_heads(&mut heads, None).await;
                    continue;
                }
                Some(request) = self.head_requests.recv() => {
                    // Events already queued go in before the head is taken.
                    self.drain_queue(&mut heads).await;
                    let result = self.publish_heads(&mut heads, request.tenant.as_ref()).await;
                    let _ = request.done.send(result);
                    continue;
                }
                () = retry => None,
            };
            let mut batch: Vec<Pending> = first.into_iter().collect();
            while batch.len() < self.settings.max_batch {
                match self.rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.commit(batch, &mut heads).await;
            // A chain's first events get a head at once, so a process that dies
            // before its first interval leaves no chain that nothing signed names.
            if heads.values().any(|h| h.headed == 0 && h.seq > 0) {
                let _ = self.publish_heads(&mut heads, None).await;
            }
            if last_trim.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                self.trim(heads.keys()).await;
                last_trim = Some(Instant::now());
            }
        }
        // Shutdown: a last try for events owed, then every chain gets a final
        // signed head.
        self.commit(Vec::new(), &mut heads).await;
        if let Err(error) = self.publish_heads(&mut heads, None).await {
            tracing::warn!(%error, "final audit tree heads not published");
        }
    }

    /// Commits whatever is queued right now.
    async fn drain_queue(&mut self, heads: &mut HashMap<Tenant, Head>) {
        loop {
            let mut batch = Vec::new();
            while batch.len() < self.settings.max_batch {
                match self.rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.commit(batch, heads).await;
        }
    }

    /// Signs a head for every chain (of `only`, or all) that grew since its last
    /// one, anchors each outside Redis, and publishes them in the registry.
    async fn publish_heads(
        &self,
        heads: &mut HashMap<Tenant, Head>,
        only: Option<&Tenant>,
    ) -> Result<(), AuditError> {
        let keys = self.keys.current();
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let signed: Vec<(Tenant, TreeHead)> = heads
            .iter()
            .filter(|(t, h)| only.is_none_or(|o| o == *t) && h.seq > h.headed)
            .map(|(tenant, head)| {
                let sth = TreeHead::sign(
                    &keys.receipt_signer,
                    tenant.as_str(),
                    &self.chain_id,
                    head.seq,
                    head.frontier.root(),
                    now,
                );
                (tenant.clone(), sth)
            })
            .collect();
        if signed.is_empty() {
            // Nothing grew; an auditor's request still checks the registry,
            // so a deleted or rolled-back one is signed as an incident now.
            if only.is_some() {
                return match self.registry.publish(&[], &[]).await {
                    Ok(published) => {
                        self.anchor_registry(published);
                        Ok(())
                    }
                    Err(error) => {
                        tracing::error!(%error, "audit registry not checked");
                        Err(AuditError::Unavailable)
                    }
                };
            }
            return Ok(());
        }
        for (_, head) in &signed {
            self.anchors.record(head);
        }
        let published: Vec<TreeHead> = signed.iter().map(|(_, h)| h.clone()).collect();
        match self.registry.publish(&published, &[]).await {
            Ok(written) => {
                self.anchor_registry(written);
                for (tenant, sth) in &signed {
                    if let Some(h) = heads.get_mut(tenant) {
                        h.headed = h.headed.max(sth.tree_size);
                    }
                }
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "audit tree heads not published in the registry; retried at the next interval");
                Err(AuditError::Unavailable)
            }
        }
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
                frontier: Frontier::default(),
                headed: 0,
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
            let (mut seq, mut prev) = (head.seq, head.hash.clone());
            let mut frontier = head.frontier.clone();
            let mut tree = TreeAppend {
                leaves: Vec::new(),
                tiles: Vec::new(),
            };
            let owed = std::mem::take(&mut head.unrecorded);
            let owed_count = owed.len();
            let mut entries = Vec::with_capacity(owed.len() + pending.len());
            let mut acks = Vec::with_capacity(pending.len());
            let replicas_hold = self.store.waits_for_replicas();
            let mut subjects: HashMap<String, SubjectMarks> = HashMap::new();
            for event in owed.into_iter().chain(pending.into_iter().map(|p| {
                acks.push((replicas_hold && records_durable_write(&p.event), p.ack));
                p.event
            })) {
                mark_subject(&mut subjects, &event);
                seq += 1;
                let (event, hash) =
                    chain::link(keys.audit_key(), event, &self.chain_id, seq, &prev);
                let leaf: Hash = leaf_hash(&hash);
                tree.leaves.extend_from_slice(&leaf);
                if let Some(tile) = frontier.push(leaf) {
                    tree.tiles.extend_from_slice(&tile);
                }
                prev = hash.clone();
                entries.push(AuditAppend { event, hash });
            }
            if entries.is_empty() {
                continue;
            }
            writes.push((
                tenant,
                owed_count,
                entries,
                tree,
                frontier,
                acks,
                seq,
                prev,
                subjects.into_values().collect::<Vec<_>>(),
            ));
        }
        let retention_ms = self.settings.retention.as_millis() as i64;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let head_kept_until = now_ms + retention_ms;
        let results = futures::future::join_all(writes.iter().map(
            |(tenant, _, entries, tree, _, _, seq, hash, subjects)| async move {
                let head = ChainHead {
                    chain_id: &self.chain_id,
                    seq: *seq,
                    hash,
                    expires_at_ms: head_kept_until,
                };
                let index = SubjectIndex {
                    marks: subjects,
                    retention_ms,
                };
                self.store
                    .audit_append(tenant.as_str(), &head, entries, tree, &index)
                    .await
            },
        ))
        .await;
        for ((tenant, owed_count, entries, _, frontier, acks, seq, hash, _), result) in
            writes.into_iter().zip(results)
        {
            match result {
                Ok(_) => {
                    if let Some(head) = heads.get_mut(&tenant) {
                        head.seq = seq;
                        head.hash = hash;
                        head.frontier = frontier;
                    }
                    // Where each call's event landed: its seq, and its HMAC.
                    let first_seq = seq + 1 - entries.len() as u64;
                    let locations: Vec<EventLocation> = entries
                        .iter()
                        .enumerate()
                        .skip(owed_count)
                        .map(|(i, e)| EventLocation {
                            chain_id: self.chain_id.clone(),
                            seq: first_seq + i as u64,
                            hash: e.hash.clone(),
                        })
                        .collect();
                    crate::telemetry::metrics()
                        .audit_events
                        .add(entries.len() as u64, &[]);
                    // Calls that made a durable write are answered once replicas
                    // hold their event (off this loop, so a lagging replica
                    // holds up only them); the others at once, like their reads.
                    let mut durable = Vec::new();
                    for ((needs_replicas, ack), location) in acks.into_iter().zip(locations) {
                        if needs_replicas {
                            durable.push((ack, location));
                        } else {
                            let _ = ack.send(Ok(location));
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
                            for (ack, location) in durable {
                                let _ = ack.send(result.map(|()| location));
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
                            frontier,
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
                head.frontier = uncertain.frontier;
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

    /// The registry a publish wrote goes to the anchors too: its generation
    /// and chain count, which no later registry may go below.
    fn anchor_registry(&self, written: Option<registry::Published>) {
        if let Some(written) = written {
            self.anchors.record_registry(&written);
        }
    }

    /// Retention, per tenant this writer writes: trims what verified events
    /// allow, and signs what it refused into the registry as incidents (each
    /// also logged and counted), so a forged or misplaced entry is evidence
    /// rather than a reason to excuse anything.
    async fn trim<'a>(&self, tenants: impl Iterator<Item = &'a Tenant>) {
        let now = chrono::Utc::now().timestamp_millis();
        let retention_days = self.settings.retention.as_secs() / 86_400;
        let mut incidents = Vec::new();
        for tenant in tenants {
            match super::retention::trim(&self.store, &self.keys, tenant, now, retention_days).await
            {
                Ok(report) => {
                    for refused in report.refused {
                        tracing::error!(
                            tenant = %tenant.as_str(),
                            chain_id = %refused.chain_id,
                            seq = refused.seq,
                            kind = refused.kind.as_str(),
                            reason = %refused.reason,
                            "audit retention refused to trim an entry"
                        );
                        crate::telemetry::metrics().audit_breaks.add(
                            1,
                            &[opentelemetry::KeyValue::new("kind", refused.kind.as_str())],
                        );
                        incidents.push(super::heads::Incident {
                            timestamp_ms: now.max(0) as u64,
                            kind: refused.kind,
                            detail: format!(
                                "retention of tenant {} chain {} seq {}: {}",
                                tenant.as_str(),
                                if refused.chain_id.is_empty() {
                                    "?"
                                } else {
                                    &refused.chain_id
                                },
                                refused.seq,
                                refused.reason
                            ),
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "audit retention trim failed; retried in an hour");
                }
            }
        }
        if !incidents.is_empty() {
            match self.registry.publish(&[], &incidents).await {
                Ok(written) => self.anchor_registry(written),
                Err(error) => {
                    tracing::error!(%error, "audit retention incidents not signed into the registry; logged only");
                }
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

/// Adds an event that names a subject to that subject's marks for the batch,
/// so `GetSubjectRecord` counts it without walking the log.
fn mark_subject(subjects: &mut HashMap<String, SubjectMarks>, event: &AuditEvent) {
    if event.subject_ref.is_empty() {
        return;
    }
    let time_ms = event.time.as_ref().map_or(0, crate::vault::unix_ms);
    let marks = subjects
        .entry(event.subject_ref.clone())
        .or_insert_with(|| SubjectMarks {
            subject_ref: event.subject_ref.clone(),
            ..SubjectMarks::default()
        });
    marks.event_times_ms.push(time_ms);
    if event.op == "Verify" {
        marks.last_verify_ms = marks.last_verify_ms.max(Some(time_ms));
    }
}

/// Marks an event written after its call was answered (the call saw its audit
/// write fail; the event still says what the call did).
fn recorded_late(mut event: AuditEvent) -> AuditEvent {
    super::mark_detail(&mut event.detail, "recorded-late");
    event
}
