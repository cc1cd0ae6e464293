//! The security audit (MLPS level 3): every call, allowed or refused, is one event
//! in the caller tenant's stream, chained per writer with HMAC-SHA256 and pinned by
//! Ed25519-signed checkpoints. Events hold pseudonyms, never embeddings, raw
//! subject ids, keys or ciphertexts. If an event cannot be recorded, the call fails.

pub mod chain;
pub mod merkle;
pub mod refusals;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use ring::signature::KeyPair as _;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::live::LiveKeys;
use crate::domain::Tenant;
use crate::proto::AuditEvent;
use crate::storage::audit::{checkpoints_key, events_key};
use crate::storage::{StorageError, Store};

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub retention: Duration,
    pub checkpoint_interval: Duration,
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

/// Where calls hand in their events. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<writer::Pending>,
    ack_timeout: Duration,
}

impl AuditSink {
    /// Starts the writer task. It ends (after final checkpoints) when every sink
    /// clone is dropped.
    pub fn spawn(
        store: Store,
        keys: Arc<LiveKeys>,
        settings: AuditSettings,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), crate::crypto::CryptoError> {
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let chain_id = format!("w-{}", hex::encode(crate::crypto::random_bytes::<8>()?));
        tracing::info!(%chain_id, "audit writer started");
        let ack_timeout = settings.ack_timeout;
        let task = tokio::spawn(
            writer::Writer {
                rx,
                store,
                keys,
                chain_id,
                settings,
            }
            .run(),
        );
        Ok((Self { tx, ack_timeout }, task))
    }

    /// Records one event and waits until Redis has it.
    pub async fn record(&self, tenant: Tenant, event: AuditEvent) -> Result<(), AuditError> {
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
}

/// Reads and verifies a tenant's audit stream.
pub struct AuditReader {
    store: Store,
    keys: Arc<LiveKeys>,
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
    /// Every broken link found, in the order found; empty when intact.
    pub breaks: Vec<chain::Broken>,
}

const SCAN_CHUNK: usize = 500;
/// Most stream entries one `list` call reads: a filter that matches little
/// answers with what it found so far and a continuation token, within the
/// request timeout however long the log is, instead of scanning 180 days.
pub const MAX_SCANNED_PER_CALL: usize = 50_000;

impl AuditReader {
    pub fn new(store: Store, keys: Arc<LiveKeys>) -> Self {
        Self { store, keys }
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

    pub async fn verify(&self, tenant: &Tenant) -> Result<ChainReport, StorageError> {
        let keys = self
            .keys
            .current()
            .keyring
            .tenant(tenant)
            .map_err(|_| StorageError::Corrupt)?;
        let trimmed = self.store.audit_trimmed_before(tenant.as_str()).await?;
        let mut checkpoints = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let entries = self
                .store
                .audit_range(&checkpoints_key(tenant.as_str()), &start, "+", SCAN_CHUNK)
                .await?;
            for e in &entries {
                start = format!("({}", e.id);
                checkpoints.push(self.parse_checkpoint(tenant, e));
            }
            if entries.len() < SCAN_CHUNK {
                break;
            }
        }
        let mut verifier = chain::Verifier::new(keys.audit_key(), trimmed, &checkpoints);
        let key = events_key(tenant.as_str());
        let mut start = "-".to_owned();
        loop {
            let entries = self
                .store
                .audit_range(&key, &start, "+", SCAN_CHUNK)
                .await?;
            for e in &entries {
                start = format!("({}", e.id);
                verifier.feed(chain::StoredEvent {
                    stream_id: &e.id,
                    encoded: e.field("e").unwrap_or_default(),
                    hash: e.field("h").unwrap_or_default(),
                });
            }
            if entries.len() < SCAN_CHUNK {
                break;
            }
        }
        let (events_checked, breaks) = verifier.finish(&checkpoints);
        Ok(ChainReport {
            events_checked,
            breaks,
        })
    }

    fn parse_checkpoint(
        &self,
        tenant: &Tenant,
        e: &crate::storage::audit::StreamEntry,
    ) -> chain::Checkpoint {
        let text = |name: &str| {
            e.field(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or_default()
                .to_owned()
        };
        let chain_id = text("chain");
        let seq = text("seq").parse().unwrap_or(0);
        let time_ms = text("time").parse().unwrap_or(0);
        let head = e.field("head").unwrap_or_default().to_vec();
        let message = chain::checkpoint_message(tenant.as_str(), &chain_id, seq, &head, time_ms);
        let signature_valid = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ED25519,
            self.keys.current().receipt_signer.public_key().as_ref(),
        )
        .verify(&message, e.field("sig").unwrap_or_default())
        .is_ok();
        chain::Checkpoint {
            chain_id,
            seq,
            head,
            time_ms,
            signature_valid,
        }
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
