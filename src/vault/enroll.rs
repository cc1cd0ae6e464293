use zeroize::Zeroizing;

use super::{SealedEnvelope, Vault, now_unix_ms, random_id};
use crate::crypto::envelope::{self, ConsentRecord, TemplateRecord};
use crate::crypto::keyring::SubjectRef;
use crate::crypto::sealing::SealedFor;
use crate::crypto::{random_bytes, transform};
use crate::domain::erasures::{Erasure, ErasureScope};
use crate::domain::{Consent, SubjectId, Tenant};
use crate::error::{EnvelopeRefusal, Error};
use crate::storage::{EnrollOutcome, EnrollWrite, SubjectKeys};

pub struct EnrollCommand {
    pub subject: SubjectId,
    pub sealed: SealedEnvelope,
    pub consent: Consent,
    pub replace: bool,
}

#[derive(Debug)]
pub struct Enrollment {
    pub subject_ref: SubjectRef,
    pub template_id: String,
    pub templates_held: u32,
    pub expires_at_unix_ms: Option<i64>,
}

impl Vault {
    pub async fn enroll(&self, tenant: &Tenant, cmd: EnrollCommand) -> Result<Enrollment, Error> {
        let now = now_unix_ms();
        if self.is_decommissioned(tenant) {
            return Err(Error::TenantDecommissioned);
        }
        let opened =
            self.open_embedding(SealedFor::Enroll, tenant, &cmd.subject, &cmd.sealed, now)?;
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(&cmd.subject);

        // A fresh salt per enrollment: re-enrolling yields an unrelated template,
        // which is what makes a leaked template revocable.
        let salt = Zeroizing::new(random_bytes::<32>()?);
        let mut protected = Vec::new();
        transform::protect(
            keys.transform_key(),
            &salt,
            opened.embedding.values(),
            &mut protected,
        )
        .map_err(|_| crate::domain::InvalidInput::ZeroVector)?;
        let record = TemplateRecord {
            model: opened.model.id.as_str().to_owned(),
            salt: salt.to_vec(),
            protected,
            enrolled_at_unix_ms: now,
            consent: Some(ConsentRecord {
                consent_id: cmd.consent.consent_id.clone(),
                purposes: cmd
                    .consent
                    .purposes
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                granted_at_unix_ms: cmd.consent.granted_at_unix_ms,
                method: cmd.consent.method.as_str().to_owned(),
                notice_version: cmd.consent.notice_version.clone(),
                off_device_storage: cmd.consent.off_device_storage,
                subject_under_14: cmd.consent.subject_under_14,
            }),
        };
        let template_id = random_id()?;
        let sealed = envelope::seal_template(&keys, tenant, &subject_ref, &template_id, &record)?;
        drop(record);
        let sealed_bytes = prost::Message::encode_to_vec(&sealed);

        // The ledger follows the templates: an intent first, so an enrollment
        // cut short between the two is finished by the reconciler.
        // The intent is refused in the script that records it once the tenant
        // is decommissioned, whatever this process has heard.
        let intent = self
            .store
            .ledger_intend_enrollment(tenant.as_str(), subject_ref.as_str(), now)
            .await?
            .ok_or(Error::TenantDecommissioned)?;
        // A cancelled account stays cancelled for as long as its ticket is kept
        // (the script checks its mark): a new account gets a new subject id.
        let outcome = self
            .store
            .enroll(
                &SubjectKeys::new(tenant, &subject_ref),
                EnrollWrite {
                    now_unix_ms: now,
                    envelope_digest: &opened.envelope_digest,
                    replay_expires_unix_ms: opened.replay_expires_unix_ms,
                    replace: cmd.replace,
                    max_templates: self.max_templates,
                    disable_after: self.lockout.disable_after,
                    template_id: &template_id,
                    sealed_template: &sealed_bytes,
                },
            )
            .await?;
        match outcome {
            EnrollOutcome::Stored { templates_held } => {
                self.finish_ledger(tenant, &subject_ref, Vec::new(), intent)
                    .await;
                if cmd.replace {
                    // Replacing revokes every template enrolled before this
                    // one: an erasure the verified log must hold, so that a
                    // restored copy of a revoked template is never carried into
                    // a new key epoch (`domain::erasures`). Logged after the
                    // write: were it logged first and the write refused, live
                    // templates would be taken for restored copies.
                    let erasure = Erasure::of(now, ErasureScope::Subject);
                    self.record_erasure(
                        tenant,
                        subject_ref.as_str(),
                        ("facevault/enroll", &template_id),
                        "replace",
                        &erasure,
                    )
                    .await?;
                }
                let expires_at_unix_ms = self
                    .max_template_age(tenant)
                    .map(|age| now + age.as_millis() as i64);
                Ok(Enrollment {
                    subject_ref,
                    template_id,
                    templates_held,
                    expires_at_unix_ms,
                })
            }
            EnrollOutcome::Replayed => {
                crate::telemetry::metrics().replays_refused.add(1, &[]);
                Err(EnvelopeRefusal::Replayed.into())
            }
            EnrollOutcome::Cancelled => Err(Error::AccountCancelled),
            EnrollOutcome::Disabled => Err(Error::TemplatesDisabled),
            EnrollOutcome::Full => Err(Error::TemplateLimit),
        }
    }
}
