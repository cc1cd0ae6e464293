//! Trim forgery (#25, item 1). Retention used to pick what to trim by stream
//! id alone, and a Redis writer chooses stream ids: it rebuilt the stream with
//! a forged, un-MACed entry at id `1-0` naming (chain C, seq K), the next trim
//! signed a statement excusing C's first K events (minutes old), and the
//! attacker deleted them unseen.
//!
//! Now a trim covers only a contiguous run of events that match their HMACs
//! and whose own signed time is older than the retention, and a statement
//! carries the newest excused event's time and the retention it applied, both
//! signed. The tests:
//! - the attack of the issue: a second replica starts (its first batch runs
//!   the trim), no statement excuses anything of C, the refusal is a signed
//!   registry incident, and once C's first K events are deleted `VerifyChain`
//!   (incremental and full) and `facevault audit verify --anchors` report the
//!   cut;
//! - a genuine event moved to an ancient stream id (signed time new) is
//!   neither trimmed nor excused, and is reported;
//! - a statement signed with the service's own key that excuses events younger
//!   than its retention is rejected by `VerifyChain`, the CLI and
//!   `clients/python/verify_audit_log.py trim`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use facevault::audit::heads::{Registry, TrimStatement};
use facevault::crypto::live::LiveKeys;
use facevault::proto::{self, AuditEvent};
use prost::Message as _;

use crate::audit::auditor;
use crate::helpers::*;

const EVENTS: &str = "fv:audit:{demo}:events";
const TRIMS: &str = "fv:audit:{demo}:trims";
const REGISTRY: &str = "fv:audit:registry";

/// An app with an anchor file and 1 s heads, and `n` calls of history in one
/// chain, all under a registered head; the chain id.
async fn app_with_history(anchor_file: &Path, n: u64) -> (TestApp, String) {
    let app = spawn_app_with(AppOptions {
        extra_config: config(anchor_file),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;
    for i in 0..n {
        app.verify(&mut client, "alice", &capture_of(&values, 0.2, 10 + i))
            .await
            .unwrap();
    }
    let mut audit = auditor(&app).await;
    let heads = audit
        .get_signed_tree_head(proto::GetSignedTreeHeadRequest::default())
        .await
        .unwrap()
        .into_inner()
        .heads;
    assert_eq!(heads.len(), 1, "{heads:?}");
    (app, heads[0].chain_id.clone())
}

fn config(anchor_file: &Path) -> String {
    format!(
        "[audit]\ncheckpoint_interval_secs = 1\nanchor_file = \"{}\"\n",
        anchor_file.display()
    )
}

async fn entries(app: &TestApp) -> Vec<StreamEntry> {
    redis::cmd("XRANGE")
        .arg(EVENTS)
        .arg("-")
        .arg("+")
        .query_async(&mut app.redis().await)
        .await
        .unwrap()
}

fn event_of(fields: &[(String, Vec<u8>)]) -> AuditEvent {
    let e = fields.iter().find(|(k, _)| k == "e").unwrap();
    AuditEvent::decode(e.1.as_slice()).unwrap()
}

/// What an attacker does to put an entry at an id older than the stream's
/// last: rebuilds the stream, `first` at the ids it chooses, then every
/// entry but `drop` at its own id.
async fn rebuild_stream(app: &TestApp, first: &[StreamEntry], drop: &[String]) {
    let old = entries(app).await;
    let mut redis = app.redis().await;
    let _: i64 = redis::cmd("DEL")
        .arg(EVENTS)
        .query_async(&mut redis)
        .await
        .unwrap();
    let kept = old.iter().filter(|(id, _)| !drop.contains(id));
    for (id, fields) in first.iter().chain(kept) {
        let mut add = redis::cmd("XADD");
        add.arg(EVENTS).arg(id);
        for (k, v) in fields {
            add.arg(k).arg(v.as_slice());
        }
        let _: String = add.query_async(&mut redis).await.unwrap();
    }
}

/// A second replica (a restart, as far as retention goes): its first batch
/// runs the trim. Returns it once the trim's outcome is in the registry,
/// i.e. once the registry holds an incident naming `needle`.
async fn trim_by_new_replica(app: &TestApp, anchor_file: &Path, needle: &str) -> ServerHandle {
    let server = app.start_server(&config(anchor_file)).await;
    let mut client = app.app_client_for(&server).await;
    app.verify(&mut client, "alice", &capture_of(&face(1), 0.2, 99))
        .await
        .unwrap();
    for _ in 0..100 {
        if incidents(app).await.iter().any(|d| d.contains(needle)) {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no registry incident names {needle:?} after 5 s: {:?}",
        incidents(app).await
    );
}

async fn incidents(app: &TestApp) -> Vec<String> {
    let doc: Option<String> = redis::cmd("HGET")
        .arg(REGISTRY)
        .arg("doc")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    doc.and_then(|d| serde_json::from_str::<Registry>(&d).ok())
        .map(|r| r.incidents.into_iter().map(|i| i.detail).collect())
        .unwrap_or_default()
}

async fn trims(app: &TestApp) -> Vec<(String, String)> {
    redis::cmd("HGETALL")
        .arg(TRIMS)
        .query_async(&mut app.redis().await)
        .await
        .unwrap()
}

/// XDELs the chain's genuine events of seqs `1..=k` (not the forged `1-0`);
/// how many went.
async fn delete_first(app: &TestApp, chain: &str, k: u64) -> i64 {
    let ids: Vec<String> = entries(app)
        .await
        .into_iter()
        .filter(|(id, f)| {
            let e = event_of(f);
            id != "1-0" && e.chain_id == chain && (1..=k).contains(&e.seq)
        })
        .map(|(id, _)| id)
        .collect();
    redis::cmd("XDEL")
        .arg(EVENTS)
        .arg(ids)
        .query_async(&mut app.redis().await)
        .await
        .unwrap()
}

/// (kind, chain, seq) of every break `VerifyChain` reports.
async fn verify_chain(app: &TestApp, full: bool) -> Vec<(String, String, u64, String)> {
    auditor(app)
        .await
        .verify_chain(proto::VerifyChainRequest { full })
        .await
        .unwrap()
        .into_inner()
        .all_breaks
        .into_iter()
        .map(|b| (b.kind, b.chain_id, b.seq, b.reason))
        .collect()
}

async fn cli_verify(app: &TestApp, anchor_file: &Path) -> String {
    let out = app
        .run_cli(&[
            "audit",
            "verify",
            "--anchors",
            anchor_file.to_str().unwrap(),
        ])
        .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "the CLI says intact:\n{text}");
    text
}

fn missing_in(breaks: &[(String, String, u64, String)], chain: &str) -> bool {
    breaks
        .iter()
        .any(|(kind, c, seq, _)| kind == "missing" && c == chain && *seq == 1)
}

#[tokio::test]
async fn a_forged_ancient_entry_excuses_nothing_and_the_cut_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let anchor_file = dir.path().join("anchors.jsonl");
    let (app, chain) = app_with_history(&anchor_file, 6).await;
    assert_eq!(verify_chain(&app, false).await, vec![], "clean before");
    const K: u64 = 4;

    // The forged entry: no valid HMAC, an ancient stream id and signed time,
    // naming (chain, K).
    let forged = AuditEvent {
        chain_id: chain.clone(),
        seq: K,
        op: "Verify".into(),
        time: Some(facevault::vault::timestamp(1)),
        ..AuditEvent::default()
    };
    let fields = vec![
        ("e".to_owned(), forged.encode_to_vec()),
        ("h".to_owned(), vec![0x5a; 32]),
    ];
    rebuild_stream(&app, &[("1-0".to_owned(), fields)], &[]).await;
    let replica = trim_by_new_replica(&app, &anchor_file, "entry 1-0 not trimmed").await;

    let statements = trims(&app).await;
    assert!(
        statements.iter().all(|(c, _)| *c != chain),
        "a statement excuses the chain: {statements:?}"
    );
    let before = entries(&app).await;
    assert!(
        before.iter().any(|(id, _)| id == "1-0"),
        "the forged entry stays, as evidence"
    );

    // The cut.
    let deleted = delete_first(&app, &chain, K).await;
    assert_eq!(deleted, K as i64);
    let incremental = verify_chain(&app, false).await;
    let full = verify_chain(&app, true).await;
    assert!(
        missing_in(&incremental, &chain),
        "incremental: {incremental:?}"
    );
    assert!(missing_in(&full, &chain), "full: {full:?}");
    let cli = cli_verify(&app, &anchor_file).await;
    assert!(
        cli.contains(&format!("missing: chain {chain} seq 1")),
        "{cli}"
    );
    assert!(
        cli.contains("entry 1-0 not trimmed"),
        "the incident is reported: {cli}"
    );
    println!(
        "forged 1-0 naming ({chain}, {K}): {} statements, {deleted} events cut; \
         VerifyChain {} + {} breaks, CLI:\n{cli}",
        statements.len(),
        incremental.len(),
        full.len()
    );
    replica.stop().await;
}

#[tokio::test]
async fn a_genuine_event_at_an_ancient_stream_id_is_not_trimmed_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let anchor_file = dir.path().join("anchors.jsonl");
    let (app, chain) = app_with_history(&anchor_file, 3).await;
    let stream = entries(&app).await;
    let (first_id, first_fields) = stream[0].clone();
    assert_eq!(event_of(&first_fields).seq, 1);
    // Seq 1, HMAC intact, moved to stream id 2-0: its signed time is minutes old.
    rebuild_stream(
        &app,
        &[("2-0".to_owned(), first_fields.clone())],
        &[first_id],
    )
    .await;
    let replica = trim_by_new_replica(&app, &anchor_file, "entry 2-0 not trimmed").await;
    let reported = incidents(&app).await;
    assert!(
        reported.iter().any(|d| d.contains(&format!(
            "chain {chain} seq 1: entry 2-0 not trimmed: its stream id (2 ms) disagrees"
        ))),
        "{reported:?}"
    );
    assert!(trims(&app).await.is_empty(), "nothing is excused");
    let after: Vec<String> = entries(&app).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(after[0], "2-0", "the entry is still there");
    assert!(
        stream[1..].iter().all(|(id, _)| after.contains(id)),
        "nothing was trimmed"
    );
    println!("seq 1 at stream id 2-0: kept and reported: {reported:?}");
    replica.stop().await;
}

#[tokio::test]
async fn a_signed_statement_excusing_young_events_is_rejected_by_every_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let anchor_file = dir.path().join("anchors.jsonl");
    let (app, chain) = app_with_history(&anchor_file, 5).await;
    let keys = Arc::new(LiveKeys::load(app.keys.clone()).unwrap());
    let current = keys.current();
    let stream = entries(&app).await;
    let newest = event_of(&stream[2].1);
    assert_eq!(newest.seq, 3);
    let newest_ms = facevault::vault::unix_ms(newest.time.as_ref().unwrap()) as u64;
    let registry: Registry = serde_json::from_str(
        &redis::cmd("HGET")
            .arg(REGISTRY)
            .arg("doc")
            .query_async::<String>(&mut app.redis().await)
            .await
            .unwrap(),
    )
    .unwrap();
    let head = registry.head("demo", &chain).unwrap().clone();
    // Validly signed with the service's own key; claims 180 days of retention
    // at a time when the newest event it excuses is minutes old.
    let mut statement = TrimStatement {
        tenant: "demo".into(),
        chain_id: chain.clone(),
        first_index: 3,
        tree_size: head.tree_size,
        root_hash: head.root_hash,
        timestamp_ms: now_ms() as u64,
        newest_excused_ms: newest_ms,
        retention_days: 180,
        signature: Vec::new(),
    };
    statement.seal(&current.receipt_signer);
    assert!(
        statement.verify(&current.receipt_public_key()),
        "the signature holds"
    );
    let json = serde_json::to_string(&statement).unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(TRIMS)
        .arg(&chain)
        .arg(&json)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    assert_eq!(delete_first(&app, &chain, 3).await, 3);

    for full in [false, true] {
        let breaks = verify_chain(&app, full).await;
        assert!(
            breaks
                .iter()
                .any(|(kind, c, _, why)| kind == "unsigned-trim"
                    && *c == chain
                    && why.contains("younger than its 180 days of retention allow")),
            "full={full}: {breaks:?}"
        );
        assert!(missing_in(&breaks, &chain), "full={full}: {breaks:?}");
    }
    let cli = cli_verify(&app, &anchor_file).await;
    assert!(
        cli.contains(&format!("unsigned-trim: chain {chain}")),
        "{cli}"
    );
    assert!(
        cli.contains(&format!("missing: chain {chain} seq 1")),
        "{cli}"
    );

    // The outside verifier: rejects it, and accepts the same statement once
    // what it excuses is old enough (so the check is the age, not the form).
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(current.receipt_public_key());
    let python = |statement: &TrimStatement| {
        let file = dir.path().join("trim.json");
        std::fs::write(&file, serde_json::to_string(statement).unwrap()).unwrap();
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/clients/python/verify_audit_log.py"
            ))
            .args(["trim", "--key", &key])
            .arg(&file)
            .output()
            .unwrap()
    };
    let rejected = python(&statement);
    let said = String::from_utf8_lossy(&rejected.stderr).into_owned();
    assert!(!rejected.status.success(), "python accepts it");
    assert!(
        said.contains("younger than its 180 days of retention allow"),
        "{said}"
    );
    let mut aged = statement.clone();
    aged.timestamp_ms = newest_ms + 180 * 86_400_000 + 1;
    aged.seal(&current.receipt_signer);
    let accepted = python(&aged);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    println!("young statement rejected: python said {said:?}; CLI:\n{cli}");
}
