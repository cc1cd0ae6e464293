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
    pub breaks: Vec<Broken>,
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
            breaks: Vec::new(),
        }
    }

    /// Feeds the next event. After a broken link the walk goes on from the event
    /// found there, so every break is reported, not only the first (a first break
    /// must not hide later tampering).
    pub fn feed(&mut self, stored: StoredEvent<'_>) {
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
            // The chain goes on from this entry's stored hash, which the next
            // event's link names if only this event's content was edited.
            self.fail(
                &chain,
                seq,
                "event content does not match its hash (edited)".into(),
            );
            return self.advance(chain, seq, stored.hash);
        }
        let (last_seq, last_hash) = self
            .chains
            .get(&chain)
            .map_or((0, Vec::new()), |c| (c.last_seq, c.last_hash.clone()));
        if last_seq == 0 {
            let allowed_start = seq == 1 || self.trimmed_before_ms.is_some();
            if !allowed_start || (seq == 1 && !event.prev_hash.is_empty()) {
                self.fail(
                    &chain,
                    seq,
                    format!("chain starts at seq {seq}: earlier events are missing"),
                );
            }
        } else if seq <= last_seq {
            self.fail(
                &chain,
                seq,
                format!("seq {seq} follows seq {last_seq} (reordered or forked)"),
            );
            // The chain's position stays where it was: a stray earlier event
            // must not move it back.
            return;
        } else if seq != last_seq + 1 {
            let expected = last_seq + 1;
            self.fail(
                &chain,
                expected,
                format!("expected seq {expected}, found seq {seq}: events deleted or reordered"),
            );
        } else if event.prev_hash != last_hash {
            self.fail(
                &chain,
                seq,
                "previous-hash link does not match (reordered or replaced)".into(),
            );
        }
        self.advance(chain, seq, stored.hash);
    }

    fn advance(&mut self, chain: String, seq: u64, hash: &[u8]) {
        let state = self.chains.entry(chain.clone()).or_default();
        state.last_seq = seq;
        state.last_hash = hash.to_vec();
        if let Some(slot) = self.wanted.get_mut(&(chain, seq)) {
            *slot = Some(hash.to_vec());
        }
    }

    /// After the last event: checks checkpoints against what was seen. Returns
    /// the events checked and every break found, in the order found.
    pub fn finish(mut self, checkpoints: &[Checkpoint]) -> (u64, Vec<Broken>) {
        for cp in checkpoints {
            if !cp.signature_valid {
                self.fail(
                    &cp.chain_id,
                    cp.seq,
                    "checkpoint signature is invalid".into(),
                );
                continue;
            }
            let seen = self
                .wanted
                .get(&(cp.chain_id.clone(), cp.seq))
                .cloned()
                .flatten();
            match seen {
                Some(hash) if hash == cp.head => {}
                Some(_) => self.fail(
                    &cp.chain_id,
                    cp.seq,
                    "event differs from the signed checkpoint".into(),
                ),
                None if self.trimmed_before_ms.is_some_and(|t| cp.time_ms < t) => {}
                None => {
                    let last = self.chains.get(&cp.chain_id).map_or(0, |c| c.last_seq);
                    self.fail(
                        &cp.chain_id,
                        last + 1,
                        format!(
                            "events up to checkpointed seq {} are missing (truncated)",
                            cp.seq
                        ),
                    );
                }
            }
        }
        (self.checked, self.breaks)
    }

    fn fail(&mut self, chain_id: &str, seq: u64, reason: String) {
        self.breaks.push(Broken {
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
        verify_all(entries).into_iter().next()
    }

    fn verify_all(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<Broken> {
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

    #[test]
    fn a_first_break_does_not_hide_later_ones() {
        let mut damaged = chain(20);
        let last = damaged[3].0.len() - 1;
        damaged[3].0[last] ^= 1;
        damaged.remove(12);
        let breaks = verify_all(&damaged);
        let seqs: Vec<u64> = breaks.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![4, 13], "{breaks:?}");
        assert!(breaks[1].reason.contains("deleted"), "{breaks:?}");
    }
}
