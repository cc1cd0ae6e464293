//! Counts the regulator asks for: subjects stored per tenant (against the filing
//! threshold) and subjects per consented purpose. Kept as sets of pseudonyms so
//! every update is idempotent and a count is exact: `SCARD`.
//!
//! - `fv:tenants`: SET of tenants that ever enrolled.
//! - `fv:ledger:{<tenant>}:subjects`: SET of subject_refs holding templates.
//! - `fv:ledger:{<tenant>}:purposes`: SET of purposes ever consented.
//! - `fv:ledger:{<tenant>}:consent:<purpose>`: SET of subject_refs covered.
//! - `fv:ledger:{<tenant>}:expiry`: ZSET of `<subject_ref>/<template_id>` by
//!   retention expiry (ms), when the tenant sets a maximum template age.

use std::collections::BTreeMap;

use super::{StorageError, Store};

const TENANTS: &str = "fv:tenants";

fn tag(tenant: &str) -> String {
    format!("fv:ledger:{{{tenant}}}")
}

impl Store {
    /// The subject holds templates covering exactly `purposes` now.
    pub async fn ledger_set_subject(
        &self,
        tenant: &str,
        subject_ref: &str,
        purposes: &[String],
    ) -> Result<(), StorageError> {
        let t = tag(tenant);
        let known = self.ledger_purposes(tenant).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.sadd(format!("{t}:subjects"), subject_ref).ignore();
        for p in purposes {
            pipe.sadd(format!("{t}:purposes"), p).ignore();
            pipe.sadd(format!("{t}:consent:{p}"), subject_ref).ignore();
        }
        for p in known.iter().filter(|p| !purposes.contains(p)) {
            pipe.srem(format!("{t}:consent:{p}"), subject_ref).ignore();
        }
        let mut conn = self.conn.clone();
        let () = self.deadline(pipe.query_async(&mut conn)).await?;
        let mut conn = self.conn.clone();
        let _: i64 = self
            .deadline(
                redis::cmd("SADD")
                    .arg(TENANTS)
                    .arg(tenant)
                    .query_async(&mut conn),
            )
            .await?;
        self.replicated(&format!("{t}:subjects")).await?;
        self.replicated(TENANTS).await?;
        Ok(())
    }

    /// The subject holds nothing any more.
    pub async fn ledger_forget_subject(
        &self,
        tenant: &str,
        subject_ref: &str,
    ) -> Result<(), StorageError> {
        let t = tag(tenant);
        let known = self.ledger_purposes(tenant).await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.srem(format!("{t}:subjects"), subject_ref).ignore();
        for p in &known {
            pipe.srem(format!("{t}:consent:{p}"), subject_ref).ignore();
        }
        let mut conn = self.conn.clone();
        let () = self.deadline(pipe.query_async(&mut conn)).await?;
        self.replicated(&format!("{t}:subjects")).await?;
        Ok(())
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
        let mut conn = self.conn.clone();
        let tenants: Vec<String> = self
            .deadline(redis::cmd("SMEMBERS").arg(TENANTS).query_async(&mut conn))
            .await?;
        let mut total = 0;
        for tenant in tenants {
            total += self.ledger_tenant_subjects(&tenant).await?;
        }
        Ok(total)
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

    pub async fn ledger_schedule_expiry(
        &self,
        tenant: &str,
        subject_ref: &str,
        template_id: &str,
        expires_ms: i64,
    ) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .deadline(
                redis::cmd("ZADD")
                    .arg(format!("{}:expiry", tag(tenant)))
                    .arg(expires_ms)
                    .arg(format!("{subject_ref}/{template_id}"))
                    .query_async(&mut conn),
            )
            .await?;
        // A lost schedule entry would be a template never erased.
        self.replicated(&format!("{}:expiry", tag(tenant))).await
    }

    /// Templates past their retention: (subject_ref, template_id).
    pub async fn ledger_expired(
        &self,
        tenant: &str,
        now_ms: i64,
        max: usize,
    ) -> Result<Vec<(String, String)>, StorageError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = self
            .deadline(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(format!("{}:expiry", tag(tenant)))
                    .arg("-inf")
                    .arg(now_ms)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(max)
                    .query_async(&mut conn),
            )
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
