//! The typed Rust client (`facevault::client::FaceVault`) against a real server.

use std::time::Duration;

use facevault::crypto::sealing::Suite;
use facevault::proto::{Decision, DeletionState};

use crate::helpers::*;

#[tokio::test]
async fn the_rust_client_enrolls_verifies_and_cancels_with_both_suites() {
    let app = spawn_app().await;
    for (subject, suite, sessions) in [
        ("sdk-x", Suite::X25519Sha256Aes256Gcm, true),
        ("sdk-pq", Suite::XWingSha256Aes256Gcm, true),
        ("sdk-x-one-shot", Suite::X25519Sha256Aes256Gcm, false),
        ("sdk-pq-one-shot", Suite::XWingSha256Aes256Gcm, false),
    ] {
        let client = app.sdk(suite, sessions).await;
        let alice = face(5);
        let enrolled = client
            .enroll(subject, MODEL, &alice, consent(&["login"]), false)
            .await
            .unwrap();
        assert_eq!(enrolled.templates_held, 1);
        let ok = client
            .verify(subject, MODEL, &capture_of(&alice, 0.2, 1), "login")
            .await
            .unwrap();
        assert_eq!(ok.decision(), Decision::Match);
        let no = client
            .verify(subject, MODEL, &face(6), "login")
            .await
            .unwrap();
        assert_eq!(no.decision(), Decision::NoMatch);

        let first = client.cancel_account(subject, "closed").await.unwrap();
        let again = client.cancel_account(subject, "closed").await.unwrap();
        assert_eq!(first.ticket_id, again.ticket_id);
        let mut state = DeletionState::Pending;
        for _ in 0..100 {
            state = client
                .deletion_ticket(&first.ticket_id)
                .await
                .unwrap()
                .state();
            if state == DeletionState::Completed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(state, DeletionState::Completed);
        let refused = client
            .verify(subject, MODEL, &alice, "login")
            .await
            .unwrap_err();
        assert!(
            matches!(refused, facevault::client::ClientError::Status(ref s) if s.code() == tonic::Code::FailedPrecondition)
        );
    }
    let report = app
        .sdk(Suite::X25519Sha256Aes256Gcm, true)
        .await
        .compliance_report()
        .await
        .unwrap();
    assert_eq!(report.tenant_subjects, 0);
}
