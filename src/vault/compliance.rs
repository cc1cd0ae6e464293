use super::{Vault, now_unix_ms};
use crate::domain::Tenant;
use crate::error::Error;

/// Subjects stored against the filing threshold, and the deletion backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceReport {
    pub tenant_subjects: u64,
    pub filing_threshold: u64,
    pub filing_required: bool,
    pub deletions_pending: u64,
    pub deletions_overdue: u64,
    pub oldest_pending_deadline_unix_ms: Option<i64>,
    pub consents_by_purpose: std::collections::BTreeMap<String, u64>,
    pub key_epochs: super::EpochStatus,
}

impl Vault {
    pub async fn compliance_report(&self, tenant: &Tenant) -> Result<ComplianceReport, Error> {
        let tenant_subjects = self.store.ledger_tenant_subjects(tenant.as_str()).await?;
        let backlog = self
            .store
            .deletion_backlog(Some(tenant.as_str()), now_unix_ms())
            .await?;
        let threshold = self.lifecycle.filing_threshold;
        Ok(ComplianceReport {
            tenant_subjects,
            filing_threshold: threshold,
            filing_required: tenant_subjects >= threshold,
            deletions_pending: backlog.pending,
            deletions_overdue: backlog.overdue,
            oldest_pending_deadline_unix_ms: backlog.oldest_deadline_ms,
            consents_by_purpose: self.store.ledger_consents(tenant.as_str()).await?,
            key_epochs: self.epoch_status(now_unix_ms()),
        })
    }

    /// Deployment-wide overdue deletions (for the worker's alert).
    pub async fn overdue_deletions(&self) -> Result<u64, Error> {
        Ok(self
            .store
            .deletion_backlog(None, now_unix_ms())
            .await?
            .overdue)
    }
}

impl Vault {
    /// Deployment-wide figures for the metrics gauges.
    pub async fn gauge_snapshot(&self) -> Result<crate::telemetry::GaugeSnapshot, Error> {
        let now = now_unix_ms();
        let backlog = self.store.deletion_backlog(None, now).await?;
        let today = chrono::Utc::now()
            .with_timezone(&self.lifecycle.policy.calendar().time_zone())
            .date_naive();
        let horizon = today + chrono::Days::new(30);
        let epochs = self.epoch_status(now);
        Ok(crate::telemetry::GaugeSnapshot {
            deletions_pending: backlog.pending,
            deletions_overdue: backlog.overdue,
            subjects_stored: self.store.ledger_total_subjects().await?,
            filing_threshold: self.lifecycle.filing_threshold,
            calendar_fallback: !self.lifecycle.policy.calendar().has_published_data(horizon),
            rewrap_pending: self.rewrap_pending(),
            epoch_age_days: epochs.oldest_age_days,
            epoch_retirement_overdue: epochs.overdue,
        })
    }
}
