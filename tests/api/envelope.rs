//! Refusals of sealed envelopes: tampered, bound to something else, replayed,
//! stale, from the future, sealed to an unknown key.

use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::proto;
use tonic::Code;

use crate::helpers::*;

async fn enrolled_app() -> (
    TestApp,
    facevault::proto::face_vault_client::FaceVaultClient<tonic::transport::Channel>,
    Vec<f32>,
) {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;
    (app, client, values)
}

fn verify_with(probe: proto::SealedEmbedding, subject: &str) -> proto::VerifyRequest {
    proto::VerifyRequest {
        subject_id: subject.to_owned(),
        probe: Some(probe),
        purpose: "login".to_owned(),
    }
}

#[tokio::test]
async fn tampered_ciphertext_and_enc_are_refused() {
    let (app, mut client, values) = enrolled_app().await;
    let mut probe = app.seal(SealedFor::Verify, "demo", "alice", &values);
    let last = probe.ciphertext.len() - 1;
    probe.ciphertext[last] ^= 1;
    let r = client.verify(verify_with(probe, "alice")).await;
    assert_eq!(code(r), Code::InvalidArgument);

    let mut probe = app.seal(SealedFor::Verify, "demo", "alice", &values);
    probe.enc[0] ^= 1;
    let r = client.verify(verify_with(probe, "alice")).await;
    assert_eq!(code(r), Code::InvalidArgument);
}

#[tokio::test]
async fn envelope_bound_to_another_subject_op_or_tenant_is_refused() {
    let (app, mut client, values) = enrolled_app().await;
    for (op, tenant, subject) in [
        (SealedFor::Verify, "demo", "mallory"),
        (SealedFor::Enroll, "demo", "alice"),
        (SealedFor::Verify, "other", "alice"),
    ] {
        let probe = app.seal(op, tenant, subject, &values);
        let r = client.verify(verify_with(probe, "alice")).await;
        let status = r.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{op:?} {tenant} {subject}"
        );
        // The hint names only the caller's own tenant and the RPC it called.
        assert_eq!(
            status.message(),
            "the envelope could not be opened: seal it to a current key of this service \
             with the AAD \"facevault/v1|verify|demo|<subject_id>\" \
             (demo is the tenant of your certificate; see docs/protocol.md)",
            "{op:?} {tenant} {subject}"
        );
        for unrelated in ["alice", "mallory", "other"] {
            assert!(
                !status.message().contains(unrelated),
                "{}",
                status.message()
            );
        }
    }
}

/// A client of tenant `other` that seals for `demo` (someone else's tenant)
/// is told about its own tenant only: the hint reveals nothing it did not
/// present in its certificate.
#[tokio::test]
async fn the_hint_names_only_the_callers_own_tenant() {
    let (app, _, values) = enrolled_app().await;
    let mut other = app.other_tenant_client().await;
    // Sealed for tenant demo, as demo's client would seal it.
    let enroll = app.enroll_request("alice", &values, &["login"], false);
    let status = other.enroll(enroll).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let message = status.message();
    assert!(
        message.contains("\"facevault/v1|enroll|other|<subject_id>\""),
        "{message}"
    );
    assert!(
        message.contains("other is the tenant of your certificate"),
        "{message}"
    );
    for foreign in ["demo", "alice"] {
        assert!(!message.contains(foreign), "{message}");
    }
}

#[tokio::test]
async fn replayed_envelope_is_refused_even_after_a_match() {
    let (app, mut client, values) = enrolled_app().await;
    let probe = app.seal(
        SealedFor::Verify,
        "demo",
        "alice",
        &capture_of(&values, 0.2, 5),
    );
    let first = client
        .verify(verify_with(probe.clone(), "alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.decision(), proto::Decision::Match);
    let replay = client
        .verify(verify_with(probe, "alice"))
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::InvalidArgument);
    assert!(replay.message().contains("replay"), "{}", replay.message());

    let enroll = app.enroll_request("alice", &values, &["login"], false);
    client.enroll(enroll.clone()).await.unwrap();
    assert_eq!(code(client.enroll(enroll).await), Code::InvalidArgument);
}

#[tokio::test]
async fn stale_and_future_payloads_are_refused() {
    let (app, mut client, values) = enrolled_app().await;
    for (name, at) in [
        ("stale", now_ms() - 6 * 60 * 1000),
        ("future", now_ms() + 5 * 60 * 1000),
    ] {
        let probe = app.seal_with(
            Suite::X25519Sha256Aes256Gcm,
            SealedFor::Verify,
            "demo",
            "alice",
            MODEL,
            &values,
            at,
        );
        let status = client
            .verify(verify_with(probe, "alice"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
    }
}

#[tokio::test]
async fn unknown_key_id_and_suite_are_refused() {
    let (app, mut client, values) = enrolled_app().await;
    let mut probe = app.seal(SealedFor::Verify, "demo", "alice", &values);
    probe.key_id = "retired-key".to_owned();
    let status = client
        .verify(verify_with(probe, "alice"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("sealing key"),
        "{}",
        status.message()
    );

    let mut probe = app.seal(SealedFor::Verify, "demo", "alice", &values);
    probe.suite = "xwing-sha256-aes256gcm".to_owned();
    assert_eq!(
        code(client.verify(verify_with(probe, "alice")).await),
        Code::InvalidArgument
    );

    let mut probe = app.seal(SealedFor::Verify, "demo", "alice", &values);
    probe.ciphertext = vec![0; 100 * 1024];
    assert_eq!(
        code(client.verify(verify_with(probe, "alice")).await),
        Code::InvalidArgument
    );
}
