//! Finishes what a call cut short left half done. Every change that spans Redis
//! slots begins with an intent in the slot of its first write: a ledger intent
//! before a subject's templates change, a pending ticket before a subject is
//! marked cancelled or erased. Each round, intents older than the settle time are
//! finished from what Redis holds now, so after a crash, a cancelled call or a
//! Redis restart the store converges within one poll interval:
//!
//! - every subject with templates is in the ledger (counts, purposes, retention
//!   schedule), and no subject without templates is;
//! - every cancellation ticket's subject is marked cancelled (and so is queued
//!   and counted from the moment its ticket exists);
//! - an erasure's pending ticket is claimed by the call running it; if that call
//!   stops, the claim expires and the deletion worker completes it, receipt and
//!   all (within `deletion.claim_ttl_secs`).

use crate::vault::Vault;

/// What one round finished.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub ledger: usize,
    pub cancellations: usize,
}

/// One reconciliation round over at most `max` intents of each kind.
pub async fn reconcile(vault: &Vault, max: usize) -> Result<Reconciled, crate::Error> {
    let done = Reconciled {
        cancellations: vault.finish_cancellations(max).await?,
        ledger: vault.finish_ledger_intents(max).await?,
    };
    let metrics = crate::telemetry::metrics();
    for (what, n) in [
        ("ledger", done.ledger),
        ("cancellation", done.cancellations),
    ] {
        if n > 0 {
            metrics
                .reconciled
                .add(n as u64, &[opentelemetry::KeyValue::new("what", what)]);
            tracing::info!(what, count = n, "reconciler finished cut-short changes");
        }
    }
    Ok(done)
}
