//! Abuse protection answers with the documented codes, at once.

use std::time::Duration;

use facevault::proto;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn a_caller_over_its_rate_gets_resource_exhausted() {
    let app = spawn_app_with(AppOptions {
        extra_config: "[limits]\nrate_per_second = 1.0\nburst = 3.0\n".to_owned(),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = client
            .get_sealing_keys(proto::GetSealingKeysRequest {})
            .await;
        codes.push(r.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
    }
    assert_eq!(&codes[..3], &[Code::Ok; 3]);
    assert!(codes[3..].contains(&Code::ResourceExhausted), "{codes:?}");
    // Another client has its own budget.
    let mut other = app.other_tenant_client().await;
    other
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_in_flight_limit_are_shed_with_unavailable() {
    let app = spawn_app_with(AppOptions {
        // One caller may hold both permits here (its share is its own test,
        // redis_writer::scan_flood).
        extra_config: "[limits]\nmax_in_flight = 2\nmax_in_flight_per_caller = 2\n".to_owned(),
        redis_timeout_ms: 5000,
        ..AppOptions::default()
    })
    .await;
    let client = app.app_client().await;
    let values = face(1);
    let mut c = client.clone();
    app.enroll(&mut c, "alice", &values).await;
    // Another caller: the first holds its whole share, and this one is shed
    // by the global bound.
    let mut other = app.other_tenant_client().await;
    // Hold Redis for a moment so two calls stay in flight.
    app.pause_redis(1500, "ALL").await;
    let mut slow = Vec::new();
    for i in 0..2 {
        let mut c = client.clone();
        let r = app.verify_request("alice", &capture_of(&values, 0.2, i), "login");
        slow.push(tokio::spawn(async move { c.verify(r).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = other
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(shed.code(), Code::Unavailable);
    assert!(shed.message().contains("overloaded"), "{shed:?}");
    for s in slow {
        let r = s.await.unwrap();
        assert!(
            r.is_ok() || r.as_ref().unwrap_err().code() == Code::Aborted,
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_call_past_the_request_timeout_gets_deadline_exceeded() {
    let app = spawn_app_with(AppOptions {
        extra_config: "[limits]\nrequest_timeout_ms = 300\n".to_owned(),
        redis_timeout_ms: 5000,
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    app.pause_redis(1000, "ALL").await;
    let r = app.verify(&mut client, "alice", &face(1)).await;
    assert_eq!(code(r), Code::DeadlineExceeded);
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let mut request = app.verify_request("alice", &face(1), "login");
    request.subject_id = "x".repeat(300 * 1024);
    let r = client.verify(request).await;
    let status = r.unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{status:?}"
    );
}
