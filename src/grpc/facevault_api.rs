//! `facevault.v1.FaceVault`: thin handlers. Each extracts the caller, parses the
//! request into a domain command, calls the vault and maps the result.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller::require;
use crate::domain::Role;
use crate::error::Error;
use crate::proto::face_vault_server::FaceVault;
use crate::proto::{self, DeletionState};
use crate::vault::{DeleteCommand, EnrollCommand, Vault, VerifyCommand, now_unix_ms};

pub struct FaceVaultApi {
    vault: Arc<Vault>,
}

impl FaceVaultApi {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

#[tonic::async_trait]
impl FaceVault for FaceVaultApi {
    async fn get_sealing_keys(
        &self,
        request: Request<proto::GetSealingKeysRequest>,
    ) -> Result<Response<proto::GetSealingKeysResponse>, Status> {
        require(&request, Role::App)?;
        let keys = self
            .vault
            .sealing_keys()
            .current(now_unix_ms())
            .into_iter()
            .map(|k| proto::SealingKey {
                key_id: k.key_id.clone(),
                suite: k.suite.as_str().to_owned(),
                public_key: k.public_key.clone(),
                not_after: Some(crate::vault::timestamp(k.not_after_unix_ms)),
            })
            .collect();
        Ok(Response::new(proto::GetSealingKeysResponse {
            keys,
            receipt_verification_key: self.vault.receipt_verification_key().to_vec(),
        }))
    }

    async fn enroll(
        &self,
        request: Request<proto::EnrollRequest>,
    ) -> Result<Response<proto::EnrollResponse>, Status> {
        let caller = require(&request, Role::App)?;
        let command = EnrollCommand::try_from(request.into_inner()).map_err(Error::from)?;
        let enrolled = self.vault.enroll(&caller.tenant, command).await?;
        Ok(Response::new(proto::EnrollResponse {
            subject_ref: enrolled.subject_ref.to_string(),
            template_id: enrolled.template_id,
            templates_held: enrolled.templates_held,
            expires_at: None,
        }))
    }

    async fn verify(
        &self,
        request: Request<proto::VerifyRequest>,
    ) -> Result<Response<proto::VerifyResponse>, Status> {
        let caller = require(&request, Role::App)?;
        let command = VerifyCommand::try_from(request.into_inner()).map_err(Error::from)?;
        let verification = self.vault.verify(&caller.tenant, command).await?;
        let decision = if verification.matched {
            proto::Decision::Match
        } else {
            proto::Decision::NoMatch
        };
        Ok(Response::new(proto::VerifyResponse {
            decision: decision.into(),
            threshold: verification.threshold,
            score: verification.score,
            audit_id: verification.audit_id,
        }))
    }

    async fn delete_subject(
        &self,
        request: Request<proto::DeleteSubjectRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        let caller = require(&request, Role::App)?;
        let command = DeleteCommand::try_from(request.into_inner()).map_err(Error::from)?;
        let ticket = self.vault.delete_subject(&caller.tenant, command).await?;
        Ok(Response::new(proto::DeletionTicket {
            ticket_id: ticket.ticket_id,
            subject_ref: ticket.subject_ref.to_string(),
            state: if ticket.completed_at_unix_ms.is_some() {
                DeletionState::Completed
            } else {
                DeletionState::Pending
            }
            .into(),
            requested_at: Some(crate::vault::timestamp(ticket.requested_at_unix_ms)),
            deadline: Some(crate::vault::timestamp(ticket.deadline_unix_ms)),
            completed_at: ticket.completed_at_unix_ms.map(crate::vault::timestamp),
            receipt: ticket.receipt,
        }))
    }

    async fn withdraw_consent(
        &self,
        request: Request<proto::WithdrawConsentRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        require(&request, Role::App)?;
        Err(Status::unimplemented(
            "WithdrawConsent is not available yet",
        ))
    }

    async fn cancel_account(
        &self,
        request: Request<proto::CancelAccountRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        require(&request, Role::App)?;
        Err(Status::unimplemented("CancelAccount is not available yet"))
    }

    async fn get_deletion_ticket(
        &self,
        request: Request<proto::GetDeletionTicketRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        require(&request, Role::App)?;
        Err(Status::unimplemented(
            "GetDeletionTicket is not available yet",
        ))
    }

    async fn get_compliance_report(
        &self,
        request: Request<proto::GetComplianceReportRequest>,
    ) -> Result<Response<proto::ComplianceReport>, Status> {
        require(&request, Role::App)?;
        Err(Status::unimplemented(
            "GetComplianceReport is not available yet",
        ))
    }
}
