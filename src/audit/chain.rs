//! The per-writer hash chain. Each event carries its chain id, sequence number and
//! the previous event's hash; its own hash is HMAC-SHA256 under the tenant's audit
//! key over the encoded event, and is the data of the event's Merkle leaf. The
//! HMAC keeps the leaf from revealing anything; `verify` checks both.

use prost::Message as _;
use ring::hmac;

use crate::proto::AuditEvent;

const CONTEXT: &[u8] = b"facevault/v1 audit|";

/// Fills in chain fields, returns the encoded event (hash field empty) and its hash.
pub fn link(
    key: &hmac::Key,
    mut event: AuditEvent,
    chain_id: &str,
    seq: u64,
    prev: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    event.chain_id = chain_id.to_owned();
    event.seq = seq;
    event.prev_hash = prev.to_vec();
    event.hash = Vec::new();
    let encoded = event.encode_to_vec();
    let hash = hash_of(key, &encoded);
    (encoded, hash)
}

pub(super) fn hash_of(key: &hmac::Key, encoded: &[u8]) -> Vec<u8> {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(CONTEXT);
    ctx.update(encoded);
    ctx.sign().as_ref().to_vec()
}
