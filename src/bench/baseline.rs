//! The naive baseline, served by the benchmark only: the same stack (tonic, mTLS,
//! the same Redis) storing plain vectors under plain subject ids and comparing
//! plain cosine. No sealing, transform, encryption, lockout or audit: what a
//! service without any of the protections would do. It exists to price them; the
//! production service has no such path.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use tonic::{Request, Response, Status};

use crate::proto::face_vault_server::{FaceVault, FaceVaultServer};
use crate::proto::{self, Decision};

pub struct NaiveVault {
    redis: ConnectionManager,
    threshold: f32,
}

/// The "ciphertext" field carries the plain little-endian floats.
fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

pub fn service(redis: ConnectionManager, threshold: f32) -> FaceVaultServer<NaiveVault> {
    FaceVaultServer::new(NaiveVault { redis, threshold })
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the baseline implements Enroll and Verify only",
    ))
}

#[tonic::async_trait]
impl FaceVault for NaiveVault {
    async fn get_sealing_keys(
        &self,
        _: Request<proto::GetSealingKeysRequest>,
    ) -> Result<Response<proto::GetSealingKeysResponse>, Status> {
        unimplemented()
    }

    async fn enroll(
        &self,
        request: Request<proto::EnrollRequest>,
    ) -> Result<Response<proto::EnrollResponse>, Status> {
        let r = request.into_inner();
        let values = r.embedding.map(|e| e.ciphertext).unwrap_or_default();
        let mut conn = self.redis.clone();
        let () = redis::cmd("SET")
            .arg(format!("naive:{}", r.subject_id))
            .arg(values)
            .query_async(&mut conn)
            .await
            .map_err(|_| Status::unavailable("redis"))?;
        Ok(Response::new(proto::EnrollResponse {
            templates_held: 1,
            ..Default::default()
        }))
    }

    async fn verify(
        &self,
        request: Request<proto::VerifyRequest>,
    ) -> Result<Response<proto::VerifyResponse>, Status> {
        let r = request.into_inner();
        let probe = floats(&r.probe.map(|p| p.ciphertext).unwrap_or_default());
        let mut conn = self.redis.clone();
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("naive:{}", r.subject_id))
            .query_async(&mut conn)
            .await
            .map_err(|_| Status::unavailable("redis"))?;
        let stored = floats(&stored.ok_or_else(|| Status::not_found("no template"))?);
        let score = cosine(&probe, &stored);
        let decision = if score >= self.threshold {
            Decision::Match
        } else {
            Decision::NoMatch
        };
        Ok(Response::new(proto::VerifyResponse {
            decision: decision.into(),
            threshold: self.threshold,
            score: Some(score),
            audit_id: String::new(),
        }))
    }

    async fn delete_subject(
        &self,
        _: Request<proto::DeleteSubjectRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        unimplemented()
    }

    async fn withdraw_consent(
        &self,
        _: Request<proto::WithdrawConsentRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        unimplemented()
    }

    async fn cancel_account(
        &self,
        _: Request<proto::CancelAccountRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        unimplemented()
    }

    async fn get_deletion_ticket(
        &self,
        _: Request<proto::GetDeletionTicketRequest>,
    ) -> Result<Response<proto::DeletionTicket>, Status> {
        unimplemented()
    }

    async fn get_compliance_report(
        &self,
        _: Request<proto::GetComplianceReportRequest>,
    ) -> Result<Response<proto::ComplianceReport>, Status> {
        unimplemented()
    }

    async fn get_subject_record(
        &self,
        _: Request<proto::GetSubjectRecordRequest>,
    ) -> Result<Response<proto::SubjectRecord>, Status> {
        unimplemented()
    }
}

/// Serves the baseline over mTLS with the service's own TLS stack, until killed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    policy: Arc<crate::grpc::tls::IdentityPolicy>,
    redis_url: &str,
    threshold: f32,
) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let redis = ConnectionManager::new(client).await?;
    let (_tx, config) = tokio::sync::watch::channel(tls);
    let (incoming, _acceptor) = crate::grpc::tls::incoming(
        listener,
        config,
        policy,
        crate::config::LimitSettings::default().transport_bounds(),
        crate::audit::refusals::RefusalTally::detached(),
    );
    tonic::transport::Server::builder()
        .add_service(service(redis, threshold))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
