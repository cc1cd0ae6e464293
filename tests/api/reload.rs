//! Certificates and CRLs are reloaded from disk without a restart: a client
//! certificate revoked in a new CRL is refused on its next connection.

use std::time::Duration;

use facevault::pki::{CertAuthority, serial_of};
use facevault::proto;
use facevault::proto::face_vault_client::FaceVaultClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::*;

async fn call(app: &TestApp, port: u16, cert: &str, key: &str) -> Result<(), String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(&app.pki.ca_cert).unwrap(),
        ))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    FaceVaultClient::new(channel)
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_certificate_revoked_by_a_reloaded_crl_is_refused() {
    let app = spawn_app().await;
    let ca = CertAuthority::load(&app.pki.ca_cert, &app.pki.ca_key).unwrap();
    let (cert, key) = ca
        .issue_client(
            "demo-app-2",
            Some("spiffe://facevault.dev/tenant/demo/role/app"),
        )
        .unwrap();
    let (good_cert, good_key) = (
        std::fs::read_to_string(&app.pki.app.0).unwrap(),
        std::fs::read_to_string(&app.pki.app.1).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("clients.crl.pem");
    std::fs::write(&crl, ca.crl_pem(&[]).unwrap()).unwrap();
    let server = app
        .start_server_with_tls(
            &format!("crls = [\"{}\"]\nreload_interval_secs = 1", crl.display()),
            "",
        )
        .await;
    call(&app, server.port, &cert, &key)
        .await
        .expect("not revoked yet");

    // cert-manager style: the new file replaces the old one.
    let next = dir.path().join("next.pem");
    std::fs::write(&next, ca.crl_pem(&[serial_of(&cert).unwrap()]).unwrap()).unwrap();
    std::fs::rename(&next, &crl).unwrap();

    let mut refused = None;
    for _ in 0..40 {
        if let Err(e) = call(&app, server.port, &cert, &key).await {
            refused = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("the revoked certificate was still accepted after reload");
    assert!(refused.contains("Revoked"), "{refused}");
    call(&app, server.port, &good_cert, &good_key)
        .await
        .expect("other clients are unaffected");

    // A broken CRL file keeps the last good configuration.
    std::fs::write(&crl, "not a crl").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    call(&app, server.port, &good_cert, &good_key)
        .await
        .expect("still serving");
    assert!(
        call(&app, server.port, &cert, &key).await.is_err(),
        "still revoked"
    );
    server.stop().await;
}
