//! Refusals made before a call is admitted (no identity, over its rate, shed,
//! over the connection limit, a refused TLS handshake) are counted, not recorded
//! one by one: every `window`, one audit event per (tenant, caller or peer
//! address, reason) carries the count. A flood then writes O(windows) events, not
//! O(calls), and costs the attacker, not the audit log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::AuditSink;
use crate::domain::{Caller, Tenant};
use crate::proto::AuditEvent;

/// Why a call or connection was refused before admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The client certificate names no acceptable identity.
    NoIdentity,
    RateLimited,
    LoadShed,
    /// The caller has its share of `limits.max_in_flight` in flight already.
    CallerInFlight,
    ConnectionLimit,
    /// No certificate, an untrusted or revoked one, or a handshake that timed out.
    TlsHandshake,
    /// The certificate names a tenant the config does not declare.
    UndeclaredTenant,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoIdentity => "no-identity",
            Self::RateLimited => "rate-limited",
            Self::LoadShed => "load-shed",
            Self::CallerInFlight => "caller-in-flight",
            Self::ConnectionLimit => "connection-limit",
            Self::TlsHandshake => "tls-handshake-refused",
            Self::UndeclaredTenant => "undeclared-tenant",
        }
    }

    /// The status the refused caller saw (a refused connection sees none).
    fn code(self) -> &'static str {
        match self {
            Self::NoIdentity => "UNAUTHENTICATED",
            Self::RateLimited => "RESOURCE_EXHAUSTED",
            Self::LoadShed => "UNAVAILABLE",
            Self::CallerInFlight => "RESOURCE_EXHAUSTED",
            Self::UndeclaredTenant => "PERMISSION_DENIED",
            Self::ConnectionLimit | Self::TlsHandshake => "",
        }
    }
}

/// Who was refused: an identified caller, or only a peer address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Refused {
    tenant: Tenant,
    caller: String,
    cert_sha256: String,
    reason: Refusal,
}

/// Distinct (who, reason) pairs tracked per window; past it, further refusals of
/// the window are counted under one overflow entry, so the tally stays bounded.
const MAX_KEYS: usize = 10_000;

#[derive(Clone)]
pub struct RefusalTally {
    counts: Arc<Mutex<HashMap<Refused, u64>>>,
}

impl RefusalTally {
    /// Starts the task that records a window's counts when it ends. The task
    /// records a last window and ends when `stop` resolves.
    pub fn spawn(
        sink: AuditSink,
        window: Duration,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let tally = Self {
            counts: Arc::default(),
        };
        let flusher = tally.clone();
        let task = tokio::spawn(async move {
            tokio::pin!(stop);
            let mut started = crate::vault::now_unix_ms();
            loop {
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(window) => false,
                    _ = &mut stop => true,
                };
                let ended = crate::vault::now_unix_ms();
                flusher.flush(&sink, started, ended).await;
                started = ended;
                if stopping {
                    break;
                }
            }
        });
        (tally, task)
    }

    /// A tally that records nothing (for components run without the audit log).
    pub fn detached() -> Self {
        Self {
            counts: Arc::default(),
        }
    }

    pub fn caller(&self, caller: &Caller, reason: Refusal) {
        self.count(Refused {
            tenant: caller.audit_stream(),
            caller: caller.identity.clone(),
            cert_sha256: caller.cert_sha256.clone(),
            reason,
        });
    }

    /// A caller whose tenant is not served: counted in the unauthenticated
    /// stream, not its own, since an undeclared tenant gets no audit log.
    pub fn undeclared_tenant(&self, caller: &Caller) {
        self.count(Refused {
            tenant: Tenant::unauthenticated(),
            caller: caller.identity.clone(),
            cert_sha256: caller.cert_sha256.clone(),
            reason: Refusal::UndeclaredTenant,
        });
    }

    pub fn peer(&self, peer: Option<IpAddr>, reason: Refusal) {
        self.count(Refused {
            tenant: Tenant::unauthenticated(),
            caller: peer.map_or_else(|| "peer:unknown".to_owned(), |ip| format!("peer:{ip}")),
            cert_sha256: String::new(),
            reason,
        });
    }

    fn count(&self, mut key: Refused) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        if counts.len() >= MAX_KEYS && !counts.contains_key(&key) {
            key = Refused {
                tenant: Tenant::unauthenticated(),
                caller: "overflow".to_owned(),
                cert_sha256: String::new(),
                reason: key.reason,
            };
        }
        *counts.entry(key).or_insert(0) += 1;
    }

    /// Records one event per entry of the window just ended. A window that cannot
    /// be recorded is carried into the next one rather than lost.
    async fn flush(&self, sink: &AuditSink, started_ms: i64, ended_ms: i64) {
        let window = match self.counts.lock() {
            Ok(mut counts) => std::mem::take(&mut *counts),
            Err(_) => return,
        };
        for (who, count) in window {
            let event = AuditEvent {
                event_id: crate::audit::new_event_id(),
                time: Some(crate::vault::timestamp(started_ms)),
                window_end: Some(crate::vault::timestamp(ended_ms)),
                tenant: who.tenant.as_str().to_owned(),
                caller: who.caller.clone(),
                caller_cert_sha256: who.cert_sha256.clone(),
                op: "Admission".to_owned(),
                outcome: "refused".to_owned(),
                code: who.reason.code().to_owned(),
                detail: who.reason.as_str().to_owned(),
                count,
                ..AuditEvent::default()
            };
            if let Err(error) = sink.record(who.tenant.clone(), event).await {
                tracing::warn!(%error, reason = who.reason.as_str(), count, "refusal counts not recorded; carried into the next window");
                if let Ok(mut counts) = self.counts.lock() {
                    *counts.entry(who).or_insert(0) += count;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_stays_bounded_under_many_peers() {
        let tally = RefusalTally::detached();
        for i in 0..(MAX_KEYS as u32 + 500) {
            tally.peer(Some(IpAddr::from(i.to_be_bytes())), Refusal::TlsHandshake);
        }
        let counts = tally.counts.lock().unwrap();
        assert_eq!(counts.len(), MAX_KEYS + 1);
        let overflow = counts
            .iter()
            .find(|(k, _)| k.caller == "overflow")
            .map(|(_, n)| *n);
        assert_eq!(overflow, Some(500));
        assert_eq!(counts.values().sum::<u64>(), MAX_KEYS as u64 + 500);
    }
}
