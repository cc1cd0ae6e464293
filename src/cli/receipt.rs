//! `facevault receipt verify`: checks a deletion receipt offline against the
//! published Ed25519 key, and prints what it attests; when the ticket also
//! carries its shred statement (`shredReceipt`), that signature is checked too,
//! and the statement must name the same erasure (ticket, tenant, subject,
//! completion time) and retire every key epoch the receipt names.
//! The ticket's own fields are outside any signature: each one present must
//! agree with the signed values, or the ticket is refused as altered.

use std::io::Read as _;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::domain::key_epochs::ShredRefusal;
use crate::proto;
use crate::vault::{shred_matches_receipt, verify_receipt, verify_shred_receipt};

#[derive(Debug, clap::Subcommand)]
pub enum ReceiptCommand {
    /// Verify a receipt: exit 0 and print its content if the signature holds.
    Verify {
        /// A DeletionTicket or DeletionReceipt as JSON (grpcurl output): a file, or - for stdin.
        #[arg(long)]
        ticket: String,
        /// The receipt verification key: base64, or a JSON file holding
        /// `receiptVerificationKey` (GetSealingKeys output, sealing-public.json).
        #[arg(long)]
        key: String,
    },
}

pub fn run(command: ReceiptCommand) -> anyhow::Result<()> {
    match command {
        ReceiptCommand::Verify { ticket, key } => verify(&ticket, &key),
    }
}

fn verify(ticket: &str, key: &str) -> anyhow::Result<()> {
    let text = if ticket == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(ticket).with_context(|| format!("cannot read {ticket}"))?
    };
    let out = check(&text, &load_key(key)?)?;
    super::print_line(&serde_json::to_string_pretty(&out)?)?;
    Ok(())
}

/// Checks a ticket (or bare receipt) as JSON; returns what it attests.
fn check(text: &str, public_key: &[u8]) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_str(text).context("the ticket is not JSON")?;
    let receipt = statement(value.get("receipt").unwrap_or(&value), "receipt")?;
    let public_key = public_key.to_vec();
    let Some(body) = verify_receipt(&public_key, &receipt) else {
        bail!("receipt signature INVALID: do not rely on this receipt");
    };
    let ts = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let mut signed = vec![
        ("ticketId", Signed::Text(body.ticket_id.clone())),
        ("subjectRef", Signed::Text(body.subject_ref.clone())),
        ("requestedAt", Signed::Time(body.requested_at)),
        ("deadline", Signed::Time(body.deadline)),
        ("completedAt", Signed::Time(body.completed_at)),
    ];
    let shred = match value.get("shredReceipt") {
        None => None,
        Some(s) => {
            let Some(shred) = verify_shred_receipt(&public_key, &statement(s, "shredReceipt")?)
            else {
                bail!("shred statement signature INVALID: do not rely on this ticket");
            };
            match shred_matches_receipt(&body, &shred) {
                Ok(()) => {}
                Err(ShredRefusal::OtherErasure) => {
                    bail!("the shred statement names another erasure than the receipt")
                }
                Err(ShredRefusal::NoEpochs) => bail!(
                    "the receipt names no key epoch, so no shred statement can cover it: do not rely on this ticket"
                ),
                Err(_) => bail!(
                    "the shred statement does not retire every key epoch the receipt names (receipt {:?}, retired {:?}): do not rely on this ticket",
                    body.key_epochs,
                    shred.retired_epochs
                ),
            }
            signed.push(("shreddedAt", Signed::Time(shred.shredded_at)));
            Some(json!({
                "shredded_at": ts(&shred.shredded_at),
                "retired_epochs": shred.retired_epochs,
                "statement": shred.statement,
            }))
        }
    };
    if value.get("receipt").is_some() {
        for (field, signed_value) in &signed {
            if let Some(outer) = value.get(*field)
                && !signed_value.agrees_with(outer)
            {
                bail!(
                    "the ticket's {field} ({outer}) differs from the signed value: the ticket was altered; rely only on the signed values"
                );
            }
        }
        if value.get("shreddedAt").is_some() && value.get("shredReceipt").is_none() {
            bail!("the ticket shows shreddedAt without a signed shred statement");
        }
    }
    let erasure_logged = erasure_logged(&value, &body, &public_key)?;
    let out = json!({
        "valid": true,
        "ticket_id": body.ticket_id,
        "tenant": body.tenant,
        "subject_ref": body.subject_ref,
        "requested_at": ts(&body.requested_at),
        "deadline": ts(&body.deadline),
        "completed_at": ts(&body.completed_at),
        "erased": body.erased,
        "key_epochs": body.key_epochs,
        "shredded": shred,
        "erasure_logged": erasure_logged,
    });
    Ok(out)
}

/// Checks the ticket's `erasureProof`: the erasure event the signed receipt
/// names is in the audit log under a signed tree head.
fn erasure_logged(
    value: &Value,
    body: &proto::ReceiptBody,
    public_key: &[u8],
) -> anyhow::Result<Value> {
    let Some(proof) = value.get("erasureProof") else {
        return Ok(if body.audit_chain_id.is_empty() {
            json!("the receipt names no audit event (made before erasures were logged)")
        } else {
            json!(
                "not proven here: the ticket carries no erasureProof yet (read it again after audit.checkpoint_interval_secs)"
            )
        });
    };
    let proof: crate::audit::heads::InclusionJson =
        serde_json::from_value(proof.clone()).context("erasureProof is not an InclusionProof")?;
    let head = proof
        .verify(public_key)
        .map_err(|e| anyhow::anyhow!("erasureProof INVALID: {e}"))?;
    if head.tenant != body.tenant
        || proof.chain_id != body.audit_chain_id
        || proof.leaf_index + 1 != body.audit_seq
        || proof.event_hash != body.audit_event_hash
    {
        bail!("erasureProof proves another event than the one the signed receipt names");
    }
    Ok(json!({
        "chain_id": proof.chain_id,
        "seq": body.audit_seq,
        "tree_size": head.tree_size,
        "head_timestamp_ms": head.timestamp_ms,
    }))
}

/// A value as signed, to compare with the same field outside the signature.
enum Signed {
    Text(String),
    Time(Option<prost_types::Timestamp>),
}

impl Signed {
    /// grpcurl prints strings as they are and timestamps in RFC 3339.
    fn agrees_with(&self, outer: &Value) -> bool {
        match (self, outer) {
            (Self::Text(signed), Value::String(outer)) => signed == outer,
            (Self::Time(Some(signed)), Value::String(outer)) => {
                chrono::DateTime::parse_from_rfc3339(outer).is_ok_and(|t| {
                    t.timestamp() == signed.seconds
                        && t.timestamp_subsec_nanos() == signed.nanos as u32
                })
            }
            _ => false,
        }
    }
}

/// A signed statement (`body`, `signature`, base64) from grpcurl's JSON.
fn statement(value: &Value, name: &str) -> anyhow::Result<proto::DeletionReceipt> {
    let field = |field: &str| -> anyhow::Result<Vec<u8>> {
        let b64 = value
            .get(field)
            .and_then(Value::as_str)
            .with_context(|| format!("no {name}.{field} in the ticket (is it completed?)"))?;
        B64.decode(b64)
            .with_context(|| format!("{name}.{field} is not base64"))
    };
    Ok(proto::DeletionReceipt {
        body: field("body")?,
        signature: field("signature")?,
    })
}

fn load_key(key: &str) -> anyhow::Result<Vec<u8>> {
    let text = match std::fs::read_to_string(key) {
        Ok(file) => {
            let json: Value = serde_json::from_str(&file).context("the key file is not JSON")?;
            json.get("receiptVerificationKey")
                .and_then(Value::as_str)
                .context("the key file has no receiptVerificationKey")?
                .to_owned()
        }
        Err(_) => key.to_owned(),
    };
    let bytes = B64.decode(text.trim()).context("the key is not base64")?;
    if bytes.len() != 32 {
        bail!("the receipt verification key must be 32 bytes (Ed25519)");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    use super::*;
    use crate::vault::RECEIPT_CONTEXT;

    /// A completed ticket as grpcurl prints it, with a receipt signed by `key`.
    fn ticket(key: &Ed25519KeyPair) -> Value {
        let at = |s| prost_types::Timestamp {
            seconds: s,
            nanos: 250_000_000,
        };
        let body = proto::ReceiptBody {
            ticket_id: "t1".into(),
            tenant: "demo".into(),
            subject_ref: "A".repeat(43),
            requested_at: Some(at(1_800_000_000)),
            deadline: Some(at(1_801_000_000)),
            completed_at: Some(at(1_800_000_100)),
            erased: vec!["templates:1".into()],
            key_epochs: vec![1],
            ..proto::ReceiptBody::default()
        }
        .encode_to_vec();
        let mut message = RECEIPT_CONTEXT.to_vec();
        message.extend_from_slice(&body);
        let time = |s: i64| {
            chrono::DateTime::from_timestamp(s, 250_000_000)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        json!({
            "ticketId": "t1",
            "subjectRef": "A".repeat(43),
            "state": "COMPLETED",
            "requestedAt": time(1_800_000_000),
            "deadline": time(1_801_000_000),
            "completedAt": time(1_800_000_100),
            "receipt": {
                "body": B64.encode(&body),
                "signature": B64.encode(key.sign(&message).as_ref()),
            },
        })
    }

    #[test]
    fn fields_outside_the_signature_must_agree_with_it() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[4; 32]).unwrap();
        let public = key.public_key().as_ref().to_vec();
        let good = ticket(&key);
        let out = check(&good.to_string(), &public).unwrap();
        assert_eq!(out["valid"], true);
        assert_eq!(out["key_epochs"][0], 1);
        for (field, forged) in [
            ("deadline", "2027-01-30T00:00:00.250Z"),
            ("completedAt", "2027-01-01T00:00:00Z"),
            ("subjectRef", "B"),
            ("ticketId", "t2"),
        ] {
            let mut altered = good.clone();
            altered[field] = json!(forged);
            let err = check(&altered.to_string(), &public)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("the ticket's {field}")), "{err}");
        }
        let mut unsigned = good.clone();
        unsigned["shreddedAt"] = json!("2027-01-01T00:00:00Z");
        let err = check(&unsigned.to_string(), &public)
            .unwrap_err()
            .to_string();
        assert!(err.contains("without a signed shred statement"), "{err}");
        let other = Ed25519KeyPair::from_seed_unchecked(&[5; 32]).unwrap();
        assert!(check(&good.to_string(), other.public_key().as_ref()).is_err());
    }

    /// A shred statement signed with the real key still proves nothing unless
    /// it retires every epoch the receipt names, for the same erasure.
    #[test]
    fn a_shred_statement_must_cover_the_receipts_epochs_and_erasure() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[4; 32]).unwrap();
        let public = key.public_key().as_ref().to_vec();
        let good = ticket(&key);
        let shred = |retired: Vec<u32>, subject_ref: String| {
            let body = proto::ShredBody {
                ticket_id: "t1".into(),
                tenant: "demo".into(),
                subject_ref,
                completed_at: Some(prost_types::Timestamp {
                    seconds: 1_800_000_100,
                    nanos: 250_000_000,
                }),
                shredded_at: Some(prost_types::Timestamp {
                    seconds: 1_800_900_000,
                    nanos: 0,
                }),
                retired_epochs: retired,
                statement: crate::vault::SHRED_STATEMENT.into(),
            }
            .encode_to_vec();
            let mut message = crate::vault::SHRED_CONTEXT.to_vec();
            message.extend_from_slice(&body);
            let mut t = good.clone();
            t["shredReceipt"] = json!({
                "body": B64.encode(&body),
                "signature": B64.encode(key.sign(&message).as_ref()),
            });
            t.to_string()
        };
        let out = check(&shred(vec![1], "A".repeat(43)), &public).unwrap();
        assert_eq!(out["shredded"]["retired_epochs"][0], 1);
        let err = check(&shred(vec![0], "A".repeat(43)), &public)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not retire every key epoch"), "{err}");
        let err = check(&shred(vec![], "A".repeat(43)), &public)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not retire every key epoch"), "{err}");
        let err = check(&shred(vec![1], "B".repeat(43)), &public)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another erasure"), "{err}");
    }
}
