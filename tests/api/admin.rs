//! The Admin service (a tenant's admin: its decommission; an operator: the
//! deployment report), tenant-scoped compliance reports and subject access.

use std::time::{Duration, Instant};

use facevault::crypto::sealing::SealedFor;
use facevault::proto::{self, admin_client::AdminClient, face_vault_client::FaceVaultClient};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;
use crate::lifecycle::receipt_key;

/// The end of the 30th working day after `from_ms` on the service's default
/// calendar (provisional where no schedule is published).
fn thirty_working_days_after(from_ms: i64) -> (i64, bool) {
    use facevault::domain::calendar::{DEFAULT_TIME_ZONE, WorkingCalendar};
    let from = chrono::DateTime::from_timestamp_millis(from_ms).unwrap();
    let d = WorkingCalendar::official(DEFAULT_TIME_ZONE)
        .deadline(from, 30)
        .unwrap();
    (d.at.timestamp_millis(), d.provisional)
}

pub(crate) async fn admin_client(app: &TestApp) -> AdminClient<Channel> {
    let tls = app.tls_config(&app.pki.admin.0, &app.pki.admin.1);
    AdminClient::new(app.channel_with(tls).await.unwrap())
}

/// The deployment's operator (`spiffe://facevault.dev/operator/dev`).
pub(crate) async fn operator_client(app: &TestApp) -> AdminClient<Channel> {
    let tls = app.tls_config(&app.pki.operator.0, &app.pki.operator.1);
    AdminClient::new(app.channel_with(tls).await.unwrap())
}

/// What the receipt signs in place of the reason: HMAC-SHA256 under the
/// one-time key only the tenant's admin is given.
pub(crate) fn reason_hmac(key: &[u8], reason: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, reason.as_bytes()).as_ref().to_vec()
}

async fn report(client: &mut FaceVaultClient<Channel>) -> proto::ComplianceReport {
    client
        .get_compliance_report(proto::GetComplianceReportRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn enroll_other(app: &TestApp, client: &mut FaceVaultClient<Channel>, subject: &str) {
    let probe = app.seal(SealedFor::Enroll, "other", subject, &face(7));
    client
        .enroll(proto::EnrollRequest {
            subject_id: subject.to_owned(),
            embedding: Some(probe),
            consent: Some(consent(&["login"])),
            replace: false,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tenant_report_does_not_move_when_another_tenant_enrolls() {
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    let mut other = app.other_tenant_client().await;
    for (i, s) in ["a", "b"].iter().enumerate() {
        app.enroll(&mut demo, s, &face(i as u64)).await;
    }
    let before = report(&mut demo).await;
    assert_eq!(before.tenant_subjects, 2);
    for s in ["x", "y", "z"] {
        enroll_other(&app, &mut other, s).await;
    }
    assert_eq!(report(&mut demo).await, before);
    assert_eq!(report(&mut other).await.tenant_subjects, 3);

    // The deployment-wide total is the operator's alone: neither an app nor a
    // tenant's admin sees it.
    let app_channel = app
        .channel_with(app.tls_config(&app.pki.app.0, &app.pki.app.1))
        .await
        .unwrap();
    let refused = AdminClient::new(app_channel)
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await;
    assert_eq!(code(refused), Code::PermissionDenied);
    let refused = admin_client(&app)
        .await
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await;
    assert_eq!(code(refused), Code::PermissionDenied);
    let deployment = operator_client(&app)
        .await
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deployment.total_subjects, 5);
    assert_eq!(deployment.tenants, 2);
    assert!(!deployment.filing_required);
    assert!(deployment.threshold_reached_at.is_none());
}

#[tokio::test]
async fn the_filing_clock_starts_when_the_count_first_reaches_the_threshold() {
    let app = spawn_app_with(AppOptions {
        extra_config: "[compliance]\nfiling_threshold = 3\nfiling_reference = \"备案-2026-0042\"\n"
            .to_owned(),
        ..AppOptions::default()
    })
    .await;
    let mut demo = app.app_client().await;
    for (i, s) in ["a", "b"].iter().enumerate() {
        app.enroll(&mut demo, s, &face(i as u64)).await;
    }
    let below = report(&mut demo).await;
    assert!(below.threshold_reached_at.is_none() && below.filing_due_by.is_none());
    assert_eq!(below.filing_reference, "备案-2026-0042");

    let t0 = now_ms();
    app.enroll(&mut demo, "c", &face(3)).await;
    let reached = report(&mut demo).await;
    assert!(reached.filing_required);
    assert_eq!(reached.filing_reference, "备案-2026-0042");
    let clock = reached;
    let at = facevault::vault::unix_ms(clock.threshold_reached_at.as_ref().unwrap());
    assert!(
        (t0..=now_ms()).contains(&at),
        "{at} not within the enrollment"
    );
    let due = facevault::vault::unix_ms(clock.filing_due_by.as_ref().unwrap());
    assert_eq!(
        (due, clock.filing_due_by_provisional),
        thirty_working_days_after(at)
    );

    // The clock is durable: it stays when the count falls again.
    demo.delete_subject(proto::DeleteSubjectRequest {
        subject_id: "c".to_owned(),
    })
    .await
    .unwrap();
    let after = report(&mut demo).await;
    assert!(!after.filing_required);
    assert_eq!(after.threshold_reached_at, clock.threshold_reached_at);
}

/// Every key of the tenant that is neither its tickets, its audit log, nor its
/// decommission record.
async fn tenant_residue(app: &TestApp, tenant: &str) -> Vec<String> {
    let mut redis = app.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    let of_tenant = |k: &str| {
        k.contains(&format!("{{{tenant}:"))
            || k.contains(&format!("{{{tenant}}}"))
            || k.contains(&format!(":{tenant}:"))
            || k.ends_with(&format!(":{tenant}"))
    };
    let kept = |k: &str| {
        k.starts_with("fv:{fv-deletion}:")
            || k.starts_with("fv:audit:")
            || k == format!("fv:ledger:{{{tenant}}}:decommission")
    };
    let mut residue: Vec<String> = keys
        .into_iter()
        .filter(|k| of_tenant(k) && !kept(k))
        .collect();
    // A subject's replay digests expire by themselves (see erasure_residue).
    residue = erasure_residue(&mut redis, residue).await;
    residue.sort();
    residue
}

#[tokio::test]
async fn a_decommissioned_tenant_is_refused_and_erased_with_a_signed_receipt() {
    const SUBJECTS: usize = 2_000;
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    let mut other = app.other_tenant_client().await;
    let mut admin = admin_client(&app).await;
    enroll_other(&app, &mut other, "kept").await;

    let started = Instant::now();
    let mut enrolls = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let requests: Vec<_> = (worker..SUBJECTS)
            .step_by(8)
            .map(|i| app.enroll_request(&format!("s{i}"), &face(i as u64), &["login"], false))
            .collect();
        let mut client = demo.clone();
        enrolls.spawn(async move {
            for r in requests {
                client.enroll(r).await.unwrap();
            }
        });
    }
    enrolls.join_all().await;
    println!("enrolled {SUBJECTS} subjects in {:?}", started.elapsed());
    assert_eq!(report(&mut demo).await.tenant_subjects, SUBJECTS as u64);

    let refused_before = admin
        .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
        .await;
    assert_eq!(code(refused_before), Code::NotFound);
    let bad_reason = admin
        .decommission_tenant(proto::DecommissionTenantRequest {
            reason: "line\nbreak".to_owned(),
        })
        .await;
    assert_eq!(code(bad_reason), Code::InvalidArgument);

    // The residue check below would see these.
    assert!(tenant_residue(&app, "demo").await.len() > SUBJECTS);
    let started = Instant::now();
    let first = admin
        .decommission_tenant(proto::DecommissionTenantRequest {
            reason: "contract ended".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.subjects_total, SUBJECTS as u64);
    assert_eq!(first.tenant, "demo");
    // The tenant's admin gets its reason back, and the key of its commitment.
    assert_eq!(first.reason, "contract ended");
    assert_eq!(first.reason_hmac_key.len(), 32);
    let requested = facevault::vault::unix_ms(first.requested_at.as_ref().unwrap());
    let deadline = facevault::vault::unix_ms(first.deadline.as_ref().unwrap());
    assert_eq!(
        (deadline, first.deadline_provisional),
        thirty_working_days_after(requested)
    );

    // Refused at once, before any subject is erased.
    let enroll = demo
        .enroll(app.enroll_request("new", &face(9), &["login"], false))
        .await;
    assert_eq!(code(enroll), Code::FailedPrecondition);
    let verify = app.verify(&mut demo, "s1", &face(1)).await;
    assert_eq!(code(verify), Code::FailedPrecondition);

    let done = loop {
        let d = admin
            .get_tenant_decommission(proto::GetTenantDecommissionRequest {})
            .await
            .unwrap()
            .into_inner();
        if d.state() == proto::DecommissionState::DecommissionCompleted {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    println!(
        "decommission: {SUBJECTS} subjects erased in {elapsed:?}, {:.0} subjects/s",
        SUBJECTS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(done.subjects_erased, SUBJECTS as u64);

    // The receipt verifies against the published key and says what it must.
    let key = receipt_key(&mut other).await;
    let body = facevault::vault::verify_decommission_receipt(&key, done.receipt.as_ref().unwrap())
        .expect("the receipt verifies");
    assert_eq!(body.tenant, "demo");
    assert_eq!(body.subjects_erased, SUBJECTS as u64);
    // The receipt commits to the reason without carrying it.
    assert_eq!(body.reason, "");
    assert_eq!(
        body.reason_hmac,
        reason_hmac(&first.reason_hmac_key, "contract ended")
    );
    assert_eq!(body.statement, facevault::vault::DECOMMISSION_STATEMENT);
    let mut forged = done.receipt.clone().unwrap();
    forged.body[2] ^= 1;
    assert!(facevault::vault::verify_decommission_receipt(&key, &forged).is_none());

    // Repeating the call returns the same record.
    let again = admin
        .decommission_tenant(proto::DecommissionTenantRequest {
            reason: "another reason".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, done);

    // Nothing of the tenant is left but its tickets, its audit log and the
    // decommission record; the other tenant is untouched.
    assert_eq!(tenant_residue(&app, "demo").await, Vec::<String>::new());
    assert_eq!(report(&mut other).await.tenant_subjects, 1);
    let probe = app.seal(SealedFor::Verify, "other", "kept", &face(7));
    let kept = other
        .verify(proto::VerifyRequest {
            subject_id: "kept".to_owned(),
            probe: Some(probe),
            purpose: "login".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.decision(), proto::Decision::Match);

    // The operator sees the record and its receipt, never the reason; nor
    // does the tenant's app.
    let deployment = operator_client(&app)
        .await
        .get_deployment_report(proto::GetDeploymentReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deployment.total_subjects, 1);
    let without_reason = proto::TenantDecommission {
        reason: String::new(),
        reason_hmac_key: Vec::new(),
        ..done.clone()
    };
    assert_eq!(deployment.decommissions, vec![without_reason.clone()]);
    let tenant_view = report(&mut demo).await;
    assert_eq!(tenant_view.tenant_subjects, 0);
    assert_eq!(tenant_view.decommission, Some(without_reason));
}

#[tokio::test]
async fn subject_access_shows_what_is_held_and_no_secret() {
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    let alice = face(1);
    let enrolled = app.enroll(&mut demo, "alice", &alice).await;
    let mut second = app.enroll_request(
        "alice",
        &capture_of(&alice, 0.05, 2),
        &["login", "payment"],
        false,
    );
    second.consent.as_mut().unwrap().consent_id = "consent-2".to_owned();
    demo.enroll(second).await.unwrap();
    app.verify(&mut demo, "alice", &capture_of(&alice, 0.05, 3))
        .await
        .unwrap();
    app.verify(&mut demo, "alice", &face(99)).await.unwrap();

    let record = demo
        .get_subject_record(proto::GetSubjectRecordRequest {
            subject_id: "alice".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.subject_ref, enrolled.subject_ref);
    assert_eq!(record.templates.len(), 2);
    assert!(record.templates.iter().all(|t| t.model == MODEL));
    let mut consents: Vec<_> = record
        .consents
        .iter()
        .map(|c| {
            (
                c.consent_id.as_str(),
                c.purposes.clone(),
                c.off_device_storage,
            )
        })
        .collect();
    consents.sort();
    assert_eq!(
        consents,
        vec![
            ("consent-1", vec!["login".to_owned()], true),
            (
                "consent-2",
                vec!["login".to_owned(), "payment".to_owned()],
                true
            ),
        ]
    );
    assert_eq!(record.failed_attempts, 1);
    assert!(record.tickets.is_empty());
    // Enroll, Enroll, Verify, Verify: the audit writer may batch, so wait.
    let mut record = record;
    for _ in 0..100 {
        if record.audit_events >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        record = demo
            .get_subject_record(proto::GetSubjectRecordRequest {
                subject_id: "alice".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
    }
    assert!(record.audit_events >= 4, "{}", record.audit_events);
    assert!(record.last_verified_at.is_some());

    // No float of the embedding and no key appears in the answer.
    let bytes = prost::Message::encode_to_vec(&record);
    for v in alice.iter().chain(capture_of(&alice, 0.05, 2).iter()) {
        let needle = v.to_le_bytes();
        assert!(
            !bytes.windows(4).any(|w| w == needle),
            "an embedding value appears in the subject record"
        );
    }
    for path in [
        &app.keys.keyring,
        &app.keys.transform_secret,
        &app.keys.sealing_keys,
        &app.keys.receipt_signing_key,
    ] {
        let text = std::fs::read_to_string(path).unwrap();
        for token in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || "+/=-_".contains(c)))
            .filter(|t| t.len() >= 43)
        {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token));
            let Ok(secret) = decoded else { continue };
            for chunk in secret.chunks_exact(16) {
                assert!(
                    !bytes.windows(16).any(|w| w == chunk),
                    "key material from {} appears in the subject record",
                    path.display()
                );
            }
        }
    }

    // The call itself is audited, with the subject's pseudonym.
    let unknown = demo
        .get_subject_record(proto::GetSubjectRecordRequest {
            subject_id: "nobody".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unknown.templates.is_empty() && unknown.consents.is_empty());

    // Its tickets show up, pending or completed: a withdrawal, then a
    // cancellation.
    let withdrawn = demo
        .withdraw_consent(proto::WithdrawConsentRequest {
            subject_id: "alice".to_owned(),
            purposes: vec!["payment".to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    let t = demo
        .cancel_account(proto::CancelAccountRequest {
            subject_id: "alice".to_owned(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let record = demo
        .get_subject_record(proto::GetSubjectRecordRequest {
            subject_id: "alice".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = record
        .tickets
        .iter()
        .map(|t| t.ticket_id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec![withdrawn.ticket_id.as_str(), t.ticket_id.as_str()]
    );
}
