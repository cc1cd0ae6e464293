use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::proto::{self, Decision};
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn genuine_probe_matches_and_impostor_does_not() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let alice = face(1);
    let enrolled = app.enroll(&mut client, "alice", &alice).await;
    assert_eq!(enrolled.templates_held, 1);
    assert_eq!(enrolled.subject_ref.len(), 43);
    assert!(!enrolled.subject_ref.contains("alice"));

    let genuine = app
        .verify(&mut client, "alice", &capture_of(&alice, 0.4, 2))
        .await
        .unwrap();
    assert_eq!(genuine.decision(), Decision::Match);
    assert_eq!(genuine.threshold, THRESHOLD);
    assert!(genuine.score.unwrap() > 0.8, "{:?}", genuine.score);
    assert!(!genuine.audit_id.is_empty());

    let impostor = app.verify(&mut client, "alice", &face(3)).await.unwrap();
    assert_eq!(impostor.decision(), Decision::NoMatch);
    assert!(impostor.score.unwrap() < 0.3);
}

#[tokio::test]
async fn best_of_several_templates_wins_and_replace_drops_them() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let captures = [face(10), face(11), face(12)];
    for (i, capture) in captures.iter().enumerate() {
        let enrolled = app.enroll(&mut client, "bob", capture).await;
        assert_eq!(enrolled.templates_held, i as u32 + 1);
    }
    for (i, capture) in captures.iter().enumerate() {
        let probe = capture_of(capture, 0.3, 100 + i as u64);
        let result = app.verify(&mut client, "bob", &probe).await.unwrap();
        assert_eq!(result.decision(), Decision::Match, "capture {i}");
    }

    let fresh = face(13);
    let replaced = client
        .enroll(app.enroll_request("bob", &fresh, &["login"], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replaced.templates_held, 1);
    let old = app
        .verify(&mut client, "bob", &capture_of(&captures[0], 0.3, 7))
        .await
        .unwrap();
    assert_eq!(
        old.decision(),
        Decision::NoMatch,
        "replace must drop old templates"
    );
    let new = app
        .verify(&mut client, "bob", &capture_of(&fresh, 0.3, 8))
        .await
        .unwrap();
    assert_eq!(new.decision(), Decision::Match);
}

#[tokio::test]
async fn template_limit_is_enforced() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    for seed in 0..5 {
        app.enroll(&mut client, "carol", &face(seed)).await;
    }
    let sixth = client
        .enroll(app.enroll_request("carol", &face(9), &["login"], false))
        .await;
    assert_eq!(code(sixth), Code::FailedPrecondition);
}

#[tokio::test]
async fn both_sealing_suites_work_end_to_end() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    for (subject, suite) in [
        ("x-user", Suite::X25519Sha256Aes256Gcm),
        ("pq-user", Suite::XWingSha256Aes256Gcm),
    ] {
        let values = face(20);
        let embedding = app.seal_with(
            suite,
            SealedFor::Enroll,
            "demo",
            subject,
            MODEL,
            &values,
            now_ms(),
        );
        assert_eq!(embedding.suite, suite.as_str());
        client
            .enroll(proto::EnrollRequest {
                subject_id: subject.to_owned(),
                embedding: Some(embedding),
                consent: Some(consent(&["login"])),
                replace: false,
            })
            .await
            .unwrap();
        let probe = app.seal_with(
            suite,
            SealedFor::Verify,
            "demo",
            subject,
            MODEL,
            &capture_of(&values, 0.3, 21),
            now_ms(),
        );
        let result = client
            .verify(proto::VerifyRequest {
                subject_id: subject.to_owned(),
                probe: Some(probe),
                purpose: "login".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(result.decision(), Decision::Match, "{suite}");
    }
}

#[tokio::test]
async fn sealing_keys_are_published_in_rfc9180_form() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let keys = client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let x = keys
        .keys
        .iter()
        .find(|k| k.suite == "x25519-sha256-aes256gcm")
        .unwrap();
    let w = keys
        .keys
        .iter()
        .find(|k| k.suite == "xwing-sha256-aes256gcm")
        .unwrap();
    assert_eq!(x.public_key.len(), 32);
    assert_eq!(w.public_key.len(), 1216);
    assert!(x.not_after.is_some());
    assert_eq!(keys.receipt_verification_key.len(), 32);
}

#[tokio::test]
async fn purpose_must_be_consented() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let values = face(30);
    client
        .enroll(app.enroll_request("dave", &values, &["login"], false))
        .await
        .unwrap();
    let result = client
        .verify(app.verify_request("dave", &capture_of(&values, 0.2, 31), "payment"))
        .await;
    assert_eq!(code(result), Code::PermissionDenied);
}

#[tokio::test]
async fn bad_input_is_refused_with_invalid_argument() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let good = face(40);
    app.enroll(&mut client, "erin", &good).await;

    let mut nan = good.clone();
    nan[3] = f32::NAN;
    let mut inf = good.clone();
    inf[0] = f32::INFINITY;
    let cases: Vec<(&str, Vec<f32>, &str)> = vec![
        ("nan", nan, MODEL),
        ("inf", inf, MODEL),
        ("zero", vec![0.0; DIM], MODEL),
        ("short", good[..DIM - 1].to_vec(), MODEL),
        ("unknown model", good.clone(), "nope-128"),
        ("model not enrolled", good[..64].to_vec(), "other-64"),
    ];
    for (name, values, model) in cases {
        let probe = app.seal_with(
            Suite::X25519Sha256Aes256Gcm,
            SealedFor::Verify,
            "demo",
            "erin",
            model,
            &values,
            now_ms(),
        );
        let result = client
            .verify(proto::VerifyRequest {
                subject_id: "erin".to_owned(),
                probe: Some(probe),
                purpose: "login".to_owned(),
            })
            .await;
        assert_eq!(code(result), Code::InvalidArgument, "{name}");
    }

    let no_consent = proto::EnrollRequest {
        consent: None,
        ..app.enroll_request("erin", &good, &["login"], false)
    };
    assert_eq!(code(client.enroll(no_consent).await), Code::InvalidArgument);
    let bad_purpose = app.enroll_request("erin", &good, &["Not A Purpose"], false);
    assert_eq!(
        code(client.enroll(bad_purpose).await),
        Code::InvalidArgument
    );
    let empty_subject = app.verify_request("", &good, "login");
    assert_eq!(
        code(client.verify(empty_subject).await),
        Code::InvalidArgument
    );
    let no_probe = proto::VerifyRequest {
        subject_id: "erin".to_owned(),
        probe: None,
        purpose: "login".to_owned(),
    };
    assert_eq!(code(client.verify(no_probe).await), Code::InvalidArgument);

    // None of these touched the lockout counter: a genuine probe still matches.
    let ok = app
        .verify(&mut client, "erin", &capture_of(&good, 0.2, 41))
        .await
        .unwrap();
    assert_eq!(ok.decision(), Decision::Match);
}

#[tokio::test]
async fn unknown_subject_is_not_found() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    assert_eq!(
        code(app.verify(&mut client, "nobody", &face(1)).await),
        Code::NotFound
    );
}

#[tokio::test]
async fn lockout_after_five_failures_and_success_resets() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let frank = face(50);
    app.enroll(&mut client, "frank", &frank).await;

    // Four failures, then a success: the count resets.
    for seed in 0..4 {
        let r = app
            .verify(&mut client, "frank", &face(600 + seed))
            .await
            .unwrap();
        assert_eq!(r.decision(), Decision::NoMatch);
    }
    let ok = app
        .verify(&mut client, "frank", &capture_of(&frank, 0.2, 51))
        .await
        .unwrap();
    assert_eq!(ok.decision(), Decision::Match);

    for seed in 0..5 {
        let r = app
            .verify(&mut client, "frank", &face(700 + seed))
            .await
            .unwrap();
        assert_eq!(r.decision(), Decision::NoMatch);
    }
    // Locked: even the genuine face is refused now, and the refusal says when to retry.
    let locked = app
        .verify(&mut client, "frank", &capture_of(&frank, 0.2, 52))
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert!(
        locked.message().contains("retry after 30 s"),
        "{}",
        locked.message()
    );
    assert!(!locked.message().contains("frank"));
}

#[tokio::test]
async fn fifty_failures_disable_until_reenrollment() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let gina = face(60);
    let enrolled = app.enroll(&mut client, "gina", &gina).await;
    // Drive the counter to the disabling threshold directly (waiting out the
    // doubling delays would take days); the service reads it as it would its own.
    let mut redis = app.redis().await;
    let state_key = format!("fv:{{demo:{}}}:state", enrolled.subject_ref);
    let _: () = redis::cmd("HSET")
        .arg(&state_key)
        .arg("fails")
        .arg(50)
        .arg("last_failure_ms")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    let disabled = app
        .verify(&mut client, "gina", &capture_of(&gina, 0.2, 61))
        .await;
    assert_eq!(code(disabled), Code::ResourceExhausted);
    let add = client
        .enroll(app.enroll_request("gina", &gina, &["login"], false))
        .await;
    assert_eq!(
        code(add),
        Code::ResourceExhausted,
        "adding a template does not lift the disable"
    );

    client
        .enroll(app.enroll_request("gina", &gina, &["login"], true))
        .await
        .unwrap();
    let ok = app
        .verify(&mut client, "gina", &capture_of(&gina, 0.2, 62))
        .await
        .unwrap();
    assert_eq!(ok.decision(), Decision::Match);
}

#[tokio::test]
async fn delete_subject_erases_everything() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let values = face(70);
    let enrolled = app.enroll(&mut client, "henry", &values).await;
    app.verify(&mut client, "henry", &face(71)).await.unwrap();

    let ticket = client
        .delete_subject(proto::DeleteSubjectRequest {
            subject_id: "henry".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ticket.state(), proto::DeletionState::Completed);
    assert_eq!(ticket.subject_ref, enrolled.subject_ref);
    assert!(ticket.receipt.is_some());

    let mut redis = app.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{}*", enrolled.subject_ref))
        .query_async(&mut redis)
        .await
        .unwrap();
    let left = erasure_residue(&mut redis, keys).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(
        code(app.verify(&mut client, "henry", &values).await),
        Code::NotFound
    );
}
