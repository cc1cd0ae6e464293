//! The audit log: one event per call, tamper-evident chains, fail closed, group
//! commit without gaps.

use std::collections::HashMap;

use facevault::proto::audit_log_client::AuditLogClient;
use facevault::proto::{self, AuditEvent};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;

pub async fn auditor(app: &TestApp) -> AuditLogClient<Channel> {
    let tls = app.tls_config(&app.pki.auditor.0, &app.pki.auditor.1);
    AuditLogClient::new(app.channel_with(tls).await.unwrap())
}

pub async fn all_events(client: &mut AuditLogClient<Channel>) -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(proto::ListEventsRequest {
                page_size: 200,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

pub async fn verify_chain(client: &mut AuditLogClient<Channel>) -> proto::VerifyChainResponse {
    client
        .verify_chain(proto::VerifyChainRequest { full: true })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn every_call_allowed_or_refused_is_one_event_with_the_right_fields() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let mut as_auditor = app.auditor_as_app_client().await;
    let values = face(1);

    client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap();
    let enrolled = client
        .enroll(app.enroll_request("alice", &values, &["login", "payment"], false))
        .await
        .unwrap()
        .into_inner();
    let matched = app
        .verify(&mut client, "alice", &capture_of(&values, 0.2, 2))
        .await
        .unwrap();
    app.verify(&mut client, "alice", &face(3)).await.unwrap();
    let refused = client
        .verify(app.verify_request("alice", &values, "Bad Purpose"))
        .await;
    assert_eq!(code(refused), Code::InvalidArgument);
    let denied = as_auditor
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await;
    assert_eq!(code(denied), Code::PermissionDenied);
    client
        .withdraw_consent(proto::WithdrawConsentRequest {
            subject_id: "alice".into(),
            purposes: vec!["payment".into()],
        })
        .await
        .unwrap();
    client
        .get_compliance_report(proto::GetComplianceReportRequest {})
        .await
        .unwrap();
    let ticket = client
        .cancel_account(proto::CancelAccountRequest {
            subject_id: "alice".into(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    client
        .get_deletion_ticket(proto::GetDeletionTicketRequest {
            ticket_id: ticket.ticket_id.clone(),
        })
        .await
        .unwrap();
    client
        .delete_subject(proto::DeleteSubjectRequest {
            subject_id: "bob".into(),
        })
        .await
        .unwrap();

    let mut audit = auditor(&app).await;
    let events = all_events(&mut audit).await;
    let mut by_op: HashMap<&str, Vec<&AuditEvent>> = HashMap::new();
    for e in &events {
        by_op.entry(e.op.as_str()).or_default().push(e);
    }
    let count = |op: &str| by_op.get(op).map_or(0, Vec::len);
    assert_eq!(count("GetSealingKeys"), 2);
    assert_eq!(count("Enroll"), 1);
    assert_eq!(count("Verify"), 3);
    assert_eq!(count("WithdrawConsent"), 1);
    assert_eq!(count("GetComplianceReport"), 1);
    assert_eq!(count("CancelAccount"), 1);
    assert_eq!(count("GetDeletionTicket"), 1);
    assert_eq!(count("DeleteSubject"), 1);
    // Each erasure (delete, withdraw, cancel) is also an event of its own,
    // which its receipt names.
    assert_eq!(count("Erasure"), 3);
    assert_eq!(events.len(), 14);
    for e in &by_op["Erasure"] {
        assert_eq!(
            (e.caller.as_str(), e.outcome.as_str()),
            ("facevault/deletion", "allowed")
        );
        assert!(e.caller_cert_sha256.is_empty());
        // Its scope and start, which the re-wrap worker reads (docs/audit-log.md §5.5).
        let markers: Vec<&str> = e.detail.split(", ").collect();
        assert!(
            markers.iter().any(|m| m.starts_with("erased:"))
                && markers.iter().any(|m| m.starts_with("from:")),
            "{:?}",
            e.detail
        );
    }

    let app_identity = "spiffe://facevault.dev/tenant/demo/role/app";
    for e in events.iter().filter(|e| e.op != "Erasure") {
        assert_eq!(e.tenant, "demo");
        assert_eq!(e.caller_cert_sha256.len(), 64);
        assert!(!e.request_id.is_empty() && !e.event_id.is_empty());
        assert!(e.time.is_some());
        assert_eq!(e.chain_id, events[0].chain_id);
    }
    let verifies = &by_op["Verify"];
    assert_eq!(verifies[0].event_id, matched.audit_id);
    assert_eq!(verifies[0].caller, app_identity);
    assert_eq!(verifies[0].subject_ref, enrolled.subject_ref);
    assert_eq!(verifies[0].purpose, "login");
    assert_eq!(
        (verifies[0].outcome.as_str(), verifies[0].code.as_str()),
        ("allowed", "OK")
    );
    assert_eq!(verifies[0].detail, "match");
    assert_eq!(verifies[1].detail, "no-match");
    assert_eq!(
        (verifies[2].outcome.as_str(), verifies[2].code.as_str()),
        ("refused", "INVALID_ARGUMENT")
    );
    let denied = by_op["GetSealingKeys"]
        .iter()
        .find(|e| e.code == "PERMISSION_DENIED")
        .unwrap();
    assert_eq!(
        denied.caller,
        "spiffe://facevault.dev/tenant/demo/role/auditor"
    );
    assert_eq!(denied.outcome, "refused");
    assert_eq!(by_op["CancelAccount"][0].subject_ref, enrolled.subject_ref);
    assert_eq!(by_op["WithdrawConsent"][0].purpose, "payment");

    // Filters.
    let only_verify = audit
        .list_events(proto::ListEventsRequest {
            op: "Verify".into(),
            subject_ref: enrolled.subject_ref.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_verify.events.len(), 3);

    let report = verify_chain(&mut audit).await;
    assert!(report.intact, "{report:?}");
    assert!(report.events_checked >= 11);
}

#[tokio::test]
async fn the_audit_api_is_for_auditors_of_their_own_tenant() {
    let app = spawn_app().await;
    let tls = app.tls_config(&app.pki.app.0, &app.pki.app.1);
    let mut as_app = AuditLogClient::new(app.channel_with(tls).await.unwrap());
    let r = as_app
        .verify_chain(proto::VerifyChainRequest { full: true })
        .await;
    assert_eq!(code(r), Code::PermissionDenied);

    let mut other = app.other_tenant_client().await;
    other
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap();
    let mut audit = auditor(&app).await;
    let events = all_events(&mut audit).await;
    assert!(
        events.iter().all(|e| e.tenant == "demo"),
        "demo's auditor sees only demo"
    );
    assert!(
        events
            .iter()
            .any(|e| e.op == "VerifyChain" && e.code == "PERMISSION_DENIED")
    );
}

/// Rewrites the tenant's stream with the same ids, after `tamper` changes the
/// list of (id, fields): how an attacker with Redis access would edit history.
async fn rewrite_stream(app: &TestApp, tamper: impl FnOnce(&mut Vec<StreamEntry>)) {
    let mut redis = app.redis().await;
    let key = "fv:audit:{demo}:events";
    let reply: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut entries = reply;
    tamper(&mut entries);
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap();
    for (id, fields) in entries {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg(id);
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut redis).await.unwrap();
    }
}

async fn make_history(app: &TestApp) {
    let mut client = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;
    for i in 0..8 {
        app.verify(&mut client, "alice", &capture_of(&values, 0.2, 10 + i))
            .await
            .unwrap();
    }
}

fn seq_of(fields: &[(String, Vec<u8>)]) -> u64 {
    use prost::Message as _;
    let e = fields.iter().find(|(k, _)| k == "e").unwrap();
    AuditEvent::decode(e.1.as_slice()).unwrap().seq
}

#[tokio::test]
async fn verify_chain_pinpoints_an_edited_event() {
    let app = spawn_app().await;
    make_history(&app).await;
    let mut audit = auditor(&app).await;
    assert!(verify_chain(&mut audit).await.intact);
    rewrite_stream(&app, |entries| {
        use prost::Message as _;
        let fields = &mut entries[4].1;
        let e = fields.iter_mut().find(|(k, _)| k == "e").unwrap();
        let mut event = AuditEvent::decode(e.1.as_slice()).unwrap();
        event.outcome = "allowed".into();
        event.code = "OK".into();
        event.detail = "match".into();
        event.purpose = "payment".into();
        e.1 = event.encode_to_vec();
    })
    .await;
    let report = verify_chain(&mut audit).await;
    assert!(!report.intact);
    assert_eq!(report.broken_at_seq, 5, "{report:?}");
    assert_eq!(report.all_breaks[0].kind, "edited", "{report:?}");
}

#[tokio::test]
async fn verify_chain_pinpoints_a_deleted_event() {
    let app = spawn_app().await;
    make_history(&app).await;
    let mut redis = app.redis().await;
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg("fv:audit:{demo}:events")
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (id, fields) = &entries[3];
    assert_eq!(seq_of(fields), 4);
    let _: i64 = redis::cmd("XDEL")
        .arg("fv:audit:{demo}:events")
        .arg(id)
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut audit = auditor(&app).await;
    let report = verify_chain(&mut audit).await;
    assert!(!report.intact);
    assert_eq!(report.broken_at_seq, 4, "{report:?}");
    assert_eq!(report.all_breaks[0].kind, "missing", "{report:?}");
}

#[tokio::test]
async fn verify_chain_pinpoints_reordered_events() {
    let app = spawn_app().await;
    make_history(&app).await;
    rewrite_stream(&app, |entries| {
        // Swap the contents of two entries, keeping the ids in order.
        let a = entries[5].1.clone();
        entries[5].1 = entries[6].1.clone();
        entries[6].1 = a;
    })
    .await;
    let mut audit = auditor(&app).await;
    let report = verify_chain(&mut audit).await;
    assert!(!report.intact);
    assert_eq!(report.broken_at_seq, 6, "{report:?}");
    assert_eq!(report.all_breaks[0].kind, "reordered", "{report:?}");
}

#[tokio::test]
async fn calls_fail_closed_when_the_audit_stream_cannot_be_written() {
    let app = spawn_app().await;
    let mut client = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;
    let mut redis = app.redis().await;
    // Make the stream unwritable: a key of the wrong type in its place.
    let _: () = redis::cmd("DEL")
        .arg("fv:audit:{demo}:events")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("fv:audit:{demo}:events")
        .arg("not a stream")
        .query_async(&mut redis)
        .await
        .unwrap();
    let r = app
        .verify(&mut client, "alice", &capture_of(&values, 0.2, 2))
        .await;
    let status = r.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("audit"), "{status:?}");
    let r = client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await;
    assert_eq!(code(r), Code::Unavailable);

    let _: () = redis::cmd("DEL")
        .arg("fv:audit:{demo}:events")
        .query_async(&mut redis)
        .await
        .unwrap();
    client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_verifies_make_a_thousand_chained_events() {
    // A load test on two cores: generous deadlines, so that what is measured is
    // the chain, not the scheduler.
    let app = spawn_app_with(AppOptions {
        redis_timeout_ms: 10_000,
        ..AppOptions::default()
    })
    .await;
    let client = app.app_client().await;
    let subjects = 100;
    let faces: Vec<Vec<f32>> = (0..subjects).map(|i| face(1000 + i)).collect();
    let mut enroller = client.clone();
    for (i, f) in faces.iter().enumerate() {
        app.enroll(&mut enroller, &format!("s{i}"), f).await;
    }
    let requests: Vec<_> = (0..1000)
        .map(|i| {
            let s = i % subjects as usize;
            app.verify_request(
                &format!("s{s}"),
                &capture_of(&faces[s], 0.2, i as u64),
                "login",
            )
        })
        .collect();
    let calls = requests.into_iter().map(|r| {
        let mut c = client.clone();
        tokio::spawn(async move { c.verify(r).await.map(|_| ()) })
    });
    let results = futures::future::join_all(calls).await;
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for r in &results {
        let key = match r {
            Ok(Ok(())) => "OK".to_owned(),
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(e) => format!("join: {e}"),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    // Every call is answered: matched, or refused because the same subject was
    // being verified at that instant (one verification per subject at a time).
    let answered = outcomes.get("OK").copied().unwrap_or(0)
        + outcomes
            .get("Aborted: another verification of this subject is in progress")
            .copied()
            .unwrap_or(0);
    assert_eq!(answered, 1000, "{outcomes:?}");

    let mut audit = auditor(&app).await;
    let events = all_events(&mut audit).await;
    let verifies: Vec<_> = events.iter().filter(|e| e.op == "Verify").collect();
    assert_eq!(verifies.len(), 1000);
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "no gap, no duplicate");
    assert!(
        events.iter().all(|e| e.chain_id == events[0].chain_id),
        "one writer, no fork"
    );
    let report = verify_chain(&mut audit).await;
    assert!(report.intact, "{report:?}");
}

/// A filter that matches nothing answers within the request timeout however
/// long the log is: each call reads at most `MAX_SCANNED_PER_CALL` entries and
/// hands back a continuation token, and following the tokens reaches the end.
#[tokio::test]
async fn a_filter_that_matches_nothing_pages_with_bounded_work() {
    use facevault::audit::MAX_SCANNED_PER_CALL;
    use prost::Message as _;

    let app = spawn_app().await;
    let mut redis = app.redis().await;
    let filler = AuditEvent {
        tenant: "demo".into(),
        op: "Verify".into(),
        subject_ref: "S".repeat(43),
        outcome: "ok".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let total = MAX_SCANNED_PER_CALL * 2 + 20_000;
    for chunk in 0..total / 10_000 {
        let mut pipe = redis::pipe();
        for _ in 0..10_000 {
            pipe.cmd("XADD")
                .arg("fv:audit:{demo}:events")
                .arg("*")
                .arg("e")
                .arg(&filler)
                .arg("h")
                .arg([0u8; 32].as_slice())
                .ignore();
        }
        let () = pipe.query_async(&mut redis).await.unwrap();
        println!("audit filler: {} entries written", (chunk + 1) * 10_000);
    }
    // One real event about an enrolled subject, after all the filler.
    let mut client = app.app_client().await;
    let enrolled = app.enroll(&mut client, "late-subject", &face(77)).await;

    let mut audit = auditor(&app).await;
    let mut token = String::new();
    let mut calls = 0;
    let mut found = Vec::new();
    loop {
        let started = std::time::Instant::now();
        let page = audit
            .list_events(proto::ListEventsRequest {
                subject_ref: enrolled.subject_ref.clone(),
                page_token: token.clone(),
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        calls += 1;
        println!(
            "ListEvents call {calls}: {} events in {:?}",
            page.events.len(),
            started.elapsed()
        );
        found.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(calls < 10, "paging did not reach the end");
    }
    assert_eq!(
        calls, 3,
        "{total} entries at most {MAX_SCANNED_PER_CALL} per call"
    );
    assert_eq!(found.len(), 1, "the one Enroll about the subject");
    assert_eq!(found[0].op, "Enroll");
}

/// A deletion receipt names its erasure's audit event, and the ticket proves
/// that event is in the log under a signed tree head: checked here against the
/// head and by `facevault receipt verify`, which also refuses a proof of
/// another event.
#[tokio::test]
async fn a_receipt_proves_its_erasure_is_in_the_audit_log() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use facevault::audit::merkle::{leaf_hash, verify_inclusion};
    use prost::Message as _;

    let app = spawn_app_with(AppOptions {
        extra_config: "[audit]\ncheckpoint_interval_secs = 1\n".to_owned(),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    app.enroll(&mut client, "erin", &face(3)).await;
    let ticket = client
        .delete_subject(proto::DeleteSubjectRequest {
            subject_id: "erin".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let t = crate::lifecycle::wait_ticket(
        &mut client,
        &ticket.ticket_id,
        "gain its erasure proof",
        |t| t.erasure_proof.is_some(),
    )
    .await;
    let receipt = t.receipt.clone().unwrap();
    let body = proto::ReceiptBody::decode(receipt.body.as_slice()).unwrap();
    let proof = t.erasure_proof.clone().unwrap();
    let head = proof.head.clone().unwrap();
    assert_eq!(body.audit_chain_id, proof.chain_id);
    assert_eq!(body.audit_seq, proof.leaf_index + 1);
    assert_eq!(body.audit_event_hash, proof.event_hash);
    assert_eq!(
        (head.tenant.as_str(), head.tree_size),
        ("demo", proof.tree_size)
    );
    let hashes: Vec<[u8; 32]> = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into().unwrap())
        .collect();
    let root: [u8; 32] = head.root_hash.as_slice().try_into().unwrap();
    verify_inclusion(
        &leaf_hash(&proof.event_hash),
        proof.leaf_index,
        proof.tree_size,
        &hashes,
        &root,
    )
    .unwrap();

    // The event is the erasure's own, and the auditor sees it.
    let mut audit = auditor(&app).await;
    let erasure = all_events(&mut audit)
        .await
        .into_iter()
        .find(|e| e.op == "Erasure")
        .expect("the erasure is an audit event");
    assert_eq!(
        (
            erasure.chain_id.as_str(),
            erasure.seq,
            erasure.hash.as_slice()
        ),
        (
            body.audit_chain_id.as_str(),
            body.audit_seq,
            body.audit_event_hash.as_slice()
        )
    );
    assert_eq!(erasure.request_id, ticket.ticket_id);

    // The CLI checks the same, offline, from the ticket as grpcurl prints it.
    let keys = client
        .get_sealing_keys(proto::GetSealingKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let key = B64.encode(&keys.receipt_verification_key);
    let sth = |h: &proto::SignedTreeHead| {
        serde_json::json!({
            "tenant": h.tenant, "chainId": h.chain_id, "treeSize": h.tree_size.to_string(),
            "rootHash": B64.encode(&h.root_hash), "timestampMs": h.timestamp_ms.to_string(),
            "signature": B64.encode(&h.signature),
        })
    };
    let document = |p: &proto::InclusionProof| {
        serde_json::json!({
            "receipt": {"body": B64.encode(&receipt.body), "signature": B64.encode(&receipt.signature)},
            "erasureProof": {
                "chainId": p.chain_id, "leafIndex": p.leaf_index.to_string(),
                "treeSize": p.tree_size.to_string(), "eventHash": B64.encode(&p.event_hash),
                "hashes": p.hashes.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                "head": sth(p.head.as_ref().unwrap()),
            },
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticket.json");
    std::fs::write(&path, document(&proof).to_string()).unwrap();
    let args = [
        "receipt",
        "verify",
        "--ticket",
        path.to_str().unwrap(),
        "--key",
        &key,
    ];
    let checked = facevault_cli(&args).await;
    assert!(checked.status.success(), "{checked:?}");
    let printed: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(printed["erasure_logged"]["seq"], body.audit_seq);

    // A proof of another event, or with a hash flipped, is refused.
    let mut other = proof.clone();
    other.event_hash[0] ^= 1;
    let mut bent = proof.clone();
    if let Some(h) = bent.hashes.first_mut() {
        h[0] ^= 1;
    } else {
        bent.head.as_mut().unwrap().root_hash[0] ^= 1;
    }
    for (name, forged) in [("another event", other), ("a bent proof", bent)] {
        std::fs::write(&path, document(&forged).to_string()).unwrap();
        let refused = facevault_cli(&args).await;
        assert!(!refused.status.success(), "{name} verified: {refused:?}");
    }
    println!(
        "erasure event seq {} proven in a tree of {} with {} hashes",
        body.audit_seq,
        proof.tree_size,
        proof.hashes.len()
    );
}

async fn facevault_cli(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
        .args(args)
        .output()
        .await
        .unwrap()
}

mod retention_trim {
    use std::sync::Arc;
    use std::time::Duration;

    use facevault::audit::merkle::{leaf_hash, verify_inclusion};
    use facevault::audit::retention;
    use facevault::audit::verify::BreakKind;
    use facevault::audit::{AuditReader, AuditSettings, AuditSink};
    use facevault::crypto::live::LiveKeys;
    use facevault::devstack::redis_server::{RedisOptions, RedisServer};
    use facevault::domain::Tenant;
    use facevault::proto::AuditEvent;
    use facevault::storage::{RedisMode, RedisTarget, RedisTls, Store};

    fn trim_test_event(i: u32) -> AuditEvent {
        AuditEvent {
            event_id: facevault::audit::new_event_id(),
            op: "Verify".into(),
            detail: format!("call {i}"),
            time: Some(facevault::vault::timestamp(facevault::vault::now_unix_ms())),
            ..AuditEvent::default()
        }
    }

    /// Retention removes the oldest events under a signed trim statement: the
    /// log still verifies, a removed event's inclusion proof still holds, and
    /// without the statement the same gap is reported as missing.
    #[tokio::test]
    async fn a_signed_trim_excuses_exactly_what_retention_removed() {
        let redis = RedisServer::start(RedisOptions::default()).await.unwrap();
        let url = redis.url();
        let store = Store::connect(&RedisTarget {
            url: &url,
            mode: RedisMode::Standalone,
            tls: RedisTls::default(),
            timeout: Duration::from_secs(2),
            replica_acks: 0,
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let paths = facevault::crypto::keyfiles::generate(dir.path(), 30).unwrap();
        let keys = Arc::new(LiveKeys::load(paths).unwrap());
        let hour = Duration::from_secs(3600);
        let (sink, writer) = AuditSink::spawn(
            store.clone(),
            keys.clone(),
            AuditSettings {
                retention: Duration::from_secs(180 * 86_400),
                checkpoint_interval: hour,
                anchor_file: None,
                max_batch: 64,
                queue_capacity: 1000,
                ack_timeout: Duration::from_secs(5),
            },
        )
        .unwrap();
        let tenant = Tenant::try_from("demo").unwrap();
        let mut removed = Vec::new();
        for i in 0..300 {
            removed.push(
                sink.record_located(tenant.clone(), trim_test_event(i))
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = facevault::vault::now_unix_ms();
        tokio::time::sleep(Duration::from_millis(5)).await;
        for i in 300..600 {
            sink.record(tenant.clone(), trim_test_event(i))
                .await
                .unwrap();
        }
        sink.heads_now(Some(tenant.clone())).await.unwrap();
        let reader = AuditReader::new(store.clone(), keys.clone(), hour);
        assert_eq!(
            reader.verify(&tenant, true, &[]).await.unwrap().breaks,
            vec![]
        );

        // The trim runs as if 180 days had passed since `cutoff`: what it
        // excuses must be that old at the statement's own time.
        let report = retention::trim(&store, &keys, &tenant, cutoff + 180 * 86_400_000, 180)
            .await
            .unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        assert_eq!(report.trimmed.values().copied().collect::<Vec<_>>(), [300]);
        let report = reader.verify(&tenant, true, &[]).await.unwrap();
        assert_eq!(report.breaks, vec![], "a signed trim excuses the gap");
        assert_eq!(report.events_checked, 300);

        let gone = removed[7].clone();
        let inclusion = reader
            .inclusion_proof(&tenant, gone.clone(), 0)
            .await
            .unwrap();
        let head = inclusion.head.clone().unwrap();
        assert_eq!(head.tree_size, 600);
        verify_inclusion(
            &leaf_hash(&gone.hash),
            gone.seq - 1,
            600,
            &inclusion.hashes,
            &head.root_hash,
        )
        .unwrap();

        // The same gap without the statement: missing, from seq 1.
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg("fv:audit:{demo}:trims")
            .query_async(&mut conn)
            .await
            .unwrap();
        let breaks = reader.verify(&tenant, true, &[]).await.unwrap().breaks;
        let kinds: Vec<(BreakKind, u64)> = breaks.iter().map(|b| (b.kind, b.seq)).collect();
        assert_eq!(kinds, vec![(BreakKind::Missing, 1)], "{breaks:?}");
        drop(sink);
        drop(reader);
        writer.await.unwrap();
        println!("trimmed 300 of 600 events; the log verifies and proofs hold");
    }
}
