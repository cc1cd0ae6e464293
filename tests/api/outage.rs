//! Redis down: calls fail closed with UNAVAILABLE within the configured timeout,
//! health reports NOT_SERVING (but the `liveness` service the chart's liveness
//! probe asks for stays SERVING), and everything recovers without a restart.

use std::time::{Duration, Instant};

use facevault::proto::Decision;
use facevault::proto::face_vault_server::SERVICE_NAME as FACE_VAULT;
use facevault::startup::LIVENESS_SERVICE;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::*;

#[tokio::test]
async fn redis_outage_fails_closed_and_recovers() {
    let mut app = spawn_app().await;
    let mut client = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;
    let serving = Some(ServingStatus::Serving as i32);
    let not_serving = Some(ServingStatus::NotServing as i32);
    assert_eq!(app.health_of(FACE_VAULT).await, serving);
    assert_eq!(app.health_of(LIVENESS_SERVICE).await, serving);

    app.redis.server().stop().await;
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

    let mut reported = false;
    for _ in 0..100 {
        if app.health().await == not_serving {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reported,
        "health must report NOT_SERVING while Redis is down"
    );
    assert_eq!(app.health_of(FACE_VAULT).await, not_serving);
    // Liveness follows the process alone: a Redis outage must not restart pods.
    assert_eq!(app.health_of(LIVENESS_SERVICE).await, serving);

    // Restarted without persistence: the data is gone, but the service recovers.
    app.redis.server().restart().await.unwrap();
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
    assert_eq!(app.health_of(FACE_VAULT).await, serving);
    assert_eq!(app.health_of(LIVENESS_SERVICE).await, serving);
    app.stop().await;
}

/// Redis killed (SIGKILL) and restarted under load, with `appendfsync always`:
/// everything the service acknowledged is still there afterwards, calls during
/// the outage fail fast, and the service recovers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_redis_crash() {
    let _turn = HEAVY_TESTS.lock().await;
    use std::collections::HashSet;

    use facevault::proto::{self, AuditEvent};
    use prost::Message as _;

    let mut app = spawn_app_with(AppOptions {
        redis_append_only: true,
        ..AppOptions::default()
    })
    .await;
    let client = app.app_client().await;
    let faces: Vec<Vec<f32>> = (0..300).map(|i| face(5000 + i)).collect();
    let enrolls: Vec<_> = (0..300)
        .map(|i| app.enroll_request(&format!("d{i}"), &faces[i], &["login"], false))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timeout = Duration::from_millis(500);

    // One worker enrolls then cancels every other subject, recording what was
    // acknowledged. A refused cancellation has an unknown outcome (Redis may have
    // died after it took effect, before its audit event), so its subject is
    // counted apart.
    let worker = {
        let mut c = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut enrolled, mut tickets, mut unknown, mut refusals, mut slowest) =
                (Vec::new(), Vec::new(), 0, 0, Duration::ZERO);
            for (i, request) in enrolls.into_iter().enumerate() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                match c.enroll(request).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        if i % 2 == 1 {
                            enrolled.push((r.subject_ref, r.template_id));
                            continue;
                        }
                        match c
                            .cancel_account(proto::CancelAccountRequest {
                                subject_id: format!("d{i}"),
                                reason: String::new(),
                            })
                            .await
                        {
                            Ok(t) => tickets.push(t.into_inner().ticket_id),
                            Err(status) => {
                                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                                unknown += 1;
                                refusals += 1;
                            }
                        }
                    }
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                        refusals += 1;
                        slowest = slowest.max(started.elapsed());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (enrolled, tickets, unknown, refusals, slowest)
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.redis.server().stop().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    app.redis.server().restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (enrolled, tickets, unknown, refusals, slowest) = worker.await.unwrap();

    let mut redis = app.redis().await;
    let mut found_templates = 0;
    for (subject_ref, template_id) in &enrolled {
        let templates = format!("fv:{{demo:{subject_ref}}}:templates");
        let exists: bool = redis::cmd("HEXISTS")
            .arg(&templates)
            .arg(template_id)
            .query_async(&mut redis)
            .await
            .unwrap();
        found_templates += usize::from(exists);
    }
    let mut found_tickets = 0;
    for t in &tickets {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("fv:{{fv-deletion}}:ticket:demo:{t}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        found_tickets += usize::from(exists);
    }
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg("fv:audit:{demo}:events")
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let ops: Vec<String> = entries
        .iter()
        .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "e"))
        .map(|(_, e)| AuditEvent::decode(e.as_slice()).unwrap().op)
        .collect();
    let audited_enrolls = ops.iter().filter(|op| *op == "Enroll").count();
    let audited_ok: HashSet<_> = entries.iter().map(|(id, _)| id.clone()).collect();
    eprintln!(
        "acknowledged: {} enrollments kept, {} cancellations; found: {found_templates} templates, {found_tickets} tickets, {audited_enrolls} Enroll audit events ({} events); {refusals} calls refused during the outage ({unknown} of them cancellations), slowest refusal {slowest:?}",
        enrolled.len(),
        tickets.len(),
        audited_ok.len()
    );
    assert!(refusals > 0, "the outage was exercised");
    assert!(slowest < timeout * 4, "refusals were fast: {slowest:?}");
    assert!(
        enrolled.len() + tickets.len() > refusals,
        "the service recovered without a restart"
    );
    assert_eq!(
        found_tickets,
        tickets.len(),
        "every acknowledged ticket survived"
    );
    assert_eq!(
        found_templates,
        enrolled.len(),
        "every acknowledged enrollment that was not cancelled survived"
    );
    assert!(
        audited_enrolls >= enrolled.len() + tickets.len() + unknown,
        "every acknowledged enrollment has its audit event"
    );
}

/// What an operator sees with Redis down: the server's NOT_SERVING line and
/// the CLI name the Redis (without a password) and the cause, each once.
#[tokio::test]
async fn redis_down_is_reported_with_its_url_and_cause_once() {
    let mut app = spawn_app().await;
    let (_server, log) = app.spawn_binary("[logging]\nformat = \"json\"\n").await;
    let port = app.redis.server().port();
    let named = format!("redis at redis://127.0.0.1:{port}");
    app.redis.server().stop().await;

    let cli = app.run_cli(&["audit", "verify"]).await;
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success(), "{stderr}");
    assert!(stderr.contains(&named), "{stderr}");
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "the cause once: {stderr}"
    );

    let mut line = None;
    for _ in 0..400 {
        let text = std::fs::read_to_string(&log).unwrap();
        line = text
            .lines()
            .find(|l| l.contains("redis unreachable: NOT_SERVING"))
            .map(str::to_owned);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let line = line.expect("NOT_SERVING was logged");
    eprintln!("CLI: {}\nserver: {line}", stderr.trim());
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
    assert!(
        line.contains(&named) && line.contains(" is unavailable: "),
        "the URL and the cause: {line}"
    );
}
