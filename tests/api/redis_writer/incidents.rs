//! Evidence that can be flushed (#25, item 6). The registry kept at most 64
//! incidents, and a writer that replaced an edited registry kept only the
//! heads the edit left: an attacker edited the registry so that it no longer
//! named chain C (one incident), pushed that incident out with 64 more
//! corruptions, then deleted C's events, and `VerifyChain` (which uses no
//! anchors) had nothing left that named C.
//!
//! Now a writer replaces a bad registry from the newest signed one it saw, and
//! restores any head a registry lost that it saw signed, so a chain whose
//! signed head verifies stays named; incidents beyond the 64 kept in full are
//! folded into a signed count and digest that verifiers keep reporting; and
//! the anchor file records each registry's generation and chain count, which
//! `facevault audit verify --anchors` holds the registry to. The first test
//! does the whole attack with plain Redis commands and checks all three; the
//! second rolls the registry back while every process is down and checks that
//! the next process to start, reading its anchor file, signs the rollback in
//! and restores the chain's anchored head.

use std::path::Path;
use std::time::Duration;

use facevault::audit::heads::{MAX_INCIDENTS, Registry};
use facevault::proto;

use crate::audit::auditor;
use crate::helpers::*;

const REGISTRY: &str = "fv:audit:registry";
const EVENTS: &str = "fv:audit:{demo}:events";

fn config(anchor_file: &Path) -> String {
    format!(
        "[audit]\ncheckpoint_interval_secs = 1\nanchor_file = \"{}\"\n",
        anchor_file.display()
    )
}

/// The registry as stored: (its `gen` field, its doc, parsed).
async fn registry(app: &TestApp) -> (String, String, Registry) {
    let (generation, doc): (String, String) = redis::cmd("HMGET")
        .arg(REGISTRY)
        .arg("gen")
        .arg("doc")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let parsed = serde_json::from_str(&doc).unwrap();
    (generation, doc, parsed)
}

fn incident_count(r: &Registry) -> u64 {
    r.folded.count + r.incidents.len() as u64
}

/// Asks the running writer for heads (it checks the registry then), until
/// `done` holds for the registry; the registry then.
async fn until(app: &TestApp, what: &str, done: impl Fn(&Registry) -> bool) -> Registry {
    let mut audit = auditor(app).await;
    for _ in 0..100 {
        audit
            .get_signed_tree_head(proto::GetSignedTreeHeadRequest::default())
            .await
            .unwrap();
        let (_, _, r) = registry(app).await;
        if done(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not after 100 tries: {:?}", registry(app).await.2);
}

#[tokio::test]
async fn flushing_incidents_and_editing_a_chain_out_of_the_registry_hides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let anchor_file = dir.path().join("anchors.jsonl");
    let mut app = spawn_app_with(AppOptions {
        extra_config: config(&anchor_file),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;
    for i in 0..4 {
        app.verify(&mut client, "alice", &capture_of(&values, 0.2, 10 + i))
            .await
            .unwrap();
    }
    // Chain C's writer stops (its final head is signed); a new process
    // takes over and sees C in the registry it loads.
    app.stop_server().await;
    let (_, one_chain_doc, one_chain) = registry(&app).await;
    assert_eq!(one_chain.heads.len(), 1);
    let c = one_chain.heads[0].chain_id.clone();
    let c_size = one_chain.heads[0].tree_size;
    let replica = app.start_server(&config(&anchor_file)).await;
    app.port = replica.port;
    let mut client = app.app_client().await;
    app.verify(&mut client, "alice", &capture_of(&values, 0.2, 50))
        .await
        .unwrap();
    until(&app, "the replica's head", |r| r.heads.len() == 2).await;
    assert_eq!(
        verify_breaks(&app).await,
        Vec::<String>::new(),
        "clean before"
    );

    // The attack: C edited out of the registry, then many more corruptions.
    let rounds = MAX_INCIDENTS as u64 + 6;
    let mut restored = 0;
    for round in 0..rounds {
        let (_, doc, before) = registry(&app).await;
        let mut edited: serde_json::Value = serde_json::from_str(&doc).unwrap();
        edited["heads"]
            .as_array_mut()
            .unwrap()
            .retain(|h| h["chainId"] != c.as_str());
        let _: i64 = redis::cmd("HSET")
            .arg(REGISTRY)
            .arg("doc")
            .arg(edited.to_string())
            .query_async(&mut app.redis().await)
            .await
            .unwrap();
        let seen = incident_count(&before);
        let after = until(&app, &format!("round {round}: the incident"), |r| {
            incident_count(r) > seen
        })
        .await;
        if after
            .head("demo", &c)
            .is_some_and(|h| h.tree_size == c_size)
        {
            restored += 1;
        }
    }
    let (_, _, flooded) = registry(&app).await;
    assert_eq!(restored, rounds, "C's signed head came back every time");
    assert!(flooded.folded.count >= 6, "{:?}", flooded.folded);
    assert_eq!(flooded.incidents.len(), MAX_INCIDENTS);

    // C's events go.
    let ids: Vec<String> = redis::cmd("XRANGE")
        .arg(EVENTS)
        .arg("-")
        .arg("+")
        .query_async::<Vec<StreamEntry>>(&mut app.redis().await)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, f)| {
            let e = f.iter().find(|(k, _)| k == "e").unwrap();
            <proto::AuditEvent as prost::Message>::decode(e.1.as_slice())
                .unwrap()
                .chain_id
                == c
        })
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len() as u64, c_size);
    let _: i64 = redis::cmd("XDEL")
        .arg(EVENTS)
        .arg(&ids)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();

    let breaks = verify_breaks(&app).await;
    assert!(
        breaks
            .iter()
            .any(|b| b.starts_with(&format!("missing {c} 1: no event of this chain remains"))),
        "VerifyChain without anchors: {breaks:#?}"
    );
    assert!(
        breaks.iter().any(|b| b.contains(&format!(
            "{} earlier registry incidents",
            flooded.folded.count
        ))),
        "the folded incidents are a break: {breaks:#?}"
    );
    let cli = app
        .run_cli(&[
            "audit",
            "verify",
            "--anchors",
            anchor_file.to_str().unwrap(),
        ])
        .await;
    let said = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(!cli.status.success());
    assert!(
        said.contains(&format!("missing: chain {c} seq 1")),
        "{said}"
    );

    // With the service stopped, the registry from before the replica put
    // back (signed, one chain, older): only the anchors can tell.
    replica.stop().await;
    let (newest_gen, _, _) = registry(&app).await;
    let _: () = redis::cmd("HSET")
        .arg(REGISTRY)
        .arg("doc")
        .arg(&one_chain_doc)
        .arg("gen")
        .arg(one_chain.generation)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    let cli = app
        .run_cli(&[
            "audit",
            "verify",
            "--anchors",
            anchor_file.to_str().unwrap(),
        ])
        .await;
    let rolled = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(!cli.status.success());
    assert!(
        rolled.contains(&format!(
            "rolled-back: registry: generation {} is older than the anchored generation {newest_gen}",
            one_chain.generation
        )),
        "{rolled}"
    );
    assert!(
        rolled.contains("missing: registry: it names 1 chains; an anchored registry named 2"),
        "{rolled}"
    );
    println!(
        "{rounds} registry edits, C restored {restored} times, {} incidents folded; \
         VerifyChain: {} breaks; CLI after the cut:\n{said}\nCLI after the rollback:\n{rolled}",
        flooded.folded.count,
        breaks.len()
    );
}

/// Every break of a full `VerifyChain`, as "kind chain seq: reason".
async fn verify_breaks(app: &TestApp) -> Vec<String> {
    auditor(app)
        .await
        .verify_chain(proto::VerifyChainRequest { full: true })
        .await
        .unwrap()
        .into_inner()
        .all_breaks
        .into_iter()
        .map(|b| format!("{} {} {}: {}", b.kind, b.chain_id, b.seq, b.reason))
        .collect()
}

/// Every process down while the registry is rolled back to an older signed
/// copy (C's head smaller, the generation lower): the next process to start
/// reads the anchor file, so its first registry check signs the rollback in
/// and restores C's anchored head, instead of taking the copy as the truth.
#[tokio::test]
async fn a_registry_rolled_back_while_every_process_was_down_is_caught_from_the_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let anchor_file = dir.path().join("anchors.jsonl");
    let mut app = spawn_app_with(AppOptions {
        extra_config: config(&anchor_file),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    let values = face(1);
    app.enroll(&mut client, "alice", &values).await;
    let older = until(&app, "C's first head", |r| r.heads.len() == 1).await;
    let (older_gen, older_doc, _) = registry(&app).await;
    for i in 0..4 {
        app.verify(&mut client, "alice", &capture_of(&values, 0.2, 10 + i))
            .await
            .unwrap();
    }
    app.stop_server().await;
    let (newest_gen, _, newest) = registry(&app).await;
    let c = newest.heads[0].clone();
    assert!(
        older.heads[0].tree_size < c.tree_size,
        "{} < {}",
        older.heads[0].tree_size,
        c.tree_size
    );
    let _: () = redis::cmd("HSET")
        .arg(REGISTRY)
        .arg("doc")
        .arg(&older_doc)
        .arg("gen")
        .arg(&older_gen)
        .query_async(&mut app.redis().await)
        .await
        .unwrap();

    let replica = app.start_server(&config(&anchor_file)).await;
    app.port = replica.port;
    let wanted = format!("the registry went back from generation {newest_gen} to {older_gen}");
    let after = until(&app, "the rollback incident", |r| {
        r.incidents.iter().any(|i| i.detail == wanted)
    })
    .await;
    let head = after.head("demo", &c.chain_id).unwrap();
    assert_eq!(head, &c, "C's anchored head is back");
    println!(
        "registry put back from generation {newest_gen} to {older_gen} while down: \
         the next process signed {:?} and restored C at {}",
        wanted, head.tree_size
    );
    replica.stop().await;
}
