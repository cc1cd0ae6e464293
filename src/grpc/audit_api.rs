//! `facevault.v1.AuditLog` (role `auditor`).

use tonic::{Request, Response, Status};

use super::caller::require;
use crate::domain::Role;
use crate::proto;
use crate::proto::audit_log_server::AuditLog;

#[derive(Default)]
pub struct AuditLogApi;

#[tonic::async_trait]
impl AuditLog for AuditLogApi {
    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        require(&request, Role::Auditor)?;
        Err(Status::unimplemented("ListEvents is not available yet"))
    }

    async fn verify_chain(
        &self,
        request: Request<proto::VerifyChainRequest>,
    ) -> Result<Response<proto::VerifyChainResponse>, Status> {
        require(&request, Role::Auditor)?;
        Err(Status::unimplemented("VerifyChain is not available yet"))
    }
}
