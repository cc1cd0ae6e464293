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
