//! Configuration: one TOML file, then `FACEVAULT_*` environment variables and CLI
//! flags for the few values that differ per environment. Relative paths are
//! resolved against the config file's directory. The service refuses to start on
//! an insecure or inconsistent configuration, saying what to change.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::crypto::keyfiles::KeyPaths;
use crate::domain::{EmbeddingModel, LockoutPolicy, ModelId, Tenant};
use crate::storage::{RedisMode, RedisTarget, RedisTls};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub tls: TlsSettings,
    pub keys: KeySettings,
    pub redis: RedisSettings,
    #[serde(default)]
    pub sealing: SealingSettings,
    #[serde(default)]
    pub templates: TemplateSettings,
    #[serde(default)]
    pub lockout: LockoutSettings,
    pub models: Vec<ModelSettings>,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantSettings>,
    #[serde(default)]
    pub deletion: DeletionSettings,
    #[serde(default)]
    pub compliance: ComplianceSettings,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub limits: LimitSettings,
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetrySettings,
    #[serde(default)]
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
    pub listen: SocketAddr,
    /// Plaintext address serving only grpc.health.v1, for Kubernetes probes.
    pub health_listen: Option<SocketAddr>,
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
    /// `redis://` or `rediss://` URL; a password may be given in it.
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealingSettings {
    /// Sealed payloads older than this are refused as replays.
    pub replay_window_secs: u64,
    /// How far in the future a payload's sealed_at may be (client clock drift).
    pub max_clock_skew_secs: u64,
}

impl Default for SealingSettings {
    fn default() -> Self {
        Self {
            replay_window_secs: 300,
            max_clock_skew_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    pub max_per_subject: u32,
}

impl Default for TemplateSettings {
    fn default() -> Self {
        Self { max_per_subject: 5 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// mTLS gRPC listen address.
    #[arg(long, env = "FACEVAULT_LISTEN", hide_env_values = true)]
    pub listen: Option<SocketAddr>,
    /// Plaintext health-only listen address.
    #[arg(long, env = "FACEVAULT_HEALTH_LISTEN", hide_env_values = true)]
    pub health_listen: Option<SocketAddr>,
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
    pub fn load(path: &Path, overrides: &Overrides) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut settings: Settings = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        settings.resolve_paths(base);
        settings.apply(overrides);
        settings.validate()?;
        Ok(settings)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(listen) = o.listen {
            self.server.listen = listen;
        }
        if let Some(health) = o.health_listen {
            self.server.health_listen = Some(health);
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

    pub fn validate(&self) -> anyhow::Result<()> {
        if !crate::domain::caller::is_trust_domain(&self.server.trust_domain) {
            bail!(
                "server.trust_domain: {}",
                crate::domain::caller::TRUST_DOMAIN_RULE
            );
        }
        if self.server.listen.port() != 0 && Some(self.server.listen) == self.server.health_listen {
            bail!(
                "server.health_listen must differ from server.listen: the health port is plaintext"
            );
        }
        if !(self.redis.url.starts_with("redis://") || self.redis.url.starts_with("rediss://")) {
            bail!("redis.url must start with redis:// or rediss://");
        }
        if self.redis.url.starts_with("redis://") && !is_loopback_url(&self.redis.url) {
            tracing::warn!("redis.url is not TLS and not loopback: use rediss:// across a network");
        }
        if !(1..=3600).contains(&self.tls.reload_interval_secs) {
            bail!("tls.reload_interval_secs must be between 1 and 3600");
        }
        if !(10..=60_000).contains(&self.redis.timeout_ms) {
            bail!("redis.timeout_ms must be between 10 and 60000");
        }
        if self.redis.replica_acks > 16 {
            bail!("redis.replica_acks must be at most 16");
        }
        let redis_tls_files = self.redis.tls_ca.is_some()
            || self.redis.tls_client_cert.is_some()
            || self.redis.tls_client_key.is_some();
        if redis_tls_files && !self.redis.url.starts_with("rediss://") {
            bail!("redis.tls_ca and redis.tls_client_* need a rediss:// url");
        }
        if self.redis.tls_client_cert.is_some() != self.redis.tls_client_key.is_some() {
            bail!("redis.tls_client_cert and redis.tls_client_key go together");
        }
        let limits = &self.limits;
        if limits.max_connections == 0
            || limits.max_concurrent_streams == 0
            || limits.max_handshakes_per_peer == 0
        {
            bail!(
                "limits.max_connections, limits.max_concurrent_streams and limits.max_handshakes_per_peer must be > 0"
            );
        }
        if !(1..=60).contains(&limits.handshake_timeout_secs) {
            bail!("limits.handshake_timeout_secs must be between 1 and 60");
        }
        if limits.idle_timeout_secs * 1000 <= limits.request_timeout_ms {
            bail!("limits.idle_timeout_secs must be longer than limits.request_timeout_ms");
        }
        // Every admitted call's event must find room in the audit queue: the
        // call may already have changed state when it hands its event in.
        if self.audit.queue_capacity < limits.max_in_flight {
            bail!("audit.queue_capacity must be at least limits.max_in_flight");
        }
        if !(1..=3600).contains(&self.audit.refusal_window_secs) {
            bail!("audit.refusal_window_secs must be between 1 and 3600");
        }
        if !(10..=3600).contains(&self.sealing.replay_window_secs) {
            bail!("sealing.replay_window_secs must be between 10 and 3600");
        }
        if self.sealing.max_clock_skew_secs > 300 {
            bail!("sealing.max_clock_skew_secs must be at most 300");
        }
        if !(1..=100).contains(&self.templates.max_per_subject) {
            bail!("templates.max_per_subject must be between 1 and 100");
        }
        let l = &self.lockout;
        if l.free_failures == 0 || l.base_delay_secs == 0 || l.disable_after <= l.free_failures {
            bail!(
                "lockout: free_failures and base_delay_secs must be > 0 and disable_after > free_failures"
            );
        }
        if self.models.is_empty() {
            bail!("configure at least one [[models]] entry (id, dimension, threshold)");
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            ModelId::try_from(m.id.as_str()).map_err(|_| {
                anyhow::anyhow!(
                    "model id {:?} must be 1-64 characters of [A-Za-z0-9._-]",
                    m.id
                )
            })?;
            if !seen.insert(&m.id) {
                bail!("model {:?} is configured twice", m.id);
            }
            if !(1..=crate::domain::Embedding::MAX_DIMENSION).contains(&m.dimension) {
                bail!("model {:?}: dimension must be between 1 and 4096", m.id);
            }
            if !(m.threshold.is_finite() && m.threshold > 0.0 && m.threshold < 1.0) {
                bail!("model {:?}: threshold must be in (0, 1)", m.id);
            }
        }
        let d = &self.deletion;
        if d.time_zone.parse::<chrono_tz::Tz>().is_err() {
            bail!(
                "deletion.time_zone {:?} is not an IANA time zone",
                d.time_zone
            );
        }
        if !(3..=60).contains(&d.working_days) {
            bail!("deletion.working_days must be between 3 and 60 (the statute says 15)");
        }
        if d.ticket_retention_days < 180 {
            bail!("deletion.ticket_retention_days must be at least 180");
        }
        if !(10..=60_000).contains(&d.poll_interval_ms) || !(5..=3600).contains(&d.claim_ttl_secs) {
            bail!("deletion.poll_interval_ms must be 10-60000 and deletion.claim_ttl_secs 5-3600");
        }
        if self.audit.retention_days < 180 {
            bail!("audit.retention_days must be at least 180");
        }
        if self.audit.max_batch == 0
            || self.audit.queue_capacity < self.audit.max_batch
            || self.audit.checkpoint_interval_secs == 0
        {
            bail!(
                "audit: max_batch and checkpoint_interval_secs must be positive, queue_capacity >= max_batch"
            );
        }
        let l = &self.limits;
        if !(l.rate_per_second > 0.0
            && l.burst >= 1.0
            && l.max_in_flight > 0
            && l.request_timeout_ms >= 10)
        {
            bail!(
                "limits: rate_per_second > 0, burst >= 1, max_in_flight > 0, request_timeout_ms >= 10"
            );
        }
        let k = &self.keys;
        if !(1..=3600).contains(&k.reload_interval_secs) {
            bail!("keys.reload_interval_secs must be 1-3600");
        }
        if !(1..=1_000_000).contains(&k.rewrap_per_second) {
            bail!("keys.rewrap_per_second must be 1-1000000");
        }
        if k.epoch_days == 0 || k.max_rewrap_days == 0 {
            bail!(
                "keys.epoch_days and keys.max_rewrap_days must be positive (they are checked against the deletion deadline at start-up)"
            );
        }
        if self.compliance.filing_threshold == 0 {
            bail!("compliance.filing_threshold must be positive");
        }
        let reference = &self.compliance.filing_reference;
        if reference.chars().count() > 128 || reference.chars().any(char::is_control) {
            bail!(
                "compliance.filing_reference must be at most 128 characters, without control characters"
            );
        }
        for (name, t) in &self.tenants {
            if t.max_template_age_days == Some(0) {
                bail!("tenants.{name}.max_template_age_days must be positive");
            }
        }
        for name in self.tenants.keys() {
            Tenant::try_from(name.as_str())
                .map_err(|_| anyhow::anyhow!("tenant name {name:?} must be [a-z0-9-]"))?;
        }
        // Only declared tenants are served, so a config without any would
        // start a service that refuses every call: refuse it here instead.
        if self.tenants.is_empty() {
            bail!(
                "no tenants declared: add a [tenants.<name>] table for each tenant served (certificates naming any other tenant are refused)"
            );
        }
        Ok(())
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
        let mut s: Settings = toml::from_str(text)?;
        s.resolve_paths(Path::new("/etc/facevault"));
        s.validate()?;
        Ok(s)
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
