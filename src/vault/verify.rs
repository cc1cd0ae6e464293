use prost::Message as _;

use super::{SealedEnvelope, Vault, now_unix_ms, random_id};
use crate::crypto::envelope::{self, SealedTemplate};
use crate::crypto::keyring::{SubjectRef, TenantKeys};
use crate::crypto::sealing::SealedFor;
use crate::crypto::transform;
use crate::domain::{InvalidInput, LockoutState, Purpose, SubjectId, Tenant};
use crate::error::{EnvelopeRefusal, Error};
use crate::storage::{InFlightSlot, StoredTemplates, SubjectKeys, VerifyBegin, VerifyOutcome};

pub struct VerifyCommand {
    pub subject: SubjectId,
    pub sealed: SealedEnvelope,
    pub purpose: Purpose,
}

#[derive(Debug, Clone)]
pub struct Verification {
    pub matched: bool,
    pub threshold: f32,
    pub score: Option<f32>,
    pub subject_ref: SubjectRef,
    /// This failure started a lockout (or disabled the templates).
    pub lockout_started: bool,
}

impl Vault {
    /// One read round trip (replay check + in-flight claim + state + templates), the
    /// comparison in memory, one pipelined write (lockout counter + release).
    pub async fn verify(&self, tenant: &Tenant, cmd: VerifyCommand) -> Result<Verification, Error> {
        let now = now_unix_ms();
        if self.is_decommissioned(tenant) {
            return Err(Error::TenantDecommissioned);
        }
        let opened =
            self.open_embedding(SealedFor::Verify, tenant, &cmd.subject, &cmd.sealed, now)?;
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);
        let subject_keys = SubjectKeys::new(tenant, &subject_ref);
        // The slot lasts as long as this call can (its own bound), so it never
        // lapses under a live call; the call releases it when done.
        let slot = InFlightSlot {
            token: random_id()?,
            expires_unix_ms: now + self.verify_bound.as_millis() as i64,
        };
        let begin = self
            .store
            .verify_begin(
                &subject_keys,
                now,
                &opened.envelope_digest,
                opened.replay_expires_unix_ms,
                &slot,
            )
            .await?;
        let stored = match begin {
            VerifyBegin::Replayed => {
                crate::telemetry::metrics().replays_refused.add(1, &[]);
                return Err(EnvelopeRefusal::Replayed.into());
            }
            VerifyBegin::Busy => return Err(Error::SubjectBusy),
            VerifyBegin::Ready(stored) => stored,
        };
        let stored_failures = stored.state.failures;
        let compared = self.compare(
            &keys,
            tenant,
            &subject_ref,
            stored,
            &opened,
            &cmd.purpose,
            now,
        );
        let outcome = match &compared {
            Ok(best) if *best >= opened.model.threshold => VerifyOutcome::Matched,
            Ok(_) => VerifyOutcome::Failed,
            Err(_) => VerifyOutcome::NotCompared,
        };
        self.store
            .verify_finish(&subject_keys, outcome, now, &slot)
            .await?;
        let lockout_started = outcome == VerifyOutcome::Failed
            && self.lockout.state(stored_failures + 1, now, now) != LockoutState::Open;
        let metrics = crate::telemetry::metrics();
        match &compared {
            Ok(_) => metrics.verify_decisions.add(
                1,
                &[opentelemetry::KeyValue::new(
                    "decision",
                    if outcome == VerifyOutcome::Matched {
                        "match"
                    } else {
                        "no_match"
                    },
                )],
            ),
            Err(Error::LockedOut { .. } | Error::TemplatesDisabled) => metrics.lockouts.add(1, &[]),
            Err(_) => {}
        }
        // An erased cancelled account keeps its mark, so it still answers
        // "cancelled" (see `storage::scripts::ERASE`).
        let best = compared?;
        Ok(Verification {
            matched: outcome == VerifyOutcome::Matched,
            threshold: opened.model.threshold,
            score: self
                .tenants_exposing_scores
                .contains(tenant)
                .then_some(best),
            subject_ref,
            lockout_started,
        })
    }

    /// Best similarity between the probe and the subject's templates that share the
    /// probe's model and whose consent covers the purpose.
    #[allow(clippy::too_many_arguments)]
    fn compare(
        &self,
        keys: &TenantKeys,
        tenant: &Tenant,
        subject_ref: &SubjectRef,
        stored: StoredTemplates,
        opened: &super::OpenedEmbedding<'_>,
        purpose: &Purpose,
        now: i64,
    ) -> Result<f32, Error> {
        if stored.state.cancelled {
            return Err(Error::AccountCancelled);
        }
        match self.lockout.state(
            stored.state.failures,
            stored.state.last_failure_unix_ms,
            now,
        ) {
            LockoutState::Open => {}
            LockoutState::Disabled => return Err(Error::TemplatesDisabled),
            LockoutState::LockedUntil(until) => {
                return Err(Error::LockedOut {
                    retry_after_secs: ((until - now) as u64).div_ceil(1000),
                });
            }
        }
        if stored.templates.is_empty() {
            return Err(Error::NoTemplate);
        }
        let mut best: Option<f32> = None;
        let mut model_seen = false;
        let mut resurrected = false;
        let erasures = self.known_erasures(tenant);
        let mut probe = Vec::new();
        for (template_id, bytes) in stored.templates {
            let sealed = SealedTemplate::decode(bytes.as_slice()).map_err(|_| {
                tracing::error!(%subject_ref, "stored template is not decodable");
                Error::Integrity
            })?;
            let record = envelope::open_template(keys, tenant, subject_ref, &template_id, sealed)
                .map_err(|e| {
                tracing::error!(%subject_ref, error = %e, "stored template failed to open");
                Error::from(e)
            })?;
            if let Some(erased_at) = erasures.as_ref().and_then(|e| {
                e.erased_at(
                    subject_ref.as_str(),
                    &template_id,
                    record.enrolled_at_unix_ms,
                    record.consent.as_ref().map_or(&[][..], |c| &c.purposes),
                )
            }) {
                // A restored copy of erased data: never compared. The re-wrap
                // worker deletes it (with its audit event) on its next walk.
                crate::telemetry::metrics()
                    .resurrections_refused
                    .add(1, &[]);
                tracing::warn!(%subject_ref, erased_at_unix_ms = erased_at, "a stored template was enrolled before a verified erasure of its subject (a restored copy): not compared");
                resurrected = true;
                continue;
            }
            if record.model != opened.model.id.as_str() {
                continue;
            }
            model_seen = true;
            let covered = record
                .consent
                .as_ref()
                .is_some_and(|c| c.purposes.iter().any(|p| p == purpose.as_str()));
            if !covered {
                continue;
            }
            let salt: [u8; 32] = record
                .salt
                .as_slice()
                .try_into()
                .map_err(|_| Error::Integrity)?;
            transform::protect(
                keys.transform_key(),
                &salt,
                opened.embedding.values(),
                &mut probe,
            )
            .map_err(|_| InvalidInput::ZeroVector)?;
            if probe.len() != record.protected.len() {
                return Err(Error::Integrity);
            }
            let score = transform::similarity(&probe, &record.protected);
            best = Some(best.map_or(score, |b: f32| b.max(score)));
        }
        zeroize::Zeroize::zeroize(&mut probe);
        match best {
            Some(score) => Ok(score),
            None if model_seen => Err(Error::PurposeNotConsented),
            None if resurrected => Err(Error::ResurrectionRefused),
            None => Err(InvalidInput::ModelMismatch.into()),
        }
    }
}
