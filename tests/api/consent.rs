//! The consent the 2025 measures ask for: a separate consent to keeping face
//! data off the device, and a guardian's consent for a child under 14. Both
//! are kept, encrypted, with the template they cover.

use facevault::crypto::envelope::{ConsentRecord, SealedTemplate, open_template};
use facevault::crypto::keyfiles;
use facevault::crypto::keyring::SubjectRef;
use facevault::domain::Tenant;
use facevault::proto;
use prost::Message as _;
use tonic::Code;

use crate::helpers::*;

fn enroll_with(app: &TestApp, subject: &str, consent: proto::Consent) -> proto::EnrollRequest {
    proto::EnrollRequest {
        consent: Some(consent),
        ..app.enroll_request(subject, &face(1), &["login"], false)
    }
}

/// The consent stored with a template, opened with the test's copy of the keys.
async fn stored_consent(app: &TestApp, enrolled: &proto::EnrollResponse) -> ConsentRecord {
    let material = keyfiles::load(&app.keys).unwrap();
    let tenant = Tenant::try_from("demo").unwrap();
    let keys = material.keyring.tenant(&tenant).unwrap();
    let bytes: Vec<u8> = redis::cmd("HGET")
        .arg(format!("fv:{{demo:{}}}:templates", enrolled.subject_ref))
        .arg(&enrolled.template_id)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let sealed = SealedTemplate::decode(bytes.as_slice()).unwrap();
    let subject_ref = SubjectRef::parse(&enrolled.subject_ref).unwrap();
    let record =
        open_template(&keys, &tenant, &subject_ref, &enrolled.template_id, sealed).unwrap();
    record.consent.clone().unwrap()
}

#[tokio::test]
async fn enrollment_needs_separate_consent_to_off_device_storage() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let mut on_device_only = consent(&["login"]);
    on_device_only.off_device_storage = false;
    let status = client
        .enroll(enroll_with(&app, "alice", on_device_only))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("consent.off_device_storage"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("alice"));
    assert_eq!(
        code(app.verify(&mut client, "alice", &face(1)).await),
        Code::NotFound,
        "nothing was enrolled"
    );

    let enrolled = app.enroll(&mut client, "alice", &face(1)).await;
    let stored = stored_consent(&app, &enrolled).await;
    assert!(stored.off_device_storage);
    assert!(!stored.subject_under_14);
    assert_eq!(stored.method, "separate-in-app");
}

#[tokio::test]
async fn a_child_is_enrolled_only_with_a_guardian_s_consent() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    for method in [
        proto::ConsentMethod::SeparateInApp,
        proto::ConsentMethod::Written,
    ] {
        let mut child = consent(&["login"]);
        child.subject_under_14 = true;
        child.method = method as i32;
        let status = client
            .enroll(enroll_with(&app, "child-1", child))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{method:?}");
        for field in ["consent.subject_under_14", "consent.method"] {
            assert!(status.message().contains(field), "{}", status.message());
        }
    }

    let mut by_guardian = consent(&["login"]);
    by_guardian.subject_under_14 = true;
    by_guardian.method = proto::ConsentMethod::Guardian as i32;
    let enrolled = client
        .enroll(enroll_with(&app, "child-1", by_guardian))
        .await
        .unwrap()
        .into_inner();
    let stored = stored_consent(&app, &enrolled).await;
    assert!(stored.subject_under_14);
    assert!(stored.off_device_storage);
    assert_eq!(stored.method, "guardian");
    assert_eq!(
        app.verify(&mut client, "child-1", &capture_of(&face(1), 0.2, 2))
            .await
            .unwrap()
            .decision,
        proto::Decision::Match as i32
    );
}

#[tokio::test]
async fn a_guardian_may_consent_for_a_person_not_under_14() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let mut by_guardian = consent(&["login"]);
    by_guardian.method = proto::ConsentMethod::Guardian as i32;
    let enrolled = client
        .enroll(enroll_with(&app, "ward-1", by_guardian))
        .await
        .unwrap()
        .into_inner();
    let stored = stored_consent(&app, &enrolled).await;
    assert_eq!(stored.method, "guardian");
    assert!(!stored.subject_under_14);
}
