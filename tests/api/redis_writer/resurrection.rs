//! Resurrection carried forward (#25 item 2). The attack: DUMP a subject's
//! templates key, `DeleteSubject`, then (still inside the key epoch) RESTORE
//! the key and SADD the pseudonym back into the ledger. Before the fix, `keys
//! rotate` had the re-wrap worker carry the restored DEK into the new epoch,
//! `keys retire --epoch 1` succeeded, and the erased subject MATCHed after
//! retirement.
//!
//! The fix: the re-wrap worker first verifies the tenant's audit log and takes
//! the erasures it holds (every erasure is an event stating its scope and when
//! it began); a template whose authenticated `enrolled_at` is older than a
//! verified erasure of its subject is deleted, not re-wrapped, with an audit
//! event `resurrection-refused`. The tests play the Redis writer:
//! - the plain attack: no MATCH after retirement, the restored copy deleted
//!   with its event, `keys status` not counting it;
//! - the erasure index rolled back (the MAC'd verification state DUMPed before
//!   the erasure and RESTOREd after): the walk catches up from the log and
//!   still finds the erasure;
//! - the erasure event deleted from the stream (XDEL): the tenant's log does
//!   not verify, so the worker re-wraps nothing of it (its DEKs stay under
//!   epoch 1, `keys retire` keeps refusing) and says why in an audit event.

use std::time::{Duration, Instant};

use facevault::crypto::envelope::SealedTemplate;
use facevault::proto::{self, AuditEvent};
use prost::Message as _;
use tonic::Code;

use crate::audit::{all_events, auditor};
use crate::helpers::*;
use crate::key_rotation::{deks_of, keys_dir, rotate, status};

fn options() -> AppOptions {
    AppOptions {
        keys_extra: "reload_interval_secs = 1".to_owned(),
        extra_config: "[deletion]\npoll_interval_ms = 100\n".to_owned(),
        ..AppOptions::default()
    }
}

fn templates_key(subject_ref: &str) -> String {
    format!("fv:{{demo:{subject_ref}}}:templates")
}

const LEDGER_SUBJECTS: &str = "fv:ledger:{demo}:subjects";
const VERIFIED_STATE: &str = "fv:audit:{demo}:verified";

async fn dump(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<u8> {
    let bytes: Option<Vec<u8>> = redis::cmd("DUMP").arg(key).query_async(conn).await.unwrap();
    bytes.unwrap_or_else(|| panic!("nothing to DUMP at {key}"))
}

async fn restore(conn: &mut redis::aio::MultiplexedConnection, key: &str, bytes: &[u8]) {
    let _: () = redis::cmd("RESTORE")
        .arg(key)
        .arg(0)
        .arg(bytes)
        .arg("REPLACE")
        .query_async(conn)
        .await
        .unwrap();
}

/// The attacker's step after the erasure: the templates back, and the
/// pseudonym back in the ledger so the re-wrap walk visits it.
async fn resurrect(conn: &mut redis::aio::MultiplexedConnection, subject_ref: &str, bytes: &[u8]) {
    restore(conn, &templates_key(subject_ref), bytes).await;
    let _: () = redis::cmd("SADD")
        .arg(LEDGER_SUBJECTS)
        .arg(subject_ref)
        .query_async(conn)
        .await
        .unwrap();
}

/// The epochs of the subject's stored DEKs, as Redis holds them.
async fn stored_epochs(
    conn: &mut redis::aio::MultiplexedConnection,
    subject_ref: &str,
) -> Vec<u32> {
    let templates: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(templates_key(subject_ref))
        .query_async(conn)
        .await
        .unwrap();
    templates
        .iter()
        .map(|(_, b)| SealedTemplate::decode(b.as_slice()).unwrap().kek_version)
        .collect()
}

async fn delete(app: &TestApp, subject: &str) -> proto::DeletionTicket {
    app.app_client()
        .await
        .delete_subject(proto::DeleteSubjectRequest {
            subject_id: subject.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Events of the re-wrap worker (op `KeyRewrap`).
async fn rewrap_events(app: &TestApp) -> Vec<AuditEvent> {
    all_events(&mut auditor(app).await)
        .await
        .into_iter()
        .filter(|e| e.op == "KeyRewrap")
        .collect()
}

/// (subject_ref, outcome, code, detail) of each event, for messages.
fn brief(events: &[AuditEvent]) -> Vec<(&str, &str, &str, &str)> {
    events
        .iter()
        .map(|e| {
            (
                e.subject_ref.as_str(),
                e.outcome.as_str(),
                e.code.as_str(),
                e.detail.as_str(),
            )
        })
        .collect()
}

/// Polls `f` every 200 ms for up to `within`; panics with `what` and the last
/// value seen if it never holds.
async fn poll<T: std::fmt::Debug, F: std::future::Future<Output = (bool, T)>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        let (done, seen) = f().await;
        if done {
            println!("{what}: after {:?}", started.elapsed());
            return seen;
        }
        assert!(
            started.elapsed() < within,
            "{what}: not within {within:?}; last seen {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn retire_epoch_1(app: &TestApp) -> std::process::Output {
    let dir = keys_dir(app);
    app.run_cli(&[
        "keys",
        "retire",
        "--dir",
        dir.to_str().unwrap(),
        "--epoch",
        "1",
    ])
    .await
}

/// Rotates, then waits until the worker has walked: no DEK under epoch 1 and
/// twice the reload interval passed (so `keys retire` may go).
async fn rotate_and_wait_for_rewrap(app: &TestApp) -> serde_json::Value {
    let out = rotate(&keys_dir(app)).await;
    assert!(out.status.success(), "keys rotate: {out:?}");
    let rotated = Instant::now();
    let s = poll(
        Duration::from_secs(30),
        "every DEK re-wrapped to epoch 2",
        || async move {
            let s = status(app).await;
            (s["active_epoch"] == 2 && deks_of(&s, 1) == Some(0), s)
        },
    )
    .await;
    if let Some(wait) = Duration::from_millis(2500).checked_sub(rotated.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    s
}

#[tokio::test]
async fn a_restored_erased_subject_is_deleted_by_the_rewrap_not_carried_into_the_new_epoch() {
    let started = Instant::now();
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    let victim = app
        .enroll(&mut client, "victim", &face(1))
        .await
        .subject_ref;
    let bystander = app
        .enroll(&mut client, "bystander", &face(2))
        .await
        .subject_ref;
    let mut redis = app.redis().await;

    // The attacker's copy, taken before the erasure.
    let copy = dump(&mut redis, &templates_key(&victim)).await;
    let ticket = delete(&app, "victim").await;
    assert!(ticket.receipt.is_some(), "DeleteSubject erased at once");
    resurrect(&mut redis, &victim, &copy).await;
    // Within the epoch the restored copy answers (the window the key epochs
    // close, see README "Security model"): shown, not asserted.
    let before = app
        .verify(&mut client, "victim", &capture_of(&face(1), 0.2, 7))
        .await;
    println!(
        "within the epoch, the restored copy answers: {:?}",
        before.map(|r| r.decision())
    );

    let s = rotate_and_wait_for_rewrap(&app).await;
    println!("status after the re-wrap: {s}");
    // Only the bystander's DEK was carried forward; the restored one is gone.
    assert_eq!(deks_of(&s, 2), Some(1), "{s:#}");
    assert_eq!(s["deks_total"], 1, "{s:#}");
    assert_eq!(stored_epochs(&mut redis, &victim).await, Vec::<u32>::new());
    assert_eq!(stored_epochs(&mut redis, &bystander).await, vec![2]);
    let in_ledger: bool = redis::cmd("SISMEMBER")
        .arg(LEDGER_SUBJECTS)
        .arg(&victim)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!in_ledger, "the ledger follows the deletion");

    let events = rewrap_events(&app).await;
    println!("re-wrap events: {:#?}", brief(&events));
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.detail.starts_with("resurrection-refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{:#?}", brief(&events));
    assert_eq!(refused[0].subject_ref, victim);
    assert_eq!(refused[0].outcome, "refused");
    assert!(
        refused[0].detail.contains("epoch:1"),
        "{:?}",
        refused[0].detail
    );

    let out = retire_epoch_1(&app).await;
    assert!(out.status.success(), "keys retire: {out:?}");
    // After the servers reload the retired keyring: no MATCH for the erased
    // subject, and the bystander still matches.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = app
        .verify(&mut client, "victim", &capture_of(&face(1), 0.2, 8))
        .await;
    assert_eq!(code(after), Code::NotFound);
    let kept = app
        .verify(&mut client, "bystander", &capture_of(&face(2), 0.2, 9))
        .await
        .unwrap();
    assert_eq!(kept.decision(), proto::Decision::Match);
    app.stop().await;
    println!("took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_rolled_back_erasure_index_does_not_let_a_restored_copy_through() {
    let started = Instant::now();
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    let mut audit = auditor(&app).await;
    let victim = app
        .enroll(&mut client, "victim", &face(1))
        .await
        .subject_ref;
    app.enroll(&mut client, "bystander", &face(2)).await;
    let mut redis = app.redis().await;

    // A verification saves the MAC'd state before the erasure; the attacker keeps it.
    let incremental = || proto::VerifyChainRequest { full: false };
    let report = audit
        .verify_chain(incremental())
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
    let old_state = dump(&mut redis, VERIFIED_STATE).await;
    let copy = dump(&mut redis, &templates_key(&victim)).await;

    delete(&app, "victim").await;
    // The state now walks over the erasure; the attacker puts the old one back.
    let report = audit
        .verify_chain(incremental())
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
    let new_state = dump(&mut redis, VERIFIED_STATE).await;
    assert_ne!(
        old_state, new_state,
        "the verification state moved past the erasure"
    );
    restore(&mut redis, VERIFIED_STATE, &old_state).await;
    resurrect(&mut redis, &victim, &copy).await;

    let s = rotate_and_wait_for_rewrap(&app).await;
    assert_eq!(s["deks_total"], 1, "{s:#}");
    assert_eq!(stored_epochs(&mut redis, &victim).await, Vec::<u32>::new());
    let events = rewrap_events(&app).await;
    println!("re-wrap events: {:#?}", brief(&events));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.subject_ref == victim && e.detail.starts_with("resurrection-refused"))
            .count(),
        1,
        "{:#?}",
        brief(&events)
    );
    let out = retire_epoch_1(&app).await;
    assert!(out.status.success(), "keys retire: {out:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = app
        .verify(&mut client, "victim", &capture_of(&face(1), 0.2, 8))
        .await;
    assert_eq!(code(after), Code::NotFound);
    app.stop().await;
    println!("took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_deleted_erasure_event_makes_the_worker_refuse_the_tenant_and_say_why() {
    let started = Instant::now();
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    let victim = app
        .enroll(&mut client, "victim", &face(1))
        .await
        .subject_ref;
    app.enroll(&mut client, "bystander", &face(2)).await;
    let mut redis = app.redis().await;

    let copy = dump(&mut redis, &templates_key(&victim)).await;
    delete(&app, "victim").await;
    // A later event, so the erasure is not the chain's last.
    app.enroll(&mut client, "later", &face(3)).await;

    // The attacker removes the erasure's event from the stream.
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg("fv:audit:{demo}:events")
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let erasure_ids: Vec<&String> = entries
        .iter()
        .filter(|(_, fields)| {
            fields.chunks(2).any(|kv| {
                kv[0] == b"e"
                    && AuditEvent::decode(kv[1].as_slice())
                        .is_ok_and(|e| e.op == "Erasure" && e.subject_ref == victim)
            })
        })
        .map(|(id, _)| id)
        .collect();
    assert_eq!(erasure_ids.len(), 1, "{} entries", entries.len());
    let removed: u64 = redis::cmd("XDEL")
        .arg("fv:audit:{demo}:events")
        .arg(erasure_ids[0])
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    resurrect(&mut redis, &victim, &copy).await;

    let out = rotate(&keys_dir(&app)).await;
    assert!(out.status.success(), "keys rotate: {out:?}");
    let app_ref = &app;
    let refusal = poll(
        Duration::from_secs(30),
        "the worker refuses the tenant",
        || async move {
            let events = rewrap_events(app_ref).await;
            let found = events
                .iter()
                .find(|e| e.detail.starts_with("rewrap-refused, audit-log-unverified"))
                .cloned();
            (found.is_some(), found)
        },
    )
    .await
    .unwrap();
    println!("refusal event: {:?}", brief(std::slice::from_ref(&refusal)));
    assert_eq!(refusal.outcome, "refused");
    assert!(refusal.detail.contains("missing"), "{:?}", refusal.detail);

    // Nothing of the tenant was carried forward: the restored copy and the
    // others stay under epoch 1, so epoch 1 cannot be retired.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stored_epochs(&mut redis, &victim).await, vec![1]);
    let s = status(&app).await;
    println!("status: {s}");
    assert_eq!(deks_of(&s, 1), Some(3), "{s:#}");
    assert_eq!(deks_of(&s, 2), Some(0), "{s:#}");
    let out = retire_epoch_1(&app).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("epoch 1 still wraps 3 DEK(s)"),
        "{out:?}"
    );
    app.stop().await;
    println!("took {:?}", started.elapsed());
}

/// The templates hash as it is now, field by field (what an attacker keeps).
async fn templates_now(
    conn: &mut redis::aio::MultiplexedConnection,
    subject_ref: &str,
) -> Vec<(String, Vec<u8>)> {
    redis::cmd("HGETALL")
        .arg(templates_key(subject_ref))
        .query_async(conn)
        .await
        .unwrap()
}

async fn put_back(
    conn: &mut redis::aio::MultiplexedConnection,
    subject_ref: &str,
    fields: &[(String, Vec<u8>)],
) {
    for (field, value) in fields {
        let _: () = redis::cmd("HSET")
            .arg(templates_key(subject_ref))
            .arg(field)
            .arg(value)
            .query_async(conn)
            .await
            .unwrap();
    }
}

/// Rotates, lets the worker walk, retires epoch 1 and waits for every
/// replica to drop it; then `probe` must not match.
async fn after_retirement(app: &TestApp) {
    rotate_and_wait_for_rewrap(app).await;
    let out = retire_epoch_1(app).await;
    assert!(out.status.success(), "keys retire: {out:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

#[tokio::test]
async fn a_restored_copy_from_before_a_withdrawal_is_not_carried_forward() {
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    let base = face(71);
    let enrolled = client
        .enroll(app.enroll_request("narrowed", &base, &["login", "payment"], false))
        .await
        .unwrap()
        .into_inner();
    let mut redis = app.redis().await;
    let before = templates_now(&mut redis, &enrolled.subject_ref).await;
    client
        .withdraw_consent(proto::WithdrawConsentRequest {
            subject_id: "narrowed".into(),
            purposes: vec!["payment".into()],
        })
        .await
        .unwrap();
    // The same template id, re-sealed with `login` only; the attacker puts
    // the copy from before the withdrawal back.
    put_back(&mut redis, &enrolled.subject_ref, &before).await;
    after_retirement(&app).await;
    for purpose in ["payment", "login"] {
        let answer = client
            .verify(app.verify_request("narrowed", &capture_of(&base, 0.2, 1), purpose))
            .await
            .map(|r| r.into_inner().decision());
        println!("{purpose} after retirement: {answer:?}");
        assert_ne!(answer.ok(), Some(proto::Decision::Match), "{purpose}");
    }
    let events = rewrap_events(&app).await;
    assert!(
        events
            .iter()
            .any(|e| e.detail.starts_with("resurrection-refused")),
        "{:?}",
        brief(&events)
    );
}

#[tokio::test]
async fn a_restored_template_revoked_by_replace_is_not_carried_forward() {
    let app = spawn_app_with(options()).await;
    let mut client = app.app_client().await;
    let old = face(72);
    let enrolled = app.enroll(&mut client, "replaced", &old).await;
    let mut redis = app.redis().await;
    let before = templates_now(&mut redis, &enrolled.subject_ref).await;
    // Re-enrolling with `replace` revokes the old template: an erasure.
    let new = face(73);
    client
        .enroll(app.enroll_request("replaced", &new, &["login"], true))
        .await
        .unwrap();
    put_back(&mut redis, &enrolled.subject_ref, &before).await;
    after_retirement(&app).await;
    let answer = app
        .verify(&mut client, "replaced", &capture_of(&old, 0.2, 1))
        .await
        .map(|r| r.decision());
    println!("the revoked face after retirement: {answer:?}");
    assert_ne!(answer.ok(), Some(proto::Decision::Match));
    // The new template is alive and carried forward.
    let answer = app
        .verify(&mut client, "replaced", &capture_of(&new, 0.2, 2))
        .await
        .unwrap();
    assert_eq!(answer.decision(), proto::Decision::Match);
}

#[tokio::test]
async fn a_recorded_registry_incident_does_not_stop_the_rewrap() {
    let app = spawn_app_with(AppOptions {
        extra_config: "[deletion]\npoll_interval_ms = 100\n[audit]\ncheckpoint_interval_secs = 1\n"
            .to_owned(),
        ..options()
    })
    .await;
    let mut client = app.app_client().await;
    app.enroll(&mut client, "alice", &face(74)).await;
    let mut audit = auditor(&app).await;
    audit
        .get_signed_tree_head(proto::GetSignedTreeHeadRequest::default())
        .await
        .unwrap();
    // One edit of the registry: the writer records an incident for good.
    let mut redis = app.redis().await;
    let doc: String = redis::cmd("HGET")
        .arg("fv:audit:registry")
        .arg("doc")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&doc).unwrap();
    edited["timestampMs"] = serde_json::Value::String("1".into());
    let _: i64 = redis::cmd("HSET")
        .arg("fv:audit:registry")
        .arg("doc")
        .arg(edited.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    poll(Duration::from_secs(10), "an incident recorded", || {
        let mut audit = audit.clone();
        async move {
            audit
                .get_signed_tree_head(proto::GetSignedTreeHeadRequest::default())
                .await
                .unwrap();
            let report = audit
                .verify_chain(proto::VerifyChainRequest { full: true })
                .await
                .unwrap()
                .into_inner();
            (!report.intact, report.all_breaks.len())
        }
    })
    .await;
    // The incident stays evidence, and the tenant's log still verifies now:
    // the walk re-wraps and epoch 1 can go.
    rotate_and_wait_for_rewrap(&app).await;
    let out = retire_epoch_1(&app).await;
    assert!(out.status.success(), "keys retire: {out:?}");
    let report = audit
        .verify_chain(proto::VerifyChainRequest { full: false })
        .await
        .unwrap()
        .into_inner();
    assert!(!report.intact, "the incident is still reported: {report:?}");
}
