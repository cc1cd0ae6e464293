//! Counts the regulator asks for: subjects stored per tenant (against the filing
//! threshold) and subjects per consented purpose. Kept as sets of pseudonyms so
//! every update is idempotent and a count is exact: `SCARD`.
//!
//! - `fv:tenants`: SET of tenants that ever enrolled.
//! - `fv:filing:threshold-reached`: when the deployment's count first reached
//!   the filing threshold (ms); `fv:ledger:{<tenant>}:threshold-reached`, the
//!   same for one tenant, set by the ledger update that reached it.
//! - `fv:ledger:{<tenant>}:subjects`: SET of subject_refs holding templates.
//! - `fv:ledger:{<tenant>}:purposes`: SET of purposes ever consented.
//! - `fv:ledger:{<tenant>}:consent:<purpose>`: SET of subject_refs covered.
//! - `fv:ledger:{<tenant>}:expiry`: ZSET of `<subject_ref>/<template_id>` by
//!   retention expiry (ms), when the tenant sets a maximum template age.
//! - `fv:ledger:{<tenant>}:intents`: ZSET of subject_refs whose templates are
//!   being changed, by the time the change began (ms). Written before the change
//!   and removed by the ledger update that follows it, so a change cut short
//!   leaves an intent that the reconciler (`worker`) finishes.

use std::collections::BTreeMap;

use super::{StorageError, Store};
use crate::vault::now_unix_ms;

const TENANTS: &str = "fv:tenants";
const DEPLOYMENT_THRESHOLD: &str = "fv:filing:threshold-reached";

fn tag(tenant: &str) -> String {
    format!("fv:ledger:{{{tenant}}}")
}

/// KEYS: intents, subjects, purposes, expiry, filing clock, then the consent
/// sets: first those of the purposes the subject's templates cover, then those
/// of other purposes.
/// ARGV: subject_ref, intent ms, holds templates (0|1), n covered, covered
/// purposes…, n expiries, (member, expiry ms)…, n dropped, dropped members…,
/// filing threshold, now ms.
/// Applies the subject's ledger entry and removes its intent, but only while the
/// intent is still the one the entry was read for: if a newer change of the
/// subject has begun, its own update (or the reconciler's) writes the ledger, and
/// this older reading must not overwrite it. Returns 1 if applied, 0 if not.
/// KEYS: intents, the tenant's decommission record. ARGV: subject, now ms,
/// refuse if decommissioned (0|1). Records the subject's intent at now, or just
/// after the one pending if that is not older; returns the score, or -1 (and
/// records nothing) for an enrollment into a decommissioned tenant.
const INTEND: &str = r#"
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local at = tonumber(ARGV[2])
local pending = redis.call('ZSCORE', KEYS[1], ARGV[1])
if pending and tonumber(pending) >= at then
  at = tonumber(pending) + 1
end
redis.call('ZADD', KEYS[1], at, ARGV[1])
return at
"#;

const SYNC: &str = r#"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
local i = 4
local covered = tonumber(ARGV[i])
for c = 1, covered do
  redis.call('SADD', KEYS[3], ARGV[i + c])
  redis.call('SADD', KEYS[5 + c], ARGV[1])
end
for k = 6 + covered, #KEYS do
  redis.call('SREM', KEYS[k], ARGV[1])
end
i = i + covered + 1
local expiries = tonumber(ARGV[i])
for e = 1, expiries do
  redis.call('ZADD', KEYS[4], ARGV[i + 2 * e], ARGV[i + 2 * e - 1])
end
i = i + 2 * expiries + 1
local dropped = tonumber(ARGV[i])
for d = 1, dropped do
  redis.call('ZREM', KEYS[4], ARGV[i + d])
end
i = i + dropped + 1
-- The filing clock starts the first time the count reaches the threshold.
if ARGV[3] == '1' and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[i]) then
  redis.call('SET', KEYS[5], ARGV[i + 1], 'NX')
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"#;

/// What the ledger must say about one subject, as read from its templates.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Purposes the subject's templates cover; empty when it holds none.
    pub purposes: Vec<String>,
    /// Retention expiry (ms) of each held template, when the tenant sets one.
    pub expiries: Vec<(String, i64)>,
    /// Templates known to be gone, whose expiry entries go too.
    pub dropped: Vec<String>,
    /// True when the subject holds templates.
    pub holds_templates: bool,
}

impl Store {
    /// Records that the subject's templates are about to change (and that the
    /// tenant has a ledger). Returns the intent's time, which `ledger_sync`
    /// names to remove it.
    pub async fn ledger_intend(
        &self,
        tenant: &str,
        subject_ref: &str,
        at_ms: i64,
    ) -> Result<i64, StorageError> {
        self.intend(tenant, subject_ref, at_ms, false)
            .await?
            .ok_or(StorageError::Corrupt)
    }

    /// `ledger_intend` for an enrollment: None, and nothing recorded, once the
    /// tenant is decommissioned. Checked in the same script that records the
    /// intent, so no enrollment begins after the decommission is recorded.
    pub async fn ledger_intend_enrollment(
        &self,
        tenant: &str,
        subject_ref: &str,
        at_ms: i64,
    ) -> Result<Option<i64>, StorageError> {
        self.intend(tenant, subject_ref, at_ms, true).await
    }

    async fn intend(
        &self,
        tenant: &str,
        subject_ref: &str,
        at_ms: i64,
        refuse_if_decommissioned: bool,
    ) -> Result<Option<i64>, StorageError> {
        let mut register = redis::cmd("SADD");
        register.arg(TENANTS).arg(tenant);
        let _: i64 = self.durable(register).await?;
        // Two changes of one subject begun in the same millisecond must not
        // share an intent: each gets a later score than the one pending, so the
        // later change's ledger update is the one that applies.
        let intents = format!("{}:intents", tag(tenant));
        let record = super::decommission::record_key(tenant);
        let mut intend = super::eval(INTEND, &[&intents, &record]);
        intend
            .arg(subject_ref)
            .arg(at_ms)
            .arg(if refuse_if_decommissioned { "1" } else { "0" });
        let at: i64 = self.durable(intend).await?;
        Ok((at >= 0).then_some(at))
    }

    /// When the deployment's count first reached the filing threshold: records
    /// `reached_now_ms` first if the caller saw the count at the threshold and
    /// none is recorded. The count spans hash slots, so this is as exact as
    /// the callers' readings (the report, and the worker every 10 s).
    pub async fn deployment_threshold_reached(
        &self,
        reached_now_ms: Option<i64>,
    ) -> Result<Option<i64>, StorageError> {
        if let Some(now) = reached_now_ms {
            let mut record = redis::cmd("SET");
            record.arg(DEPLOYMENT_THRESHOLD).arg(now).arg("NX");
            let _: Option<String> = self.durable(record).await?;
        }
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("GET")
                .arg(DEPLOYMENT_THRESHOLD)
                .query_async(&mut conn),
        )
        .await
    }

    /// When the tenant's count first reached the filing threshold, if it has.
    pub async fn ledger_threshold_reached(
        &self,
        tenant: &str,
    ) -> Result<Option<i64>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("GET")
                .arg(format!("{}:threshold-reached", tag(tenant)))
                .query_async(&mut conn),
        )
        .await
    }

    /// Makes the ledger say `entry` about the subject and removes the intent of
    /// time `intent_ms`, atomically, unless a newer change of the subject has
    /// begun since (see `SYNC`). Starts the tenant's filing clock if the count
    /// reaches `filing_threshold`. Returns whether it applied.
    pub async fn ledger_sync(
        &self,
        tenant: &str,
        subject_ref: &str,
        entry: &LedgerEntry,
        intent_ms: i64,
        filing_threshold: u64,
    ) -> Result<bool, StorageError> {
        let t = tag(tenant);
        let known = self.ledger_purposes(tenant).await?;
        let mut keys = vec![
            format!("{t}:intents"),
            format!("{t}:subjects"),
            format!("{t}:purposes"),
            format!("{t}:expiry"),
            format!("{t}:threshold-reached"),
        ];
        keys.extend(entry.purposes.iter().map(|p| format!("{t}:consent:{p}")));
        keys.extend(
            known
                .iter()
                .filter(|p| !entry.purposes.contains(p))
                .map(|p| format!("{t}:consent:{p}")),
        );
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut inv = super::eval(SYNC, &keys);
        inv.arg(subject_ref)
            .arg(intent_ms)
            .arg(if entry.holds_templates { "1" } else { "0" })
            .arg(entry.purposes.len());
        for p in &entry.purposes {
            inv.arg(p);
        }
        inv.arg(entry.expiries.len());
        for (template_id, expires_ms) in &entry.expiries {
            inv.arg(format!("{subject_ref}/{template_id}"))
                .arg(expires_ms);
        }
        inv.arg(entry.dropped.len());
        for template_id in &entry.dropped {
            inv.arg(format!("{subject_ref}/{template_id}"));
        }
        inv.arg(filing_threshold).arg(now_unix_ms());
        let applied: i64 = self.durable(inv).await?;
        Ok(applied == 1)
    }

    /// Intents begun before `before_ms`: (subject_ref, intent time).
    pub async fn ledger_intents(
        &self,
        tenant: &str,
        before_ms: i64,
        max: usize,
    ) -> Result<Vec<(String, i64)>, StorageError> {
        let mut conn = self.conn.clone();
        let reply: Vec<(String, f64)> = self
            .deadline(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(format!("{}:intents", tag(tenant)))
                    .arg("-inf")
                    .arg(before_ms)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(max)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(reply.into_iter().map(|(s, at)| (s, at as i64)).collect())
    }

    async fn ledger_purposes(&self, tenant: &str) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("SMEMBERS")
                .arg(format!("{}:purposes", tag(tenant)))
                .query_async(&mut conn),
        )
        .await
    }

    pub async fn ledger_tenant_subjects(&self, tenant: &str) -> Result<u64, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("SCARD")
                .arg(format!("{}:subjects", tag(tenant)))
                .query_async(&mut conn),
        )
        .await
    }

    pub async fn ledger_total_subjects(&self) -> Result<u64, StorageError> {
        Ok(self
            .ledger_subjects_by_tenant()
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum())
    }

    /// Subjects holding templates, per tenant that ever enrolled.
    pub async fn ledger_subjects_by_tenant(&self) -> Result<Vec<(String, u64)>, StorageError> {
        let mut counts = Vec::new();
        for tenant in self.ledger_tenants().await? {
            let held = self.ledger_tenant_subjects(&tenant).await?;
            counts.push((tenant, held));
        }
        Ok(counts)
    }

    /// One `SSCAN` page of the tenant's subjects holding templates: (next
    /// cursor, 0 when the walk is done; subject_refs, possibly repeated).
    pub async fn ledger_subjects_page(
        &self,
        tenant: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("SSCAN")
                .arg(format!("{}:subjects", tag(tenant)))
                .arg(cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn),
        )
        .await
    }

    /// Up to `count` distinct subjects of the tenant holding templates, picked at
    /// random: empty only when none is left (unlike an `SSCAN` page, which can
    /// be empty while the set is not), and replicas sweeping at once mostly
    /// pick different subjects.
    pub async fn ledger_subjects_sample(
        &self,
        tenant: &str,
        count: usize,
    ) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("SRANDMEMBER")
                .arg(format!("{}:subjects", tag(tenant)))
                .arg(count)
                .query_async(&mut conn),
        )
        .await
    }

    pub async fn ledger_tenants(&self) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(redis::cmd("SMEMBERS").arg(TENANTS).query_async(&mut conn))
            .await
    }

    pub async fn ledger_consents(
        &self,
        tenant: &str,
    ) -> Result<BTreeMap<String, u64>, StorageError> {
        let t = tag(tenant);
        let mut out = BTreeMap::new();
        for p in self.ledger_purposes(tenant).await? {
            let mut conn = self.conn.clone();
            let n: u64 = self
                .deadline(
                    redis::cmd("SCARD")
                        .arg(format!("{t}:consent:{p}"))
                        .query_async(&mut conn),
                )
                .await?;
            out.insert(p, n);
        }
        Ok(out)
    }

    /// Templates past their retention: (subject_ref, template_id).
    pub async fn ledger_expired(
        &self,
        tenant: &str,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let members = self
            .due_members(&format!("{}:expiry", tag(tenant)), now_ms, max)
            .await?;
        Ok(members
            .into_iter()
            .filter_map(|m| m.split_once('/').map(|(r, t)| (r.to_owned(), t.to_owned())))
            .collect())
    }

    pub async fn ledger_unschedule_expiry(
        &self,
        tenant: &str,
        subject_ref: &str,
        template_id: &str,
    ) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .deadline(
                redis::cmd("ZREM")
                    .arg(format!("{}:expiry", tag(tenant)))
                    .arg(format!("{subject_ref}/{template_id}"))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }
}
