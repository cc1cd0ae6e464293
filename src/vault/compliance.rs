use super::{Vault, now_unix_ms};
use crate::domain::Tenant;
use crate::error::Error;

/// A processor that reaches the filing threshold files within 30 working days
/// (2025 measures).
pub const FILING_WORKING_DAYS: u32 = 30;

/// One tenant's subjects against the filing threshold, and its deletion
/// backlog. Nothing in it depends on another tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct ComplianceReport {
    pub tenant_subjects: u64,
    pub filing_threshold: u64,
    pub filing_required: bool,
    pub deletions_pending: u64,
    pub deletions_overdue: u64,
    pub oldest_pending_deadline_unix_ms: Option<i64>,
    pub consents_by_purpose: std::collections::BTreeMap<String, u64>,
    pub key_epochs: super::EpochStatus,
    pub filing: FilingClock,
    pub decommission: Option<super::TenantDecommission>,
}

/// When filing became due, and by when it must be done.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilingClock {
    pub threshold_reached_at_unix_ms: Option<i64>,
    pub filing_due_by_unix_ms: Option<i64>,
    pub filing_due_by_provisional: bool,
    pub filing_reference: String,
}

/// Deployment-wide totals: for operators (`spiffe://<td>/operator/<name>`)
/// only; no tenant's admin sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentReport {
    pub total_subjects: u64,
    pub tenants: u64,
    pub filing_threshold: u64,
    pub filing_required: bool,
    pub filing: FilingClock,
    pub deletions_pending: u64,
    pub deletions_overdue: u64,
    pub decommissions: Vec<super::TenantDecommission>,
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
            filing: self
                .filing_clock(self.store.ledger_threshold_reached(tenant.as_str()).await?)?,
            decommission: self.tenant_decommission(tenant).await?,
        })
    }

    pub async fn deployment_report(&self) -> Result<DeploymentReport, Error> {
        let now = now_unix_ms();
        let counts = self.store.ledger_subjects_by_tenant().await?;
        let total_subjects = counts.iter().map(|(_, held)| held).sum();
        let tenants = counts.iter().filter(|(_, held)| *held > 0).count() as u64;
        let threshold = self.lifecycle.filing_threshold;
        let reached = self
            .store
            .deployment_threshold_reached((total_subjects >= threshold).then_some(now))
            .await?;
        let backlog = self.store.deletion_backlog(None, now).await?;
        Ok(DeploymentReport {
            total_subjects,
            tenants,
            filing_threshold: threshold,
            filing_required: total_subjects >= threshold,
            filing: self.filing_clock(reached)?,
            deletions_pending: backlog.pending,
            deletions_overdue: backlog.overdue,
            decommissions: self.tenant_decommissions().await?,
        })
    }

    fn filing_clock(&self, threshold_reached_at: Option<i64>) -> Result<FilingClock, Error> {
        let due = threshold_reached_at
            .map(|at| self.working_days_after(at, FILING_WORKING_DAYS))
            .transpose()?;
        Ok(FilingClock {
            threshold_reached_at_unix_ms: threshold_reached_at,
            filing_due_by_unix_ms: due.map(|(at, _)| at),
            filing_due_by_provisional: due.is_some_and(|(_, provisional)| provisional),
            filing_reference: self.lifecycle.filing_reference.clone(),
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
        let subjects_stored = self.store.ledger_total_subjects().await?;
        // Starts the deployment's filing clock within one gauge refresh.
        self.store
            .deployment_threshold_reached(
                (subjects_stored >= self.lifecycle.filing_threshold).then_some(now),
            )
            .await?;
        Ok(crate::telemetry::GaugeSnapshot {
            deletions_pending: backlog.pending,
            deletions_overdue: backlog.overdue,
            subjects_stored,
            filing_threshold: self.lifecycle.filing_threshold,
            calendar_fallback: !self.lifecycle.policy.calendar().has_published_data(horizon),
            rewrap_pending: self.rewrap_pending(),
            epoch_age_days: epochs.oldest_age_days,
            epoch_retirement_overdue: epochs.overdue,
        })
    }
}
