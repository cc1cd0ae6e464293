//! Checking a tenant's audit stream against its signed statements. Pure: the
//! reader feeds the stored entries in stream order and says what must hold
//! (signed roots at sizes, trimmed prefixes); the walk reports every break with
//! its kind, and goes on past each one, so a first break never hides a later one.
//!
//! Per chain, event `seq` is leaf `seq - 1` of an RFC 9162 tree whose leaf data
//! is the event's 32-byte HMAC. The walk keeps each chain's frontier, so every
//! signed root at a size the walk reaches is compared, and a saved walk goes on
//! later from where it stopped (incremental verification).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::chain;
use super::merkle::{Frontier, Hash, leaf_hash};
use crate::domain::erasures::Erasure;
use crate::proto::AuditEvent;

/// What kind of damage a break is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakKind {
    /// An event's content no longer matches its HMAC, or a signed statement's
    /// signature does not hold.
    Edited,
    /// Events (or a chain, a tenant's stream, the registry) are gone, and no
    /// signed trim statement excuses it.
    Missing,
    /// Events are out of sequence order.
    Reordered,
    /// The newest events are gone: a signed head names more than remain.
    Truncated,
    /// Events are missing where only an unsigned (or forged) trim marker
    /// would excuse it.
    UnsignedTrim,
    /// Events of a chain that no signed head or registry knows.
    UnknownChain,
    /// The log disagrees with a signed head although each event checks out
    /// on its own: another history than the one signed.
    Forked,
    /// A signed statement older than one already seen stands in for it.
    RolledBack,
}

impl BreakKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edited => "edited",
            Self::Missing => "missing",
            Self::Reordered => "reordered",
            Self::Truncated => "truncated",
            Self::UnsignedTrim => "unsigned-trim",
            Self::UnknownChain => "unknown-chain",
            Self::Forked => "forked",
            Self::RolledBack => "rolled-back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub kind: BreakKind,
    /// Empty for the registry itself.
    pub chain_id: String,
    pub seq: u64,
    pub reason: String,
}

/// A signed root a chain must have at `size`, and where it comes from ("the
/// registry's head", "an anchored head", "the trim statement's head").
#[derive(Debug, Clone)]
pub struct Pin {
    pub size: u64,
    pub root: Hash,
    pub source: String,
}

/// Where a walk of one chain stands; saved between incremental runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    pub last_seq: u64,
    pub last_hash: Vec<u8>,
    /// The tree over leaves `0..last_seq`, or `None` once a gap broke it (no
    /// root can be checked past a missing leaf).
    pub frontier: Option<Frontier>,
    /// Stream time of the chain's first event seen.
    pub first_seen_ms: i64,
}

/// A stored event as read back.
pub struct StoredEvent<'a> {
    pub stream_id: &'a str,
    pub time_ms: i64,
    pub encoded: &'a [u8],
    pub hash: &'a [u8],
}

pub struct Walk<'k> {
    key: &'k hmac::Key,
    pub chains: BTreeMap<String, ChainState>,
    /// Per chain, the trimmed prefix a signed trim statement excuses: its
    /// first remaining leaf index and the tree over the leaves before it.
    starts: HashMap<String, (u64, Frontier)>,
    pins: HashMap<String, BTreeMap<u64, Vec<Pin>>>,
    /// Gaps reported, so that an event arriving late turns its gap into a
    /// reorder instead of two breaks.
    gaps: HashMap<String, BTreeSet<u64>>,
    pub checked: u64,
    pub breaks: Vec<Break>,
    /// Erasure events walked over whose HMAC verified (subject ref, erasure):
    /// they count only if the whole walk finds no break.
    pub erasures: Vec<(String, Erasure)>,
}

impl<'k> Walk<'k> {
    /// A walk from the start of the stream, or from a saved position.
    pub fn new(key: &'k hmac::Key, saved: BTreeMap<String, ChainState>) -> Self {
        Self {
            key,
            chains: saved,
            starts: HashMap::new(),
            pins: HashMap::new(),
            gaps: HashMap::new(),
            checked: 0,
            breaks: Vec::new(),
            erasures: Vec::new(),
        }
    }

    /// Leaves `0..first_index` of `chain` were trimmed under a signed statement;
    /// `prefix` is the tree over them (from the stored tiles).
    pub fn trimmed(&mut self, chain: &str, first_index: u64, prefix: Frontier) {
        self.starts.insert(chain.to_owned(), (first_index, prefix));
    }

    pub fn pin(&mut self, chain: &str, pin: Pin) {
        self.pins
            .entry(chain.to_owned())
            .or_default()
            .entry(pin.size)
            .or_default()
            .push(pin);
    }

    pub fn fail(&mut self, kind: BreakKind, chain_id: &str, seq: u64, reason: String) {
        self.breaks.push(Break {
            kind,
            chain_id: chain_id.to_owned(),
            seq,
            reason,
        });
    }

    /// Feeds the next entry of the stream.
    pub fn feed(&mut self, stored: StoredEvent<'_>) {
        self.checked += 1;
        let Ok(event) = AuditEvent::decode(stored.encoded) else {
            return self.fail(
                BreakKind::Edited,
                "",
                0,
                format!("entry {} is not a decodable event", stored.stream_id),
            );
        };
        let (chain_id, seq) = (event.chain_id.clone(), event.seq);
        let Ok(hash) = <Hash>::try_from(stored.hash) else {
            return self.fail(
                BreakKind::Edited,
                &chain_id,
                seq,
                format!("entry {} has no 32-byte hash", stored.stream_id),
            );
        };
        let edited = chain::hash_of(self.key, stored.encoded).as_slice() != stored.hash;
        if edited {
            self.fail(
                BreakKind::Edited,
                &chain_id,
                seq,
                "event content does not match its HMAC".into(),
            );
        } else if event.op == "Erasure"
            && let Some(erasure) = Erasure::from_detail(
                &event.detail,
                event
                    .time
                    .as_ref()
                    .map_or(stored.time_ms, crate::vault::unix_ms),
            )
        {
            self.erasures.push((event.subject_ref.clone(), erasure));
        }
        let state = match self.chains.get(&chain_id) {
            Some(state) => state.clone(),
            None => self.first_of_chain(&chain_id, seq, &event, stored.time_ms),
        };
        if state.last_seq >= seq && state.last_seq > 0 {
            if seq == state.last_seq {
                let kind = if state.last_hash == stored.hash {
                    BreakKind::Reordered
                } else {
                    BreakKind::Forked
                };
                return self.fail(
                    kind,
                    &chain_id,
                    seq,
                    format!("seq {seq} appears twice ({} copy)", kind.as_str()),
                );
            }
            // An event that comes after later ones: if its absence was reported,
            // that report becomes this one.
            let filled = self.gaps.get_mut(&chain_id).is_some_and(|g| g.remove(&seq));
            if filled {
                self.breaks.retain(|b| {
                    !(b.kind == BreakKind::Missing && b.chain_id == chain_id && b.seq == seq)
                });
            }
            return self.fail(
                BreakKind::Reordered,
                &chain_id,
                seq,
                format!("seq {seq} comes after seq {} in the stream", state.last_seq),
            );
        }
        let mut state = state;
        let expected = state.last_seq + 1;
        if seq != expected {
            for missing in expected..seq {
                self.gaps
                    .entry(chain_id.clone())
                    .or_default()
                    .insert(missing);
            }
            self.fail(
                BreakKind::Missing,
                &chain_id,
                expected,
                if seq - expected == 1 {
                    format!("seq {expected} is missing")
                } else {
                    format!("seqs {expected} to {} are missing", seq - 1)
                },
            );
            state.frontier = None;
        } else if !edited && state.last_seq > 0 && event.prev_hash != state.last_hash {
            self.fail(
                BreakKind::Forked,
                &chain_id,
                seq,
                "its link to the previous event does not hold (another history)".into(),
            );
        }
        if let Some(frontier) = state.frontier.as_mut() {
            frontier.push(leaf_hash(&hash));
            self.check_pins(&chain_id, frontier);
        }
        state.last_seq = seq;
        state.last_hash = stored.hash.to_vec();
        self.chains.insert(chain_id, state);
    }

    /// The state of a chain met for the first time: it starts at seq 1, or
    /// right after a signed trim.
    fn first_of_chain(
        &mut self,
        chain_id: &str,
        seq: u64,
        event: &AuditEvent,
        time_ms: i64,
    ) -> ChainState {
        let mut state = ChainState {
            first_seen_ms: time_ms,
            frontier: Some(Frontier::default()),
            ..ChainState::default()
        };
        match self.starts.get(chain_id) {
            Some((first_index, prefix)) if seq > 1 && seq - 1 <= *first_index => {
                // Events the statement covers but that are still here are
                // checked by their links from here on; the tree goes on from
                // the stored prefix only when it meets them exactly.
                state.last_seq = seq - 1;
                state.last_hash = event.prev_hash.clone();
                state.frontier = (prefix.size() == seq - 1).then(|| prefix.clone());
            }
            Some((first_index, prefix)) => {
                // Events after the trimmed prefix are gone too: the gap is
                // reported from the first leaf the statement does not cover.
                state.last_seq = *first_index;
                state.frontier = Some(prefix.clone());
            }
            _ if seq == 1 && !event.prev_hash.is_empty() => {
                self.fail(
                    BreakKind::Forked,
                    chain_id,
                    1,
                    "the first event links to a predecessor".into(),
                );
            }
            _ => {}
        }
        state
    }

    /// Compares the tree with the signed roots pinned at its size. The root is
    /// computed only there: most sizes have no pin.
    fn check_pins(&mut self, chain_id: &str, frontier: &Frontier) {
        let size = frontier.size();
        let Some(pins) = self.pins.get(chain_id).and_then(|p| p.get(&size)) else {
            return;
        };
        let root = frontier.root();
        let broken: Vec<Break> = pins
            .iter()
            .filter(|pin| pin.root != root)
            .map(|pin| Break {
                kind: BreakKind::Forked,
                chain_id: chain_id.to_owned(),
                seq: size,
                reason: format!(
                    "the tree of the first {size} events differs from {}",
                    pin.source
                ),
            })
            .collect();
        self.breaks.extend(broken);
    }

    /// After the last entry: chains that signed statements name but the stream
    /// lacks or ends too early, and chains nothing signed names. A chain first
    /// seen after `unheaded_since_ms` may not have had its first head yet.
    pub fn finish(mut self, known: &BTreeSet<String>, unheaded_since_ms: i64) -> WalkResult {
        let pinned: Vec<(String, u64)> = self
            .pins
            .iter()
            .filter_map(|(chain, pins)| pins.keys().max().map(|size| (chain.clone(), *size)))
            .collect();
        for (chain_id, size) in pinned {
            let trimmed_to = self.starts.get(&chain_id).map_or(0, |(f, _)| *f);
            let last = self.chains.get(&chain_id).map(|c| c.last_seq);
            match last {
                None if size <= trimmed_to => {}
                None => self.fail(
                    BreakKind::Missing,
                    &chain_id,
                    trimmed_to + 1,
                    format!(
                        "no event of this chain remains; a signed head names {size}{}",
                        if trimmed_to > 0 {
                            format!(", a signed trim removed {trimmed_to}")
                        } else {
                            String::new()
                        }
                    ),
                ),
                Some(last) if last < size => self.fail(
                    BreakKind::Truncated,
                    &chain_id,
                    last + 1,
                    format!("the stream ends at seq {last}; a signed head names {size} events"),
                ),
                Some(_) => {}
            }
        }
        let unknown: Vec<String> = self
            .chains
            .iter()
            .filter(|(chain, state)| {
                !known.contains(*chain) && state.first_seen_ms < unheaded_since_ms
            })
            .map(|(chain, _)| chain.clone())
            .collect();
        for chain_id in unknown {
            self.fail(
                BreakKind::UnknownChain,
                &chain_id,
                0,
                "no signed head or registry entry names this chain".into(),
            );
        }
        WalkResult {
            checked: self.checked,
            breaks: self.breaks,
            chains: self.chains,
            erasures: self.erasures,
        }
    }
}

pub struct WalkResult {
    pub checked: u64,
    pub breaks: Vec<Break>,
    pub chains: BTreeMap<String, ChainState>,
    pub erasures: Vec<(String, Erasure)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::root;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[7; 32])
    }

    /// (encoded, hash) of seqs 1..=n of chain "w1".
    fn chain(n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let key = key();
        let mut prev = Vec::new();
        (1..=n)
            .map(|seq| {
                let event = AuditEvent {
                    op: "Verify".into(),
                    ..AuditEvent::default()
                };
                let (e, h) = chain::link(&key, event, "w1", seq, &prev);
                prev = h.clone();
                (e, h)
            })
            .collect()
    }

    fn root_of(entries: &[(Vec<u8>, Vec<u8>)]) -> Hash {
        let leaves: Vec<Hash> = entries
            .iter()
            .map(|(_, h)| leaf_hash(h.as_slice()))
            .collect();
        root(&leaves)
    }

    fn walk(entries: &[(Vec<u8>, Vec<u8>)], pins: &[Pin]) -> Vec<Break> {
        let key = key();
        let mut w = Walk::new(&key, BTreeMap::new());
        for pin in pins {
            w.pin("w1", pin.clone());
        }
        for (e, h) in entries {
            w.feed(StoredEvent {
                stream_id: "1-0",
                time_ms: 1,
                encoded: e,
                hash: h,
            });
        }
        w.finish(&BTreeSet::from(["w1".to_owned()]), 0).breaks
    }

    fn kinds(breaks: &[Break]) -> Vec<(BreakKind, u64)> {
        breaks.iter().map(|b| (b.kind, b.seq)).collect()
    }

    fn pin(entries: &[(Vec<u8>, Vec<u8>)]) -> Pin {
        Pin {
            size: entries.len() as u64,
            root: root_of(entries),
            source: "the registry's head".into(),
        }
    }

    #[test]
    fn an_untouched_chain_meets_its_head() {
        let c = chain(10);
        assert_eq!(walk(&c, &[pin(&c), pin(&c[..4])]), vec![]);
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let full = chain(10);
        let head = pin(&full);

        let mut edited = full.clone();
        let last = edited[4].0.len() - 1;
        edited[4].0[last] ^= 1;
        assert_eq!(
            kinds(&walk(&edited, std::slice::from_ref(&head))),
            [(BreakKind::Edited, 5)]
        );

        let mut deleted = full.clone();
        deleted.remove(4);
        assert_eq!(
            kinds(&walk(&deleted, std::slice::from_ref(&head))),
            [(BreakKind::Missing, 5)]
        );

        let mut swapped = full.clone();
        swapped.swap(4, 5);
        assert_eq!(
            kinds(&walk(&swapped, std::slice::from_ref(&head))),
            [(BreakKind::Reordered, 5)]
        );

        let oldest_gone = full[2..].to_vec();
        assert_eq!(
            kinds(&walk(&oldest_gone, std::slice::from_ref(&head))),
            [(BreakKind::Missing, 1)]
        );

        let tail_gone = full[..7].to_vec();
        assert_eq!(
            kinds(&walk(&tail_gone, std::slice::from_ref(&head))),
            [(BreakKind::Truncated, 8)]
        );

        // Re-linked under the key (a writer gone wrong, or a stolen key): each
        // event checks out, the signed root does not.
        let mut other = full.clone();
        let key = key();
        let event = AuditEvent {
            op: "Enroll".into(),
            ..AuditEvent::default()
        };
        other[9] = chain::link(&key, event, "w1", 10, &full[8].1);
        assert_eq!(
            kinds(&walk(&other, std::slice::from_ref(&head))),
            [(BreakKind::Forked, 10)]
        );

        assert_eq!(
            kinds(&walk(&[], &[head])),
            [(BreakKind::Missing, 1)],
            "a chain whose events are all gone"
        );
    }

    #[test]
    fn a_signed_trim_excuses_exactly_the_prefix_it_names() {
        let full = chain(10);
        let leaves: Vec<Hash> = full[..4]
            .iter()
            .map(|(_, h)| leaf_hash(h.as_slice()))
            .collect();
        let mut prefix = Frontier::default();
        for l in leaves {
            prefix.push(l);
        }
        let key = key();
        let run = |entries: &[(Vec<u8>, Vec<u8>)]| {
            let mut w = Walk::new(&key, BTreeMap::new());
            w.trimmed("w1", 4, prefix.clone());
            w.pin("w1", pin(&full));
            for (e, h) in entries {
                w.feed(StoredEvent {
                    stream_id: "1-0",
                    time_ms: 1,
                    encoded: e,
                    hash: h,
                });
            }
            kinds(&w.finish(&BTreeSet::from(["w1".to_owned()]), 0).breaks)
        };
        assert_eq!(run(&full[4..]), []);
        assert_eq!(run(&full[5..]), [(BreakKind::Missing, 5)]);
    }

    #[test]
    fn a_chain_nothing_signed_names_is_unknown_once_it_is_old() {
        let key = key();
        let c = chain(3);
        let feed = |since: i64| {
            let mut w = Walk::new(&key, BTreeMap::new());
            for (e, h) in &c {
                w.feed(StoredEvent {
                    stream_id: "1-0",
                    time_ms: 100,
                    encoded: e,
                    hash: h,
                });
            }
            kinds(&w.finish(&BTreeSet::new(), since).breaks)
        };
        assert_eq!(feed(50), [], "too young to have a head");
        assert_eq!(feed(200), [(BreakKind::UnknownChain, 0)]);
    }

    #[test]
    fn a_saved_walk_goes_on_where_it_stopped() {
        let key = key();
        let full = chain(12);
        let mut first = Walk::new(&key, BTreeMap::new());
        for (e, h) in &full[..7] {
            first.feed(StoredEvent {
                stream_id: "1-0",
                time_ms: 1,
                encoded: e,
                hash: h,
            });
        }
        let saved = first.finish(&BTreeSet::new(), 0).chains;
        let mut second = Walk::new(&key, saved);
        second.pin("w1", pin(&full));
        for (e, h) in &full[7..] {
            second.feed(StoredEvent {
                stream_id: "1-0",
                time_ms: 1,
                encoded: e,
                hash: h,
            });
        }
        let result = second.finish(&BTreeSet::from(["w1".to_owned()]), 0);
        assert_eq!(result.breaks, vec![]);
        assert_eq!(result.checked, 5);
    }
}
