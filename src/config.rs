//! Configuration: one TOML file, then `FACEVAULT_*` environment variables and CLI
//! flags for the few values that differ per environment. Relative paths are
//! resolved against the config file's directory. The service refuses to start on
//! an insecure or inconsistent configuration, saying what to change.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::crypto::keyfiles::KeyPaths;
use crate::domain::{EmbeddingModel, LockoutPolicy, ModelId, Tenant};
use crate::storage::{RedisMode, RedisTarget, RedisTls};

/// The whole file. It is not deserialized in one piece: [`ConfigFile::settings`]
/// reads each table on its own so that every problem is reported at once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: TlsSettings,
    pub keys: KeySettings,
    pub redis: RedisSettings,
    pub sealing: SealingSettings,
    pub templates: TemplateSettings,
    pub lockout: LockoutSettings,
    pub models: Vec<ModelSettings>,
    pub tenants: BTreeMap<String, TenantSettings>,
    pub deletion: DeletionSettings,
    pub compliance: ComplianceSettings,
    pub audit: AuditConfig,
    pub limits: LimitSettings,
    pub telemetry: crate::telemetry::TelemetrySettings,
    pub logging: LoggingSettings,
}

/// The key files (the key store) and the key lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// The keyring: identity root and KEK epochs.
    pub keyring: PathBuf,
    /// The transform secret; a separate Secret from the keyring (split knowledge).
    pub transform_secret: PathBuf,
    /// HPKE sealing key seeds.
    pub sealing_keys: PathBuf,
    /// Ed25519 key that signs deletion receipts and audit checkpoints.
    pub receipt_signing_key: PathBuf,
    /// How often the key files are re-read. Default 10.
    #[serde(default = "KeySettings::default_reload_interval_secs")]
    pub reload_interval_secs: u64,
    /// Most DEKs re-wrapped per second by each process's worker. Default 2,000.
    #[serde(default = "KeySettings::default_rewrap_per_second")]
    pub rewrap_per_second: u32,
    /// Longest an epoch stays active before `keys rotate`. Default 7.
    #[serde(default = "KeySettings::default_epoch_days")]
    pub epoch_days: u32,
    /// Longest from a rotation to the old epoch's retirement. Default 1.
    #[serde(default = "KeySettings::default_max_rewrap_days")]
    pub max_rewrap_days: u32,
}

impl KeySettings {
    fn default_reload_interval_secs() -> u64 {
        10
    }
    fn default_rewrap_per_second() -> u32 {
        2_000
    }
    fn default_epoch_days() -> u32 {
        7
    }
    fn default_max_rewrap_days() -> u32 {
        1
    }

    pub fn paths(&self) -> KeyPaths {
        KeyPaths {
            keyring: self.keyring.clone(),
            transform_secret: self.transform_secret.clone(),
            sealing_keys: self.sealing_keys.clone(),
            receipt_signing_key: self.receipt_signing_key.clone(),
        }
    }

    pub fn epoch_policy(&self) -> crate::domain::key_epochs::EpochPolicy {
        crate::domain::key_epochs::EpochPolicy {
            epoch_days: self.epoch_days,
            max_rewrap_days: self.max_rewrap_days,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeletionSettings {
    /// IANA time zone deciding which calendar day a request falls on.
    pub time_zone: String,
    /// Working days between an account cancellation and its erasure deadline.
    pub working_days: u32,
    /// TOML file extending or overriding the official holiday schedule.
    pub holiday_file: Option<PathBuf>,
    /// Delay before a cancellation is erased; must end 2 working days before the deadline.
    pub grace_period_secs: u64,
    /// Run the deletion worker in this process.
    pub worker: bool,
    /// How often the worker looks for due tickets.
    pub poll_interval_ms: u64,
    /// How long a worker's claim on a ticket lasts before another may take it.
    pub claim_ttl_secs: u64,
    /// Days completed tickets (and receipts) are kept; at least 180.
    pub ticket_retention_days: u32,
}

impl Default for DeletionSettings {
    fn default() -> Self {
        Self {
            time_zone: "Asia/Shanghai".to_owned(),
            working_days: crate::domain::calendar::STATUTORY_WORKING_DAYS,
            holiday_file: None,
            grace_period_secs: 0,
            worker: true,
            poll_interval_ms: 1000,
            claim_ttl_secs: 60,
            ticket_retention_days: 180,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days audit events are kept; at least 180.
    pub retention_days: u32,
    /// How often each chain that grew gets a signed tree head (also at shutdown
    /// and whenever an auditor asks).
    pub checkpoint_interval_secs: u64,
    /// JSON Lines file every signed tree head is appended to: an anchor outside
    /// Redis. Unset: heads are anchored in the log (and OTLP logs) only.
    pub anchor_file: Option<std::path::PathBuf>,
    /// Most events appended in one group commit.
    pub max_batch: usize,
    /// Events waiting to be written; past it calls fail UNAVAILABLE (no unbounded queue).
    pub queue_capacity: usize,
    /// Refusals before admission (rate limit, load shed, no identity, refused TLS
    /// handshakes) are recorded as one event per caller and reason per window.
    pub refusal_window_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 180,
            checkpoint_interval_secs: 60,
            anchor_file: None,
            max_batch: 512,
            queue_capacity: 10_000,
            refusal_window_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Sustained calls per second allowed per client certificate.
    pub rate_per_second: f64,
    /// Calls a client may make in a burst above its rate.
    pub burst: f64,
    /// Calls in flight across all clients; past it calls fail UNAVAILABLE at once.
    pub max_in_flight: usize,
    /// Calls in flight from one client certificate (or one peer address without
    /// one); past it that caller's calls fail RESOURCE_EXHAUSTED at once, so one
    /// caller cannot hold every permit of `max_in_flight`. Unset: a quarter of
    /// `max_in_flight` (at least 1).
    pub max_in_flight_per_caller: Option<usize>,
    /// Longest a caller waits; past it DEADLINE_EXCEEDED. A call that has begun
    /// runs to its end all the same, and its audit event says what it did.
    pub request_timeout_ms: u64,
    /// TCP connections open at once (handshaking or established).
    pub max_connections: usize,
    /// HTTP/2 streams (calls) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// A TLS handshake not finished within this is dropped.
    pub handshake_timeout_secs: u64,
    /// TLS handshakes one peer address may have in progress at once.
    pub max_handshakes_per_peer: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout_secs: u64,
}

impl LimitSettings {
    /// `max_in_flight_per_caller`, or its default: a quarter of `max_in_flight`.
    pub fn in_flight_per_caller(&self) -> usize {
        self.max_in_flight_per_caller
            .unwrap_or(self.max_in_flight / 4)
            .max(1)
    }

    pub fn transport_bounds(&self) -> crate::grpc::tls::TransportBounds {
        crate::grpc::tls::TransportBounds {
            max_connections: self.max_connections,
            handshake_timeout: std::time::Duration::from_secs(self.handshake_timeout_secs),
            max_handshakes_per_peer: self.max_handshakes_per_peer,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            rate_per_second: 1000.0,
            burst: 2000.0,
            max_in_flight: 1024,
            max_in_flight_per_caller: None,
            request_timeout_ms: 5000,
            max_connections: 4096,
            max_concurrent_streams: 128,
            handshake_timeout_secs: 10,
            max_handshakes_per_peer: 64,
            idle_timeout_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceSettings {
    /// Subjects stored at which filing with the regulator is due (per tenant
    /// in its report, and across the deployment in the deployment report).
    pub filing_threshold: u64,
    /// The filing number once filed, shown in the reports; empty until then.
    pub filing_reference: String,
}

impl Default for ComplianceSettings {
    fn default() -> Self {
        Self {
            filing_threshold: 100_000,
            filing_reference: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// mTLS gRPC address (FaceVault, AuditLog, Health, reflection).
    pub listen: ListenAddr,
    /// Plaintext address serving only grpc.health.v1, for Kubernetes probes.
    pub health_listen: Option<ListenAddr>,
    /// Trust domain of caller SPIFFE ids: spiffe://<trust_domain>/tenant/<t>/role/<r>.
    pub trust_domain: String,
    /// Accept `CN=<tenant>:<role>` when a certificate has no SPIFFE URI SAN.
    #[serde(default)]
    pub allow_cn_fallback: bool,
    /// Time to drain in-flight calls on shutdown.
    #[serde(default = "default_drain_secs")]
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to.
    pub client_ca: PathBuf,
    /// PEM CRLs honoured for client certificates.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// How often the certificate, key, client CA and CRLs are re-read (rotation
    /// without restart).
    #[serde(default = "default_tls_reload_secs")]
    pub reload_interval_secs: u64,
}

fn default_tls_reload_secs() -> u64 {
    10
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL; a password may be given in it. May be left
    /// out of the file when `FACEVAULT_REDIS_URL` gives it.
    #[serde(default)]
    pub url: String,
    /// Deadline for any single Redis command; past it the call fails UNAVAILABLE.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// `standalone`, or `cluster` (then `url` names any one node of the cluster).
    #[serde(default)]
    pub mode: RedisMode,
    /// Replicas that must hold every durable write (enrollments, consent changes,
    /// cancellations, erasures, retention schedules, audit batches; `WAIT`) before
    /// it is acknowledged, so a failover loses none. 0 trusts the primary alone
    /// (Redis replication is asynchronous).
    #[serde(default)]
    pub replica_acks: u32,
    /// PEM CA bundle that signed the Redis server certificate (`rediss://` only);
    /// without it, the system roots.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, when Redis asks for mutual TLS.
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
}

/// `[redis]` may be left out when `FACEVAULT_REDIS_URL` gives the URL.
impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: default_redis_timeout_ms(),
            mode: RedisMode::default(),
            replica_acks: 0,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
        }
    }
}

/// The URL may carry the password (`FACEVAULT_REDIS_URL`): never printed.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"[redacted]")
            .field("timeout_ms", &self.timeout_ms)
            .field("mode", &self.mode)
            .field("replica_acks", &self.replica_acks)
            .field("tls_ca", &self.tls_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .finish()
    }
}

impl RedisSettings {
    /// Reads the TLS files and describes the connection; `timeout` is the deadline
    /// of each call (the CLI allows itself more than the service).
    pub fn target(&self, timeout: Duration) -> anyhow::Result<RedisTarget<'_>> {
        let read = |path: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()
        };
        Ok(RedisTarget {
            url: &self.url,
            mode: self.mode,
            tls: RedisTls {
                ca_pem: read(&self.tls_ca)?,
                client_cert_pem: read(&self.tls_client_cert)?,
                client_key_pem: read(&self.tls_client_key)?.map(Zeroizing::new),
            },
            timeout,
            replica_acks: self.replica_acks,
        })
    }
}

/// Every key may be left out (an older config names only the first two).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealingSettings {
    /// Sealed payloads older than this are refused as replays.
    pub replay_window_secs: u64,
    /// How far in the future a payload's sealed_at may be (client clock drift).
    pub max_clock_skew_secs: u64,
    /// Sealing sessions (`crypto::sessions`) this process remembers at most.
    pub session_cache_entries: usize,
    /// How long a sealing session lasts, from its first message.
    pub session_ttl_secs: u64,
}

impl Default for SealingSettings {
    fn default() -> Self {
        Self {
            replay_window_secs: 300,
            max_clock_skew_secs: 30,
            session_cache_entries: 100_000,
            session_ttl_secs: 600,
        }
    }
}

// Every key has its default, so a table may name only what it changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateSettings {
    pub max_per_subject: u32,
}

impl Default for TemplateSettings {
    fn default() -> Self {
        Self { max_per_subject: 5 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutSettings {
    pub free_failures: u32,
    pub base_delay_secs: u64,
    pub disable_after: u32,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        let p = LockoutPolicy::default();
        Self {
            free_failures: p.free_failures,
            base_delay_secs: p.base_delay.as_secs(),
            disable_after: p.disable_after,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    pub id: String,
    pub dimension: usize,
    /// Cosine-similarity threshold for MATCH, set for the model's false-match target.
    pub threshold: f32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Return the similarity score in VerifyResponse (off: scores help hill-climbing).
    #[serde(default)]
    pub expose_scores: bool,
    /// Erase templates older than this many days (minimum necessary); none by default.
    #[serde(default)]
    pub max_template_age_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    #[serde(default)]
    pub format: LogFormat,
    /// tracing filter, e.g. "info" or "facevault=debug,info".
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: default_log_level(),
        }
    }
}

fn default_drain_secs() -> u64 {
    10
}
fn default_redis_timeout_ms() -> u64 {
    1000
}
fn default_log_level() -> String {
    "info".to_owned()
}

/// Values that the environment or the command line set over the file. `--help`
/// names each variable but never shows its value (the Redis URL may carry a
/// password).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// mTLS gRPC listen address, host:port.
    #[arg(long, env = "FACEVAULT_LISTEN", hide_env_values = true)]
    pub listen: Option<ListenAddr>,
    /// Plaintext health-only listen address, host:port.
    #[arg(long, env = "FACEVAULT_HEALTH_LISTEN", hide_env_values = true)]
    pub health_listen: Option<ListenAddr>,
    /// Redis URL, redis:// or rediss://.
    #[arg(long, env = "FACEVAULT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Log format.
    #[arg(long, env = "FACEVAULT_LOG_FORMAT", hide_env_values = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info.
    #[arg(long = "log", env = "FACEVAULT_LOG", hide_env_values = true)]
    pub log_level: Option<String>,
}

impl Settings {
    /// Reads, parses and validates the file, then applies `overrides`; every
    /// problem is reported at once (see [`ConfigFile`]).
    pub fn load(path: &Path, overrides: &Overrides) -> anyhow::Result<Self> {
        Ok(ConfigFile::read(path)?.settings(overrides)?)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(listen) = &o.listen {
            self.server.listen = listen.clone();
        }
        if let Some(health) = &o.health_listen {
            self.server.health_listen = Some(health.clone());
        }
        if let Some(url) = &o.redis_url {
            self.redis.url = url.clone();
        }
        if let Some(format) = o.log_format {
            self.logging.format = format;
        }
        if let Some(level) = &o.log_level {
            self.logging.level = level.clone();
        }
    }

    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.tls.client_ca);
        self.tls.crls.iter_mut().for_each(fix);
        fix(&mut self.keys.keyring);
        fix(&mut self.keys.transform_secret);
        fix(&mut self.keys.sealing_keys);
        fix(&mut self.keys.receipt_signing_key);
        if let Some(p) = self.deletion.holiday_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.audit.anchor_file.as_mut() {
            fix(p);
        }
        for p in [
            &mut self.redis.tls_ca,
            &mut self.redis.tls_client_cert,
            &mut self.redis.tls_client_key,
        ] {
            if let Some(p) = p.as_mut() {
                fix(p);
            }
        }
    }

    /// Every inconsistent or insecure value, each with its key.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut check = |ok: bool, section: &str, key: &str, message: &str| {
            if !ok {
                out.push(Problem::at(&[section, key], message));
            }
        };
        check(
            crate::domain::caller::is_trust_domain(&self.server.trust_domain),
            "server",
            "trust_domain",
            &format!(
                "server.trust_domain: {}",
                crate::domain::caller::TRUST_DOMAIN_RULE
            ),
        );
        check(
            self.server.listen.port() == 0
                || Some(&self.server.listen) != self.server.health_listen.as_ref(),
            "server",
            "health_listen",
            "server.health_listen must differ from server.listen: the health port is plaintext",
        );
        let url = &self.redis.url;
        if url.is_empty() {
            check(
                false,
                "redis",
                "url",
                "redis.url is not set: set it here or in FACEVAULT_REDIS_URL",
            );
        } else {
            check(
                url.starts_with("redis://") || url.starts_with("rediss://"),
                "redis",
                "url",
                "redis.url (or FACEVAULT_REDIS_URL) must start with redis:// or rediss://",
            );
        }
        if url.starts_with("redis://") && !is_loopback_url(url) {
            tracing::warn!("redis.url is not TLS and not loopback: use rediss:// across a network");
        }
        check(
            (1..=3600).contains(&self.tls.reload_interval_secs),
            "tls",
            "reload_interval_secs",
            "tls.reload_interval_secs must be between 1 and 3600",
        );
        check(
            (10..=60_000).contains(&self.redis.timeout_ms),
            "redis",
            "timeout_ms",
            "redis.timeout_ms must be between 10 and 60000",
        );
        check(
            self.redis.replica_acks <= 16,
            "redis",
            "replica_acks",
            "redis.replica_acks must be at most 16",
        );
        let redis_tls_files = self.redis.tls_ca.is_some()
            || self.redis.tls_client_cert.is_some()
            || self.redis.tls_client_key.is_some();
        check(
            !redis_tls_files || url.starts_with("rediss://"),
            "redis",
            "url",
            "redis.tls_ca and redis.tls_client_* need a rediss:// url",
        );
        check(
            self.redis.tls_client_cert.is_some() == self.redis.tls_client_key.is_some(),
            "redis",
            "tls_client_key",
            "redis.tls_client_cert and redis.tls_client_key go together",
        );
        let limits = &self.limits;
        check(
            limits.max_connections > 0
                && limits.max_concurrent_streams > 0
                && limits.max_handshakes_per_peer > 0,
            "limits",
            "",
            "limits.max_connections, limits.max_concurrent_streams and limits.max_handshakes_per_peer must be > 0",
        );
        check(
            (1..=60).contains(&limits.handshake_timeout_secs),
            "limits",
            "handshake_timeout_secs",
            "limits.handshake_timeout_secs must be between 1 and 60",
        );
        check(
            limits.idle_timeout_secs * 1000 > limits.request_timeout_ms,
            "limits",
            "idle_timeout_secs",
            "limits.idle_timeout_secs must be longer than limits.request_timeout_ms",
        );
        // Every admitted call's event must find room in the audit queue: the
        // call may already have changed state when it hands its event in.
        check(
            self.audit.queue_capacity >= limits.max_in_flight,
            "audit",
            "queue_capacity",
            "audit.queue_capacity must be at least limits.max_in_flight",
        );
        check(
            (1..=3600).contains(&self.audit.refusal_window_secs),
            "audit",
            "refusal_window_secs",
            "audit.refusal_window_secs must be between 1 and 3600",
        );
        check(
            (10..=3600).contains(&self.sealing.replay_window_secs),
            "sealing",
            "replay_window_secs",
            "sealing.replay_window_secs must be between 10 and 3600",
        );
        check(
            self.sealing.max_clock_skew_secs <= 300,
            "sealing",
            "max_clock_skew_secs",
            "sealing.max_clock_skew_secs must be at most 300",
        );
        check(
            (1..=10_000_000).contains(&self.sealing.session_cache_entries),
            "sealing",
            "session_cache_entries",
            "sealing.session_cache_entries must be between 1 and 10000000",
        );
        check(
            (1..=3600).contains(&self.sealing.session_ttl_secs),
            "sealing",
            "session_ttl_secs",
            "sealing.session_ttl_secs must be between 1 and 3600",
        );
        check(
            (1..=100).contains(&self.templates.max_per_subject),
            "templates",
            "max_per_subject",
            "templates.max_per_subject must be between 1 and 100",
        );
        let l = &self.lockout;
        check(
            l.free_failures > 0 && l.base_delay_secs > 0 && l.disable_after > l.free_failures,
            "lockout",
            "",
            "lockout: free_failures and base_delay_secs must be > 0 and disable_after > free_failures",
        );
        let d = &self.deletion;
        check(
            d.time_zone.parse::<chrono_tz::Tz>().is_ok(),
            "deletion",
            "time_zone",
            &format!(
                "deletion.time_zone {:?} is not an IANA time zone",
                d.time_zone
            ),
        );
        check(
            (3..=60).contains(&d.working_days),
            "deletion",
            "working_days",
            "deletion.working_days must be between 3 and 60 (the statute says 15)",
        );
        check(
            d.ticket_retention_days >= 180,
            "deletion",
            "ticket_retention_days",
            "deletion.ticket_retention_days must be at least 180",
        );
        check(
            (10..=60_000).contains(&d.poll_interval_ms) && (5..=3600).contains(&d.claim_ttl_secs),
            "deletion",
            "",
            "deletion.poll_interval_ms must be 10-60000 and deletion.claim_ttl_secs 5-3600",
        );
        check(
            // The floor every trim-statement verifier holds statements to.
            u64::from(self.audit.retention_days) >= crate::audit::heads::MIN_RETENTION_DAYS,
            "audit",
            "retention_days",
            "audit.retention_days must be at least 180",
        );
        check(
            self.audit.max_batch > 0
                && self.audit.queue_capacity >= self.audit.max_batch
                && self.audit.checkpoint_interval_secs > 0,
            "audit",
            "",
            "audit: max_batch and checkpoint_interval_secs must be positive, queue_capacity >= max_batch",
        );
        let l = &self.limits;
        check(
            l.rate_per_second > 0.0
                && l.burst >= 1.0
                && l.max_in_flight > 0
                && l.request_timeout_ms >= 10,
            "limits",
            "",
            "limits: rate_per_second > 0, burst >= 1, max_in_flight > 0, request_timeout_ms >= 10",
        );
        check(
            l.max_in_flight_per_caller
                .is_none_or(|n| (1..=l.max_in_flight).contains(&n)),
            "limits",
            "max_in_flight_per_caller",
            "limits.max_in_flight_per_caller must be between 1 and limits.max_in_flight",
        );
        let k = &self.keys;
        check(
            (1..=3600).contains(&k.reload_interval_secs),
            "keys",
            "reload_interval_secs",
            "keys.reload_interval_secs must be 1-3600",
        );
        check(
            (1..=1_000_000).contains(&k.rewrap_per_second),
            "keys",
            "rewrap_per_second",
            "keys.rewrap_per_second must be 1-1000000",
        );
        check(
            k.epoch_days > 0 && k.max_rewrap_days > 0,
            "keys",
            "",
            "keys.epoch_days and keys.max_rewrap_days must be positive (they are checked against the deletion deadline at start-up)",
        );
        check(
            self.compliance.filing_threshold > 0,
            "compliance",
            "filing_threshold",
            "compliance.filing_threshold must be positive",
        );
        let reference = &self.compliance.filing_reference;
        check(
            reference.chars().count() <= 128 && !reference.chars().any(char::is_control),
            "compliance",
            "filing_reference",
            "compliance.filing_reference must be at most 128 characters, without control characters",
        );
        if self.models.is_empty() {
            out.push(Problem::at(
                &["models"],
                "configure at least one [[models]] entry (id, dimension, threshold)",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let mut model = |key: &str, message: String| {
                out.push(Problem::in_array("models", i, key, &message));
            };
            if ModelId::try_from(m.id.as_str()).is_err() {
                model(
                    "id",
                    format!(
                        "model id {:?} must be 1-64 characters of [A-Za-z0-9._-]",
                        m.id
                    ),
                );
            }
            if !seen.insert(&m.id) {
                model("id", format!("model {:?} is configured twice", m.id));
            }
            if !(1..=crate::domain::Embedding::MAX_DIMENSION).contains(&m.dimension) {
                model(
                    "dimension",
                    format!("model {:?}: dimension must be between 1 and 4096", m.id),
                );
            }
            if !(m.threshold.is_finite() && m.threshold > 0.0 && m.threshold < 1.0) {
                model(
                    "threshold",
                    format!("model {:?}: threshold must be in (0, 1)", m.id),
                );
            }
        }
        for (name, t) in &self.tenants {
            if Tenant::try_from(name.as_str()).is_err() {
                out.push(Problem::at(
                    &["tenants", name],
                    &format!("tenant name {name:?} must be [a-z0-9-]"),
                ));
            }
            if t.max_template_age_days == Some(0) {
                out.push(Problem::at(
                    &["tenants", name, "max_template_age_days"],
                    &format!("tenants.{name}.max_template_age_days must be positive"),
                ));
            }
        }
        // Only declared tenants are served, so a config without any would
        // start a service that refuses every call: refuse it here instead.
        if self.tenants.is_empty() {
            out.push(Problem::at(
                &["tenants"],
                "no tenants declared: add a [tenants.<name>] table for each tenant served (certificates naming any other tenant are refused)",
            ));
        }
        out
    }

    pub fn validate(&self) -> Result<(), ConfigProblems> {
        ConfigProblems::from_list(self.problems())
    }

    /// The tenants served: those declared under `[tenants.<name>]`.
    pub fn declared_tenants(&self) -> std::collections::BTreeSet<Tenant> {
        self.tenants
            .keys()
            .filter_map(|name| Tenant::try_from(name.as_str()).ok())
            .collect()
    }

    pub fn models(&self) -> Vec<EmbeddingModel> {
        self.models
            .iter()
            .filter_map(|m| {
                Some(EmbeddingModel {
                    id: ModelId::try_from(m.id.as_str()).ok()?,
                    dimension: m.dimension,
                    threshold: m.threshold,
                })
            })
            .collect()
    }

    pub fn lockout_policy(&self) -> LockoutPolicy {
        LockoutPolicy {
            free_failures: self.lockout.free_failures,
            base_delay: Duration::from_secs(self.lockout.base_delay_secs),
            disable_after: self.lockout.disable_after,
        }
    }

    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.deletion
            .time_zone
            .parse()
            .unwrap_or(crate::domain::calendar::DEFAULT_TIME_ZONE)
    }
}

/// A listen address as written: `ip:port` or `host:port` (e.g. `localhost:50051`).
/// A name is resolved with the system resolver when the service starts
/// ([`ListenAddr::resolve`]), so the check and the bind see the same address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddr {
    host: String,
    port: u16,
}

impl ListenAddr {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The first address the host resolves to (an IP address is taken as is).
    pub async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot resolve {:?}", self.host))?
            .next()
            .with_context(|| format!("{:?} resolves to no address", self.host))
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let needs = || {
            format!(
                "{text:?} is not host:port: a listen address needs a host (an IP address or a name such as localhost) and a port, e.g. \"0.0.0.0:50051\" or \"localhost:50051\""
            )
        };
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(needs)?;
        let port = port.parse::<u16>().map_err(|_| needs())?;
        let name_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
        if !name_ok {
            return Err(needs());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One step of a key path: a table key, or an entry of an array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// One thing wrong with the configuration, with where it is: `[section] key`
/// and, when the file has it, the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: Vec<Segment>,
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    /// A problem at a key path; empty steps are left out (`&["limits", ""]` is the table).
    pub fn at(path: &[&str], message: &str) -> Self {
        Self {
            path: path
                .iter()
                .filter(|k| !k.is_empty())
                .map(|k| Segment::Key((*k).to_owned()))
                .collect(),
            line: None,
            message: message.to_owned(),
        }
    }

    /// A problem in entry `index` of an array of tables (`[[models]]`).
    pub fn in_array(array: &str, index: usize, key: &str, message: &str) -> Self {
        let mut problem = Self::at(&[array], message);
        problem.path.push(Segment::Index(index));
        if !key.is_empty() {
            problem.path.push(Segment::Key(key.to_owned()));
        }
        problem
    }

    /// `[server] listen`, `[[models]] #2 threshold`, `[tenants.bank-a] expose_scores`.
    pub fn location(&self) -> String {
        let key = |s: &Segment| match s {
            Segment::Key(k) => k.clone(),
            Segment::Index(i) => format!("#{}", i + 1),
        };
        let (header, rest) = match self.path.as_slice() {
            [] => return String::new(),
            [Segment::Key(a), Segment::Index(i), rest @ ..] => {
                (format!("[[{a}]] #{}", i + 1), rest)
            }
            [Segment::Key(t), Segment::Key(name), rest @ ..] if t == "tenants" => {
                (format!("[tenants.{name}]"), rest)
            }
            [first, rest @ ..] => (format!("[{}]", key(first)), rest),
        };
        let rest: Vec<String> = rest.iter().map(key).collect();
        if rest.is_empty() {
            header
        } else {
            format!("{header} {}", rest.join("."))
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let location = self.location();
        match (location.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
            (false, Some(line)) => write!(f, "{location} (line {line}): {}", self.message),
            (false, None) => write!(f, "{location}: {}", self.message),
        }
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems {
    pub file: Option<PathBuf>,
    pub problems: Vec<Problem>,
}

impl ConfigProblems {
    pub fn from_list(problems: Vec<Problem>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self {
                file: None,
                problems,
            })
        }
    }
}

impl std::fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        let plural = if n == 1 { "problem" } else { "problems" };
        match &self.file {
            Some(file) => write!(f, "{n} {plural} in config file {}:", file.display())?,
            None => write!(f, "{n} configuration {plural}:")?,
        }
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// The tables a config file may hold, and whether each must be there.
const SECTIONS: [(&str, bool); 15] = [
    ("server", true),
    ("tls", true),
    ("keys", true),
    ("redis", false),
    ("sealing", false),
    ("templates", false),
    ("lockout", false),
    ("models", true),
    ("tenants", false),
    ("deletion", false),
    ("compliance", false),
    ("audit", false),
    ("limits", false),
    ("telemetry", false),
    ("logging", false),
];

/// A config file's text, kept so that every problem (from parsing, validation
/// or the start-up checks) can be given its line.
pub struct ConfigFile {
    pub path: PathBuf,
    text: String,
}

impl ConfigFile {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Ok(Self::from_text(path, text))
    }

    pub fn from_text(path: &Path, text: String) -> Self {
        Self {
            path: path.to_path_buf(),
            text,
        }
    }

    /// Parses every table on its own and collects every problem (syntax, unknown
    /// or missing tables and keys, wrong types, inconsistent values) instead of
    /// stopping at the first. Relative paths are resolved against the file's
    /// directory; `overrides` apply before validation.
    pub fn settings(&self, overrides: &Overrides) -> Result<Settings, ConfigProblems> {
        let (settings, problems) = self.unvalidated(overrides)?;
        ConfigProblems::from_list(problems).map_err(|e| self.locate(e.problems))?;
        Ok(settings)
    }

    /// The parsed settings with the problems validation found (not yet
    /// located), for a check that goes on to the start-up checks regardless.
    pub fn unvalidated(
        &self,
        overrides: &Overrides,
    ) -> Result<(Settings, Vec<Problem>), ConfigProblems> {
        let mut settings = self.parse().map_err(|p| self.locate(p))?;
        let base = self.path.parent().unwrap_or(Path::new("."));
        settings.resolve_paths(base);
        settings.apply(overrides);
        let problems = settings.problems();
        Ok((settings, problems))
    }

    /// Gives each problem its line (when the file has its key, or the table it
    /// belongs to) and the file's name.
    pub fn locate(&self, mut problems: Vec<Problem>) -> ConfigProblems {
        if let Ok(root) = toml::de::DeTable::parse(&self.text) {
            for problem in problems.iter_mut().filter(|p| p.line.is_none()) {
                problem.line = line_of_path(root.get_ref(), &problem.path)
                    .map(|offset| line_at(&self.text, offset));
            }
        }
        ConfigProblems {
            file: Some(self.path.clone()),
            problems,
        }
    }

    fn parse(&self) -> Result<Settings, Vec<Problem>> {
        use toml::de::{DeTable, DeValue};
        let (root, errors) = DeTable::parse_recoverable(&self.text);
        if !errors.is_empty() {
            return Err(errors
                .iter()
                .map(|e| Problem {
                    path: Vec::new(),
                    line: e.span().map(|s| line_at(&self.text, s.start)),
                    message: format!("invalid TOML: {}", e.message().trim()),
                })
                .collect());
        }
        let root = root.into_inner();
        let mut problems = Vec::new();
        for (key, _) in root.iter() {
            if !SECTIONS
                .iter()
                .any(|(name, _)| *name == key.get_ref().as_ref())
            {
                problems.push(Problem {
                    path: vec![Segment::Key(key.get_ref().to_string())],
                    line: Some(line_at(&self.text, key.span().start)),
                    message: "unknown table".to_owned(),
                });
            }
        }
        let value = |name: &str| {
            root.iter()
                .find(|(k, _)| k.get_ref().as_ref() == name)
                .map(|(_, v)| v.clone())
        };
        for (name, required) in SECTIONS {
            if required && value(name).is_none() {
                let message = if name == "models" {
                    "missing: add at least one [[models]] entry (id, dimension, threshold)"
                        .to_owned()
                } else {
                    format!("missing table: add [{name}]")
                };
                problems.push(Problem {
                    path: vec![Segment::Key(name.to_owned())],
                    line: None,
                    message,
                });
            }
        }
        // Each table (and each model, each tenant) is deserialized on its own,
        // so one mistake does not hide the others.
        // Each table (and each model, each tenant) is deserialized on its own,
        // so one mistake does not hide the others.
        let key = |name: &str| vec![Segment::Key(name.to_owned())];
        macro_rules! table {
            ($name:literal, $ty:ty, $missing:expr) => {
                match value($name) {
                    Some(v) => self.deserialize_each::<$ty>(v, key($name), &mut problems),
                    None => $missing,
                }
            };
        }
        let server = table!("server", ServerSettings, None);
        let tls = table!("tls", TlsSettings, None);
        let keys = table!("keys", KeySettings, None);
        let models = match value("models") {
            Some(v) => match v.get_ref() {
                DeValue::Array(entries) => {
                    let mut models = Some(Vec::new());
                    for (i, entry) in entries.iter().enumerate() {
                        let mut path = key("models");
                        path.push(Segment::Index(i));
                        let model = self.deserialize_each(entry.clone(), path, &mut problems);
                        if let (Some(models), Some(model)) = (models.as_mut(), model) {
                            models.push(model);
                        }
                    }
                    models
                }
                _ => {
                    problems.push(Problem {
                        path: key("models"),
                        line: Some(line_at(&self.text, v.span().start)),
                        message: "models must be an array of tables: [[models]]".to_owned(),
                    });
                    None
                }
            },
            None => None,
        };
        let tenants = match value("tenants") {
            Some(v) => match v.get_ref() {
                DeValue::Table(entries) => {
                    let mut tenants = BTreeMap::new();
                    for (name, entry) in entries.iter() {
                        let name = name.get_ref().to_string();
                        let path = vec![
                            Segment::Key("tenants".to_owned()),
                            Segment::Key(name.clone()),
                        ];
                        if let Some(t) = self.deserialize_each(entry.clone(), path, &mut problems) {
                            tenants.insert(name, t);
                        }
                    }
                    Some(tenants)
                }
                _ => {
                    problems.push(Problem {
                        path: key("tenants"),
                        line: Some(line_at(&self.text, v.span().start)),
                        message: "tenants must be tables: [tenants.<name>]".to_owned(),
                    });
                    None
                }
            },
            None => Some(BTreeMap::new()),
        };
        let redis = table!("redis", RedisSettings, Some(Default::default()));
        let sealing = table!("sealing", SealingSettings, Some(Default::default()));
        let templates = table!("templates", TemplateSettings, Some(Default::default()));
        let lockout = table!("lockout", LockoutSettings, Some(Default::default()));
        let deletion = table!("deletion", DeletionSettings, Some(Default::default()));
        let compliance = table!("compliance", ComplianceSettings, Some(Default::default()));
        let audit = table!("audit", AuditConfig, Some(Default::default()));
        let limits = table!("limits", LimitSettings, Some(Default::default()));
        let telemetry = table!(
            "telemetry",
            crate::telemetry::TelemetrySettings,
            Some(Default::default())
        );
        let logging = table!("logging", LoggingSettings, Some(Default::default()));
        match (
            server, tls, keys, redis, sealing, templates, lockout, models, tenants, deletion,
            compliance, audit, limits, telemetry, logging,
        ) {
            (
                Some(server),
                Some(tls),
                Some(keys),
                Some(redis),
                Some(sealing),
                Some(templates),
                Some(lockout),
                Some(models),
                Some(tenants),
                Some(deletion),
                Some(compliance),
                Some(audit),
                Some(limits),
                Some(telemetry),
                Some(logging),
            ) if problems.is_empty() => Ok(Settings {
                server,
                tls,
                keys,
                redis,
                sealing,
                templates,
                lockout,
                models,
                tenants,
                deletion,
                compliance,
                audit,
                limits,
                telemetry,
                logging,
            }),
            _ => Err(problems),
        }
    }
}

impl ConfigFile {
    /// Deserializes one table. On an error at one of its keys it reports the
    /// error, drops that key and tries again, so that every bad key of the
    /// table is reported, not only the first.
    fn deserialize_each<T: serde::de::DeserializeOwned>(
        &self,
        mut value: toml::Spanned<toml::de::DeValue<'_>>,
        prefix: Vec<Segment>,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        let mut dropped: Vec<String> = Vec::new();
        // Bounded: each round drops one key of a finite table.
        loop {
            let error = match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
                Ok(t) => return dropped.is_empty().then_some(t),
                Err(error) => error,
            };
            let message = error.message().trim().to_owned();
            // A key dropped for its own error now reads as missing: said already.
            if dropped
                .iter()
                .any(|k| message == format!("missing field `{k}`"))
            {
                return None;
            }
            let relative = error
                .span()
                .map(|s| path_in(value.get_ref(), s.start))
                .unwrap_or_default();
            let mut path = prefix.clone();
            path.extend(relative.iter().cloned());
            problems.push(Problem {
                path,
                line: error.span().map(|s| line_at(&self.text, s.start)),
                message,
            });
            match (relative.first(), value.get_mut()) {
                (Some(Segment::Key(bad)), toml::de::DeValue::Table(table)) => {
                    table.remove(bad.as_str());
                    dropped.push(bad.clone());
                }
                _ => return None,
            }
        }
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Byte offset of the key a path names, or of the nearest table that holds it;
/// `None` when not even its top-level table is in the file.
fn line_of_path(root: &toml::de::DeTable<'_>, path: &[Segment]) -> Option<usize> {
    use toml::de::DeValue;
    let (Segment::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (key, mut value) = root.iter().find(|(k, _)| k.get_ref().as_ref() == first)?;
    let mut offset = match value.get_ref() {
        DeValue::Table(_) | DeValue::Array(_) if !rest.is_empty() => value.span().start,
        _ => key.span().start,
    };
    for segment in rest {
        let next = match (segment, value.get_ref()) {
            (Segment::Key(k), DeValue::Table(t)) => t
                .iter()
                .find(|(name, _)| name.get_ref().as_ref() == k)
                .map(|(name, v)| (name.span().start, v)),
            (Segment::Index(i), DeValue::Array(a)) => a.get(*i).map(|v| (v.span().start, v)),
            _ => None,
        };
        match next {
            Some((start, v)) => {
                offset = start;
                value = v;
            }
            None => break,
        }
    }
    Some(offset)
}

/// A step into a table or array: the step, the key's span (tables only), the value.
type Child<'a, 'i> = (
    Segment,
    Option<std::ops::Range<usize>>,
    &'a toml::Spanned<toml::de::DeValue<'i>>,
);

/// The key path, inside `value`, of the innermost key or value that holds byte `at`.
fn path_in(value: &toml::de::DeValue<'_>, at: usize) -> Vec<Segment> {
    use toml::de::DeValue;
    fn holds(span: std::ops::Range<usize>, at: usize) -> bool {
        span.start <= at && at < span.end.max(span.start + 1)
    }
    // Tables opened by a header do not span their keys: search them all.
    fn walk(value: &DeValue<'_>, at: usize, path: &mut Vec<Segment>) -> bool {
        let children: Vec<Child<'_, '_>> = match value {
            DeValue::Table(t) => t
                .iter()
                .map(|(k, v)| (Segment::Key(k.get_ref().to_string()), Some(k.span()), v))
                .collect(),
            DeValue::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (Segment::Index(i), None, v))
                .collect(),
            _ => return false,
        };
        for (segment, key_span, child) in children {
            if key_span.is_some_and(|s| holds(s, at)) {
                path.push(segment);
                return true;
            }
            path.push(segment);
            if walk(child.get_ref(), at, path) || holds(child.span(), at) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    walk(value, at, &mut path);
    path
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or("");
    let host = rest.rsplit('@').next().unwrap_or("");
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:50051"
health_listen = "127.0.0.1:50052"
trust_domain = "example.org"

[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"

[keys]
keyring = "keyring.json"
transform_secret = "transform.key"
sealing_keys = "sealing-keys.json"
receipt_signing_key = "receipt-signing.key"

[redis]
url = "redis://127.0.0.1:6379"

[[models]]
id = "demo-512"
dimension = 512
threshold = 0.5

[tenants.demo]
"#;

    fn parse(text: &str) -> anyhow::Result<Settings> {
        Ok(problems_of(text).settings(&Overrides::default())?)
    }

    fn problems_of(text: &str) -> ConfigFile {
        ConfigFile::from_text(Path::new("/etc/facevault/facevault.toml"), text.to_owned())
    }

    /// Every problem as (location, line), in order.
    fn located(text: &str) -> Vec<(String, Option<usize>, String)> {
        let err = problems_of(text)
            .settings(&Overrides::default())
            .unwrap_err();
        err.problems
            .iter()
            .map(|p| (p.location(), p.line, p.message.clone()))
            .collect()
    }

    #[test]
    fn every_missing_table_and_key_is_reported_at_once() {
        let text = MINIMAL
            .replace("trust_domain = \"example.org\"\n", "")
            .replace(
                "[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n",
                "",
            )
            .replace(
                "[[models]]\nid = \"demo-512\"\ndimension = 512\nthreshold = 0.5\n",
                "",
            );
        let problems = located(&text);
        let locations: Vec<_> = problems
            .iter()
            .map(|(l, line, _)| (l.as_str(), *line))
            .collect();
        // The server table starts on line 2; the missing top-level tables have no line.
        assert_eq!(
            locations,
            [("[tls]", None), ("[models]", None), ("[server]", Some(2))],
            "{problems:#?}"
        );
        assert!(problems[2].2.contains("trust_domain"), "{problems:#?}");
        let shown = problems_of(&text)
            .settings(&Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            shown.starts_with("3 problems in config file /etc/facevault/facevault.toml:"),
            "{shown}"
        );
    }

    #[test]
    fn every_bad_key_of_every_table_is_reported_with_its_line() {
        let text = MINIMAL
            .replace("listen = \"127.0.0.1:50051\"", "listen = \"127.0.0.1\"")
            .replace(
                "[keys]\n",
                "[keys]\nepoch_dayz = 3\nrewrap_per_second = \"fast\"\n",
            )
            .replace("threshold = 0.5", "threshold = \"high\"")
            .replace("[tenants.demo]", "[tenants.demo]\nexpose_scores = 1");
        let problems = located(&text);
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.starts_with(needle))
                .map(|i| i + 1)
        };
        let got: Vec<_> = problems
            .iter()
            .map(|(l, line, _)| (l.clone(), *line))
            .collect();
        assert_eq!(
            got,
            [
                ("[server] listen".to_owned(), line_of("listen =")),
                ("[keys] epoch_dayz".to_owned(), line_of("epoch_dayz")),
                (
                    "[keys] rewrap_per_second".to_owned(),
                    line_of("rewrap_per_second")
                ),
                ("[[models]] #1 threshold".to_owned(), line_of("threshold")),
                (
                    "[tenants.demo] expose_scores".to_owned(),
                    line_of("expose_scores")
                ),
            ],
            "{problems:#?}"
        );
        assert!(problems[0].2.contains("host:port"), "{problems:#?}");
    }

    #[test]
    fn inconsistent_values_are_all_reported_with_their_keys() {
        let text = MINIMAL
            .replace("threshold = 0.5", "threshold = 1.5")
            .replace(
                "[tenants.demo]",
                "[tenants.demo]\n[tenants.Bad]\n[templates]\nmax_per_subject = 0",
            );
        let got: Vec<_> = located(&text)
            .into_iter()
            .map(|(l, line, _)| (l, line))
            .collect();
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.starts_with(needle))
                .map(|i| i + 1)
        };
        assert_eq!(
            got,
            [
                (
                    "[templates] max_per_subject".to_owned(),
                    line_of("max_per_subject")
                ),
                ("[[models]] #1 threshold".to_owned(), line_of("threshold")),
                ("[tenants.Bad]".to_owned(), line_of("[tenants.Bad]")),
            ]
        );
    }

    #[test]
    fn unknown_tables_and_bad_syntax_are_located() {
        let got = located(&format!("{MINIMAL}\n[server2]\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "[server2]");
        assert_eq!(got[0].2, "unknown table");
        let got = located("[server\nlisten = 1\n");
        assert!(!got.is_empty() && got[0].1 == Some(1), "{got:?}");
    }

    #[test]
    fn listen_takes_host_and_port() {
        let addr: ListenAddr = "localhost:50061".parse().unwrap();
        assert_eq!(
            (addr.to_string(), addr.port()),
            ("localhost:50061".to_owned(), 50061)
        );
        let v6: ListenAddr = "[::1]:7".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:7");
        for bad in [
            "localhost",
            "127.0.0.1",
            ":50051",
            "host:port",
            "a b:1",
            "localhost:70000",
        ] {
            let err = bad.parse::<ListenAddr>().unwrap_err();
            assert!(
                err.contains("needs a host") && err.contains("and a port"),
                "{bad}: {err}"
            );
        }
        let s = parse(&MINIMAL.replace("127.0.0.1:50051", "localhost:50051")).unwrap();
        assert_eq!(s.server.listen.to_string(), "localhost:50051");
    }

    #[test]
    fn the_redis_url_may_come_from_the_environment_alone() {
        let text = MINIMAL.replace("[redis]\nurl = \"redis://127.0.0.1:6379\"\n", "");
        let got = located(&text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].2.contains("FACEVAULT_REDIS_URL"), "{got:?}");
        let overrides = Overrides {
            redis_url: Some("redis://127.0.0.1:6379".to_owned()),
            ..Overrides::default()
        };
        problems_of(&text).settings(&overrides).unwrap();
    }

    #[test]
    fn relative_paths_are_resolved_against_the_config_files_directory() {
        let s = parse(&format!(
            "{MINIMAL}\n[audit]\nanchor_file = \"anchors.jsonl\"\n"
        ))
        .unwrap();
        assert_eq!(
            s.audit.anchor_file,
            Some(PathBuf::from("/etc/facevault/anchors.jsonl"))
        );
    }

    #[test]
    fn minimal_config_gets_defaults_and_absolute_paths() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.templates.max_per_subject, 5);
        assert_eq!(s.sealing.replay_window_secs, 300);
        assert_eq!(s.lockout_policy(), LockoutPolicy::default());
        assert_eq!(s.tls.cert, PathBuf::from("/etc/facevault/server.pem"));
    }

    #[test]
    fn a_table_may_name_only_the_keys_it_changes() {
        let s = parse(&format!(
            "{MINIMAL}\n[lockout]\nfree_failures = 3\n\n[templates]\n"
        ))
        .unwrap();
        assert_eq!(s.lockout.free_failures, 3);
        let d = LockoutSettings::default();
        assert_eq!(
            (s.lockout.base_delay_secs, s.lockout.disable_after),
            (d.base_delay_secs, d.disable_after)
        );
        assert_eq!(s.templates.max_per_subject, 5);
    }

    #[test]
    fn debug_output_never_shows_the_redis_password() {
        let s = parse(&MINIMAL.replace("redis://127.0.0.1", "redis://:hunter2@127.0.0.1")).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn refuses_inconsistent_configs() {
        let cases = [
            (MINIMAL.replace("50052", "50051"), "health_listen"),
            (MINIMAL.replace("redis://", "http://"), "redis.url"),
            (
                MINIMAL.replace("threshold = 0.5", "threshold = 1.5"),
                "threshold",
            ),
            (
                MINIMAL.replace("dimension = 512", "dimension = 0"),
                "dimension",
            ),
            (MINIMAL.replace("example.org", "bad/domain"), "trust_domain"),
            (
                MINIMAL.replace("example.org", "Example.org"),
                "trust_domain",
            ),
            (
                format!("{MINIMAL}\n[templates]\nmax_per_subject = 0\n"),
                "max_per_subject",
            ),
            (format!("{MINIMAL}\n[tenants.Bad]\n"), "tenant"),
            (MINIMAL.replace("[tenants.demo]", ""), "no tenants declared"),
            (
                MINIMAL.replace("[redis]", "[redis]\nmode = \"sentinel\""),
                "mode",
            ),
            (
                MINIMAL.replace("[redis]", "[redis]\ntls_ca = \"ca.pem\""),
                "rediss://",
            ),
            (
                MINIMAL.replace("[redis]", "[redis]\nreplica_acks = 99"),
                "replica_acks",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_in_flight = 20000\n"),
                "queue_capacity",
            ),
            (
                format!("{MINIMAL}\n[limits]\nidle_timeout_secs = 1\n"),
                "idle_timeout_secs",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_in_flight_per_caller = 2000\n"),
                "max_in_flight_per_caller",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_in_flight_per_caller = 0\n"),
                "max_in_flight_per_caller",
            ),
            (
                format!("{MINIMAL}\n[limits]\nmax_handshakes_per_peer = 0\n"),
                "max_handshakes_per_peer",
            ),
            (
                format!("{MINIMAL}\n[audit]\nrefusal_window_secs = 0\n"),
                "refusal_window_secs",
            ),
        ];
        for (text, needle) in cases {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(
            parse(&format!("{MINIMAL}\n[server2]\n")).is_err(),
            "unknown sections are refused"
        );
    }
}
