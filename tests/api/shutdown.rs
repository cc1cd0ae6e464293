//! SIGTERM: the binary stops accepting, drains the calls in flight, flushes the
//! audit log (with a final signed checkpoint) and exits 0; every call it
//! acknowledged has its audit event.

use std::collections::HashSet;
use std::time::Duration;

use facevault::proto::{AuditEvent, Decision};
use prost::Message as _;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_flushes_the_audit_log_and_exits_zero() {
    let mut app = spawn_app().await;
    let (mut child, log_path) = app.spawn_binary("").await;
    let client = app.app_client().await;
    let faces: Vec<Vec<f32>> = (0..8).map(|i| face(100 + i)).collect();
    let mut c = client.clone();
    for (i, f) in faces.iter().enumerate() {
        app.enroll(&mut c, &format!("s{i}"), f).await;
    }
    let mut workers = Vec::new();
    for (i, f) in faces.iter().enumerate() {
        let mut c = client.clone();
        let requests: Vec<_> = (0..1500)
            .map(|n| app.verify_request(&format!("s{i}"), &capture_of(f, 0.2, n), "login"))
            .collect();
        workers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for r in requests {
                match c.verify(r).await {
                    Ok(v) => {
                        let v = v.into_inner();
                        assert_eq!(v.decision(), Decision::Match);
                        acknowledged.push(v.audit_id);
                    }
                    Err(_) => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "{exit:?}: {}",
        String::from_utf8_lossy(&std::fs::read(&log_path).unwrap())
    );

    let mut acknowledged = Vec::new();
    for w in workers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() > 50,
        "load was running when SIGTERM arrived"
    );

    let mut redis = app.redis().await;
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg("fv:audit:{demo}:events")
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let recorded: HashSet<String> = entries
        .iter()
        .filter_map(|(_, fields)| fields.iter().find(|(k, _)| k == "e"))
        .map(|(_, e)| AuditEvent::decode(e.as_slice()).unwrap().event_id)
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged calls without an audit event",
        lost.len()
    );
    // The final signed tree head covers every event the process wrote.
    let doc: String = redis::cmd("HGET")
        .arg("fv:audit:registry")
        .arg("doc")
        .query_async(&mut redis)
        .await
        .expect("the registry holds the final heads");
    let registry: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let written = entries.len() as u64;
    let headed: u64 = registry["heads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["tenant"] == "demo")
        .map(|h| h["treeSize"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        headed, written,
        "the final signed tree heads cover every event written"
    );
}
