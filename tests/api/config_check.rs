//! `facevault check-config` and `serve --check`, run as the real binary on the
//! shipped example config, with key files from `facevault keygen` and a PKI
//! from the dev PKI code (the same file names as `facevault pki`).

use std::path::{Path, PathBuf};
use std::process::Output;

use facevault::config::{Overrides, Settings};
use facevault::devstack::redis_server::{RedisOptions, RedisServer};
use facevault::pki::DevPki;
use facevault::startup::Application;

/// A directory laid out as the README's production quick-start: the example
/// config, `keys/` and `pki/`.
struct QuickStart {
    dir: tempfile::TempDir,
}

impl QuickStart {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/facevault.toml");
        std::fs::copy(&example, dir.path().join("facevault.toml")).unwrap();
        let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
            .args(["keygen", "--dir", "keys/"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{}", text(&keygen));
        DevPki::ensure(&dir.path().join("pki"), "example.org", &[]).unwrap();
        Self { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("facevault.toml")
    }

    fn edit(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        std::fs::write(self.config(), edit(text)).unwrap();
    }

    /// Runs the binary from another directory (relative paths in the config
    /// are the config file's), with only FACEVAULT_REDIS_URL set.
    async fn run(&self, args: &[&str], redis_url: &str) -> Output {
        let elsewhere = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"));
        for (name, _) in std::env::vars() {
            if name.starts_with("FACEVAULT_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env("FACEVAULT_REDIS_URL", redis_url)
            .current_dir(elsewhere.path())
            .output()
            .await
            .unwrap()
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_example_config_checks_clean_as_shipped() {
    let quick = QuickStart::new();
    // check-config never talks to Redis: a closed port does not matter.
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let out = quick.run(&["check-config"], &url).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": ok"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn serve_check_adds_one_redis_round_trip() {
    let quick = QuickStart::new();
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let out = quick.run(&["serve", "--check"], &redis.url()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Redis answered PING"),
        "{}",
        text(&out)
    );
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let out = quick.run(&["serve", "--check"], &url).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("redis did not answer PING"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn a_broken_config_lists_every_problem_with_its_place() {
    let quick = QuickStart::new();
    quick.edit(|t| {
        t.replace("trust_domain = \"example.org\"", "# trust_domain removed")
            .replace("[tls]\n", "[tls_typo]\n")
            .replace("[[models]]\n", "[[modles]]\n")
            .replace(
                "health_listen = \"0.0.0.0:50052\"",
                "health_listen = \"50052\"",
            )
            .replace("epoch_days = 7", "epoch_days = 7\nepoch_dayz = 7")
    });
    let out = quick.run(&["check-config"], "redis://127.0.0.1:6379").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let config = std::fs::read_to_string(quick.config()).unwrap();
    let line = |needle: &str| {
        config
            .lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    for expected in [
        "7 problems in config file".to_owned(),
        "[tls]: missing table".to_owned(),
        "[models]: missing".to_owned(),
        format!("[tls_typo] (line {}): unknown table", line("[tls_typo]")),
        format!("[modles] (line {}): unknown table", line("[[modles]]")),
        format!(
            "[server] health_listen (line {}): \"50052\" is not host:port",
            line("health_listen")
        ),
        format!(
            "[server] (line {}): missing field `trust_domain`",
            line("[server]")
        ),
        format!(
            "[keys] epoch_dayz (line {}): unknown field `epoch_dayz`",
            line("epoch_dayz")
        ),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} in {stderr}");
    }
}

#[tokio::test]
async fn files_keys_and_the_calendar_are_checked_all_at_once() {
    let quick = QuickStart::new();
    let keys = quick.dir.path().join("keys");
    std::fs::remove_file(keys.join("receipt-signing.key")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        keys.join("transform.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(quick.dir.path().join("pki/ca.pem")).unwrap();
    // Longer epochs than the 15-working-day deadline allows.
    quick.edit(|t| t.replace("epoch_days = 7", "epoch_days = 40"));
    let out = quick.run(&["check-config"], "redis://127.0.0.1:6379").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let config = std::fs::read_to_string(quick.config()).unwrap();
    let line = |needle: &str| {
        config
            .lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    for expected in [
        "4 problems in config file".to_owned(),
        format!(
            "[keys] transform_secret (line {}): ",
            line("transform_secret")
        ),
        "is accessible to other users (mode 644)".to_owned(),
        format!(
            "[keys] receipt_signing_key (line {}): cannot read ",
            line("receipt_signing_key")
        ),
        format!("[tls] client_ca (line {}): cannot read ", line("client_ca")),
        format!("[keys] epoch_days (line {}): ", line("epoch_days")),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} in {stderr}");
    }
}

#[tokio::test]
async fn listen_takes_a_host_name() {
    let quick = QuickStart::new();
    quick.edit(|t| {
        t.replace("listen = \"0.0.0.0:50051\"", "listen = \"localhost:0\"")
            .replace(
                "health_listen = \"0.0.0.0:50052\"",
                "health_listen = \"localhost:0\"",
            )
    });
    let out = quick.run(&["check-config"], "redis://127.0.0.1:6379").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let redis = RedisServer::start(RedisOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let overrides = Overrides {
        redis_url: Some(redis.url()),
        ..Overrides::default()
    };
    let settings = Settings::load(&quick.config(), &overrides).unwrap();
    let app = Application::build(settings).await.unwrap();
    let port = app.port();
    assert_ne!(port, 0);
    // Bound on an address `localhost` resolves to.
    tokio::net::TcpStream::connect(("localhost", port))
        .await
        .unwrap();

    quick.edit(|t| {
        t.replace(
            "listen = \"localhost:0\"",
            "listen = \"no-such-host.invalid:0\"",
        )
    });
    let out = quick.run(&["check-config"], "redis://127.0.0.1:6379").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let config = std::fs::read_to_string(quick.config()).unwrap();
    let line = config
        .lines()
        .position(|l| l.starts_with("listen ="))
        .unwrap()
        + 1;
    let expected = format!("[server] listen (line {line}): cannot resolve");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&expected),
        "{expected:?} in {}",
        text(&out)
    );
}
