//! Retention: events older than `audit.retention_days` leave the stream, and
//! nothing unsigned excuses their absence. Before removing them the trimmer
//! signs, per chain, a trim statement naming the first leaf that remains and the
//! chain's head at the trim; the leaf hashes and tiles stay, so the chain's
//! heads and proofs still verify.

use prost::Message as _;

use super::heads::TrimStatement;
use super::registry::{Loaded, load};
use super::stored_tree;
use crate::crypto::live::LiveKeys;
use crate::domain::Tenant;
use crate::proto::AuditEvent;
use crate::storage::audit::events_key;
use crate::storage::{StorageError, Store};

const CHUNK: usize = 1000;

pub async fn trim(
    store: &Store,
    keys: &LiveKeys,
    tenant: &Tenant,
    cutoff_ms: i64,
) -> Result<(), StorageError> {
    let key = events_key(tenant.as_str());
    // Stream ids below `<cutoff>-0` are what XTRIM MINID removes.
    let end = format!("({cutoff_ms}-0");
    let mut start = "-".to_owned();
    let mut removed: std::collections::BTreeMap<String, u64> = Default::default();
    loop {
        let entries = store.audit_range(&key, &start, &end, CHUNK).await?;
        for e in &entries {
            start = format!("({}", e.id);
            let Some(event) = e.field("e").and_then(|b| AuditEvent::decode(b).ok()) else {
                continue;
            };
            let last = removed.entry(event.chain_id).or_default();
            *last = (*last).max(event.seq);
        }
        if entries.len() < CHUNK {
            break;
        }
    }
    if removed.is_empty() {
        return Ok(());
    }
    let current = keys.current();
    let public = current.receipt_public_key();
    let registry = match load(store, &public).await? {
        Loaded::Found {
            registry,
            signed: true,
            ..
        } => Some(registry),
        _ => None,
    };
    let earlier: std::collections::HashMap<String, TrimStatement> = store
        .audit_trims(tenant.as_str())
        .await?
        .into_iter()
        .filter_map(|(chain, json)| Some((chain, serde_json::from_str(&json).ok()?)))
        .filter(|(_, s): &(String, TrimStatement)| s.verify(&public))
        .collect();
    let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
    for (chain_id, last_removed) in removed {
        let first_index = earlier
            .get(&chain_id)
            .map_or(last_removed, |s| s.first_index.max(last_removed));
        // The head at the trim: the registry's, or (a chain whose writer died
        // before its first head) the stored tree over what is removed.
        let (tree_size, root_hash) = match registry
            .as_ref()
            .and_then(|r| r.head(tenant.as_str(), &chain_id))
        {
            Some(head) if head.tree_size >= first_index => (head.tree_size, head.root_hash),
            _ => {
                let tree = stored_tree(store, tenant.as_str(), &chain_id, first_index, &[]).await?;
                (first_index, tree.root()?)
            }
        };
        let mut statement = TrimStatement {
            tenant: tenant.as_str().to_owned(),
            chain_id: chain_id.clone(),
            first_index,
            tree_size,
            root_hash,
            timestamp_ms: now,
            signature: Vec::new(),
        };
        statement.seal(&current.receipt_signer);
        let json = serde_json::to_string(&statement).map_err(|_| StorageError::Corrupt)?;
        store
            .audit_set_trim(tenant.as_str(), &chain_id, &json)
            .await?;
    }
    store.audit_trim(tenant.as_str(), cutoff_ms).await
}
