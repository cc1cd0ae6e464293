//! Key rotation without a restart: the key files are the key store, the
//! service re-reads them every `keys.reload_interval_secs`, the re-wrap worker
//! moves every DEK to the active epoch, and `keys retire` removes an epoch only
//! once nothing is wrapped under it. Sealing keys rotate with an overlap, and the
//! epoch length is checked against the deletion deadline at start-up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use facevault::client::{PayloadSpec, SealingTarget, seal_embedding};
use facevault::crypto::envelope::SealedTemplate;
use facevault::crypto::keyfiles;
use facevault::crypto::sealing::{SealedFor, Suite};
use facevault::proto;
use facevault::proto::face_vault_client::FaceVaultClient;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;

/// Servers of these apps re-read the key files every second.
const RELOAD_EVERY_SECOND: &str = "reload_interval_secs = 1";

fn reloading(options: AppOptions) -> AppOptions {
    AppOptions {
        keys_extra: RELOAD_EVERY_SECOND.to_owned(),
        ..options
    }
}

/// The app's config with `keys_extra` added inside its [keys] section (a second
/// [keys] table would not parse) and `extra` appended.
fn config_with_keys(app: &TestApp, extra: &str, keys_extra: &str) -> String {
    let line = format!(
        "receipt_signing_key = \"{}\"",
        app.keys.receipt_signing_key.display()
    );
    let config = app.config_text(extra);
    assert!(config.contains(&line), "the [keys] section changed shape");
    config.replace(&line, &format!("{line}\n{keys_extra}"))
}

/// The directory holding the app's key files.
pub(crate) fn keys_dir(app: &TestApp) -> PathBuf {
    app.keys.keyring.parent().unwrap().to_owned()
}

pub(crate) async fn facevault(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
        .args(args)
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) async fn rotate(dir: &Path) -> Output {
    facevault(&["keys", "rotate", "--dir", dir.to_str().unwrap()]).await
}

async fn retire(app: &TestApp, epoch: u32) -> Output {
    let dir = keys_dir(app);
    app.run_cli(&[
        "keys",
        "retire",
        "--dir",
        dir.to_str().unwrap(),
        "--epoch",
        &epoch.to_string(),
    ])
    .await
}

pub(crate) async fn status(app: &TestApp) -> serde_json::Value {
    let out = app.run_cli(&["keys", "status", "--json"]).await;
    assert!(out.status.success(), "keys status: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The DEK count `keys status` shows for `epoch` (None: not in the keyring).
pub(crate) fn deks_of(status: &serde_json::Value, epoch: u64) -> Option<u64> {
    status["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["epoch"] == epoch)
        .map(|e| e["deks"].as_u64().unwrap())
}

/// Every running process `keys status` lists wraps under `epoch`.
fn processes_on(status: &serde_json::Value, epoch: u64) -> bool {
    status["processes"]
        .as_array()
        .is_none_or(|all| all.iter().all(|p| p["active_epoch"] == epoch))
}

/// Asserts a refusal: exit status 2, the documented prefix, `reason` in the
/// message, and the keyring file byte for byte as it was.
fn assert_refused(out: &Output, reason: &str, keyring: &Path, before: &[u8]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    assert!(stderr.starts_with("facevault: refused: "), "{}", text(out));
    assert!(
        stderr.contains(reason),
        "expected {reason:?}: {}",
        text(out)
    );
    assert_eq!(
        std::fs::read(keyring).unwrap(),
        before,
        "a refused command changed the keyring"
    );
    println!("refused as expected: {}", stderr.trim());
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// DEKs per epoch, read from the templates in Redis themselves (not through
/// the service or the CLI), for the given subjects.
async fn epochs_in_redis(
    conn: &mut impl redis::aio::ConnectionLike,
    refs: &[String],
) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for subject_ref in refs {
        let templates: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(format!("fv:{{demo:{subject_ref}}}:templates"))
            .query_async(conn)
            .await
            .unwrap();
        assert!(!templates.is_empty(), "{subject_ref} holds no template");
        for (_, bytes) in templates {
            let sealed = SealedTemplate::decode(bytes.as_slice()).unwrap();
            *out.entry(sealed.kek_version).or_default() += 1;
        }
    }
    out
}

/// An embedding sealed to `target` for `op` on subject `subject` of tenant demo.
fn sealed_to(
    target: &SealingTarget,
    op: SealedFor,
    subject: &str,
    values: &[f32],
) -> proto::SealedEmbedding {
    seal_embedding(
        target,
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

async fn enroll_with(
    client: &mut FaceVaultClient<Channel>,
    target: &SealingTarget,
    subject: &str,
    values: &[f32],
) -> Result<proto::EnrollResponse, tonic::Status> {
    client
        .enroll(proto::EnrollRequest {
            subject_id: subject.to_owned(),
            embedding: Some(sealed_to(target, SealedFor::Enroll, subject, values)),
            consent: Some(consent(&["login"])),
            replace: false,
        })
        .await
        .map(|r| r.into_inner())
}

async fn verify_with(
    client: &mut FaceVaultClient<Channel>,
    target: &SealingTarget,
    subject: &str,
    values: &[f32],
) -> Result<proto::VerifyResponse, tonic::Status> {
    client
        .verify(proto::VerifyRequest {
            subject_id: subject.to_owned(),
            probe: Some(sealed_to(target, SealedFor::Verify, subject, values)),
            purpose: "login".to_owned(),
        })
        .await
        .map(|r| r.into_inner())
}

fn target_of(key: &proto::SealingKey) -> SealingTarget {
    SealingTarget {
        key_id: key.key_id.clone(),
        suite: Suite::parse(&key.suite).unwrap(),
        public_key: key.public_key.clone(),
    }
}

async fn sealing_keys(client: &mut FaceVaultClient<Channel>) -> Vec<proto::SealingKey> {
    client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

fn not_after_ms(key: &proto::SealingKey) -> i64 {
    let t = key.not_after.as_ref().expect("every key carries not_after");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn rotate_rewrap_retire_on_a_redis_cluster() {
    let started = Instant::now();
    let app = spawn_app_with(reloading(AppOptions {
        redis_cluster: true,
        redis_timeout_ms: 1000,
        extra_config: "[deletion]\npoll_interval_ms = 100\n".to_owned(),
        ..AppOptions::default()
    }))
    .await;
    let mut client = app.app_client().await;
    let dir = keys_dir(&app);
    let keyring = app.keys.keyring.clone();

    const SUBJECTS: u64 = 30;
    let mut refs = Vec::new();
    for i in 0..SUBJECTS {
        refs.push(
            app.enroll(&mut client, &format!("subject-{i}"), &face(i))
                .await
                .subject_ref,
        );
    }

    // The subjects are spread over all three primaries.
    let TestRedis::Cluster(cluster) = &app.redis else {
        unreachable!("a cluster app")
    };
    let mut per_primary = BTreeMap::new();
    for node in cluster.nodes().iter().filter(|n| n.is_running()) {
        let mut conn = redis::Client::open(node.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap();
        if !info.contains("role:master") {
            continue;
        }
        let held: Vec<String> = redis::cmd("KEYS")
            .arg("fv:{demo:*}:templates")
            .query_async(&mut conn)
            .await
            .unwrap();
        per_primary.insert(node.port(), held.len());
    }
    println!("subjects per primary: {per_primary:?}");
    assert_eq!(per_primary.len(), 3, "{per_primary:?}");
    assert!(per_primary.values().all(|n| *n > 0), "{per_primary:?}");
    assert_eq!(per_primary.values().sum::<usize>() as u64, SUBJECTS);

    let mut redis = redis::cluster::ClusterClient::new(vec![cluster.seed_url()])
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let before = epochs_in_redis(&mut redis, &refs).await;
    assert_eq!(before, BTreeMap::from([(1, SUBJECTS)]));
    let s = status(&app).await;
    assert_eq!(s["active_epoch"], 1, "{s:#}");
    assert_eq!(deks_of(&s, 1), Some(SUBJECTS), "{s:#}");
    assert_eq!(s["subjects"], SUBJECTS, "{s:#}");

    let out = rotate(&dir).await;
    assert!(out.status.success(), "keys rotate: {}", text(&out));
    let rotated_at = Instant::now();
    #[cfg(unix)]
    assert_eq!(mode_of(&keyring), 0o600, "the rotated keyring is private");

    // The server reloads the keyring, and its re-wrap worker moves every DEK
    // to epoch 2; `keys status` counts them across the three primaries.
    let mut last = serde_json::Value::Null;
    let mut done = false;
    while rotated_at.elapsed() < Duration::from_secs(30) {
        last = status(&app).await;
        if last["active_epoch"] == 2
            && deks_of(&last, 1) == Some(0)
            && deks_of(&last, 2) == Some(SUBJECTS)
            && processes_on(&last, 2)
        {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        done,
        "the DEKs were not re-wrapped (or the server did not move to epoch 2) within 30 s: {last:#}"
    );
    println!(
        "re-wrapped {SUBJECTS} DEKs in {:?}: {}",
        rotated_at.elapsed(),
        last["rewrap"]
    );
    assert_eq!(last["deks_total"], SUBJECTS, "{last:#}");
    assert_eq!(last["deks_unreadable"], 0, "{last:#}");
    assert_eq!(last["rewrap"]["pending"], 0, "{last:#}");
    assert_eq!(
        epochs_in_redis(&mut redis, &refs).await,
        BTreeMap::from([(2, SUBJECTS)]),
        "Redis itself holds every DEK under epoch 2"
    );

    // Twice the reload interval after the rotation, epoch 1 may go.
    if let Some(wait) = Duration::from_millis(2500).checked_sub(rotated_at.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    let out = retire(&app, 1).await;
    assert!(out.status.success(), "keys retire: {}", text(&out));
    let s = status(&app).await;
    println!("after retirement: {s}");
    let epochs: Vec<u64> = s["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [2], "{s:#}");
    assert!(
        s["retired"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["epoch"] == 1 && r["retired_at"].is_string()),
        "{s:#}"
    );
    assert_eq!(deks_of(&s, 2), Some(SUBJECTS), "{s:#}");
    assert_eq!(s["deks_unreadable"], 0, "{s:#}");

    // A second retirement is refused and leaves the file alone.
    let bytes = std::fs::read(&keyring).unwrap();
    let out = retire(&app, 1).await;
    assert_refused(&out, "epoch 1 was already retired", &keyring, &bytes);

    // Once the server has reloaded the keyring without epoch 1, every subject
    // still matches, and new enrollments wrap under epoch 2.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..SUBJECTS {
        let verdict = app
            .verify(
                &mut client,
                &format!("subject-{i}"),
                &capture_of(&face(i), 0.2, 100 + i),
            )
            .await
            .unwrap_or_else(|e| panic!("subject-{i} after retirement: {e:?}"));
        assert_eq!(
            verdict.decision(),
            proto::Decision::Match,
            "subject-{i} after retirement"
        );
    }
    let late = app
        .enroll(&mut client, "late", &face(500))
        .await
        .subject_ref;
    assert_eq!(
        epochs_in_redis(&mut redis, &[late]).await,
        BTreeMap::from([(2, 1)])
    );
    app.stop().await;
    println!("took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_new_sealing_key_is_published_without_restart_and_the_old_one_refused_after_not_after() {
    let started = Instant::now();
    let app = spawn_app_with(reloading(AppOptions::default())).await;
    let mut client = app.app_client().await;

    let old = sealing_keys(&mut client).await;
    assert_eq!(old.len(), 2, "{old:?}");
    let old_ids: BTreeSet<String> = old.iter().map(|k| k.key_id.clone()).collect();
    let old_x25519 = old
        .iter()
        .find(|k| k.suite == Suite::X25519Sha256Aes256Gcm.as_str())
        .unwrap()
        .clone();
    let old_xwing = old
        .iter()
        .find(|k| k.suite == Suite::XWingSha256Aes256Gcm.as_str())
        .unwrap()
        .clone();

    // The overlap leaves room for the reload (1 s) and the calls before it ends.
    const OVERLAP_SECS: i64 = 6;
    let rotated_at_ms = now_ms();
    let out = facevault(&[
        "keys",
        "rotate-sealing",
        "--dir",
        keys_dir(&app).to_str().unwrap(),
        "--overlap-secs",
        &OVERLAP_SECS.to_string(),
    ])
    .await;
    assert!(out.status.success(), "keys rotate-sealing: {}", text(&out));
    let rotated = Instant::now();

    let mut keys = Vec::new();
    while rotated.elapsed() < Duration::from_secs(5) {
        keys = sealing_keys(&mut client).await;
        if keys.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "published after {:?}: {:?}",
        rotated.elapsed(),
        keys.iter()
            .map(|k| (&k.key_id, not_after_ms(k)))
            .collect::<Vec<_>>()
    );
    assert_eq!(keys.len(), 4, "the new keys were not published: {keys:?}");
    let (still_old, new): (Vec<_>, Vec<_>) = keys.iter().partition(|k| old_ids.contains(&k.key_id));
    assert_eq!(still_old.len(), 2);
    assert_eq!(new.len(), 2);
    let old_not_after = not_after_ms(still_old[0]);
    for k in &still_old {
        // Capped at rotation + overlap (written with whole seconds).
        let ends = not_after_ms(k);
        assert!(
            (rotated_at_ms + OVERLAP_SECS * 1000 - 1500..=now_ms() + OVERLAP_SECS * 1000)
                .contains(&ends),
            "{} ends {} ms after the rotation",
            k.key_id,
            ends - rotated_at_ms
        );
        assert_eq!(ends, old_not_after);
    }
    let suites: BTreeSet<&str> = new.iter().map(|k| k.suite.as_str()).collect();
    assert_eq!(
        suites,
        BTreeSet::from([
            Suite::X25519Sha256Aes256Gcm.as_str(),
            Suite::XWingSha256Aes256Gcm.as_str()
        ])
    );
    for k in &new {
        assert!(
            not_after_ms(k) > now_ms() + 300 * 86_400_000,
            "{} is valid for a year",
            k.key_id
        );
    }
    let public: keyfiles::PublicSealingKeys = serde_json::from_slice(
        &std::fs::read(keys_dir(&app).join(keyfiles::SEALING_PUBLIC_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(public.keys.len(), 4, "sealing-public.json: {public:?}");

    let new_x25519 = target_of(
        new.iter()
            .find(|k| k.suite == Suite::X25519Sha256Aes256Gcm.as_str())
            .unwrap(),
    );
    let new_xwing = target_of(
        new.iter()
            .find(|k| k.suite == Suite::XWingSha256Aes256Gcm.as_str())
            .unwrap(),
    );
    enroll_with(&mut client, &new_x25519, "new-key", &face(1))
        .await
        .expect("an envelope sealed to the new key");
    let verdict = verify_with(
        &mut client,
        &new_xwing,
        "new-key",
        &capture_of(&face(1), 0.2, 2),
    )
    .await
    .expect("a probe sealed to the new X-Wing key");
    assert_eq!(verdict.decision(), proto::Decision::Match);

    // The old key still works until its not_after.
    assert!(
        now_ms() < old_not_after - 500,
        "too slow: the overlap ended before the old key could be tried"
    );
    enroll_with(&mut client, &target_of(&old_x25519), "old-key", &face(3))
        .await
        .expect("an envelope sealed to the old key before its not_after");

    // After it (and a reload), the old keys are refused and no longer published.
    let wait = old_not_after + 1200 - now_ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let refused = enroll_with(&mut client, &target_of(&old_x25519), "late", &face(4))
        .await
        .expect_err("an envelope sealed to an expired key");
    println!("old key after not_after: {refused:?}");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("unknown or expired sealing key"),
        "{refused:?}"
    );
    let refused = verify_with(
        &mut client,
        &target_of(&old_xwing),
        "old-key",
        &capture_of(&face(3), 0.2, 5),
    )
    .await
    .expect_err("a probe sealed to an expired key");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let published: BTreeSet<String> = sealing_keys(&mut client)
        .await
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    let new_ids: BTreeSet<String> = new.iter().map(|k| k.key_id.clone()).collect();
    assert_eq!(published, new_ids);
    // The new keys still work.
    let verdict = verify_with(
        &mut client,
        &new_x25519,
        "old-key",
        &capture_of(&face(3), 0.2, 6),
    )
    .await
    .unwrap();
    assert_eq!(verdict.decision(), proto::Decision::Match);

    // The next rotation drops the expired keys' secrets from the file.
    let out = facevault(&[
        "keys",
        "rotate-sealing",
        "--dir",
        keys_dir(&app).to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "keys rotate-sealing: {}", text(&out));
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&app.keys.sealing_keys).unwrap()).unwrap();
    let in_file: BTreeSet<String> = file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap().to_owned())
        .collect();
    println!("sealing-keys.json after the second rotation: {in_file:?}");
    assert_eq!(in_file.len(), 4, "{in_file:?}");
    assert!(in_file.is_disjoint(&old_ids), "{in_file:?}");
    assert!(in_file.is_superset(&new_ids), "{in_file:?}");
    #[cfg(unix)]
    assert_eq!(mode_of(&app.keys.sealing_keys), 0o600);
    app.stop().await;
    println!("took {:?}", started.elapsed());
}

#[tokio::test]
async fn start_up_refuses_an_epoch_length_that_misses_the_deadline() {
    let app = spawn_app().await;
    let path = keys_dir(&app).parent().unwrap().join("epochs.toml");

    let refused = app
        .build_server_from(&path, &config_with_keys(&app, "", "epoch_days = 30"))
        .await
        .err()
        .expect("a 30-day epoch cannot meet the 15-working-day deadline");
    let message = format!("{refused:#}");
    println!("epoch_days = 30: {message}");
    assert!(message.contains("shorten keys.epoch_days"), "{message}");

    let refused = app
        .build_server_from(
            &path,
            &config_with_keys(&app, "", "epoch_days = 7\nmax_rewrap_days = 30"),
        )
        .await
        .err()
        .expect("a 30-day re-wrap cannot meet the deadline either");
    assert!(
        format!("{refused:#}").contains("keys.max_rewrap_days (30)"),
        "{refused:#}"
    );

    let refused = app
        .build_server_from(&path, &config_with_keys(&app, "", "epoch_days = 0"))
        .await
        .err()
        .expect("epoch_days = 0 is invalid");
    assert!(
        format!("{refused:#}").contains("keys.epoch_days"),
        "{refused:#}"
    );

    // The defaults, and 7 days said explicitly, start.
    for keys_extra in ["", "epoch_days = 7"] {
        let built = app
            .build_server_from(&path, &config_with_keys(&app, "", keys_extra))
            .await;
        if let Err(e) = built {
            panic!("{keys_extra:?} was refused: {e:#}");
        }
    }
    app.stop().await;
}

/// Polls `keys status` until every running process is on `epoch` and `settle`
/// has passed since `since`.
async fn settled(app: &TestApp, epoch: u64, since: Instant, settle: Duration) -> serde_json::Value {
    loop {
        let s = status(app).await;
        if processes_on(&s, epoch) && since.elapsed() >= settle {
            return s;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the processes did not move to epoch {epoch}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn retire_refuses_the_active_an_unknown_and_a_still_used_epoch_and_leaves_the_file_unchanged()
{
    let started = Instant::now();
    // The server reloads the keys every second but runs no deletion worker, so
    // nothing re-wraps.
    let app = spawn_app_with(reloading(AppOptions {
        extra_config: "[deletion]\nworker = false\n".to_owned(),
        ..AppOptions::default()
    }))
    .await;
    let mut client = app.app_client().await;
    for i in 0..3 {
        app.enroll(&mut client, &format!("subject-{i}"), &face(i))
            .await;
    }
    let dir = keys_dir(&app);
    let keyring = app.keys.keyring.clone();

    let bytes = std::fs::read(&keyring).unwrap();
    assert_refused(
        &retire(&app, 1).await,
        "epoch 1 is the active epoch",
        &keyring,
        &bytes,
    );
    assert_refused(
        &retire(&app, 9).await,
        "epoch 9 is not in the keyring (it holds 1)",
        &keyring,
        &bytes,
    );

    let out = rotate(&dir).await;
    assert!(out.status.success(), "keys rotate: {}", text(&out));
    let rotated = Instant::now();
    let bytes = std::fs::read(&keyring).unwrap();
    #[cfg(unix)]
    assert_eq!(mode_of(&keyring), 0o600);

    // Right after the rotation a replica may not have reloaded yet.
    assert_refused(
        &retire(&app, 1).await,
        "wait 2 s (twice keys.reload_interval_secs)",
        &keyring,
        &bytes,
    );

    // Once the server is on epoch 2, the three DEKs nobody re-wrapped hold epoch 1.
    let s = settled(&app, 2, rotated, Duration::from_millis(2100)).await;
    println!("status after the rotation: {s}");
    assert_eq!(s["active_epoch"], 2, "{s:#}");
    assert_eq!(deks_of(&s, 1), Some(3), "{s:#}");
    assert_eq!(deks_of(&s, 2), Some(0), "{s:#}");
    assert_eq!(s["rewrap"]["pending"], 3, "{s:#}");
    assert_refused(
        &retire(&app, 1).await,
        "epoch 1 still wraps 3 DEK(s)",
        &keyring,
        &bytes,
    );
    assert_refused(
        &retire(&app, 2).await,
        "epoch 2 is the active epoch",
        &keyring,
        &bytes,
    );
    assert_refused(&retire(&app, 9).await, "it holds 1, 2", &keyring, &bytes);

    // A replica that re-reads its keys only hourly keeps wrapping under epoch 2
    // after the next rotation: epoch 2 cannot be retired while it runs.
    let lagging_config = app
        .config_text("[deletion]\nworker = false\n")
        .replace(RELOAD_EVERY_SECOND, "reload_interval_secs = 3600");
    let lagging = serve(
        app.build_server_from(&dir.parent().unwrap().join("lagging.toml"), &lagging_config)
            .await
            .unwrap(),
    );
    for _ in 0..200 {
        if health_at(lagging.health_port).await == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let out = rotate(&dir).await;
    assert!(out.status.success(), "keys rotate: {}", text(&out));
    let rotated = Instant::now();
    let bytes = std::fs::read(&keyring).unwrap();
    let s = loop {
        let s = status(&app).await;
        let processes = s["processes"].as_array().cloned().unwrap_or_default();
        let on = |epoch: u64| processes.iter().any(|p| p["active_epoch"] == epoch);
        if on(3) && on(2) && rotated.elapsed() >= Duration::from_millis(2100) {
            break s;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(10),
            "expected one process on epoch 3 and the lagging one on 2: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("processes: {}", s["processes"]);
    assert_refused(
        &retire(&app, 2).await,
        "1 running process(es) still wrap new DEKs under epoch 2",
        &keyring,
        &bytes,
    );
    // Epoch 1 is older than every process's: only its DEKs hold it.
    assert_refused(
        &retire(&app, 1).await,
        "epoch 1 still wraps 3 DEK(s)",
        &keyring,
        &bytes,
    );
    lagging.stop().await;
    // A clean stop withdraws the process's entry at once: epoch 2, which wraps
    // no DEK, can go now rather than when the entry would have expired.
    let out = retire(&app, 2).await;
    assert!(out.status.success(), "keys retire 2: {}", text(&out));
    let bytes = std::fs::read(&keyring).unwrap();

    // A keyring others may read is refused before anything is written.
    #[cfg(unix)]
    {
        set_mode(&keyring, 0o644);
        let out = rotate(&dir).await;
        set_mode(&keyring, 0o600);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
            "{}",
            text(&out)
        );
        assert_eq!(std::fs::read(&keyring).unwrap(), bytes);
        println!(
            "world-readable keyring: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    app.stop().await;
    println!("took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_broken_keyring_file_keeps_the_last_good_keys() {
    let started = Instant::now();
    let app = spawn_app_with(reloading(AppOptions::default())).await;
    let mut client = app.app_client().await;
    let keyring = app.keys.keyring.clone();
    let good = std::fs::read(&keyring).unwrap();

    app.enroll(&mut client, "alice", &face(1)).await;

    // Garbage in place of the keyring (still private).
    std::fs::write(&keyring, "{").unwrap();
    #[cfg(unix)]
    assert_eq!(mode_of(&keyring), 0o600);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let verdict = app
        .verify(&mut client, "alice", &capture_of(&face(1), 0.2, 2))
        .await
        .expect("the last good keys stay in use");
    assert_eq!(verdict.decision(), proto::Decision::Match);
    app.enroll(&mut client, "bob", &face(3)).await;

    // A well-formed keyring with another identity root is refused too: it
    // would orphan every pseudonym.
    let stranger = tempfile::tempdir().unwrap();
    let foreign = keyfiles::generate(stranger.path(), 30).unwrap();
    std::fs::write(&keyring, std::fs::read(&foreign.keyring).unwrap()).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (subject, seed) in [("alice", 1), ("bob", 3)] {
        let verdict = app
            .verify(&mut client, subject, &capture_of(&face(seed), 0.2, 4))
            .await
            .unwrap_or_else(|e| panic!("{subject} with a foreign keyring on disk: {e:?}"));
        assert_eq!(verdict.decision(), proto::Decision::Match, "{subject}");
    }

    // Restored, the reloads go on: a rotation is picked up.
    std::fs::write(&keyring, &good).unwrap();
    let out = rotate(&keys_dir(&app)).await;
    assert!(out.status.success(), "keys rotate: {}", text(&out));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let carol = app.enroll(&mut client, "carol", &face(5)).await.subject_ref;
    let wrapped = epochs_in_redis(&mut app.redis().await, &[carol]).await;
    println!("carol's DEK after the rotation: {wrapped:?}");
    assert_eq!(
        wrapped,
        BTreeMap::from([(2, 1)]),
        "the reload stopped after the failures"
    );
    for (subject, seed) in [("alice", 1), ("bob", 3), ("carol", 5)] {
        let verdict = app
            .verify(&mut client, subject, &capture_of(&face(seed), 0.2, 6))
            .await
            .unwrap();
        assert_eq!(verdict.decision(), proto::Decision::Match, "{subject}");
    }
    app.stop().await;
    println!("took {:?}", started.elapsed());
}
