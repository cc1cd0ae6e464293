//! The re-wrap worker: while the keyring holds an epoch other than the active
//! one, walks every tenant's subjects and re-wraps each DEK under another epoch
//! to the active one, so the old epoch can be retired (`keys retire`) and every
//! copy of Redis wrapped under it becomes unreadable.
//!
//! - **Resumable:** the walk's cursor per tenant is saved in Redis after each
//!   page (`storage::rewrap`); a restarted or another replica resumes there.
//! - **One walker:** a lease in Redis lets one replica walk at a time; if it
//!   dies, the lease expires and another takes over.
//! - **Rate-limited:** at most `keys.rewrap_per_second` DEKs read per second.
//! - **Atomic:** each subject's rewrite is a compare-and-set (`vault`).
//!
//! A walk that re-wrapped nothing starts again only after `RECHECK_AFTER`: that
//! catches a DEK wrapped by a replica that had not reloaded the keyring yet,
//! without re-reading every subject non-stop for DEKs that cannot move (under
//! an epoch the keyring no longer has, e.g. restored from an old copy).

use std::sync::Arc;
use std::time::Duration;

use crate::domain::Tenant;
use crate::vault::Vault;

/// Subjects per page (one saved cursor per page).
const PAGE: usize = 100;
const LEASE_MS: u64 = 30_000;
/// Pause after a walk that found nothing left to re-wrap.
const RECHECK_AFTER: Duration = Duration::from_secs(60);

pub struct RewrapWorker {
    vault: Arc<Vault>,
    poll_interval: Duration,
    owner: String,
}

impl RewrapWorker {
    pub fn new(
        vault: Arc<Vault>,
        poll_interval: Duration,
    ) -> Result<Self, crate::crypto::CryptoError> {
        Ok(Self {
            vault,
            poll_interval,
            owner: hex::encode(crate::crypto::random_bytes::<8>()?),
        })
    }

    /// Runs until the task is dropped or aborted.
    pub async fn run(self) {
        let mut idle_until: Option<(u32, tokio::time::Instant)> = None;
        loop {
            let keys = self.vault.keys();
            let active = keys.keyring.active_epoch();
            let single = keys.keyring.oldest_epoch() == active;
            drop(keys);
            let resting = idle_until.is_some_and(|(epoch, until)| {
                epoch == active && tokio::time::Instant::now() < until
            });
            if single {
                self.vault.set_rewrap_pending(0);
            }
            if single || resting {
                tokio::time::sleep(self.poll_interval).await;
                continue;
            }
            match self.walk(active).await {
                Ok(Some((rewrapped, left))) => {
                    self.vault.set_rewrap_pending(left);
                    if rewrapped == 0 {
                        idle_until = Some((active, tokio::time::Instant::now() + RECHECK_AFTER));
                    }
                }
                // Another replica holds the lease, or the keyring changed mid-walk.
                Ok(None) => tokio::time::sleep(self.poll_interval).await,
                Err(error) => {
                    tracing::warn!(%error, "re-wrap walk failed; retrying");
                    tokio::time::sleep(self.poll_interval).await;
                }
            }
        }
    }

    /// Walks every tenant once towards `active`. Returns the DEKs it re-wrapped
    /// and those it left under old epochs, or None if it did not finish (lease
    /// lost, keyring rotated).
    async fn walk(&self, active: u32) -> Result<Option<(u64, u64)>, crate::error::Error> {
        let store = self.vault.store();
        let per_second = f64::from(self.vault.rewrap_per_second());
        let (mut rewrapped, mut left) = (0, 0);
        for tenant in store.ledger_tenants().await? {
            let Ok(tenant) = Tenant::try_from(tenant.as_str()) else {
                continue;
            };
            let mut cursor = store.rewrap_cursor(tenant.as_str(), active).await?;
            loop {
                if !store.rewrap_lease(&self.owner, LEASE_MS).await? {
                    return Ok(None);
                }
                if self.vault.keys().keyring.active_epoch() != active {
                    return Ok(None);
                }
                let started = tokio::time::Instant::now();
                let page = self.vault.rewrap_page(&tenant, cursor, PAGE).await?;
                left += page.left;
                rewrapped += page.rewrapped;
                store
                    .save_rewrap_cursor(tenant.as_str(), active, page.next_cursor)
                    .await?;
                if page.rewrapped > 0 {
                    tracing::debug!(tenant = %tenant.as_str(), rewrapped = page.rewrapped, "DEKs re-wrapped");
                }
                // The rate bounds DEKs read, re-wrapped or not.
                let budget = Duration::from_secs_f64(page.visited as f64 / per_second);
                tokio::time::sleep_until(started + budget).await;
                if page.next_cursor == 0 {
                    break;
                }
                cursor = page.next_cursor;
            }
        }
        Ok(Some((rewrapped, left)))
    }
}
