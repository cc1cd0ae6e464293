//! A tenant's decommission: the record lives in the tenant's ledger slot, so
//! the guarded enrollment intent (`ledger::INTEND`) and the completion check
//! (no subject, no intent) see it atomically.
//!
//! - `fv:ledger:{<tenant>}:decommission`: HASH, the decommission record. Its
//!   reason is sealed under the tenant KEK (`reason_sealed`); no free text is
//!   stored in clear. Records written before that hold `reason` in clear.
//! - `fv:decommissions`: SET of tenants with a record, for the worker and the
//!   deployment report.

use super::{StorageError, Store, field_number, field_text};

const DECOMMISSIONS: &str = "fv:decommissions";

pub(super) fn record_key(tenant: &str) -> String {
    format!("fv:ledger:{{{tenant}}}:decommission")
}

fn ledger_key(tenant: &str, part: &str) -> String {
    format!("fv:ledger:{{{tenant}}}:{part}")
}

/// KEYS: record, subjects. ARGV: requested ms, deadline ms, provisional (0|1),
/// sealed reason. Creates the record unless one exists, counting the subjects held
/// now; returns 1 if created.
const START: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'in-progress', 'requested_ms', ARGV[1],
  'deadline_ms', ARGV[2], 'provisional', ARGV[3], 'reason_sealed', ARGV[4],
  'subjects_total', redis.call('SCARD', KEYS[2]))
return 1
"#;

/// KEYS: record, subjects, intents, purposes. ARGV: completed ms, receipt body,
/// signature. Completes the record only once nothing of the tenant is left in
/// its ledger: no subject holding templates and no change under way. Returns
/// 1 if completed now, 0 if it was already, -1 if subjects or intents remain.
const COMPLETE: &str = r#"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'completed' then
  return 0
end
if not state then
  return redis.error_reply('no decommission record')
end
if redis.call('SCARD', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 then
  return -1
end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[1], 'state', 'completed', 'completed_ms', ARGV[1],
  'receipt_body', ARGV[2], 'receipt_sig', ARGV[3])
return 1
"#;

/// A tenant's decommission as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecommissionRecord {
    pub tenant: String,
    pub completed: bool,
    pub requested_at_ms: i64,
    pub deadline_ms: i64,
    pub deadline_provisional: bool,
    /// The reason sealed under the tenant KEK (`envelope::seal_decommission_reason`).
    pub sealed_reason: Vec<u8>,
    /// A reason stored in clear by a release before reasons were sealed.
    pub legacy_reason: Option<String>,
    pub subjects_total: u64,
    pub completed_at_ms: Option<i64>,
    pub receipt_body: Vec<u8>,
    pub receipt_signature: Vec<u8>,
}

/// How completing a decommission went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecommissionCompletion {
    Completed,
    AlreadyCompleted,
    /// Subjects or changes under way remain in the tenant's ledger.
    NotEmpty,
}

impl Store {
    /// Records the tenant's decommission unless one exists; returns whether
    /// this call created it. From then on `ledger_intend_enrollment` refuses.
    pub async fn start_decommission(
        &self,
        record: &DecommissionRecord,
    ) -> Result<bool, StorageError> {
        let tenant = record.tenant.as_str();
        let (key, subjects) = (record_key(tenant), ledger_key(tenant, "subjects"));
        let mut start = super::eval(START, &[&key, &subjects]);
        start
            .arg(record.requested_at_ms)
            .arg(record.deadline_ms)
            .arg(if record.deadline_provisional {
                "1"
            } else {
                "0"
            })
            .arg(&record.sealed_reason);
        let created: i64 = self.durable(start).await?;
        let mut register = redis::cmd("SADD");
        register.arg(DECOMMISSIONS).arg(tenant);
        let _: i64 = self.durable(register).await?;
        Ok(created == 1)
    }

    pub async fn decommission(
        &self,
        tenant: &str,
    ) -> Result<Option<DecommissionRecord>, StorageError> {
        let mut conn = self.conn.clone();
        let fields: Vec<(String, Vec<u8>)> = self
            .deadline(
                redis::cmd("HGETALL")
                    .arg(record_key(tenant))
                    .query_async(&mut conn),
            )
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut r = DecommissionRecord {
            tenant: tenant.to_owned(),
            ..DecommissionRecord::default()
        };
        for (k, v) in fields {
            match k.as_str() {
                "state" => r.completed = v == b"completed",
                "requested_ms" => r.requested_at_ms = field_number(&v)?,
                "deadline_ms" => r.deadline_ms = field_number(&v)?,
                "provisional" => r.deadline_provisional = v == b"1",
                "reason_sealed" => r.sealed_reason = v,
                "reason" => r.legacy_reason = Some(field_text(&v)?),
                "subjects_total" => r.subjects_total = field_number(&v)?.max(0) as u64,
                "completed_ms" => r.completed_at_ms = Some(field_number(&v)?),
                "receipt_body" => r.receipt_body = v,
                "receipt_sig" => r.receipt_signature = v,
                _ => {}
            }
        }
        Ok(Some(r))
    }

    /// Tenants with a decommission record, in progress or completed.
    pub async fn decommissioned_tenants(&self) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("SMEMBERS")
                .arg(DECOMMISSIONS)
                .query_async(&mut conn),
        )
        .await
    }

    /// Completes the decommission with its signed receipt, if nothing of the
    /// tenant is left in its ledger (and drops the tenant's purpose list, the
    /// last ledger key that outlives its subjects).
    pub async fn complete_decommission(
        &self,
        tenant: &str,
        completed_at_ms: i64,
        receipt_body: &[u8],
        receipt_signature: &[u8],
    ) -> Result<DecommissionCompletion, StorageError> {
        let keys = [
            record_key(tenant),
            ledger_key(tenant, "subjects"),
            ledger_key(tenant, "intents"),
            ledger_key(tenant, "purposes"),
        ];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut complete = super::eval(COMPLETE, &keys);
        complete
            .arg(completed_at_ms)
            .arg(receipt_body)
            .arg(receipt_signature);
        let outcome: i64 = self.durable(complete).await?;
        Ok(match outcome {
            1 => DecommissionCompletion::Completed,
            0 => DecommissionCompletion::AlreadyCompleted,
            _ => DecommissionCompletion::NotEmpty,
        })
    }
}
