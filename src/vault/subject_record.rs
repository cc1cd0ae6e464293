//! Subject access (PIPL art. 45): what is held about one person, read from
//! their templates, counters and tickets. Holds no template, salt, score or key.

use prost::Message as _;

use super::{Ticket, Vault, now_unix_ms};
use crate::crypto::envelope::{self, SealedTemplate};
use crate::domain::{LockoutState, SubjectId, Tenant};
use crate::error::Error;
use crate::storage::SubjectKeys;

/// One template, as a person may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSummary {
    pub model: String,
    pub enrolled_at_unix_ms: i64,
    pub expires_at_unix_ms: Option<i64>,
}

/// One consent, as stored with the templates it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentSummary {
    pub consent_id: String,
    pub purposes: Vec<String>,
    pub method: String,
    pub notice_version: String,
    pub granted_at_unix_ms: i64,
    pub off_device_storage: bool,
    pub subject_under_14: bool,
}

#[derive(Debug, Clone)]
pub struct SubjectRecord {
    pub subject_ref: String,
    pub templates: Vec<TemplateSummary>,
    pub consents: Vec<ConsentSummary>,
    pub failed_attempts: u32,
    pub locked_until_unix_ms: Option<i64>,
    /// The subject's deletion tickets still kept, pending or completed.
    pub tickets: Vec<Ticket>,
}

impl Vault {
    pub async fn subject_record(
        &self,
        tenant: &Tenant,
        subject: &SubjectId,
    ) -> Result<SubjectRecord, Error> {
        let keys = self.keys.current().keyring.tenant(tenant)?;
        let subject_ref = keys.subject_ref(subject);
        let stored = self
            .store
            .read_subject(&SubjectKeys::new(tenant, &subject_ref))
            .await?;
        let max_age = self.max_template_age(tenant);
        let mut templates = Vec::new();
        let mut consents: Vec<ConsentSummary> = Vec::new();
        for (template_id, bytes) in &stored.templates {
            let sealed = SealedTemplate::decode(bytes.as_slice()).map_err(|_| Error::Integrity)?;
            let record = envelope::open_template(&keys, tenant, &subject_ref, template_id, sealed)?;
            templates.push(TemplateSummary {
                model: record.model.clone(),
                enrolled_at_unix_ms: record.enrolled_at_unix_ms,
                expires_at_unix_ms: max_age
                    .map(|age| record.enrolled_at_unix_ms + age.as_millis() as i64),
            });
            if let Some(c) = record.consent.as_ref()
                && !consents.iter().any(|seen| seen.consent_id == c.consent_id)
            {
                consents.push(ConsentSummary {
                    consent_id: c.consent_id.clone(),
                    purposes: c.purposes.clone(),
                    method: c.method.clone(),
                    notice_version: c.notice_version.clone(),
                    granted_at_unix_ms: c.granted_at_unix_ms,
                    off_device_storage: c.off_device_storage,
                    subject_under_14: c.subject_under_14,
                });
            }
        }
        templates.sort_by_key(|t| t.enrolled_at_unix_ms);
        let locked_until_unix_ms = match self.lockout.state(
            stored.state.failures,
            stored.state.last_failure_unix_ms,
            now_unix_ms(),
        ) {
            LockoutState::LockedUntil(until) => Some(until),
            LockoutState::Open | LockoutState::Disabled => None,
        };
        // The index, and the ids derived from the subject for tickets
        // written before the index existed.
        let mut ids = self
            .store
            .subject_tickets(tenant.as_str(), subject_ref.as_str())
            .await?;
        ids.push(keys.cancel_ticket_id(&subject_ref));
        ids.push(keys.decommission_ticket_id(&subject_ref));
        ids.sort();
        ids.dedup();
        let mut tickets = Vec::new();
        for ticket_id in ids {
            if let Some(ticket) = self.store.ticket(tenant.as_str(), &ticket_id).await? {
                tickets.push(self.with_proven_shred(tenant, Ticket::from(ticket)).await);
            }
        }
        // Oldest first; requests within one millisecond in a stable order:
        // completed ones first, then by id.
        tickets.sort_by(|a, b| {
            (
                a.requested_at_unix_ms,
                a.completed_at_unix_ms.is_none(),
                &a.ticket_id,
            )
                .cmp(&(
                    b.requested_at_unix_ms,
                    b.completed_at_unix_ms.is_none(),
                    &b.ticket_id,
                ))
        });
        Ok(SubjectRecord {
            subject_ref: subject_ref.as_str().to_owned(),
            templates,
            consents,
            failed_attempts: stored.state.failures,
            locked_until_unix_ms,
            tickets,
        })
    }
}
