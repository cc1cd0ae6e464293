//! The signed registry of every audit chain of every tenant with its latest
//! head, kept in Redis at `fv:audit:registry`. Writers of all replicas update it
//! by compare-and-swap. A writer never drops evidence: a registry that is gone,
//! unsigned or older than one it saw is replaced by one that records the
//! incident under signature, keeping every head whose own signature holds.

use std::sync::atomic::{AtomicU64, Ordering};

use super::heads::{Incident, Registry, TreeHead};
use super::verify::BreakKind;
use crate::crypto::live::LiveKeys;
use crate::storage::{StorageError, Store};

/// What Redis holds at the registry key, checked.
pub enum Loaded {
    None,
    /// Parsed, with the `gen` field it was stored under and whether its
    /// signature holds.
    Found {
        registry: Registry,
        stored_gen: String,
        signed: bool,
    },
    /// There, but not a registry at all.
    Unreadable {
        stored_gen: String,
    },
}

pub async fn load(store: &Store, public_key: &[u8]) -> Result<Loaded, StorageError> {
    Ok(match store.audit_registry().await? {
        None => Loaded::None,
        Some((stored_gen, doc)) => match serde_json::from_str::<Registry>(&doc) {
            Ok(registry) => {
                let signed =
                    registry.verify(public_key) && registry.generation.to_string() == stored_gen;
                Loaded::Found {
                    registry,
                    stored_gen,
                    signed,
                }
            }
            Err(_) => Loaded::Unreadable { stored_gen },
        },
    })
}

pub struct Publisher {
    store: Store,
    keys: std::sync::Arc<LiveKeys>,
    /// Highest generation this process has seen; a lower one later is a rollback.
    seen: AtomicU64,
}

/// Compare-and-swap attempts before a publish gives up until the next interval.
const ATTEMPTS: usize = 8;

impl Publisher {
    pub fn new(store: Store, keys: std::sync::Arc<LiveKeys>) -> Self {
        Self {
            store,
            keys,
            seen: AtomicU64::new(0),
        }
    }

    /// Merges `heads` into the registry (a chain's head only ever grows). With
    /// no heads, only checks it: a registry found gone, unsigned or rolled back
    /// is replaced with the incident signed in; otherwise nothing is written.
    pub async fn publish(&self, heads: &[TreeHead]) -> Result<(), StorageError> {
        for _ in 0..ATTEMPTS {
            let keys = self.keys.current();
            let public = keys.receipt_public_key();
            let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
            let seen = self.seen.load(Ordering::Relaxed);
            // What Redis holds, and what is wrong with it, if anything.
            let (mut registry, expected, found) = match load(&self.store, &public).await? {
                Loaded::Found {
                    registry,
                    stored_gen,
                    signed: true,
                } => {
                    // What this process has read counts as seen, too.
                    self.seen.fetch_max(registry.generation, Ordering::Relaxed);
                    let found = (registry.generation < seen).then(|| {
                        incident(
                            now,
                            BreakKind::RolledBack,
                            format!(
                                "the registry went back from generation {seen} to {}",
                                registry.generation
                            ),
                        )
                    });
                    (registry, stored_gen, found)
                }
                Loaded::Found {
                    registry,
                    stored_gen,
                    signed: false,
                } => {
                    // Keep what still proves itself: each head is signed alone.
                    let mut kept = empty(registry.generation);
                    kept.heads = registry
                        .heads
                        .into_iter()
                        .filter(|h| h.verify(&public))
                        .collect();
                    let found = incident(
                        now,
                        BreakKind::Edited,
                        format!(
                            "the registry at generation {} did not match its signature; replaced, keeping its heads that are signed",
                            registry.generation
                        ),
                    );
                    (kept, stored_gen, Some(found))
                }
                Loaded::Unreadable { stored_gen } => {
                    let found = incident(
                        now,
                        BreakKind::Edited,
                        "the registry was unreadable; replaced".into(),
                    );
                    (empty(0), stored_gen, Some(found))
                }
                Loaded::None => {
                    let found = (seen > 0).then(|| {
                        incident(
                            now,
                            BreakKind::Missing,
                            format!(
                                "the registry was gone; this process had seen generation {seen}"
                            ),
                        )
                    });
                    (empty(0), String::new(), found)
                }
            };
            match found {
                Some(found) => {
                    tracing::error!(kind = found.kind.as_str(), detail = %found.detail, "audit registry incident");
                    registry.incidents.push(found);
                    // The replacement outranks every registry this process saw.
                    registry.generation = registry.generation.max(seen);
                }
                None if heads.is_empty() => return Ok(()),
                None => {}
            }
            for head in heads {
                match registry
                    .heads
                    .iter_mut()
                    .find(|h| h.tenant == head.tenant && h.chain_id == head.chain_id)
                {
                    Some(old) if old.tree_size > head.tree_size => {}
                    Some(old) => *old = head.clone(),
                    None => registry.heads.push(head.clone()),
                }
            }
            registry.generation += 1;
            registry.timestamp_ms = now;
            registry.seal(&keys.receipt_signer);
            let doc = serde_json::to_string(&registry).map_err(|_| StorageError::Corrupt)?;
            if self
                .store
                .audit_swap_registry(&expected, registry.generation, &doc)
                .await?
            {
                self.seen.fetch_max(registry.generation, Ordering::Relaxed);
                return Ok(());
            }
        }
        Err(StorageError::unavailable())
    }
}

fn empty(generation: u64) -> Registry {
    Registry {
        generation,
        timestamp_ms: 0,
        heads: Vec::new(),
        incidents: Vec::new(),
        signature: Vec::new(),
    }
}

fn incident(timestamp_ms: u64, kind: BreakKind, detail: String) -> Incident {
    Incident {
        timestamp_ms,
        kind,
        detail,
    }
}
