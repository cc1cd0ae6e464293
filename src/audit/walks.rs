//! At most one `VerifyChain` walk of a tenant's log at a time in this process.
//! A walk reads the whole retained stream (every walk is full after a break, and
//! `full` asks for one), so callers that start walks faster than they end, or
//! hang up and call again while the last one runs on detached, would hold every
//! in-flight permit. A second caller is refused with a retry hint instead of
//! starting a second walk. The bound is per process: N replicas walk at most N
//! times at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::Tenant;

#[derive(Default)]
pub struct Walks {
    /// Tenant → when its running walk began.
    running: Mutex<HashMap<Tenant, Instant>>,
    /// Tenant → how long its last walk took (the retry hint).
    last: Mutex<HashMap<Tenant, Duration>>,
}

/// The right to walk one tenant's log; ends the walk when dropped.
pub struct WalkGuard<'a> {
    walks: &'a Walks,
    tenant: Tenant,
    began: Instant,
}

impl Walks {
    /// Begins a walk of `tenant`'s log, or says after how many seconds the
    /// running one is likely done (at least 1).
    pub fn begin(&self, tenant: &Tenant) -> Result<WalkGuard<'_>, u64> {
        let Ok(mut running) = self.running.lock() else {
            return Err(1);
        };
        if let Some(began) = running.get(tenant) {
            let took = self
                .last
                .lock()
                .ok()
                .and_then(|l| l.get(tenant).copied())
                .unwrap_or_default();
            let left = took.saturating_sub(began.elapsed());
            return Err(left.as_secs().saturating_add(1));
        }
        let began = Instant::now();
        running.insert(tenant.clone(), began);
        Ok(WalkGuard {
            walks: self,
            tenant: tenant.clone(),
            began,
        })
    }
}

impl Drop for WalkGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut last) = self.walks.last.lock() {
            last.insert(self.tenant.clone(), self.began.elapsed());
        }
        if let Ok(mut running) = self.walks.running.lock() {
            running.remove(&self.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_walk_per_tenant_at_a_time() {
        let walks = Walks::default();
        let demo = Tenant::try_from("demo").unwrap();
        let other = Tenant::try_from("other").unwrap();
        let first = walks.begin(&demo).unwrap();
        assert_eq!(walks.begin(&demo).err(), Some(1));
        let _other = walks.begin(&other).unwrap();
        drop(first);
        assert!(walks.begin(&demo).is_ok());
    }
}
