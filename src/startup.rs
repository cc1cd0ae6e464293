//! Wiring: `Application::build` loads keys, binds ports and connects Redis;
//! `port()` tells which port was bound (tests bind port 0); `run_until_stopped`
//! serves until SIGTERM or Ctrl-C, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::audit::refusals::RefusalTally;
use crate::audit::{AuditReader, AuditSettings, AuditSink};
use crate::config::{ConfigProblems, LimitSettings, Problem, Settings};
use crate::crypto::live::{self, LiveKeys};
use crate::domain::Tenant;
use crate::domain::calendar::WorkingCalendar;
use crate::domain::deletion::DeletionPolicy;
use crate::grpc::admin_api::AdminApi;
use crate::grpc::audit_api::AuditLogApi;
use crate::grpc::facevault_api::FaceVaultApi;
use crate::grpc::layers::audit::AuditLayer;
use crate::grpc::layers::authenticate::AuthenticateLayer;
use crate::grpc::layers::detach::DetachLayer;
use crate::grpc::layers::load_shed::LoadShedLayer;
use crate::grpc::layers::rate_limit::{RateLimit, RateLimitLayer};
use crate::grpc::layers::trace::TraceLayer;
use crate::grpc::tls::{self, IdentityPolicy, TlsPaths};
use crate::proto::admin_server::AdminServer;
use crate::proto::audit_log_server::AuditLogServer;
use crate::proto::face_vault_server::{self, FaceVaultServer};
use crate::storage::Store;
use crate::vault::{Vault, VaultSettings};
use crate::worker::DeletionWorker;
use crate::worker::rewrap::RewrapWorker;

/// Largest gRPC message accepted: a sealed 4096-dimension embedding is ~17 KiB.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Health service name that reports the process alone (for liveness probes).
pub const LIVENESS_SERVICE: &str = "liveness";

/// What the audit writer and reader are built from.
struct AuditParts {
    store: Store,
    settings: AuditSettings,
    reader: AuditReader,
}

pub struct Application {
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    tls: tokio::sync::watch::Sender<Arc<rustls::ServerConfig>>,
    tls_paths: TlsPaths,
    tls_reload_interval: Duration,
    identity: Arc<IdentityPolicy>,
    /// The tenants served; certificates naming any other are refused.
    tenants: std::collections::BTreeSet<Tenant>,
    keys: Arc<LiveKeys>,
    key_reload_interval: Duration,
    vault: Arc<Vault>,
    audit: AuditParts,
    refusal_window: Duration,
    limits: LimitSettings,
    /// Poll interval of the in-process deletion worker, when it runs.
    deletion_worker: Option<Duration>,
    drain_timeout: Duration,
}

/// Everything `serve` reads and checks before it binds a port or sends Redis a
/// command: the listen addresses resolved, the key files and certificates
/// loaded, the Redis connection described, the deletion calendar and the key
/// epochs checked against it. `check-config` and `serve --check` run exactly
/// this, so they refuse what `serve` refuses; every problem is collected.
pub struct Preflight {
    settings: Settings,
    listen: SocketAddr,
    health_listen: Option<SocketAddr>,
    keys: LiveKeys,
    tls: (
        tokio::sync::watch::Sender<Arc<rustls::ServerConfig>>,
        TlsPaths,
    ),
    store: Store,
    deletion_policy: DeletionPolicy,
}

impl Preflight {
    pub async fn run(settings: Settings) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |path: &[&str], error: anyhow::Error| {
            problems.push(Problem::at(path, &format!("{error:#}")));
        };

        let listen = settings.server.listen.resolve().await;
        let health_listen = match &settings.server.health_listen {
            Some(addr) => addr.resolve().await.map(Some),
            None => Ok(None),
        };

        // Each file on its own first, so that every unreadable one is named.
        let k = &settings.keys;
        let key_files = [
            ("keyring", &k.keyring),
            ("transform_secret", &k.transform_secret),
            ("sealing_keys", &k.sealing_keys),
            ("receipt_signing_key", &k.receipt_signing_key),
        ];
        let mut key_files_ok = true;
        for (key, path) in key_files {
            if let Err(e) = crate::crypto::keyfiles::read_secret(path) {
                key_files_ok = false;
                problem(&["keys", key], e);
            }
        }
        let keys = if key_files_ok {
            LiveKeys::load(k.paths())
                .map_err(|e| problem(&["keys"], e))
                .ok()
        } else {
            None
        };

        let t = &settings.tls;
        let mut tls_files_ok = true;
        for (key, path) in [("cert", &t.cert), ("client_ca", &t.client_ca)]
            .into_iter()
            .chain(t.crls.iter().map(|p| ("crls", p)))
        {
            if let Err(e) = std::fs::File::open(path) {
                tls_files_ok = false;
                problem(
                    &["tls", key],
                    anyhow::anyhow!("cannot read {}: {e}", path.display()),
                );
            }
        }
        if let Err(e) = crate::crypto::keyfiles::read_secret(&t.key) {
            tls_files_ok = false;
            problem(&["tls", "key"], e);
        }
        let tls = if tls_files_ok {
            tls::reloading(TlsPaths {
                cert: t.cert.clone(),
                key: t.key.clone(),
                client_ca: t.client_ca.clone(),
                crls: t.crls.clone(),
            })
            .map_err(|e| problem(&["tls"], e))
            .ok()
        } else {
            None
        };

        let store = match settings
            .redis
            .target(Duration::from_millis(settings.redis.timeout_ms))
        {
            Ok(target) => Store::connect(&target)
                .map_err(|e| problem(&["redis", "url"], anyhow::anyhow!("invalid redis.url: {e}")))
                .ok(),
            Err(e) => {
                problem(&["redis"], e);
                None
            }
        };

        let deletion_policy = deletion_policy(&settings)
            .map_err(|(key, e)| problem(&["deletion", key], e))
            .ok();
        if let Some(policy) = &deletion_policy
            && let Err(e) = settings
                .keys
                .epoch_policy()
                .check(policy, chrono::Utc::now())
        {
            problem(&["keys", "epoch_days"], e.into());
        }

        if let Some(path) = &settings.audit.anchor_file
            && let Err(e) = check_anchor_file(path)
        {
            problem(&["audit", "anchor_file"], e);
        }

        let listen = listen.map_err(|e| problem(&["server", "listen"], e)).ok();
        let health_listen = health_listen
            .map_err(|e| problem(&["server", "health_listen"], e))
            .ok();
        match (listen, health_listen, keys, tls, store, deletion_policy) {
            (
                Some(listen),
                Some(health_listen),
                Some(keys),
                Some(tls),
                Some(store),
                Some(deletion_policy),
            ) if problems.is_empty() => Ok(Self {
                settings,
                listen,
                health_listen,
                keys,
                tls,
                store,
                deletion_policy,
            }),
            _ => Err(problems),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// One Redis round trip (PING) over the connection `serve` would use.
    pub async fn ping_redis(&self) -> anyhow::Result<()> {
        self.store.ping().await.context("redis did not answer PING")
    }
}

/// The anchor file is opened for appending at start-up: its directory must
/// exist, and the file, if there, must take appends. Nothing is created here.
fn check_anchor_file(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!("directory {} does not exist", dir.display());
    }
    if path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot append to {}", path.display()))?;
    }
    Ok(())
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let checked = Preflight::run(settings)
            .await
            .map_err(|problems| ConfigProblems {
                file: None,
                problems,
            })?;
        Self::from_preflight(checked).await
    }

    /// Binds the ports of an application whose configuration passed [`Preflight`].
    pub async fn from_preflight(checked: Preflight) -> anyhow::Result<Self> {
        let Preflight {
            settings,
            listen,
            health_listen,
            keys,
            tls: (tls, tls_paths),
            store,
            deletion_policy,
        } = checked;
        let keys = Arc::new(keys);
        let audit_settings = AuditSettings {
            retention: Duration::from_secs(u64::from(settings.audit.retention_days) * 86_400),
            checkpoint_interval: Duration::from_secs(settings.audit.checkpoint_interval_secs),
            anchor_file: settings.audit.anchor_file.clone(),
            max_batch: settings.audit.max_batch,
            queue_capacity: settings.audit.queue_capacity,
            ack_timeout: Duration::from_millis(settings.redis.timeout_ms * 3),
        };
        let audit_reader = AuditReader::new(
            store.clone(),
            keys.clone(),
            audit_settings.checkpoint_interval,
        )
        .with_retention(audit_settings.retention);
        let vault = Vault::new(
            keys.clone(),
            store.clone(),
            VaultSettings {
                models: settings.models(),
                lockout: settings.lockout_policy(),
                max_templates_per_subject: settings.templates.max_per_subject,
                replay_window: Duration::from_secs(settings.sealing.replay_window_secs),
                max_clock_skew: Duration::from_secs(settings.sealing.max_clock_skew_secs),
                session_cache_entries: std::num::NonZeroUsize::new(
                    settings.sealing.session_cache_entries,
                )
                .unwrap_or(std::num::NonZeroUsize::MIN),
                declared_tenants: settings.declared_tenants(),
                session_ttl: Duration::from_secs(settings.sealing.session_ttl_secs),
                tenants_exposing_scores: settings
                    .tenants
                    .iter()
                    .filter(|(_, t)| t.expose_scores)
                    .filter_map(|(name, _)| Tenant::try_from(name.as_str()).ok())
                    .collect(),
                deletion_policy,
                epoch_policy: settings.keys.epoch_policy(),
                rewrap_per_second: settings.keys.rewrap_per_second,
                ticket_retention: Duration::from_secs(
                    u64::from(settings.deletion.ticket_retention_days) * 86_400,
                ),
                claim_ttl: Duration::from_secs(settings.deletion.claim_ttl_secs),
                filing_threshold: settings.compliance.filing_threshold,
                filing_reference: settings.compliance.filing_reference.clone(),
                max_template_age: settings
                    .tenants
                    .iter()
                    .filter_map(|(name, t)| {
                        let days = t.max_template_age_days?;
                        Some((
                            Tenant::try_from(name.as_str()).ok()?,
                            Duration::from_secs(u64::from(days) * 86_400),
                        ))
                    })
                    .collect(),
                // verify_begin, verify_finish and the audit append, each within
                // the Redis deadline, plus a second for the CPU work.
                verify_bound: Duration::from_millis(settings.redis.timeout_ms * 3 + 1000),
            },
        );
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let health_listener = match health_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (health)"))?,
            ),
            None => None,
        };
        Ok(Self {
            listener,
            health_listener,
            tls,
            tls_paths,
            tls_reload_interval: Duration::from_secs(settings.tls.reload_interval_secs),
            identity: Arc::new(IdentityPolicy {
                trust_domain: settings.server.trust_domain.clone(),
                allow_cn_fallback: settings.server.allow_cn_fallback,
            }),
            tenants: settings.declared_tenants(),
            keys,
            key_reload_interval: Duration::from_secs(settings.keys.reload_interval_secs),
            vault: Arc::new(vault),
            audit: AuditParts {
                store,
                settings: audit_settings,
                reader: audit_reader,
            },
            refusal_window: Duration::from_secs(settings.audit.refusal_window_secs),
            limits: settings.limits.clone(),
            deletion_worker: settings
                .deletion
                .worker
                .then(|| Duration::from_millis(settings.deletion.poll_interval_ms)),
            drain_timeout: Duration::from_secs(settings.server.drain_timeout_secs),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn health_port(&self) -> Option<u16> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// The bound mTLS gRPC address (the configured one, with the port chosen
    /// when the config says 0).
    pub fn listen_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound plaintext health address, when there is a health listener.
    pub fn health_listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Liveness probes ask for "liveness": the process answers, whatever Redis
        // does, so an outage makes pods unready but never restarts them.
        reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        // The reporter starts out SERVING; until Redis has answered once, it is not.
        for service in ["", face_vault_server::SERVICE_NAME] {
            reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        let monitor = tokio::spawn(monitor_storage(self.vault.clone(), reporter));
        let worker = self
            .deletion_worker
            .map(|poll| tokio::spawn(DeletionWorker::new(self.vault.clone(), poll).run()));

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let health_task = self.health_listener.map(|listener| {
            let health_service = health_service.clone();
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move {
                Server::builder()
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stop,
                    )
                    .await
            })
        });

        let (audit_sink, audit_writer) = AuditSink::spawn(
            self.audit.store.clone(),
            self.keys.clone(),
            self.audit.settings.clone(),
        )?;
        let audit_sink_for_reader = audit_sink.clone();
        self.vault.attach_audit(audit_sink.clone());
        // The re-wrap worker verifies each tenant's log first (`worker::rewrap`),
        // so it starts once there is a writer to sign fresh heads.
        let rewrap = match self.deletion_worker {
            Some(poll) => {
                let reader = AuditReader::new(
                    self.audit.store.clone(),
                    self.keys.clone(),
                    self.audit.settings.checkpoint_interval,
                )
                .with_sink(audit_sink.clone());
                let anchor_file = self.audit.settings.anchor_file.clone();
                Some(tokio::spawn(
                    RewrapWorker::new(self.vault.clone(), reader, anchor_file, poll)?.run(),
                ))
            }
            None => None,
        };
        let (refusals, refusal_recorder) = RefusalTally::spawn(
            audit_sink.clone(),
            self.refusal_window,
            stopped(stop_rx.clone()),
        );
        let layers = tower::ServiceBuilder::new()
            .layer(TraceLayer)
            .layer(AuthenticateLayer::new(
                refusals.clone(),
                self.tenants.clone(),
            ))
            .layer(RateLimitLayer::new(
                RateLimit {
                    per_second: self.limits.rate_per_second,
                    burst: self.limits.burst,
                },
                refusals.clone(),
            ))
            .layer(LoadShedLayer::new(
                self.limits.max_in_flight,
                self.limits.in_flight_per_caller(),
                refusals.clone(),
            ))
            .layer(DetachLayer::new(Duration::from_millis(
                self.limits.request_timeout_ms,
            )))
            .layer(AuditLayer::new(audit_sink))
            .into_inner();
        let reloader = tokio::spawn(tls::reload_loop(
            self.tls_paths.clone(),
            self.tls.clone(),
            self.tls_reload_interval,
        ));
        let key_reloader = tokio::spawn(live::reload_loop(
            self.keys.clone(),
            self.key_reload_interval,
        ));
        let key_announcer = tokio::spawn(
            self.vault
                .clone()
                .announce_keys_in_use(self.key_reload_interval),
        );
        let (incoming, acceptor) = tls::incoming(
            self.listener,
            self.tls.subscribe(),
            self.identity,
            self.limits.transport_bounds(),
            refusals,
        );
        let audit_reader = Arc::new(self.audit.reader.with_sink(audit_sink_for_reader));
        let facevault =
            FaceVaultServer::new(FaceVaultApi::new(self.vault.clone(), audit_reader.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let admin = AdminServer::new(AdminApi::new(self.vault.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let audit = AuditLogServer::new(AuditLogApi::new(audit_reader))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let drain_timeout = self.drain_timeout;
        let mut stop_for_drain = stop_rx.clone();
        let serve = Server::builder()
            .max_concurrent_streams(self.limits.max_concurrent_streams)
            .layer(layers)
            .add_service(facevault)
            .add_service(admin)
            .add_service(audit)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx));
        tracing::info!("facevault serving");
        tokio::pin!(serve);
        let result = tokio::select! {
            result = &mut serve => result,
            _ = async {
                let _ = stop_for_drain.wait_for(|stop| *stop).await;
                tokio::time::sleep(drain_timeout).await;
            } => {
                tracing::warn!("drain timeout reached; closing remaining connections");
                Ok(())
            }
        };
        acceptor.abort();
        reloader.abort();
        key_reloader.abort();
        key_announcer.abort();
        self.vault.withdraw_keys_in_use().await;
        monitor.abort();
        // The last window of refusal counts is recorded before the writer ends.
        let _ = refusal_recorder.await;
        // The re-wrap worker holds a sink: it stops before the writer is
        // awaited (each of its writes is a compare-and-set, safe to cut).
        if let Some(rewrap) = rewrap {
            rewrap.abort();
            let _ = rewrap.await;
        }
        // An erasure still running fails to log and stays pending (the next
        // process carries it out); the writer's last sink is the server's.
        self.vault.detach_audit();
        // The server (and with it every audit sink) is gone, and so are the calls
        // still running detached: the writer flushes, signs final tree heads
        // and ends.
        if tokio::time::timeout(Duration::from_secs(5), audit_writer)
            .await
            .is_err()
        {
            tracing::error!("audit writer did not finish in time");
        }
        if let Some(worker) = worker {
            worker.abort();
        }
        if let Some(task) = health_task {
            task.abort();
        }
        result.context("gRPC server failed")?;
        tracing::info!("facevault stopped");
        Ok(())
    }
}

/// The statutory calendar and deletion policy; refuses a grace period that could
/// end less than two working days before a deadline. An error names the key.
fn deletion_policy(settings: &Settings) -> Result<DeletionPolicy, (&'static str, anyhow::Error)> {
    let tz = settings.time_zone();
    let calendar = match &settings.deletion.holiday_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read deletion.holiday_file {}", path.display()))
                .map_err(|e| ("holiday_file", e))?;
            WorkingCalendar::with_overrides(tz, &text)
                .with_context(|| format!("invalid holiday file {}", path.display()))
                .map_err(|e| ("holiday_file", e))?
        }
        None => WorkingCalendar::official(tz),
    };
    let now = chrono::Utc::now();
    let policy = DeletionPolicy::new(
        calendar,
        settings.deletion.working_days,
        Duration::from_secs(settings.deletion.grace_period_secs),
        now,
    )
    .map_err(|e| ("grace_period_secs", e.into()))?;
    let horizon = now.with_timezone(&tz).date_naive() + chrono::Days::new(60);
    if !policy.calendar().has_published_data(horizon) {
        tracing::warn!(
            %horizon,
            "no published holiday schedule within the next 60 days: deadlines there are provisional (law-fixed holidays only, nearby weekends counted as working days; never later than the official ones); add deletion.holiday_file"
        );
    }
    Ok(policy)
}

/// Health follows Redis: without it nothing can be served safely, so probes see
/// NOT_SERVING and load balancers route elsewhere.
async fn monitor_storage(vault: Arc<Vault>, reporter: HealthReporter) {
    let mut last: Option<bool> = None;
    loop {
        let reached = vault.store().ping().await;
        let up = reached.is_ok();
        if last != Some(up) {
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status(face_vault_server::SERVICE_NAME, status)
                .await;
            match reached {
                Ok(()) => tracing::info!(
                    redis = vault.store().redacted_url(),
                    "redis reachable: SERVING"
                ),
                // The error names the URL (without its password) and the cause.
                Err(error) => tracing::warn!(%error, "redis unreachable: NOT_SERVING"),
            }
            last = Some(up);
        }
        tokio::time::sleep(HEALTH_PROBE_INTERVAL).await;
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; draining");
}
