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
//! - **Only what the verified history says is alive:** before walking a
//!   tenant, the worker verifies its audit log (incrementally, against the
//!   registry's signed heads and this replica's anchor file) and takes the
//!   erasures it holds. A template enrolled before a verified erasure of its
//!   subject is a restored copy: it is deleted, not carried into the new epoch.
//!   If the log does not verify intact, the tenant is not re-wrapped at all
//!   (its DEKs stay under their epoch, so `keys retire` keeps refusing) and the
//!   worker says why: a log line, `facevault.keys.rewrap_refused`, an event.
//! - **Erasures that land during the walk:** after a tenant's pages the worker
//!   verifies again and re-checks every subject that gained an erasure since,
//!   whatever epoch its DEKs are under now.
//!
//! A walk that re-wrapped nothing starts again only after `RECHECK_AFTER`: that
//! catches a DEK wrapped by a replica that had not reloaded the keyring yet,
//! without re-reading every subject non-stop for DEKs that cannot move (under
//! an epoch the keyring no longer has, e.g. restored from an old copy).

use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditReader;
use crate::audit::heads::TreeHead;
use crate::crypto::keyring::SubjectRef;
use crate::domain::Tenant;
use crate::domain::erasures::ErasureIndex;
use crate::vault::Vault;

/// Subjects per page (one saved cursor per page).
const PAGE: usize = 100;
const LEASE_MS: u64 = 30_000;
/// Pause after a walk that found nothing left to re-wrap.
const RECHECK_AFTER: Duration = Duration::from_secs(60);

pub struct RewrapWorker {
    vault: Arc<Vault>,
    /// Verifies each tenant's log before its walk (with this process's sink,
    /// so this process's own chains get fresh signed heads first).
    audit: AuditReader,
    /// This process's `audit.anchor_file`: heads kept outside Redis.
    anchor_file: Option<std::path::PathBuf>,
    poll_interval: Duration,
    owner: String,
}

impl RewrapWorker {
    pub fn new(
        vault: Arc<Vault>,
        audit: AuditReader,
        anchor_file: Option<std::path::PathBuf>,
        poll_interval: Duration,
    ) -> Result<Self, crate::crypto::CryptoError> {
        Ok(Self {
            vault,
            audit,
            anchor_file,
            poll_interval,
            owner: hex::encode(crate::crypto::random_bytes::<8>()?),
        })
    }

    /// The newest anchored head of each of the tenant's chains. An anchor file
    /// that cannot be read is said, and the registry's signed heads still pin
    /// the log.
    fn anchors(&self, tenant: &Tenant) -> Vec<TreeHead> {
        let Some(path) = &self.anchor_file else {
            return Vec::new();
        };
        let file = match crate::audit::anchors::read(path) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(%error, ?path, "audit anchor file unreadable; re-wrap checks the log against the registry's heads only");
                return Vec::new();
            }
        };
        let public = self.vault.keys().receipt_public_key();
        let mut newest: std::collections::BTreeMap<String, TreeHead> = Default::default();
        for (_, head) in file.heads {
            if head.tenant != tenant.as_str() || !head.verify(&public) {
                continue;
            }
            match newest.get(&head.chain_id) {
                Some(h) if h.tree_size >= head.tree_size => {}
                _ => {
                    newest.insert(head.chain_id.clone(), head);
                }
            }
        }
        newest.into_values().collect()
    }

    /// The tenant's verified erasure history, or None after saying why the
    /// tenant is refused (its log does not verify intact).
    async fn verified_erasures(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<ErasureIndex>, crate::error::Error> {
        let anchors = self.anchors(tenant);
        match self.audit.erasure_index(tenant, &anchors).await? {
            Ok(index) => {
                self.vault.remember_erasures(tenant, &index);
                Ok(Some(index))
            }
            Err(breaks) => {
                let first = breaks.first().map_or_else(String::new, |b| {
                    format!("{} ({}): {}", b.kind.as_str(), b.chain_id, b.reason)
                });
                crate::telemetry::metrics().rewrap_refused.add(1, &[]);
                tracing::error!(tenant = %tenant.as_str(), breaks = breaks.len(), first = %first, "the tenant's audit log does not verify intact: its DEKs are not re-wrapped (erasures it holds cannot be trusted); its old epoch stays in use");
                self.vault
                    .log_key_event(
                        tenant,
                        "",
                        "DATA_LOSS",
                        format!(
                            "rewrap-refused, audit-log-unverified, breaks:{}, first:{first}",
                            breaks.len()
                        ),
                    )
                    .await?;
                Ok(None)
            }
        }
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
            let Some(erasures) = self.verified_erasures(&tenant).await? else {
                // Counted as left: the gauge must not say the walk is done.
                left += 1;
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
                let page = self
                    .vault
                    .rewrap_page(&tenant, cursor, PAGE, &erasures)
                    .await?;
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
            // Erasures whose events landed during the walk: their subjects may
            // have been re-wrapped from a copy restored after the erasure.
            let Some(now) = self.verified_erasures(&tenant).await? else {
                left += 1;
                continue;
            };
            for subject in now.changed_since(&erasures) {
                let Some(subject) = SubjectRef::parse(subject) else {
                    continue;
                };
                let done = self.vault.rewrap_subject(&tenant, &subject, &now).await?;
                rewrapped += done.rewrapped;
                left += done.left;
            }
        }
        Ok(Some((rewrapped, left)))
    }
}
