//! Audit streams, one per tenant: `fv:audit:{<tenant>}:events` (entries: `e` =
//! encoded AuditEvent without its hash, `h` = its HMAC). Entry ids are Redis
//! stream ids, so time-range queries and time-based trimming are native.
//!
//! Per writer chain, in the tenant's slot:
//! - `head:<chain>`, a HASH (`seq`, `hash`) of the chain's last appended event,
//!   written in the same MULTI as the events, so a writer whose append had an
//!   unknown outcome reads where its chain really ends;
//! - `leaves:<chain>` and `tiles:<chain>`, STRINGs of 32-byte RFC 9162 leaf
//!   hashes and of the roots of each complete 256-leaf tile, appended in the
//!   same MULTI, from which proofs are served without reading the events.
//!
//! Per UTC day, in the tenant's slot, `subjects:<day>`: a HASH of counters
//! over the day's events, `c:<subject_ref>` (how many name the subject) and
//! `v:<subject_ref>` (the time of its newest `Verify` that day), written in the
//! same MULTI as the events: one `HINCRBY` per subject and one `HSET` per batch,
//! and the key expires `audit.retention_days` after its day ends. So Redis holds
//! per subject at most two fields per day of the retention, never an entry per
//! event, and nothing needs pruning. `GetSubjectRecord` reads the days of the
//! retention in one round trip instead of walking the log. It is Redis state a
//! Redis writer can edit: an access report, never evidence (the log is).
//!
//! `fv:audit:{<tenant>}:trims` is a HASH of signed trim statements per chain,
//! `fv:audit:{<tenant>}:verified` where the last clean verification stopped,
//! and `fv:audit:registry` (`gen`, `doc`) the signed registry of every chain.

use std::collections::BTreeMap;

use redis::Value;

use crate::audit::merkle::{HASH_LEN, Hash};

use super::{StorageError, Store};

const REGISTRY: &str = "fv:audit:registry";

pub fn events_key(tenant: &str) -> String {
    format!("fv:audit:{{{tenant}}}:events")
}

fn leaves_key(tenant: &str, chain_id: &str) -> String {
    format!("fv:audit:{{{tenant}}}:leaves:{chain_id}")
}

fn tiles_key(tenant: &str, chain_id: &str) -> String {
    format!("fv:audit:{{{tenant}}}:tiles:{chain_id}")
}

fn trims_key(tenant: &str) -> String {
    format!("fv:audit:{{{tenant}}}:trims")
}

fn verified_key(tenant: &str) -> String {
    format!("fv:audit:{{{tenant}}}:verified")
}

fn subject_counts_key(tenant: &str, day: i64) -> String {
    format!("fv:audit:{{{tenant}}}:subjects:{day}")
}

const DAY_MS: i64 = 86_400_000;

/// What a batch adds to one day's counters: (subject, events), and (subject,
/// time of its last `Verify`).
type DayCounts<'a> = (Vec<(&'a str, u64)>, Vec<(&'a str, i64)>);

fn head_key(tenant: &str, chain_id: &str) -> String {
    format!("fv:audit:{{{tenant}}}:head:{chain_id}")
}

/// Where a writer chain ends after an append.
pub struct ChainHead<'a> {
    pub chain_id: &'a str,
    pub seq: u64,
    pub hash: &'a [u8],
    pub expires_at_ms: i64,
}

/// One entry to append: encoded event and its hash.
pub struct AuditAppend {
    pub event: Vec<u8>,
    pub hash: Vec<u8>,
}

/// What a batch adds to its chain's tree: the leaf hashes of its events and the
/// roots of the tiles they complete, each 32 bytes, concatenated.
pub struct TreeAppend {
    pub leaves: Vec<u8>,
    pub tiles: Vec<u8>,
}

/// What a batch adds to one subject's event counts.
#[derive(Debug, Default)]
pub struct SubjectMarks {
    pub subject_ref: String,
    /// The time in ms of each of the subject's events in the batch.
    pub event_times_ms: Vec<i64>,
    /// The time of the batch's newest `Verify` of the subject.
    pub last_verify_ms: Option<i64>,
}

/// Per-subject event counts, written with the events they count.
pub struct SubjectIndex<'a> {
    pub marks: &'a [SubjectMarks],
    /// How long a day's counters are kept after the day ends.
    pub retention_ms: i64,
}

/// A stream entry as read back.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl StreamEntry {
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Milliseconds part of the stream id.
    pub fn time_ms(&self) -> i64 {
        self.id
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0)
    }
}

impl Store {
    /// Appends a batch of one tenant's events in one MULTI with what they add to
    /// their chain's tree: all are recorded, or none. The chain's head moves to
    /// (`seq`, the last event's hash) in the same MULTI; head, leaves and tiles
    /// are kept until `expires_at_ms`.
    pub async fn audit_append(
        &self,
        tenant: &str,
        chain: &ChainHead<'_>,
        events: &[AuditAppend],
        tree: &TreeAppend,
        subjects: &SubjectIndex<'_>,
    ) -> Result<Vec<String>, StorageError> {
        let key = events_key(tenant);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for e in events {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("e")
                .arg(&e.event)
                .arg("h")
                .arg(&e.hash);
        }
        let head = head_key(tenant, chain.chain_id);
        pipe.hset_multiple(
            &head,
            &[
                ("seq", chain.seq.to_string().into_bytes()),
                ("hash", chain.hash.to_vec()),
            ],
        )
        .ignore()
        .cmd("PEXPIREAT")
        .arg(&head)
        .arg(chain.expires_at_ms)
        .ignore();
        for (key, bytes) in [
            (leaves_key(tenant, chain.chain_id), &tree.leaves),
            (tiles_key(tenant, chain.chain_id), &tree.tiles),
        ] {
            if bytes.is_empty() {
                continue;
            }
            pipe.cmd("APPEND")
                .arg(&key)
                .arg(bytes.as_slice())
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&key)
                .arg(chain.expires_at_ms)
                .ignore();
        }
        // Per day: one HINCRBY per subject, one HSET of the batch's last
        // verifies, one expiry.
        let mut days: BTreeMap<i64, DayCounts<'_>> = BTreeMap::new();
        for marks in subjects.marks {
            let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
            for at in &marks.event_times_ms {
                *counts.entry(at.div_euclid(DAY_MS)).or_default() += 1;
            }
            for (day, count) in counts {
                days.entry(day)
                    .or_default()
                    .0
                    .push((&marks.subject_ref, count));
            }
            if let Some(at) = marks.last_verify_ms {
                let day = days.entry(at.div_euclid(DAY_MS)).or_default();
                day.1.push((&marks.subject_ref, at));
            }
        }
        for (day, (counts, verifies)) in days {
            let key = subject_counts_key(tenant, day);
            for (subject_ref, count) in counts {
                pipe.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("c:{subject_ref}"))
                    .arg(count)
                    .ignore();
            }
            if !verifies.is_empty() {
                let hset = pipe.cmd("HSET").arg(&key);
                for (subject_ref, at) in verifies {
                    hset.arg(format!("v:{subject_ref}")).arg(at);
                }
                hset.ignore();
            }
            pipe.cmd("PEXPIREAT")
                .arg(&key)
                .arg(
                    (day + 1)
                        .saturating_mul(DAY_MS)
                        .saturating_add(subjects.retention_ms),
                )
                .ignore();
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = self.deadline(pipe.query_async(&mut conn)).await?;
        Ok(ids)
    }

    /// How many of a subject's events the counters hold from the day of
    /// `cutoff_ms` to `now_ms`, and when its last `Verify` was: one round trip
    /// of one `HMGET` per day, however long the log.
    pub async fn audit_subject_summary(
        &self,
        tenant: &str,
        subject_ref: &str,
        cutoff_ms: i64,
        now_ms: i64,
    ) -> Result<(u64, Option<i64>), StorageError> {
        let (count_field, verify_field) = (format!("c:{subject_ref}"), format!("v:{subject_ref}"));
        let mut pipe = redis::pipe();
        for day in cutoff_ms.div_euclid(DAY_MS)..=now_ms.div_euclid(DAY_MS) {
            pipe.cmd("HMGET")
                .arg(subject_counts_key(tenant, day))
                .arg(&count_field)
                .arg(&verify_field);
        }
        let mut conn = self.conn.clone();
        let days: Vec<(Option<u64>, Option<i64>)> =
            self.deadline(pipe.query_async(&mut conn)).await?;
        let count = days
            .iter()
            .filter_map(|d| d.0)
            .fold(0u64, u64::saturating_add);
        let last_verify = days
            .iter()
            .filter_map(|d| d.1)
            .filter(|ms| *ms >= cutoff_ms)
            .max();
        Ok((count, last_verify))
    }

    /// Waits until `replica_acks` replicas hold everything appended to the
    /// chain so far. The append itself went out on the shared connection, which
    /// a blocked `WAIT` must never hold up, and `WAIT` counts only the writes of
    /// its own connection: so a durable connection touches the chain's head
    /// record (same slot, after the append) and waits for that.
    pub async fn audit_replicated(&self, tenant: &str, chain_id: &str) -> Result<(), StorageError> {
        if !self.waits_for_replicas() {
            return Ok(());
        }
        let mut touch = redis::cmd("HINCRBY");
        touch.arg(head_key(tenant, chain_id)).arg("acks").arg(1);
        let _: i64 = self.durable(touch).await?;
        Ok(())
    }

    /// Where a writer chain really ends in Redis: (seq, hash of that event).
    pub async fn audit_chain_head(
        &self,
        tenant: &str,
        chain_id: &str,
    ) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let mut conn = self.conn.clone();
        let (seq, hash): (Option<String>, Option<Vec<u8>>) = self
            .deadline(
                redis::cmd("HMGET")
                    .arg(head_key(tenant, chain_id))
                    .arg("seq")
                    .arg("hash")
                    .query_async(&mut conn),
            )
            .await?;
        match (seq, hash) {
            (Some(seq), Some(hash)) => Ok(Some((
                seq.parse().map_err(|_| StorageError::Corrupt)?,
                hash,
            ))),
            (None, None) => Ok(None),
            _ => Err(StorageError::Corrupt),
        }
    }

    /// Leaf hashes `start..end` of a chain (fewer if the chain is shorter).
    pub async fn audit_leaves(
        &self,
        tenant: &str,
        chain_id: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<Hash>, StorageError> {
        self.hashes(&leaves_key(tenant, chain_id), start, end).await
    }

    /// Roots of the chain's first `count` complete tiles (fewer if it has fewer).
    pub async fn audit_tiles(
        &self,
        tenant: &str,
        chain_id: &str,
        count: u64,
    ) -> Result<Vec<Hash>, StorageError> {
        self.hashes(&tiles_key(tenant, chain_id), 0, count).await
    }

    async fn hashes(&self, key: &str, start: u64, end: u64) -> Result<Vec<Hash>, StorageError> {
        if end <= start {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let bytes: Vec<u8> = self
            .deadline(
                redis::cmd("GETRANGE")
                    .arg(key)
                    .arg(start * HASH_LEN as u64)
                    .arg(end * HASH_LEN as u64 - 1)
                    .query_async(&mut conn),
            )
            .await?;
        if !bytes.len().is_multiple_of(HASH_LEN) {
            return Err(StorageError::Corrupt);
        }
        Ok(bytes
            .chunks_exact(HASH_LEN)
            .map(|c| c.try_into().unwrap_or([0; HASH_LEN]))
            .collect())
    }

    /// Drops the events with exactly these stream ids (never a range: a
    /// stream id is the Redis writer's choice). The signed trim statements
    /// that excuse their absence are written before, by the caller.
    pub async fn audit_delete(&self, tenant: &str, ids: &[String]) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut delete = redis::cmd("XDEL");
        delete.arg(events_key(tenant)).arg(ids);
        let mut conn = self.conn.clone();
        let _: i64 = self.deadline(delete.query_async(&mut conn)).await?;
        Ok(())
    }

    /// Signed trim statements (JSON) per chain of a tenant.
    pub async fn audit_trims(&self, tenant: &str) -> Result<Vec<(String, String)>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("HGETALL")
                .arg(trims_key(tenant))
                .query_async(&mut conn),
        )
        .await
    }

    pub async fn audit_set_trim(
        &self,
        tenant: &str,
        chain_id: &str,
        statement: &str,
    ) -> Result<(), StorageError> {
        let mut set = redis::cmd("HSET");
        set.arg(trims_key(tenant)).arg(chain_id).arg(statement);
        let mut conn = self.conn.clone();
        let _: i64 = self.deadline(set.query_async(&mut conn)).await?;
        Ok(())
    }

    /// The signed registry: (its `gen` field, its JSON), if any.
    pub async fn audit_registry(&self) -> Result<Option<(String, String)>, StorageError> {
        let mut conn = self.conn.clone();
        let (generation, doc): (Option<String>, Option<String>) = self
            .deadline(
                redis::cmd("HMGET")
                    .arg(REGISTRY)
                    .arg("gen")
                    .arg("doc")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(match (generation, doc) {
            (None, None) => None,
            (generation, doc) => Some((generation.unwrap_or_default(), doc.unwrap_or_default())),
        })
    }

    /// Replaces the registry if its `gen` field is still `expected` (empty: no
    /// registry), so that writers of many replicas never overwrite each other's
    /// heads. Returns whether it was replaced.
    pub async fn audit_swap_registry(
        &self,
        expected: &str,
        generation: u64,
        doc: &str,
    ) -> Result<bool, StorageError> {
        let mut swap = redis::cmd("EVAL");
        swap.arg(super::scripts::REGISTRY_SWAP)
            .arg(1)
            .arg(REGISTRY)
            .arg(expected)
            .arg(generation)
            .arg(doc);
        // Not a durable write: a WAIT for a lagging replica would hold up the
        // calls' durable writes queued on the same connection. Replication is in
        // order, and a registry lost in a failover is an incident the next
        // writer signs.
        let mut conn = self.conn.clone();
        let swapped: i64 = self.deadline(swap.query_async(&mut conn)).await?;
        Ok(swapped == 1)
    }

    /// Where the last clean verification of a tenant stopped (sealed by the reader).
    pub async fn audit_verified(&self, tenant: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("GET")
                .arg(verified_key(tenant))
                .query_async(&mut conn),
        )
        .await
    }

    pub async fn audit_set_verified(&self, tenant: &str, state: &[u8]) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let () = self
            .deadline(
                redis::cmd("SET")
                    .arg(verified_key(tenant))
                    .arg(state)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// The stream's length and last entry id, read together.
    pub async fn audit_extent(&self, tenant: &str) -> Result<(u64, Option<String>), StorageError> {
        let key = events_key(tenant);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XLEN")
            .arg(&key)
            .cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut conn = self.conn.clone();
        let (len, last): (u64, Value) = self.deadline(pipe.query_async(&mut conn)).await?;
        Ok((len, parse_entries(last)?.pop().map(|e| e.id)))
    }

    /// Entries of a stream from `start` (inclusive id, or "(id" exclusive, or "-")
    /// to `end`, at most `count`.
    pub async fn audit_range(
        &self,
        key: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StorageError> {
        let mut conn = self.conn.clone();
        let reply: Value = self
            .deadline(
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(end)
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
        parse_entries(reply)
    }
}

fn parse_entries(reply: Value) -> Result<Vec<StreamEntry>, StorageError> {
    let Value::Array(items) = reply else {
        return Err(StorageError::Corrupt);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            return Err(StorageError::Corrupt);
        };
        if pair.len() != 2 {
            return Err(StorageError::Corrupt);
        }
        let fields = pair.pop();
        let id = match pair.pop() {
            Some(Value::BulkString(b)) => {
                String::from_utf8(b).map_err(|_| StorageError::Corrupt)?
            }
            Some(Value::SimpleString(s)) => s,
            _ => return Err(StorageError::Corrupt),
        };
        let Some(Value::Array(flat)) = fields else {
            return Err(StorageError::Corrupt);
        };
        let mut fields = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(Value::BulkString(k)), Some(Value::BulkString(v))) = (it.next(), it.next())
        {
            fields.push((String::from_utf8(k).map_err(|_| StorageError::Corrupt)?, v));
        }
        out.push(StreamEntry { id, fields });
    }
    Ok(out)
}
