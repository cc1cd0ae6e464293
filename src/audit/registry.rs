//! The signed registry of every audit chain of every tenant with its latest
//! head, kept in Redis at `fv:audit:registry`. Writers of all replicas update it
//! by compare-and-swap. A writer never drops evidence: a registry that is gone,
//! unsigned or older than one it saw is replaced by one that records the
//! incident under signature, keeping every head whose own signature holds.

use std::sync::Mutex;
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
    /// The newest signed registry this process read or wrote. A replacement
    /// starts from it (so its incidents survive), and no registry may drop a
    /// head it holds: a chain whose signed head verifies stays named.
    last_good: Mutex<Option<Registry>>,
}

/// A registry a publish wrote: what the anchors record of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub generation: u64,
    pub chains: u64,
    pub timestamp_ms: u64,
}

/// Compare-and-swap attempts before a publish gives up until the next interval.
const ATTEMPTS: usize = 8;

impl Publisher {
    pub fn new(store: Store, keys: std::sync::Arc<LiveKeys>) -> Self {
        Self {
            store,
            keys,
            seen: AtomicU64::new(0),
            last_good: Mutex::new(None),
        }
    }

    /// Starts from what the anchor file (outside Redis) recorded: the highest
    /// registry generation written, and each chain's largest head whose
    /// signature holds. So a registry edited or rolled back while every
    /// process was down is caught by the first writer that starts, not only
    /// by `audit verify --anchors`.
    pub fn remembering(self, anchor_file: Option<&std::path::Path>) -> Self {
        let Some(file) = anchor_file.and_then(|p| super::anchors::read(p).ok()) else {
            return self;
        };
        let public = self.keys.current().receipt_public_key();
        let generation = file
            .registries
            .iter()
            .map(|(_, r)| r.registry_generation)
            .max()
            .unwrap_or(0);
        let mut known = empty(0);
        merge(
            &mut known,
            file.heads
                .into_iter()
                .map(|(_, h)| h)
                .filter(|h| h.verify(&public)),
        );
        self.seen.fetch_max(generation, Ordering::Relaxed);
        if !known.heads.is_empty()
            && let Ok(mut good) = self.last_good.lock()
        {
            *good = Some(known);
        }
        self
    }

    fn remembered(&self) -> Option<Registry> {
        self.last_good.lock().ok().and_then(|g| g.clone())
    }

    fn remember(&self, registry: &Registry) {
        if let Ok(mut good) = self.last_good.lock()
            && good
                .as_ref()
                .is_none_or(|g| g.generation <= registry.generation)
        {
            *good = Some(registry.clone());
        }
    }

    /// Merges `heads` into the registry (a chain's head only ever grows) and
    /// signs `incidents` in (each once). With neither, only checks it: a
    /// registry found gone, unsigned, rolled back or missing a head this
    /// process saw signed is replaced with the incident signed in; otherwise
    /// nothing is written. Returns what it wrote, if anything.
    pub async fn publish(
        &self,
        heads: &[TreeHead],
        incidents: &[Incident],
    ) -> Result<Option<Published>, StorageError> {
        for _ in 0..ATTEMPTS {
            let keys = self.keys.current();
            let public = keys.receipt_public_key();
            let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
            let seen = self.seen.load(Ordering::Relaxed);
            let remembered = self.remembered();
            // A replacement starts from the newest signed registry seen, with
            // every head the bad one still proves.
            let replacement = |generation: u64, proven: Vec<TreeHead>| {
                let mut base = remembered.clone().unwrap_or_else(|| empty(generation));
                base.generation = base.generation.max(generation);
                merge(&mut base, proven.into_iter().filter(|h| h.verify(&public)));
                base
            };
            // What Redis holds, and what is wrong with it, if anything.
            let (mut registry, expected, mut found) = match load(&self.store, &public).await? {
                Loaded::Found {
                    registry,
                    stored_gen,
                    signed: true,
                } if registry.generation < seen => {
                    let found = incident(
                        now,
                        BreakKind::RolledBack,
                        format!(
                            "the registry went back from generation {seen} to {}",
                            registry.generation
                        ),
                    );
                    let generation = registry.generation;
                    (
                        replacement(generation, registry.heads),
                        stored_gen,
                        vec![found],
                    )
                }
                Loaded::Found {
                    registry,
                    stored_gen,
                    signed: true,
                } => {
                    // What this process has read counts as seen, too.
                    self.seen.fetch_max(registry.generation, Ordering::Relaxed);
                    (registry, stored_gen, Vec::new())
                }
                Loaded::Found {
                    registry,
                    stored_gen,
                    signed: false,
                } => {
                    let found = incident(
                        now,
                        BreakKind::Edited,
                        format!(
                            "the registry at generation {} did not match its signature; replaced, keeping its heads that are signed",
                            registry.generation
                        ),
                    );
                    let generation = registry.generation;
                    (
                        replacement(generation, registry.heads),
                        stored_gen,
                        vec![found],
                    )
                }
                Loaded::Unreadable { stored_gen } => {
                    let found = incident(
                        now,
                        BreakKind::Edited,
                        "the registry was unreadable; replaced".into(),
                    );
                    (replacement(0, Vec::new()), stored_gen, vec![found])
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
                    (
                        replacement(0, Vec::new()),
                        String::new(),
                        found.into_iter().collect(),
                    )
                }
            };
            // A signed registry that lacks a head this process saw signed (a
            // replica replaced it from less, or a head was rolled back alone).
            if found.is_empty()
                && let Some(good) = &remembered
            {
                for dropped in merge(&mut registry, good.heads.iter().cloned()) {
                    found.push(incident(
                        now,
                        BreakKind::Missing,
                        format!(
                            "the registry at generation {} lacked the signed head of chain {} of tenant {} ({} events); restored",
                            registry.generation, dropped.chain_id, dropped.tenant, dropped.tree_size
                        ),
                    ));
                }
            }
            let new_incidents: Vec<&Incident> = incidents
                .iter()
                .filter(|i| {
                    !registry
                        .incidents
                        .iter()
                        .any(|r| r.kind == i.kind && r.detail == i.detail)
                })
                .collect();
            if found.is_empty() && heads.is_empty() && new_incidents.is_empty() {
                self.remember(&registry);
                return Ok(None);
            }
            for found in found {
                tracing::error!(kind = found.kind.as_str(), detail = %found.detail, "audit registry incident");
                crate::telemetry::metrics().audit_breaks.add(
                    1,
                    &[opentelemetry::KeyValue::new("kind", found.kind.as_str())],
                );
                registry.incidents.push(found);
            }
            registry
                .incidents
                .extend(new_incidents.into_iter().cloned());
            // The replacement outranks every registry this process saw.
            registry.generation = registry.generation.max(seen);
            merge(&mut registry, heads.iter().cloned());
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
                self.remember(&registry);
                return Ok(Some(Published {
                    generation: registry.generation,
                    chains: registry.heads.len() as u64,
                    timestamp_ms: now,
                }));
            }
        }
        Err(StorageError::unavailable())
    }
}

/// Merges heads into the registry, each chain's head only ever growing;
/// returns the heads that were absent or larger than the registry's.
fn merge(registry: &mut Registry, heads: impl IntoIterator<Item = TreeHead>) -> Vec<TreeHead> {
    let mut grown = Vec::new();
    for head in heads {
        match registry
            .heads
            .iter_mut()
            .find(|h| h.tenant == head.tenant && h.chain_id == head.chain_id)
        {
            Some(old) if old.tree_size >= head.tree_size => {}
            Some(old) => {
                *old = head.clone();
                grown.push(head);
            }
            None => {
                registry.heads.push(head.clone());
                grown.push(head);
            }
        }
    }
    grown
}

fn empty(generation: u64) -> Registry {
    Registry {
        generation,
        timestamp_ms: 0,
        heads: Vec::new(),
        incidents: Vec::new(),
        folded: Default::default(),
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
