//! `facevault.v1.Admin`: the caller's tenant's decommission (role `admin`), and
//! the deployment-wide report (role `operator`, which has no tenant; a tenant's
//! admin sees only its own tenant).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller::{require, require_operator};
use crate::domain::Role;
use crate::domain::deletion::CancelReason;
use crate::error::Error;
use crate::proto;
use crate::proto::admin_server::Admin;
use crate::vault::{TenantDecommission, Vault, timestamp};

pub struct AdminApi {
    vault: Arc<Vault>,
}

impl AdminApi {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self { vault }
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn decommission_tenant(
        &self,
        request: Request<proto::DecommissionTenantRequest>,
    ) -> Result<Response<proto::TenantDecommission>, Status> {
        let caller = require(&request, Role::Admin)?;
        let reason = CancelReason::try_from(request.into_inner().reason).map_err(Error::from)?;
        let decommission = self
            .vault
            .decommission_tenant(&caller.tenant, reason)
            .await?;
        Ok(Response::new(decommission_to_proto(decommission)))
    }

    async fn get_tenant_decommission(
        &self,
        request: Request<proto::GetTenantDecommissionRequest>,
    ) -> Result<Response<proto::TenantDecommission>, Status> {
        let caller = require(&request, Role::Admin)?;
        let decommission = self
            .vault
            .tenant_decommission_with_reason(&caller.tenant)
            .await?
            .ok_or(Error::NoDecommission)?;
        Ok(Response::new(decommission_to_proto(decommission)))
    }

    async fn get_deployment_report(
        &self,
        request: Request<proto::GetDeploymentReportRequest>,
    ) -> Result<Response<proto::DeploymentReport>, Status> {
        require_operator(&request)?;
        let report = self.vault.deployment_report().await?;
        Ok(Response::new(proto::DeploymentReport {
            total_subjects: report.total_subjects,
            tenants: report.tenants,
            filing_threshold: report.filing_threshold,
            filing_required: report.filing_required,
            threshold_reached_at: report.filing.threshold_reached_at_unix_ms.map(timestamp),
            filing_due_by: report.filing.filing_due_by_unix_ms.map(timestamp),
            filing_due_by_provisional: report.filing.filing_due_by_provisional,
            filing_reference: report.filing.filing_reference,
            deletions_pending: report.deletions_pending,
            deletions_overdue: report.deletions_overdue,
            decommissions: report
                .decommissions
                .into_iter()
                .map(decommission_to_proto)
                .collect(),
        }))
    }
}

pub fn decommission_to_proto(d: TenantDecommission) -> proto::TenantDecommission {
    let state = if d.completed {
        proto::DecommissionState::DecommissionCompleted
    } else {
        proto::DecommissionState::DecommissionInProgress
    };
    proto::TenantDecommission {
        tenant: d.tenant,
        state: state.into(),
        requested_at: Some(timestamp(d.requested_at_unix_ms)),
        deadline: Some(timestamp(d.deadline_unix_ms)),
        deadline_provisional: d.deadline_provisional,
        subjects_total: d.subjects_total,
        subjects_erased: d.subjects_erased,
        completed_at: d.completed_at_unix_ms.map(timestamp),
        receipt: d.receipt,
        reason_hmac_key: d
            .reason
            .as_ref()
            .map(|r| r.commitment_key.to_vec())
            .unwrap_or_default(),
        reason: d.reason.map(|r| r.text.to_string()).unwrap_or_default(),
    }
}
