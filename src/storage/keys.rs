//! Redis key layout. Every key of one subject shares the hash tag
//! `{<tenant>:<subject_ref>}`, so they live in one cluster slot and a script or a
//! MULTI can touch them together. Keys hold only ciphertext, counters and digests.

use crate::crypto::keyring::SubjectRef;
use crate::domain::Tenant;

pub struct SubjectKeys {
    /// HASH template_id → SealedTemplate (protobuf, AES-GCM ciphertext inside).
    pub templates: String,
    /// HASH of counters and flags: `fails`, `last_failure_ms`, `cancelled`.
    pub state: String,
    /// ZSET of digests of sealed envelopes already opened, scored by expiry (ms).
    pub replay: String,
    /// STRING present while a verification of this subject is in flight.
    pub inflight: String,
}

impl SubjectKeys {
    pub fn new(tenant: &Tenant, subject: &SubjectRef) -> Self {
        let tag = format!("fv:{{{}:{}}}", tenant.as_str(), subject.as_str());
        Self {
            templates: format!("{tag}:templates"),
            state: format!("{tag}:state"),
            replay: format!("{tag}:replay"),
            inflight: format!("{tag}:inflight"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.templates, &self.state, &self.replay, &self.inflight]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let subject = SubjectRef::parse(&"A".repeat(43)).unwrap();
        let keys = SubjectKeys::new(&Tenant::try_from("demo").unwrap(), &subject);
        for key in keys.all() {
            assert!(
                key.starts_with(&format!("fv:{{demo:{}}}:", "A".repeat(43))),
                "{key}"
            );
        }
    }
}
