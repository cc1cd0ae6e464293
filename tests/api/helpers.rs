//! `spawn_app()`: a real facevault on port 0 with a private real redis-server, a
//! fresh dev PKI and fresh keys in a temp dir, and real mTLS clients.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use facevault::client::{ClientConfig, FaceVault, PayloadSpec, SealingTarget, seal_embedding};
use facevault::config::{Overrides, Settings};
use facevault::crypto::keyfiles::{self, KeyPaths, PublicSealingKeys};
use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::devstack::redis_server::{RedisCluster, RedisOptions, RedisServer};
use facevault::pki::{DEV_TRUST_DOMAIN, DevPki};
use facevault::proto;
use facevault::proto::face_vault_client::FaceVaultClient;
use facevault::startup::Application;
use rand::{Rng as _, SeedableRng as _};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const MODEL: &str = "test-128";

/// Tests that load both cores on purpose (floods, chaos) or time what a
/// loaded machine makes noisy (failovers, lag, latency bounds) take turns: run
/// side by side, each would measure the others.
pub static HEAVY_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A raw Redis stream entry: id and fields.
pub type StreamEntry = (String, Vec<(String, Vec<u8>)>);
pub const DIM: usize = 128;
pub const THRESHOLD: f32 = 0.6;

pub struct TestApp {
    pub port: u16,
    pub health_port: u16,
    pub redis: TestRedis,
    pub pki: DevPki,
    pub keys: KeyPaths,
    dir: tempfile::TempDir,
    pub targets: Vec<SealingTarget>,
    server: Option<ServerHandle>,
    options: AppOptions,
}

/// One running facevault process-equivalent (several may share one Redis).
pub struct ServerHandle {
    pub port: u16,
    pub health_port: u16,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ServerHandle {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// Runs a built application until its handle is stopped or dropped.
pub fn serve(app: Application) -> ServerHandle {
    let port = app.port();
    let health_port = app.health_port().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    ServerHandle {
        port,
        health_port,
        task: Some(task),
        stop: Some(stop),
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The app's own Redis: one server, one reached over mutual TLS, or a cluster.
pub enum TestRedis {
    Standalone(Box<RedisServer>),
    /// The app reaches it on `tls_port` (`rediss://`), trusting the dev CA and
    /// presenting the app's client certificate; tests inspect it in plaintext.
    Tls {
        server: Box<RedisServer>,
        tls_port: u16,
        ca: PathBuf,
        client: (PathBuf, PathBuf),
    },
    Cluster(RedisCluster),
}

impl TestRedis {
    /// The standalone server (outage tests stop and restart it).
    pub fn server(&mut self) -> &mut RedisServer {
        match self {
            Self::Standalone(server) | Self::Tls { server, .. } => server.as_mut(),
            Self::Cluster(_) => panic!("this app runs on a Redis Cluster"),
        }
    }

    pub fn cluster(&mut self) -> &mut RedisCluster {
        match self {
            Self::Cluster(cluster) => cluster,
            Self::Standalone(_) | Self::Tls { .. } => {
                panic!("this app runs on a standalone Redis")
            }
        }
    }

    fn config(&self) -> String {
        match self {
            Self::Standalone(server) => format!("url = \"{}\"", server.url()),
            Self::Tls {
                tls_port,
                ca,
                client,
                ..
            } => format!(
                "url = \"rediss://127.0.0.1:{tls_port}\"\ntls_ca = \"{}\"\n\
                 tls_client_cert = \"{}\"\ntls_client_key = \"{}\"",
                ca.display(),
                client.0.display(),
                client.1.display()
            ),
            Self::Cluster(cluster) => {
                format!("url = \"{}\"\nmode = \"cluster\"", cluster.seed_url())
            }
        }
    }
}

#[derive(Clone)]
pub struct AppOptions {
    /// TOML appended to the config (sections other than [tenants.demo] and
    /// [tenants.other], which are always declared).
    pub extra_config: String,
    /// Body of the [tenants.demo] section.
    pub demo_tenant: String,
    pub redis_timeout_ms: u64,
    /// Redis with `appendonly yes`, `appendfsync always` (durability tests).
    pub redis_append_only: bool,
    /// A Redis Cluster of 3 primaries with a replica each, instead of one server.
    pub redis_cluster: bool,
    /// The app reaches Redis over mutual TLS (`rediss://`).
    pub redis_tls: bool,
    /// `redis.replica_acks`.
    pub redis_replica_acks: u32,
    /// Lines added to the [keys] section (e.g. `reload_interval_secs = 1`).
    pub keys_extra: String,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            extra_config: String::new(),
            demo_tenant: "expose_scores = true".to_owned(),
            redis_timeout_ms: 500,
            redis_append_only: false,
            redis_cluster: false,
            redis_tls: false,
            redis_replica_acks: 0,
            keys_extra: String::new(),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    // The in-process server's warnings (a storage error's cause, say) go to the
    // test's captured output, so a failure in CI shows why, not only the code.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("facevault=warn")
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::ensure(&dir.path().join("pki"), DEV_TRUST_DOMAIN, &[]).unwrap();
    let redis = if options.redis_tls {
        let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = |p: &PathBuf| p.display().to_string();
        let server = RedisServer::start(RedisOptions {
            extra_args: vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                path(&pki.server_cert),
                "--tls-key-file".into(),
                path(&pki.server_key),
                "--tls-ca-cert-file".into(),
                path(&pki.ca_cert),
                "--tls-auth-clients".into(),
                "yes".into(),
            ],
            ..RedisOptions::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        TestRedis::Tls {
            server: Box::new(server),
            tls_port,
            ca: pki.ca_cert.clone(),
            client: pki.app.clone(),
        }
    } else if options.redis_cluster {
        TestRedis::Cluster(
            RedisCluster::start(3, 1)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
    } else {
        TestRedis::Standalone(Box::new(
            RedisServer::start(RedisOptions {
                append_only: options.redis_append_only,
                ..RedisOptions::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ))
    };
    let keys = keyfiles::generate(&dir.path().join("keys"), 30).unwrap();
    let public: PublicSealingKeys = serde_json::from_slice(
        &std::fs::read(dir.path().join("keys").join(keyfiles::SEALING_PUBLIC_FILE)).unwrap(),
    )
    .unwrap();
    let targets = public
        .keys
        .iter()
        .map(|k| SealingTarget {
            key_id: k.key_id.clone(),
            suite: Suite::parse(&k.suite).unwrap(),
            public_key: base64::engine::general_purpose::STANDARD
                .decode(&k.public_key)
                .unwrap(),
        })
        .collect();
    let mut app = TestApp {
        port: 0,
        health_port: 0,
        redis,
        pki,
        keys,
        dir,
        targets,
        server: None,
        options,
    };
    let server = app.start_server(&app.options.extra_config.clone()).await;
    app.port = server.port;
    app.health_port = server.health_port;
    app.server = Some(server);
    app.wait_until_serving().await;
    app
}

impl TestApp {
    /// The config a server of this app runs with, plus `extra` TOML.
    pub fn config_text(&self, extra: &str) -> String {
        self.config_text_with_tls("", extra)
    }

    /// The config with `tls_extra` inside its [tls] section.
    pub fn config_text_with_tls(&self, tls_extra: &str, extra: &str) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
health_listen = "127.0.0.1:0"
trust_domain = "{td}"
drain_timeout_secs = 1

[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
{tls_extra}

[keys]
keyring = "{keyring}"
transform_secret = "{transform}"
sealing_keys = "{sealing}"
receipt_signing_key = "{receipt}"
{keys_extra}

[redis]
{redis}
timeout_ms = {timeout}
replica_acks = {replica_acks}

[[models]]
id = "{MODEL}"
dimension = {DIM}
threshold = {THRESHOLD}

[[models]]
id = "other-64"
dimension = 64
threshold = 0.5

[tenants.demo]
{demo}

[tenants.other]

{extra}
"#,
            demo = self.options.demo_tenant,
            td = DEV_TRUST_DOMAIN,
            cert = self.pki.server_cert.display(),
            key = self.pki.server_key.display(),
            ca = self.pki.ca_cert.display(),
            keyring = self.keys.keyring.display(),
            transform = self.keys.transform_secret.display(),
            sealing = self.keys.sealing_keys.display(),
            receipt = self.keys.receipt_signing_key.display(),
            keys_extra = self.options.keys_extra,
            redis = self.redis.config(),
            timeout = self.options.redis_timeout_ms,
            replica_acks = self.options.redis_replica_acks,
        )
    }

    /// Builds an application from this app's keys, PKI and Redis with `extra` TOML.
    pub async fn build_server(&self, extra: &str) -> anyhow::Result<Application> {
        self.build_server_with_tls("", extra).await
    }

    pub async fn build_server_with_tls(
        &self,
        tls_extra: &str,
        extra: &str,
    ) -> anyhow::Result<Application> {
        let path = self
            .dir
            .path()
            .join(format!("facevault-{}.toml", rand::random::<u32>()));
        self.build_server_from(&path, &self.config_text_with_tls(tls_extra, extra))
            .await
    }

    /// Builds an application from a config text written to `path`.
    pub async fn build_server_from(
        &self,
        path: &std::path::Path,
        config: &str,
    ) -> anyhow::Result<Application> {
        std::fs::write(path, config).unwrap();
        let settings = Settings::load(path, &Overrides::default())?;
        Application::build(settings).await
    }

    /// Starts another server sharing this app's Redis and keys.
    pub async fn start_server(&self, extra: &str) -> ServerHandle {
        self.start_server_with_tls("", extra).await
    }

    pub async fn start_server_with_tls(&self, tls_extra: &str, extra: &str) -> ServerHandle {
        serve(self.build_server_with_tls(tls_extra, extra).await.unwrap())
    }

    /// Runs the real binary, `facevault serve`, with this app's config (plus
    /// `extra`), taking over the app's ports; logs go to the returned file.
    pub async fn spawn_binary(&mut self, extra: &str) -> (tokio::process::Child, PathBuf) {
        let config = self.config_text(extra);
        self.spawn_binary_with_config(&config).await
    }

    /// Runs `facevault serve` with `config` (a text like [`TestApp::config_text`],
    /// whose `127.0.0.1:0` addresses are replaced by free ports), taking over the
    /// app's ports; logs go to the returned file.
    pub async fn spawn_binary_with_config(
        &mut self,
        config: &str,
    ) -> (tokio::process::Child, PathBuf) {
        self.stop_server().await;
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let config = config
            .replace(
                "health_listen = \"127.0.0.1:0\"",
                &format!("health_listen = \"127.0.0.1:{}\"", ports[1]),
            )
            .replace(
                "\nlisten = \"127.0.0.1:0\"",
                &format!("\nlisten = \"127.0.0.1:{}\"", ports[0]),
            );
        let config_path = self.dir.path().join("binary.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = self.dir.path().join("binary.log");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.port = ports[0];
        self.health_port = ports[1];
        for _ in 0..400 {
            if self.health().await == Some(1) {
                return (child, log_path);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the binary did not become SERVING: {}",
            String::from_utf8_lossy(&std::fs::read(&log_path).unwrap())
        );
    }

    /// Runs `facevault <args> --config <this app's config>` to completion.
    pub async fn run_cli(&self, args: &[&str]) -> std::process::Output {
        let config_path = self.dir.path().join("cli.toml");
        std::fs::write(&config_path, self.config_text("")).unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .output()
            .await
            .unwrap()
    }

    /// Stops the primary server (the app's clients then fail to connect).
    pub async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    /// A client of tenant demo, role app, for another server of this app.
    pub async fn app_client_for(&self, server: &ServerHandle) -> FaceVaultClient<Channel> {
        let tls = self.tls_config(&self.pki.app.0, &self.pki.app.1);
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", server.port))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        FaceVaultClient::new(channel)
    }
    pub fn tls_config(&self, cert: &PathBuf, key: &PathBuf) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                std::fs::read(&self.pki.ca_cert).unwrap(),
            ))
            .identity(Identity::from_pem(
                std::fs::read(cert).unwrap(),
                std::fs::read(key).unwrap(),
            ))
            .domain_name("localhost")
    }

    pub async fn channel_with(
        &self,
        tls: ClientTlsConfig,
    ) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("https://127.0.0.1:{}", self.port))
            .unwrap()
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
    }

    /// Client of tenant `demo`, role `app`.
    pub async fn app_client(&self) -> FaceVaultClient<Channel> {
        let tls = self.tls_config(&self.pki.app.0, &self.pki.app.1);
        FaceVaultClient::new(self.channel_with(tls).await.unwrap())
    }

    /// Client of tenant `other`, role `app`.
    pub async fn other_tenant_client(&self) -> FaceVaultClient<Channel> {
        let tls = self.tls_config(&self.pki.other.0, &self.pki.other.1);
        FaceVaultClient::new(self.channel_with(tls).await.unwrap())
    }

    /// Client of tenant `demo`, role `auditor`.
    pub async fn auditor_as_app_client(&self) -> FaceVaultClient<Channel> {
        let tls = self.tls_config(&self.pki.auditor.0, &self.pki.auditor.1);
        FaceVaultClient::new(self.channel_with(tls).await.unwrap())
    }

    /// The typed Rust client as tenant demo's app, sealing with `suite`.
    pub async fn sdk(&self, suite: Suite, sealing_sessions: bool) -> FaceVault {
        FaceVault::connect(ClientConfig {
            endpoint: format!("https://127.0.0.1:{}", self.port),
            ca_pem: std::fs::read(&self.pki.ca_cert).unwrap(),
            cert_pem: std::fs::read(&self.pki.app.0).unwrap(),
            key_pem: std::fs::read(&self.pki.app.1).unwrap(),
            server_name: Some("localhost".into()),
            tenant: "demo".into(),
            suite,
            timeout: Duration::from_secs(10),
            sealing_sessions,
        })
        .await
        .unwrap()
    }

    pub fn target(&self, suite: Suite) -> &SealingTarget {
        self.targets.iter().find(|t| t.suite == suite).unwrap()
    }

    pub fn seal(
        &self,
        op: SealedFor,
        tenant: &str,
        subject: &str,
        values: &[f32],
    ) -> proto::SealedEmbedding {
        self.seal_with(
            Suite::X25519Sha256Aes256Gcm,
            op,
            tenant,
            subject,
            MODEL,
            values,
            now_ms(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn seal_with(
        &self,
        suite: Suite,
        op: SealedFor,
        tenant: &str,
        subject: &str,
        model: &str,
        values: &[f32],
        sealed_at_unix_ms: i64,
    ) -> proto::SealedEmbedding {
        seal_embedding(
            self.target(suite),
            &PayloadSpec {
                op,
                tenant,
                subject_id: subject,
                model,
                values,
                sealed_at_unix_ms,
            },
        )
        .unwrap()
    }

    pub fn enroll_request(
        &self,
        subject: &str,
        values: &[f32],
        purposes: &[&str],
        replace: bool,
    ) -> proto::EnrollRequest {
        proto::EnrollRequest {
            subject_id: subject.to_owned(),
            embedding: Some(self.seal(SealedFor::Enroll, "demo", subject, values)),
            consent: Some(consent(purposes)),
            replace,
        }
    }

    pub fn verify_request(
        &self,
        subject: &str,
        values: &[f32],
        purpose: &str,
    ) -> proto::VerifyRequest {
        proto::VerifyRequest {
            subject_id: subject.to_owned(),
            probe: Some(self.seal(SealedFor::Verify, "demo", subject, values)),
            purpose: purpose.to_owned(),
        }
    }

    pub async fn enroll(
        &self,
        client: &mut FaceVaultClient<Channel>,
        subject: &str,
        values: &[f32],
    ) -> proto::EnrollResponse {
        client
            .enroll(self.enroll_request(subject, values, &["login"], false))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn verify(
        &self,
        client: &mut FaceVaultClient<Channel>,
        subject: &str,
        values: &[f32],
    ) -> Result<proto::VerifyResponse, tonic::Status> {
        client
            .verify(self.verify_request(subject, values, "login"))
            .await
            .map(|r| r.into_inner())
    }

    /// Holds Redis's clients for `ms`: `mode` "WRITE" holds only writes (and
    /// what a held client sends after them), "ALL" everything.
    pub async fn pause_redis(&self, ms: u64, mode: &str) {
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(ms)
            .arg(mode)
            .query_async(&mut self.redis().await)
            .await
            .unwrap();
    }

    /// A connection to the standalone Redis.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let (TestRedis::Standalone(server) | TestRedis::Tls { server, .. }) = &self.redis else {
            panic!("this app runs on a Redis Cluster");
        };
        redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    pub async fn health(&self) -> Option<i32> {
        health_at(self.health_port).await
    }

    /// The status of one health service name ("" is the overall status).
    pub async fn health_of(&self, service: &str) -> Option<i32> {
        health_of(self.health_port, service).await
    }

    pub async fn wait_until_serving(&self) {
        for _ in 0..200 {
            if self.health().await
                == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("facevault did not become SERVING");
    }

    pub async fn stop(mut self) {
        self.stop_server().await;
    }
}

/// The overall status from a server's plaintext health port.
pub async fn health_at(port: u16) -> Option<i32> {
    health_of(port, "").await
}

/// The status of one health service name from a server's plaintext health port.
pub async fn health_of(port: u16, service: &str) -> Option<i32> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .ok()?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

pub fn consent(purposes: &[&str]) -> proto::Consent {
    proto::Consent {
        consent_id: "consent-1".to_owned(),
        purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
        granted_at: Some(prost_types::Timestamp {
            seconds: now_ms() / 1000 - 60,
            nanos: 0,
        }),
        method: proto::ConsentMethod::SeparateInApp as i32,
        notice_version: "2026-11".to_owned(),
        off_device_storage: true,
        subject_under_14: false,
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A reproducible "face": a random Gaussian-ish vector.
pub fn face(seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..DIM).map(|_| gaussian(&mut rng)).collect()
}

/// Another capture of the same face: `base` plus noise (cosine ≈ 0.9 for 0.4).
pub fn capture_of(base: &[f32], noise: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    base.iter()
        .map(|v| v + noise * gaussian(&mut rng))
        .collect()
}

fn gaussian(rng: &mut rand::rngs::StdRng) -> f32 {
    // Box–Muller.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

pub fn code(result: Result<impl std::fmt::Debug, tonic::Status>) -> tonic::Code {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(status) => status.code(),
    }
}

/// Of the keys an erasure left that name a subject, those it may not leave. An
/// erasure keeps two things, both expiring by themselves: the replay digests
/// (`:replay`, digests of ciphertext, until their window ends) and, for a
/// cancelled account, its `:state` holding nothing but the `cancelled` mark
/// (until its ticket expires).
pub async fn erasure_residue(
    redis: &mut impl redis::aio::ConnectionLike,
    keys: Vec<String>,
) -> Vec<String> {
    let mut disallowed = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(redis)
            .await
            .unwrap();
        let allowed = if key.starts_with("fv:{fv-deletion}:by-subject:") {
            // The subject's ticket index, kept (and expiring) with its tickets.
            ttl > 0
        } else if key.ends_with(":replay") {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(redis)
                .await
                .unwrap();
            kind == "zset" && ttl > 0
        } else if key.ends_with(":state") {
            let fields: Vec<String> = redis::cmd("HKEYS")
                .arg(&key)
                .query_async(redis)
                .await
                .unwrap();
            fields == ["cancelled"] && ttl > 0
        } else {
            false
        };
        if !allowed {
            disallowed.push(key);
        }
    }
    disallowed
}
