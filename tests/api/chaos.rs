//! Chaos: seeded random load (enroll, verify, withdraw, cancel, delete) on 200
//! subjects, with client deadlines of a few milliseconds, calls whose connection
//! is dropped mid-call, and a Redis SIGKILL and restart in the middle. Once the
//! load stops and the reconciler has had its settle time, every change must be
//! whole (ledger = subjects holding templates, every cancellation mark has its
//! ticket) and audited (every held template has an allowed Enroll event, the
//! chain is intact), and the service must answer normally.
//!
//! The seed fixes which subject and which operation each worker picks, the
//! deadlines and the cut-off times; thread scheduling and the crash moment are
//! not reproducible, so a replay with the printed seed reruns the same plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use facevault::client::{PayloadSpec, SealingTarget, seal_embedding};
use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::proto::audit_log_client::AuditLogClient;
use facevault::proto::face_vault_client::FaceVaultClient;
use facevault::proto::{self, AuditEvent, Decision};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::audit::auditor;
use crate::helpers::*;

const SEED: u64 = 0x5eed_c4a0;
/// Replays (or explores) another plan: `CHAOS_SEED=0x… cargo test --test api chaos`.
const SEED_VAR: &str = "CHAOS_SEED";
const WORKERS: u64 = 6;
const SUBJECTS: u64 = 200;
const LOAD: Duration = Duration::from_secs(10);
const CRASH_AT: Duration = Duration::from_secs(5);
/// How long Redis stays dead before it is started again.
const OUTAGE: Duration = Duration::from_millis(400);
/// The reconciler leaves intents younger than 1 s alone and runs every 100 ms.
const SETTLE: Duration = Duration::from_millis(1500);
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);
/// Each worker starts at most one call per PACE: 6 workers stay under the
/// per-caller rate limit (1000/s), so refusals come from the chaos, not from it.
const PACE: Duration = Duration::from_micros(8_500);
const PURPOSES: [&str; 2] = ["login", "payment"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Enroll,
    Verify,
    Withdraw,
    Cancel,
    Delete,
}

impl Op {
    /// Weighted so that cancellations, which are for good, do not freeze most
    /// subjects within the run.
    fn pick(rng: &mut StdRng) -> Self {
        match rng.random_range(0..100) {
            0..40 => Self::Enroll,
            40..70 => Self::Verify,
            70..82 => Self::Withdraw,
            82..85 => Self::Cancel,
            _ => Self::Delete,
        }
    }
}

/// How a call ended, as its caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Ok,
    /// DEADLINE_EXCEEDED or CANCELLED: the client deadline cut it short.
    Deadline,
    Unavailable,
    /// Any other refusal (its code is counted apart).
    Refused,
    /// The connection was dropped before an answer came.
    Dropped,
}

#[derive(Default)]
struct Tally {
    calls: BTreeMap<(Op, Class), u64>,
    refusal_codes: BTreeMap<(Op, String), u64>,
    /// Fresh connections that could not be made (counted as Unavailable).
    connect_failures: u64,
    /// subject_ref → subject id, learnt from answers (for failure messages).
    names: BTreeMap<String, String>,
}

impl Tally {
    fn add(&mut self, op: Op, class: Class) {
        *self.calls.entry((op, class)).or_default() += 1;
    }

    fn count(&self, op: Option<Op>, class: Option<Class>) -> u64 {
        self.calls
            .iter()
            .filter(|((o, c), _)| op.is_none_or(|op| op == *o) && class.is_none_or(|cl| cl == *c))
            .map(|(_, n)| n)
            .sum()
    }

    fn merge(&mut self, other: Tally) {
        for (k, n) in other.calls {
            *self.calls.entry(k).or_default() += n;
        }
        for (k, n) in other.refusal_codes {
            *self.refusal_codes.entry(k).or_default() += n;
        }
        self.names.extend(other.names);
        self.connect_failures += other.connect_failures;
    }
}

fn seed() -> u64 {
    let Ok(text) = std::env::var(SEED_VAR) else {
        return SEED;
    };
    let text = text.trim().replace('_', "");
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .unwrap_or_else(|_| panic!("{SEED_VAR} is not a number: {text}"))
}

/// What every worker needs, owned (the test keeps `&mut app` to crash Redis).
struct Load {
    seed: u64,
    target: SealingTarget,
    tls: ClientTlsConfig,
    url: String,
    faces: Vec<Vec<f32>>,
    stop: AtomicBool,
}

impl Load {
    fn seal(&self, op: SealedFor, subject: &str, values: &[f32]) -> proto::SealedEmbedding {
        seal_embedding(
            &self.target,
            &PayloadSpec {
                op,
                tenant: "demo",
                subject_id: subject,
                model: MODEL,
                values,
                sealed_at_unix_ms: now_ms(),
            },
        )
        .unwrap()
    }

    async fn fresh_client(&self) -> Result<FaceVaultClient<Channel>, tonic::transport::Error> {
        let channel = Channel::from_shared(self.url.clone())
            .unwrap()
            .tls_config(self.tls.clone())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(FaceVaultClient::new(channel))
    }
}

/// One prepared call: a freshly sealed request (envelopes are single-use).
enum Call {
    Enroll(proto::EnrollRequest),
    Verify(proto::VerifyRequest),
    Withdraw(proto::WithdrawConsentRequest),
    Cancel(proto::CancelAccountRequest),
    Delete(proto::DeleteSubjectRequest),
}

fn prepare(load: &Load, rng: &mut StdRng, op: Op, index: usize) -> Call {
    let subject = format!("c{index}");
    match op {
        Op::Enroll => {
            let values = capture_of(&load.faces[index], 0.2, rng.random());
            Call::Enroll(proto::EnrollRequest {
                embedding: Some(load.seal(SealedFor::Enroll, &subject, &values)),
                subject_id: subject,
                consent: Some(consent(&PURPOSES)),
                replace: rng.random_bool(0.5),
            })
        }
        Op::Verify => {
            let values = capture_of(&load.faces[index], 0.2, rng.random());
            Call::Verify(proto::VerifyRequest {
                probe: Some(load.seal(SealedFor::Verify, &subject, &values)),
                subject_id: subject,
                purpose: PURPOSES[rng.random_range(0..PURPOSES.len())].to_owned(),
            })
        }
        Op::Withdraw => Call::Withdraw(proto::WithdrawConsentRequest {
            subject_id: subject,
            purposes: vec![PURPOSES[rng.random_range(0..PURPOSES.len())].to_owned()],
        }),
        Op::Cancel => Call::Cancel(proto::CancelAccountRequest {
            subject_id: subject,
            reason: "chaos".to_owned(),
        }),
        Op::Delete => Call::Delete(proto::DeleteSubjectRequest {
            subject_id: subject,
        }),
    }
}

/// Makes the call with a client deadline; returns the subject_ref an answer named.
async fn run(
    client: &mut FaceVaultClient<Channel>,
    call: Call,
    timeout: Duration,
) -> Result<String, tonic::Status> {
    fn with<T>(message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request
    }
    match call {
        Call::Enroll(m) => client
            .enroll(with(m, timeout))
            .await
            .map(|r| r.into_inner().subject_ref),
        Call::Verify(m) => client.verify(with(m, timeout)).await.map(|_| String::new()),
        Call::Withdraw(m) => client
            .withdraw_consent(with(m, timeout))
            .await
            .map(|r| r.into_inner().subject_ref),
        Call::Cancel(m) => client
            .cancel_account(with(m, timeout))
            .await
            .map(|r| r.into_inner().subject_ref),
        Call::Delete(m) => client
            .delete_subject(with(m, timeout))
            .await
            .map(|r| r.into_inner().subject_ref),
    }
}

fn classify(result: &Result<String, tonic::Status>) -> Class {
    match result {
        Ok(_) => Class::Ok,
        Err(s) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => Class::Deadline,
        Err(s) if s.code() == Code::Unavailable => Class::Unavailable,
        Err(_) => Class::Refused,
    }
}

async fn worker(load: Arc<Load>, id: u64, mut client: FaceVaultClient<Channel>) -> Tally {
    let mut rng = StdRng::seed_from_u64(load.seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut tally = Tally::default();
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !load.stop.load(Ordering::Relaxed) {
        let index = rng.random_range(0..SUBJECTS) as usize;
        let op = Op::pick(&mut rng);
        let timeout = Duration::from_millis(rng.random_range(1..=30));
        let dropped_after = rng
            .random_ratio(1, 10)
            .then(|| Duration::from_millis(rng.random_range(0..=10)));
        let call = prepare(&load, &mut rng, op, index);
        let result = match dropped_after {
            None => Some(run(&mut client, call, timeout).await),
            // A fresh connection, dropped (with its client) while the call runs.
            Some(after) => match load.fresh_client().await {
                Err(e) => {
                    tally.connect_failures += 1;
                    Some(Err(tonic::Status::unavailable(format!("connect: {e}"))))
                }
                Ok(mut fresh) => {
                    let mut task =
                        tokio::spawn(async move { run(&mut fresh, call, timeout).await });
                    match tokio::time::timeout(after, &mut task).await {
                        Ok(joined) => Some(joined.unwrap()),
                        Err(_) => {
                            task.abort();
                            None
                        }
                    }
                }
            },
        };
        let Some(result) = result else {
            tally.add(op, Class::Dropped);
            continue;
        };
        let class = classify(&result);
        tally.add(op, class);
        match result {
            Ok(subject_ref) if !subject_ref.is_empty() => {
                tally.names.insert(subject_ref, format!("c{index}"));
            }
            Ok(_) => {}
            Err(status) if class == Class::Refused => {
                *tally
                    .refusal_codes
                    .entry((op, format!("{:?}", status.code())))
                    .or_default() += 1;
            }
            Err(_) => {}
        }
        pace.tick().await;
    }
    tally
}

/// What Redis and the audit log say once the load has stopped.
#[derive(Default)]
struct Check {
    violations: Vec<String>,
    holders: BTreeSet<String>,
    ledger: BTreeSet<String>,
    cancelled: usize,
    /// Cancellation tickets whose subject no longer carries their mark, and
    /// of those, the subjects holding templates again.
    unmarked: Vec<String>,
    unmarked_holding: usize,
    intents_left: usize,
    unflagged_left: usize,
    enroll_events_checked: usize,
}

async fn keys(redis: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(redis)
        .await
        .unwrap()
}

fn subject_of<'a>(key: &'a str, suffix: &str) -> &'a str {
    key.strip_prefix("fv:{demo:")
        .and_then(|k| k.strip_suffix(suffix))
        .unwrap_or(key)
}

/// The subject's audit events of `op` ("" for all), oldest first.
async fn events_of(
    audit: &mut AuditLogClient<Channel>,
    subject_ref: &str,
    op: &str,
    until: impl Fn(&AuditEvent) -> bool,
) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_events(proto::ListEventsRequest {
                subject_ref: subject_ref.to_owned(),
                op: op.to_owned(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let found = page.events.iter().any(&until);
        events.extend(page.events);
        if found || page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

fn is_allowed_enroll(e: &AuditEvent) -> bool {
    e.op == "Enroll" && e.outcome == "allowed"
}

async fn check(app: &TestApp, audit: &mut AuditLogClient<Channel>) -> Check {
    let mut redis = app.redis().await;
    let mut c = Check {
        holders: keys(&mut redis, "fv:{demo:*}:templates")
            .await
            .iter()
            .map(|k| subject_of(k, "}:templates").to_owned())
            .collect(),
        ledger: redis::cmd("SMEMBERS")
            .arg("fv:ledger:{demo}:subjects")
            .query_async(&mut redis)
            .await
            .unwrap(),
        intents_left: redis::cmd("ZCARD")
            .arg("fv:ledger:{demo}:intents")
            .query_async(&mut redis)
            .await
            .unwrap(),
        unflagged_left: redis::cmd("ZCARD")
            .arg("fv:{fv-deletion}:unflagged")
            .query_async(&mut redis)
            .await
            .unwrap(),
        ..Check::default()
    };

    // 2. The ledger names exactly the subjects holding templates.
    for s in c.holders.difference(&c.ledger) {
        c.violations.push(format!(
            "ledger: subject {s} holds templates but is missing from fv:ledger:{{demo}}:subjects"
        ));
    }
    for s in c.ledger.difference(&c.holders) {
        c.violations.push(format!(
            "ledger: subject {s} is in fv:ledger:{{demo}}:subjects but holds no templates"
        ));
    }

    // 3. Every cancellation mark has its ticket.
    for key in keys(&mut redis, "fv:{demo:*}:state").await {
        let ticket: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg("cancelled")
            .query_async(&mut redis)
            .await
            .unwrap();
        let Some(ticket) = ticket else { continue };
        c.cancelled += 1;
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("fv:{{fv-deletion}}:ticket:demo:{ticket}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        if !exists {
            c.violations.push(format!(
                "cancellation: subject {} is marked cancelled by ticket {ticket}, which does not exist",
                subject_of(&key, "}:state")
            ));
        }
    }

    // 3b. Every cancellation ticket's subject carries its mark (no later
    // erasure, delete or withdrawal may undo a cancellation).
    for key in keys(&mut redis, "fv:{fv-deletion}:ticket:demo:*").await {
        let (kind, subject): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("kind")
            .arg("subject_ref")
            .query_async(&mut redis)
            .await
            .unwrap();
        let (Some("cancel"), Some(subject)) = (kind.as_deref(), subject) else {
            continue;
        };
        let ticket = key.rsplit(':').next().unwrap_or_default();
        let mark: Option<String> = redis::cmd("HGET")
            .arg(format!("fv:{{demo:{subject}}}:state"))
            .arg("cancelled")
            .query_async(&mut redis)
            .await
            .unwrap();
        if mark.as_deref() != Some(ticket) {
            c.unmarked_holding += usize::from(c.holders.contains(&subject));
            c.violations.push(format!(
                "cancellation: ticket {ticket}'s subject {subject} is not marked cancelled (mark: {mark:?})"
            ));
            c.unmarked.push(subject);
        }
    }

    // 1. Every subject holding templates has an allowed Enroll event.
    for s in &c.holders {
        let enrolls = events_of(audit, s, "Enroll", is_allowed_enroll).await;
        c.enroll_events_checked += enrolls.len();
        if !enrolls.iter().any(is_allowed_enroll) {
            c.violations.push(format!(
                "audit: subject {s} holds templates but has no allowed Enroll event ({} Enroll events)",
                enrolls.len()
            ));
        }
    }
    c
}

/// One line per event of the subject, to explain a violation.
async fn history(audit: &mut AuditLogClient<Channel>, subject_ref: &str) -> String {
    events_of(audit, subject_ref, "", |_| false)
        .await
        .iter()
        .map(|e| {
            let t = e
                .time
                .as_ref()
                .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000));
            format!("    {t} {} {} {} [{}]", e.op, e.outcome, e.code, e.detail)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn redis_pid(app: &TestApp) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_leaves_every_change_whole_and_audited() {
    let _turn = HEAVY_TESTS.lock().await;
    let seed = seed();
    println!("chaos seed: {seed:#x} (replay with {SEED_VAR}={seed:#x})");
    let started = Instant::now();
    let mut app = spawn_app_with(AppOptions {
        redis_append_only: true,
        redis_timeout_ms: 500,
        extra_config: "[deletion]\npoll_interval_ms = 100\n".into(),
        ..AppOptions::default()
    })
    .await;
    let load = Arc::new(Load {
        seed,
        target: app.target(Suite::X25519Sha256Aes256Gcm).clone(),
        tls: app.tls_config(&app.pki.app.0, &app.pki.app.1),
        url: format!("https://127.0.0.1:{}", app.port),
        faces: (0..SUBJECTS).map(|i| face(seed.wrapping_add(i))).collect(),
        stop: AtomicBool::new(false),
    });
    let pid_before = redis_pid(&app).await;

    let load_started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let client = app.app_client().await;
        workers.push(tokio::spawn(worker(load.clone(), w, client)));
    }

    // Midway, Redis dies (SIGKILL) and comes back from its append-only file.
    tokio::time::sleep(CRASH_AT.saturating_sub(load_started.elapsed())).await;
    let crashed_at = load_started.elapsed();
    app.redis.server().stop().await;
    tokio::time::sleep(OUTAGE).await;
    app.redis.server().restart().await.unwrap();
    let restarted_at = load_started.elapsed();

    tokio::time::sleep(LOAD.saturating_sub(load_started.elapsed())).await;
    load.stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.unwrap());
    }
    let stopped = Instant::now();
    let pid_after = redis_pid(&app).await;

    // Converged: the calls still running on their own have ended and the
    // reconciler has finished what the crash and the cut-short calls left.
    let mut audit = auditor(&app).await;
    tokio::time::sleep(SETTLE).await;
    let mut checked = check(&app, &mut audit).await;
    while !checked.violations.is_empty() && stopped.elapsed() < SETTLE + CONVERGE_WITHIN {
        tokio::time::sleep(Duration::from_millis(250)).await;
        checked = check(&app, &mut audit).await;
    }
    let converged_after = stopped.elapsed();
    let chain = audit
        .verify_chain(proto::VerifyChainRequest { full: true })
        .await
        .unwrap()
        .into_inner();

    // Every event once, for the counts (and to check that acknowledged
    // enrollments are all recorded as allowed).
    let all = events_of(&mut audit, "", "", |_| false).await;
    let caller_gone = all
        .iter()
        .filter(|e| e.detail.contains("caller-gone"))
        .count();
    let recorded_late = all
        .iter()
        .filter(|e| e.detail.contains("recorded-late"))
        .count();
    let allowed_enrolls = all.iter().filter(|e| is_allowed_enroll(e)).count();
    let unavailable_events = all.iter().filter(|e| e.code == "UNAVAILABLE").count();

    println!(
        "chaos: Redis killed at {crashed_at:?}, back at {restarted_at:?} (pid {pid_before} -> {pid_after}); load stopped at {:?}",
        stopped.duration_since(load_started)
    );
    let classes = [
        Class::Ok,
        Class::Deadline,
        Class::Unavailable,
        Class::Refused,
        Class::Dropped,
    ];
    for op in [Op::Enroll, Op::Verify, Op::Withdraw, Op::Cancel, Op::Delete] {
        let line: Vec<String> = classes
            .iter()
            .map(|c| format!("{c:?} {}", tally.count(Some(op), Some(*c))))
            .collect();
        println!(
            "chaos: {op:?}: {} calls: {}",
            tally.count(Some(op), None),
            line.join(", ")
        );
    }
    let line: Vec<String> = classes
        .iter()
        .map(|c| format!("{c:?} {}", tally.count(None, Some(*c))))
        .collect();
    println!(
        "chaos: all: {} calls: {}",
        tally.count(None, None),
        line.join(", ")
    );
    println!(
        "chaos: other refusals: {:?}; fresh connections refused: {}",
        tally.refusal_codes, tally.connect_failures
    );
    println!(
        "chaos: after {converged_after:?}: {} subjects hold templates, {} in the ledger, {} cancelled; {} intents and {} unmarked cancellations left",
        checked.holders.len(),
        checked.ledger.len(),
        checked.cancelled,
        checked.intents_left,
        checked.unflagged_left
    );
    println!(
        "chaos: {} cancellation tickets whose subject is no longer marked cancelled ({} of them holding templates again){}",
        checked.unmarked.len(),
        checked.unmarked_holding,
        checked.unmarked.first().map_or(String::new(), |s| format!(
            ", e.g. {s} ({})",
            tally.names.get(s).map_or("?", String::as_str)
        ))
    );
    println!(
        "chaos: audit: {} events ({allowed_enrolls} allowed Enroll, {unavailable_events} UNAVAILABLE, {caller_gone} caller-gone, {recorded_late} recorded-late), {} Enroll events checked for held subjects; chain: {} events checked, intact {}, {} breaks",
        all.len(),
        checked.enroll_events_checked,
        chain.events_checked,
        chain.intact,
        chain.breaks
    );

    if !checked.violations.is_empty() {
        let mut report = checked.violations.join("\n");
        let named: BTreeSet<&str> = checked
            .violations
            .iter()
            .filter_map(|v| v.split_whitespace().nth(2))
            .collect();
        for s in named.into_iter().take(5) {
            let name = tally.names.get(s).map_or("?", String::as_str);
            report.push_str(&format!(
                "\n  audit history of {s} ({name}):\n{}",
                history(&mut audit, s).await
            ));
        }
        panic!(
            "seed {seed:#x}: not converged {converged_after:?} after the load stopped:\n{report}"
        );
    }
    assert!(
        chain.intact && chain.breaks == 0,
        "seed {seed:#x}: the audit chain is broken: {:?}",
        chain.all_breaks
    );

    // Not vacuous: the load did enroll, was cut short, and Redis really restarted.
    let enrolled = tally.count(Some(Op::Enroll), Some(Class::Ok));
    assert!(enrolled >= 50, "only {enrolled} enrollments succeeded");
    assert!(
        tally.count(None, Some(Class::Deadline)) >= 20,
        "client deadlines cut too few calls short"
    );
    assert!(
        tally.count(None, Some(Class::Dropped)) > 0,
        "no call was dropped mid-call"
    );
    assert!(caller_gone > 0, "no audit event records a caller that left");
    assert_ne!(pid_before, pid_after, "Redis was not restarted");
    assert!(
        unavailable_events > 0,
        "no call met the outage (no UNAVAILABLE event)"
    );
    assert!(
        !checked.holders.is_empty() && checked.cancelled > 0,
        "the run ended with {} subjects holding templates and {} cancelled",
        checked.holders.len(),
        checked.cancelled
    );
    assert!(
        allowed_enrolls as u64 >= enrolled,
        "{enrolled} enrollments were acknowledged but only {allowed_enrolls} are audited as allowed"
    );

    // 5. The service answers normally.
    let mut client = app.app_client().await;
    let values = face(seed ^ 0xf7e5);
    let fresh = format!("fresh-{seed:x}");
    let enrolled = app.enroll(&mut client, &fresh, &values).await;
    assert_eq!(enrolled.templates_held, 1);
    let verified = app
        .verify(&mut client, &fresh, &capture_of(&values, 0.2, seed))
        .await
        .unwrap();
    assert_eq!(verified.decision(), Decision::Match);
    println!("chaos: whole run took {:?}", started.elapsed());
    app.stop().await;
}
