//! The signed statements of the audit log: tree heads (one chain's Merkle root
//! at a size), the registry (every chain of every tenant with its latest head)
//! and trim statements (retention removed a chain's first leaves). Their signed
//! bytes are plain text, so an auditor can check them with SHA-256 and Ed25519
//! alone; `docs/audit-log.md` specifies them byte for byte. Their JSON is the
//! proto3 JSON of `facevault.v1.SignedTreeHead` (camelCase, 64-bit numbers as
//! strings, bytes as base64), so a head from the API, from the anchor file and
//! from the registry reads the same.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::merkle::Hash;
use super::verify::BreakKind;

pub const HEAD_CONTEXT: &str = "facevault/v1 tree-head";
pub const REGISTRY_CONTEXT: &str = "facevault/v1 audit-registry";
pub const TRIM_CONTEXT: &str = "facevault/v1 audit-trim";

/// A signed tree head: chain `chain_id` of `tenant` had `tree_size` leaves with
/// root `root_hash` at `timestamp_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeHead {
    pub tenant: String,
    pub chain_id: String,
    #[serde(with = "decimal")]
    pub tree_size: u64,
    #[serde(with = "base64_hash")]
    pub root_hash: Hash,
    #[serde(with = "decimal")]
    pub timestamp_ms: u64,
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
}

impl TreeHead {
    pub fn sign(
        signer: &Ed25519KeyPair,
        tenant: &str,
        chain_id: &str,
        tree_size: u64,
        root_hash: Hash,
        timestamp_ms: u64,
    ) -> Self {
        let mut head = Self {
            tenant: tenant.to_owned(),
            chain_id: chain_id.to_owned(),
            tree_size,
            root_hash,
            timestamp_ms,
            signature: Vec::new(),
        };
        head.signature = signer.sign(&head.message()).as_ref().to_vec();
        head
    }

    /// `facevault/v1 tree-head\n<tenant>\n<chain>\n<size>\n<ms>\n<root hex>`.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{HEAD_CONTEXT}\n{}\n{}\n{}\n{}\n{}",
            self.tenant,
            self.chain_id,
            self.tree_size,
            self.timestamp_ms,
            hex::encode(self.root_hash)
        )
        .into_bytes()
    }

    pub fn verify(&self, public_key: &[u8]) -> bool {
        signature_holds(public_key, &self.message(), &self.signature)
    }

    pub fn to_proto(&self) -> crate::proto::SignedTreeHead {
        crate::proto::SignedTreeHead {
            tenant: self.tenant.clone(),
            chain_id: self.chain_id.clone(),
            tree_size: self.tree_size,
            root_hash: self.root_hash.to_vec(),
            timestamp_ms: self.timestamp_ms,
            signature: self.signature.clone(),
        }
    }

    pub fn from_proto(head: &crate::proto::SignedTreeHead) -> Option<Self> {
        Some(Self {
            tenant: head.tenant.clone(),
            chain_id: head.chain_id.clone(),
            tree_size: head.tree_size,
            root_hash: head.root_hash.as_slice().try_into().ok()?,
            timestamp_ms: head.timestamp_ms,
            signature: head.signature.clone(),
        })
    }
}

/// Something a writer found wrong with the registry and signed into the next
/// one, so that no later registry can hide it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    #[serde(with = "decimal")]
    pub timestamp_ms: u64,
    pub kind: BreakKind,
    pub detail: String,
}

/// Every chain of every tenant with its latest head. `generation` grows by one
/// with every registry written; a writer that finds it lower than one it saw
/// records a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    #[serde(with = "decimal")]
    pub generation: u64,
    #[serde(with = "decimal")]
    pub timestamp_ms: u64,
    pub heads: Vec<TreeHead>,
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// Incidents older than the `MAX_INCIDENTS` kept in full, folded into a
    /// signed digest: they never drop out of the registry, so flooding it with
    /// new incidents cannot flush an old one.
    #[serde(default, skip_serializing_if = "Folded::is_empty")]
    pub folded: Folded,
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
}

/// Incidents kept in full in the registry; older ones are folded.
pub const MAX_INCIDENTS: usize = 64;

/// Incidents folded out of the registry's list: how many, the first and last
/// one's time, and a hash chain over their lines (`digest = SHA-256(digest ||
/// "incident <ms> <kind> <detail>\n")`, from 32 zero bytes), so an auditor
/// holding the logged incidents can check them against it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Folded {
    #[serde(with = "decimal")]
    pub count: u64,
    #[serde(with = "decimal")]
    pub first_ms: u64,
    #[serde(with = "decimal")]
    pub last_ms: u64,
    #[serde(with = "base64_hash")]
    pub digest: Hash,
}

impl Folded {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn fold(&mut self, incident: &Incident) {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.digest);
        ctx.update(incident.line().as_bytes());
        self.digest.copy_from_slice(ctx.finish().as_ref());
        if self.count == 0 {
            self.first_ms = incident.timestamp_ms;
        }
        self.last_ms = incident.timestamp_ms;
        self.count += 1;
    }
}

impl Incident {
    /// `incident <ms> <kind> <detail>\n`, as the registry signs it.
    pub fn line(&self) -> String {
        format!(
            "incident {} {} {}\n",
            self.timestamp_ms,
            self.kind.as_str(),
            self.detail.replace('\n', " ")
        )
    }
}

impl Registry {
    /// Signs the registry as it stands, with heads sorted by (tenant, chain).
    pub fn seal(&mut self, signer: &Ed25519KeyPair) {
        self.heads
            .sort_by(|a, b| (&a.tenant, &a.chain_id).cmp(&(&b.tenant, &b.chain_id)));
        if self.incidents.len() > MAX_INCIDENTS {
            let fold = self.incidents.len() - MAX_INCIDENTS;
            for incident in self.incidents.drain(..fold) {
                self.folded.fold(&incident);
            }
        }
        self.signature = signer.sign(&self.message()).as_ref().to_vec();
    }

    /// `facevault/v1 audit-registry\n<generation>\n<ms>\n`, then a line
    /// `head <tenant> <chain> <size> <ms> <root hex>` per head in (tenant,
    /// chain) order, then, once incidents were folded, `folded <count>
    /// <first ms> <last ms> <digest hex>`, then `incident <ms> <kind> <detail>`
    /// per incident kept in full.
    pub fn message(&self) -> Vec<u8> {
        let mut m = format!(
            "{REGISTRY_CONTEXT}\n{}\n{}\n",
            self.generation, self.timestamp_ms
        );
        for h in &self.heads {
            m.push_str(&format!(
                "head {} {} {} {} {}\n",
                h.tenant,
                h.chain_id,
                h.tree_size,
                h.timestamp_ms,
                hex::encode(h.root_hash)
            ));
        }
        if !self.folded.is_empty() {
            let f = &self.folded;
            m.push_str(&format!(
                "folded {} {} {} {}\n",
                f.count,
                f.first_ms,
                f.last_ms,
                hex::encode(f.digest)
            ));
        }
        for i in &self.incidents {
            m.push_str(&i.line());
        }
        m.into_bytes()
    }

    pub fn verify(&self, public_key: &[u8]) -> bool {
        signature_holds(public_key, &self.message(), &self.signature)
    }

    pub fn head(&self, tenant: &str, chain_id: &str) -> Option<&TreeHead> {
        self.heads
            .iter()
            .find(|h| h.tenant == tenant && h.chain_id == chain_id)
    }

    pub fn heads_of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a TreeHead> + 'a {
        self.heads.iter().filter(move |h| h.tenant == tenant)
    }
}

/// Retention removed leaves `0..first_index` of a chain (their events); the
/// chain's signed head at the trim was (`tree_size`, `root_hash`). The newest
/// event removed was signed at `newest_excused_ms`, and the trim applied a
/// retention of `retention_days`: a verifier checks that this retention is at
/// least the floor and that the newest event was that old at `timestamp_ms`.
/// A statement without these fields does not parse, so it excuses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrimStatement {
    pub tenant: String,
    pub chain_id: String,
    #[serde(with = "decimal")]
    pub first_index: u64,
    #[serde(with = "decimal")]
    pub tree_size: u64,
    #[serde(with = "base64_hash")]
    pub root_hash: Hash,
    #[serde(with = "decimal")]
    pub timestamp_ms: u64,
    #[serde(with = "decimal")]
    pub newest_excused_ms: u64,
    #[serde(with = "decimal")]
    pub retention_days: u64,
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
}

/// The least retention a trim may apply (`audit.retention_days` cannot be set
/// lower): verifiers reject a statement that claims less.
pub const MIN_RETENTION_DAYS: u64 = 180;

/// One day in milliseconds.
pub const DAY_MS: u64 = 86_400_000;

impl TrimStatement {
    /// `facevault/v1 audit-trim\n<tenant>\n<chain>\n<first index>\n<size>\n<ms>\n<root hex>\n<newest excused ms>\n<retention days>`.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{TRIM_CONTEXT}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.tenant,
            self.chain_id,
            self.first_index,
            self.tree_size,
            self.timestamp_ms,
            hex::encode(self.root_hash),
            self.newest_excused_ms,
            self.retention_days
        )
        .into_bytes()
    }

    /// Whether the statement may excuse anything: its signature holds, it
    /// applied at least `MIN_RETENTION_DAYS`, and its newest excused event was
    /// older than that retention at the statement's own time. Says why not.
    pub fn check(&self, public_key: &[u8]) -> Result<(), String> {
        if !self.verify(public_key) {
            return Err(
                "a trim statement whose signature does not hold: it excuses nothing".into(),
            );
        }
        if self.retention_days < MIN_RETENTION_DAYS {
            return Err(format!(
                "a trim statement that applied a retention of {} days, below the floor of {MIN_RETENTION_DAYS}: it excuses nothing",
                self.retention_days
            ));
        }
        let allowed_until = self
            .timestamp_ms
            .saturating_sub(self.retention_days.saturating_mul(DAY_MS));
        if self.first_index > 0 && self.newest_excused_ms >= allowed_until {
            return Err(format!(
                "a trim statement at {} ms excuses an event of {} ms, younger than its {} days of retention allow: it excuses nothing",
                self.timestamp_ms, self.newest_excused_ms, self.retention_days
            ));
        }
        Ok(())
    }

    pub fn seal(&mut self, signer: &Ed25519KeyPair) {
        self.signature = signer.sign(&self.message()).as_ref().to_vec();
    }

    pub fn verify(&self, public_key: &[u8]) -> bool {
        signature_holds(public_key, &self.message(), &self.signature)
    }
}

fn signature_holds(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// 64-bit numbers as decimal strings, as proto3 JSON writes them; plain JSON
/// numbers are read too.
pub(crate) mod decimal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&n.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(u64),
        }
        match Either::deserialize(d)? {
            Either::Text(t) => t.parse().map_err(D::Error::custom),
            Either::Number(n) => Ok(n),
        }
    }
}

pub(crate) mod base64_bytes {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        B64.decode(String::deserialize(d)?)
            .map_err(D::Error::custom)
    }
}

pub(crate) mod base64_hash {
    use super::Hash;
    use serde::{Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        super::base64_bytes::serialize(h, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        super::base64_bytes::deserialize(d)?
            .try_into()
            .map_err(|_| D::Error::custom("a hash is 32 bytes"))
    }
}

/// An `InclusionProof` as proto3 JSON (grpcurl's output; zero fields omitted).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InclusionJson {
    #[serde(default)]
    pub chain_id: String,
    #[serde(default, with = "decimal")]
    pub leaf_index: u64,
    #[serde(default, with = "decimal")]
    pub tree_size: u64,
    #[serde(default, with = "base64_bytes")]
    pub event_hash: Vec<u8>,
    #[serde(default)]
    pub hashes: Vec<String>,
    pub head: Option<TreeHead>,
}

impl InclusionJson {
    /// Checks the proof against its own signed head: the head's signature,
    /// that it names the proof's chain and size, and RFC 9162 §2.1.3.2.
    pub fn verify(&self, public_key: &[u8]) -> Result<&TreeHead, String> {
        let head = self
            .head
            .as_ref()
            .ok_or("the proof carries no signed tree head")?;
        if !head.verify(public_key) {
            return Err("the tree head's signature does not hold".into());
        }
        if head.chain_id != self.chain_id || head.tree_size != self.tree_size {
            return Err("the proof and its tree head name different trees".into());
        }
        let hashes = self
            .hashes
            .iter()
            .map(|h| {
                B64.decode(h)
                    .ok()
                    .and_then(|b| <Hash>::try_from(b.as_slice()).ok())
            })
            .collect::<Option<Vec<Hash>>>()
            .ok_or("a proof hash is not 32 bytes of base64")?;
        super::merkle::verify_inclusion(
            &super::merkle::leaf_hash(&self.event_hash),
            self.leaf_index,
            self.tree_size,
            &hashes,
            &head.root_hash,
        )
        .map_err(|e| format!("the inclusion proof does not hold: {e}"))?;
        Ok(head)
    }
}

/// Base64 of a signature or hash, for log lines.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[9; 32]).unwrap()
    }

    #[test]
    fn a_head_signs_the_documented_text_and_any_change_breaks_it() {
        let signer = signer();
        let head = TreeHead::sign(&signer, "acme", "w-01", 3, [0xab; 32], 1_700_000_000_000);
        assert_eq!(
            String::from_utf8(head.message()).unwrap(),
            format!(
                "facevault/v1 tree-head\nacme\nw-01\n3\n1700000000000\n{}",
                "ab".repeat(32)
            )
        );
        use ring::signature::KeyPair as _;
        let public = signer.public_key().as_ref().to_vec();
        assert!(head.verify(&public));
        let mut older = head.clone();
        older.tree_size = 2;
        assert!(!older.verify(&public));
        let json = serde_json::to_value(&head).unwrap();
        assert_eq!(json["treeSize"], "3");
        assert_eq!(json["chainId"], "w-01");
        let back: TreeHead = serde_json::from_value(json).unwrap();
        assert_eq!(back, head);
    }

    #[test]
    fn a_registry_covers_every_head_and_incident() {
        use ring::signature::KeyPair as _;
        let signer = signer();
        let public = signer.public_key().as_ref().to_vec();
        let mut registry = Registry {
            generation: 4,
            timestamp_ms: 10,
            heads: vec![
                TreeHead::sign(&signer, "b", "w-2", 5, [2; 32], 9),
                TreeHead::sign(&signer, "a", "w-1", 7, [1; 32], 8),
            ],
            incidents: vec![Incident {
                timestamp_ms: 7,
                kind: BreakKind::RolledBack,
                detail: "generation 5 went back to 3".into(),
            }],
            folded: Folded::default(),
            signature: Vec::new(),
        };
        registry.seal(&signer);
        assert_eq!(registry.heads[0].tenant, "a", "heads are sorted");
        assert!(registry.verify(&public));
        let text = String::from_utf8(registry.message()).unwrap();
        assert!(text.ends_with("incident 7 rolled-back generation 5 went back to 3\n"));
        let mut dropped = registry.clone();
        dropped.heads.pop();
        assert!(!dropped.verify(&public), "losing a head is caught");
        let mut hidden = registry.clone();
        hidden.incidents.clear();
        assert!(!hidden.verify(&public), "hiding an incident is caught");
    }

    #[test]
    fn incidents_beyond_the_cap_are_folded_never_dropped() {
        use ring::signature::KeyPair as _;
        let signer = signer();
        let public = signer.public_key().as_ref().to_vec();
        let incident = |ms: u64| Incident {
            timestamp_ms: ms,
            kind: BreakKind::Edited,
            detail: format!("edit {ms}"),
        };
        let mut registry = Registry {
            generation: 1,
            timestamp_ms: 1,
            heads: Vec::new(),
            incidents: (1..=MAX_INCIDENTS as u64 + 5).map(incident).collect(),
            folded: Folded::default(),
            signature: Vec::new(),
        };
        registry.seal(&signer);
        assert_eq!(registry.incidents.len(), MAX_INCIDENTS);
        assert_eq!(registry.folded.count, 5);
        assert_eq!((registry.folded.first_ms, registry.folded.last_ms), (1, 5));
        let mut digest = [0u8; 32];
        for ms in 1..=5 {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(&digest);
            ctx.update(incident(ms).line().as_bytes());
            digest.copy_from_slice(ctx.finish().as_ref());
        }
        assert_eq!(registry.folded.digest, digest);
        assert!(registry.verify(&public));
        assert!(
            String::from_utf8(registry.message())
                .unwrap()
                .contains(&format!("\nfolded 5 1 5 {}\n", hex::encode(digest)))
        );
        let mut forgotten = registry.clone();
        forgotten.folded = Folded::default();
        assert!(!forgotten.verify(&public), "dropping the fold is caught");
        let json = serde_json::to_string(&registry).unwrap();
        assert_eq!(serde_json::from_str::<Registry>(&json).unwrap(), registry);
    }

    #[test]
    fn a_trim_statement_must_keep_the_retention_it_signs() {
        use ring::signature::KeyPair as _;
        let signer = signer();
        let public = signer.public_key().as_ref().to_vec();
        let at = 1_800_000_000_000u64;
        let statement = |newest: u64, days: u64| {
            let mut s = TrimStatement {
                tenant: "acme".into(),
                chain_id: "w-1".into(),
                first_index: 3,
                tree_size: 9,
                root_hash: [1; 32],
                timestamp_ms: at,
                newest_excused_ms: newest,
                retention_days: days,
                signature: Vec::new(),
            };
            s.seal(&signer);
            s
        };
        let old_enough = at - 180 * DAY_MS - 1;
        assert_eq!(statement(old_enough, 180).check(&public), Ok(()));
        assert!(
            statement(old_enough + 1, 180).check(&public).is_err(),
            "too young by 1 ms"
        );
        assert!(
            statement(at - 60_000, 180).check(&public).is_err(),
            "minutes old"
        );
        assert!(statement(0, 179).check(&public).is_err(), "below the floor");
        let mut moved = statement(old_enough, 180);
        moved.newest_excused_ms -= 1;
        assert!(moved.check(&public).is_err(), "the newest time is signed");
        let mut json = serde_json::to_value(statement(old_enough, 180)).unwrap();
        json.as_object_mut().unwrap().remove("newestExcusedMs");
        assert!(
            serde_json::from_value::<TrimStatement>(json).is_err(),
            "a statement without the newest excused time is not one"
        );
    }
}
