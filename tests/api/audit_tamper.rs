//! The tamper catalogue: each way someone with write access to Redis could
//! doctor the audit log, and the kind of break it must be reported as, three
//! ways: `VerifyChain` incremental, `VerifyChain` full, and
//! `facevault audit verify --anchors <the service's anchor file>`.
//!
//! Every case runs on a fresh app: history, signed heads that are anchored, a
//! clean incremental verification (saving its state), more history and heads,
//! then the tampering. The CLI runs once right after it, before the service
//! signs another head; the API runs once then too, and again (with the CLI)
//! after the service's next head, which is when a running writer notices a
//! registry that is gone or went back. The CLI without `--anchors` (what an
//! operator without the anchor file sees) is printed, not checked.

use std::path::Path;
use std::time::Duration;

use facevault::audit::anchors;
use facevault::audit::heads::{Registry, TrimStatement};
use facevault::proto::audit_log_client::AuditLogClient;
use facevault::proto::{self, AuditEvent};
use prost::Message as _;
use tonic::transport::Channel;

use crate::audit::auditor;
use crate::helpers::*;

const EVENTS: &str = "fv:audit:{demo}:events";
const REGISTRY: &str = "fv:audit:registry";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    None,
    /// `DEL fv:audit:tenants`: a set nothing reads any more.
    TenantsSetDeleted,
    /// XDEL of the chain's 3 oldest events.
    OldestDeleted,
    /// XDEL of the events the older registry does not cover, and that
    /// registry put back.
    TailTruncated,
    /// The 3 oldest events gone, excused by a trim statement with a bogus
    /// signature.
    ForgedTrim,
    RegistryDeleted,
    StreamDeleted,
    /// One event deleted and added again at the end with its outcome flipped.
    EditedReadded,
    /// Seqs 5 and 6 swapped, same stream ids.
    Swapped,
    /// The registry put back to a copy from before the latest head.
    RegistryRolledBack,
}

struct Case {
    name: &'static str,
    tamper: Tamper,
    /// Kinds `audit verify --anchors` must name right after the tampering.
    /// Each item is a kind, or alternatives `a|b`; none: intact, exit 0.
    cli: &'static [&'static str],
    /// Kinds VerifyChain (incremental and full) and then the CLI must name
    /// once the service has signed its next head.
    api: &'static [&'static str],
    /// Kinds VerifyChain must name already before that head (`None`: printed
    /// only).
    api_before: Option<&'static [&'static str]>,
}

const CASES: &[Case] = &[
    Case {
        name: "control",
        tamper: Tamper::None,
        cli: &[],
        api: &[],
        api_before: Some(&[]),
    },
    Case {
        name: "tenants-set-deleted",
        tamper: Tamper::TenantsSetDeleted,
        cli: &[],
        api: &[],
        api_before: Some(&[]),
    },
    Case {
        name: "oldest-deleted",
        tamper: Tamper::OldestDeleted,
        cli: &["missing"],
        api: &["missing"],
        api_before: Some(&["missing"]),
    },
    Case {
        name: "tail-truncated",
        tamper: Tamper::TailTruncated,
        cli: &["truncated"],
        api: &["truncated|rolled-back"],
        api_before: None,
    },
    Case {
        name: "forged-trim",
        tamper: Tamper::ForgedTrim,
        cli: &["unsigned-trim", "missing"],
        api: &["unsigned-trim", "missing"],
        api_before: Some(&["unsigned-trim", "missing"]),
    },
    Case {
        name: "registry-deleted",
        tamper: Tamper::RegistryDeleted,
        cli: &["missing"],
        api: &["missing"],
        api_before: Some(&["missing"]),
    },
    Case {
        name: "stream-deleted",
        tamper: Tamper::StreamDeleted,
        cli: &["missing"],
        api: &["missing"],
        api_before: Some(&["missing"]),
    },
    Case {
        name: "edited-readded",
        tamper: Tamper::EditedReadded,
        cli: &["edited"],
        api: &["edited"],
        api_before: Some(&["edited"]),
    },
    Case {
        name: "swapped",
        tamper: Tamper::Swapped,
        cli: &["reordered"],
        api: &["reordered"],
        api_before: Some(&["reordered"]),
    },
    Case {
        name: "registry-rolled-back",
        tamper: Tamper::RegistryRolledBack,
        cli: &["rolled-back"],
        api: &["rolled-back"],
        api_before: None,
    },
];

#[tokio::test]
async fn untouched_log_is_intact_three_ways() {
    run("control").await;
}

#[tokio::test]
async fn deleting_the_old_tenants_set_changes_nothing() {
    run("tenants-set-deleted").await;
}

#[tokio::test]
async fn oldest_events_deleted_are_missing() {
    run("oldest-deleted").await;
}

#[tokio::test]
async fn newest_events_deleted_with_their_heads_are_truncated() {
    run("tail-truncated").await;
}

#[tokio::test]
async fn a_forged_trim_marker_is_an_unsigned_trim() {
    run("forged-trim").await;
}

#[tokio::test]
async fn a_deleted_registry_is_missing() {
    run("registry-deleted").await;
}

#[tokio::test]
async fn a_deleted_stream_is_missing() {
    run("stream-deleted").await;
}

#[tokio::test]
async fn an_edited_event_added_again_is_edited() {
    run("edited-readded").await;
}

#[tokio::test]
async fn swapped_events_are_reordered() {
    run("swapped").await;
}

#[tokio::test]
async fn a_registry_put_back_is_rolled_back() {
    run("registry-rolled-back").await;
}

/// What one check said: intact or the kinds of its breaks, with details.
struct Seen {
    /// VerifyChain: whether it walked the whole log; CLI: its exit code.
    how: String,
    kinds: Vec<String>,
    details: Vec<String>,
    intact: bool,
}

impl Seen {
    fn api(r: proto::VerifyChainResponse) -> Self {
        let kinds: Vec<String> = r.all_breaks.iter().map(|b| b.kind.clone()).collect();
        assert_eq!(
            r.intact,
            kinds.is_empty(),
            "intact disagrees with breaks: {r:?}"
        );
        Self {
            how: if r.full { "walk" } else { "incr" }.to_owned(),
            details: r
                .all_breaks
                .iter()
                .map(|b| {
                    format!(
                        "{}: chain {} seq {}: {}",
                        b.kind, b.chain_id, b.seq, b.reason
                    )
                })
                .collect(),
            kinds,
            intact: r.intact,
        }
    }

    fn cli(out: std::process::Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = out.status.code().unwrap_or(-1);
        let breaks: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("  "))
            .filter(|l| {
                l.split_once(": ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|c| c.is_ascii_lowercase() || c == b'-')
                })
            })
            .collect();
        let mut details: Vec<String> = breaks.iter().map(|l| (*l).to_owned()).collect();
        details.extend(
            stdout
                .lines()
                .filter(|l| !l.starts_with("  "))
                .map(|l| format!("| {l}")),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if code != 0 && code != 1 {
            details.push(format!("stderr: {stderr}"));
        }
        Self {
            how: format!("exit {code}"),
            kinds: breaks
                .iter()
                .map(|l| l.split_once(": ").unwrap().0.to_owned())
                .collect(),
            details,
            intact: code == 0,
        }
    }

    /// Intact when nothing is expected; else broken, naming each expected kind
    /// (or one of its alternatives).
    fn meets(&self, expected: &[&str]) -> bool {
        if expected.is_empty() {
            return self.intact && self.kinds.is_empty();
        }
        !self.intact
            && expected
                .iter()
                .all(|e| e.split('|').any(|k| self.kinds.iter().any(|s| s == k)))
    }

    fn summary(&self) -> String {
        let mut kinds = self.kinds.clone();
        kinds.dedup();
        format!("{}[{}]", self.how, kinds.join(","))
    }
}

async fn run(name: &str) {
    let case = CASES.iter().find(|c| c.name == name).unwrap();
    let anchor_dir = tempfile::tempdir().unwrap();
    let anchor_file = anchor_dir.path().join("anchors.jsonl");
    let app = spawn_app_with(AppOptions {
        extra_config: format!(
            "[audit]\ncheckpoint_interval_secs = 1\nanchor_file = \"{}\"\n",
            anchor_file.display()
        ),
        ..AppOptions::default()
    })
    .await;
    let mut audit = auditor(&app).await;
    let mut client = app.app_client().await;
    let values = face(1);

    // History, heads, a clean incremental run (which saves its state).
    app.enroll(&mut client, "alice", &values).await;
    verifies(&app, &mut client, &values, 0..6).await;
    let chain = signed_head(&mut audit).await;
    settle(&app, &chain, &anchor_file).await;
    let clean = Seen::api(verify(&mut audit, false).await);
    assert!(
        clean.meets(&[]),
        "before any tampering: {:?}",
        clean.details
    );
    let older = registry_fields(&app).await;
    let older_size = registry_head(&older, &chain);

    // More history and heads, after the registry copy.
    verifies(&app, &mut client, &values, 6..9).await;
    assert_eq!(
        signed_head(&mut audit).await,
        chain,
        "one writer, one chain"
    );
    let seq = settle(&app, &chain, &anchor_file).await;
    assert!(
        older_size < seq,
        "the copied registry ({older_size}) is older than the latest head ({seq})"
    );

    let note = tamper(&app, case.tamper, &chain, &older).await;

    let cli_before = Seen::cli(cli(&app, Some(&anchor_file)).await);
    // Printed only: what an operator without the anchor file would see.
    let cli_bare = Seen::cli(cli(&app, None).await);
    let api_before = Seen::api(verify(&mut audit, false).await);
    // The running writer's next head (it notices a registry gone or older).
    settle(&app, &chain, &anchor_file).await;
    let api = Seen::api(verify(&mut audit, false).await);
    let full = Seen::api(verify(&mut audit, true).await);
    let cli_after = Seen::cli(cli(&app, Some(&anchor_file)).await);

    let checks = [
        ("cli", cli_before.meets(case.cli)),
        (
            "api-before",
            case.api_before.is_none_or(|e| api_before.meets(e)),
        ),
        ("api", api.meets(case.api)),
        ("full", full.meets(case.api)),
        ("cli-after", cli_after.meets(case.api)),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    println!(
        "case {}: api={} full={} cli={} | api-before={} cli-after={} cli-no-anchors={} | {} events, {note} {}",
        case.name,
        api.summary(),
        full.summary(),
        cli_before.summary(),
        api_before.summary(),
        cli_after.summary(),
        cli_bare.summary(),
        seq,
        if failed.is_empty() {
            "ok".to_owned()
        } else {
            format!("FAILED {failed:?}")
        },
    );
    let phases = [
        ("cli", &cli_before),
        ("cli-no-anchors", &cli_bare),
        ("api-before", &api_before),
        ("api", &api),
        ("full", &full),
        ("cli-after", &cli_after),
    ];
    for (phase, seen) in phases {
        for d in &seen.details {
            println!("    {} {phase}: {d}", case.name);
        }
    }
    assert!(
        failed.is_empty(),
        "case {}: expected cli {:?}, api {:?}; {failed:?} did not meet it (see the lines above)",
        case.name,
        case.cli,
        case.api
    );
}

async fn verifies(
    app: &TestApp,
    client: &mut facevault::proto::face_vault_client::FaceVaultClient<Channel>,
    values: &[f32],
    seeds: std::ops::Range<u64>,
) {
    for i in seeds {
        app.verify(client, "alice", &capture_of(values, 0.2, 10 + i))
            .await
            .unwrap();
    }
}

/// Asks for fresh heads; the demo tenant's one chain id.
async fn signed_head(audit: &mut AuditLogClient<Channel>) -> String {
    let heads = audit
        .get_signed_tree_head(proto::GetSignedTreeHeadRequest::default())
        .await
        .unwrap()
        .into_inner()
        .heads;
    assert_eq!(heads.len(), 1, "{heads:?}");
    heads[0].chain_id.clone()
}

async fn verify(audit: &mut AuditLogClient<Channel>, full: bool) -> proto::VerifyChainResponse {
    audit
        .verify_chain(proto::VerifyChainRequest { full })
        .await
        .unwrap()
        .into_inner()
}

async fn cli(app: &TestApp, anchor_file: Option<&Path>) -> std::process::Output {
    let mut args = vec!["audit", "verify"];
    if let Some(file) = anchor_file {
        args.extend(["--anchors", file.to_str().unwrap()]);
    }
    app.run_cli(&args).await
}

/// Waits until every event of the chain is under a signed head that is both
/// in the registry and in the anchor file (the 1 s head timer); its seq.
async fn settle(app: &TestApp, chain: &str, anchor_file: &Path) -> u64 {
    let mut redis = app.redis().await;
    let mut last = (0, 0, 0);
    for _ in 0..150 {
        let seq: Option<u64> = redis::cmd("HGET")
            .arg(format!("fv:audit:{{demo}}:head:{chain}"))
            .arg("seq")
            .query_async(&mut redis)
            .await
            .unwrap();
        let seq = seq.unwrap_or(0);
        let registered = registry_head(&registry_fields(app).await, chain);
        let anchored = anchors::read(anchor_file)
            .map(|f| {
                f.heads
                    .iter()
                    .filter(|(_, h)| h.tenant == "demo" && h.chain_id == chain)
                    .map(|(_, h)| h.tree_size)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        last = (seq, registered, anchored);
        if seq > 0 && registered >= seq && anchored >= seq {
            return seq;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "after 15 s the chain's events are not all under a registered and anchored head: \
         (seq, registry head, anchored head) = {last:?}"
    );
}

/// The registry hash as stored: its `gen` and `doc` fields, empty when gone.
async fn registry_fields(app: &TestApp) -> Vec<(String, String)> {
    redis::cmd("HGETALL")
        .arg(REGISTRY)
        .query_async(&mut app.redis().await)
        .await
        .unwrap()
}

/// The size of the chain's head in a registry (0 if it has none).
fn registry_head(fields: &[(String, String)], chain: &str) -> u64 {
    fields
        .iter()
        .find(|(k, _)| k == "doc")
        .and_then(|(_, doc)| serde_json::from_str::<Registry>(doc).ok())
        .and_then(|r| r.head("demo", chain).map(|h| h.tree_size))
        .unwrap_or(0)
}

async fn entries(redis: &mut redis::aio::MultiplexedConnection) -> Vec<StreamEntry> {
    redis::cmd("XRANGE")
        .arg(EVENTS)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await
        .unwrap()
}

fn event_of(fields: &[(String, Vec<u8>)]) -> AuditEvent {
    let e = fields.iter().find(|(k, _)| k == "e").unwrap();
    AuditEvent::decode(e.1.as_slice()).unwrap()
}

async fn cmd<T: redis::FromRedisValue>(
    redis: &mut redis::aio::MultiplexedConnection,
    cmd: &mut redis::Cmd,
) -> T {
    cmd.query_async(redis).await.unwrap()
}

/// Does the damage; says what it did.
async fn tamper(app: &TestApp, tamper: Tamper, chain: &str, older: &[(String, String)]) -> String {
    let mut redis = app.redis().await;
    let stream = entries(&mut redis).await;
    let seqs: Vec<u64> = stream.iter().map(|(_, f)| event_of(f).seq).collect();
    assert!(
        stream.iter().all(|(_, f)| event_of(f).chain_id == chain)
            && seqs == (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "one chain, seqs 1..n in order: {seqs:?}"
    );
    let ids_where = |keep: &dyn Fn(u64) -> bool| -> Vec<String> {
        stream
            .iter()
            .zip(&seqs)
            .filter(|(_, s)| keep(**s))
            .map(|((id, _), _)| id.clone())
            .collect()
    };
    let put_back = async |redis: &mut redis::aio::MultiplexedConnection| {
        let _: i64 = cmd(redis, redis::cmd("DEL").arg(REGISTRY)).await;
        let mut hset = redis::cmd("HSET");
        hset.arg(REGISTRY);
        for (k, v) in older {
            hset.arg(k).arg(v);
        }
        let _: i64 = cmd(redis, &mut hset).await;
    };
    let older_size = registry_head(older, chain);
    let older_gen = older
        .iter()
        .find(|(k, _)| k == "gen")
        .map(|(_, v)| v.as_str());
    match tamper {
        Tamper::None => "untouched".to_owned(),
        Tamper::TenantsSetDeleted => {
            let n: i64 = cmd(&mut redis, redis::cmd("DEL").arg("fv:audit:tenants")).await;
            format!("DEL fv:audit:tenants removed {n} key(s)")
        }
        Tamper::OldestDeleted => {
            let n: i64 = cmd(
                &mut redis,
                redis::cmd("XDEL").arg(EVENTS).arg(ids_where(&|s| s <= 3)),
            )
            .await;
            format!("XDEL seqs 1-3 ({n} entries)")
        }
        Tamper::TailTruncated => {
            let last = *seqs.last().unwrap();
            let n: i64 = cmd(
                &mut redis,
                redis::cmd("XDEL")
                    .arg(EVENTS)
                    .arg(ids_where(&|s| s > older_size)),
            )
            .await;
            put_back(&mut redis).await;
            format!(
                "XDEL seqs {}-{last} ({n} entries), registry back to gen {older_gen:?} (head {older_size})",
                older_size + 1
            )
        }
        Tamper::ForgedTrim => {
            let n: i64 = cmd(
                &mut redis,
                redis::cmd("XDEL").arg(EVENTS).arg(ids_where(&|s| s <= 3)),
            )
            .await;
            let forged = TrimStatement {
                tenant: "demo".into(),
                chain_id: chain.to_owned(),
                first_index: 3,
                tree_size: *seqs.last().unwrap(),
                root_hash: [0x5a; 32],
                timestamp_ms: now_ms() as u64,
                newest_excused_ms: 0,
                retention_days: 180,
                signature: vec![0x42; 64],
            };
            let json = serde_json::to_string(&forged).unwrap();
            let _: i64 = cmd(
                &mut redis,
                redis::cmd("HSET")
                    .arg("fv:audit:{demo}:trims")
                    .arg(chain)
                    .arg(&json),
            )
            .await;
            format!("XDEL seqs 1-3 ({n} entries), trim marker {json}")
        }
        Tamper::RegistryDeleted => {
            let n: i64 = cmd(&mut redis, redis::cmd("DEL").arg(REGISTRY)).await;
            format!("DEL {REGISTRY} ({n} key)")
        }
        Tamper::StreamDeleted => {
            let n: i64 = cmd(&mut redis, redis::cmd("DEL").arg(EVENTS)).await;
            format!("DEL {EVENTS} ({n} key, {} entries)", seqs.len())
        }
        Tamper::EditedReadded => {
            let (id, fields) = &stream[4];
            let mut event = event_of(fields);
            let was = event.outcome.clone();
            event.outcome = if was == "allowed" {
                "refused"
            } else {
                "allowed"
            }
            .into();
            let hash = &fields.iter().find(|(k, _)| k == "h").unwrap().1;
            let n: i64 = cmd(&mut redis, redis::cmd("XDEL").arg(EVENTS).arg(id)).await;
            let new_id: String = cmd(
                &mut redis,
                redis::cmd("XADD")
                    .arg(EVENTS)
                    .arg("*")
                    .arg("e")
                    .arg(event.encode_to_vec())
                    .arg("h")
                    .arg(hash.as_slice()),
            )
            .await;
            format!(
                "XDEL seq 5 ({n} entry), added again as {new_id} with outcome {was} -> {}",
                event.outcome
            )
        }
        Tamper::Swapped => {
            let mut rewritten = stream.clone();
            let a = rewritten[4].1.clone();
            rewritten[4].1 = rewritten[5].1.clone();
            rewritten[5].1 = a;
            let _: i64 = cmd(&mut redis, redis::cmd("DEL").arg(EVENTS)).await;
            for (id, fields) in rewritten {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(EVENTS).arg(id);
                for (k, v) in fields {
                    xadd.arg(k).arg(v);
                }
                let _: String = cmd(&mut redis, &mut xadd).await;
            }
            "seqs 5 and 6 swapped under the same stream ids".to_owned()
        }
        Tamper::RegistryRolledBack => {
            put_back(&mut redis).await;
            format!(
                "registry back to gen {older_gen:?} (head {older_size} of {})",
                seqs.len()
            )
        }
    }
}
