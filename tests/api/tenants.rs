//! Only tenants declared under `[tenants.<name>]` are served: a certificate
//! from the trusted CA that names any other tenant is refused on every service.

use facevault::pki::{CertAuthority, DEV_TRUST_DOMAIN, spiffe_id};
use facevault::proto;
use facevault::proto::audit_log_client::AuditLogClient;
use facevault::proto::face_vault_client::FaceVaultClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::*;

/// A channel with a certificate of the app's own CA for `tenant` and `role`.
pub async fn channel_as(app: &TestApp, tenant: &str, role: &str) -> Channel {
    let ca = CertAuthority::load(&app.pki.ca_cert, &app.pki.ca_key).unwrap();
    let (cert, key) = ca
        .issue_client(
            &format!("{tenant}-{role}"),
            Some(&spiffe_id(DEV_TRUST_DOMAIN, tenant, role)),
        )
        .unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&app.pki.ca_cert).unwrap(),
        ))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    app.channel_with(tls).await.unwrap()
}

fn enroll_as_bank_a(app: &TestApp, subject: &str) -> proto::EnrollRequest {
    proto::EnrollRequest {
        embedding: Some(app.seal(
            facevault::crypto::sealing::SealedFor::Enroll,
            "bank-a",
            subject,
            &face(1),
        )),
        ..app.enroll_request(subject, &face(1), &["login"], false)
    }
}

#[tokio::test]
async fn a_tenant_not_declared_is_refused_on_every_service() {
    let app = spawn_app().await;
    let mut bank_a = FaceVaultClient::new(channel_as(&app, "bank-a", "app").await);
    let status = bank_a
        .enroll(enroll_as_bank_a(&app, "alice"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        code(
            bank_a
                .get_sealing_keys(proto::GetSealingKeysRequest {})
                .await
        ),
        Code::PermissionDenied
    );

    let mut bank_a_auditor = AuditLogClient::new(channel_as(&app, "bank-a", "auditor").await);
    let r = bank_a_auditor
        .list_events(proto::ListEventsRequest::default())
        .await;
    assert_eq!(code(r), Code::PermissionDenied);
    let r = bank_a_auditor
        .verify_chain(proto::VerifyChainRequest::default())
        .await;
    assert_eq!(code(r), Code::PermissionDenied);

    // Nothing is kept for a tenant that is not served.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*bank-a*")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");

    // Declared tenants are served as before, with the same CA.
    let mut demo = FaceVaultClient::new(channel_as(&app, "demo", "app").await);
    app.enroll(&mut demo, "alice", &face(1)).await;
}

#[tokio::test]
async fn the_refusal_is_logged_with_the_tenant_and_never_the_subject() {
    let mut app = spawn_app().await;
    let (_server, log) = app.spawn_binary("").await;
    let subject = "subject-5e1f@example.com";
    let mut bank_a = FaceVaultClient::new(channel_as(&app, "bank-a", "app").await);
    let r = bank_a.enroll(enroll_as_bank_a(&app, subject)).await;
    assert_eq!(code(r), Code::PermissionDenied);

    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap();
        if text.contains("not declared") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let line = text
        .lines()
        .find(|l| l.contains("not declared"))
        .unwrap_or_else(|| panic!("no refusal logged: {text}"));
    assert!(line.contains("bank-a"), "{line}");
    assert!(!text.contains(subject) && !text.contains("5e1f"));
}
