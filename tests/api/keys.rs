//! Erasure that reaches backups: a copy of Redis made before an erasure (an RDB
//! snapshot, a `DUMP` of the template) opens nothing once the key epoch that
//! wrapped it is retired, and the erasure's ticket then says so, signed.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use facevault::crypto::keyfiles;
use facevault::devstack::redis_server::{RedisOptions, RedisServer};
use facevault::domain::{SubjectId, Tenant};
use facevault::proto;
use facevault::vault::{SHRED_STATEMENT, verify_receipt, verify_shred_receipt};
use tonic::Code;

use crate::helpers::*;
use crate::key_rotation::{deks_of, facevault, keys_dir, rotate, status as key_status};
use crate::lifecycle::receipt_key;

/// Puts a `DUMP`ed key back, over whatever is there.
async fn restore(redis: &mut redis::aio::MultiplexedConnection, key: &str, dumped: &[u8]) {
    let _: () = redis::cmd("RESTORE")
        .arg(key)
        .arg(0)
        .arg(dumped)
        .arg("REPLACE")
        .query_async(redis)
        .await
        .unwrap();
}

/// Never a MATCH: a restored copy either cannot be opened (INTERNAL) or is not
/// there (NOT_FOUND).
fn assert_never_matches(result: Result<proto::VerifyResponse, tonic::Status>, what: &str) {
    match result {
        Ok(r) => assert_ne!(
            r.decision(),
            proto::Decision::Match,
            "{what}: a copy from before the erasure still MATCHes"
        ),
        Err(status) => assert!(
            matches!(status.code(), Code::Internal | Code::NotFound),
            "{what}: unexpected {status:?}"
        ),
    }
}

#[tokio::test]
async fn a_backup_taken_before_an_erasure_is_unreadable_after_retirement() {
    let app = spawn_app_with(AppOptions {
        keys_extra: "reload_interval_secs = 1".to_owned(),
        extra_config: "[deletion]\npoll_interval_ms = 100".to_owned(),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    let (face_a, face_b) = (face(101), face(102));
    app.enroll(&mut client, "subject-a", &face_a).await;
    app.enroll(&mut client, "subject-b", &face_b).await;

    // 1. Copies: an RDB snapshot, and a DUMP of A's templates.
    let mut redis = app.redis().await;
    let _: () = redis::cmd("BGSAVE").query_async(&mut redis).await.unwrap();
    // BGSAVE forks before it replies, so "in progress" is set from its reply on.
    let mut saved = false;
    for _ in 0..400 {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut redis)
            .await
            .unwrap();
        if info.contains("rdb_bgsave_in_progress:0") {
            assert!(info.contains("rdb_last_bgsave_status:ok"), "{info}");
            saved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(saved, "BGSAVE did not finish");
    let (TestRedis::Standalone(server) | TestRedis::Tls { server, .. }) = &app.redis else {
        unreachable!("a standalone app")
    };
    let backup = tempfile::tempdir().unwrap();
    std::fs::copy(
        server.dir().join("dump.rdb"),
        backup.path().join("dump.rdb"),
    )
    .expect("BGSAVE wrote dump.rdb");
    let material = keyfiles::load(&app.keys).unwrap();
    let demo = Tenant::try_from("demo").unwrap();
    let subject_ref = material
        .keyring
        .tenant(&demo)
        .unwrap()
        .subject_ref(&SubjectId::try_from("subject-a".to_owned()).unwrap());
    let templates_key = format!("fv:{{demo:{}}}:templates", subject_ref.as_str());
    let dumped: Vec<u8> = redis::cmd("DUMP")
        .arg(&templates_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!dumped.is_empty(), "A's templates were dumped");

    // 2. The erasure.
    let ticket = client
        .delete_subject(proto::DeleteSubjectRequest {
            subject_id: "subject-a".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ticket.state(), proto::DeletionState::Completed);
    assert!(
        ticket.shredded_at.is_none(),
        "epoch 1 is still in the keyring"
    );
    let receipt_key = receipt_key(&mut client).await;
    let body = verify_receipt(&receipt_key, ticket.receipt.as_ref().unwrap()).unwrap();
    assert_eq!(
        body.key_epochs,
        vec![1],
        "the receipt names the epochs in use"
    );

    // Within the epoch, the restored copy still opens: the rollback window.
    restore(&mut redis, &templates_key, &dumped).await;
    let rolled_back = app.verify(&mut client, "subject-a", &face_a).await.unwrap();
    assert_eq!(
        rolled_back.decision(),
        proto::Decision::Match,
        "within an epoch a Redis writer can roll back (the documented window)"
    );
    let _: () = redis::cmd("DEL")
        .arg(&templates_key)
        .query_async(&mut redis)
        .await
        .unwrap();

    // The compliance report names the oldest epoch and its retirement date.
    let report = client
        .get_compliance_report(proto::GetComplianceReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.oldest_key_epoch, 1);
    assert!(
        !report.key_epoch_retirement_overdue,
        "a fresh epoch is not overdue"
    );
    let retire_by = report.oldest_key_epoch_retire_by.unwrap().seconds * 1000;
    let eight_days = 8 * 86_400_000;
    assert!(
        (retire_by - now_ms() - eight_days).abs() < 120_000,
        "an unrotated epoch is due epoch_days + max_rewrap_days after its creation"
    );

    // 3. Rotate, wait for the re-wrap, retire.
    let dir = keys_dir(&app);
    let rotated = rotate(&dir).await;
    assert!(rotated.status.success(), "{rotated:?}");
    let mut rewrapped = false;
    for _ in 0..150 {
        let status = key_status(&app).await;
        if status["active_epoch"] == 2 && deks_of(&status, 1) == Some(0) {
            assert_eq!(deks_of(&status, 2), Some(1), "B's DEK moved to epoch 2");
            rewrapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rewrapped, "the re-wrap worker did not empty epoch 1");
    // Replicas must have reloaded before an epoch may go (2 x reload interval).
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let retired = app
        .run_cli(&[
            "keys",
            "retire",
            "--dir",
            dir.to_str().unwrap(),
            "--epoch",
            "1",
        ])
        .await;
    assert!(
        retired.status.success(),
        "keys retire: {}",
        String::from_utf8_lossy(&retired.stderr)
    );
    let status = key_status(&app).await;
    assert_eq!(
        deks_of(&status, 1),
        None,
        "epoch 1 is gone from the keyring"
    );
    assert_eq!(status["retired"][0]["epoch"], 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let report = client
        .get_compliance_report(proto::GetComplianceReportRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        report.oldest_key_epoch, 2,
        "the report follows the reloaded keyring"
    );

    // 4. The live service still serves B.
    let b = app.verify(&mut client, "subject-b", &face_b).await.unwrap();
    assert_eq!(b.decision(), proto::Decision::Match);

    // 5. A's DUMP restored into the live Redis opens nothing.
    restore(&mut redis, &templates_key, &dumped).await;
    assert_never_matches(
        app.verify(&mut client, "subject-a", &face_a).await,
        "A's DUMP restored into the live Redis",
    );

    // 6. The old snapshot, served by a fresh Redis and a second facevault with
    // today's keys: neither A nor B opens.
    let old = RedisServer::start(RedisOptions {
        dir: Some(backup.path().to_path_buf()),
        ..RedisOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let live_url = match &app.redis {
        TestRedis::Standalone(server) => server.url(),
        _ => unreachable!(),
    };
    let config = app
        .config_text("[deletion]\nworker = false")
        .replace(&live_url, &old.url());
    let restored = serve(
        app.build_server_from(&backup.path().join("restored.toml"), &config)
            .await
            .unwrap(),
    );
    let mut restored_client = app.app_client_for(&restored).await;
    let keys_in_backup: Vec<String> = redis::cmd("KEYS")
        .arg("fv:{demo:*}:templates")
        .query_async(
            &mut redis::Client::open(old.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        keys_in_backup.len(),
        2,
        "the snapshot holds A's and B's templates"
    );
    for (subject, values) in [("subject-a", &face_a), ("subject-b", &face_b)] {
        for attempt in 0..3 {
            let result = app
                .verify(
                    &mut restored_client,
                    subject,
                    &capture_of(values, 0.01, attempt),
                )
                .await;
            assert_never_matches(result, &format!("{subject} from the old snapshot"));
        }
    }
    restored.stop().await;

    // 7. A's ticket gains its shred statement, and both signatures verify,
    // in-process and with `facevault receipt verify`.
    let shredded = crate::lifecycle::wait_ticket(
        &mut client,
        &ticket.ticket_id,
        "gain shredded_at after retirement",
        |t| t.shredded_at.is_some(),
    )
    .await;
    let statement =
        verify_shred_receipt(&receipt_key, shredded.shred_receipt.as_ref().unwrap()).unwrap();
    assert_eq!(statement.retired_epochs, vec![1]);
    assert_eq!(statement.statement, SHRED_STATEMENT);
    assert_eq!(statement.ticket_id, ticket.ticket_id);
    assert_eq!(statement.completed_at, shredded.completed_at);
    assert_eq!(statement.shredded_at, shredded.shredded_at);

    let as_json = |r: &proto::DeletionReceipt| serde_json::json!({"body": B64.encode(&r.body), "signature": B64.encode(&r.signature)});
    let ticket_json = backup.path().join("ticket.json");
    let mut document = serde_json::json!({
        "receipt": as_json(shredded.receipt.as_ref().unwrap()),
        "shredReceipt": as_json(shredded.shred_receipt.as_ref().unwrap()),
    });
    std::fs::write(&ticket_json, document.to_string()).unwrap();
    let key = B64.encode(&receipt_key);
    let ticket_path = ticket_json.display().to_string();
    let checked = facevault(&["receipt", "verify", "--ticket", &ticket_path, "--key", &key]).await;
    assert!(checked.status.success(), "{checked:?}");
    let printed: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(printed["shredded"]["retired_epochs"][0], 1);
    assert_eq!(printed["key_epochs"][0], 1);
    // A tampered shred statement is refused.
    let mut forged = shredded.shred_receipt.clone().unwrap();
    forged.body.push(0);
    document["shredReceipt"] = as_json(&forged);
    std::fs::write(&ticket_json, document.to_string()).unwrap();
    let refused = facevault(&["receipt", "verify", "--ticket", &ticket_path, "--key", &key]).await;
    assert!(
        !refused.status.success(),
        "a forged shred statement verified"
    );
    println!(
        "backup test: 2 subjects, snapshot keys {}, epoch 1 retired, A and B unreadable in the snapshot, B served live",
        keys_in_backup.len()
    );
}

/// A keyring written before key epochs keeps working: same pseudonyms, its
/// templates open, and its first epoch is named as sharing the identity root.
#[tokio::test]
async fn a_keyring_from_before_key_epochs_keeps_its_pseudonyms_and_templates() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let (legacy_dir, legacy) = {
        let dir = tempfile::tempdir().unwrap();
        let paths = keyfiles::KeyPaths::in_dir(dir.path());
        // The old format, with the secret the app's epoch 1 would have had if
        // the old keygen had written it: one master, version 1.
        let secret = B64.encode([7u8; 32]);
        keyfiles::write_secret(
            &paths.keyring,
            format!(r#"{{"active_version": 1, "keys": [{{"version": 1, "secret": "{secret}"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        for (from, to) in [
            (&app.keys.transform_secret, &paths.transform_secret),
            (&app.keys.sealing_keys, &paths.sealing_keys),
            (&app.keys.receipt_signing_key, &paths.receipt_signing_key),
        ] {
            keyfiles::write_secret(to, &std::fs::read(from).unwrap()).unwrap();
        }
        (dir, paths)
    };
    let before = keyfiles::load(&legacy).unwrap();
    let demo = Tenant::try_from("demo").unwrap();
    let alice = SubjectId::try_from("alice".to_owned()).unwrap();
    let pseudonym = before.keyring.tenant(&demo).unwrap().subject_ref(&alice);
    assert_eq!(before.keyring.identity_bound_epoch(), Some(1));

    // Serve with the old file; enroll; rotate (which rewrites it in format 2).
    let legacy_dir_text = legacy_dir.path().display().to_string();
    let config = app.config_text("").replace(
        &app.keys.keyring.display().to_string(),
        &legacy.keyring.display().to_string(),
    );
    let server = serve(
        app.build_server_from(&legacy_dir.path().join("facevault.toml"), &config)
            .await
            .unwrap(),
    );
    let mut legacy_client = app.app_client_for(&server).await;
    app.enroll(&mut legacy_client, "alice", &face(5)).await;
    server.stop().await;
    let rotated = facevault(&["keys", "rotate", "--dir", &legacy_dir_text]).await;
    assert!(rotated.status.success(), "{rotated:?}");
    let text = std::fs::read_to_string(&legacy.keyring).unwrap();
    assert!(
        text.contains("\"format\": 2"),
        "rewritten in format 2: {text}"
    );
    let after = keyfiles::load(&legacy).unwrap();
    assert_eq!(
        after.keyring.tenant(&demo).unwrap().subject_ref(&alice),
        pseudonym,
        "pseudonyms survive the move to format 2"
    );
    assert_eq!(after.keyring.active_epoch(), 2);
    let server = serve(
        app.build_server_from(&legacy_dir.path().join("facevault.toml"), &config)
            .await
            .unwrap(),
    );
    let mut legacy_client = app.app_client_for(&server).await;
    let r = app
        .verify(&mut legacy_client, "alice", &face(5))
        .await
        .unwrap();
    assert_eq!(
        r.decision(),
        proto::Decision::Match,
        "epoch-1 template opens"
    );
    server.stop().await;
    // The app's own client is untouched by all this.
    drop(
        client
            .get_sealing_keys(proto::GetSealingKeysRequest {})
            .await
            .unwrap(),
    );
}
