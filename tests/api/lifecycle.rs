//! Consent withdrawal, account cancellation and the durable deletion queue.

use std::time::Duration;

use facevault::domain::calendar::WorkingCalendar;
use facevault::proto::face_vault_client::FaceVaultClient;
use facevault::proto::{self, DeletionState};
use facevault::vault::verify_receipt;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;

pub async fn cancel(client: &mut FaceVaultClient<Channel>, subject: &str) -> proto::DeletionTicket {
    client
        .cancel_account(proto::CancelAccountRequest {
            subject_id: subject.to_owned(),
            reason: "account closed by user".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn ticket(client: &mut FaceVaultClient<Channel>, ticket_id: &str) -> proto::DeletionTicket {
    client
        .get_deletion_ticket(proto::GetDeletionTicketRequest {
            ticket_id: ticket_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn wait_completed(
    client: &mut FaceVaultClient<Channel>,
    ticket_id: &str,
) -> proto::DeletionTicket {
    wait_ticket(client, ticket_id, "complete", |t| {
        t.state() == DeletionState::Completed
    })
    .await
}

/// Polls a ticket (for up to 10 s) until `done` holds for it.
pub async fn wait_ticket(
    client: &mut FaceVaultClient<Channel>,
    ticket_id: &str,
    what: &str,
    done: impl Fn(&proto::DeletionTicket) -> bool,
) -> proto::DeletionTicket {
    for _ in 0..200 {
        let t = ticket(client, ticket_id).await;
        if done(&t) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ticket {ticket_id} did not {what} within 10 s");
}

/// Every key whose name, set members or sorted-set members mention the subject,
/// except its deletion tickets (kept, without biometric data, as proof) and what
/// an erasure keeps until it expires by itself (`erasure_residue`).
async fn subject_keys(app: &TestApp, subject_ref: &str) -> Vec<String> {
    let mut redis = app.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut traces = Vec::new();
    for key in keys {
        if key.starts_with("fv:{fv-deletion}:ticket:") {
            continue;
        }
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        let members: Vec<Vec<u8>> = match kind.as_str() {
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
            _ => vec![],
        };
        let mentions = |m: &Vec<u8>| {
            m.windows(subject_ref.len())
                .any(|w| w == subject_ref.as_bytes())
        };
        if key.contains(subject_ref) || members.iter().any(mentions) {
            traces.push(key);
        }
    }
    erasure_residue(&mut redis, traces).await
}

pub async fn withdraw(
    client: &mut FaceVaultClient<Channel>,
    subject: &str,
    purposes: &[&str],
) -> Result<proto::DeletionTicket, tonic::Status> {
    client
        .withdraw_consent(proto::WithdrawConsentRequest {
            subject_id: subject.to_owned(),
            purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn receipt_key(client: &mut FaceVaultClient<Channel>) -> Vec<u8> {
    client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .receipt_verification_key
}

#[tokio::test]
async fn cancel_account_locks_at_once_then_erases_with_a_signed_receipt() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let alice = face(1);
    let enrolled = app.enroll(&mut client, "alice", &alice).await;
    app.enroll(&mut client, "alice", &face(2)).await;

    let requested = chrono::Utc::now();
    let first = cancel(&mut client, "alice").await;
    assert_eq!(first.subject_ref, enrolled.subject_ref);
    // The statutory deadline: end of the 15th working day after the request day.
    let expected = WorkingCalendar::default()
        .deadline(requested, 15)
        .unwrap()
        .at;
    let deadline = first.deadline.unwrap();
    assert_eq!(deadline.seconds, expected.timestamp());

    // Unusable at once, whatever the worker is doing.
    let r = app
        .verify(&mut client, "alice", &capture_of(&alice, 0.2, 3))
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);

    let done = wait_completed(&mut client, &first.ticket_id).await;
    assert!(done.completed_at.is_some());
    assert!(subject_keys(&app, &enrolled.subject_ref).await.is_empty());

    // Cancelling again gives the same ticket; the account stays cancelled.
    let again = cancel(&mut client, "alice").await;
    assert_eq!(again.ticket_id, first.ticket_id);
    let r = client
        .enroll(app.enroll_request("alice", &alice, &["login"], false))
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);

    // The receipt verifies offline with the published key, and says what was erased.
    let key = receipt_key(&mut client).await;
    let receipt = done.receipt.unwrap();
    let body = verify_receipt(&key, &receipt).expect("receipt must verify");
    assert_eq!(body.ticket_id, first.ticket_id);
    assert_eq!(body.subject_ref, enrolled.subject_ref);
    assert_eq!(body.tenant, "demo");
    assert!(
        body.erased.contains(&"templates:2".to_owned()),
        "{:?}",
        body.erased
    );
    assert_eq!(body.deadline, Some(deadline));

    let mut tampered = receipt.clone();
    tampered.body[5] ^= 1;
    assert!(verify_receipt(&key, &tampered).is_none());
    let mut forged = receipt;
    forged.signature[0] ^= 1;
    assert!(verify_receipt(&key, &forged).is_none());
}

#[tokio::test]
async fn tickets_are_per_tenant_and_validated() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let mut other = app.other_tenant_client().await;
    app.enroll(&mut client, "bob", &face(1)).await;
    let t = cancel(&mut client, "bob").await;
    let r = other
        .get_deletion_ticket(proto::GetDeletionTicketRequest {
            ticket_id: t.ticket_id.clone(),
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = client
        .get_deletion_ticket(proto::GetDeletionTicketRequest {
            ticket_id: "../../etc".to_owned(),
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
}

#[tokio::test]
async fn tickets_queued_while_no_worker_runs_are_erased_once_by_later_workers() {
    let mut app = spawn_app_with(AppOptions {
        extra_config: "[deletion]\nworker = false\n".to_owned(),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    let mut tickets = Vec::new();
    for i in 0..12 {
        let subject = format!("user-{i}");
        app.enroll(&mut client, &subject, &face(i)).await;
        tickets.push(cancel(&mut client, &subject).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for t in &tickets {
        assert_eq!(
            ticket(&mut client, &t.ticket_id).await.state(),
            DeletionState::Pending
        );
    }
    // The server goes away with the tickets pending in Redis.
    app.stop_server().await;

    // Two replicas with workers start on the same Redis.
    let fast = "[deletion]\npoll_interval_ms = 20\n";
    let a = app.start_server(fast).await;
    let b = app.start_server(fast).await;
    let mut client = app.app_client_for(&a).await;
    for t in &tickets {
        let done = wait_completed(&mut client, &t.ticket_id).await;
        assert!(done.receipt.is_some());
        assert!(subject_keys(&app, &t.subject_ref).await.is_empty());
    }
    // Exactly once: each ticket's erasure ran one time across both workers.
    let mut redis = app.redis().await;
    for t in &tickets {
        let runs: u64 = redis::cmd("HGET")
            .arg(format!("fv:{{fv-deletion}}:ticket:demo:{}", t.ticket_id))
            .arg("erasures")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(runs, 1, "ticket {}", t.ticket_id);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn withdrawing_one_purpose_keeps_the_other_and_the_last_erases() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let carol = face(1);
    let enrolled = client
        .enroll(app.enroll_request("carol", &carol, &["login", "payment"], false))
        .await
        .unwrap()
        .into_inner();

    let t = withdraw(&mut client, "carol", &["payment"]).await.unwrap();
    assert_eq!(t.state(), DeletionState::Completed);
    let key = receipt_key(&mut client).await;
    assert!(verify_receipt(&key, t.receipt.as_ref().unwrap()).is_some());

    let r = client
        .verify(app.verify_request("carol", &capture_of(&carol, 0.2, 2), "payment"))
        .await;
    assert_eq!(code(r), Code::PermissionDenied);
    let ok = client
        .verify(app.verify_request("carol", &capture_of(&carol, 0.2, 3), "login"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.decision(), proto::Decision::Match);

    let last = withdraw(&mut client, "carol", &["login"]).await.unwrap();
    let body = verify_receipt(&key, last.receipt.as_ref().unwrap()).unwrap();
    assert!(
        body.erased.contains(&"templates:1".to_owned()),
        "{:?}",
        body.erased
    );
    assert!(subject_keys(&app, &enrolled.subject_ref).await.is_empty());
    let r = client
        .verify(app.verify_request("carol", &capture_of(&carol, 0.2, 4), "login"))
        .await;
    assert_eq!(code(r), Code::NotFound);
}

#[tokio::test]
async fn withdrawal_erases_only_templates_no_purpose_covers() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let login_face = face(1);
    let pay_face = face(2);
    client
        .enroll(app.enroll_request("dan", &login_face, &["login"], false))
        .await
        .unwrap();
    client
        .enroll(app.enroll_request("dan", &pay_face, &["payment"], false))
        .await
        .unwrap();
    withdraw(&mut client, "dan", &["payment"]).await.unwrap();
    let ok = client
        .verify(app.verify_request("dan", &capture_of(&login_face, 0.2, 3), "login"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.decision(), proto::Decision::Match);
    let gone = client
        .verify(app.verify_request("dan", &capture_of(&pay_face, 0.2, 4), "login"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.decision(), proto::Decision::NoMatch);
    assert_eq!(
        code(withdraw(&mut client, "dan", &[]).await),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn compliance_report_counts_exactly() {
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    let mut other = app.other_tenant_client().await;
    let report = |r: tonic::Response<proto::ComplianceReport>| r.into_inner();

    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        app.enroll(&mut demo, s, &face(i as u64)).await;
    }
    // Re-enrolling and adding templates does not add subjects.
    demo.enroll(app.enroll_request("a", &face(10), &["login"], true))
        .await
        .unwrap();
    demo.enroll(app.enroll_request("b", &face(11), &["login", "payment"], false))
        .await
        .unwrap();
    let r = report(
        demo.get_compliance_report(proto::GetComplianceReportRequest {})
            .await
            .unwrap(),
    );
    assert_eq!(r.tenant_subjects, 3);
    assert_eq!(r.filing_threshold, 100_000);
    assert!(!r.filing_required);
    assert_eq!(r.consents_by_purpose.get("login"), Some(&3));
    assert_eq!(r.consents_by_purpose.get("payment"), Some(&1));

    demo.delete_subject(proto::DeleteSubjectRequest {
        subject_id: "c".to_owned(),
    })
    .await
    .unwrap();
    let t = cancel(&mut demo, "b").await;
    wait_completed(&mut demo, &t.ticket_id).await;
    let probe = app.seal(
        facevault::crypto::sealing::SealedFor::Enroll,
        "other",
        "x",
        &face(20),
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

    let r = report(
        demo.get_compliance_report(proto::GetComplianceReportRequest {})
            .await
            .unwrap(),
    );
    assert_eq!(r.tenant_subjects, 1);
    assert_eq!(r.deletions_pending, 0);
    assert_eq!(r.deletions_overdue, 0);
    assert_eq!(r.consents_by_purpose.get("login"), Some(&1));
    assert_eq!(r.consents_by_purpose.get("payment"), Some(&0));
}

#[tokio::test]
async fn pending_deletions_are_reported_with_their_deadline() {
    let app = spawn_app_with(AppOptions {
        extra_config: "[deletion]\nworker = false\n".to_owned(),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    app.enroll(&mut client, "erin", &face(1)).await;
    let t = cancel(&mut client, "erin").await;
    let r = client
        .get_compliance_report(proto::GetComplianceReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.deletions_pending, 1);
    assert_eq!(r.deletions_overdue, 0);
    assert_eq!(r.oldest_pending_deadline, t.deadline);
}

#[tokio::test]
async fn expired_templates_are_erased_by_the_worker() {
    let app = spawn_app_with(AppOptions {
        demo_tenant: "expose_scores = true\nmax_template_age_days = 30".to_owned(),
        extra_config: "[deletion]\npoll_interval_ms = 20\n".to_owned(),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    let old = face(1);
    let enrolled = app.enroll(&mut client, "fay", &old).await;
    let expires = enrolled.expires_at.unwrap();
    let in_30_days = chrono::Utc::now().timestamp() + 30 * 86_400;
    assert!((expires.seconds - in_30_days).abs() < 60);
    // Time travel: the template's retention ran out.
    let mut redis = app.redis().await;
    let _: () = redis::cmd("ZADD")
        .arg("fv:ledger:{demo}:expiry")
        .arg(1)
        .arg(format!("{}/{}", enrolled.subject_ref, enrolled.template_id))
        .query_async(&mut redis)
        .await
        .unwrap();
    for _ in 0..100 {
        if subject_keys(&app, &enrolled.subject_ref).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app
        .verify(&mut client, "fay", &capture_of(&old, 0.2, 2))
        .await;
    assert_eq!(code(r), Code::NotFound);
}

#[tokio::test]
async fn a_grace_period_too_close_to_the_deadline_refuses_to_start() {
    let app = spawn_app().await;
    let err = app
        .build_server("[deletion]\ngrace_period_secs = 1728000\n")
        .await
        .err()
        .expect("must refuse");
    assert!(format!("{err:#}").contains("grace period"), "{err:#}");
    assert!(
        app.build_server("[deletion]\ngrace_period_secs = 86400\n")
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_is_ever_answered_after_a_cancellation_was_acknowledged() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let alice = face(1);
    app.enroll(&mut client, "alice", &alice).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let mut c = client.clone();
        let stop = stop.clone();
        let requests: Vec<_> = (0..400)
            .map(|i| app.verify_request("alice", &capture_of(&alice, 0.2, w * 1000 + i), "login"))
            .collect();
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for r in requests {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let started = std::time::Instant::now();
                let answer = c.verify(r).await.map(|v| v.into_inner().decision());
                seen.push((started, answer));
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let cancel = cancel(&mut client, "alice").await;
    let acknowledged = std::time::Instant::now();
    let enroll = client
        .enroll(app.enroll_request("alice", &alice, &["login"], true))
        .await;
    assert_eq!(code(enroll), Code::FailedPrecondition);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut before = 0;
    let mut after = 0;
    for w in workers {
        for (started, answer) in w.await.unwrap() {
            if started > acknowledged {
                after += 1;
                assert!(
                    !matches!(answer, Ok(proto::Decision::Match)),
                    "MATCH after the cancellation was acknowledged"
                );
            } else if matches!(answer, Ok(proto::Decision::Match)) {
                before += 1;
            }
        }
    }
    assert!(
        before > 0 && after > 0,
        "the race was exercised: {before} before, {after} after"
    );
    wait_completed(&mut client, &cancel.ticket_id).await;
}
