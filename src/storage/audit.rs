//! Audit streams, one per tenant: `fv:audit:{<tenant>}:events` (entries: `e` =
//! encoded AuditEvent without its hash, `h` = its HMAC) and
//! `fv:audit:{<tenant>}:checkpoints` (signed chain heads). Entry ids are Redis
//! stream ids, so time-range queries and time-based trimming are native.
//! `fv:audit:tenants` is the SET of tenants that have a stream.
//! `fv:audit:{<tenant>}:head:<chain>` is a HASH (`seq`, `hash`) of each writer
//! chain's last appended event, written in the same MULTI as the events, so a
//! writer whose append had an unknown outcome reads where its chain really ends.

use redis::Value;

use super::{StorageError, Store};

const AUDIT_TENANTS: &str = "fv:audit:tenants";

pub fn events_key(tenant: &str) -> String {
    format!("fv:audit:{{{tenant}}}:events")
}

pub fn checkpoints_key(tenant: &str) -> String {
    format!("fv:audit:{{{tenant}}}:checkpoints")
}

fn head_key(tenant: &str, chain_id: &str) -> String {
    format!("fv:audit:{{{tenant}}}:head:{chain_id}")
}

fn trimmed_key(tenant: &str) -> String {
    format!("fv:audit:{{{tenant}}}:trimmed-before")
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

pub struct CheckpointAppend {
    pub chain_id: String,
    pub seq: u64,
    pub head: Vec<u8>,
    pub time_ms: i64,
    pub signature: Vec<u8>,
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
    /// Appends a batch of one tenant's events (and optionally a checkpoint) in one
    /// MULTI: all are recorded, or none.
    /// The chain's head moves to (`head_seq`, the last event's hash) in the same
    /// MULTI, and is kept for `head_kept_ms`.
    pub async fn audit_append(
        &self,
        tenant: &str,
        chain: &ChainHead<'_>,
        events: &[AuditAppend],
        checkpoint: Option<&CheckpointAppend>,
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
        if let Some(cp) = checkpoint {
            pipe.add_command(checkpoint_command(tenant, cp)).ignore();
        }
        let mut conn = self.conn.clone();
        let ids: Vec<String> = self.deadline(pipe.query_async(&mut conn)).await?;
        Ok(ids)
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

    pub async fn audit_checkpoint(
        &self,
        tenant: &str,
        cp: &CheckpointAppend,
    ) -> Result<(), StorageError> {
        let _: String = self.durable(checkpoint_command(tenant, cp)).await?;
        Ok(())
    }

    /// Drops events (and checkpoints) older than `cutoff_ms`, and remembers that
    /// it did, so a verifier knows chains may legitimately start later.
    pub async fn audit_trim(&self, tenant: &str, cutoff_ms: i64) -> Result<(), StorageError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XTRIM")
            .arg(events_key(tenant))
            .arg("MINID")
            .arg(cutoff_ms)
            .ignore()
            .cmd("XTRIM")
            .arg(checkpoints_key(tenant))
            .arg("MINID")
            .arg(cutoff_ms)
            .ignore()
            .set(trimmed_key(tenant), cutoff_ms)
            .ignore();
        let mut conn = self.conn.clone();
        let () = self.deadline(pipe.query_async(&mut conn)).await?;
        Ok(())
    }

    pub async fn audit_trimmed_before(&self, tenant: &str) -> Result<Option<i64>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("GET")
                .arg(trimmed_key(tenant))
                .query_async(&mut conn),
        )
        .await
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

fn checkpoint_command(tenant: &str, cp: &CheckpointAppend) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(checkpoints_key(tenant))
        .arg("*")
        .arg("chain")
        .arg(&cp.chain_id)
        .arg("seq")
        .arg(cp.seq)
        .arg("head")
        .arg(&cp.head)
        .arg("time")
        .arg(cp.time_ms)
        .arg("sig")
        .arg(&cp.signature);
    cmd
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

impl Store {
    /// Records that `tenant` has an audit stream. A set, not a key scan, because
    /// a scan sees one node of a Redis Cluster.
    pub async fn audit_register_tenant(&self, tenant: &str) -> Result<(), StorageError> {
        let mut register = redis::cmd("SADD");
        register.arg(AUDIT_TENANTS).arg(tenant);
        let _: i64 = self.durable(register).await?;
        Ok(())
    }

    /// Tenants that have an audit stream, sorted.
    pub async fn audit_tenants(&self) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn.clone();
        let mut tenants: Vec<String> = self
            .deadline(
                redis::cmd("SMEMBERS")
                    .arg(AUDIT_TENANTS)
                    .query_async(&mut conn),
            )
            .await?;
        tenants.sort();
        Ok(tenants)
    }
}
