//! The key files as the running service sees them: loaded at start-up and
//! re-read every `keys.reload_interval_secs`, exactly as the TLS files are, so
//! `keys rotate`, `keys retire` and `keys rotate-sealing` take effect without a
//! restart. A file that does not load keeps the last good set in use; the error
//! is logged and counted.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::bail;

use super::keyfiles::{self, KeyMaterial, KeyPaths};

pub struct LiveKeys {
    paths: KeyPaths,
    current: RwLock<Arc<KeyMaterial>>,
}

impl LiveKeys {
    pub fn load(paths: KeyPaths) -> anyhow::Result<Self> {
        let material = keyfiles::load(&paths)?;
        Ok(Self::fixed(paths, material))
    }

    /// A set that is never reloaded unless `reload` is called (CLI tools).
    pub fn fixed(paths: KeyPaths, material: KeyMaterial) -> Self {
        Self {
            paths,
            current: RwLock::new(Arc::new(material)),
        }
    }

    /// The set in use now. Callers keep the `Arc` for one operation, so an
    /// operation never mixes two sets.
    pub fn current(&self) -> Arc<KeyMaterial> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files. Returns true when a new set is now in use, false when
    /// the files are unchanged. A set whose identity root or transform secret
    /// differs from the running one is refused: it would orphan every pseudonym,
    /// audit chain and template.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let fresh = keyfiles::load(&self.paths)?;
        let current = self.current();
        if fresh.fingerprint == current.fingerprint {
            return Ok(false);
        }
        if !fresh.keyring.same_identity(&current.keyring) {
            bail!(
                "the new keyring's identity root or transform secret differs from the running one; \
                 these never change (they derive pseudonyms, audit keys and transforms)"
            );
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(true)
    }
}

/// Re-reads the key files every `interval` until aborted.
pub async fn reload_loop(keys: Arc<LiveKeys>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let keys = keys.clone();
        match tokio::task::spawn_blocking(move || {
            let changed = keys.reload()?;
            let current = keys.current();
            Ok::<_, anyhow::Error>((changed, current.keyring.active_epoch()))
        })
        .await
        {
            Ok(Ok((true, active_epoch))) => {
                tracing::info!(active_epoch, "key files reloaded")
            }
            Ok(Ok((false, _))) => {}
            Ok(Err(error)) => {
                crate::telemetry::metrics().key_reload_failures.add(1, &[]);
                tracing::error!(error = %format!("{error:#}"), "key reload failed; keeping the keys in use")
            }
            Err(error) => tracing::error!(%error, "key reload task failed"),
        }
    }
}
