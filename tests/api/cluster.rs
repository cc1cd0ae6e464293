//! A real Redis Cluster (3 primaries, one replica each, made by `redis-cli --cluster
//! create`): the core and lifecycle flows, and a primary killed under load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use facevault::client::{PayloadSpec, SealingTarget, seal_embedding};
use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::devstack::redis_server::RedisCluster;
use facevault::proto::face_vault_client::FaceVaultClient;
use facevault::proto::{self, DeletionState};
use facevault::vault::verify_receipt;
use tonic::Code;
use tonic::transport::Channel;

use crate::audit::{auditor, verify_chain};
use crate::helpers::*;
use crate::lifecycle::{cancel, receipt_key, wait_completed, withdraw};

fn cluster(app: &TestApp) -> &RedisCluster {
    match &app.redis {
        TestRedis::Cluster(cluster) => cluster,
        TestRedis::Standalone(_) | TestRedis::Tls { .. } => unreachable!("a cluster app"),
    }
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A running node's connection (any will answer cluster-wide questions).
async fn any_node(app: &TestApp) -> redis::aio::MultiplexedConnection {
    let port = cluster(app)
        .nodes()
        .iter()
        .find(|n| n.is_running())
        .unwrap()
        .port();
    node(port).await
}

/// Slot ranges and the port of the primary serving each, as the cluster says now.
async fn slot_primaries(app: &TestApp) -> Vec<(u16, u16, u16)> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut any_node(app).await)
        .await
        .unwrap();
    slots
        .into_iter()
        .map(|range| {
            let redis::Value::Array(items) = range else {
                panic!("CLUSTER SLOTS: {range:?}")
            };
            let int = |v: &redis::Value| match v {
                redis::Value::Int(i) => *i as u16,
                other => panic!("CLUSTER SLOTS: {other:?}"),
            };
            let redis::Value::Array(primary) = &items[2] else {
                panic!("CLUSTER SLOTS: {items:?}")
            };
            (int(&items[0]), int(&items[1]), int(&primary[1]))
        })
        .collect()
}

async fn primary_of(app: &TestApp, key: &str) -> u16 {
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut any_node(app).await)
        .await
        .unwrap();
    slot_primaries(app)
        .await
        .into_iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(.., port)| port)
        .unwrap()
}

/// Every key on every primary, by primary port.
async fn keys_by_primary(app: &TestApp) -> BTreeMap<u16, Vec<String>> {
    let mut out = BTreeMap::new();
    for (.., port) in slot_primaries(app).await {
        if out.contains_key(&port) {
            continue;
        }
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut node(port).await)
            .await
            .unwrap();
        out.insert(port, keys);
    }
    out
}

fn subject_key(subject_ref: &str) -> String {
    format!("fv:{{demo:{subject_ref}}}:templates")
}

/// `redis_timeout_ms` bounds every call and its `WAIT`: the failover test keeps
/// it short so a dead primary is seen quickly; the flows test gives a replica on a
/// loaded CI machine room to acknowledge.
fn cluster_app(replica_acks: u32, redis_timeout_ms: u64) -> AppOptions {
    AppOptions {
        redis_cluster: true,
        redis_replica_acks: replica_acks,
        redis_timeout_ms,
        extra_config:
            "[deletion]\npoll_interval_ms = 20\n\n[audit]\ncheckpoint_interval_secs = 1\n"
                .to_owned(),
        ..AppOptions::default()
    }
}

#[tokio::test]
async fn a_redis_cluster_runs_the_core_and_lifecycle_flows() {
    let app = spawn_app_with(cluster_app(1, 5000)).await;
    let mut client = app.app_client().await;

    let mut refs = Vec::new();
    for i in 0..24 {
        let subject = format!("subject-{i}");
        let enrolled = client
            .enroll(app.enroll_request(&subject, &face(i), &["login", "payment"], false))
            .await
            .unwrap()
            .into_inner();
        refs.push(enrolled.subject_ref);
        let verdict = app
            .verify(&mut client, &subject, &capture_of(&face(i), 0.2, 100 + i))
            .await
            .unwrap();
        assert_eq!(verdict.decision(), proto::Decision::Match);
    }
    let impostor = app
        .verify(&mut client, "subject-0", &face(999))
        .await
        .unwrap();
    assert_eq!(impostor.decision(), proto::Decision::NoMatch);

    // Subjects spread over all three primaries, each subject's keys on one of them.
    let keys = keys_by_primary(&app).await;
    assert_eq!(keys.len(), 3);
    for (port, held) in &keys {
        assert!(
            held.iter().any(|k| k.ends_with(":templates")),
            "primary {port} holds no subject: {held:?}"
        );
    }
    for subject_ref in &refs {
        let holders: Vec<_> = keys
            .iter()
            .filter(|(_, held)| held.iter().any(|k| k.contains(subject_ref.as_str())))
            .collect();
        assert_eq!(holders.len(), 1, "one subject, one primary");
    }

    // A replayed envelope is refused: the replay set sits in the subject's slot.
    let request = app.verify_request("subject-3", &capture_of(&face(3), 0.2, 7), "login");
    client.verify(request.clone()).await.unwrap();
    assert_eq!(code(client.verify(request).await), Code::InvalidArgument);

    // Consent withdrawal: one purpose keeps the template, the last erases it.
    let t = withdraw(&mut client, "subject-4", &["payment"])
        .await
        .unwrap();
    assert_eq!(t.state(), DeletionState::Completed);
    let t = withdraw(&mut client, "subject-4", &["login"])
        .await
        .unwrap();
    let key = receipt_key(&mut client).await;
    assert!(verify_receipt(&key, t.receipt.as_ref().unwrap()).is_some());

    // Cancellation: refused at once, erased by the worker, with a signed receipt.
    let ticket = cancel(&mut client, "subject-5").await;
    let r = app
        .verify(&mut client, "subject-5", &capture_of(&face(5), 0.2, 8))
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    let done = wait_completed(&mut client, &ticket.ticket_id).await;
    assert!(verify_receipt(&key, done.receipt.as_ref().unwrap()).is_some());

    let keys = keys_by_primary(&app).await;
    for gone in [&refs[4], &refs[5]] {
        for (port, keys) in &keys {
            let traces: Vec<String> = keys
                .iter()
                .filter(|k| k.contains(gone.as_str()))
                .cloned()
                .collect();
            let left = erasure_residue(&mut node(*port).await, traces).await;
            assert!(left.is_empty(), "{left:?}");
        }
    }

    let report = client
        .get_compliance_report(proto::GetComplianceReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.tenant_subjects, 22);
    assert_eq!(report.consents_by_purpose.get("login"), Some(&22));
    assert_eq!(report.consents_by_purpose.get("payment"), Some(&22));
    assert_eq!(report.deletions_pending, 0);

    assert!(verify_chain(&mut auditor(&app).await).await.intact);

    // The operator's CLI finds every tenant's audit stream, wherever its slot is.
    let mut other = app.other_tenant_client().await;
    let probe = app.seal(SealedFor::Enroll, "other", "x", &face(50));
    other
        .enroll(proto::EnrollRequest {
            subject_id: "x".to_owned(),
            embedding: Some(probe),
            consent: Some(consent(&["login"])),
            replace: false,
        })
        .await
        .unwrap();
    // The CLI checks the tenants signed heads name: wait for the next heads.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let cli = app.run_cli(&["audit", "verify"]).await;
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    for tenant in ["demo", "other"] {
        assert!(
            stdout.contains(&format!("{tenant}: intact")),
            "{tenant}: {stdout}"
        );
    }
}

/// What the load saw while a primary was killed.
#[derive(Default)]
struct LoadReport {
    /// (subject, face seed, when) of every enrollment acknowledged.
    acknowledged: Vec<(String, u64, Instant)>,
    refused: usize,
    slowest_refusal: Duration,
}

/// Enrolls new subjects in a loop until `stop`, recording what was acknowledged.
async fn enroll_load(
    mut client: FaceVaultClient<Channel>,
    target: SealingTarget,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let subject = format!("load-{n}");
        let seed = 10_000 + n;
        let embedding = seal_embedding(
            &target,
            &PayloadSpec {
                op: SealedFor::Enroll,
                tenant: "demo",
                subject_id: &subject,
                model: MODEL,
                values: &face(seed),
                sealed_at_unix_ms: now_ms(),
            },
        )
        .unwrap();
        let started = Instant::now();
        let r = client
            .enroll(proto::EnrollRequest {
                subject_id: subject.clone(),
                embedding: Some(embedding),
                consent: Some(consent(&["login"])),
                replace: false,
            })
            .await;
        match r {
            Ok(_) => report.acknowledged.push((subject, seed, Instant::now())),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                report.refused += 1;
                report.slowest_refusal = report.slowest_refusal.max(started.elapsed());
            }
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failover_loses_no_acknowledged_write() {
    let _turn = HEAVY_TESTS.lock().await;
    let mut app = spawn_app_with(cluster_app(1, 1000)).await;
    let mut client = app.app_client().await;

    // Subjects on every primary before the failure.
    let mut before = Vec::new();
    for i in 0..24 {
        let subject = format!("subject-{i}");
        let enrolled = app.enroll(&mut client, &subject, &face(i)).await;
        let primary = primary_of(&app, &subject_key(&enrolled.subject_ref)).await;
        before.push((subject, i, primary));
    }
    // The victim holds subjects but neither the audit stream nor the deletion queue:
    // while those fail over, every call is refused (fail closed), which proves less.
    let audit = primary_of(&app, "fv:audit:{demo}:events").await;
    let deletions = primary_of(&app, "fv:{fv-deletion}:queue").await;
    let (victim_subject, victim_seed, victim) = before
        .iter()
        .find(|(.., p)| *p != audit && *p != deletions)
        .cloned()
        .expect("24 subjects cover every primary");

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(enroll_load(
        app.app_client().await,
        app.target(Suite::X25519Sha256Aes256Gcm).clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed_at = Instant::now();
    app.redis.cluster().node_mut(victim).unwrap().stop().await;

    // Reads on the victim's slots come back once its replica is promoted.
    let mut refused_reads = 0;
    let recovered = loop {
        let started = Instant::now();
        let capture = capture_of(&face(victim_seed), 0.2, 1);
        match app.verify(&mut client, &victim_subject, &capture).await {
            Ok(v) => {
                assert_eq!(v.decision(), proto::Decision::Match);
                break killed_at.elapsed();
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    started.elapsed() < Duration::from_millis(2500),
                    "a refusal took {:?}",
                    started.elapsed()
                );
                refused_reads += 1;
            }
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The promoted primary has no replica yet: writes to its slots cannot be
    // replicated, so they are refused, never acknowledged.
    let rewrite =
        |app: &TestApp| app.enroll_request(&victim_subject, &face(victim_seed), &["login"], true);
    assert_eq!(code(client.enroll(rewrite(&app)).await), Code::Unavailable);

    // The old primary comes back as a replica; writes are acknowledged again.
    app.redis
        .cluster()
        .node_mut(victim)
        .unwrap()
        .restart()
        .await
        .unwrap();
    let healed_at = Instant::now();
    while let Err(status) = client.enroll(rewrite(&app)).await {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(healed_at.elapsed() < Duration::from_secs(30), "not healed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let healed = healed_at.elapsed();

    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();

    // Nothing acknowledged was lost: every enrollment still verifies.
    let acknowledged: Vec<(String, u64)> = before
        .iter()
        .map(|(subject, seed, _)| (subject.clone(), *seed))
        .chain(
            report
                .acknowledged
                .iter()
                .map(|(subject, seed, _)| (subject.clone(), *seed)),
        )
        .collect();
    // The other primaries kept taking writes while the victim was down.
    let while_down = report
        .acknowledged
        .iter()
        .filter(|(.., at)| *at > killed_at && *at < healed_at)
        .count();
    let mut found = 0;
    for (subject, seed) in &acknowledged {
        let v = app
            .verify(&mut client, subject, &capture_of(&face(*seed), 0.2, 2))
            .await
            .unwrap_or_else(|s| panic!("{subject}: {s:?}"));
        assert_eq!(v.decision(), proto::Decision::Match, "{subject}");
        found += 1;
    }
    eprintln!(
        "failover: reads back {recovered:?} after the kill ({refused_reads} refused), \
         writes {healed:?} after the old primary's return; load: {} enrollments \
         acknowledged ({while_down} while a primary was down), {} refused (slowest \
         refusal {:?}); found {found} of {} acknowledged",
        report.acknowledged.len(),
        report.refused,
        report.slowest_refusal,
        acknowledged.len(),
    );
    assert_eq!(found, acknowledged.len());
    assert!(report.refused > 0 && while_down > 0);
    assert!(verify_chain(&mut auditor(&app).await).await.intact);
}
