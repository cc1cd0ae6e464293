//! Deletion tickets and the durable deletion queue. Everything lives in one hash
//! slot (`{fv-deletion}`), so creating a ticket, queueing it, claiming it and
//! completing it are each one atomic script, on a single Redis or a Cluster.
//!
//! - `fv:{fv-deletion}:ticket:<tenant>:<id>`: HASH, the ticket (no biometric data).
//! - `…:queue`: ZSET of `<tenant>/<id>` by due time (ms).
//! - `…:claims`: ZSET of claimed members by claim expiry; an expired claim (its
//!   worker died) goes back to the queue.
//! - `…:deadlines` and `…:deadlines:<tenant>`: ZSETs of pending tickets by
//!   deadline, for the overdue count and the compliance report.
//! - `…:unshredded`: ZSET of completed tickets by the newest key epoch that
//!   could have wrapped their erased DEKs; once the keyring's oldest epoch is
//!   newer, the ticket is looked at for its shred statement. Only a hint of
//!   which tickets to look at: the statement is built from the ticket's signed
//!   receipt and the keyring, never from this score or the ticket's fields.
//! - `…:by-subject:<tenant>:<subject_ref>`: SET of the subject's ticket
//!   members, for subject access; it expires with the last ticket completed.
//! - `…:unflagged`: ZSET of cancellation tickets whose subject is not yet marked
//!   cancelled. The ticket is the intent of a cancellation: it is written first,
//!   and the reconciler marks any subject a cut-short call left unmarked.
//!
//! Every erasure starts as a pending ticket, so none can complete without its
//! receipt: one that runs at once is created claimed by the call running it, and
//! if that call dies the claim expires and the deletion worker finishes it.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::{StorageError, Store, field_number, field_text};

const SLOT: &str = "fv:{fv-deletion}";

/// KEYS: ticket, queue, deadlines, tenant deadlines, claims, unflagged, the
/// subject's tickets.
/// ARGV: member, due_ms, deadline_ms, claimed-until ms (0: queue it for its due
/// time), needs a cancellation mark (0|1), now_ms, then field/value pairs.
/// Creates the pending ticket unless it exists; returns 1 if created, 0 if it
/// existed.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'state', 'pending', unpack(fields))
redis.call('SADD', KEYS[7], ARGV[1])
if tonumber(ARGV[4]) > 0 then
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[6], ARGV[6], ARGV[1])
end
return 1
"#;

/// KEYS: ticket, unflagged. ARGV: member, templates held.
/// The subject is marked cancelled: records what it held then, unless an
/// erasure already completed the ticket.
const FLAGGED: &str = r#"
if redis.call('HGET', KEYS[1], 'state') == 'pending' then
  redis.call('HSET', KEYS[1], 'templates', ARGV[2])
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: queue, claims. ARGV: now_ms, claim_until_ms, max.
const CLAIM: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[1], ARGV[1], m)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], ARGV[2], m)
end
return due
"#;

/// KEYS: ticket, claims, deadlines, tenant deadlines, queue, unflagged,
/// unshredded, the subject's tickets.
/// ARGV: member, expire-at ms, shred-after epoch, then field/value pairs.
/// Completes a pending ticket once; returns 1 if it did, 0 if already completed.
const COMPLETE: &str = r#"
local done = redis.call('HGET', KEYS[1], 'state') == 'completed'
if not done then
  local fields = {}
  for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[1], 'state', 'completed', unpack(fields))
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  -- The subject's index lives as long as its longest-kept ticket.
  local ttl = redis.call('PTTL', KEYS[8])
  if ttl == -1 then
    redis.call('PEXPIREAT', KEYS[8], ARGV[2])
  elseif ttl > 0 then
    redis.call('PEXPIREAT', KEYS[8], ARGV[2], 'GT')
  end
  if ARGV[3] ~= '' then
    redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
  end
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
if done then return 0 end
return 1
"#;

/// KEYS: ticket, unshredded. ARGV: member, then field/value pairs.
/// Adds the shred statement to a completed ticket, once; forgets a ticket that
/// has expired meanwhile. Returns 1 if added.
const SHRED: &str = r#"
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') ~= 'completed' or redis.call('HEXISTS', KEYS[1], 'shredded_ms') == 1 then
  return 0
end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return 1
"#;

/// KEYS: ticket, deadlines, tenant deadlines. ARGV: member, deadline_ms,
/// provisional (0|1). Restates a pending ticket's deadline; returns 1 if it
/// did, 0 if the ticket is completed or gone.
const RESTATE_DEADLINE: &str = r#"
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then
  return 0
end
redis.call('HSET', KEYS[1], 'deadline_ms', ARGV[2], 'deadline_provisional', ARGV[3])
redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
return 1
"#;

static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM));

/// A ticket as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketRecord {
    pub tenant: String,
    pub ticket_id: String,
    pub kind: String,
    pub subject_ref: String,
    pub completed: bool,
    pub requested_at_ms: i64,
    pub deadline_ms: i64,
    /// The deadline was counted without a published holiday schedule for some
    /// of its days: it may be earlier than the official one, never later.
    pub deadline_provisional: bool,
    pub due_ms: i64,
    pub completed_at_ms: Option<i64>,
    /// Templates held when the request was made (what the erasure removes).
    pub templates: u64,
    /// The caller's note, sealed under the tenant KEK (`crypto::envelope`).
    pub sealed_reason: Vec<u8>,
    pub receipt_body: Vec<u8>,
    pub receipt_signature: Vec<u8>,
    /// How many times a worker ran the erasure (1 when all went well).
    pub erasures: u64,
    /// The key epochs in the keyring at completion, as stored: unsigned, so
    /// nothing is decided on it (the signed receipt body names the same list).
    pub key_epochs: Vec<u32>,
    /// When all of `key_epochs` had been retired, and the signed statement.
    pub shredded_at_ms: Option<i64>,
    pub shred_body: Vec<u8>,
    pub shred_signature: Vec<u8>,
    /// What a partial erasure covers: the purposes withdrawn, or the template
    /// past its retention.
    pub scope: Vec<String>,
}

/// What completing a ticket records.
pub struct Completion<'a> {
    pub subject_ref: &'a str,
    pub completed_at_ms: i64,
    pub receipt_body: &'a [u8],
    pub receipt_signature: &'a [u8],
    /// When the ticket (and its receipt) expires.
    pub expires_at_ms: i64,
    /// The key epochs in the keyring at completion.
    pub key_epochs: &'a [u32],
    /// The newest of them, when their retirement will shred the erased DEKs
    /// (None when one of them shares the identity root and never can be).
    pub shred_after_epoch: Option<u32>,
}

/// How a new pending ticket is taken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pickup {
    /// The calling process runs it now; past this claim expiry (ms) the
    /// deletion worker takes it over.
    ClaimedUntil(i64),
    /// The deletion worker runs it when due.
    Queued,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletionBacklog {
    pub pending: u64,
    pub overdue: u64,
    pub oldest_deadline_ms: Option<i64>,
}

fn ticket_key(tenant: &str, ticket_id: &str) -> String {
    format!("{SLOT}:ticket:{tenant}:{ticket_id}")
}

fn member(tenant: &str, ticket_id: &str) -> String {
    format!("{tenant}/{ticket_id}")
}

fn queue_key() -> String {
    format!("{SLOT}:queue")
}
fn claims_key() -> String {
    format!("{SLOT}:claims")
}
fn deadlines_key() -> String {
    format!("{SLOT}:deadlines")
}
fn tenant_deadlines_key(tenant: &str) -> String {
    format!("{SLOT}:deadlines:{tenant}")
}
fn unflagged_key() -> String {
    format!("{SLOT}:unflagged")
}
fn unshredded_key() -> String {
    format!("{SLOT}:unshredded")
}
fn subject_tickets_key(tenant: &str, subject_ref: &str) -> String {
    format!("{SLOT}:by-subject:{tenant}:{subject_ref}")
}

fn split_member(m: &str) -> Option<(String, String)> {
    m.split_once('/')
        .map(|(t, id)| (t.to_owned(), id.to_owned()))
}

impl Store {
    /// Stores a new pending ticket, claimed or queued, and for a cancellation
    /// remembers that its subject is still to be marked. Idempotent: an existing
    /// ticket with that id is left as it is (returns false).
    pub async fn create_ticket(
        &self,
        t: &TicketRecord,
        pickup: Pickup,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        let needs_flag = t.kind == crate::domain::deletion::DeletionKind::Cancel.as_str();
        let mut inv = super::eval(
            CREATE,
            &[
                &ticket_key(&t.tenant, &t.ticket_id),
                &queue_key(),
                &deadlines_key(),
                &tenant_deadlines_key(&t.tenant),
                &claims_key(),
                &unflagged_key(),
                &subject_tickets_key(&t.tenant, &t.subject_ref),
            ],
        );
        inv.arg(member(&t.tenant, &t.ticket_id))
            .arg(t.due_ms)
            .arg(t.deadline_ms)
            .arg(match pickup {
                Pickup::ClaimedUntil(until) => until,
                Pickup::Queued => 0,
            })
            .arg(if needs_flag { "1" } else { "0" })
            .arg(now_ms);
        inv.arg("kind").arg(&t.kind);
        inv.arg("subject_ref").arg(&t.subject_ref);
        inv.arg("requested_ms").arg(t.requested_at_ms);
        inv.arg("deadline_ms").arg(t.deadline_ms);
        inv.arg("due_ms").arg(t.due_ms);
        inv.arg("templates").arg(t.templates);
        inv.arg("reason_sealed").arg(&t.sealed_reason);
        inv.arg("scope").arg(t.scope.join(","));
        if t.deadline_provisional {
            inv.arg("deadline_provisional").arg("1");
        }
        let created: i64 = self.durable(inv).await?;
        Ok(created == 1)
    }

    /// The cancellation's subject is marked: records how many templates it held.
    pub async fn ticket_flagged(
        &self,
        tenant: &str,
        ticket_id: &str,
        templates_held: u64,
    ) -> Result<(), StorageError> {
        let mut inv = super::eval(FLAGGED, &[&ticket_key(tenant, ticket_id), &unflagged_key()]);
        inv.arg(member(tenant, ticket_id)).arg(templates_held);
        let _: i64 = self.durable(inv).await?;
        Ok(())
    }

    /// Cancellations whose subject may not be marked yet, created before
    /// `before_ms`: (tenant, ticket id).
    pub async fn unflagged_tickets(
        &self,
        before_ms: i64,
        max: usize,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let members = self.due_members(&unflagged_key(), before_ms, max).await?;
        Ok(members.iter().filter_map(|m| split_member(m)).collect())
    }

    pub async fn ticket(
        &self,
        tenant: &str,
        ticket_id: &str,
    ) -> Result<Option<TicketRecord>, StorageError> {
        let mut conn = self.conn.clone();
        let fields: Vec<(String, Vec<u8>)> = self
            .deadline(
                redis::cmd("HGETALL")
                    .arg(ticket_key(tenant, ticket_id))
                    .query_async(&mut conn),
            )
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut t = TicketRecord {
            tenant: tenant.to_owned(),
            ticket_id: ticket_id.to_owned(),
            ..TicketRecord::default()
        };
        for (k, v) in fields {
            match k.as_str() {
                "state" => t.completed = v == b"completed",
                "kind" => t.kind = field_text(&v)?,
                "subject_ref" => t.subject_ref = field_text(&v)?,
                "requested_ms" => t.requested_at_ms = field_number(&v)?,
                "deadline_ms" => t.deadline_ms = field_number(&v)?,
                "deadline_provisional" => t.deadline_provisional = v == b"1",
                "due_ms" => t.due_ms = field_number(&v)?,
                "completed_ms" => t.completed_at_ms = Some(field_number(&v)?),
                "templates" => t.templates = field_number(&v)?.max(0) as u64,
                "reason_sealed" => t.sealed_reason = v,
                "receipt_body" => t.receipt_body = v,
                "receipt_sig" => t.receipt_signature = v,
                "erasures" => t.erasures = field_number(&v)?.max(0) as u64,
                "key_epochs" => {
                    t.key_epochs = field_text(&v)?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().map_err(|_| StorageError::Corrupt))
                        .collect::<Result<_, _>>()?
                }
                "shredded_ms" => t.shredded_at_ms = Some(field_number(&v)?),
                "shred_body" => t.shred_body = v,
                "shred_sig" => t.shred_signature = v,
                "scope" => {
                    t.scope = field_text(&v)?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                _ => {}
            }
        }
        Ok(Some(t))
    }

    /// Claims up to `max` due tickets for `claim_for_ms`; returns (tenant, ticket id).
    pub async fn claim_due(
        &self,
        now_ms: i64,
        claim_for_ms: i64,
        max: usize,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let mut inv = CLAIM_SCRIPT.prepare_invoke();
        inv.key(queue_key())
            .key(claims_key())
            .arg(now_ms)
            .arg(now_ms + claim_for_ms)
            .arg(max);
        let mut conn = self.conn.clone();
        let members: Vec<String> = self.deadline(inv.invoke_async(&mut conn)).await?;
        Ok(members.iter().filter_map(|m| split_member(m)).collect())
    }

    /// Counts one erasure run on a ticket (for the exactly-once guarantee's proof).
    pub async fn count_erasure(&self, tenant: &str, ticket_id: &str) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .deadline(
                redis::cmd("HINCRBY")
                    .arg(ticket_key(tenant, ticket_id))
                    .arg("erasures")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    pub async fn complete_ticket(
        &self,
        tenant: &str,
        ticket_id: &str,
        completion: &Completion<'_>,
    ) -> Result<bool, StorageError> {
        let mut inv = super::eval(
            COMPLETE,
            &[
                &ticket_key(tenant, ticket_id),
                &claims_key(),
                &deadlines_key(),
                &tenant_deadlines_key(tenant),
                &queue_key(),
                &unflagged_key(),
                &unshredded_key(),
                &subject_tickets_key(tenant, completion.subject_ref),
            ],
        );
        let epochs: Vec<String> = completion.key_epochs.iter().map(u32::to_string).collect();
        inv.arg(member(tenant, ticket_id))
            .arg(completion.expires_at_ms)
            .arg(
                completion
                    .shred_after_epoch
                    .map_or_else(String::new, |e| e.to_string()),
            )
            .arg("completed_ms")
            .arg(completion.completed_at_ms)
            .arg("receipt_body")
            .arg(completion.receipt_body)
            .arg("receipt_sig")
            .arg(completion.receipt_signature)
            .arg("key_epochs")
            .arg(epochs.join(","));
        let done: i64 = self.durable(inv).await?;
        Ok(done == 1)
    }

    /// The ids of the subject's tickets still kept (subject access).
    pub async fn subject_tickets(
        &self,
        tenant: &str,
        subject_ref: &str,
    ) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = self
            .deadline(
                redis::cmd("SMEMBERS")
                    .arg(subject_tickets_key(tenant, subject_ref))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| split_member(m))
            .filter(|(t, _)| t == tenant)
            .map(|(_, id)| id)
            .collect())
    }

    /// Completed tickets whose key epochs are all older than `oldest_epoch`
    /// (all retired): (tenant, ticket id).
    pub async fn shreddable_tickets(
        &self,
        oldest_epoch: u32,
        max: usize,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let members = self
            .due_members(&unshredded_key(), i64::from(oldest_epoch) - 1, max)
            .await?;
        Ok(members.iter().filter_map(|m| split_member(m)).collect())
    }

    /// Drops a ticket from the shred index (it expired, or can never be shredded).
    pub async fn forget_shred_candidate(
        &self,
        tenant: &str,
        ticket_id: &str,
    ) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .deadline(
                redis::cmd("ZREM")
                    .arg(unshredded_key())
                    .arg(member(tenant, ticket_id))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Files a ticket in the shred index under the newest epoch whose
    /// retirement it waits for (a score read from its signed receipt, or the
    /// epoch a still-readable copy may be wrapped under), replacing whatever
    /// score the index held.
    pub async fn reindex_shred_candidate(
        &self,
        tenant: &str,
        ticket_id: &str,
        after_epoch: u32,
    ) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .deadline(
                redis::cmd("ZADD")
                    .arg(unshredded_key())
                    .arg(after_epoch)
                    .arg(member(tenant, ticket_id))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// Records a ticket's shred statement; false if it already had one or is gone.
    pub async fn shred_ticket(
        &self,
        tenant: &str,
        ticket_id: &str,
        shredded_at_ms: i64,
        body: &[u8],
        signature: &[u8],
    ) -> Result<bool, StorageError> {
        let mut inv = super::eval(SHRED, &[&ticket_key(tenant, ticket_id), &unshredded_key()]);
        inv.arg(member(tenant, ticket_id))
            .arg("shredded_ms")
            .arg(shredded_at_ms)
            .arg("shred_body")
            .arg(body)
            .arg("shred_sig")
            .arg(signature);
        let added: i64 = self.durable(inv).await?;
        Ok(added == 1)
    }

    /// Pending and overdue deletions, for one tenant or (None) the deployment.
    pub async fn deletion_backlog(
        &self,
        tenant: Option<&str>,
        now_ms: i64,
    ) -> Result<DeletionBacklog, StorageError> {
        let key = tenant.map_or_else(deadlines_key, tenant_deadlines_key);
        let mut pipe = redis::pipe();
        pipe.zcard(&key)
            .zcount(&key, "-inf", now_ms)
            .cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        let mut conn = self.conn.clone();
        let (pending, overdue, oldest): (u64, u64, Value) =
            self.deadline(pipe.query_async(&mut conn)).await?;
        let oldest_deadline_ms = match oldest {
            Value::Array(items) => items.get(1).and_then(|v| match v {
                Value::BulkString(b) => std::str::from_utf8(b)
                    .ok()?
                    .parse::<f64>()
                    .ok()
                    .map(|f| f as i64),
                Value::Double(d) => Some(*d as i64),
                _ => None,
            }),
            _ => None,
        };
        Ok(DeletionBacklog {
            pending,
            overdue,
            oldest_deadline_ms,
        })
    }

    /// Every pending ticket, (tenant, ticket id), read in pages of `page`.
    pub async fn pending_tickets(
        &self,
        page: usize,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let page = page.max(1);
        let mut all = Vec::new();
        let mut conn = self.conn.clone();
        loop {
            let start = all.len();
            let members: Vec<String> = self
                .deadline(
                    redis::cmd("ZRANGE")
                        .arg(deadlines_key())
                        .arg(start)
                        .arg(start + page - 1)
                        .query_async(&mut conn),
                )
                .await?;
            let done = members.len() < page;
            all.extend(members.iter().filter_map(|m| split_member(m)));
            if done || all.len() == start {
                return Ok(all);
            }
        }
    }

    /// Restates a pending ticket's deadline (a holiday schedule was published);
    /// false if the ticket is completed or gone.
    pub async fn restate_deadline(
        &self,
        tenant: &str,
        ticket_id: &str,
        deadline_ms: i64,
        provisional: bool,
    ) -> Result<bool, StorageError> {
        let mut inv = super::eval(
            RESTATE_DEADLINE,
            &[
                &ticket_key(tenant, ticket_id),
                &deadlines_key(),
                &tenant_deadlines_key(tenant),
            ],
        );
        inv.arg(member(tenant, ticket_id))
            .arg(deadline_ms)
            .arg(if provisional { "1" } else { "0" });
        let restated: i64 = self.durable(inv).await?;
        Ok(restated == 1)
    }
}
