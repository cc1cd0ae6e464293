//! `facevault.v1.FaceVault`: thin handlers. Each extracts the caller, parses the
//! request into a domain command, calls the vault and maps the result.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller::require;
use super::layers::audit::AuditNote;
use crate::audit::AuditReader;
use crate::domain::{Role, SubjectId};
use crate::error::Error;
use crate::proto::face_vault_server::FaceVault;
use crate::proto::{self, DeletionState};
use crate::vault::{
    CancelCommand, DeleteCommand, EnrollCommand, Ticket, Vault, VerifyCommand, WithdrawCommand,
    now_unix_ms, timestamp,
};

pub struct FaceVaultApi {
    vault: Arc<Vault>,
    /// For subject access: the count of a subject's audit events.
    audit: Arc<AuditReader>,
}

impl FaceVaultApi {
    pub fn new(vault: Arc<Vault>, audit: Arc<AuditReader>) -> Self {
        Self { vault, audit }
    }

    /// Records the subject's pseudonym on the call's audit event as soon as the id
    /// parses, so refusals of malformed requests are still attributed.
    fn note_subject(
        &self,
        note: &AuditNote,
        caller: &super::caller::TenantCaller,
        subject_id: &str,
    ) {
        if let Ok(subject) = crate::domain::SubjectId::try_from(subject_id.to_owned())
            && let Ok(subject_ref) = self.vault.subject_ref(&caller.tenant, &subject)
        {
            note.subject(subject_ref.as_str());
        }
    }
}

/// The call's audit note (a detached one if the audit layer is not installed).
fn note<T>(request: &Request<T>) -> AuditNote {
    request
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default()
}

#[tonic::async_trait]
impl FaceVault for FaceVaultApi {
    async fn get_sealing_keys(
        &self,
        request: Request<proto::GetSealingKeysRequest>,
    ) -> Result<Response<proto::GetSealingKeysResponse>, Status> {
        require(&request, Role::App)?;
        let material = self.vault.keys();
        let keys = material
            .sealing
            .current(now_unix_ms())
            .into_iter()
            .map(|k| proto::SealingKey {
                key_id: k.key_id.clone(),
                suite: k.suite.as_str().to_owned(),
                public_key: k.public_key.clone(),
                not_after: Some(timestamp(k.not_after_unix_ms)),
            })
            .collect();
        Ok(Response::new(proto::GetSealingKeysResponse {
            keys,
            receipt_verification_key: material.receipt_public_key(),
            session_ttl_seconds: u32::try_from(self.vault.session_ttl().as_secs())
                .unwrap_or(u32::MAX),
        }))
    }

    async fn enroll(
        &self,
        request: Request<proto::EnrollRequest>,
    ) -> Result<Response<proto::EnrollResponse>, Status> {
        let note = note(&request);
        let caller = require(&request, Role::App)?;
        self.note_subject(&note, &caller, &request.get_ref().subject_id);
        let command = EnrollCommand::try_from(request.into_inner()).map_err(Error::from)?;
        let enrolled = self
            .vault
            .enroll(&caller.tenant, command)
            .await
            .inspect_err(|e| note_refusal(&note, e))?;
        Ok(Response::new(proto::EnrollResponse {
            subject_ref: enrolled.subject_ref.to_string(),
            template_id: enrolled.template_id,
            templates_held: enrolled.templates_held,
            expires_at: enrolled.expires_at_unix_ms.map(timestamp),
        }))
    }

    async fn verify(
        &self,
        request: Request<proto::VerifyRequest>,
    ) -> Result<Response<proto::VerifyResponse>, Status> {
        let note = note(&request);
        let caller = require(&request, Role::App)?;
        self.note_subject(&note, &caller, &request.get_ref().subject_id);
        let command = VerifyCommand::try_from(request.into_inner()).map_err(Error::from)?;
        note.purpose(command.purpose.as_str());
        let verification = self
            .vault
            .verify(&caller.tenant, command)
            .await
            .inspect_err(|e| note_refusal(&note, e))?;
        let decision = if verification.matched {
            note.detail("match");
            proto::Decision::Match
        } else if verification.lockout_started {
            note.detail("no-match, lockout-started");
            proto::Decision::NoMatch
        } else {
            note.detail("no-match");
            proto::Decision::NoMatch
        };
        Ok(Response::new(proto::VerifyResponse {
            decision: decision.into(),
            threshold: verification.threshold,
            score: verification.score,
            audit_id: note.event_id().to_owned(),
        }))
    }

    async fn delete_subject(
        &self,
        request: Request<proto::DeleteSubjectRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        let note = note(&request);
        let caller = require(&request, Role::App)?;
        let command = DeleteCommand::try_from(request.into_inner()).map_err(Error::from)?;
        note.subject(
            self.vault
                .subject_ref(&caller.tenant, &command.subject)?
                .as_str(),
        );
        let ticket = self.vault.delete_subject(&caller.tenant, command).await?;
        Ok(Response::new(ticket_to_proto(ticket)))
    }

    async fn withdraw_consent(
        &self,
        request: Request<proto::WithdrawConsentRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        let note = note(&request);
        let caller = require(&request, Role::App)?;
        let command = WithdrawCommand::try_from(request.into_inner()).map_err(Error::from)?;
        note.subject(
            self.vault
                .subject_ref(&caller.tenant, &command.subject)?
                .as_str(),
        );
        let purposes: Vec<&str> = command.purposes.iter().map(|p| p.as_str()).collect();
        note.purpose(&purposes.join(","));
        let ticket = self.vault.withdraw_consent(&caller.tenant, command).await?;
        Ok(Response::new(ticket_to_proto(ticket)))
    }

    async fn cancel_account(
        &self,
        request: Request<proto::CancelAccountRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        let note = note(&request);
        let caller = require(&request, Role::App)?;
        let command = CancelCommand::try_from(request.into_inner()).map_err(Error::from)?;
        note.subject(
            self.vault
                .subject_ref(&caller.tenant, &command.subject)?
                .as_str(),
        );
        let ticket = self.vault.cancel_account(&caller.tenant, command).await?;
        Ok(Response::new(ticket_to_proto(ticket)))
    }

    async fn get_deletion_ticket(
        &self,
        request: Request<proto::GetDeletionTicketRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        let note = note(&request);
        let caller = require(&request, Role::App)?;
        let ticket = self
            .vault
            .deletion_ticket(&caller.tenant, &request.get_ref().ticket_id)
            .await?;
        note.subject(&ticket.subject_ref);
        Ok(Response::new(ticket_to_proto(ticket)))
    }

    async fn get_compliance_report(
        &self,
        request: Request<proto::GetComplianceReportRequest>,
    ) -> Result<Response<proto::ComplianceReport>, Status> {
        let caller = require(&request, Role::App)?;
        let report = self.vault.compliance_report(&caller.tenant).await?;
        Ok(Response::new(proto::ComplianceReport {
            tenant_subjects: report.tenant_subjects,
            filing_threshold: report.filing_threshold,
            filing_required: report.filing_required,
            deletions_pending: report.deletions_pending,
            deletions_overdue: report.deletions_overdue,
            oldest_pending_deadline: report.oldest_pending_deadline_unix_ms.map(timestamp),
            consents_by_purpose: report.consents_by_purpose.into_iter().collect(),
            oldest_key_epoch: report.key_epochs.oldest_epoch,
            oldest_key_epoch_retire_by: report.key_epochs.retire_by_unix_ms.map(timestamp),
            key_epoch_retirement_overdue: report.key_epochs.overdue,
            threshold_reached_at: report.filing.threshold_reached_at_unix_ms.map(timestamp),
            filing_due_by: report.filing.filing_due_by_unix_ms.map(timestamp),
            filing_due_by_provisional: report.filing.filing_due_by_provisional,
            filing_reference: report.filing.filing_reference,
            decommission: report
                .decommission
                .map(super::admin_api::decommission_to_proto),
        }))
    }

    async fn get_subject_record(
        &self,
        request: Request<proto::GetSubjectRecordRequest>,
    ) -> Result<Response<proto::SubjectRecord>, Status> {
        let note = note(&request);
        let caller = require(&request, Role::App)?;
        self.note_subject(&note, &caller, &request.get_ref().subject_id);
        let subject = SubjectId::try_from(request.into_inner().subject_id).map_err(Error::from)?;
        let record = self.vault.subject_record(&caller.tenant, &subject).await?;
        let (audit_events, last_verified) = self
            .audit
            .subject_summary(&caller.tenant, &record.subject_ref)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::SubjectRecord {
            subject_ref: record.subject_ref,
            templates: record
                .templates
                .into_iter()
                .map(|t| proto::TemplateRecord {
                    model: t.model,
                    enrolled_at: Some(timestamp(t.enrolled_at_unix_ms)),
                    expires_at: t.expires_at_unix_ms.map(timestamp),
                })
                .collect(),
            consents: record
                .consents
                .into_iter()
                .map(super::convert::consent_to_proto)
                .collect(),
            failed_attempts: record.failed_attempts,
            locked_until: record.locked_until_unix_ms.map(timestamp),
            tickets: record.tickets.into_iter().map(ticket_to_proto).collect(),
            audit_events,
            last_verified_at: last_verified.map(timestamp),
        }))
    }
}

fn ticket_to_proto(ticket: Ticket) -> proto::DeletionTicket {
    let state = if ticket.completed_at_unix_ms.is_some() {
        DeletionState::Completed
    } else {
        DeletionState::Pending
    };
    proto::DeletionTicket {
        ticket_id: ticket.ticket_id,
        subject_ref: ticket.subject_ref,
        state: state.into(),
        requested_at: Some(timestamp(ticket.requested_at_unix_ms)),
        deadline: Some(timestamp(ticket.deadline_unix_ms)),
        completed_at: ticket.completed_at_unix_ms.map(timestamp),
        receipt: ticket.receipt,
        shredded_at: ticket.shredded_at_unix_ms.map(timestamp),
        shred_receipt: ticket.shred_receipt,
        erasure_proof: ticket.erasure_proof,
        deadline_provisional: ticket.deadline_provisional,
    }
}

/// What an auditor needs to tell refusals of interest apart.
fn note_refusal(note: &AuditNote, error: &Error) {
    match error {
        Error::LockedOut { .. } => note.detail("lockout"),
        Error::TemplatesDisabled => note.detail("disabled"),
        Error::Envelope(crate::error::EnvelopeRefusal::Replayed) => note.detail("replay"),
        Error::ResurrectionRefused => note.detail("resurrection-refused"),
        _ => {}
    }
}
