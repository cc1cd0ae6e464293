//! Shred forgery (#25 item 3). A shred statement says "copies made before
//! completed_at are unreadable": every key epoch that could have wrapped the
//! erased DEKs is retired. It used to be built from the ticket's unsigned
//! `key_epochs` field and the `unshredded` index, both in Redis, so a Redis
//! writer could have it signed while the DEK's epoch was still active; and
//! `facevault receipt verify` never checked that the statement's retired
//! epochs cover the receipt's `key_epochs`.
//!
//! The statement is now built from the ticket's receipt, verified under the
//! service's key, and from the keyring; the index is only a hint of which
//! tickets to look at, and a template the erasure covered that still opens
//! holds the statement back. The attacks:
//! - `rewritten_epochs_and_index_get_no_shred_statement`: HSET the ticket's
//!   `key_epochs` to a "retired" epoch and ZADD it into the index at once.
//! - `a_statement_that_does_not_cover_the_receipt_is_rejected`: a statement
//!   signed with the real key (from the test's key files, so only the coverage
//!   check can catch it) whose retired epochs miss the receipt's epoch, checked
//!   by `facevault receipt verify` and, written into the ticket with HSET, by
//!   `GetDeletionTicket`.
//! - `a_readable_restored_template_holds_the_shred_statement_back`: a DUMP taken
//!   before `DeleteSubject`, RESTOREd after it and carried into the new epoch,
//!   blocks the statement while it opens; a subject enrolled again after its
//!   erasure does not.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use facevault::crypto::envelope::{self, SealedTemplate};
use facevault::crypto::keyfiles;
use facevault::domain::{SubjectId, Tenant};
use facevault::proto::face_vault_client::FaceVaultClient;
use facevault::proto::{self, AuditEvent};
use facevault::vault::{SHRED_CONTEXT, SHRED_REFUSED_OP, SHRED_STATEMENT, verify_receipt};
use prost::Message as _;
use tonic::transport::Channel;

use crate::audit::{all_events, auditor};
use crate::helpers::*;
use crate::key_rotation::{deks_of, facevault, keys_dir, rotate, status as key_status};
use crate::lifecycle::{receipt_key, wait_ticket};

const UNSHREDDED: &str = "fv:{fv-deletion}:unshredded";

fn ticket_key(ticket_id: &str) -> String {
    format!("fv:{{fv-deletion}}:ticket:demo:{ticket_id}")
}

fn member(ticket_id: &str) -> String {
    format!("demo/{ticket_id}")
}

fn options() -> AppOptions {
    AppOptions {
        keys_extra: "reload_interval_secs = 1".to_owned(),
        extra_config: "[deletion]\npoll_interval_ms = 100".to_owned(),
        ..AppOptions::default()
    }
}

async fn delete(client: &mut FaceVaultClient<Channel>, subject: &str) -> proto::DeletionTicket {
    let ticket = client
        .delete_subject(proto::DeleteSubjectRequest {
            subject_id: subject.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ticket.state(), proto::DeletionState::Completed);
    ticket
}

async fn get_ticket(
    client: &mut FaceVaultClient<Channel>,
    ticket_id: &str,
) -> proto::DeletionTicket {
    wait_ticket(client, ticket_id, "be readable", |_| true).await
}

/// The shred refusals recorded for a ticket, polled (for up to 15 s) until
/// one with `detail` is there.
async fn wait_refusal(app: &TestApp, ticket_id: &str, detail: &str) -> Vec<AuditEvent> {
    let mut audit = auditor(app).await;
    for _ in 0..300 {
        let refusals: Vec<AuditEvent> = all_events(&mut audit)
            .await
            .into_iter()
            .filter(|e| e.op == SHRED_REFUSED_OP && e.request_id == ticket_id)
            .collect();
        if refusals.iter().any(|e| e.detail == detail) {
            return refusals;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {detail} refusal was recorded for ticket {ticket_id}");
}

async fn shred_score(
    redis: &mut redis::aio::MultiplexedConnection,
    ticket_id: &str,
) -> Option<u32> {
    redis::cmd("ZSCORE")
        .arg(UNSHREDDED)
        .arg(member(ticket_id))
        .query_async(redis)
        .await
        .unwrap()
}

/// Polls (for up to 5 s) until the ticket is filed in the index under `epoch`.
async fn wait_score(redis: &mut redis::aio::MultiplexedConnection, ticket_id: &str, epoch: u32) {
    let mut last = None;
    for _ in 0..100 {
        last = shred_score(redis, ticket_id).await;
        if last == Some(epoch) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ticket {ticket_id} is filed under {last:?}, not epoch {epoch}");
}

/// A shred statement for `receipt`'s erasure, signed with the service's real
/// receipt key, naming `retired` as the retired epochs.
fn hand_made_statement(
    app: &TestApp,
    receipt: &proto::ReceiptBody,
    retired: Vec<u32>,
) -> proto::DeletionReceipt {
    let material = keyfiles::load(&app.keys).unwrap();
    let body = proto::ShredBody {
        ticket_id: receipt.ticket_id.clone(),
        tenant: receipt.tenant.clone(),
        subject_ref: receipt.subject_ref.clone(),
        completed_at: receipt.completed_at,
        shredded_at: Some(prost_types::Timestamp {
            seconds: now_ms() / 1000,
            nanos: 0,
        }),
        retired_epochs: retired,
        statement: SHRED_STATEMENT.to_owned(),
    }
    .encode_to_vec();
    let mut message = SHRED_CONTEXT.to_vec();
    message.extend_from_slice(&body);
    let signature = material.receipt_signer.sign(&message).as_ref().to_vec();
    proto::DeletionReceipt { body, signature }
}

fn as_json(r: &proto::DeletionReceipt) -> serde_json::Value {
    serde_json::json!({"body": B64.encode(&r.body), "signature": B64.encode(&r.signature)})
}

/// `facevault receipt verify` on a ticket holding `receipt` and `statement`.
async fn receipt_verify(
    dir: &std::path::Path,
    key: &[u8],
    receipt: &proto::DeletionReceipt,
    statement: &proto::DeletionReceipt,
) -> std::process::Output {
    let path = dir.join("ticket.json");
    let document = serde_json::json!({
        "receipt": as_json(receipt),
        "shredReceipt": as_json(statement),
    });
    std::fs::write(&path, document.to_string()).unwrap();
    let path = path.display().to_string();
    let key = B64.encode(key);
    facevault(&["receipt", "verify", "--ticket", &path, "--key", &key]).await
}

async fn waits_for_rewrap(app: &TestApp, from: u64) {
    for _ in 0..150 {
        let status = key_status(app).await;
        if status["active_epoch"] == from + 1 && deks_of(&status, from) == Some(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the re-wrap worker did not empty epoch {from}");
}

async fn retire(app: &TestApp, epoch: u32) {
    // Every process must have reloaded the rotated keyring (2 x reload interval)
    // before `keys retire` lets an epoch go.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let dir = keys_dir(app);
    let out = app
        .run_cli(&[
            "keys",
            "retire",
            "--dir",
            dir.to_str().unwrap(),
            "--epoch",
            &epoch.to_string(),
        ])
        .await;
    assert!(
        out.status.success(),
        "keys retire {epoch}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn rewritten_epochs_and_index_get_no_shred_statement() {
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    app.enroll(&mut client, "subject-a", &face(301)).await;
    let ticket = delete(&mut client, "subject-a").await;
    let key = receipt_key(&mut client).await;
    let signed = verify_receipt(&key, ticket.receipt.as_ref().unwrap()).unwrap();
    assert_eq!(signed.key_epochs, vec![1], "epoch 1 is active and signed");
    let mut redis = app.redis().await;
    assert_eq!(
        shred_score(&mut redis, &ticket.ticket_id).await,
        Some(1),
        "filed for epoch 1's retirement"
    );

    // The attack: the ticket now says its DEKs were under epoch 0 (gone from
    // the keyring), and the index says it is due.
    let _: () = redis::cmd("HSET")
        .arg(ticket_key(&ticket.ticket_id))
        .arg("key_epochs")
        .arg("0")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(UNSHREDDED)
        .arg(0)
        .arg(member(&ticket.ticket_id))
        .query_async(&mut redis)
        .await
        .unwrap();

    // The worker looked at it (the refusal is recorded) and refused: the
    // signed receipt names epoch 1, still in the keyring.
    let refusals = wait_refusal(&app, &ticket.ticket_id, "shred-refused:epoch-not-retired").await;
    assert_eq!(refusals[0].outcome, "refused");
    assert_eq!(refusals[0].subject_ref, signed.subject_ref);
    let shredded: Option<i64> = redis::cmd("HGET")
        .arg(ticket_key(&ticket.ticket_id))
        .arg("shredded_ms")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(shredded, None, "no shred statement was written");
    let served = get_ticket(&mut client, &ticket.ticket_id).await;
    assert!(served.shredded_at.is_none() && served.shred_receipt.is_none());
    // Filed again under the signed epoch, so it comes back when epoch 1 is
    // really retired, whatever the index said.
    wait_score(&mut redis, &ticket.ticket_id, 1).await;
    println!(
        "shred forgery: key_epochs rewritten to 0 and indexed at 0; {} refusal(s) recorded, no statement, re-filed under epoch 1",
        refusals.len()
    );
}

#[tokio::test]
async fn a_statement_that_does_not_cover_the_receipt_is_rejected() {
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    app.enroll(&mut client, "subject-a", &face(302)).await;
    let ticket = delete(&mut client, "subject-a").await;
    let key = receipt_key(&mut client).await;
    let signed = verify_receipt(&key, ticket.receipt.as_ref().unwrap()).unwrap();
    assert_eq!(signed.key_epochs, vec![1]);

    let dir = tempfile::tempdir().unwrap();
    let receipt = ticket.receipt.clone().unwrap();
    // Control: the same hand-made statement naming epoch 1 verifies, so only
    // the coverage check can reject the next one.
    let covering = receipt_verify(
        dir.path(),
        &key,
        &receipt,
        &hand_made_statement(&app, &signed, vec![1]),
    )
    .await;
    assert!(covering.status.success(), "{covering:?}");
    let out: serde_json::Value = serde_json::from_slice(&covering.stdout).unwrap();
    assert_eq!(out["shredded"]["retired_epochs"][0], 1);

    let forged = hand_made_statement(&app, &signed, vec![0]);
    let refused = receipt_verify(dir.path(), &key, &receipt, &forged).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a statement retiring epoch 0 verified for a receipt naming epoch 1"
    );
    assert!(
        stderr.contains("does not retire every key epoch"),
        "{stderr}"
    );

    // The same statement written into the ticket is not served either.
    let mut redis = app.redis().await;
    let _: () = redis::cmd("HSET")
        .arg(ticket_key(&ticket.ticket_id))
        .arg("shredded_ms")
        .arg(now_ms())
        .arg("shred_body")
        .arg(&forged.body)
        .arg("shred_sig")
        .arg(&forged.signature)
        .query_async(&mut redis)
        .await
        .unwrap();
    let served = get_ticket(&mut client, &ticket.ticket_id).await;
    assert!(
        served.shred_receipt.is_none() && served.shredded_at.is_none(),
        "GetDeletionTicket served a statement that does not cover the receipt"
    );
    let refusals = wait_refusal(&app, &ticket.ticket_id, "shred-refused:epochs-not-covered").await;
    println!(
        "uncovering statement: receipt verify exit {:?}, GetDeletionTicket withheld it, {} refusal(s) recorded",
        refused.status.code(),
        refusals.len()
    );
}

#[tokio::test]
async fn a_readable_restored_template_holds_the_shred_statement_back() {
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    let demo = Tenant::try_from("demo").unwrap();
    let material = keyfiles::load(&app.keys).unwrap();
    let subject_a = material
        .keyring
        .tenant(&demo)
        .unwrap()
        .subject_ref(&SubjectId::try_from("subject-a".to_owned()).unwrap());
    let templates_key = format!("fv:{{demo:{}}}:templates", subject_a.as_str());
    let mut redis = app.redis().await;

    // A is dumped, then erased; B is erased and legitimately enrolled again.
    app.enroll(&mut client, "subject-a", &face(303)).await;
    let dumped: Vec<u8> = redis::cmd("DUMP")
        .arg(&templates_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!dumped.is_empty());
    let ticket_a = delete(&mut client, "subject-a").await;
    app.enroll(&mut client, "subject-b", &face(304)).await;
    let ticket_b = delete(&mut client, "subject-b").await;
    // Enrolled again strictly after the erasure completed (both in ms: over
    // loopback the next call can start within the same millisecond).
    let completed_b = ticket_b.completed_at.unwrap();
    let completed_b_ms = completed_b.seconds * 1000 + i64::from(completed_b.nanos / 1_000_000);
    while now_ms() <= completed_b_ms {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    app.enroll(&mut client, "subject-b", &face(305)).await;

    // The attacker RESTOREs A's templates after the erasure.
    let _: () = redis::cmd("RESTORE")
        .arg(&templates_key)
        .arg(0)
        .arg(&dumped)
        .arg("REPLACE")
        .query_async(&mut redis)
        .await
        .unwrap();

    // Rotate. The restored copy is carried into epoch 2, as the re-wrap walk
    // did before #25 item 2: done here with the key files, so this test holds
    // whatever the walk does now.
    assert!(rotate(&keys_dir(&app)).await.status.success());
    let rotated = keyfiles::load(&app.keys).unwrap();
    let keys_a = rotated.keyring.tenant(&demo).unwrap();
    let stored: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&templates_key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    for (template_id, bytes) in stored {
        let sealed = SealedTemplate::decode(bytes.as_slice()).unwrap();
        assert_eq!(sealed.kek_version, 1);
        let carried = envelope::rewrap(&keys_a, &demo, &subject_a, &template_id, sealed).unwrap();
        assert_eq!(carried.kek_version, 2);
        let _: () = redis::cmd("HSET")
            .arg(&templates_key)
            .arg(&template_id)
            .arg(carried.encode_to_vec())
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    waits_for_rewrap(&app, 1).await;
    retire(&app, 1).await;

    // B's ticket is shredded: its new template was enrolled after the erasure.
    let shredded_b = wait_ticket(
        &mut client,
        &ticket_b.ticket_id,
        "gain its shred statement",
        |t| t.shredded_at.is_some(),
    )
    .await;
    assert!(shredded_b.shred_receipt.is_some());
    // A's is held back while its restored copy opens, and filed again under
    // epoch 2, which wraps that copy now.
    let refusals = wait_refusal(&app, &ticket_a.ticket_id, "shred-refused:template-readable").await;
    let a = get_ticket(&mut client, &ticket_a.ticket_id).await;
    assert!(
        a.shredded_at.is_none() && a.shred_receipt.is_none(),
        "a shred statement was issued while a copy from before the erasure opens"
    );
    wait_score(&mut redis, &ticket_a.ticket_id, 2).await;

    // Once epoch 2 is retired too, the copy opens no more and the statement is
    // issued, naming the receipt's epochs.
    assert!(rotate(&keys_dir(&app)).await.status.success());
    waits_for_rewrap(&app, 2).await;
    retire(&app, 2).await;
    let shredded_a = wait_ticket(
        &mut client,
        &ticket_a.ticket_id,
        "gain its shred statement",
        |t| t.shredded_at.is_some(),
    )
    .await;
    let key = receipt_key(&mut client).await;
    let statement =
        facevault::vault::verify_shred_receipt(&key, shredded_a.shred_receipt.as_ref().unwrap())
            .unwrap();
    assert_eq!(statement.retired_epochs, vec![1]);
    println!(
        "restored template: B shredded after epoch 1, A held back ({} refusal(s)) until epoch 2 was retired",
        refusals.len()
    );
}

/// The identity-bound-epoch rule holds on the signed body: an erasure whose
/// receipt names the epoch that shares the identity root (a keyring from
/// before key epochs) is never claimed shredded, whatever the index says.
#[tokio::test]
async fn an_identity_bound_epoch_is_never_claimed_shredded() {
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    app.enroll(&mut client, "subject-a", &face(306)).await;
    let ticket = delete(&mut client, "subject-a").await;
    let mut redis = app.redis().await;
    assert_eq!(shred_score(&mut redis, &ticket.ticket_id).await, Some(1));

    // Epoch 1 is marked as sharing the identity root, as a keyring from before
    // key epochs loads; the index entry stands for what a Redis writer adds.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&app.keys.keyring).unwrap()).unwrap();
    doc["identity_bound_epoch"] = serde_json::json!(1);
    keyfiles::replace_secret(&app.keys.keyring, doc.to_string().as_bytes()).unwrap();
    assert!(rotate(&keys_dir(&app)).await.status.success());
    waits_for_rewrap(&app, 1).await;
    retire(&app, 1).await;

    let refusals = wait_refusal(
        &app,
        &ticket.ticket_id,
        "shred-refused:identity-bound-epoch",
    )
    .await;
    let served = get_ticket(&mut client, &ticket.ticket_id).await;
    assert!(
        served.shredded_at.is_none() && served.shred_receipt.is_none(),
        "an erasure under the identity-bound epoch was claimed shredded"
    );
    // Dropped from the index: no retirement would ever shred it.
    for _ in 0..100 {
        if shred_score(&mut redis, &ticket.ticket_id).await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shred_score(&mut redis, &ticket.ticket_id).await, None);
    println!(
        "identity-bound epoch: epoch 1 retired, {} refusal(s), no statement, dropped from the index",
        refusals.len()
    );
}
