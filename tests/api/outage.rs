//! Redis down: calls fail closed with UNAVAILABLE within the configured timeout,
//! health reports NOT_SERVING, and everything recovers without a restart.

use std::time::{Duration, Instant};

use facevault::proto::Decision;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::*;

#[tokio::test]
async fn redis_outage_fails_closed_and_recovers() {
    let mut app = spawn_app().await;
    let mut client = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;

    app.redis.stop().await;
    let started = Instant::now();
    let r = app
        .verify(&mut client, "alice", &capture_of(&values, 0.2, 2))
        .await;
    assert_eq!(code(r), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let r = client
        .enroll(app.enroll_request("bob", &values, &["login"], false))
        .await;
    assert_eq!(code(r), Code::Unavailable);

    let mut not_serving = false;
    for _ in 0..100 {
        if app.health().await == Some(ServingStatus::NotServing as i32) {
            not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        not_serving,
        "health must report NOT_SERVING while Redis is down"
    );

    // Restarted without persistence: the data is gone, but the service recovers.
    app.redis.restart().await.unwrap();
    app.wait_until_serving().await;
    let mut recovered = false;
    for _ in 0..50 {
        if let Ok(r) = client
            .enroll(app.enroll_request("alice", &values, &["login"], true))
            .await
        {
            assert_eq!(r.into_inner().templates_held, 1);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "service did not recover after Redis came back");
    let ok = app
        .verify(&mut client, "alice", &capture_of(&values, 0.2, 3))
        .await
        .unwrap();
    assert_eq!(ok.decision(), Decision::Match);
    app.stop().await;
}
