//! `facevault receipt verify`: checks a deletion receipt offline against the
//! published Ed25519 key, and prints what it attests.

use std::io::Read as _;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::proto;
use crate::vault::verify_receipt;

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
    let receipt = value.get("receipt").unwrap_or(&value);
    let field = |name: &str| -> anyhow::Result<Vec<u8>> {
        let b64 = receipt
            .get(name)
            .and_then(Value::as_str)
            .with_context(|| format!("no receipt.{name} in the ticket (is it completed?)"))?;
        B64.decode(b64)
            .with_context(|| format!("receipt.{name} is not base64"))
    };
    let receipt = proto::DeletionReceipt {
        body: field("body")?,
        signature: field("signature")?,
    };
    let public_key = load_key(key)?;
    let Some(body) = verify_receipt(&public_key, &receipt) else {
        bail!("receipt signature INVALID: do not rely on this receipt");
    };
    let ts = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
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
    });
    super::print_line(&serde_json::to_string_pretty(&out)?)?;
    Ok(())
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
