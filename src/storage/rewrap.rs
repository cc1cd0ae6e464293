//! Where the re-wrap worker is in its walk, so any replica can resume it.
//!
//! - `fv:keys:rewrap:{<tenant>}`: HASH `epoch`, `cursor`: the `SSCAN` cursor over
//!   the tenant's ledger of subjects (`ledger`), valid for a walk towards `epoch`.
//! - `fv:keys:rewrap:lease`: STRING, the replica walking now, with a TTL; a
//!   replica that dies lets it expire and another resumes from the cursors.
//! - `fv:keys:in-use`: HASH process id → `<active epoch>:<expiry ms>`, renewed by
//!   every running process each key reload interval: `keys retire` refuses an
//!   epoch that a live process may still wrap new DEKs under.
//!
//! The walk reads and rewrites each subject's templates with the same
//! compare-and-set script as every other rewrite (`Store::rewrite_templates`),
//! so it is atomic against a concurrent enroll or erase on a single Redis or a
//! Cluster (every command names one slot).

use super::{StorageError, Store};

const LEASE: &str = "fv:keys:rewrap:lease";
const IN_USE: &str = "fv:keys:in-use";

/// KEYS: in-use. ARGV: process id, active epoch, expiry ms, now ms. Records the
/// process's active epoch and drops entries of processes that stopped renewing.
const ANNOUNCE: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local expiry = tonumber(string.match(all[i + 1], ':(%d+)$'))
  if expiry == nil or expiry < tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return 1
"#;

/// KEYS: lease. ARGV: owner, ttl ms. Takes the lease if free, renews it if held
/// by `owner`; returns 1 if `owner` holds it.
const TAKE_LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

fn cursor_key(tenant: &str) -> String {
    format!("fv:keys:rewrap:{{{tenant}}}")
}

impl Store {
    /// Records that process `id` wraps new DEKs under `active_epoch` until
    /// `expires_ms` (renewed before then while it runs).
    pub async fn announce_epoch_in_use(
        &self,
        id: &str,
        active_epoch: u32,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let mut inv = super::eval(ANNOUNCE, &[IN_USE]);
        inv.arg(id).arg(active_epoch).arg(expires_ms).arg(now_ms);
        let mut conn = self.conn.clone();
        let _: i64 = self.deadline(inv.query_async(&mut conn)).await?;
        Ok(())
    }

    pub async fn withdraw_epoch_in_use(&self, id: &str) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .deadline(
                redis::cmd("HDEL")
                    .arg(IN_USE)
                    .arg(id)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// The active epoch of every live process: (process id, epoch).
    pub async fn epochs_in_use(&self, now_ms: i64) -> Result<Vec<(String, u32)>, StorageError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = self
            .deadline(redis::cmd("HGETALL").arg(IN_USE).query_async(&mut conn))
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(id, value)| {
                let (epoch, expiry) = value.split_once(':')?;
                let expiry: i64 = expiry.parse().ok()?;
                (expiry >= now_ms).then_some((id, epoch.parse().ok()?))
            })
            .collect())
    }

    pub async fn rewrap_lease(&self, owner: &str, ttl_ms: u64) -> Result<bool, StorageError> {
        let mut inv = super::eval(TAKE_LEASE, &[LEASE]);
        inv.arg(owner).arg(ttl_ms);
        let mut conn = self.conn.clone();
        let held: i64 = self.deadline(inv.query_async(&mut conn)).await?;
        Ok(held == 1)
    }

    /// The saved cursor of the walk towards `epoch`; 0 (start) when none is
    /// saved or it was saved for another epoch.
    pub async fn rewrap_cursor(&self, tenant: &str, epoch: u32) -> Result<u64, StorageError> {
        let mut conn = self.conn.clone();
        let (saved_epoch, cursor): (Option<u32>, Option<u64>) = self
            .deadline(
                redis::cmd("HMGET")
                    .arg(cursor_key(tenant))
                    .arg("epoch")
                    .arg("cursor")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(match (saved_epoch, cursor) {
            (Some(e), Some(c)) if e == epoch => c,
            _ => 0,
        })
    }

    pub async fn save_rewrap_cursor(
        &self,
        tenant: &str,
        epoch: u32,
        cursor: u64,
    ) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let () = self
            .deadline(
                redis::cmd("HSET")
                    .arg(cursor_key(tenant))
                    .arg("epoch")
                    .arg(epoch)
                    .arg("cursor")
                    .arg(cursor)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }
}
