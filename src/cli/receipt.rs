//! `facevault receipt verify`: checks a deletion receipt offline against the
//! published Ed25519 key, and prints what it attests; when the ticket also
//! carries its shred statement (`shredReceipt`), that signature is checked too.

use std::io::Read as _;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::proto;
use crate::vault::{verify_receipt, verify_shred_receipt};

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
    let value: Value = serde_json::from_str(&text).context("the ticket is not JSON")?;
    let receipt = statement(value.get("receipt").unwrap_or(&value), "receipt")?;
    let public_key = load_key(key)?;
    let Some(body) = verify_receipt(&public_key, &receipt) else {
        bail!("receipt signature INVALID: do not rely on this receipt");
    };
    let ts = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    let shred = match value.get("shredReceipt") {
        None => None,
        Some(s) => {
            let Some(shred) = verify_shred_receipt(&public_key, &statement(s, "shredReceipt")?)
            else {
                bail!("shred statement signature INVALID: do not rely on this ticket");
            };
            if shred.ticket_id != body.ticket_id
                || shred.tenant != body.tenant
                || shred.completed_at != body.completed_at
            {
                bail!("the shred statement names another erasure than the receipt");
            }
            Some(json!({
                "shredded_at": ts(&shred.shredded_at),
                "retired_epochs": shred.retired_epochs,
                "statement": shred.statement,
            }))
        }
    };
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
    });
    super::print_line(&serde_json::to_string_pretty(&out)?)?;
    Ok(())
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
