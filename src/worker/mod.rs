//! Background work: the deletion worker erases due account cancellations and
//! expired templates, runs the reconciler (`reconciler`) that finishes changes
//! cut short, and adds the shred statement to tickets whose key epochs are all
//! retired, and erases the subjects of decommissioned tenants; the re-wrap worker (`rewrap`) moves DEKs to the active key epoch. Safe with many replicas: tickets are claimed atomically in
//! Redis, a claim whose worker died expires and is taken by another, and every
//! reconciliation step is idempotent.

pub mod reconciler;
pub mod rewrap;

use std::sync::Arc;
use std::time::Duration;

use crate::vault::Vault;

/// Tickets claimed per round; more wait for the next round (or another replica).
const BATCH: usize = 32;
/// Subjects of a decommissioned tenant erased per round.
const DECOMMISSION_PAGE: usize = 256;
/// How often an overdue backlog is reported while it lasts.
const OVERDUE_REPORT_EVERY: Duration = Duration::from_secs(60);
/// How often the compliance gauges (queue depth, subjects stored) are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(10);

pub struct DeletionWorker {
    vault: Arc<Vault>,
    poll_interval: Duration,
}

impl DeletionWorker {
    pub fn new(vault: Arc<Vault>, poll_interval: Duration) -> Self {
        Self {
            vault,
            poll_interval,
        }
    }

    /// Runs until the task is dropped or aborted.
    pub async fn run(self) {
        let wake = self.vault.deletion_wakeup();
        let mut last_overdue_report: Option<tokio::time::Instant> = None;
        let mut last_gauges: Option<tokio::time::Instant> = None;
        // The calendar is loaded at start-up: a holiday file added since the
        // last start may publish years that pending tickets counted provisionally.
        let mut deadlines_restated = false;
        loop {
            if !deadlines_restated {
                match self.vault.restate_provisional_deadlines().await {
                    Ok(_) => deadlines_restated = true,
                    Err(error) => {
                        tracing::warn!(%error, "provisional deadlines cannot be recounted yet; retrying");
                    }
                }
            }
            loop {
                match self.vault.run_due_deletions(BATCH).await {
                    Ok(n) if n == BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "deletion worker cannot reach storage; retrying");
                        break;
                    }
                }
            }
            // A decommission sweeps a sample per round; while one has work the
            // worker does not sleep between rounds.
            let decommissioning = match self.vault.decommission_step(DECOMMISSION_PAGE).await {
                Ok(erased) => erased > 0,
                Err(error) => {
                    tracing::warn!(%error, "tenant decommission cannot progress this round; retrying");
                    false
                }
            };
            if let Err(error) = reconciler::reconcile(&self.vault, BATCH).await {
                tracing::warn!(%error, "reconciler cannot finish this round; retrying");
            }
            if let Err(error) = self.vault.expire_templates(BATCH).await {
                tracing::warn!(%error, "template retention sweep failed; retrying");
            }
            if let Err(error) = self.vault.shred_retired(BATCH).await {
                tracing::warn!(%error, "shred statements cannot be written this round; retrying");
            }
            if last_gauges.is_none_or(|t| t.elapsed() >= GAUGES_EVERY) {
                if let Ok(snapshot) = self.vault.gauge_snapshot().await {
                    crate::telemetry::set_gauges(snapshot);
                }
                last_gauges = Some(tokio::time::Instant::now());
            }
            if last_overdue_report.is_none_or(|t| t.elapsed() >= OVERDUE_REPORT_EVERY) {
                if let Ok(overdue) = self.vault.overdue_deletions().await
                    && overdue > 0
                {
                    tracing::error!(
                        overdue,
                        "deletion tickets are past their statutory deadline"
                    );
                }
                let epochs = self.vault.epoch_status(crate::vault::now_unix_ms());
                if epochs.overdue {
                    tracing::error!(
                        oldest_epoch = epochs.oldest_epoch,
                        active_epoch = epochs.active_epoch,
                        "the oldest key epoch is past its retirement date: rotate, wait for `keys status` to show 0 DEKs under it, and retire it"
                    );
                }
                last_overdue_report = Some(tokio::time::Instant::now());
            }
            if decommissioning {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
