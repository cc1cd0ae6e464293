//! `facevault bench --audit-events N`: the audit log at scale. Starts its own
//! redis-server and `facevault serve` (a child process), fills tenant `demo`'s
//! audit log with N events through an `AuditSink` in this process (the real
//! writer: group commit, HMAC chain, Merkle leaves and tiles, signed heads; with
//! the server's key files and Redis, as one more writer chain beside the
//! server's), has a head signed over all of them, and then times the
//! `facevault.v1.AuditLog` API over mTLS as the dev `auditor`: `ListEvents`
//! with a filter that matches nothing, `VerifyChain` full and incremental,
//! `GetSignedTreeHead`, `GetInclusionProof` and `GetConsistencyProof`. Beside
//! each latency it reports the CPU each process spent, per call, per event or
//! per entry scanned.
//!
//! The server's `limits.request_timeout_ms` is raised here so that every
//! call's own latency is measured; each is compared with the default
//! (`within_default_timeout`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tonic::transport::Channel;

use super::cpu::{CpuUs, Procs};
use super::{Machine, channels, free_port, wait_for_port};
use crate::audit::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use crate::audit::{AuditSettings, AuditSink, MAX_SCANNED_PER_CALL, heads::TreeHead};
use crate::crypto::keyfiles;
use crate::crypto::live::LiveKeys;
use crate::devstack::redis_server::{RedisOptions, RedisServer, TempDir};
use crate::domain::{SubjectId, Tenant};
use crate::pki::{DEV_TRUST_DOMAIN, DevPki};
use crate::proto::audit_log_client::AuditLogClient;
use crate::proto::{self, AuditEvent};
use crate::storage::Store;

const TENANT: &str = "demo";
/// Tasks handing events to the writer at once (the writer commits up to
/// `audit.max_batch` of them per round trip).
const FILL_TASKS: usize = 2048;
/// Pseudonymous subjects the filled events are about.
const SUBJECTS: usize = 10_000;
/// Events appended before each timed incremental verification.
const INCREMENT: u64 = 1000;
/// Runs of each short call; the median is reported.
const RUNS: usize = 7;
const INCREMENTAL_RUNS: usize = 3;
/// The bench server's `limits.request_timeout_ms`: long enough that every
/// call is timed to its end.
const SERVER_REQUEST_TIMEOUT_MS: u64 = 600_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// The pause before the last event.
const LAST_EVENT_AFTER: Duration = Duration::from_millis(1500);

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    audit_log: AuditLogReport,
}

#[derive(Debug, Serialize)]
struct AuditLogReport {
    /// Events the bench appended before the timed calls.
    events: u64,
    tenant: &'static str,
    /// "grpc": every timed call went through `facevault.v1.AuditLog` over mTLS.
    api: &'static str,
    default_request_timeout_ms: u64,
    server_request_timeout_ms: u64,
    fill: Fill,
    /// Stream entries of the tenant after the fill (the bench's events and the
    /// server's own, one per auditor call).
    stream_entries: u64,
    redis_used_memory_mib: f64,
    signed_tree_head: Timed,
    inclusion_proof_first: Proof,
    /// The burst's last event: `GetInclusionProof` finds an event by its id
    /// (`AuditReader::locate`, a bounded read of the stream near the id's
    /// time), here among the burst's densely packed entries.
    inclusion_proof_last_of_burst: Proof,
    /// The event appended alone after the burst.
    inclusion_proof_last: Proof,
    consistency_proof_1_to_n: Proof,
    consistency_proof_half_to_n: Proof,
    list_events_unknown_subject: Listing,
    verify_full: Verification,
    verify_incremental_0: Incremental,
    verify_incremental_1000: Incremental,
    /// Already verified entries each incremental run checks again.
    recheck_per_run: usize,
    /// Calls slower than the default request timeout (would have been
    /// DEADLINE_EXCEEDED with the default configuration).
    over_default_timeout: Vec<String>,
    /// Calls that failed, with their status.
    failed: Vec<String>,
}

/// The burst of all events but the last.
#[derive(Debug, Serialize)]
struct Fill {
    events: u64,
    tasks: usize,
    seconds: f64,
    events_per_second: f64,
    /// The writer and the tasks are the bench process here.
    cpu_us_per_event: CpuUs,
}

#[derive(Debug, Clone, Serialize)]
struct Timed {
    runs: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    within_default_timeout: bool,
    cpu_us_per_call: CpuUs,
}

#[derive(Debug, Serialize)]
struct Proof {
    #[serde(flatten)]
    timed: Timed,
    leaf_index: Option<u64>,
    first_size: Option<u64>,
    tree_size: u64,
    hashes: usize,
    /// Checked here against the signed head (inclusion, and consistency from
    /// size 1, whose root is the first leaf's hash); None: not checkable here.
    verified: Option<bool>,
    /// The status of a call that failed (then timed once, not repeated).
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Listing {
    /// The first call, from the start of the log.
    first_call_ms: f64,
    first_call_within_default_timeout: bool,
    /// Entries one call reads at most (`MAX_SCANNED_PER_CALL`).
    max_scanned_per_call: usize,
    /// Calls until the continuation token came back empty.
    calls_to_page_through: usize,
    median_call_ms: f64,
    max_call_ms: f64,
    total_ms: f64,
    events_found: usize,
    cpu_us_per_entry: CpuUs,
}

#[derive(Debug, Serialize)]
struct Verification {
    ms: f64,
    within_default_timeout: bool,
    events_checked: u64,
    us_per_event: f64,
    intact: bool,
    full: bool,
    cpu_us_per_event: CpuUs,
}

#[derive(Debug, Serialize)]
struct Incremental {
    /// Events appended (by the bench) before each run.
    appended: u64,
    #[serde(flatten)]
    timed: Timed,
    /// Events each run walked (its events_checked less the previous run's):
    /// also the server's own events, one per auditor call.
    events_walked: Vec<u64>,
    all_intact: bool,
    all_incremental: bool,
}

/// The stack of one run; dropping it kills the server and Redis.
pub(super) struct Stack {
    _dir: TempDir,
    pub(super) redis: RedisServer,
    pub(super) server: tokio::process::Child,
    pub(super) addr: String,
    pub(super) pki: DevPki,
    config: PathBuf,
}

pub(super) async fn start() -> anyhow::Result<Stack> {
    let dir = TempDir::new()?;
    let root = dir.path().to_path_buf();
    let pki = DevPki::ensure(&root.join("pki"), DEV_TRUST_DOMAIN, &[])?;
    let keys = keyfiles::generate(&root.join("keys"), 30)?;
    let redis = RedisServer::start(RedisOptions::default()).await?;
    let (port, health) = (free_port()?, free_port()?);
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
health_listen = "127.0.0.1:{health}"
trust_domain = "{DEV_TRUST_DOMAIN}"

[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[keys]
keyring = "{keyring}"
transform_secret = "{transform}"
sealing_keys = "{sealing}"
receipt_signing_key = "{receipt}"

[redis]
url = "{redis_url}"
timeout_ms = 5000

[limits]
rate_per_second = 1000000000.0
burst = 1000000000.0
request_timeout_ms = {SERVER_REQUEST_TIMEOUT_MS}
idle_timeout_secs = {idle}

[[models]]
id = "{model}"
dimension = {dimension}
threshold = {threshold}

[tenants.demo]

[logging]
format = "json"
level = "warn"
"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        ca = pki.ca_cert.display(),
        keyring = keys.keyring.display(),
        transform = keys.transform_secret.display(),
        sealing = keys.sealing_keys.display(),
        receipt = keys.receipt_signing_key.display(),
        redis_url = redis.url(),
        idle = SERVER_REQUEST_TIMEOUT_MS / 1000 + 300,
        model = super::MODEL,
        dimension = super::DIMENSION,
        threshold = super::THRESHOLD,
    );
    let config_path = root.join("facevault.toml");
    std::fs::write(&config_path, config)?;
    let server = tokio::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(root.join("server.log"))?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start facevault serve")?;
    wait_for_port(port).await?;
    Ok(Stack {
        _dir: dir,
        redis,
        server,
        addr: format!("127.0.0.1:{port}"),
        pki,
        config: config_path,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Prints a line every `PROGRESS_EVERY` while `work` runs.
pub(super) async fn with_progress<T>(label: &str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let label = label.to_owned();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            eprintln!("  {label}: {:.0} s …", started.elapsed().as_secs_f64());
        }
    });
    let out = work.await;
    ticker.abort();
    out
}

/// Times `runs` calls one after the other; returns the last call's result.
async fn repeat<F, Fut, T>(
    procs: &Procs,
    default_timeout_ms: u64,
    runs: usize,
    mut call: F,
) -> anyhow::Result<(Timed, T)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut latencies = Vec::with_capacity(runs);
    let mut last = None;
    let before = procs.mark();
    for _ in 0..runs {
        let t = Instant::now();
        let out = call().await?;
        latencies.push(ms(t.elapsed()));
        last = Some(out);
    }
    let cpu = before.per(&procs.mark(), runs as f64);
    let max = latencies.iter().copied().fold(0.0, f64::max);
    Ok((
        Timed {
            runs,
            median_ms: median(&latencies),
            min_ms: latencies.iter().copied().fold(f64::INFINITY, f64::min),
            max_ms: max,
            within_default_timeout: max < default_timeout_ms as f64,
            cpu_us_per_call: cpu,
        },
        last.context("no run")?,
    ))
}

/// One appended event: its id, where it landed and its HMAC (the leaf's data).
#[derive(Debug, Clone)]
struct Landed {
    event_id: String,
    seq: u64,
    hash: Vec<u8>,
    chain_id: String,
}

/// The first and last events (by seq) that one `append` landed.
struct Appended {
    first: Landed,
    last: Landed,
    seconds: f64,
}

/// Hands `count` Verify events to the writer from `FILL_TASKS` tasks.
async fn append(
    sink: &AuditSink,
    refs: &Arc<Vec<String>>,
    cert_sha256: &str,
    count: u64,
    progress: bool,
) -> anyhow::Result<Appended> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let ticker = progress.then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let n = done.load(Ordering::Relaxed);
                let s = started.elapsed().as_secs_f64();
                eprintln!(
                    "  audit fill: {n}/{count} events, {s:.0} s, {:.0} events/s",
                    n as f64 / s
                );
            }
        })
    });
    let tenant = Tenant::try_from(TENANT).map_err(|e| anyhow::anyhow!("{e}"))?;
    let caller = format!("spiffe://{DEV_TRUST_DOMAIN}/tenant/{TENANT}/role/app");
    let tasks: Vec<_> = (0..FILL_TASKS.min(count as usize))
        .map(|_| {
            let (sink, refs, next, done) = (sink.clone(), refs.clone(), next.clone(), done.clone());
            let (tenant, caller, cert) = (tenant.clone(), caller.clone(), cert_sha256.to_owned());
            tokio::spawn(async move {
                let mut ends: Option<(Landed, Landed)> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, crate::audit::AuditError>(ends);
                    }
                    let event_id = crate::audit::new_event_id();
                    let event = AuditEvent {
                        event_id: event_id.clone(),
                        time: Some(crate::vault::timestamp(crate::vault::now_unix_ms())),
                        tenant: TENANT.to_owned(),
                        caller: caller.clone(),
                        caller_cert_sha256: cert.clone(),
                        op: "Verify".into(),
                        subject_ref: refs[i as usize % refs.len()].clone(),
                        purpose: "login".into(),
                        outcome: "allowed".into(),
                        code: "OK".into(),
                        request_id: event_id.clone(),
                        detail: "match".into(),
                        ..AuditEvent::default()
                    };
                    let at = sink.record_located(tenant.clone(), event).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    let landed = Landed {
                        event_id,
                        seq: at.seq,
                        hash: at.hash,
                        chain_id: at.chain_id,
                    };
                    ends = Some(match ends {
                        None => (landed.clone(), landed),
                        Some((first, last)) => {
                            if landed.seq < first.seq {
                                (landed, last)
                            } else if landed.seq > last.seq {
                                (first, landed)
                            } else {
                                (first, last)
                            }
                        }
                    });
                }
            })
        })
        .collect();
    let mut first: Option<Landed> = None;
    let mut last: Option<Landed> = None;
    for task in tasks {
        let Some((f, l)) = task.await?.context("an audit event was not recorded")? else {
            continue;
        };
        if first.as_ref().is_none_or(|x| f.seq < x.seq) {
            first = Some(f);
        }
        if last.as_ref().is_none_or(|x| l.seq > x.seq) {
            last = Some(l);
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    Ok(Appended {
        first: first.context("no event appended")?,
        last: last.context("no event appended")?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The pid of the redis-server behind `conn`, for CPU sampling.
pub(super) async fn redis_pid(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u32> {
    redis_info(conn, "process_id")
        .await
        .and_then(|p| p.parse().ok())
        .context("no process_id in Redis INFO")
}

pub(super) async fn redis_info(
    conn: &mut redis::aio::MultiplexedConnection,
    field: &str,
) -> Option<String> {
    let info: String = redis::cmd("INFO").query_async(conn).await.ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

pub(super) async fn run(events: u64, json: bool) -> anyhow::Result<()> {
    let default_timeout_ms = crate::config::LimitSettings::default().request_timeout_ms;
    eprintln!("starting redis-server and facevault serve …");
    let mut stack = start().await?;
    let settings =
        crate::config::Settings::load(&stack.config, &crate::config::Overrides::default())?;
    let keys = Arc::new(LiveKeys::load(settings.keys.paths())?);
    let store = Store::connect(&settings.redis.target(Duration::from_secs(10))?)?;
    let mut conn = redis::Client::open(stack.redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let procs = Procs {
        server: Some(stack.server.id().context("the server exited")?),
        redis: Some(redis_pid(&mut conn).await?),
        baseline: None,
    };
    let tenant = Tenant::try_from(TENANT).map_err(|e| anyhow::anyhow!("{e}"))?;
    let public_key = keys.current().receipt_public_key();
    let tenant_keys = keys
        .current()
        .keyring
        .tenant(&tenant)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let refs: Arc<Vec<String>> = Arc::new(
        (0..SUBJECTS)
            .map(|i| {
                let id = SubjectId::try_from(format!("audit-bench-{i}"))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(tenant_keys.subject_ref(&id).as_str().to_owned())
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let unknown_ref = tenant_keys
        .subject_ref(
            &SubjectId::try_from("audit-bench-nobody".to_owned())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )
        .as_str()
        .to_owned();
    let cert_sha256 = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(&stack.pki.app.0)?,
    ));
    let (sink, writer) = AuditSink::spawn(
        store.clone(),
        keys.clone(),
        AuditSettings {
            retention: Duration::from_secs(u64::from(settings.audit.retention_days) * 86_400),
            checkpoint_interval: Duration::from_secs(settings.audit.checkpoint_interval_secs),
            anchor_file: None,
            max_batch: settings.audit.max_batch,
            queue_capacity: settings.audit.queue_capacity,
            ack_timeout: Duration::from_millis(settings.redis.timeout_ms * 3),
        },
    )?;

    // Fill: all but one event in one burst; the last one alone, after a
    // pause longer than the second `GetInclusionProof` looks back from an
    // event id's time, so that one event near the end can be found whatever
    // the burst's rate.
    let burst = events - 1;
    eprintln!("appending {burst} audit events from {FILL_TASKS} tasks …");
    let before = procs.mark();
    let filled = append(&sink, &refs, &cert_sha256, burst, true).await?;
    let fill = Fill {
        events: burst,
        tasks: FILL_TASKS.min(burst as usize),
        seconds: filled.seconds,
        events_per_second: burst as f64 / filled.seconds,
        cpu_us_per_event: before.per(&procs.mark(), burst as f64),
    };
    eprintln!(
        "  {burst} events in {:.1} s ({:.0} events/s); one more after {} ms; signing a head over them …",
        fill.seconds,
        fill.events_per_second,
        LAST_EVENT_AFTER.as_millis()
    );
    tokio::time::sleep(LAST_EVENT_AFTER).await;
    let last = append(&sink, &refs, &cert_sha256, 1, false).await?.last;
    sink.heads_now(Some(tenant.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("heads_now: {e}"))?;
    let chain_id = last.chain_id.clone();
    let size = last.seq;
    if filled.first.seq != 1 || filled.last.seq != burst || size != events {
        bail!(
            "the bench's chain holds seqs {}..={} and {size}, not 1..={events}",
            filled.first.seq,
            filled.last.seq,
        );
    }
    let (stream_entries, _) = store.audit_extent(TENANT).await?;
    let redis_used_memory_mib = redis_info(&mut conn, "used_memory")
        .await
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |b| b / 1048576.0);

    // The API, as the tenant's auditor.
    let channel: Channel = channels(
        &stack.addr,
        &stack.pki.ca_cert,
        &stack.pki.auditor.0,
        &stack.pki.auditor.1,
    )
    .await?
    .remove(0);
    let client = AuditLogClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut over = Vec::new();
    let mut note = |name: &str, ok: bool| {
        if !ok {
            over.push(name.to_owned());
        }
    };

    eprintln!("GetSignedTreeHead …");
    let (signed_tree_head, heads) = repeat(&procs, default_timeout_ms, RUNS, || {
        let mut c = client.clone();
        async move {
            Ok(
                c.get_signed_tree_head(proto::GetSignedTreeHeadRequest::default())
                    .await?
                    .into_inner(),
            )
        }
    })
    .await?;
    note("GetSignedTreeHead", signed_tree_head.within_default_timeout);
    let head = heads
        .heads
        .iter()
        .filter_map(TreeHead::from_proto)
        .find(|h| h.chain_id == chain_id)
        .context("no signed head of the bench's chain")?;
    if head.tree_size != size || !head.verify(&public_key) {
        bail!(
            "the bench chain's head covers {} of {size} events (signature valid: {})",
            head.tree_size,
            head.verify(&public_key)
        );
    }

    eprintln!("GetInclusionProof …");
    let inclusion = |landed: Landed| {
        let client = client.clone();
        let (procs, public_key) = (procs, public_key.clone());
        async move {
            // A first call, kept apart so that a refusal is reported, not fatal.
            let before = procs.mark();
            let t = Instant::now();
            let first = client
                .clone()
                .get_inclusion_proof(proto::GetInclusionProofRequest {
                    event_id: landed.event_id.clone(),
                    tree_size: 0,
                })
                .await;
            if let Err(status) = first {
                let elapsed = ms(t.elapsed());
                return Ok(Proof {
                    timed: Timed {
                        runs: 1,
                        median_ms: elapsed,
                        min_ms: elapsed,
                        max_ms: elapsed,
                        within_default_timeout: elapsed < default_timeout_ms as f64,
                        cpu_us_per_call: before.per(&procs.mark(), 1.0),
                    },
                    leaf_index: Some(landed.seq - 1),
                    first_size: None,
                    tree_size: size,
                    hashes: 0,
                    verified: Some(false),
                    error: Some(format!("{:?}: {}", status.code(), status.message())),
                });
            }
            let (timed, p) = repeat(&procs, default_timeout_ms, RUNS, || {
                let mut c = client.clone();
                let event_id = landed.event_id.clone();
                async move {
                    Ok(c.get_inclusion_proof(proto::GetInclusionProofRequest {
                        event_id,
                        tree_size: 0,
                    })
                    .await?
                    .into_inner())
                }
            })
            .await?;
            let hashes: Vec<Hash> = p
                .hashes
                .iter()
                .map(|h| Hash::try_from(h.as_slice()))
                .collect::<Result<_, _>>()
                .context("a proof hash is not 32 bytes")?;
            let verified = p
                .head
                .as_ref()
                .and_then(TreeHead::from_proto)
                .is_some_and(|h| {
                    h.verify(&public_key)
                        && h.tree_size == p.tree_size
                        && p.event_hash == landed.hash
                        && p.leaf_index + 1 == landed.seq
                        && verify_inclusion(
                            &leaf_hash(&landed.hash),
                            p.leaf_index,
                            p.tree_size,
                            &hashes,
                            &h.root_hash,
                        )
                        .is_ok()
                });
            Ok::<_, anyhow::Error>(Proof {
                timed,
                leaf_index: Some(p.leaf_index),
                first_size: None,
                tree_size: p.tree_size,
                hashes: hashes.len(),
                verified: Some(verified),
                error: None,
            })
        }
    };
    let inclusion_proof_first = inclusion(filled.first.clone()).await?;
    let inclusion_proof_last_of_burst = inclusion(filled.last.clone()).await?;
    let inclusion_proof_last = inclusion(last).await?;
    let failed: Vec<String> = [
        ("GetInclusionProof (first event)", &inclusion_proof_first),
        (
            "GetInclusionProof (last event of the burst)",
            &inclusion_proof_last_of_burst,
        ),
        ("GetInclusionProof (last event)", &inclusion_proof_last),
    ]
    .iter()
    .filter_map(|(name, p)| Some(format!("{name}: {}", p.error.as_ref()?)))
    .collect();
    note(
        "GetInclusionProof (first)",
        inclusion_proof_first.timed.within_default_timeout,
    );
    note(
        "GetInclusionProof (last of the burst)",
        inclusion_proof_last_of_burst.timed.within_default_timeout,
    );
    note(
        "GetInclusionProof (last)",
        inclusion_proof_last.timed.within_default_timeout,
    );

    eprintln!("GetConsistencyProof …");
    let consistency = |first_size: u64| {
        let client = client.clone();
        let (procs, chain_id) = (procs, chain_id.clone());
        async move {
            repeat(&procs, default_timeout_ms, RUNS, || {
                let mut c = client.clone();
                let chain_id = chain_id.clone();
                async move {
                    Ok(c.get_consistency_proof(proto::GetConsistencyProofRequest {
                        chain_id,
                        first_size,
                        second_size: size,
                    })
                    .await?
                    .into_inner())
                }
            })
            .await
        }
    };
    let (timed, p) = consistency(1).await?;
    let hashes: Vec<Hash> = p
        .hashes
        .iter()
        .map(|h| Hash::try_from(h.as_slice()))
        .collect::<Result<_, _>>()
        .context("a proof hash is not 32 bytes")?;
    let consistency_proof_1_to_n = Proof {
        timed,
        leaf_index: None,
        first_size: Some(1),
        tree_size: size,
        hashes: hashes.len(),
        // The tree of one leaf has that leaf's hash as its root.
        verified: Some(
            verify_consistency(
                1,
                size,
                &leaf_hash(&filled.first.hash),
                &head.root_hash,
                &hashes,
            )
            .is_ok(),
        ),
        error: None,
    };
    let half = (size / 2).max(1);
    let (timed, p) = consistency(half).await?;
    let consistency_proof_half_to_n = Proof {
        timed,
        leaf_index: None,
        first_size: Some(half),
        tree_size: size,
        hashes: p.hashes.len(),
        verified: None,
        error: None,
    };
    note(
        "GetConsistencyProof (1 → N)",
        consistency_proof_1_to_n.timed.within_default_timeout,
    );
    note(
        "GetConsistencyProof (N/2 → N)",
        consistency_proof_half_to_n.timed.within_default_timeout,
    );

    eprintln!("ListEvents with an unknown subject_ref, paging through the log …");
    let list_started = Instant::now();
    let mut last_print = list_started;
    let before = procs.mark();
    let (mut token, mut calls, mut found, mut latencies) = (String::new(), 0, 0, Vec::new());
    loop {
        let t = Instant::now();
        let page = client
            .clone()
            .list_events(proto::ListEventsRequest {
                subject_ref: unknown_ref.clone(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .context("ListEvents")?
            .into_inner();
        latencies.push(ms(t.elapsed()));
        calls += 1;
        found += page.events.len();
        if last_print.elapsed() >= PROGRESS_EVERY {
            last_print = Instant::now();
            eprintln!(
                "  ListEvents: {calls} calls, {:.0} s",
                list_started.elapsed().as_secs_f64()
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let (len_after, _) = store.audit_extent(TENANT).await?;
    let list_events_unknown_subject = Listing {
        first_call_ms: latencies[0],
        first_call_within_default_timeout: latencies[0] < default_timeout_ms as f64,
        max_scanned_per_call: MAX_SCANNED_PER_CALL,
        calls_to_page_through: calls,
        median_call_ms: median(&latencies),
        max_call_ms: latencies.iter().copied().fold(0.0, f64::max),
        total_ms: ms(list_started.elapsed()),
        events_found: found,
        cpu_us_per_entry: before.per(&procs.mark(), len_after as f64),
    };
    note(
        "ListEvents (slowest page)",
        list_events_unknown_subject.max_call_ms < default_timeout_ms as f64,
    );

    eprintln!("VerifyChain full …");
    let before = procs.mark();
    let t = Instant::now();
    let report = with_progress(
        "VerifyChain full",
        client
            .clone()
            .verify_chain(proto::VerifyChainRequest { full: true }),
    )
    .await
    .context("VerifyChain full")?
    .into_inner();
    let elapsed = ms(t.elapsed());
    let verify_full = Verification {
        ms: elapsed,
        within_default_timeout: elapsed < default_timeout_ms as f64,
        events_checked: report.events_checked,
        us_per_event: elapsed * 1000.0 / report.events_checked.max(1) as f64,
        intact: report.intact,
        full: report.full,
        cpu_us_per_event: before.per(&procs.mark(), report.events_checked as f64),
    };
    note("VerifyChain full", verify_full.within_default_timeout);
    if !report.intact {
        bail!(
            "VerifyChain found {} breaks, the first: {} (chain {}, seq {})",
            report.breaks,
            report.reason,
            report.chain_id,
            report.broken_at_seq
        );
    }

    let mut checked = report.events_checked;
    let filler = Filler {
        sink: sink.clone(),
        tenant: tenant.clone(),
        refs: refs.clone(),
        cert_sha256: cert_sha256.clone(),
    };
    eprintln!("VerifyChain incremental, nothing appended …");
    let verify_incremental_0 = incremental(&client, &procs, &filler, &mut checked, 0, RUNS).await?;
    eprintln!("VerifyChain incremental, {INCREMENT} events appended before each …");
    let verify_incremental_1000 = incremental(
        &client,
        &procs,
        &filler,
        &mut checked,
        INCREMENT,
        INCREMENTAL_RUNS,
    )
    .await?;
    note(
        "VerifyChain incremental (0 new)",
        verify_incremental_0.timed.within_default_timeout,
    );
    note(
        "VerifyChain incremental (1,000 new)",
        verify_incremental_1000.timed.within_default_timeout,
    );

    let report = Report {
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        },
        audit_log: AuditLogReport {
            events,
            tenant: TENANT,
            api: "grpc",
            default_request_timeout_ms: default_timeout_ms,
            server_request_timeout_ms: SERVER_REQUEST_TIMEOUT_MS,
            fill,
            stream_entries,
            redis_used_memory_mib,
            signed_tree_head,
            inclusion_proof_first,
            inclusion_proof_last_of_burst,
            inclusion_proof_last,
            consistency_proof_1_to_n,
            consistency_proof_half_to_n,
            list_events_unknown_subject,
            verify_full,
            verify_incremental_0,
            verify_incremental_1000,
            recheck_per_run: crate::audit::RECHECK_PER_RUN,
            over_default_timeout: over,
            failed,
        },
    };
    // The writer ends (after final heads) once every sink clone is gone.
    drop(filler);
    drop(sink);
    let _ = writer.await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report.audit_log);
    }
    let _ = stack.server.start_kill();
    stack.redis.stop().await;
    Ok(())
}

/// What appending more events needs.
struct Filler {
    sink: AuditSink,
    tenant: Tenant,
    refs: Arc<Vec<String>>,
    cert_sha256: String,
}

/// `runs` incremental verifications, each after `appended` new events (and a
/// head over them); `checked` is the previous run's events_checked.
async fn incremental(
    client: &AuditLogClient<Channel>,
    procs: &Procs,
    filler: &Filler,
    checked: &mut u64,
    appended: u64,
    runs: usize,
) -> anyhow::Result<Incremental> {
    let default_timeout_ms = crate::config::LimitSettings::default().request_timeout_ms;
    let (mut latencies, mut walked) = (Vec::new(), Vec::new());
    let (mut intact, mut incremental) = (true, true);
    let mut cpu = CpuUs::zero();
    for _ in 0..runs {
        if appended > 0 {
            append(
                &filler.sink,
                &filler.refs,
                &filler.cert_sha256,
                appended,
                false,
            )
            .await?;
            filler
                .sink
                .heads_now(Some(filler.tenant.clone()))
                .await
                .map_err(|e| anyhow::anyhow!("heads_now: {e}"))?;
        }
        let before = procs.mark();
        let t = Instant::now();
        let r = client
            .clone()
            .verify_chain(proto::VerifyChainRequest { full: false })
            .await
            .context("VerifyChain incremental")?
            .into_inner();
        latencies.push(ms(t.elapsed()));
        cpu.add(&before.per(&procs.mark(), runs as f64));
        walked.push(r.events_checked.saturating_sub(*checked));
        *checked = r.events_checked;
        intact &= r.intact;
        incremental &= !r.full;
    }
    let max = latencies.iter().copied().fold(0.0, f64::max);
    Ok(Incremental {
        appended,
        timed: Timed {
            runs,
            median_ms: median(&latencies),
            min_ms: latencies.iter().copied().fold(f64::INFINITY, f64::min),
            max_ms: max,
            within_default_timeout: max < default_timeout_ms as f64,
            cpu_us_per_call: cpu,
        },
        events_walked: walked,
        all_intact: intact,
        all_incremental: incremental,
    })
}

fn print_table(r: &AuditLogReport) {
    let f = CpuUs::brief;
    println!(
        "\nfacevault bench --audit-events {}: tenant {}, {} stream entries, Redis {:.0} MiB; \
         calls over gRPC as the auditor (default request timeout {} ms)",
        r.events, r.tenant, r.stream_entries, r.redis_used_memory_mib, r.default_request_timeout_ms
    );
    println!(
        "fill (one burst of all events but the last): {} events from {} tasks in {:.1} s = {:.0} events/s; \
         CPU µs per event server / redis / loadgen {}",
        r.fill.events,
        r.fill.tasks,
        r.fill.seconds,
        r.fill.events_per_second,
        f(&r.fill.cpu_us_per_event)
    );
    println!(
        "\n{:<38} {:>10} {:>10} {:>10}  {:<28} note",
        "call", "median ms", "min ms", "max ms", "CPU µs/call srv/redis/bench"
    );
    let row = |name: &str, t: &Timed, extra: String| {
        println!(
            "{:<38} {:>10.2} {:>10.2} {:>10.2}  {:<28} {extra}",
            name,
            t.median_ms,
            t.min_ms,
            t.max_ms,
            f(&t.cpu_us_per_call)
        );
    };
    row("GetSignedTreeHead", &r.signed_tree_head, String::new());
    for (name, p) in [
        ("GetInclusionProof (first event)", &r.inclusion_proof_first),
        (
            "GetInclusionProof (last of burst)",
            &r.inclusion_proof_last_of_burst,
        ),
        ("GetInclusionProof (last event)", &r.inclusion_proof_last),
        ("GetConsistencyProof (1 → N)", &r.consistency_proof_1_to_n),
        (
            "GetConsistencyProof (N/2 → N)",
            &r.consistency_proof_half_to_n,
        ),
    ] {
        let verified = match (&p.error, p.verified) {
            (Some(error), _) => format!(", FAILED: {error}"),
            (None, Some(true)) => ", verified".into(),
            (None, Some(false)) => ", DID NOT VERIFY".into(),
            (None, None) => String::new(),
        };
        row(name, &p.timed, format!("{} hashes{verified}", p.hashes));
    }
    for (name, i) in [
        ("VerifyChain incremental, 0 new", &r.verify_incremental_0),
        (
            "VerifyChain incremental, 1,000 new",
            &r.verify_incremental_1000,
        ),
    ] {
        row(
            name,
            &i.timed,
            format!(
                "walked {:?}, re-checks ≤ {}{}{}",
                i.events_walked,
                r.recheck_per_run,
                if i.all_intact { "" } else { ", NOT INTACT" },
                if i.all_incremental { "" } else { ", ran FULL" }
            ),
        );
    }
    let v = &r.verify_full;
    println!(
        "VerifyChain full: {:.0} ms for {} events = {:.2} µs per event{}; CPU µs per event server / redis / loadgen {}",
        v.ms,
        v.events_checked,
        v.us_per_event,
        if v.intact { ", intact" } else { ", NOT INTACT" },
        f(&v.cpu_us_per_event)
    );
    let l = &r.list_events_unknown_subject;
    println!(
        "ListEvents, unknown subject_ref: first call {:.0} ms (reads at most {} entries); {} calls to page through, \
         median {:.0} ms, slowest {:.0} ms, {:.1} s in all, {} events found; CPU µs per entry server / redis / loadgen {}",
        l.first_call_ms,
        l.max_scanned_per_call,
        l.calls_to_page_through,
        l.median_call_ms,
        l.max_call_ms,
        l.total_ms / 1000.0,
        l.events_found,
        f(&l.cpu_us_per_entry)
    );
    if !r.failed.is_empty() {
        println!("FAILED: {}", r.failed.join("; "));
    }
    if r.over_default_timeout.is_empty() {
        println!(
            "every call answered within the default request timeout ({} ms)",
            r.default_request_timeout_ms
        );
    } else {
        println!(
            "OVER the default request timeout ({} ms): {}",
            r.default_request_timeout_ms,
            r.over_default_timeout.join(", ")
        );
    }
}
