//! `facevault bench --decommission N`: the rate of a tenant decommission. On the
//! bench's own stack (redis-server and `facevault serve`, as `--audit-events`
//! starts them), enrolls N subjects in tenant `demo`, then calls
//! `Admin.DecommissionTenant` as the dev `admin` and polls
//! `GetTenantDecommission` until it completes: the server's deletion worker
//! erases every subject through the deletion queue, a sample per round. Reports
//! subjects erased per second and the CPU each process spent per subject, and
//! checks the signed receipt.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::audit::{redis_pid, start, with_progress};
use super::cpu::{CpuUs, Procs};
use super::{Machine, channels, consent, face};
use crate::client::{PayloadSpec, SealingTarget, seal_embedding};
use crate::crypto::sealing::{SealedFor, Suite};
use crate::proto::{self, admin_client::AdminClient, face_vault_client::FaceVaultClient};

const TENANT: &str = "demo";
const ENROLL_TASKS: usize = 32;
const POLL: Duration = Duration::from_millis(20);
const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    decommission: DecommissionReport,
}

#[derive(Debug, Serialize)]
struct DecommissionReport {
    subjects: u64,
    enroll_seconds: f64,
    /// From the `DecommissionTenant` call to the first poll that saw it completed.
    decommission_seconds: f64,
    subjects_per_second: f64,
    /// CPU per subject erased, in µs, over the same span.
    cpu_us_per_subject: CpuUs,
    receipt_verified: bool,
}

pub(super) async fn run(subjects: u64, json: bool) -> anyhow::Result<()> {
    eprintln!("starting redis-server and facevault serve …");
    let stack = start().await?;
    let mut conn = redis::Client::open(stack.redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let procs = Procs {
        server: Some(stack.server.id().context("the server exited")?),
        redis: Some(redis_pid(&mut conn).await?),
        baseline: None,
    };
    let app = channels(
        &stack.addr,
        &stack.pki.ca_cert,
        &stack.pki.app.0,
        &stack.pki.app.1,
    )
    .await?;
    let admin = channels(
        &stack.addr,
        &stack.pki.ca_cert,
        &stack.pki.admin.0,
        &stack.pki.admin.1,
    )
    .await?;
    let mut app_client = FaceVaultClient::new(app[0].clone());
    let keys = app_client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await?
        .into_inner();
    let key = keys
        .keys
        .iter()
        .find(|k| k.suite == Suite::X25519Sha256Aes256Gcm.as_str())
        .context("the server offers no X25519 key")?;
    let target = Arc::new(SealingTarget {
        key_id: key.key_id.clone(),
        suite: Suite::X25519Sha256Aes256Gcm,
        public_key: key.public_key.clone(),
    });

    eprintln!("enrolling {subjects} subjects …");
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..ENROLL_TASKS {
        let (next, target) = (next.clone(), target.clone());
        let mut client = FaceVaultClient::new(app[t % app.len()].clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i as u64 >= subjects {
                    return anyhow::Ok(());
                }
                let id = format!("decommission-bench-{i}");
                let sealed = seal_embedding(
                    &target,
                    &PayloadSpec {
                        op: SealedFor::Enroll,
                        tenant: TENANT,
                        subject_id: &id,
                        model: super::MODEL,
                        values: &face(i),
                        sealed_at_unix_ms: crate::vault::now_unix_ms(),
                    },
                )
                .map_err(|e| anyhow::anyhow!("sealing failed: {e}"))?;
                client
                    .enroll(proto::EnrollRequest {
                        subject_id: id,
                        embedding: Some(sealed),
                        consent: Some(consent()),
                        replace: true,
                    })
                    .await
                    .context("an enrollment failed")?;
            }
        });
    }
    with_progress("enroll", async {
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })
    .await?;
    let enroll_seconds = started.elapsed().as_secs_f64();

    eprintln!("decommissioning tenant {TENANT} …");
    let mut admin_client = AdminClient::new(admin[0].clone());
    let before = procs.mark();
    let started = Instant::now();
    let first = admin_client
        .decommission_tenant(proto::DecommissionTenantRequest {
            reason: "bench".to_owned(),
        })
        .await?
        .into_inner();
    if first.subjects_total != subjects {
        bail!(
            "the decommission counted {} subjects, the bench enrolled {subjects}",
            first.subjects_total
        );
    }
    let done = with_progress("decommission", async {
        loop {
            let d = admin_client
                .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
                .await?
                .into_inner();
            if d.state() == proto::DecommissionState::DecommissionCompleted {
                return anyhow::Ok(d);
            }
            if started.elapsed() > GIVE_UP_AFTER {
                bail!("the decommission did not complete within {GIVE_UP_AFTER:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = procs.mark();
    let receipt_verified = done.receipt.as_ref().is_some_and(|r| {
        crate::vault::verify_decommission_receipt(&keys.receipt_verification_key, r)
            .is_some_and(|body| body.subjects_erased == subjects && body.tenant == TENANT)
    });
    let report = DecommissionReport {
        subjects,
        enroll_seconds,
        decommission_seconds: elapsed,
        subjects_per_second: subjects as f64 / elapsed,
        cpu_us_per_subject: before.per(&after, subjects as f64),
        receipt_verified,
    };
    if json {
        let report = Report {
            machine: Machine {
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
            },
            decommission: report,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "decommission of {} subjects: {:.2} s, {:.0} subjects/s; CPU µs per subject server / redis / loadgen {}; receipt verified: {}",
            report.subjects,
            report.decommission_seconds,
            report.subjects_per_second,
            report.cpu_us_per_subject.brief(),
            report.receipt_verified
        );
    }
    if !receipt_verified {
        bail!("the decommission receipt did not verify");
    }
    Ok(())
}
