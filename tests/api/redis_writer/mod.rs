//! The adaptive Redis writer: each test attacks the service with plain Redis
//! commands (DUMP/RESTORE, XADD with chosen ids, HSET on the service's own
//! records, registry edits) and asserts that the service detects or refuses,
//! never that it signs, excuses, deletes or carries forward on Redis's word.

mod incidents;
mod resurrection;
mod scan_flood;
mod scope;
mod sessions;
mod shred;
mod trim;

use facevault::proto::AuditEvent;
use prost::Message as _;

use crate::helpers::TestApp;

/// Every event of a tenant's audit stream that decodes, straight from Redis
/// (entries an attack wrote that do not decode are left out).
async fn stream_events(app: &TestApp, tenant: &str) -> Vec<AuditEvent> {
    let entries: Vec<crate::helpers::StreamEntry> = redis::cmd("XRANGE")
        .arg(format!("fv:audit:{{{tenant}}}:events"))
        .arg("-")
        .arg("+")
        .query_async(&mut app.redis().await)
        .await
        .unwrap();
    entries
        .iter()
        .filter_map(|(_, fields)| {
            let (_, e) = fields.iter().find(|(k, _)| k == "e")?;
            AuditEvent::decode(e.as_slice()).ok()
        })
        .collect()
}
