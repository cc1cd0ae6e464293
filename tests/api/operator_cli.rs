//! The operator's command line, run as the real binary: certificates from
//! `facevault pki` that a `facevault serve` accepts, shell completions, and
//! `--help`.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use facevault::client::{ClientConfig, FaceVault};
use facevault::crypto::sealing::Suite;
use facevault::pki::DEFAULT_TRUST_DOMAIN;
use facevault::proto::Decision;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::helpers::*;

async fn facevault(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
        .args(args)
        .env_remove("FACEVAULT_CONFIG")
        .output()
        .await
        .unwrap()
}

fn succeeded(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The URI SANs and whether the certificate carries clientAuth / serverAuth.
fn identity_of(cert_pem: &Path) -> (Vec<String>, bool, bool) {
    let pem = std::fs::read(cert_pem).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut uris = Vec::new();
    let (mut client_auth, mut server_auth) = (false, false);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        uris.push(uri.to_string());
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                client_auth |= eku.client_auth;
                server_auth |= eku.server_auth;
            }
            _ => {}
        }
    }
    (uris, client_auth, server_auth)
}

#[tokio::test]
async fn certificates_from_pki_commands_serve_an_enroll_and_a_verify() {
    // The library app brings Redis and keys; certificates and the server are
    // the binary's.
    let mut app = spawn_app().await;
    let work = tempfile::tempdir().unwrap();
    let pki = work.path().join("pki");

    let init = succeeded(
        "pki init",
        &facevault(&["pki", "init", "--dir", path(&pki)]).await,
    );
    assert!(
        init.contains(&format!("trust domain {DEFAULT_TRUST_DOMAIN} (the default")),
        "init says which trust domain it chose: {init}"
    );
    let issue = succeeded(
        "pki issue",
        &facevault(&[
            "pki",
            "issue",
            "--dir",
            path(&pki),
            "--tenant",
            "demo",
            "--role",
            "app",
        ])
        .await,
    );
    let identity = format!("spiffe://{DEFAULT_TRUST_DOMAIN}/tenant/demo/role/app");
    assert!(issue.contains(&identity), "{issue}");
    succeeded(
        "pki server",
        &facevault(&[
            "pki",
            "server",
            "--dir",
            path(&pki),
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ])
        .await,
    );

    let (uris, client_auth, server_auth) = identity_of(&pki.join("demo-app.pem"));
    assert_eq!(uris, [identity.as_str()]);
    assert!(client_auth && !server_auth, "client cert EKU");
    let (_, client_auth, server_auth) = identity_of(&pki.join("server.pem"));
    assert!(server_auth && !client_auth, "server cert EKU");
    #[cfg(unix)]
    for key in ["ca.key", "demo-app.key", "server.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(pki.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    // A second init would orphan every certificate the CA issued.
    let ca_before = std::fs::read(pki.join("ca.key")).unwrap();
    let again = facevault(&["pki", "init", "--dir", path(&pki)]).await;
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(pki.join("ca.key")).unwrap(), ca_before);
    // The CA records its trust domain; issuing for another is refused.
    let other_domain = facevault(&[
        "pki",
        "issue",
        "--dir",
        path(&pki),
        "--tenant",
        "demo",
        "--role",
        "auditor",
        "--trust-domain",
        "other.example",
    ])
    .await;
    assert!(!other_domain.status.success());
    let stderr = String::from_utf8_lossy(&other_domain.stderr);
    assert!(
        stderr.contains(&format!("differs from {DEFAULT_TRUST_DOMAIN}")),
        "{stderr}"
    );
    assert!(!pki.join("demo-auditor.pem").exists());
    // The tenant rule is the server's.
    let bad_tenant = facevault(&[
        "pki",
        "issue",
        "--dir",
        path(&pki),
        "--tenant",
        "Demo",
        "--role",
        "app",
    ])
    .await;
    assert!(!bad_tenant.status.success());
    assert!(String::from_utf8_lossy(&bad_tenant.stderr).contains("[a-z0-9-]"));

    // The app's config with the pki commands' files and trust domain.
    let config = app
        .config_text("")
        .replace(
            &app.pki.server_cert.display().to_string(),
            path(&pki.join("server.pem")),
        )
        .replace(
            &app.pki.server_key.display().to_string(),
            path(&pki.join("server.key")),
        )
        .replace(
            &app.pki.ca_cert.display().to_string(),
            path(&pki.join("ca.pem")),
        )
        .replace(
            "trust_domain = \"facevault.dev\"",
            &format!("trust_domain = \"{DEFAULT_TRUST_DOMAIN}\""),
        );
    assert!(config.contains(path(&pki)) && config.contains(DEFAULT_TRUST_DOMAIN));
    let (mut child, log_path) = app.spawn_binary_with_config(&config).await;

    let client = FaceVault::connect(ClientConfig {
        endpoint: format!("https://127.0.0.1:{}", app.port),
        ca_pem: std::fs::read(pki.join("ca.pem")).unwrap(),
        cert_pem: std::fs::read(pki.join("demo-app.pem")).unwrap(),
        key_pem: std::fs::read(pki.join("demo-app.key")).unwrap(),
        server_name: Some("localhost".into()),
        tenant: "demo".into(),
        suite: Suite::X25519Sha256Aes256Gcm,
        timeout: Duration::from_secs(10),
        sealing_sessions: true,
    })
    .await
    .unwrap();
    let alice = face(31);
    let enrolled = client
        .enroll("pki-alice", MODEL, &alice, consent(&["login"]), false)
        .await
        .unwrap();
    assert_eq!(enrolled.templates_held, 1);
    let verified = client
        .verify("pki-alice", MODEL, &capture_of(&alice, 0.2, 1), "login")
        .await
        .unwrap();
    assert_eq!(verified.decision(), Decision::Match);

    // The start-up line gives the bound addresses, not ports and "None".
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let listening: serde_json::Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "listening")
        .unwrap_or_else(|| panic!("no 'listening' line in {logs}"));
    assert_eq!(listening["listen"], format!("127.0.0.1:{}", app.port));
    assert_eq!(
        listening["health_listen"],
        format!("127.0.0.1:{}", app.health_port)
    );
    assert!(!listening.to_string().contains("None"), "{listening}");

    child.kill().await.unwrap();
}

#[tokio::test]
async fn completions_and_help_name_the_binary_and_each_variable_once() {
    let bash = succeeded(
        "completions bash",
        &facevault(&["completions", "bash"]).await,
    );
    assert!(bash.contains("facevault"), "{bash}");
    assert!(
        bash.contains("complete "),
        "a bash completion script: {bash}"
    );
    for shell in ["zsh", "fish"] {
        let script = succeeded(shell, &facevault(&["completions", shell]).await);
        assert!(script.contains("pki"), "{shell} completes the subcommands");
    }

    let help = succeeded("serve --help", &facevault(&["serve", "--help"]).await);
    assert_eq!(help.matches("FACEVAULT_CONFIG").count(), 1, "{help}");
    for variable in ["FACEVAULT_REDIS_URL", "FACEVAULT_LISTEN", "FACEVAULT_LOG"] {
        assert_eq!(
            help.matches(&format!("{variable}]")).count(),
            1,
            "{variable}: {help}"
        );
    }
    // A password in the Redis URL never reaches the help text.
    let with_secret = tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
        .args(["serve", "--help"])
        .env("FACEVAULT_REDIS_URL", "redis://:hunter2-secret@127.0.0.1:1")
        .output()
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&with_secret.stdout).contains("hunter2"));
}
