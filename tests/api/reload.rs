//! Certificates and CRLs are reloaded from disk without a restart: a client
//! certificate revoked in a new CRL is refused on its next connection, and a
//! renewed server certificate is served on the next one.

use std::sync::Arc;
use std::time::Duration;

use facevault::pki::{CertAuthority, DEV_TRUST_DOMAIN, DevPki, serial_of};
use facevault::proto;
use facevault::proto::face_vault_client::FaceVaultClient;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
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

/// The leaf certificate the service presents on a new connection (the server's
/// certificate comes before any client certificate is asked for).
async fn served_certificate(app: &TestApp, port: u16) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&app.pki.ca_cert).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// cert-manager renews the certificate in the Secret and the kubelet swaps the
/// mounted files: new connections get the new certificate, with no restart.
#[tokio::test]
async fn a_renewed_server_certificate_is_served_without_a_restart() {
    let app = spawn_app().await;
    let server = app
        .start_server_with_tls("reload_interval_secs = 1", "")
        .await;
    let pem_der = |path: &std::path::Path| CertificateDer::from_pem_file(path).unwrap().to_vec();
    let before = served_certificate(&app, server.port).await;
    assert_eq!(before, pem_der(&app.pki.server_cert));

    // A new certificate for the same key from the same CA, written beside the
    // old one and renamed over it.
    let renewal = tempfile::tempdir().unwrap();
    for file in ["ca.pem", "ca.key", "server.key"] {
        std::fs::copy(app.pki.dir.join(file), renewal.path().join(file)).unwrap();
    }
    let renewed = DevPki::ensure(renewal.path(), DEV_TRUST_DOMAIN, &[]).unwrap();
    let after = pem_der(&renewed.server_cert);
    assert_ne!(after, before, "the renewal must be a different certificate");
    let next = app.pki.dir.join("server.pem.next");
    std::fs::copy(&renewed.server_cert, &next).unwrap();
    std::fs::rename(&next, &app.pki.server_cert).unwrap();

    let mut served = before.clone();
    for _ in 0..40 {
        served = served_certificate(&app, server.port).await;
        if served != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served, after,
        "the renewed certificate was not served within 4 s"
    );
    let (cert, key) = (
        std::fs::read_to_string(&app.pki.app.0).unwrap(),
        std::fs::read_to_string(&app.pki.app.1).unwrap(),
    );
    call(&app, server.port, &cert, &key)
        .await
        .expect("calls go on over the renewed certificate");
    server.stop().await;
}
