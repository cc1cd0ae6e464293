//! `facevault bench`: a load generator over real mTLS gRPC with real sealing. With
//! no `--target` it starts its own redis-server and `facevault serve` (a child
//! process, so its memory is measured alone) and, in the same run and on the same
//! stack, measures the floors: the gRPC+TLS health check, a Redis GET from this
//! process, and a naive unprotected baseline service (see `baseline`).

mod audit;
mod baseline;
mod cpu;
mod decommission;
mod rewrap;
pub mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::client::{PayloadSpec, SealingSession, SealingTarget, seal_embedding};
use crate::crypto::keyfiles;
use crate::crypto::sealing::{SealedFor, Suite};
use crate::devstack::redis_server::{RedisCluster, RedisOptions, RedisServer};
use crate::pki::{DEV_TRUST_DOMAIN, DevPki};
use crate::proto::face_vault_client::FaceVaultClient;
use crate::proto::{self, Decision};
use stats::PhaseStats;

pub use baseline::serve as serve_baseline;

const MODEL: &str = "bench-512";
const DIMENSION: usize = 512;
const THRESHOLD: f32 = 0.6;
/// Probes are sealed before the timed phase so that it measures the server, not
/// this process's sealing; a phase ends early if its pool runs out.
const PROBE_POOL: usize = 40_000;
const CHANNELS: usize = 4;
/// At most this many probes (about 2.2 KiB each) for verify-during-rewrap.
const MAX_REWRAP_PROBES: usize = 250_000;
/// Probes sealed in one sealing session for `verify_session` (a client rolls
/// its session over long before the server's cap of 2^24).
const SESSION_MESSAGES: usize = 4096;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A running facevault (host:port). Without it, the bench starts its own.
    #[arg(long)]
    target: Option<String>,
    /// With --target: CA, client certificate and key (tenant role app).
    #[arg(long, default_value = "dev/ca.pem")]
    ca: PathBuf,
    #[arg(long, default_value = "dev/app.pem")]
    cert: PathBuf,
    #[arg(long, default_value = "dev/app.key")]
    key: PathBuf,
    /// With --target: the tenant of the client certificate.
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// With --target: the 512-dimension model id configured there.
    #[arg(long, default_value = "demo-512")]
    target_model: String,
    /// Subjects enrolled before verifying.
    #[arg(long, default_value_t = 10_000)]
    subjects: usize,
    /// Calls in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of each timed phase, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Sealing suite: x25519 or xwing.
    #[arg(long, default_value = "x25519")]
    suite: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Without --target: run against a Redis Cluster of 3 primaries with a replica
    /// each, instead of one redis-server. The naive baseline and the GET floor
    /// speak to one node, so they are skipped.
    #[arg(long, conflicts_with = "target")]
    redis_cluster: bool,
    /// Without --target: after the verify phase, rotate the server's keyring and
    /// measure the re-wrap worker (DEKs/s) and verify while it runs
    /// (verify-during-rewrap, compared with verify before it).
    #[arg(long)]
    rewrap: bool,
    /// With --rewrap: the server's keys.rewrap_per_second.
    #[arg(long, default_value_t = 2000, requires = "rewrap",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rewrap_per_second: u32,
    /// Instead of the verify phases: fill tenant demo's audit log with this many
    /// events on the bench's own stack, then time the auditor API over it
    /// (ListEvents, VerifyChain, heads and proofs; see `audit`).
    #[arg(long, conflicts_with_all = ["target", "redis_cluster", "rewrap"],
          value_parser = clap::value_parser!(u64).range(2..=100_000_000))]
    audit_events: Option<u64>,
    /// Instead of the verify phases: enroll this many subjects in tenant demo on
    /// the bench's own stack, decommission the tenant and time the erasure
    /// (subjects/s, CPU per subject; see `decommission`).
    #[arg(long, conflicts_with_all = ["target", "redis_cluster", "rewrap", "audit_events"],
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    decommission: Option<u64>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m)")),
    };
    if !(0.1..=3600.0).contains(&seconds) {
        return Err("duration must be between 100ms and 1h".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    settings: Settings,
    enroll: PhaseStats,
    health: Option<PhaseStats>,
    redis_get: Option<PhaseStats>,
    verify: PhaseStats,
    /// Verify with probes sealed in sealing sessions (one HPKE setup per
    /// `SESSION_MESSAGES` probes).
    verify_session: PhaseStats,
    baseline_verify: Option<PhaseStats>,
    server_rss_mib: Option<f64>,
    server_peak_rss_mib: Option<f64>,
    /// CPU µs per call of each process, by phase (see `cpu`).
    cpu_us_per_call: std::collections::BTreeMap<&'static str, cpu::CpuUs>,
    /// Redis's time per command, per call of each phase (`INFO commandstats`;
    /// one redis-server only).
    redis_commands_per_call: std::collections::BTreeMap<&'static str, Vec<cpu::RedisCommand>>,
    ratios: Ratios,
    /// With --rewrap (see `rewrap`).
    rewrap: Option<rewrap::RewrapReport>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    os: &'static str,
    arch: &'static str,
}

#[derive(Debug, Serialize)]
struct Settings {
    subjects: usize,
    concurrency: usize,
    duration_s: f64,
    suite: String,
    dimension: usize,
    self_hosted: bool,
    redis_cluster: bool,
    rewrap: bool,
}

#[derive(Debug, Serialize)]
struct Ratios {
    verify_vs_health: Option<f64>,
    verify_session_vs_health: Option<f64>,
    verify_p99_vs_health_p99: Option<f64>,
    protected_vs_unprotected: Option<f64>,
    session_protected_vs_unprotected: Option<f64>,
}

/// Child processes and files of a self-hosted run; killed on drop.
struct SelfHosted {
    _dir: crate::devstack::redis_server::TempDir,
    redis: BenchRedis,
    server: tokio::process::Child,
    server_addr: SocketAddr,
    pki: DevPki,
    /// The server's keyring file (`--rewrap` rotates it).
    keyring: PathBuf,
    redis_url: String,
    redis_mode: crate::storage::RedisMode,
}

enum BenchRedis {
    Standalone(Box<StandaloneStack>),
    /// Held so the nodes live as long as the run (dropping kills them).
    Cluster {
        _nodes: RedisCluster,
    },
}

/// One redis-server, and the naive baseline beside the service.
struct StandaloneStack {
    server: RedisServer,
    baseline: tokio::process::Child,
    baseline_addr: SocketAddr,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `rewrap_per_second`: with `--rewrap`, the server reloads its key files every
/// second and runs the re-wrap worker (it runs beside the deletion worker, at
/// that worker's poll interval) at this rate.
async fn start_self_hosted(
    redis_cluster: bool,
    rewrap_per_second: Option<u32>,
) -> anyhow::Result<SelfHosted> {
    let dir = crate::devstack::redis_server::TempDir::new()?;
    let root = dir.path().to_path_buf();
    let pki = DevPki::ensure(&root.join("pki"), DEV_TRUST_DOMAIN, &[])?;
    let keys = keyfiles::generate(&root.join("keys"), 30)?;
    let (redis_url, redis_mode, standalone, cluster) = if redis_cluster {
        let cluster = RedisCluster::start(3, 1).await?;
        (cluster.seed_url(), "cluster", None, Some(cluster))
    } else {
        let server = RedisServer::start(RedisOptions::default()).await?;
        (server.url(), "standalone", Some(server), None)
    };
    let (port, health, base) = (free_port()?, free_port()?, free_port()?);
    let (rewrap_keys, deletion) = match rewrap_per_second {
        Some(rate) => (
            format!("reload_interval_secs = 1\nrewrap_per_second = {rate}\n"),
            "\n[deletion]\nworker = true\npoll_interval_ms = 200\n",
        ),
        None => (String::new(), ""),
    };
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
{rewrap_keys}
[redis]
url = "{redis_url}"
mode = "{redis_mode}"
timeout_ms = 5000

[limits]
rate_per_second = 1000000000.0
burst = 1000000000.0
max_in_flight = 10000
request_timeout_ms = 30000

[[models]]
id = "{MODEL}"
dimension = {DIMENSION}
threshold = {THRESHOLD}

[tenants.demo]

[logging]
format = "json"
level = "warn"
{deletion}"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        ca = pki.ca_cert.display(),
        keyring = keys.keyring.display(),
        transform = keys.transform_secret.display(),
        sealing = keys.sealing_keys.display(),
        receipt = keys.receipt_signing_key.display(),
    );
    let config_path = root.join("facevault.toml");
    std::fs::write(&config_path, config)?;
    let exe = std::env::current_exe()?;
    let log = |name: &str| std::fs::File::create(root.join(name));
    let server = tokio::process::Command::new(&exe)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(log("server.log")?)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start facevault serve")?;
    let store_mode = if redis_cluster {
        crate::storage::RedisMode::Cluster
    } else {
        crate::storage::RedisMode::Standalone
    };
    let redis = match (standalone, cluster) {
        (Some(server), _) => {
            let baseline_addr: SocketAddr = format!("127.0.0.1:{base}").parse()?;
            let baseline = tokio::process::Command::new(&exe)
                .arg("bench-baseline")
                .arg("--config")
                .arg(&config_path)
                .arg("--listen")
                .arg(baseline_addr.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(log("baseline.log")?)
                .kill_on_drop(true)
                .spawn()
                .context("cannot start the baseline")?;
            wait_for_port(base).await?;
            BenchRedis::Standalone(Box::new(StandaloneStack {
                server,
                baseline,
                baseline_addr,
            }))
        }
        (None, Some(cluster)) => BenchRedis::Cluster { _nodes: cluster },
        (None, None) => unreachable!("one Redis was started"),
    };
    wait_for_port(port).await?;
    Ok(SelfHosted {
        _dir: dir,
        redis,
        server,
        server_addr: format!("127.0.0.1:{port}").parse()?,
        pki,
        keyring: keys.keyring,
        redis_url,
        redis_mode: store_mode,
    })
}

async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("nothing listens on 127.0.0.1:{port} after 10 s (see the bench's server log)")
}

async fn channels(addr: &str, ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Vec<Channel>> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?,
        ))
        .identity(Identity::from_pem(
            std::fs::read(cert)?,
            std::fs::read(key)?,
        ))
        .domain_name("localhost");
    let mut out = Vec::new();
    for _ in 0..CHANNELS {
        let channel = Channel::from_shared(format!("https://{addr}"))?
            .tls_config(tls.clone())?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        out.push(channel);
    }
    Ok(out)
}

/// A reproducible face per subject; a probe is another capture of it.
fn face(subject: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(subject as u64);
    (0..DIMENSION).map(|_| rng.random::<f32>() - 0.5).collect()
}

fn capture(subject: usize, n: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n ^ 0x5eed);
    face(subject)
        .into_iter()
        .map(|v| v + 0.1 * (rng.random::<f32>() - 0.5))
        .collect()
}

fn consent() -> proto::Consent {
    proto::Consent {
        consent_id: "bench".into(),
        purposes: vec!["login".into()],
        granted_at: Some(crate::vault::timestamp(crate::vault::now_unix_ms() - 1000)),
        method: proto::ConsentMethod::SeparateInApp as i32,
        notice_version: "bench".into(),
        off_device_storage: true,
        subject_under_14: false,
    }
}

/// Runs `call` from `concurrency` workers until `duration` passes or a worker's
/// call returns None (its input ran out), with a progress line per second.
async fn timed<F, Fut>(
    label: &str,
    concurrency: usize,
    duration: Duration,
    quiet: bool,
    call: F,
) -> PhaseStats
where
    F: Fn(usize) -> Option<Fut> + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    timed_samples(label, concurrency, duration, quiet, call)
        .await
        .stats()
}

/// Every call of a timed phase, with when it started, so that a part of the
/// phase can be measured on its own (`Samples::window`).
struct Samples {
    started: Instant,
    elapsed: Duration,
    /// (start, as an offset from `started`; latency in µs) of each successful call.
    ok: Vec<(Duration, u32)>,
    /// Start offsets of the failed calls.
    failed: Vec<Duration>,
}

impl Samples {
    fn stats(&self) -> PhaseStats {
        PhaseStats::from_samples(
            self.ok.iter().map(|&(_, l)| l).collect(),
            self.failed.len() as u64,
            self.elapsed,
        )
    }

    /// The calls that started in `[from, to)` (offsets from `started`), with
    /// the throughput over that span.
    fn window(&self, from: Duration, to: Duration) -> PhaseStats {
        let inside = |t: &Duration| (from..to).contains(t);
        PhaseStats::from_samples(
            self.ok
                .iter()
                .filter(|(t, _)| inside(t))
                .map(|&(_, l)| l)
                .collect(),
            self.failed.iter().filter(|t| inside(t)).count() as u64,
            to.saturating_sub(from),
        )
    }
}

/// `timed`, keeping every call's start and latency.
async fn timed_samples<F, Fut>(
    label: &str,
    concurrency: usize,
    duration: Duration,
    quiet: bool,
    call: F,
) -> Samples
where
    F: Fn(usize) -> Option<Fut> + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let progress = {
        let done = done.clone();
        let label = label.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !quiet {
                    eprintln!(
                        "  {label}: {:.0}/{:.0} s, {} calls",
                        started.elapsed().as_secs_f64(),
                        duration.as_secs_f64(),
                        done.load(Ordering::Relaxed)
                    );
                }
            }
        })
    };
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let call = call.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut ok = Vec::new();
                let mut failed = Vec::new();
                while Instant::now() < deadline {
                    let Some(fut) = call(worker) else { break };
                    let t = Instant::now();
                    if fut.await {
                        let latency = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        ok.push((t - started, latency));
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.push(t - started);
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for w in workers {
        if let Ok((o, f)) = w.await {
            ok.extend(o);
            failed.extend(f);
        }
    }
    let elapsed = started.elapsed();
    progress.abort();
    Samples {
        started,
        elapsed,
        ok,
        failed,
    }
}

fn rss_mib(pid: Option<u32>, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let suite = match args.suite.as_str() {
        "x25519" => Suite::X25519Sha256Aes256Gcm,
        "xwing" => Suite::XWingSha256Aes256Gcm,
        other => bail!("--suite {other:?}: use x25519 or xwing"),
    };
    if args.concurrency == 0 || args.subjects == 0 {
        bail!("--concurrency and --subjects must be positive");
    }
    if args.rewrap && args.target.is_some() {
        bail!(
            "--rewrap rotates the keyring of the server under test and needs its Redis: \
             it runs only against the bench's own stack (drop --target)"
        );
    }
    if let Some(events) = args.audit_events {
        return audit::run(events, args.json).await;
    }
    if let Some(subjects) = args.decommission {
        return decommission::run(subjects, args.json).await;
    }
    let quiet = args.json;
    let hosted = match &args.target {
        Some(_) => None,
        None => {
            eprintln!(
                "{}",
                if args.redis_cluster {
                    "starting a Redis Cluster and facevault serve …"
                } else {
                    "starting redis-server, facevault serve and the naive baseline …"
                }
            );
            Some(
                start_self_hosted(
                    args.redis_cluster,
                    args.rewrap.then_some(args.rewrap_per_second),
                )
                .await?,
            )
        }
    };
    let (addr, ca, cert, key, tenant, model) = match (&hosted, &args.target) {
        (Some(h), _) => (
            h.server_addr.to_string(),
            h.pki.ca_cert.clone(),
            h.pki.app.0.clone(),
            h.pki.app.1.clone(),
            "demo".to_owned(),
            MODEL.to_owned(),
        ),
        (None, Some(t)) => (
            t.clone(),
            args.ca.clone(),
            args.cert.clone(),
            args.key.clone(),
            args.tenant.clone(),
            args.target_model.clone(),
        ),
        (None, None) => unreachable!("no target and not self-hosted"),
    };
    let channels = channels(&addr, &ca, &cert, &key).await?;
    let client = |i: usize| FaceVaultClient::new(channels[i % CHANNELS].clone());
    // On a Redis Cluster no one pid stands for the store, and with --target
    // neither the server's nor Redis's pid is known.
    let mut budget = match &hosted {
        Some(SelfHosted {
            server,
            redis: BenchRedis::Standalone(stack),
            ..
        }) => {
            let conn = redis::Client::open(stack.server.url())?
                .get_multiplexed_async_connection()
                .await?;
            let procs = cpu::Procs {
                server: server.id(),
                redis: None,
                baseline: stack.baseline.id(),
            };
            cpu::Budget::new(procs, Some(conn)).await?
        }
        Some(h) => {
            let procs = cpu::Procs {
                server: h.server.id(),
                ..cpu::Procs::default()
            };
            cpu::Budget::new(procs, None).await?
        }
        None => cpu::Budget::new(cpu::Procs::default(), None).await?,
    };
    let keys = client(0)
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .context("GetSealingKeys failed")?
        .into_inner();
    let key = keys
        .keys
        .iter()
        .find(|k| k.suite == suite.as_str())
        .context("the server offers no key of this suite")?;
    let target = Arc::new(SealingTarget {
        key_id: key.key_id.clone(),
        suite,
        public_key: key.public_key.clone(),
    });
    let run_id: u32 = rand::random();
    let subject = move |i: usize| format!("bench-{run_id:08x}-{i}");

    // Enroll.
    eprintln!("enrolling {} subjects …", args.subjects);
    let next = Arc::new(AtomicUsize::new(0));
    let enroll = {
        let (next, target, tenant, model, subjects) = (
            next.clone(),
            target.clone(),
            tenant.clone(),
            model.clone(),
            args.subjects,
        );
        let clients: Vec<_> = (0..args.concurrency).map(client).collect();
        let phase = timed(
            "enroll",
            args.concurrency,
            Duration::from_secs(3600),
            quiet,
            move |w| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= subjects {
                    return None;
                }
                let mut c = clients[w].clone();
                let (target, tenant, model) = (target.clone(), tenant.clone(), model.clone());
                Some(async move {
                    let id = subject(i);
                    let values = face(i);
                    let Ok(sealed) = seal_embedding(
                        &target,
                        &PayloadSpec {
                            op: SealedFor::Enroll,
                            tenant: &tenant,
                            subject_id: &id,
                            model: &model,
                            values: &values,
                            sealed_at_unix_ms: crate::vault::now_unix_ms(),
                        },
                    ) else {
                        return false;
                    };
                    c.enroll(proto::EnrollRequest {
                        subject_id: id,
                        embedding: Some(sealed),
                        consent: Some(consent()),
                        replace: true,
                    })
                    .await
                    .is_ok()
                })
            },
        );
        budget.phase("enroll", phase).await
    };
    if enroll.errors > 0 {
        bail!("{} enrollments failed", enroll.errors);
    }

    // The gRPC + TLS floor on the same channels.
    let health = if hosted.is_some() || args.target.is_some() {
        eprintln!("health-check floor …");
        let hc: Vec<_> = (0..args.concurrency)
            .map(|i| {
                tonic_health::pb::health_client::HealthClient::new(channels[i % CHANNELS].clone())
            })
            .collect();
        let phase = timed("health", args.concurrency, args.duration, quiet, move |w| {
            let mut c = hc[w].clone();
            Some(async move {
                c.check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .is_ok_and(|r| r.into_inner().status == 1)
            })
        });
        Some(budget.phase("health", phase).await)
    } else {
        None
    };

    // The storage floor.
    let redis_get = match hosted.as_ref().map(|h| &h.redis) {
        Some(BenchRedis::Standalone(stack)) => {
            eprintln!("redis GET floor …");
            let conn = redis::Client::open(stack.server.url())?
                .get_multiplexed_async_connection()
                .await?;
            let mut c = conn.clone();
            let () = redis::cmd("SET")
                .arg("bench:floor")
                .arg(vec![7u8; 2048])
                .query_async(&mut c)
                .await?;
            let phase = timed(
                "redis GET",
                args.concurrency,
                args.duration,
                quiet,
                move |_| {
                    let mut c = conn.clone();
                    Some(async move {
                        redis::cmd("GET")
                            .arg("bench:floor")
                            .query_async::<Vec<u8>>(&mut c)
                            .await
                            .is_ok()
                    })
                },
            );
            Some(budget.phase("redis_get", phase).await)
        }
        Some(BenchRedis::Cluster { .. }) | None => None,
    };

    // Protected verify, with probes sealed beforehand (each probe is accepted
    // once: the server keeps a replay cache), one-shot or in sealing sessions.
    let seal_pool_with = |first: usize, count: usize, sessions: bool| {
        eprintln!(
            "sealing {count} probes{} …",
            if sessions { " in sealing sessions" } else { "" }
        );
        let mut session: Option<SealingSession> = None;
        (first..first + count)
            .map(|n| {
                let i = n % args.subjects;
                let id = subject(i);
                let values = capture(i, n as u64);
                let spec = PayloadSpec {
                    op: SealedFor::Verify,
                    tenant: &tenant,
                    subject_id: &id,
                    model: &model,
                    values: &values,
                    sealed_at_unix_ms: crate::vault::now_unix_ms(),
                };
                let probe = if sessions {
                    if (n - first).is_multiple_of(SESSION_MESSAGES) {
                        session = Some(SealingSession::start(
                            &target,
                            &tenant,
                            Duration::from_secs(600),
                        )?);
                    }
                    session
                        .as_mut()
                        .ok_or(crate::crypto::sealing::SealingError::Seal)?
                        .seal(&spec)?
                } else {
                    seal_embedding(&target, &spec)?
                };
                Ok(proto::VerifyRequest {
                    subject_id: id,
                    probe: Some(probe),
                    purpose: "login".into(),
                })
            })
            .collect::<Result<Vec<_>, crate::crypto::sealing::SealingError>>()
            .map(Arc::new)
    };
    let seal_pool = |first: usize, count: usize| seal_pool_with(first, count, false);
    let pool = seal_pool(0, PROBE_POOL)?;
    eprintln!("verify …");
    let phase = verify_phase(
        &channels,
        pool,
        args.concurrency,
        args.duration,
        quiet,
        "verify",
    );
    let verify = budget.phase("verify", phase).await;
    // Fresh subjects' probes too (n past the one-shot pool), sealed in sessions.
    let pool = seal_pool_with(2 * MAX_REWRAP_PROBES, PROBE_POOL, true)?;
    eprintln!("verify in sealing sessions …");
    let phase = verify_phase(
        &channels,
        pool,
        args.concurrency,
        args.duration,
        quiet,
        "verify_session",
    );
    let verify_session = budget.phase("verify_session", phase).await;
    let server_pid = hosted.as_ref().and_then(|h| h.server.id());
    let server_rss_mib = rss_mib(server_pid, "VmRSS:");
    let server_peak_rss_mib = rss_mib(server_pid, "VmHWM:");

    // Re-wrap, and verify while it runs.
    let rewrap = match (&hosted, args.rewrap) {
        (Some(h), true) => {
            // Enough probes to last the whole phase at the rate verify had.
            let count = ((verify.throughput_per_s * args.duration.as_secs_f64() * 1.25) as usize)
                .clamp(PROBE_POOL, MAX_REWRAP_PROBES);
            let pool = seal_pool(PROBE_POOL, count)?;
            let store = crate::storage::Store::connect(&crate::storage::RedisTarget {
                url: &h.redis_url,
                mode: h.redis_mode,
                tls: crate::storage::RedisTls::default(),
                timeout: Duration::from_secs(10),
                replica_acks: 0,
            })?;
            let timeout = Duration::from_secs_f64(
                args.subjects as f64 / f64::from(args.rewrap_per_second) * 3.0 + 30.0,
            );
            let phase = verify_samples(
                &channels,
                pool,
                args.concurrency,
                args.duration,
                quiet,
                "verify-during-rewrap",
            );
            Some(
                rewrap::measure(
                    &store,
                    &h.keyring,
                    args.rewrap_per_second,
                    timeout,
                    &verify,
                    quiet,
                    phase,
                )
                .await?,
            )
        }
        _ => None,
    };

    // The naive baseline on the same stack.
    let baseline_verify = match &hosted {
        Some(SelfHosted {
            redis: BenchRedis::Standalone(stack),
            pki,
            ..
        }) => {
            eprintln!("naive baseline: enroll and verify …");
            let base = channels_to(&stack.baseline_addr.to_string(), pki).await?;
            for chunk in (0..args.subjects).collect::<Vec<_>>().chunks(256) {
                let calls = chunk.iter().map(|&i| {
                    let mut c = FaceVaultClient::new(base[i % CHANNELS].clone());
                    async move {
                        c.enroll(proto::EnrollRequest {
                            subject_id: subject(i),
                            embedding: Some(plain(&face(i))),
                            ..Default::default()
                        })
                        .await
                    }
                });
                for r in futures::future::join_all(calls).await {
                    r.context("baseline enroll failed")?;
                }
            }
            let pool = Arc::new(
                (0..PROBE_POOL)
                    .map(|n| {
                        let i = n % args.subjects;
                        proto::VerifyRequest {
                            subject_id: subject(i),
                            probe: Some(plain(&capture(i, n as u64))),
                            purpose: "login".into(),
                        }
                    })
                    .collect(),
            );
            let phase = verify_phase(
                &base,
                pool,
                args.concurrency,
                args.duration,
                quiet,
                "baseline verify",
            );
            Some(budget.phase("baseline_verify", phase).await)
        }
        Some(SelfHosted {
            redis: BenchRedis::Cluster { .. },
            ..
        })
        | None => None,
    };

    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let report = Report {
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        },
        settings: Settings {
            subjects: args.subjects,
            concurrency: args.concurrency,
            duration_s: args.duration.as_secs_f64(),
            suite: suite.as_str().to_owned(),
            dimension: DIMENSION,
            self_hosted: hosted.is_some(),
            redis_cluster: args.redis_cluster,
            rewrap: args.rewrap,
        },
        ratios: Ratios {
            verify_vs_health: ratio(
                Some(verify.throughput_per_s),
                health.as_ref().map(|h| h.throughput_per_s),
            ),
            verify_session_vs_health: ratio(
                Some(verify_session.throughput_per_s),
                health.as_ref().map(|h| h.throughput_per_s),
            ),
            verify_p99_vs_health_p99: ratio(Some(verify.p99_ms), health.as_ref().map(|h| h.p99_ms)),
            protected_vs_unprotected: ratio(
                Some(verify.throughput_per_s),
                baseline_verify.as_ref().map(|b| b.throughput_per_s),
            ),
            session_protected_vs_unprotected: ratio(
                Some(verify_session.throughput_per_s),
                baseline_verify.as_ref().map(|b| b.throughput_per_s),
            ),
        },
        enroll,
        health,
        redis_get,
        verify,
        verify_session,
        baseline_verify,
        server_rss_mib,
        server_peak_rss_mib,
        cpu_us_per_call: budget.cpu_us_per_call,
        redis_commands_per_call: budget.redis_commands_per_call,
        rewrap,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(mut h) = hosted {
        let _ = h.server.start_kill();
        if let BenchRedis::Standalone(mut stack) = h.redis {
            let _ = stack.baseline.start_kill();
            stack.server.stop().await;
        }
    }
    Ok(())
}

fn plain(values: &[f32]) -> proto::SealedEmbedding {
    proto::SealedEmbedding {
        ciphertext: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

async fn channels_to(addr: &str, pki: &DevPki) -> anyhow::Result<Vec<Channel>> {
    channels(addr, &pki.ca_cert, &pki.app.0, &pki.app.1).await
}

async fn verify_phase(
    channels: &[Channel],
    pool: Arc<Vec<proto::VerifyRequest>>,
    concurrency: usize,
    duration: Duration,
    quiet: bool,
    label: &str,
) -> PhaseStats {
    verify_samples(channels, pool, concurrency, duration, quiet, label)
        .await
        .stats()
}

async fn verify_samples(
    channels: &[Channel],
    pool: Arc<Vec<proto::VerifyRequest>>,
    concurrency: usize,
    duration: Duration,
    quiet: bool,
    label: &str,
) -> Samples {
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..concurrency)
        .map(|i| FaceVaultClient::new(channels[i % channels.len()].clone()))
        .collect();
    timed_samples(label, concurrency, duration, quiet, move |w| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let request = pool.get(n)?.clone();
        let mut c = clients[w].clone();
        Some(async move {
            c.verify(request)
                .await
                .is_ok_and(|r| r.into_inner().decision() == Decision::Match)
        })
    })
    .await
}

fn print_table(r: &Report) {
    println!(
        "\nfacevault bench: {} subjects, concurrency {}, {:.0} s per phase, suite {}, {} CPUs{}",
        r.settings.subjects,
        r.settings.concurrency,
        r.settings.duration_s,
        r.settings.suite,
        r.machine.cpus,
        if r.settings.redis_cluster {
            ", Redis Cluster (3 primaries)"
        } else {
            ""
        }
    );
    println!(
        "{:<21} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "phase", "calls/s", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"
    );
    let row = |name: &str, s: &Option<&PhaseStats>| match s {
        Some(s) => println!(
            "{:<21} {:>10.0} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name, s.throughput_per_s, s.errors, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms
        ),
        None => println!("{name:<21} {:>10}", "-"),
    };
    row("enroll", &Some(&r.enroll));
    row("health (floor)", &r.health.as_ref());
    row("redis GET (floor)", &r.redis_get.as_ref());
    row("verify", &Some(&r.verify));
    row("verify_session", &Some(&r.verify_session));
    row("naive baseline", &r.baseline_verify.as_ref());
    if let Some(w) = &r.rewrap {
        row("verify-during-rewrap", &Some(&w.during));
        if let Some(confirming) = &w.confirming {
            row("  confirming pass", &Some(confirming));
        }
        if let Some(after) = &w.after {
            row("  worker resting", &Some(after));
        }
        row("  (whole phase)", &Some(&w.phase));
    }
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let short = [
        Some(("verify", &r.verify)),
        Some(("verify_session", &r.verify_session)),
        r.rewrap
            .as_ref()
            .map(|w| ("verify-during-rewrap", &w.phase)),
    ];
    for (name, s) in short.into_iter().flatten() {
        if s.seconds < r.settings.duration_s * 0.95 {
            println!(
                "note: {name} ran {:.1} s of {:.0} s: its sealed probes ran out",
                s.seconds, r.settings.duration_s
            );
        }
    }
    println!(
        "\nratios: verify/health throughput {}, verify_session/health {}, verify p99/health p99 {}, \
         protected/unprotected {}, session protected/unprotected {}",
        f(r.ratios.verify_vs_health),
        f(r.ratios.verify_session_vs_health),
        f(r.ratios.verify_p99_vs_health_p99),
        f(r.ratios.protected_vs_unprotected),
        f(r.ratios.session_protected_vs_unprotected)
    );
    println!("CPU µs per call, server / redis / loadgen / baseline (- where not measured):");
    for (phase, cpu) in &r.cpu_us_per_call {
        println!("  {phase:<19} {}", cpu.brief());
    }
    for (phase, commands) in &r.redis_commands_per_call {
        let top: Vec<String> = commands
            .iter()
            .take(6)
            .map(|c| {
                format!(
                    "{} {:.1} µs ({:.2}×)",
                    c.command, c.us_per_call, c.calls_per_call
                )
            })
            .collect();
        println!(
            "Redis time per {phase} call, by command: {}",
            top.join(", ")
        );
    }
    println!(
        "server RSS: {} MiB now, {} MiB peak (after verify)",
        f(r.server_rss_mib),
        f(r.server_peak_rss_mib)
    );
    if let Some(w) = &r.rewrap {
        println!(
            "rewrap: {} DEKs in {:.2} s = {:.0} DEKs/s (limit {}/s)",
            w.deks, w.seconds, w.deks_per_second, w.limit_per_second
        );
        if let (Some(positions), Some(stall)) = (w.cursor_positions, w.cursor_longest_stall_s) {
            println!(
                "  the walk's cursor: {positions} positions seen, none held longer than {stall:.2} s"
            );
        }
        if w.walk_under_load_fraction < 0.99 {
            println!(
                "  note: verify ran during {:.0}% of the re-wrap only; the rest ran with the server otherwise idle",
                w.walk_under_load_fraction * 100.0
            );
        }
        println!(
            "  timed by the {}; {:.2} s from the rotation; one DEK census took {:.0} ms",
            if w.timing == "cursor" {
                "walk's cursor (to about one page)"
            } else {
                "census, from the rotation (an upper bound)"
            },
            w.seconds_from_rotation,
            w.census_ms
        );
        println!(
            "  verify before → during re-wrap: p99 {:.2} → {:.2} ms (ratio {}), {:.0} → {:.0} calls/s (ratio {}); \
             re-wrap overlapped {:.0}% of the verify-during-rewrap phase ({} calls during it)",
            w.verify_p99_ms_before,
            w.verify_p99_ms_during,
            f(w.p99_ratio),
            w.verify_calls_per_second_before,
            w.verify_calls_per_second_during,
            f(w.throughput_ratio),
            w.overlap_fraction * 100.0,
            w.during.calls
        );
        if let Some(seconds) = w.confirming_pass_seconds {
            println!(
                "  then the worker's confirming pass re-read every subject, moving nothing, in {seconds:.2} s"
            );
        }
        let versus = |name: &str, s: &Option<PhaseStats>| {
            if let Some(s) = s {
                println!(
                    "  same phase, {name}: p99 {:.2} ms, {:.0} calls/s (during/this: p99 {}, calls/s {})",
                    s.p99_ms,
                    s.throughput_per_s,
                    f((s.p99_ms > 0.0).then(|| w.during.p99_ms / s.p99_ms)),
                    f((s.throughput_per_s > 0.0)
                        .then(|| w.during.throughput_per_s / s.throughput_per_s)),
                );
            }
        };
        versus("confirming pass (reads only)", &w.confirming);
        versus("worker resting (control)", &w.after);
    }
}

/// `facevault bench-baseline`: the naive service in its own process, for `bench`.
pub async fn serve_baseline_process(config: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let settings = crate::config::Settings::load(config, &crate::config::Overrides::default())?;
    let tls = crate::grpc::tls::server_config(&crate::grpc::tls::TlsFiles {
        cert: &settings.tls.cert,
        key: &settings.tls.key,
        client_ca: &settings.tls.client_ca,
        crls: &settings.tls.crls,
    })?;
    let policy = Arc::new(crate::grpc::tls::IdentityPolicy {
        trust_domain: settings.server.trust_domain.clone(),
        allow_cn_fallback: false,
    });
    let threshold = settings.models.first().map_or(THRESHOLD, |m| m.threshold);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_baseline(listener, tls, policy, &settings.redis.url, threshold).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_keeps_the_calls_that_started_in_it() {
        let ms = Duration::from_millis;
        let samples = Samples {
            started: Instant::now(),
            elapsed: ms(4000),
            ok: (0..40)
                .map(|i| (ms(i * 100), 1000 * (i as u32 + 1)))
                .collect(),
            failed: vec![ms(50), ms(1050), ms(3050)],
        };
        let all = samples.stats();
        assert_eq!((all.calls, all.errors, all.throughput_per_s), (40, 3, 10.0));
        let w = samples.window(ms(1000), ms(3000));
        assert_eq!((w.calls, w.errors, w.seconds), (20, 1, 2.0));
        assert_eq!(w.throughput_per_s, 10.0);
        assert_eq!((w.p50_ms, w.p99_ms), (20.0, 30.0));
        assert_eq!(samples.window(ms(3000), ms(3000)).calls, 0);
    }
}
