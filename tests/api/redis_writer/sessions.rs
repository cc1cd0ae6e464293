//! Sessions: the sealing-session cache has an equal share per declared tenant,
//! so one tenant churning sessions cannot evict another's. Eviction is
//! observable from outside: a remembered session past its TTL is refused,
//! while an evicted one would be set up afresh and accepted (docs/protocol.md
//! says what eviction restarts). Before the shares, tenant `other`'s flood
//! below evicted demo's session and its expired message was accepted.

use std::time::Duration;

use facevault::client::SealingSession;
use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::proto;

use crate::helpers::*;
use crate::sealing_sessions::spec;

fn enroll_request(sealed: proto::SealedEmbedding, subject: &str) -> proto::EnrollRequest {
    proto::EnrollRequest {
        subject_id: subject.into(),
        embedding: Some(sealed),
        consent: Some(consent(&["login"])),
        replace: false,
    }
}

#[tokio::test]
async fn another_tenant_cannot_evict_a_session() {
    // Two declared tenants, 4 entries: a share of 2 each.
    let app = spawn_app_with(AppOptions {
        extra_config: "[sealing]\nsession_ttl_secs = 1\nsession_cache_entries = 4\n".into(),
        ..AppOptions::default()
    })
    .await;
    let target = app.target(Suite::X25519Sha256Aes256Gcm).clone();
    let mut demo = app.app_client().await;
    let mut other = app.other_tenant_client().await;

    let mut victim = SealingSession::start(&target, "demo", Duration::from_secs(600)).unwrap();
    let alice = face(61);
    let sealed = victim
        .seal(&spec(SealedFor::Enroll, "demo", "sess-victim", &alice))
        .unwrap();
    demo.enroll(enroll_request(sealed, "sess-victim"))
        .await
        .unwrap();

    // Tenant other sets up 16 sessions, eight times its share.
    const FLOOD: u64 = 16;
    for i in 0..FLOOD {
        let mut s = SealingSession::start(&target, "other", Duration::from_secs(600)).unwrap();
        let subject = format!("sess-flood-{i}");
        let sealed = s
            .seal(&spec(SealedFor::Enroll, "other", &subject, &face(100 + i)))
            .unwrap();
        other
            .enroll(enroll_request(sealed, &subject))
            .await
            .unwrap();
    }
    println!("tenant other set up {FLOOD} sessions against a share of 2");

    // Past the TTL, demo's session must still be remembered, hence refused.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let sealed = victim
        .seal(&spec(SealedFor::Enroll, "demo", "sess-victim-2", &face(62)))
        .unwrap();
    let refused = demo
        .enroll(enroll_request(sealed, "sess-victim-2"))
        .await
        .expect_err("an expired session that was not evicted must be refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("session TTL"), "{refused:?}");
}
