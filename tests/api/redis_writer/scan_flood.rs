//! Scan flood (#25, item 5): bounded work per call, even for calls whose caller
//! hangs up at once. Calls run detached (to their end, holding their in-flight
//! permit), so a call whose cost grows with the tenant's retained log let one
//! certificate, well within its rate, hold every permit: `GetSubjectRecord`
//! read the whole log to count one subject's events, `VerifyChain{full}` walks
//! it, and a caller that hangs up and calls again stacks up walks. All tenants
//! then got UNAVAILABLE.
//!
//! The attack here is an API caller's, not a Redis writer's; a Redis writer
//! only stands in for 180 days of traffic (copies of a real event appended
//! with XADD make the log long quickly). The tests check each bound:
//! `GetSubjectRecord` counts from a per-subject index written with the events
//! (exact, and blind to the log's length), one `VerifyChain` walk per tenant at
//! a time (others get RESOURCE_EXHAUSTED with a `retry-after` hint), a per-caller
//! share of the in-flight permits, a request body that stalls releasing its
//! permit at `limits.request_timeout_ms`, and, all together, another tenant's
//! verifies staying fast and never UNAVAILABLE while one certificate floods.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use facevault::crypto::sealing::SealedFor;
use facevault::proto::audit_log_client::AuditLogClient;
use facevault::proto::face_vault_client::FaceVaultClient;
use facevault::proto::{self, AuditEvent};
use prost::Message as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::Code;
use tonic::transport::Channel;

use super::stream_events;
use crate::audit::auditor;
use crate::flood::{client_of, on_own_thread, p50, p99, while_cores_busy};
use crate::helpers::*;

fn events_key(tenant: &str) -> String {
    format!("fv:audit:{{{tenant}}}:events")
}

fn ms(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().unwrap();
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// Makes the tenant's log `copies` entries longer, as 180 days of traffic
/// would: copies of its first event naming `subject_ref` (or its first event),
/// appended with fresh stream ids.
async fn lengthen_log(app: &TestApp, tenant: &str, subject_ref: Option<&str>, copies: usize) {
    let mut redis = app.redis().await;
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(events_key(tenant))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (_, fields) = entries
        .iter()
        .find(|(_, fields)| {
            let e = &fields.iter().find(|(k, _)| k == "e").unwrap().1;
            let event = AuditEvent::decode(e.as_slice()).unwrap();
            subject_ref.is_none_or(|r| event.subject_ref == r)
        })
        .expect("no event to copy")
        .clone();
    for chunk in (0..copies).collect::<Vec<_>>().chunks(2_000) {
        let mut pipe = redis::pipe();
        for _ in chunk {
            let cmd = pipe.cmd("XADD").arg(events_key(tenant)).arg("*");
            for (k, v) in &fields {
                cmd.arg(k).arg(v.as_slice());
            }
            cmd.ignore();
        }
        let () = pipe.query_async(&mut redis).await.unwrap();
    }
}

async fn subject_record(client: &mut FaceVaultClient<Channel>, id: &str) -> proto::SubjectRecord {
    client
        .get_subject_record(proto::GetSubjectRecordRequest {
            subject_id: id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn subject_record_counts_each_event_of_the_subject_without_reading_the_log() {
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    let alice = face(1);
    let enrolled = app.enroll(&mut demo, "alice", &alice).await;
    let bob = face(2);
    app.enroll(&mut demo, "bob", &bob).await;
    for i in 0..5 {
        app.verify(&mut demo, "alice", &capture_of(&alice, 0.05, i))
            .await
            .unwrap();
    }
    for i in 0..3 {
        app.verify(&mut demo, "bob", &capture_of(&bob, 0.05, 10 + i))
            .await
            .unwrap();
    }
    // Every call's event is in Redis before its answer: the counts are exact.
    let of_alice = |events: &[AuditEvent]| -> Vec<AuditEvent> {
        events
            .iter()
            .filter(|e| e.subject_ref == enrolled.subject_ref)
            .cloned()
            .collect()
    };
    let logged = of_alice(&stream_events(&app, "demo").await);
    assert_eq!(logged.len(), 6, "enroll and five verifies");
    let record = subject_record(&mut demo, "alice").await;
    assert_eq!(record.audit_events, 6);
    let last_verify = logged.iter().rev().find(|e| e.op == "Verify").unwrap();
    assert_eq!(ms(&record.last_verified_at), ms(&last_verify.time));
    // The call itself is an event of the subject, counted by the next one.
    let record = subject_record(&mut demo, "alice").await;
    assert_eq!(record.audit_events, 7);
    let bob_record = subject_record(&mut demo, "bob").await;
    assert_eq!(bob_record.audit_events, 4, "enroll and three verifies");

    // The index, not the log: 20,000 more entries naming alice (a long log
    // of her events, as far as a walk could tell) change nothing.
    lengthen_log(&app, "demo", Some(&enrolled.subject_ref), 20_000).await;
    let started = Instant::now();
    let record = subject_record(&mut demo, "alice").await;
    println!(
        "GetSubjectRecord over a log of 20,000+ entries: {:.2?}, {} events counted",
        started.elapsed(),
        record.audit_events
    );
    assert_eq!(record.audit_events, 8);

    // Counters per day, not an entry per event: 20,009 events of alice's
    // (real or forged into the stream) are two fields of today's counters.
    let day = now_ms() / 86_400_000;
    let today = format!("fv:audit:{{demo}}:subjects:{day}");
    let mut redis = app.redis().await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&today)
        .query_async(&mut redis)
        .await
        .unwrap();
    let of_alice: Vec<_> = fields
        .iter()
        .filter(|f| f.ends_with(enrolled.subject_ref.as_str()))
        .collect();
    assert!(of_alice.len() <= 2, "{of_alice:?}");

    // It covers the retention only: a day older than 180 days is not counted,
    // and each day's counters expire with the retention.
    let old_day = format!("fv:audit:{{demo}}:subjects:{}", day - 181);
    let _: i64 = redis::cmd("HINCRBY")
        .arg(&old_day)
        .arg(format!("c:{}", enrolled.subject_ref))
        .arg(1000)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(subject_record(&mut demo, "alice").await.audit_events, 9);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&today)
        .query_async(&mut redis)
        .await
        .unwrap();
    let retention = 180 * 86_400_000;
    let day_ends_in = (day + 1) * 86_400_000 - now_ms();
    assert!(
        (ttl - (retention + day_ends_in)).abs() < 60_000,
        "today's counters expire {ttl} ms from now"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_chain_walks_a_tenants_log_once_at_a_time() {
    let app = spawn_app().await;
    let mut demo = app.app_client().await;
    app.enroll(&mut demo, "alice", &face(1)).await;
    lengthen_log(&app, "demo", None, 60_000).await;
    // A walk of a log this broken answers with every break (some MiB).
    let mut first = auditor(&app).await.max_decoding_message_size(64 << 20);
    let mut second = auditor(&app).await.max_decoding_message_size(64 << 20);

    // A caller that hangs up at once: its walk goes on, detached, and holds
    // the tenant's turn until it ends.
    let hung_up = tokio::time::timeout(
        Duration::from_millis(100),
        first.verify_chain(proto::VerifyChainRequest { full: true }),
    )
    .await;
    assert!(hung_up.is_err(), "a walk of 60,000 entries took < 100 ms");
    let started = Instant::now();
    let refused = second
        .verify_chain(proto::VerifyChainRequest { full: true })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("already running"), "{refused:?}");
    let retry_after: u64 = refused
        .metadata()
        .get("retry-after")
        .expect("no retry-after hint")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");

    // Once the walk is over, the next one runs.
    let report = loop {
        match second
            .verify_chain(proto::VerifyChainRequest { full: true })
            .await
        {
            Ok(report) => break report.into_inner(),
            Err(s) if s.code() == Code::ResourceExhausted => {
                assert!(started.elapsed() < Duration::from_secs(60), "{s:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    };
    println!(
        "the detached walk ended within {:.2?} of the refusal (retry-after {retry_after} s); \
         the next one checked {} events",
        started.elapsed(),
        report.events_checked
    );
    assert!(report.events_checked > 60_000);
    // The copies repeat one event: the walk reports them.
    assert!(!report.intact);
}

/// The aggregated refusals of `tenant` for `reason`, once there are some (or
/// after a few seconds, none).
async fn refusals(app: &TestApp, tenant: &str, reason: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counted: u64 = stream_events(app, tenant)
            .await
            .iter()
            .filter(|e| e.op == "Admission" && e.detail == reason)
            .map(|e| e.count)
            .sum();
        if counted > 0 || Instant::now() > deadline {
            return counted;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_holds_at_most_its_share_of_the_calls_in_flight() {
    // max_in_flight 8: by default a caller's share is a quarter, 2.
    let app = spawn_app_with(AppOptions {
        extra_config: "[limits]\nmax_in_flight = 8\n[audit]\nrefusal_window_secs = 1\n".to_owned(),
        redis_timeout_ms: 5000,
        ..AppOptions::default()
    })
    .await;
    let client = app.app_client().await;
    let values = [face(1), face(2)];
    let subjects = ["alice", "bob"];
    for (subject, values) in subjects.iter().zip(&values) {
        app.enroll(&mut client.clone(), subject, values).await;
    }
    let mut other = app.other_tenant_client().await;

    // Redis holds every call for a moment, so calls stay in flight.
    app.pause_redis(1500, "ALL").await;
    let mut slow = Vec::new();
    // Two subjects: one verification per subject runs at a time.
    for (i, (subject, values)) in subjects.iter().zip(&values).enumerate() {
        let mut c = client.clone();
        let r = app.verify_request(subject, &capture_of(values, 0.05, i as u64), "login");
        slow.push(tokio::spawn(async move { c.verify(r).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = client
        .clone()
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("in flight"), "{refused:?}");
    // Another caller still has room.
    let admitted = tokio::spawn(async move {
        other
            .get_sealing_keys(proto::GetSealingKeysRequest {})
            .await
    });
    for s in slow {
        s.await.unwrap().unwrap();
    }
    admitted.await.unwrap().unwrap();
    // The two ended: the caller has its share again.
    client
        .clone()
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap();
    // Counted per window, like the rate limit.
    assert_eq!(refusals(&app, "demo", "caller-in-flight").await, 1);
}

/// TLS as the app's client: the dev CA, the app's certificate, HTTP/2.
fn app_connector(app: &TestApp) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&app.pki.ca_cert).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&app.pki.app.0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&app.pki.app.1).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_releases_its_permit_at_the_request_timeout() {
    const TIMEOUT_MS: u64 = 400;
    let app = spawn_app_with(AppOptions {
        extra_config: format!(
            "[limits]\nmax_in_flight = 2\nmax_in_flight_per_caller = 2\n\
             request_timeout_ms = {TIMEOUT_MS}\n"
        ),
        ..AppOptions::default()
    })
    .await;
    let mut other = app.other_tenant_client().await;

    // Two calls whose headers arrive and whose body never does, on a raw
    // HTTP/2 connection kept open (and its streams too) to the end.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let tls = app_connector(&app)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (h2, connection): (h2::client::SendRequest<tonic::codegen::Bytes>, _) =
        h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut h2 = h2.clone().ready().await.unwrap();
        let request =
            http::Request::post("https://localhost/facevault.v1.FaceVault/GetSealingKeys")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
        stalled.push(h2.send_request(request, false).unwrap());
    }
    let stalled_at = Instant::now();

    // They hold both permits: another tenant is shed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shed = other
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");

    // Until the request timeout: then both calls end and free their permits.
    let freed = loop {
        match other
            .get_sealing_keys(proto::GetSealingKeysRequest {})
            .await
        {
            Ok(_) => break stalled_at.elapsed(),
            Err(s) if s.code() == Code::Unavailable => {
                assert!(
                    stalled_at.elapsed() < Duration::from_secs(10),
                    "the stalled calls still hold their permits after {:?}",
                    stalled_at.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    };
    println!("stalled bodies: permits free again {freed:.2?} after the headers");
    assert!(
        freed >= Duration::from_millis(TIMEOUT_MS - 50)
            && freed < Duration::from_millis(3 * TIMEOUT_MS),
        "freed after {freed:?}"
    );
    // Each stalled caller was answered DEADLINE_EXCEEDED.
    for (response, _body) in stalled {
        let response = response.await.unwrap();
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(b"4".as_slice()),
            "{response:?}"
        );
    }
    connection.abort();
}

/// The victim's verifies (tenant other), one every `pace`, until `stop` is set
/// or the probes run out: each one's latency, and the codes of those that failed.
async fn victim_verifies(
    mut client: FaceVaultClient<Channel>,
    probes: Vec<proto::VerifyRequest>,
    pace: Duration,
    stop: Option<Arc<AtomicBool>>,
) -> (Vec<Duration>, Vec<Code>) {
    let mut next = tokio::time::Instant::now();
    let (mut latencies, mut failures) = (Vec::new(), Vec::new());
    for probe in probes {
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + pace;
        if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let started = Instant::now();
        match client.verify(probe).await {
            Ok(answer) => {
                latencies.push(started.elapsed());
                assert_eq!(answer.into_inner().decision(), proto::Decision::Match);
            }
            Err(status) => failures.push(status.code()),
        }
    }
    (latencies, failures)
}

fn victim_probes(app: &TestApp, base: &[f32], seed: u64, n: usize) -> Vec<proto::VerifyRequest> {
    (0..n)
        .map(|i| proto::VerifyRequest {
            subject_id: "victim".to_owned(),
            probe: Some(app.seal(
                SealedFor::Verify,
                "other",
                "victim",
                &capture_of(base, 0.2, seed + i as u64),
            )),
            purpose: "login".to_owned(),
        })
        .collect()
}

const VICTIM_PACE: Duration = Duration::from_millis(25);
/// Attacking tasks per certificate (app: GetSubjectRecord; auditor:
/// VerifyChain{full}), each calling again as soon as it hung up.
const ATTACKERS: usize = 8;
/// How long an attacker waits before it hangs up.
const HANG_UP_AFTER: Duration = Duration::from_millis(10);

/// One certificate per role of tenant demo, each call dropped after
/// `HANG_UP_AFTER`, until `stop`: the codes of the calls answered in time, and
/// how many were hung up on.
async fn scan_flood(
    app_client: FaceVaultClient<Channel>,
    auditor: AuditLogClient<Channel>,
    stop: Arc<AtomicBool>,
) -> (HashMap<Code, usize>, usize) {
    let mut tasks = Vec::new();
    for i in 0..2 * ATTACKERS {
        let (mut app_client, mut auditor) = (app_client.clone(), auditor.clone());
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut codes, mut hung_up) = (HashMap::<Code, usize>::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let answer = if i % 2 == 0 {
                    let call = app_client.get_subject_record(proto::GetSubjectRecordRequest {
                        subject_id: "alice".to_owned(),
                    });
                    tokio::time::timeout(HANG_UP_AFTER, call)
                        .await
                        .map(|r| r.map(|_| ()))
                } else {
                    let call = auditor.verify_chain(proto::VerifyChainRequest { full: true });
                    tokio::time::timeout(HANG_UP_AFTER, call)
                        .await
                        .map(|r| r.map(|_| ()))
                };
                match answer {
                    Ok(Ok(())) => *codes.entry(Code::Ok).or_default() += 1,
                    Ok(Err(status)) => *codes.entry(status.code()).or_default() += 1,
                    Err(_) => hung_up += 1,
                }
                // A refusal comes back at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (codes, hung_up)
        }));
    }
    let (mut codes, mut hung_up) = (HashMap::new(), 0);
    for task in tasks {
        let (c, h) = task.await.unwrap();
        for (code, n) in c {
            *codes.entry(code).or_default() += n;
        }
        hung_up += h;
    }
    (codes, hung_up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_flood_that_hangs_up_does_not_starve_another_tenant() {
    let _turn = HEAVY_TESTS.lock().await;
    // 16 permits; by default one caller's share is 4.
    let app = spawn_app_with(AppOptions {
        extra_config: "[limits]\nmax_in_flight = 16\n".to_owned(),
        ..AppOptions::default()
    })
    .await;
    let port = app.port;
    let mut demo = app.app_client().await;
    let alice = app.enroll(&mut demo, "alice", &face(1)).await;
    // A long retained log, most of it alice's.
    lengthen_log(&app, "demo", Some(&alice.subject_ref), 60_000).await;
    let base = face(7);
    app.other_tenant_client()
        .await
        .enroll(proto::EnrollRequest {
            subject_id: "victim".to_owned(),
            embedding: Some(app.seal(SealedFor::Enroll, "other", "victim", &base)),
            consent: Some(consent(&["login"])),
            replace: false,
        })
        .await
        .unwrap();
    let victim_tls = app.tls_config(&app.pki.other.0, &app.pki.other.1);

    // The victim idle, then on cores kept busy by spinning threads (what a
    // busy machine alone costs it: the attack keeps both cores busy too).
    let probes = victim_probes(&app, &base, 1_000, 80);
    let tls = victim_tls.clone();
    let (idle, failed) = on_own_thread(move || async move {
        victim_verifies(client_of(port, tls).await, probes, VICTIM_PACE, None).await
    })
    .await
    .unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    let probes = victim_probes(&app, &base, 2_000, 120);
    let tls = victim_tls.clone();
    let (saturated, failed) = while_cores_busy(
        3,
        on_own_thread(move || async move {
            victim_verifies(client_of(port, tls).await, probes, VICTIM_PACE, None).await
        }),
    )
    .await
    .unwrap();
    assert!(failed.is_empty(), "{failed:?}");

    // The flood, and the victim's verifies while it lasts.
    let app_client = app.app_client().await;
    let auditor = auditor(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flood_stop = stop.clone();
    let flood = on_own_thread(move || scan_flood(app_client, auditor, flood_stop));
    // The flood fills what it can before the victim starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probes = victim_probes(&app, &base, 3_000, 160);
    let tls = victim_tls.clone();
    let (during, failed) = on_own_thread(move || async move {
        victim_verifies(client_of(port, tls).await, probes, VICTIM_PACE, None).await
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (codes, hung_up) = flood.await.unwrap();

    let baseline = p99(&idle)
        .max(p99(&saturated))
        .max(Duration::from_millis(2));
    let budget = 3 * baseline;
    println!(
        "flood: {hung_up} calls hung up on, answered in time {codes:?}\n\
         victim: idle p50 {:.2?} p99 {:.2?} ({}); cores busy p50 {:.2?} p99 {:.2?} ({}); \
         during the flood p50 {:.2?} p99 {:.2?} ({} answered, {} failed); budget {budget:.2?}",
        p50(&idle),
        p99(&idle),
        idle.len(),
        p50(&saturated),
        p99(&saturated),
        saturated.len(),
        if during.is_empty() {
            Duration::ZERO
        } else {
            p50(&during)
        },
        if during.is_empty() {
            Duration::ZERO
        } else {
            p99(&during)
        },
        during.len(),
        failed.len(),
    );
    // A real flood: thousands of calls, and the walks hung up on (a walk of
    // 60,000 entries outlasts the 10 ms hang-up on any machine); how many of
    // the quick GetSubjectRecord calls are hung up on depends on the machine.
    let calls = hung_up + codes.values().sum::<usize>();
    assert!(
        calls > 1_000 && hung_up > 0,
        "the flood made {calls} calls and hung up on {hung_up}"
    );
    let mut failures: HashMap<Code, usize> = HashMap::new();
    for code in &failed {
        *failures.entry(*code).or_default() += 1;
    }
    assert!(
        failed.is_empty(),
        "{} of the victim's verifies failed during the flood: {failures:?}",
        failed.len()
    );
    assert!(
        p99(&during) <= budget,
        "the victim's p99 went from {baseline:?} to {:?}",
        p99(&during)
    );
}
