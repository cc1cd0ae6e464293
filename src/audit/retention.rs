//! Retention: events older than `audit.retention_days` leave the stream, and
//! nothing unsigned excuses their absence. Before removing them the trimmer
//! signs, per chain, a trim statement naming the first leaf that remains, the
//! chain's head at the trim, the newest removed event's signed time and the
//! retention applied; the leaf hashes and tiles stay, so the chain's heads and
//! proofs still verify.
//!
//! What is trimmed is decided from authenticated facts only, never from a
//! stream id (which any Redis writer chooses with `XADD`): per chain, the run
//! of events from the chain's first retained seq on, each matching its HMAC,
//! linked to the one before, seq after seq, and each signed (`time`, inside
//! the HMAC) before `now - retention`. The run stops at the first event that
//! is too young. An entry that does not verify, breaks the run's order or
//! links, or whose stream id disagrees with its signed time is a break: it is
//! reported (see [`TrimReport`]) and never trimmed, and its chain's trim stops
//! before it. The excused entries are deleted by their exact ids (`XDEL`), so
//! nothing the statement does not cover leaves with them.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;

use super::chain;
use super::heads::{DAY_MS, TrimStatement};
use super::registry::{Loaded, load};
use super::stored_tree;
use super::verify::{Break, BreakKind};
use crate::crypto::live::LiveKeys;
use crate::domain::Tenant;
use crate::proto::AuditEvent;
use crate::storage::audit::{StreamEntry, events_key};
use crate::storage::{StorageError, Store};

const CHUNK: usize = 1000;

/// How far a stream id may be from its event's signed time and still agree
/// with it: up to `STREAM_ID_EARLY_MS` before (the Redis host's clock may
/// trail the service's: the same second the reader looks back to locate an
/// event) and up to `STREAM_ID_LATE_MS` after (the reader's landing window:
/// a call's deadline bounds how late its event lands). Events marked
/// `recorded-late` (appended again after an outage) may land any time later.
pub const STREAM_ID_EARLY_MS: i64 = 1_000;
pub const STREAM_ID_LATE_MS: i64 = super::LANDING_WINDOW_MS;

/// What a trim did: per chain, the first leaf index that remains (the
/// statement signed), and the entries it refused, each a break that the
/// caller logs, counts and records as a registry incident.
#[derive(Debug, Default)]
pub struct TrimReport {
    pub trimmed: BTreeMap<String, u64>,
    pub refused: Vec<Break>,
}

/// One chain's excusable run, as the scan finds it.
#[derive(Default)]
struct Run {
    /// The seq the run expects next.
    next: u64,
    /// The HMAC of the run's last event, once it has one.
    prev: Option<Vec<u8>>,
    /// Seq covered by an earlier statement (its entries may still be here if
    /// a trim stopped between signing and deleting).
    excused: u64,
    newest_ms: u64,
    /// Stream ids to delete.
    ids: Vec<String>,
    /// A break or a too-young event ended the run.
    stopped: bool,
}

/// Trims `tenant`'s events signed before `now_ms - retention_days`.
pub async fn trim(
    store: &Store,
    keys: &LiveKeys,
    tenant: &Tenant,
    now_ms: i64,
    retention_days: u64,
) -> Result<TrimReport, StorageError> {
    let current = keys.current();
    let public = current.receipt_public_key();
    let tenant_keys = current
        .keyring
        .tenant(tenant)
        .map_err(|_| StorageError::Corrupt)?;
    let audit_key = tenant_keys.audit_key();
    let cutoff_ms = now_ms
        .saturating_sub(i64::try_from(retention_days.saturating_mul(DAY_MS)).unwrap_or(i64::MAX));
    let earlier: HashMap<String, TrimStatement> = store
        .audit_trims(tenant.as_str())
        .await?
        .into_iter()
        .filter_map(|(chain, json)| Some((chain, serde_json::from_str(&json).ok()?)))
        .filter(|(chain, s): &(String, TrimStatement)| {
            s.check(&public).is_ok() && s.tenant == tenant.as_str() && &s.chain_id == chain
        })
        .collect();
    let key = events_key(tenant.as_str());
    // Only entries whose stream id is older than the cutoff are candidates; an
    // entry whose stream id is newer waits, whatever it claims.
    let end = format!("({cutoff_ms}-0");
    let mut start = "-".to_owned();
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    let mut report = TrimReport::default();
    loop {
        let entries = store.audit_range(&key, &start, &end, CHUNK).await?;
        for e in &entries {
            start = format!("({}", e.id);
            examine(e, audit_key, cutoff_ms, &earlier, &mut runs, &mut report);
        }
        if entries.len() < CHUNK {
            break;
        }
    }
    let registry = match load(store, &public).await? {
        Loaded::Found {
            registry,
            signed: true,
            ..
        } => Some(registry),
        _ => None,
    };
    let mut doomed: Vec<String> = Vec::new();
    for (chain_id, run) in runs {
        let first_index = run.next - 1;
        let before = earlier.get(&chain_id);
        if first_index > run.excused {
            // The head at the trim: the registry's, or (a chain whose writer
            // died before its first head) the stored tree over what is removed.
            let (tree_size, root_hash) = match registry
                .as_ref()
                .and_then(|r| r.head(tenant.as_str(), &chain_id))
            {
                Some(head) if head.tree_size >= first_index => (head.tree_size, head.root_hash),
                _ => {
                    let tree =
                        stored_tree(store, tenant.as_str(), &chain_id, first_index, &[]).await?;
                    (first_index, tree.root()?)
                }
            };
            let mut statement = TrimStatement {
                tenant: tenant.as_str().to_owned(),
                chain_id: chain_id.clone(),
                first_index,
                tree_size,
                root_hash,
                timestamp_ms: now_ms.max(0) as u64,
                newest_excused_ms: run.newest_ms.max(before.map_or(0, |s| s.newest_excused_ms)),
                retention_days,
                signature: Vec::new(),
            };
            statement.seal(&current.receipt_signer);
            let json = serde_json::to_string(&statement).map_err(|_| StorageError::Corrupt)?;
            store
                .audit_set_trim(tenant.as_str(), &chain_id, &json)
                .await?;
            report.trimmed.insert(chain_id, first_index);
        }
        doomed.extend(run.ids);
    }
    for ids in doomed.chunks(CHUNK) {
        store.audit_delete(tenant.as_str(), ids).await?;
    }
    Ok(report)
}

/// Decides one stream entry: part of its chain's run, the end of it, or a break.
fn examine(
    e: &StreamEntry,
    audit_key: &ring::hmac::Key,
    cutoff_ms: i64,
    earlier: &HashMap<String, TrimStatement>,
    runs: &mut BTreeMap<String, Run>,
    report: &mut TrimReport,
) {
    let refuse = |report: &mut TrimReport, kind, chain: &str, seq, why: String| {
        report.refused.push(Break {
            kind,
            chain_id: chain.to_owned(),
            seq,
            reason: format!("entry {} not trimmed: {why}", e.id),
        });
    };
    let encoded = e.field("e").unwrap_or_default();
    let Ok(event) = AuditEvent::decode(encoded) else {
        return refuse(
            report,
            BreakKind::Edited,
            "",
            0,
            "not a decodable event".into(),
        );
    };
    let (chain_id, seq) = (event.chain_id.as_str(), event.seq);
    let hash = e.field("h").unwrap_or_default();
    if chain_id.is_empty() || seq == 0 || chain::hash_of(audit_key, encoded) != hash {
        // A chain named by an unauthenticated entry is not stopped by it: the
        // entry proves nothing about that chain, and is simply never trimmed.
        // Nor is what it names repeated (logged, signed into the registry):
        // that text is any Redis writer's choice.
        return refuse(
            report,
            BreakKind::Edited,
            "",
            0,
            "it does not match its HMAC".into(),
        );
    }
    let run = runs.entry(chain_id.to_owned()).or_insert_with(|| {
        let excused = earlier.get(chain_id).map_or(0, |s| s.first_index);
        Run {
            next: excused + 1,
            excused,
            ..Run::default()
        }
    });
    if seq <= run.excused && run.prev.is_none() {
        // Left behind by a trim that signed but did not finish deleting: the
        // earlier statement already excuses it.
        run.ids.push(e.id.clone());
        return;
    }
    if run.stopped {
        return;
    }
    let stop = |run: &mut Run, report: &mut TrimReport, kind, why: String| {
        run.stopped = true;
        refuse(report, kind, chain_id, seq, why);
    };
    if seq < run.next {
        return stop(
            run,
            report,
            BreakKind::Reordered,
            format!("seq {seq} appears again after seq {}", run.next - 1),
        );
    }
    if seq > run.next {
        return stop(
            run,
            report,
            BreakKind::Missing,
            format!("seqs {} to {} are missing before it", run.next, seq - 1),
        );
    }
    if let Some(prev) = &run.prev
        && event.prev_hash != *prev
    {
        return stop(
            run,
            report,
            BreakKind::Forked,
            "its link to the previous event does not hold".into(),
        );
    }
    let Some(signed_ms) = event.time.as_ref().map(crate::vault::unix_ms) else {
        return stop(
            run,
            report,
            BreakKind::Edited,
            "it carries no signed time".into(),
        );
    };
    let stream_ms = e.time_ms();
    let late_ok = event
        .detail
        .split(", ")
        .any(|marker| marker == "recorded-late");
    if stream_ms < signed_ms - STREAM_ID_EARLY_MS
        || (!late_ok && stream_ms > signed_ms.saturating_add(STREAM_ID_LATE_MS))
    {
        return stop(
            run,
            report,
            BreakKind::Edited,
            format!(
                "its stream id ({stream_ms} ms) disagrees with its signed time ({signed_ms} ms)"
            ),
        );
    }
    if signed_ms >= cutoff_ms {
        // Not old enough yet: the run ends here, and nothing is wrong.
        run.stopped = true;
        return;
    }
    run.ids.push(e.id.clone());
    run.next = seq + 1;
    run.prev = Some(hash.to_vec());
    run.newest_ms = run.newest_ms.max(signed_ms.max(0) as u64);
}
