//! Deployment scope (#25 item 4). The attack: a tenant's `role/admin`
//! certificate asked for the deployment report and got every other tenant's
//! decommission record, its free-text reason and its receipt, and the
//! deployment totals; and anyone who can read Redis read the reason in clear
//! in `fv:ledger:{t}:decommission` and inside the signed receipt.
//!
//! What holds now, and the tests that prove it:
//! - the deployment-wide view belongs to an operator
//!   (`spiffe://<td>/operator/<name>`, no tenant); a tenant's admin is refused
//!   it, and sees only its own tenant (`another_tenants_admin_sees_nothing_of_this_tenant`,
//!   `the_operator_sees_the_deployment_totals_and_no_reason`);
//! - an operator reaches nothing of any tenant, and each refusal is one audit
//!   event in the operators' own stream (`an_operator_cannot_call_tenant_apis_and_is_audited`);
//! - the reason is sealed under the tenant KEK; no Redis key, field, member or
//!   stream entry holds its text, and the receipt signs an HMAC commitment
//!   (`no_redis_key_or_value_holds_the_decommission_reason`);
//! - a sealed reason moved to another tenant's record, edited or deleted is
//!   refused, never shown, and a clear reason written beside it is ignored
//!   (`a_moved_or_edited_sealed_reason_is_refused`);
//! - a decommission record written in Redis (no sealed reason that opens,
//!   e.g. a clear one as an earlier release wrote it) is never acted on: no
//!   erasure, no refusal of the tenant, nothing sealed or signed
//!   (`a_decommission_written_in_redis_is_not_acted_on`).

use std::time::{Duration, Instant};

use facevault::pki::DEV_TRUST_DOMAIN;
use facevault::proto::{
    self, admin_client::AdminClient, audit_log_client::AuditLogClient,
    face_vault_client::FaceVaultClient,
};
use tonic::Code;
use tonic::transport::Channel;

use super::stream_events;
use crate::admin::{admin_client, operator_client, reason_hmac};
use crate::helpers::*;
use crate::tenants::channel_as;

/// Names a person and a national id number: what must never sit in Redis.
const REASON: &str = "customer Zhang Wei, ID 110101199003074321, asked us to stop";

const OPERATOR_ID: &str = "spiffe://facevault.dev/operator/dev";

async fn decommission_and_wait(
    admin: &mut AdminClient<Channel>,
    reason: &str,
) -> proto::TenantDecommission {
    let first = admin
        .decommission_tenant(proto::DecommissionTenantRequest {
            reason: reason.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.reason, reason);
    let started = Instant::now();
    loop {
        let d = admin
            .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
            .await
            .unwrap()
            .into_inner();
        if d.state() == proto::DecommissionState::DecommissionCompleted {
            return d;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One XRANGE entry: id, then field/value pairs.
type StreamEntry = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

fn fast_worker() -> AppOptions {
    AppOptions {
        extra_config: "[deletion]\npoll_interval_ms = 50\n".to_owned(),
        ..AppOptions::default()
    }
}

#[tokio::test]
async fn another_tenants_admin_sees_nothing_of_this_tenant() {
    let app = spawn_app_with(fast_worker()).await;
    let mut demo = app.app_client().await;
    app.enroll(&mut demo, "alice", &face(1)).await;
    let done = decommission_and_wait(&mut admin_client(&app).await, REASON).await;
    assert!(done.receipt.is_some());

    let mut other_admin = AdminClient::new(channel_as(&app, "other", "admin").await);
    let report = other_admin
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await;
    assert_eq!(code(report), Code::PermissionDenied);
    // Its own tenant has no decommission: it is told so, and nothing of demo's.
    let own = other_admin
        .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::NotFound);
    assert!(!own.message().contains("demo") && !own.message().contains("Zhang"));

    // Demo's own admin is refused the deployment report too.
    let report = admin_client(&app)
        .await
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await;
    assert_eq!(code(report), Code::PermissionDenied);

    // Both refusals are audited in the refused caller's own tenant stream.
    for (stream, caller) in [
        ("other", "spiffe://facevault.dev/tenant/other/role/admin"),
        ("demo", "spiffe://facevault.dev/tenant/demo/role/admin"),
    ] {
        let refused: Vec<_> = stream_events(&app, stream)
            .await
            .into_iter()
            .filter(|e| e.op == "GetDeploymentReport")
            .collect();
        println!("{stream}: {} GetDeploymentReport events", refused.len());
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(
            (
                refused[0].caller.as_str(),
                refused[0].outcome.as_str(),
                refused[0].code.as_str()
            ),
            (caller, "refused", "PERMISSION_DENIED")
        );
    }
}

#[tokio::test]
async fn the_operator_sees_the_deployment_totals_and_no_reason() {
    let app = spawn_app_with(fast_worker()).await;
    let mut demo = app.app_client().await;
    let mut other = app.other_tenant_client().await;
    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        app.enroll(&mut demo, s, &face(i as u64)).await;
    }
    let probe = app.seal(
        facevault::crypto::sealing::SealedFor::Enroll,
        "other",
        "x",
        &face(7),
    );
    other
        .enroll(proto::EnrollRequest {
            subject_id: "x".to_owned(),
            embedding: Some(probe),
            consent: Some(consent(&["login"])),
            replace: false,
        })
        .await
        .unwrap();
    let mut operator = operator_client(&app).await;
    let before = operator
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await
        .unwrap()
        .into_inner();
    println!(
        "before: {} subjects in {} tenants",
        before.total_subjects, before.tenants
    );
    assert_eq!((before.total_subjects, before.tenants), (4, 2));
    assert!(before.decommissions.is_empty());

    let mut other_admin = AdminClient::new(channel_as(&app, "other", "admin").await);
    let done = decommission_and_wait(&mut other_admin, REASON).await;
    assert_eq!(done.reason, REASON);
    let after = operator
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((after.total_subjects, after.tenants), (3, 1));
    assert_eq!(after.decommissions.len(), 1);
    let seen = &after.decommissions[0];
    assert_eq!((seen.tenant.as_str(), seen.subjects_erased), ("other", 1));
    assert_eq!(seen.reason, "");
    assert!(seen.reason_hmac_key.is_empty());
    assert_eq!(seen.receipt, done.receipt);
    // The receipt it sees commits to the reason and does not carry it.
    let key = crate::lifecycle::receipt_key(&mut demo).await;
    let body = facevault::vault::verify_decommission_receipt(&key, seen.receipt.as_ref().unwrap())
        .expect("the receipt verifies");
    assert_eq!(body.reason, "");
    assert_eq!(body.reason_hmac, reason_hmac(&done.reason_hmac_key, REASON));
    assert_ne!(
        body.reason_hmac,
        reason_hmac(&done.reason_hmac_key, "another reason")
    );

    // Allowed operator calls are audited in the operators' stream.
    let allowed: Vec<_> = stream_events(&app, "_operators")
        .await
        .into_iter()
        .filter(|e| e.op == "GetDeploymentReport" && e.outcome == "allowed")
        .collect();
    assert_eq!(allowed.len(), 2, "{allowed:?}");
    assert!(
        allowed
            .iter()
            .all(|e| e.caller == OPERATOR_ID && e.tenant == "_operators")
    );
}

#[tokio::test]
async fn an_operator_cannot_call_tenant_apis_and_is_audited() {
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    app.enroll(&mut demo, "alice", &face(1)).await;
    let tls = app.tls_config(&app.pki.operator.0, &app.pki.operator.1);
    let channel = app.channel_with(tls).await.unwrap();
    let mut face_vault = FaceVaultClient::new(channel.clone());
    let mut audit = AuditLogClient::new(channel.clone());
    let mut admin = AdminClient::new(channel);

    let calls: Vec<(&str, Code)> = vec![
        (
            "GetSealingKeys",
            code(
                face_vault
                    .get_sealing_keys(proto::GetSealingKeysRequest {})
                    .await,
            ),
        ),
        (
            "Enroll",
            code(
                face_vault
                    .enroll(app.enroll_request("mallory", &face(2), &["login"], false))
                    .await,
            ),
        ),
        (
            "Verify",
            code(
                face_vault
                    .verify(app.verify_request("alice", &face(1), "login"))
                    .await,
            ),
        ),
        (
            "DeleteSubject",
            code(
                face_vault
                    .delete_subject(proto::DeleteSubjectRequest {
                        subject_id: "alice".to_owned(),
                    })
                    .await,
            ),
        ),
        (
            "GetComplianceReport",
            code(
                face_vault
                    .get_compliance_report(proto::GetComplianceReportRequest {})
                    .await,
            ),
        ),
        (
            "GetSubjectRecord",
            code(
                face_vault
                    .get_subject_record(proto::GetSubjectRecordRequest {
                        subject_id: "alice".to_owned(),
                    })
                    .await,
            ),
        ),
        (
            "ListEvents",
            code(audit.list_events(proto::ListEventsRequest::default()).await),
        ),
        (
            "VerifyChain",
            code(
                audit
                    .verify_chain(proto::VerifyChainRequest::default())
                    .await,
            ),
        ),
        (
            "DecommissionTenant",
            code(
                admin
                    .decommission_tenant(proto::DecommissionTenantRequest {
                        reason: "operator says so".to_owned(),
                    })
                    .await,
            ),
        ),
        (
            "GetTenantDecommission",
            code(
                admin
                    .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
                    .await,
            ),
        ),
    ];
    for (op, code) in &calls {
        assert_eq!(*code, Code::PermissionDenied, "{op}");
    }

    // Nothing happened to any tenant: alice still matches, demo is not
    // decommissioned.
    let verdict = app.verify(&mut demo, "alice", &face(1)).await.unwrap();
    assert_eq!(verdict.decision(), proto::Decision::Match);
    let none = admin_client(&app)
        .await
        .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
        .await;
    assert_eq!(code(none), Code::NotFound);

    // One refused event per call, in the operators' stream, none in demo's.
    let events = stream_events(&app, "_operators").await;
    println!("_operators: {} events", events.len());
    let mut refused: Vec<&str> = events
        .iter()
        .filter(|e| e.outcome == "refused" && e.code == "PERMISSION_DENIED")
        .map(|e| {
            assert_eq!(e.caller, OPERATOR_ID);
            assert!(!e.caller_cert_sha256.is_empty());
            e.op.as_str()
        })
        .collect();
    refused.sort();
    let mut called: Vec<&str> = calls.iter().map(|(op, _)| *op).collect();
    called.sort();
    assert_eq!(refused, called);
    assert!(
        !stream_events(&app, "demo")
            .await
            .iter()
            .any(|e| e.caller == OPERATOR_ID)
    );
}

/// Every byte string Redis holds: key names, string values, hash fields and
/// values, set and sorted-set members, list items, stream ids, fields and
/// values.
async fn everything_in_redis(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut redis = app.redis().await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let name = String::from_utf8_lossy(&key).into_owned();
        out.push((name.clone(), key.clone()));
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .unwrap(),
            ],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .unwrap(),
            "stream" => {
                let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                entries
                    .into_iter()
                    .flat_map(|(id, fields)| {
                        std::iter::once(id).chain(fields.into_iter().flat_map(|(f, v)| [f, v]))
                    })
                    .collect()
            }
            other => panic!("{name}: unexpected type {other}"),
        };
        out.extend(values.into_iter().map(|v| (name.clone(), v)));
    }
    out
}

#[tokio::test]
async fn no_redis_key_or_value_holds_the_decommission_reason() {
    let app = spawn_app_with(fast_worker()).await;
    let mut demo = app.app_client().await;
    for (i, s) in ["a", "b"].iter().enumerate() {
        app.enroll(&mut demo, s, &face(i as u64)).await;
    }
    let done = decommission_and_wait(&mut admin_client(&app).await, REASON).await;
    // The deployment report and the compliance report ran too.
    operator_client(&app)
        .await
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await
        .unwrap();
    demo.get_compliance_report(proto::GetComplianceReportRequest {})
        .await
        .unwrap();

    let everything = everything_in_redis(&app).await;
    let keys: std::collections::BTreeSet<&str> =
        everything.iter().map(|(k, _)| k.as_str()).collect();
    println!(
        "scanned {} keys, {} byte strings",
        keys.len(),
        everything.len()
    );
    // The scan saw the record and its receipt: it would have found a clear
    // reason there.
    assert!(keys.contains("fv:ledger:{demo}:decommission"));
    let receipt_body = &done.receipt.as_ref().unwrap().body;
    assert!(everything.iter().any(|(_, v)| v == receipt_body));
    // The whole reason, and any telling part of it.
    for needle in [
        REASON,
        "Zhang Wei",
        "110101199003074321",
        "asked us to stop",
    ] {
        for (key, value) in &everything {
            assert!(
                !value.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{key} holds {needle:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_moved_or_edited_sealed_reason_is_refused() {
    let app = spawn_app_with(fast_worker()).await;
    decommission_and_wait(&mut admin_client(&app).await, REASON).await;
    let mut other_admin = AdminClient::new(channel_as(&app, "other", "admin").await);
    decommission_and_wait(&mut other_admin, "contract ended").await;

    // The attacker copies demo's sealed reason into other's record.
    let mut redis = app.redis().await;
    let sealed: Vec<u8> = redis::cmd("HGET")
        .arg("fv:ledger:{demo}:decommission")
        .arg("reason_sealed")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(sealed.len() > 4 + 12 + 32 + 16, "{}", sealed.len());
    let _: i64 = redis::cmd("HSET")
        .arg("fv:ledger:{other}:decommission")
        .arg("reason_sealed")
        .arg(&sealed)
        .query_async(&mut redis)
        .await
        .unwrap();
    let moved = other_admin
        .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Code::Internal, "{moved:?}");
    assert!(!moved.message().contains("Zhang"));

    // One flipped bit in demo's own.
    let mut edited = sealed.clone();
    *edited.last_mut().unwrap() ^= 1;
    let _: i64 = redis::cmd("HSET")
        .arg("fv:ledger:{demo}:decommission")
        .arg("reason_sealed")
        .arg(&edited)
        .query_async(&mut redis)
        .await
        .unwrap();
    let status = admin_client(&app)
        .await
        .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");

    // Deleted outright: every record since reasons are sealed has one.
    let _: i64 = redis::cmd("HDEL")
        .arg("fv:ledger:{demo}:decommission")
        .arg("reason_sealed")
        .query_async(&mut redis)
        .await
        .unwrap();
    let status = admin_client(&app)
        .await
        .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");

    // A clear reason written beside the sealed one is ignored: the sealed
    // one is what is shown and signed.
    let _: i64 = redis::cmd("HSET")
        .arg("fv:ledger:{demo}:decommission")
        .arg("reason_sealed")
        .arg(&sealed)
        .arg("reason")
        .arg("forged by the attacker")
        .query_async(&mut redis)
        .await
        .unwrap();
    let kept = admin_client(&app)
        .await
        .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.reason, REASON);

    // The operator's view never opens reasons, so it is unaffected.
    let report = operator_client(&app)
        .await
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.decommissions.len(), 2);
    assert!(report.decommissions.iter().all(|d| d.reason.is_empty()));
}

#[tokio::test]
async fn pki_issue_operator_makes_a_certificate_the_service_takes_as_operator() {
    let app = spawn_app().await;
    let work = tempfile::tempdir().unwrap();
    let prefix = work.path().join("ops");
    let dir = app.pki.dir.to_str().unwrap();
    let issue = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
            .args(&args)
            .env_remove("FACEVAULT_CONFIG")
            .output()
            .await
            .unwrap()
    };
    let base = |extra: &[&str]| -> Vec<String> {
        [
            "pki",
            "issue",
            "--dir",
            dir,
            "--trust-domain",
            DEV_TRUST_DOMAIN,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    // An operator has no tenant and no role; its name follows the tenant rule.
    for bad in [
        &["--operator", "ops", "--tenant", "demo", "--role", "admin"][..],
        &["--operator", "ops", "--role", "admin"][..],
        &["--operator", "Ops"][..],
        &["--tenant", "demo"][..],
    ] {
        let out = issue(base(bad)).await;
        assert!(!out.status.success(), "{bad:?} was accepted");
    }
    let out = issue(base(&[
        "--operator",
        "ops",
        "--out",
        prefix.to_str().unwrap(),
    ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("identity spiffe://facevault.dev/operator/ops"),
        "{stdout}"
    );

    let tls = app.tls_config(&prefix.with_extension("pem"), &prefix.with_extension("key"));
    let channel = app.channel_with(tls).await.unwrap();
    AdminClient::new(channel.clone())
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await
        .unwrap();
    let refused = FaceVaultClient::new(channel)
        .get_compliance_report(proto::GetComplianceReportRequest {})
        .await;
    assert_eq!(code(refused), Code::PermissionDenied);
}

#[tokio::test]
async fn a_decommission_written_in_redis_is_not_acted_on() {
    let app = spawn_app_with(fast_worker()).await;
    const FORGED: &str = "forged: customer Li Na, ID 310101198001010012";
    let mut other = app.other_tenant_client().await;
    let base = face(5);
    other
        .enroll(proto::EnrollRequest {
            subject_id: "bystander".to_owned(),
            embedding: Some(app.seal(
                facevault::crypto::sealing::SealedFor::Enroll,
                "other",
                "bystander",
                &base,
            )),
            consent: Some(consent(&["login"])),
            replace: false,
        })
        .await
        .unwrap();
    // A record no call made: as an earlier release would have written it
    // (a clear reason), and one with no reason at all.
    let now = now_ms();
    let mut redis = app.redis().await;
    let _: i64 = redis::cmd("HSET")
        .arg("fv:ledger:{other}:decommission")
        .arg("state")
        .arg("in-progress")
        .arg("requested_ms")
        .arg(now)
        .arg("deadline_ms")
        .arg(now + 86_400_000)
        .arg("provisional")
        .arg("0")
        .arg("reason")
        .arg(FORGED)
        .arg("subjects_total")
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg("fv:decommissions")
        .arg("other")
        .query_async(&mut redis)
        .await
        .unwrap();
    // The worker looked at it: its refusal is in the tenant's log.
    let started = Instant::now();
    while !stream_events(&app, "other").await.iter().any(|e| {
        e.op == "DecommissionReceipt" && e.outcome == "refused" && e.detail == "reason-unreadable"
    }) {
        assert!(started.elapsed() < Duration::from_secs(10), "no refusal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several more rounds of a 50 ms worker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Nothing erased, nothing refused, nothing signed, nothing sealed over.
    let answer = other
        .verify(proto::VerifyRequest {
            subject_id: "bystander".to_owned(),
            probe: Some(app.seal(
                facevault::crypto::sealing::SealedFor::Verify,
                "other",
                "bystander",
                &capture_of(&base, 0.2, 1),
            )),
            purpose: "login".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision(), proto::Decision::Match);
    assert!(
        !stream_events(&app, "other")
            .await
            .iter()
            .any(|e| e.op == "Erasure"),
        "a forged decommission erased a subject"
    );
    let record: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
        .arg("fv:ledger:{other}:decommission")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!record.contains_key("reason_sealed"), "{:?}", record.keys());
    assert!(!record.contains_key("receipt_body"), "{:?}", record.keys());
    assert_eq!(record["state"], b"in-progress");
}
