//! The per-writer hash chain. Each event carries its chain id, sequence number and
//! the previous event's hash; its own hash is HMAC-SHA256 under the tenant's audit
//! key over the encoded event. Editing, removing or reordering an event breaks a
//! link that `verify` reports; signed checkpoints pin chain heads so that a
//! truncated tail is caught too. Pure: the caller reads the entries.

use std::collections::HashMap;

use prost::Message as _;
use ring::hmac;

use crate::proto::AuditEvent;

const CONTEXT: &[u8] = b"facevault/v1 audit|";
pub const CHECKPOINT_CONTEXT: &[u8] = b"facevault/v1 audit-checkpoint|";

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

fn hash_of(key: &hmac::Key, encoded: &[u8]) -> Vec<u8> {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(CONTEXT);
    ctx.update(encoded);
    ctx.sign().as_ref().to_vec()
}

/// The signed statement of a checkpoint.
pub fn checkpoint_message(
    tenant: &str,
    chain_id: &str,
    seq: u64,
    head: &[u8],
    time_ms: i64,
) -> Vec<u8> {
    let mut m = CHECKPOINT_CONTEXT.to_vec();
    m.extend_from_slice(format!("{tenant}|{chain_id}|{seq}|{time_ms}|").as_bytes());
    m.extend_from_slice(head);
    m
}

/// A stored event as read back: its encoding and the stored hash.
pub struct StoredEvent<'a> {
    pub stream_id: &'a str,
    pub encoded: &'a [u8],
    pub hash: &'a [u8],
}

pub struct Checkpoint {
    pub chain_id: String,
    pub seq: u64,
    pub head: Vec<u8>,
    pub time_ms: i64,
    pub signature_valid: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Broken {
    pub chain_id: String,
    pub seq: u64,
    pub reason: String,
}

#[derive(Default)]
struct ChainState {
    last_seq: u64,
    last_hash: Vec<u8>,
}

/// Walks events in stream order. `trimmed` says retention has removed old
/// entries, so a chain may start after seq 1.
pub struct Verifier<'k> {
    key: &'k hmac::Key,
    trimmed_before_ms: Option<i64>,
    chains: HashMap<String, ChainState>,
    /// Hashes at the sequence numbers checkpoints name.
    wanted: HashMap<(String, u64), Option<Vec<u8>>>,
    pub checked: u64,
    pub broken: Option<Broken>,
}

impl<'k> Verifier<'k> {
    pub fn new(
        key: &'k hmac::Key,
        trimmed_before_ms: Option<i64>,
        checkpoints: &[Checkpoint],
    ) -> Self {
        Self {
            key,
            trimmed_before_ms,
            chains: HashMap::new(),
            wanted: checkpoints
                .iter()
                .map(|c| ((c.chain_id.clone(), c.seq), None))
                .collect(),
            checked: 0,
            broken: None,
        }
    }

    /// Feeds the next event; stops checking after the first broken link.
    pub fn feed(&mut self, stored: StoredEvent<'_>) {
        if self.broken.is_some() {
            return;
        }
        self.checked += 1;
        let event = match AuditEvent::decode(stored.encoded) {
            Ok(e) => e,
            Err(_) => {
                return self.fail(
                    "?",
                    0,
                    format!("entry {} is not a decodable event", stored.stream_id),
                );
            }
        };
        let (chain, seq) = (event.chain_id.clone(), event.seq);
        if hash_of(self.key, stored.encoded).as_slice() != stored.hash {
            return self.fail(
                &chain,
                seq,
                "event content does not match its hash (edited)".into(),
            );
        }
        let (last_seq, last_hash) = self
            .chains
            .get(&chain)
            .map_or((0, Vec::new()), |c| (c.last_seq, c.last_hash.clone()));
        if last_seq == 0 {
            let allowed_start = seq == 1 || self.trimmed_before_ms.is_some();
            if !allowed_start || (seq == 1 && !event.prev_hash.is_empty()) {
                return self.fail(
                    &chain,
                    seq,
                    format!("chain starts at seq {seq}: earlier events are missing"),
                );
            }
        } else if seq <= last_seq {
            return self.fail(
                &chain,
                seq,
                format!("seq {seq} follows seq {last_seq} (reordered)"),
            );
        } else if seq != last_seq + 1 {
            let expected = last_seq + 1;
            return self.fail(
                &chain,
                expected,
                format!("expected seq {expected}, found seq {seq}: events deleted or reordered"),
            );
        } else if event.prev_hash != last_hash {
            return self.fail(
                &chain,
                seq,
                "previous-hash link does not match (reordered or replaced)".into(),
            );
        }
        let state = self.chains.entry(chain.clone()).or_default();
        state.last_seq = seq;
        state.last_hash = stored.hash.to_vec();
        if let Some(slot) = self.wanted.get_mut(&(chain, seq)) {
            *slot = Some(stored.hash.to_vec());
        }
    }

    /// After the last event: checks checkpoints against what was seen.
    pub fn finish(mut self, checkpoints: &[Checkpoint]) -> (u64, Option<Broken>) {
        if self.broken.is_none() {
            for cp in checkpoints {
                if !cp.signature_valid {
                    self.fail(
                        &cp.chain_id.clone(),
                        cp.seq,
                        "checkpoint signature is invalid".into(),
                    );
                    break;
                }
                let seen = self
                    .wanted
                    .get(&(cp.chain_id.clone(), cp.seq))
                    .cloned()
                    .flatten();
                match seen {
                    Some(hash) if hash == cp.head => {}
                    Some(_) => {
                        self.fail(
                            &cp.chain_id.clone(),
                            cp.seq,
                            "event differs from the signed checkpoint".into(),
                        );
                        break;
                    }
                    None if self.trimmed_before_ms.is_some_and(|t| cp.time_ms < t) => {}
                    None => {
                        let last = self.chains.get(&cp.chain_id).map_or(0, |c| c.last_seq);
                        self.fail(
                            &cp.chain_id.clone(),
                            last + 1,
                            format!(
                                "events up to checkpointed seq {} are missing (truncated)",
                                cp.seq
                            ),
                        );
                        break;
                    }
                }
            }
        }
        (self.checked, self.broken)
    }

    fn fail(&mut self, chain_id: &str, seq: u64, reason: String) {
        self.broken = Some(Broken {
            chain_id: chain_id.to_owned(),
            seq,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[7; 32])
    }

    fn chain(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let key = key();
        let mut prev = Vec::new();
        (1..=n)
            .map(|seq| {
                let event = AuditEvent {
                    op: "Verify".into(),
                    ..AuditEvent::default()
                };
                let (e, h) = link(&key, event, "w1", seq, &prev);
                prev = h.clone();
                (e, h)
            })
            .collect()
    }

    fn verify(entries: &[(Vec<u8>, Vec<u8>)]) -> Option<Broken> {
        let key = key();
        let mut v = Verifier::new(&key, None, &[]);
        for (e, h) in entries {
            v.feed(StoredEvent {
                stream_id: "0-1",
                encoded: e,
                hash: h,
            });
        }
        v.finish(&[]).1
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify(&chain(10)), None);
    }

    #[test]
    fn edits_deletions_and_reorders_are_pinpointed() {
        let mut edited = chain(10);
        let last = edited[4].0.len() - 1;
        edited[4].0[last] ^= 1;
        assert_eq!(verify(&edited).unwrap().seq, 5);

        let mut deleted = chain(10);
        deleted.remove(4);
        let b = verify(&deleted).unwrap();
        assert_eq!(b.seq, 5);
        assert!(b.reason.contains("deleted"));

        let mut reordered = chain(10);
        reordered.swap(4, 5);
        let b = verify(&reordered).unwrap();
        assert_eq!(b.seq, 5);

        let mut head_cut = chain(10);
        head_cut.remove(0);
        assert_eq!(verify(&head_cut).unwrap().seq, 2);
    }
}
