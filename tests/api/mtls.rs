//! Transport security: no certificate, a foreign CA, a certificate without an
//! identity, the wrong role, and tenant isolation.

use facevault::pki::CertAuthority;
use facevault::proto;
use facevault::proto::face_vault_client::FaceVaultClient;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::helpers::*;

async fn call_with(app: &TestApp, tls: ClientTlsConfig) -> Result<(), tonic::Status> {
    let channel = match app.channel_with(tls).await {
        Ok(channel) => channel,
        Err(e) => return Err(tonic::Status::unavailable(format!("connect: {e}"))),
    };
    FaceVaultClient::new(channel)
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_client_without_certificate_is_refused_in_the_handshake() {
    let app = spawn_app().await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&app.pki.ca_cert).unwrap(),
        ))
        .domain_name("localhost");
    let status = call_with(&app, tls).await.unwrap_err();
    // The server ends the handshake with a TLS alert: nothing reaches a handler.
    assert!(
        format!("{status:?}").contains("CertificateRequired"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let app = spawn_app().await;
    let rogue = CertAuthority::generate("rogue CA").unwrap();
    let (cert, key) = rogue
        .issue_client(
            "demo-app",
            Some("spiffe://facevault.dev/tenant/demo/role/app"),
        )
        .unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&app.pki.ca_cert).unwrap(),
        ))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    let status = call_with(&app, tls).await.unwrap_err();
    assert!(format!("{status:?}").contains("UnknownCA"), "{status:?}");
}

/// A refused client sees only a TLS alert (or, through some tools, a
/// timeout); the server's log says why, at WARN, with the peer address and
/// never the certificate.
#[tokio::test]
async fn handshake_refusals_are_logged_at_warn_with_the_reason() {
    let mut app = spawn_app().await;
    let (_server, log) = app.spawn_binary("[logging]\nformat = \"json\"\n").await;
    let ca = || Certificate::from_pem(std::fs::read(&app.pki.ca_cert).unwrap());
    let without_certificate = ClientTlsConfig::new()
        .ca_certificate(ca())
        .domain_name("localhost");
    call_with(&app, without_certificate).await.unwrap_err();
    let rogue = CertAuthority::generate("rogue CA").unwrap();
    let (cert, key) = rogue
        .issue_client(
            "demo-app",
            Some("spiffe://facevault.dev/tenant/demo/role/app"),
        )
        .unwrap();
    let foreign_ca = ClientTlsConfig::new()
        .ca_certificate(ca())
        .identity(Identity::from_pem(&cert, &key))
        .domain_name("localhost");
    call_with(&app, foreign_ca).await.unwrap_err();

    let mut refusals = Vec::new();
    let mut text = String::new();
    for _ in 0..200 {
        text = std::fs::read_to_string(&log).unwrap();
        refusals = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["message"] == "TLS handshake refused")
            .collect();
        // The client may try each connection more than once.
        let seen = |reason: &str| {
            refusals
                .iter()
                .any(|l| l["reason"].as_str().is_some_and(|r| r.contains(reason)))
        };
        if seen("peer sent no certificates") && seen("invalid peer certificate: UnknownIssuer") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    for reason in [
        "peer sent no certificates",
        "invalid peer certificate: UnknownIssuer",
    ] {
        assert!(
            refusals
                .iter()
                .any(|l| l["reason"].as_str().is_some_and(|r| r.contains(reason))),
            "no refusal for {reason:?}: {text}"
        );
    }
    for line in &refusals {
        assert_eq!(line["level"], "WARN", "{line}");
        assert!(
            line["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
    }
    // The reason, not the certificate.
    let body = cert.lines().nth(1).unwrap();
    assert!(!text.contains("BEGIN CERTIFICATE") && !text.contains(body));
}

#[tokio::test]
async fn a_certificate_without_identity_or_for_another_trust_domain_is_unauthenticated() {
    let app = spawn_app().await;
    let ca = CertAuthority::load(&app.pki.ca_cert, &app.pki.ca_key).unwrap();
    for uri in [None, Some("spiffe://evil.example/tenant/demo/role/app")] {
        let (cert, key) = ca.issue_client("nobody", uri).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                std::fs::read(&app.pki.ca_cert).unwrap(),
            ))
            .identity(Identity::from_pem(cert, key))
            .domain_name("localhost");
        let status = call_with(&app, tls).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{uri:?}");
    }
}

#[tokio::test]
async fn the_auditor_role_may_not_use_the_app_api() {
    let app = spawn_app().await;
    let mut auditor = app.auditor_as_app_client().await;
    let r = auditor
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await;
    assert_eq!(code(r), Code::PermissionDenied);
    let r = auditor
        .verify(app.verify_request("alice", &face(1), "login"))
        .await;
    assert_eq!(code(r), Code::PermissionDenied);
}

#[tokio::test]
async fn one_tenant_cannot_see_verify_or_delete_another_tenants_subject() {
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    let mut other = app.other_tenant_client().await;
    let alice = face(1);
    app.enroll(&mut demo, "alice", &alice).await;

    // Sealed honestly for its own tenant: the subject simply does not exist there.
    let probe = app.seal(
        facevault::crypto::sealing::SealedFor::Verify,
        "other",
        "alice",
        &alice,
    );
    let r = other
        .verify(proto::VerifyRequest {
            subject_id: "alice".to_owned(),
            probe: Some(probe),
            purpose: "login".to_owned(),
        })
        .await;
    assert_eq!(code(r), Code::NotFound);

    // Sealed claiming tenant demo: the AAD does not match the caller's tenant.
    let r = other
        .verify(app.verify_request("alice", &alice, "login"))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);

    // Deleting "alice" as tenant other erases nothing of demo's alice.
    other
        .delete_subject(proto::DeleteSubjectRequest {
            subject_id: "alice".to_owned(),
        })
        .await
        .unwrap();
    let still = app
        .verify(&mut demo, "alice", &capture_of(&alice, 0.2, 3))
        .await
        .unwrap();
    assert_eq!(still.decision(), proto::Decision::Match);
}

#[tokio::test]
async fn reflection_and_health_are_served() {
    let app = spawn_app().await;
    // Health over mTLS on the main port.
    let tls = app.tls_config(&app.pki.app.0, &app.pki.app.1);
    let channel = app.channel_with(tls).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "facevault.v1.FaceVault".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // And alone, in plaintext, on the probe port.
    assert_eq!(
        app.health().await,
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    );
}
