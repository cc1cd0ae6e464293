//! Redis over mutual TLS (`rediss://`): the configured CA and client certificate
//! are what the service uses, and without either it does not talk to Redis at all.

use std::time::Duration;

use facevault::proto::Decision;
use tonic::Code;

use crate::helpers::*;

fn tls_app() -> AppOptions {
    AppOptions {
        redis_tls: true,
        ..AppOptions::default()
    }
}

#[tokio::test]
async fn the_service_reaches_redis_over_mutual_tls() {
    let app = spawn_app_with(tls_app()).await;
    let mut client = app.app_client().await;
    let alice = face(1);
    app.enroll(&mut client, "alice", &alice).await;
    let verdict = app
        .verify(&mut client, "alice", &capture_of(&alice, 0.2, 2))
        .await
        .unwrap();
    assert_eq!(verdict.decision(), Decision::Match);
}

#[tokio::test]
async fn without_the_redis_ca_or_client_certificate_nothing_is_served() {
    let app = spawn_app_with(tls_app()).await;
    let TestRedis::Tls { ca, client, .. } = &app.redis else {
        unreachable!("a TLS app")
    };
    let config = app.config_text("");
    let untrusted = config.replace(&format!("tls_ca = \"{}\"\n", ca.display()), "");
    let anonymous = config
        .replace(
            &format!("tls_client_cert = \"{}\"\n", client.0.display()),
            "",
        )
        .replace(&format!("tls_client_key = \"{}\"", client.1.display()), "");
    for (name, text) in [("untrusted", untrusted), ("anonymous", anonymous)] {
        assert_ne!(text, config, "{name}: the line to drop was not found");
        let path = std::env::temp_dir().join(format!("facevault-{name}-{}.toml", app.port));
        let server = serve(app.build_server_from(&path, &text).await.unwrap());
        // Health stays NOT_SERVING: the TLS handshake with Redis never succeeds.
        // Health is NOT_SERVING from the first probe on: Redis never answered.
        for _ in 0..10 {
            assert_eq!(health_at(server.health_port).await, Some(2), "{name}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut other = app.app_client_for(&server).await;
        let r = app
            .verify(&mut other, "alice", &capture_of(&face(1), 0.2, 3))
            .await;
        assert_eq!(code(r), Code::Unavailable, "{name}");
        server.stop().await;
        let _ = std::fs::remove_file(&path);
    }
}
