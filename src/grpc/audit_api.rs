//! `facevault.v1.AuditLog` (role `auditor`): the caller's tenant's events only.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller::require;
use crate::audit::{AuditReader, EventQuery};
use crate::domain::{InvalidInput, Role};
use crate::error::Error;
use crate::proto;
use crate::proto::audit_log_server::AuditLog;

pub struct AuditLogApi {
    reader: Arc<AuditReader>,
}

impl AuditLogApi {
    pub fn new(reader: Arc<AuditReader>) -> Self {
        Self { reader }
    }
}

const MAX_PAGE: u32 = 1000;

fn stream_id(token: &str) -> bool {
    token.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

#[tonic::async_trait]
impl AuditLog for AuditLogApi {
    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let caller = require(&request, Role::Auditor)?;
        let r = request.into_inner();
        if !r.page_token.is_empty() && !stream_id(&r.page_token) {
            return Err(Error::from(InvalidInput::PageToken).into());
        }
        let query = EventQuery {
            since_ms: r.since.as_ref().map(crate::vault::unix_ms),
            until_ms: r.until.as_ref().map(crate::vault::unix_ms),
            subject_ref: (!r.subject_ref.is_empty()).then_some(r.subject_ref),
            op: (!r.op.is_empty()).then_some(r.op),
            page_size: if r.page_size == 0 {
                100
            } else {
                r.page_size.min(MAX_PAGE)
            } as usize,
            page_token: (!r.page_token.is_empty()).then_some(r.page_token),
        };
        let (events, next) = self
            .reader
            .list(&caller.tenant, &query)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::ListEventsResponse {
            events,
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn verify_chain(
        &self,
        request: Request<proto::VerifyChainRequest>,
    ) -> Result<Response<proto::VerifyChainResponse>, Status> {
        let caller = require(&request, Role::Auditor)?;
        let report = self
            .reader
            .verify(&caller.tenant)
            .await
            .map_err(Error::from)?;
        let first = report.breaks.first().cloned().unwrap_or_default();
        Ok(Response::new(proto::VerifyChainResponse {
            intact: report.breaks.is_empty(),
            events_checked: report.events_checked,
            chain_id: first.chain_id,
            broken_at_seq: first.seq,
            reason: first.reason,
            breaks: report.breaks.len() as u64,
            all_breaks: report
                .breaks
                .into_iter()
                .map(|b| proto::ChainBreak {
                    chain_id: b.chain_id,
                    seq: b.seq,
                    reason: b.reason,
                })
                .collect(),
        }))
    }
}
