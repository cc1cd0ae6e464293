//! `facevault.v1.AuditLog` (role `auditor`): the caller's tenant's events only.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller::require;
use crate::audit::walks::Walks;
use crate::audit::{AuditReader, EventQuery};
use crate::domain::{InvalidInput, Role};
use crate::error::Error;
use crate::proto;
use crate::proto::audit_log_server::AuditLog;

pub struct AuditLogApi {
    reader: Arc<AuditReader>,
    /// One `VerifyChain` walk per tenant at a time.
    walks: Walks,
}

impl AuditLogApi {
    pub fn new(reader: Arc<AuditReader>) -> Self {
        Self {
            reader,
            walks: Walks::default(),
        }
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
        let full = request.get_ref().full;
        // The guard lives as long as the walk, which runs to its end even when
        // the caller hangs up (the call is detached).
        let _walk = self
            .walks
            .begin(&caller.tenant)
            .map_err(|retry_after_secs| {
                tracing::info!(
                    tenant = caller.tenant.as_str(),
                    retry_after_secs,
                    "VerifyChain refused: a walk of this tenant's log is already running"
                );
                Error::AuditWalkRunning { retry_after_secs }
            })?;
        let report = self
            .reader
            .verify(&caller.tenant, full, &[])
            .await
            .map_err(Error::from)?;
        let first = report.breaks.first().cloned();
        Ok(Response::new(proto::VerifyChainResponse {
            intact: report.breaks.is_empty(),
            events_checked: report.events_checked,
            chain_id: first
                .as_ref()
                .map(|b| b.chain_id.clone())
                .unwrap_or_default(),
            broken_at_seq: first.as_ref().map_or(0, |b| b.seq),
            reason: first.map(|b| b.reason).unwrap_or_default(),
            breaks: report.breaks.len() as u64,
            all_breaks: report
                .breaks
                .into_iter()
                .map(|b| proto::ChainBreak {
                    chain_id: b.chain_id,
                    seq: b.seq,
                    reason: b.reason,
                    kind: b.kind.as_str().to_owned(),
                })
                .collect(),
            full: report.full,
        }))
    }

    async fn get_signed_tree_head(
        &self,
        request: Request<proto::GetSignedTreeHeadRequest>,
    ) -> Result<Response<proto::GetSignedTreeHeadResponse>, Status> {
        let caller = require(&request, Role::Auditor)?;
        let chain = ChainId::parse(&request.get_ref().chain_id, true)?;
        let heads = self
            .reader
            .heads(&caller.tenant, chain.as_deref())
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::GetSignedTreeHeadResponse {
            heads: heads.iter().map(|h| h.to_proto()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<proto::GetConsistencyProofRequest>,
    ) -> Result<Response<proto::ConsistencyProof>, Status> {
        let caller = require(&request, Role::Auditor)?;
        let r = request.into_inner();
        let chain = ChainId::parse(&r.chain_id, false)?.unwrap_or_default();
        if r.first_size == 0 || r.first_size > r.second_size {
            return Err(Error::from(InvalidInput::TreeSizes).into());
        }
        let hashes = self
            .reader
            .consistency_proof(&caller.tenant, &chain, r.first_size, r.second_size)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(proto::ConsistencyProof {
            chain_id: chain,
            first_size: r.first_size,
            second_size: r.second_size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<proto::GetInclusionProofRequest>,
    ) -> Result<Response<proto::InclusionProof>, Status> {
        let caller = require(&request, Role::Auditor)?;
        let r = request.into_inner();
        if r.event_id.is_empty() || r.event_id.len() > 64 {
            return Err(Error::from(InvalidInput::EventId).into());
        }
        let location = self
            .reader
            .locate(&caller.tenant, &r.event_id)
            .await
            .map_err(Error::from)?;
        let inclusion = self
            .reader
            .inclusion_proof(&caller.tenant, location, r.tree_size)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(inclusion.to_proto()))
    }
}

/// A chain id as writers make them: `w-` and 16 hex digits.
struct ChainId;

impl ChainId {
    fn parse(text: &str, optional: bool) -> Result<Option<String>, Status> {
        if text.is_empty() && optional {
            return Ok(None);
        }
        let well_formed = text
            .strip_prefix("w-")
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|c| c.is_ascii_hexdigit()));
        if !well_formed {
            return Err(Error::from(InvalidInput::ChainId).into());
        }
        Ok(Some(text.to_owned()))
    }
}
