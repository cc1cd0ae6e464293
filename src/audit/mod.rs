//! The security audit (MLPS level 3): every call, allowed or refused, is one event
//! in the caller tenant's stream, chained per writer with HMAC-SHA256. Each chain
//! is an RFC 9162 Merkle tree with signed tree heads, listed in a signed registry
//! and anchored outside Redis, so a Redis writer cannot cut, edit or reorder the
//! log unseen. Events hold pseudonyms, never embeddings, raw subject ids, keys or
//! ciphertexts. If an event cannot be recorded, the call fails.

pub mod anchors;
pub mod chain;
pub mod heads;
pub mod merkle;
pub mod refusals;
pub mod registry;
pub mod retention;
#[cfg(test)]
mod vectors;
pub mod verify;
pub mod walks;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use ring::hmac;
use tokio::sync::{mpsc, oneshot};

use self::heads::{TreeHead, TrimStatement};
use self::merkle::{Frontier, Hash, MerkleError, Subtrees as _, TILE_LEAVES, Tiled};
use self::registry::Loaded;
use self::verify::{Break, BreakKind, ChainState, Pin, StoredEvent, Walk};
use crate::crypto::live::LiveKeys;
use crate::domain::Tenant;
use crate::domain::erasures::ErasureIndex;
use crate::proto::AuditEvent;
use crate::storage::audit::events_key;
use crate::storage::{StorageError, Store};

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub retention: Duration,
    /// How often each chain that grew gets a signed tree head.
    pub checkpoint_interval: Duration,
    /// JSON Lines file every signed tree head is appended to.
    pub anchor_file: Option<std::path::PathBuf>,
    pub max_batch: usize,
    pub queue_capacity: usize,
    /// How long a call waits for its event to be recorded before failing.
    pub ack_timeout: Duration,
}

/// Adds a marker (`caller-gone`, `recorded-late`) to an event's detail, once.
pub fn mark_detail(detail: &mut String, marker: &str) {
    if detail.split(", ").any(|m| m == marker) {
        return;
    }
    if !detail.is_empty() {
        detail.push_str(", ");
    }
    detail.push_str(marker);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log is unavailable")]
    Unavailable,
    #[error("the audit log is overloaded")]
    Overloaded,
}

/// Where an event landed: its chain, its seq (leaf `seq - 1`) and its HMAC
/// (the leaf's data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLocation {
    pub chain_id: String,
    pub seq: u64,
    pub hash: Vec<u8>,
}

/// Where calls hand in their events. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<writer::Pending>,
    heads: mpsc::Sender<writer::HeadRequest>,
    ack_timeout: Duration,
}

impl AuditSink {
    /// Starts the writer task. It ends (after final tree heads) when every sink
    /// clone is dropped.
    pub fn spawn(
        store: Store,
        keys: Arc<LiveKeys>,
        settings: AuditSettings,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let (heads, head_requests) = mpsc::channel(16);
        let chain_id = format!(
            "w-{}",
            hex::encode(crate::crypto::random_bytes::<8>().map_err(anyhow::Error::msg)?)
        );
        let anchors = anchors::Anchors::open(settings.anchor_file.clone()).map_err(|e| {
            anyhow::anyhow!(
                "cannot open audit.anchor_file {:?}: {e}",
                settings.anchor_file
            )
        })?;
        tracing::info!(%chain_id, "audit writer started");
        let ack_timeout = settings.ack_timeout;
        let task = tokio::spawn(
            writer::Writer {
                rx,
                head_requests,
                registry: registry::Publisher::new(store.clone(), keys.clone())
                    .remembering(settings.anchor_file.as_deref()),
                store,
                keys,
                chain_id,
                settings,
                anchors,
            }
            .run(),
        );
        Ok((
            Self {
                tx,
                heads,
                ack_timeout,
            },
            task,
        ))
    }

    /// Records one event and waits until Redis has it.
    pub async fn record(&self, tenant: Tenant, event: AuditEvent) -> Result<(), AuditError> {
        self.record_located(tenant, event).await.map(|_| ())
    }

    /// Records one event, waits until Redis has it, and says where it landed.
    pub async fn record_located(
        &self,
        tenant: Tenant,
        event: AuditEvent,
    ) -> Result<EventLocation, AuditError> {
        let (ack, acked) = oneshot::channel();
        self.tx
            .try_send(writer::Pending { tenant, event, ack })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => AuditError::Unavailable,
            })?;
        match tokio::time::timeout(self.ack_timeout, acked).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(AuditError::Unavailable),
        }
    }

    /// Has this process's writer sign a head for each of its chains (of
    /// `tenant`, or all) that grew, and publish them, now.
    pub async fn heads_now(&self, tenant: Option<Tenant>) -> Result<(), AuditError> {
        let (done, finished) = oneshot::channel();
        self.heads
            .try_send(writer::HeadRequest { tenant, done })
            .map_err(|_| AuditError::Overloaded)?;
        match tokio::time::timeout(self.ack_timeout, finished).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(AuditError::Unavailable),
        }
    }
}

/// A chain's tree as stored: the roots of its complete tiles up to `size` and
/// the leaves of the tiles a proof needs.
pub struct StoredTree {
    size: u64,
    tile_roots: Vec<Hash>,
    tile_leaves: BTreeMap<u64, Vec<Hash>>,
}

impl StoredTree {
    fn tiled(&self) -> Tiled<'_> {
        Tiled {
            size: self.size,
            tile_roots: &self.tile_roots,
            tile_leaves: &self.tile_leaves,
        }
    }

    pub fn root(&self) -> Result<Hash, StorageError> {
        self.tiled().root_of_first(self.size).map_err(corrupt)
    }

    /// The frontier over all `size` leaves.
    pub fn frontier(&self) -> Result<Frontier, StorageError> {
        let mut frontier = Frontier::default();
        for tile in &self.tile_roots {
            frontier.push_tile(*tile).map_err(corrupt)?;
        }
        if !self.size.is_multiple_of(TILE_LEAVES) {
            let last = self.size / TILE_LEAVES;
            for leaf in self.tile_leaves.get(&last).ok_or(StorageError::Corrupt)? {
                frontier.push(*leaf);
            }
        }
        Ok(frontier)
    }
}

fn corrupt(_: MerkleError) -> StorageError {
    StorageError::Corrupt
}

/// Reads what a chain's stored tree of `size` leaves needs: its tile roots, the
/// leaves of `tiles` and of its partial last tile. Fails as corrupt when the
/// store holds fewer leaves than `size`.
pub async fn stored_tree(
    store: &Store,
    tenant: &str,
    chain_id: &str,
    size: u64,
    tiles: &[u64],
) -> Result<StoredTree, StorageError> {
    let whole = size / TILE_LEAVES;
    let tile_roots = store.audit_tiles(tenant, chain_id, whole).await?;
    if tile_roots.len() as u64 != whole {
        return Err(StorageError::Corrupt);
    }
    let mut wanted: Vec<u64> = tiles.to_vec();
    if !size.is_multiple_of(TILE_LEAVES) {
        wanted.push(whole);
    }
    wanted.sort_unstable();
    wanted.dedup();
    let mut tile_leaves = BTreeMap::new();
    for tile in wanted {
        let start = tile * TILE_LEAVES;
        let end = (start + TILE_LEAVES).min(size);
        if start >= end {
            continue;
        }
        let leaves = store.audit_leaves(tenant, chain_id, start, end).await?;
        if leaves.len() as u64 != end - start {
            return Err(StorageError::Corrupt);
        }
        tile_leaves.insert(tile, leaves);
    }
    Ok(StoredTree {
        size,
        tile_roots,
        tile_leaves,
    })
}

/// The inclusion proof of an event in its chain's tree of `tree_size` leaves (0:
/// the chain's latest signed head in the registry, returned with the proof).
pub async fn prove_inclusion(
    store: &Store,
    public_key: &[u8],
    tenant: &Tenant,
    location: EventLocation,
    tree_size: u64,
) -> Result<Inclusion, ProofError> {
    let latest = match registry::load(store, public_key).await? {
        Loaded::Found { registry, .. } => registry
            .head(tenant.as_str(), &location.chain_id)
            .filter(|h| h.verify(public_key))
            .cloned(),
        _ => None,
    };
    let headed = latest.as_ref().map_or(0, |h| h.tree_size);
    if location.seq > headed {
        return Err(ProofError::NotYetHeaded);
    }
    let size = if tree_size == 0 { headed } else { tree_size };
    if location.seq == 0 || size < location.seq || size > headed {
        return Err(ProofError::Sizes(MerkleError::IndexOutOfRange {
            index: location.seq.saturating_sub(1),
            tree_size: size,
        }));
    }
    let index = location.seq - 1;
    let tree = stored_tree(
        store,
        tenant.as_str(),
        &location.chain_id,
        size,
        &Tiled::tiles_needed(index, size),
    )
    .await?;
    let hashes = tree
        .tiled()
        .inclusion_proof(index, size)
        .map_err(|_| ProofError::Storage(StorageError::Corrupt))?;
    Ok(Inclusion {
        location,
        tree_size: size,
        hashes,
        head: latest.filter(|h| h.tree_size == size),
    })
}

/// Reads and verifies a tenant's audit log, and serves heads and proofs.
pub struct AuditReader {
    store: Store,
    keys: Arc<LiveKeys>,
    /// This process's writer, asked for fresh heads when an auditor wants them.
    sink: Option<AuditSink>,
    checkpoint_interval: Duration,
    /// `audit.retention_days`: what the per-subject counts cover.
    retention: Duration,
}

pub struct EventQuery {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub subject_ref: Option<String>,
    pub op: Option<String>,
    pub page_size: usize,
    pub page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub events_checked: u64,
    /// Every break found, in the order found; empty when intact.
    pub breaks: Vec<Break>,
    /// Whether the whole stream was walked (else: from the last clean run).
    pub full: bool,
    /// The erasures the verified log holds that can still matter (see
    /// `ERASURE_HORIZON_MARGIN_MS`); complete only when `breaks` holds
    /// nothing but the recorded incidents.
    pub erasures: ErasureIndex,
    /// How many of `breaks`, at their start, are incidents the registry
    /// recorded earlier (kept or folded, deployment-wide): evidence that
    /// tampering happened, reported by every walk, but not a break this walk
    /// found in the tenant's log. Nothing ever removes them, so they must not
    /// stop what needs the log to verify now (the saved position, re-wrap).
    pub recorded_incidents: usize,
}

impl ChainReport {
    /// The tenant's log verified now: nothing but recorded incidents.
    pub fn verifies_now(&self) -> bool {
        self.breaks.len() == self.recorded_incidents
    }
}

/// What an auditor asked `GetInclusionProof` about.
pub struct Inclusion {
    pub location: EventLocation,
    pub tree_size: u64,
    pub hashes: Vec<Hash>,
    /// The signed head of that size, when it is the chain's latest.
    pub head: Option<TreeHead>,
}

impl Inclusion {
    pub fn to_proto(&self) -> crate::proto::InclusionProof {
        crate::proto::InclusionProof {
            chain_id: self.location.chain_id.clone(),
            leaf_index: self.location.seq - 1,
            tree_size: self.tree_size,
            event_hash: self.location.hash.clone(),
            hashes: self.hashes.iter().map(|h| h.to_vec()).collect(),
            head: self.head.as_ref().map(TreeHead::to_proto),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no chain {0:?} in your tenant's registry")]
    UnknownChain(String),
    #[error("no event with this id near its time in your tenant's log")]
    UnknownEvent,
    #[error("the tree sizes are out of range: {0}")]
    Sizes(MerkleError),
    #[error("no signed head covers this event yet; ask again after audit.checkpoint_interval_secs")]
    NotYetHeaded,
}

const SCAN_CHUNK: usize = 500;
/// Most stream entries one `list` call reads: a filter that matches little
/// answers with what it found so far and a continuation token, within the
/// request timeout however long the log is, instead of scanning 180 days.
pub const MAX_SCANNED_PER_CALL: usize = 50_000;
/// How far after an event id's time its event may have landed (the writer
/// retries an event whose append failed; the call's deadline bounds the rest).
pub(crate) const LANDING_WINDOW_MS: i64 = 120_000;

const VERIFIED_CONTEXT: &[u8] = b"facevault/v1 audit-verified|";

/// Where the last clean verification of a tenant stopped, sealed with the
/// tenant's audit key so a Redis writer cannot move it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Verified {
    /// Last stream entry walked, and the stream's length then.
    last_id: String,
    len: u64,
    registry_generation: u64,
    /// SHA-256 of the tenant's trim statements then.
    trims: String,
    events_checked: u64,
    chains: BTreeMap<String, ChainState>,
    /// Where the rolling re-check of already verified entries goes on.
    #[serde(default)]
    recheck_from: Option<String>,
    /// The erasures walked over up to `last_id`, pruned to those that can
    /// still matter. Sealed with the rest: a Redis writer who rolls this state
    /// back also rolls back `last_id`/`len`, so the next walk reads the
    /// erasure's event again from the log; one who deletes it forces a full walk.
    #[serde(default)]
    erasures: ErasureIndex,
}

/// Erasures that began before the oldest epoch still in the keyring was
/// created, minus this margin, are forgotten. A copy an attacker can restore
/// and have opened holds a DEK wrapped under an epoch the keyring still has;
/// that wrap was made after the epoch was created, so the copy was taken after
/// it, and the erasure it escapes came after the copy. The margin covers clock
/// skew between the host that ran `keys rotate` and the replicas.
pub const ERASURE_HORIZON_MARGIN_MS: i64 = 86_400_000;

/// Already verified entries an incremental run checks again, on a rolling
/// cursor: an in-place rewrite of old entries (which keeps the stream's
/// length) is found within ⌈entries / RECHECK_PER_RUN⌉ incremental runs.
pub const RECHECK_PER_RUN: usize = 50_000;

/// A new audit event id: the time (unix ms) it was made, and 96 random bits,
/// so `GetInclusionProof` finds its event near that time.
pub fn new_event_id() -> String {
    use base64::Engine as _;
    let random = crate::crypto::random_bytes::<12>().unwrap_or_default();
    format!(
        "{}.{}",
        crate::vault::now_unix_ms(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    )
}

impl AuditReader {
    pub fn new(store: Store, keys: Arc<LiveKeys>, checkpoint_interval: Duration) -> Self {
        Self {
            store,
            keys,
            sink: None,
            checkpoint_interval,
            // The least `audit.retention_days` allows; `serve` sets the configured one.
            retention: Duration::from_secs(180 * 86_400),
        }
    }

    /// The retention the per-subject counts cover (`audit.retention_days`).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Lets auditor calls ask this process's writer for fresh heads.
    pub fn with_sink(mut self, sink: AuditSink) -> Self {
        self.sink = Some(sink);
        self
    }

    fn public_key(&self) -> Vec<u8> {
        self.keys.current().receipt_public_key()
    }

    /// How many retained events name the subject, and when the last `Verify`
    /// of it was (subject access), from the per-subject daily counters the
    /// writer keeps with the events: one round trip, never a walk of the log,
    /// so a caller cannot make one call cost the tenant's whole retained log.
    /// The counters are Redis state (a Redis writer can edit it): an access report, not
    /// evidence; `ListEvents` and `VerifyChain` read the evidence.
    pub async fn subject_summary(
        &self,
        tenant: &Tenant,
        subject_ref: &str,
    ) -> Result<(u64, Option<i64>), StorageError> {
        let now = crate::vault::now_unix_ms();
        let cutoff = now - self.retention.as_millis() as i64;
        self.store
            .audit_subject_summary(tenant.as_str(), subject_ref, cutoff, now)
            .await
    }

    pub async fn list(
        &self,
        tenant: &Tenant,
        q: &EventQuery,
    ) -> Result<(Vec<AuditEvent>, Option<String>), StorageError> {
        let key = events_key(tenant.as_str());
        let mut start = match (&q.page_token, q.since_ms) {
            (Some(token), _) => format!("({token}"),
            (None, Some(since)) => since.to_string(),
            (None, None) => "-".to_owned(),
        };
        let end = q.until_ms.map_or_else(|| "+".to_owned(), |u| u.to_string());
        let mut out = Vec::new();
        let mut scanned = 0;
        loop {
            let entries = self
                .store
                .audit_range(&key, &start, &end, SCAN_CHUNK)
                .await?;
            let exhausted = entries.len() < SCAN_CHUNK;
            scanned += entries.len();
            for entry in &entries {
                start = format!("({}", entry.id);
                let (Some(encoded), Some(hash)) = (entry.field("e"), entry.field("h")) else {
                    continue;
                };
                let Ok(mut event) = AuditEvent::decode(encoded) else {
                    continue;
                };
                let wanted = q
                    .subject_ref
                    .as_ref()
                    .is_none_or(|s| *s == event.subject_ref)
                    && q.op.as_ref().is_none_or(|op| *op == event.op);
                if wanted {
                    event.hash = hash.to_vec();
                    out.push(event);
                    if out.len() == q.page_size {
                        return Ok((out, Some(entry.id.clone())));
                    }
                }
            }
            if exhausted {
                return Ok((out, None));
            }
            if scanned >= MAX_SCANNED_PER_CALL {
                let last = entries.last().map(|e| e.id.clone());
                return Ok((out, last));
            }
        }
    }

    /// Asks this process's writer for current heads of the tenant's chains.
    async fn refresh_heads(&self, tenant: &Tenant) {
        if let Some(sink) = &self.sink
            && let Err(error) = sink.heads_now(Some(tenant.clone())).await
        {
            tracing::warn!(%error, "fresh audit tree heads not published; serving the latest");
        }
    }

    /// The latest signed head of each of the tenant's chains (or of one).
    pub async fn heads(
        &self,
        tenant: &Tenant,
        chain_id: Option<&str>,
    ) -> Result<Vec<TreeHead>, ProofError> {
        self.refresh_heads(tenant).await;
        let public = self.public_key();
        let heads: Vec<TreeHead> = match registry::load(&self.store, &public).await? {
            Loaded::Found { registry, .. } => registry
                .heads_of(tenant.as_str())
                .filter(|h| chain_id.is_none_or(|c| c == h.chain_id))
                .filter(|h| h.verify(&public))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if let Some(chain) = chain_id
            && heads.is_empty()
        {
            return Err(ProofError::UnknownChain(chain.to_owned()));
        }
        Ok(heads)
    }

    pub async fn consistency_proof(
        &self,
        tenant: &Tenant,
        chain_id: &str,
        first_size: u64,
        second_size: u64,
    ) -> Result<Vec<Hash>, ProofError> {
        let latest = self.heads(tenant, Some(chain_id)).await?;
        let headed = latest.first().map_or(0, |h| h.tree_size);
        if first_size == 0 || first_size > second_size || second_size > headed {
            return Err(ProofError::Sizes(MerkleError::SizesOutOfOrder {
                first_size,
                second_size: second_size.min(headed),
            }));
        }
        let tree = stored_tree(
            &self.store,
            tenant.as_str(),
            chain_id,
            second_size,
            &Tiled::tiles_needed(first_size - 1, second_size),
        )
        .await?;
        tree.tiled()
            .consistency_proof(first_size, second_size)
            .map_err(|_| ProofError::Storage(StorageError::Corrupt))
    }

    /// Finds an event by id near the time its id names: first from that time
    /// on (an event lands after its id is made), then the second before it
    /// (the Redis host's clock may trail the service's). Each window reads at
    /// most half of `MAX_SCANNED_PER_CALL` entries.
    pub async fn locate(
        &self,
        tenant: &Tenant,
        event_id: &str,
    ) -> Result<EventLocation, ProofError> {
        let made_ms: i64 = event_id
            .split_once('.')
            .and_then(|(ms, _)| ms.parse().ok())
            .ok_or(ProofError::UnknownEvent)?;
        let key = events_key(tenant.as_str());
        let windows = [
            (made_ms, made_ms + LANDING_WINDOW_MS),
            ((made_ms - 1000).max(0), made_ms),
        ];
        for (from, to) in windows {
            let mut start = from.to_string();
            let end = to.to_string();
            let mut scanned = 0;
            while scanned < MAX_SCANNED_PER_CALL / 2 {
                let entries = self
                    .store
                    .audit_range(&key, &start, &end, SCAN_CHUNK)
                    .await?;
                scanned += entries.len();
                for entry in &entries {
                    start = format!("({}", entry.id);
                    let Some(event) = entry.field("e").and_then(|e| AuditEvent::decode(e).ok())
                    else {
                        continue;
                    };
                    if event.event_id == event_id {
                        return Ok(EventLocation {
                            chain_id: event.chain_id,
                            seq: event.seq,
                            hash: entry.field("h").unwrap_or_default().to_vec(),
                        });
                    }
                }
                if entries.len() < SCAN_CHUNK {
                    break;
                }
            }
        }
        Err(ProofError::UnknownEvent)
    }

    /// The inclusion proof of an event in its chain's tree of `tree_size` (0:
    /// the latest signed head, which is then returned with the proof).
    pub async fn inclusion_proof(
        &self,
        tenant: &Tenant,
        location: EventLocation,
        tree_size: u64,
    ) -> Result<Inclusion, ProofError> {
        self.refresh_heads(tenant).await;
        prove_inclusion(&self.store, &self.public_key(), tenant, location, tree_size).await
    }

    /// Checks the tenant's log against the registry, the signed heads and trim
    /// statements, and `anchors` (heads an auditor kept). Incremental from the
    /// last clean run unless `full`, or unless anything but appends happened
    /// since (the stream shrank, trims changed, the registry went back).
    pub async fn verify(
        &self,
        tenant: &Tenant,
        full: bool,
        anchors: &[TreeHead],
    ) -> Result<ChainReport, StorageError> {
        self.refresh_heads(tenant).await;
        let tenant_keys = self
            .keys
            .current()
            .keyring
            .tenant(tenant)
            .map_err(|_| StorageError::Corrupt)?;
        let key = tenant_keys.audit_key();
        let saved = if full {
            None
        } else {
            self.saved(tenant, key).await?
        };
        match self.walk(tenant, key, saved, anchors).await? {
            Some(report) => Ok(report),
            // The saved position no longer fits the stream: walk it all.
            None => Ok(self
                .walk(tenant, key, None, anchors)
                .await?
                .unwrap_or_else(|| unreachable!("a full walk always reports"))),
        }
    }

    /// Unix ms before which no erasure can matter (`ERASURE_HORIZON_MARGIN_MS`);
    /// None when the oldest epoch's creation time is unknown (keep them all).
    fn erasure_horizon(&self) -> Option<i64> {
        let keys = self.keys.current();
        let oldest = keys.keyring.oldest_epoch();
        let created = keys
            .keyring
            .epochs()
            .find(|(n, _)| *n == oldest)
            .and_then(|(_, c)| c)?;
        Some(created - ERASURE_HORIZON_MARGIN_MS)
    }

    /// The tenant's erasures as its verified log states them: an incremental
    /// verification (from the MAC'd state, catching up from the log), checked
    /// against the registry's signed heads and the anchors. `Err` with the
    /// breaks when the log does not verify intact: then nothing it holds may be
    /// trusted, and the caller must refuse rather than guess.
    pub async fn erasure_index(
        &self,
        tenant: &Tenant,
        anchors: &[TreeHead],
    ) -> Result<Result<ErasureIndex, Vec<Break>>, StorageError> {
        let mut report = self.verify(tenant, false, anchors).await?;
        Ok(if report.verifies_now() {
            Ok(report.erasures)
        } else {
            Err(report.breaks.split_off(report.recorded_incidents))
        })
    }

    async fn saved(
        &self,
        tenant: &Tenant,
        key: &hmac::Key,
    ) -> Result<Option<Verified>, StorageError> {
        let Some(bytes) = self.store.audit_verified(tenant.as_str()).await? else {
            return Ok(None);
        };
        if bytes.len() < 32 {
            return Ok(None);
        }
        let (tag, json) = bytes.split_at(32);
        let mut message = VERIFIED_CONTEXT.to_vec();
        message.extend_from_slice(json);
        if hmac::verify(key, &message, tag).is_err() {
            tracing::warn!(
                "the saved audit verification state does not match its MAC; verifying in full"
            );
            return Ok(None);
        }
        Ok(serde_json::from_slice(json).ok())
    }

    async fn save(
        &self,
        tenant: &Tenant,
        key: &hmac::Key,
        state: &Verified,
    ) -> Result<(), StorageError> {
        let json = serde_json::to_vec(state).map_err(|_| StorageError::Corrupt)?;
        let mut message = VERIFIED_CONTEXT.to_vec();
        message.extend_from_slice(&json);
        let mut bytes = hmac::sign(key, &message).as_ref().to_vec();
        bytes.extend_from_slice(&json);
        self.store.audit_set_verified(tenant.as_str(), &bytes).await
    }

    /// One walk; `None` when the saved position turned out not to fit.
    async fn walk(
        &self,
        tenant: &Tenant,
        key: &hmac::Key,
        saved: Option<Verified>,
        anchors: &[TreeHead],
    ) -> Result<Option<ChainReport>, StorageError> {
        let public = self.public_key();
        let name = tenant.as_str();
        let mut registry_breaks = Vec::new();
        let mut recorded = Vec::new();
        let mut generation = 0;
        let mut pins: Vec<(String, Pin)> = Vec::new();
        let mut known: BTreeSet<String> = BTreeSet::new();
        let (len, last_id) = self.store.audit_extent(name).await?;
        match registry::load(&self.store, &public).await? {
            Loaded::None => {
                if len > 0 {
                    registry_breaks.push(brk(
                        BreakKind::Missing,
                        "",
                        0,
                        "the audit registry is gone: no signed head pins this log".into(),
                    ));
                }
            }
            Loaded::Unreadable { .. } => registry_breaks.push(brk(
                BreakKind::Edited,
                "",
                0,
                "the audit registry is not readable".into(),
            )),
            Loaded::Found {
                registry, signed, ..
            } => {
                generation = registry.generation;
                if !signed {
                    registry_breaks.push(brk(
                        BreakKind::Edited,
                        "",
                        0,
                        format!(
                            "the audit registry (generation {}) does not match its signature",
                            registry.generation
                        ),
                    ));
                }
                if !registry.folded.is_empty() {
                    // Folded incidents stay breaks: flooding the registry with
                    // new ones cannot make an old one go away.
                    let f = &registry.folded;
                    recorded.push(brk(
                        BreakKind::Edited,
                        "",
                        0,
                        format!(
                            "{} earlier registry incidents (from {} ms to {} ms) folded into digest {}",
                            f.count,
                            f.first_ms,
                            f.last_ms,
                            hex::encode(f.digest)
                        ),
                    ));
                }
                for incident in &registry.incidents {
                    recorded.push(brk(
                        incident.kind,
                        "",
                        0,
                        format!(
                            "registry incident at {} ms: {}",
                            incident.timestamp_ms, incident.detail
                        ),
                    ));
                }
                for head in registry.heads_of(name) {
                    if !head.verify(&public) {
                        registry_breaks.push(brk(
                            BreakKind::Edited,
                            &head.chain_id,
                            head.tree_size,
                            "the registry's head does not match its signature".into(),
                        ));
                        continue;
                    }
                    known.insert(head.chain_id.clone());
                    pins.push((
                        head.chain_id.clone(),
                        Pin {
                            size: head.tree_size,
                            root: head.root_hash,
                            source: "the registry's signed head".into(),
                        },
                    ));
                }
                for anchor in anchors.iter().filter(|a| a.tenant == name) {
                    match registry.head(name, &anchor.chain_id) {
                        None => registry_breaks.push(brk(
                            BreakKind::Missing,
                            &anchor.chain_id,
                            anchor.tree_size,
                            "an anchored chain is not in the registry".into(),
                        )),
                        Some(h) if h.tree_size < anchor.tree_size => registry_breaks.push(brk(
                            BreakKind::RolledBack,
                            &anchor.chain_id,
                            anchor.tree_size,
                            format!(
                                "the registry's head ({}) is older than an anchored one ({})",
                                h.tree_size, anchor.tree_size
                            ),
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        for anchor in anchors.iter().filter(|a| a.tenant == name) {
            known.insert(anchor.chain_id.clone());
            pins.push((
                anchor.chain_id.clone(),
                Pin {
                    size: anchor.tree_size,
                    root: anchor.root_hash,
                    source: format!("the anchored head of {} events", anchor.tree_size),
                },
            ));
        }
        // Trim statements: only signed ones that kept the retention excuse
        // missing events.
        let mut trims_raw = self.store.audit_trims(name).await?;
        trims_raw.sort();
        let trims_digest = hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            serde_json::to_string(&trims_raw)
                .unwrap_or_default()
                .as_bytes(),
        ));
        let mut trimmed: Vec<(String, u64)> = Vec::new();
        for (chain, json) in &trims_raw {
            let statement = serde_json::from_str::<TrimStatement>(json)
                .map_err(|_| {
                    "a trim marker that is not a trim statement: it excuses nothing".into()
                })
                .and_then(|s| {
                    if s.tenant != name || &s.chain_id != chain {
                        return Err("a trim statement of another chain: it excuses nothing".into());
                    }
                    s.check(&public).map(|()| s)
                });
            match statement {
                Ok(s) => {
                    known.insert(chain.clone());
                    trimmed.push((chain.clone(), s.first_index));
                    if s.tree_size > s.first_index {
                        pins.push((
                            chain.clone(),
                            Pin {
                                size: s.tree_size,
                                root: s.root_hash,
                                source: "the trim statement's head".into(),
                            },
                        ));
                    }
                }
                Err(reason) => registry_breaks.push(brk(BreakKind::UnsignedTrim, chain, 0, reason)),
            }
        }
        // Where to start, and what the saved walk already checked.
        let resume = saved.filter(|s| {
            s.registry_generation <= generation && s.trims == trims_digest && s.len <= len
        });
        if let Some(state) = &resume {
            let here = self
                .store
                .audit_range(&events_key(name), &state.last_id, &state.last_id, 1)
                .await?;
            if here.is_empty() {
                return Ok(None);
            }
        }
        let (walk_chains, start, before_len, before_checked, mut erasures) = match &resume {
            Some(s) => (
                s.chains.clone(),
                format!("({}", s.last_id),
                s.len,
                s.events_checked,
                s.erasures.clone(),
            ),
            None => (
                BTreeMap::new(),
                "-".to_owned(),
                0,
                0,
                ErasureIndex::default(),
            ),
        };
        let mut walk = Walk::new(key, walk_chains);
        let recorded_incidents = recorded.len();
        for b in recorded.into_iter().chain(registry_breaks) {
            walk.breaks.push(b);
        }
        for (chain, first_index) in trimmed {
            let prefix = stored_tree(&self.store, name, &chain, first_index, &[])
                .await
                .and_then(|t| t.frontier());
            match prefix {
                Ok(prefix) => walk.trimmed(&chain, first_index, prefix),
                Err(_) => walk.fail(
                    BreakKind::Missing,
                    &chain,
                    first_index,
                    "the stored leaf hashes of the trimmed events are gone".into(),
                ),
            }
        }
        for (chain, pin) in pins {
            // A pin the saved walk is already past is checked against the
            // stored tree (or the saved frontier, at its very size).
            let passed = walk
                .chains
                .get(&chain)
                .map(|c| (c.last_seq, c.frontier.clone()));
            match passed {
                Some((last, frontier)) if last >= pin.size => {
                    let root = match frontier.filter(|f| f.size() == pin.size) {
                        Some(f) => Ok(f.root()),
                        None => stored_tree(&self.store, name, &chain, pin.size, &[])
                            .await
                            .and_then(|t| t.root()),
                    };
                    if root.ok() != Some(pin.root) {
                        walk.fail(
                            BreakKind::Forked,
                            &chain,
                            pin.size,
                            format!(
                                "the tree of the first {} events differs from {}",
                                pin.size, pin.source
                            ),
                        );
                    }
                }
                _ => walk.pin(&chain, pin),
            }
        }
        let mut start = start;
        let mut walked = 0u64;
        if let Some(last_id) = &last_id {
            loop {
                let entries = self
                    .store
                    .audit_range(&events_key(name), &start, last_id, SCAN_CHUNK)
                    .await?;
                for e in &entries {
                    start = format!("({}", e.id);
                    walk.feed(StoredEvent {
                        stream_id: &e.id,
                        time_ms: e.time_ms(),
                        encoded: e.field("e").unwrap_or_default(),
                        hash: e.field("h").unwrap_or_default(),
                    });
                }
                walked += entries.len() as u64;
                if entries.len() < SCAN_CHUNK {
                    break;
                }
            }
        }
        if resume.is_some() && before_len + walked != len {
            // Entries vanished or appeared below the saved position.
            return Ok(None);
        }
        let unheaded_since =
            crate::vault::now_unix_ms() - 2 * self.checkpoint_interval.as_millis() as i64 - 10_000;
        let mut result = walk.finish(&known, unheaded_since);
        let mut recheck_from = None;
        if let Some(state) = &resume {
            let (breaks, next) = self
                .recheck(
                    name,
                    key,
                    state.recheck_from.as_deref().unwrap_or("-"),
                    &state.last_id,
                )
                .await?;
            result.breaks.extend(breaks);
            recheck_from = next;
        }
        for (subject_ref, erasure) in &result.erasures {
            erasures.record(subject_ref, erasure);
        }
        if let Some(horizon) = self.erasure_horizon() {
            erasures.prune(horizon);
        }
        let report = ChainReport {
            events_checked: before_checked + result.checked,
            breaks: result.breaks,
            full: resume.is_none(),
            erasures,
            recorded_incidents,
        };
        if report.verifies_now()
            && let Some(last_id) = last_id
        {
            let state = Verified {
                last_id,
                len,
                registry_generation: generation,
                trims: trims_digest,
                events_checked: report.events_checked,
                chains: result.chains,
                recheck_from,
                erasures: report.erasures.clone(),
            };
            self.save(tenant, key, &state).await?;
        }
        Ok(Some(report))
    }
}

impl AuditReader {
    /// Checks again up to `RECHECK_PER_RUN` entries from `from` (a stream id,
    /// or "-") to `until`, the last one verified: each event against its HMAC,
    /// the order and links of each chain's events, and each event against the
    /// stored leaf hash that signed heads cover. Returns the breaks and where the
    /// next run goes on (`None`: from the start again).
    async fn recheck(
        &self,
        tenant: &str,
        key: &hmac::Key,
        from: &str,
        until: &str,
    ) -> Result<(Vec<Break>, Option<String>), StorageError> {
        let stream = events_key(tenant);
        let mut start = from.to_owned();
        let mut seen: Vec<Rechecked> = Vec::new();
        let mut reached_end = false;
        while seen.len() < RECHECK_PER_RUN {
            let want = SCAN_CHUNK.min(RECHECK_PER_RUN - seen.len());
            let entries = self.store.audit_range(&stream, &start, until, want).await?;
            for e in &entries {
                start = format!("({}", e.id);
                let encoded = e.field("e").unwrap_or_default();
                let hash = e.field("h").unwrap_or_default().to_vec();
                let event = AuditEvent::decode(encoded).unwrap_or_default();
                seen.push(Rechecked {
                    intact: !event.chain_id.is_empty()
                        && event.seq > 0
                        && chain::hash_of(key, encoded) == hash,
                    chain_id: event.chain_id,
                    seq: event.seq,
                    prev_hash: event.prev_hash,
                    hash,
                });
            }
            if entries.len() < want {
                reached_end = true;
                break;
            }
        }
        let next = (!reached_end).then(|| start.clone());
        let mut breaks = Vec::new();
        let mut last: BTreeMap<&str, (u64, &[u8])> = BTreeMap::new();
        let mut spans: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for Rechecked {
            chain_id,
            seq,
            prev_hash: prev,
            hash,
            intact,
        } in &seen
        {
            if !intact {
                breaks.push(brk(
                    BreakKind::Edited,
                    chain_id,
                    *seq,
                    "an already verified event no longer matches its HMAC".into(),
                ));
                continue;
            }
            if let Some((last_seq, last_hash)) = last.get(chain_id.as_str()) {
                if seq <= last_seq {
                    breaks.push(brk(
                        BreakKind::Reordered,
                        chain_id,
                        *seq,
                        format!("seq {seq} now comes after seq {last_seq} in the stream"),
                    ));
                    continue;
                }
                if *seq == last_seq + 1 && prev.as_slice() != *last_hash {
                    breaks.push(brk(
                        BreakKind::Forked,
                        chain_id,
                        *seq,
                        "an already verified event's link no longer holds".into(),
                    ));
                }
            }
            last.insert(chain_id, (*seq, hash));
            let span = spans.entry(chain_id).or_insert((*seq, *seq));
            span.0 = span.0.min(*seq);
            span.1 = span.1.max(*seq);
        }
        // Each event is the leaf the signed heads cover.
        for (chain_id, (low, high)) in spans {
            let leaves = self
                .store
                .audit_leaves(tenant, chain_id, low - 1, high)
                .await?;
            for Rechecked { seq, hash, .. } in seen.iter().filter(|r| r.chain_id == chain_id) {
                let stored = leaves.get((seq - low) as usize);
                if stored != Some(&merkle::leaf_hash(hash)) {
                    breaks.push(brk(
                        BreakKind::Edited,
                        chain_id,
                        *seq,
                        "an already verified event differs from the leaf its signed heads cover"
                            .into(),
                    ));
                }
            }
        }
        Ok((breaks, next))
    }
}

/// An already verified entry as the rolling re-check reads it again. `intact`:
/// it decodes to an event of a chain and matches its HMAC.
struct Rechecked {
    chain_id: String,
    seq: u64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    intact: bool,
}

fn brk(kind: BreakKind, chain_id: &str, seq: u64, reason: String) -> Break {
    Break {
        kind,
        chain_id: chain_id.to_owned(),
        seq,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::mark_detail;

    #[test]
    fn a_marker_is_added_once() {
        let mut detail = String::new();
        mark_detail(&mut detail, "caller-gone");
        assert_eq!(detail, "caller-gone");
        let mut detail = "match".to_owned();
        mark_detail(&mut detail, "caller-gone");
        mark_detail(&mut detail, "recorded-late");
        mark_detail(&mut detail, "recorded-late");
        assert_eq!(detail, "match, caller-gone, recorded-late");
    }
}
