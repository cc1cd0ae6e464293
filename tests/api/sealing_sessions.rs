//! Sealing sessions (docs/protocol.md): one HPKE setup, many AES-256-GCM messages.
//! Every refusal here comes before any comparison, and each test fails if the
//! server accepts what it must refuse.

use std::time::Duration;

use facevault::client::{PayloadSpec, SealingSession};
use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::proto::{self, Decision};

use crate::helpers::*;

pub fn spec<'a>(
    op: SealedFor,
    tenant: &'a str,
    subject: &'a str,
    values: &'a [f32],
) -> PayloadSpec<'a> {
    PayloadSpec {
        op,
        tenant,
        subject_id: subject,
        model: MODEL,
        values,
        sealed_at_unix_ms: now_ms(),
    }
}

fn session(app: &TestApp, suite: Suite, tenant: &str) -> SealingSession {
    SealingSession::start(app.target(suite), tenant, Duration::from_secs(600)).unwrap()
}

async fn enroll_in(
    client: &mut facevault::proto::face_vault_client::FaceVaultClient<tonic::transport::Channel>,
    session: &mut SealingSession,
    subject: &str,
    values: &[f32],
) {
    let sealed = session
        .seal(&spec(SealedFor::Enroll, "demo", subject, values))
        .unwrap();
    assert_eq!(sealed.session_nonce.len(), 12);
    client
        .enroll(proto::EnrollRequest {
            subject_id: subject.into(),
            embedding: Some(sealed),
            consent: Some(consent(&["login"])),
            replace: false,
        })
        .await
        .unwrap();
}

fn verify_request(sealed: proto::SealedEmbedding, subject: &str) -> proto::VerifyRequest {
    proto::VerifyRequest {
        subject_id: subject.into(),
        probe: Some(sealed),
        purpose: "login".into(),
    }
}

#[tokio::test]
async fn one_session_carries_many_calls_for_both_suites_and_a_replay_is_refused() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    for suite in [Suite::X25519Sha256Aes256Gcm, Suite::XWingSha256Aes256Gcm] {
        let mut s = session(&app, suite, "demo");
        let subject = format!("sess-{}", suite.as_str());
        let alice = face(40);
        enroll_in(&mut client, &mut s, &subject, &alice).await;
        let mut replayable = None;
        for i in 0..5 {
            let sealed = s
                .seal(&spec(
                    SealedFor::Verify,
                    "demo",
                    &subject,
                    &capture_of(&alice, 0.2, i),
                ))
                .unwrap();
            replayable = Some(sealed.clone());
            let r = client
                .verify(verify_request(sealed, &subject))
                .await
                .unwrap();
            assert_eq!(
                r.into_inner().decision(),
                Decision::Match,
                "{suite} call {i}"
            );
        }
        let no = s
            .seal(&spec(SealedFor::Verify, "demo", &subject, &face(41)))
            .unwrap();
        let r = client.verify(verify_request(no, &subject)).await.unwrap();
        assert_eq!(r.into_inner().decision(), Decision::NoMatch);

        // The same (enc, nonce) again: refused, whatever the session cache holds.
        let replayed = client
            .verify(verify_request(replayable.unwrap(), &subject))
            .await
            .unwrap_err();
        assert_eq!(replayed.code(), tonic::Code::InvalidArgument);
        assert!(replayed.message().contains("replay"), "{replayed:?}");
    }
}

#[tokio::test]
async fn a_session_opens_on_a_server_that_never_saw_it() {
    let app = spawn_app().await;
    let mut first = app.app_client().await;
    let mut s = session(&app, Suite::X25519Sha256Aes256Gcm, "demo");
    let alice = face(42);
    enroll_in(&mut first, &mut s, "sess-cold", &alice).await;
    // A second replica on the same Redis and keys: its cache is cold.
    let other = app.start_server("").await;
    let mut second = app.app_client_for(&other).await;
    for i in 0..3 {
        let sealed = s
            .seal(&spec(
                SealedFor::Verify,
                "demo",
                "sess-cold",
                &capture_of(&alice, 0.2, i),
            ))
            .unwrap();
        let r = second
            .verify(verify_request(sealed, "sess-cold"))
            .await
            .unwrap();
        assert_eq!(r.into_inner().decision(), Decision::Match);
    }
}

#[tokio::test]
async fn a_session_is_bound_to_its_tenant_subject_op_and_key() {
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    let mut other = app.other_tenant_client().await;
    let mut s = session(&app, Suite::X25519Sha256Aes256Gcm, "demo");
    let alice = face(43);
    enroll_in(&mut demo, &mut s, "sess-bound", &alice).await;
    enroll_in(&mut demo, &mut s, "sess-bob", &face(44)).await;

    let probe = capture_of(&alice, 0.2, 1);
    let sealed = s
        .seal(&spec(SealedFor::Verify, "demo", "sess-bound", &probe))
        .unwrap();
    // Another tenant presenting demo's session: its AAD and its session info differ.
    let refused = other
        .verify(verify_request(sealed.clone(), "sess-bound"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // Another subject, the same message.
    let refused = demo
        .verify(verify_request(sealed.clone(), "sess-bob"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // Sealed for verify, presented to enroll.
    let refused = demo
        .enroll(proto::EnrollRequest {
            subject_id: "sess-bound".into(),
            embedding: Some(sealed.clone()),
            consent: Some(consent(&["login"])),
            replace: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // Named with another key of the same suite family: refused, not opened.
    let mut wrong_key = sealed.clone();
    wrong_key.key_id = app.target(Suite::XWingSha256Aes256Gcm).key_id.clone();
    let refused = demo
        .verify(verify_request(wrong_key, "sess-bound"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // A session nonce of the wrong length is malformed input.
    let mut short = sealed.clone();
    short.session_nonce.truncate(8);
    let refused = demo
        .verify(verify_request(short, "sess-bound"))
        .await
        .unwrap_err();
    assert!(refused.message().contains("session_nonce"), "{refused:?}");
    // A tampered ciphertext does not open.
    let mut tampered = sealed.clone();
    tampered.ciphertext[0] ^= 1;
    let refused = demo
        .verify(verify_request(tampered, "sess-bound"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // None of these counted: the genuine message still matches.
    let r = demo
        .verify(verify_request(sealed, "sess-bound"))
        .await
        .unwrap();
    assert_eq!(r.into_inner().decision(), Decision::Match);

    // A session set up for tenant other, used by demo: the session info names
    // the tenant, so the key differs and nothing opens.
    let mut foreign = session(&app, Suite::X25519Sha256Aes256Gcm, "other");
    let sealed = foreign
        .seal(&spec(SealedFor::Verify, "other", "sess-bound", &probe))
        .unwrap();
    let refused = demo
        .verify(verify_request(sealed, "sess-bound"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
}

#[tokio::test]
async fn a_session_past_its_ttl_is_refused_and_the_client_rolls_over() {
    let app = spawn_app_with(AppOptions {
        extra_config: "[sealing]\nsession_ttl_secs = 1\n".into(),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    let keys = client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.session_ttl_seconds, 1);
    let mut s = session(&app, Suite::X25519Sha256Aes256Gcm, "demo");
    let alice = face(45);
    enroll_in(&mut client, &mut s, "sess-ttl", &alice).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let sealed = s
        .seal(&spec(
            SealedFor::Verify,
            "demo",
            "sess-ttl",
            &capture_of(&alice, 0.2, 1),
        ))
        .unwrap();
    let refused = client
        .verify(verify_request(sealed, "sess-ttl"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("sealing session"), "{refused:?}");

    // The typed client rolls over after half the published TTL by itself.
    let sdk = app.sdk(Suite::X25519Sha256Aes256Gcm, true).await;
    for i in 0..3 {
        let r = sdk
            .verify("sess-ttl", MODEL, &capture_of(&alice, 0.2, 10 + i), "login")
            .await
            .unwrap();
        assert_eq!(r.decision(), Decision::Match);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}
