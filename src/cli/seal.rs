use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use crate::client::{PayloadSpec, SealingTarget, seal_embedding};
use crate::crypto::keyfiles::PublicSealingKeys;
use crate::crypto::sealing::{SealedFor, Suite};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Op {
    Enroll,
    Verify,
}

/// How consent was given (`Consent.method`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Method {
    SeparateInApp,
    Written,
    Guardian,
}

impl Method {
    fn proto_name(self) -> &'static str {
        match self {
            Self::SeparateInApp => "CONSENT_METHOD_SEPARATE_IN_APP",
            Self::Written => "CONSENT_METHOD_WRITTEN",
            Self::Guardian => "CONSENT_METHOD_GUARDIAN",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SealArgs {
    /// Operation the body is for.
    #[arg(long, value_enum)]
    op: Op,
    /// The subject id (goes into the AAD and the request body).
    #[arg(long)]
    subject: String,
    /// Caller's tenant (must match the client certificate's).
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Enroll: consented purposes (repeat); verify: the purpose of this verification.
    #[arg(long = "purpose", default_values_t = vec!["login".to_owned()])]
    purposes: Vec<String>,
    /// Embedding as a JSON array of numbers: a file path, or - for stdin.
    #[arg(long)]
    embedding: String,
    /// Embedding model id.
    #[arg(long, default_value = "demo-512")]
    model: String,
    /// HPKE suite: x25519 (interoperable) or xwing (post-quantum hybrid).
    #[arg(long, default_value = "x25519")]
    suite: String,
    /// Public sealing keys: `sealing-public.json`, or saved `GetSealingKeys` output.
    #[arg(long, default_value = "dev/keys/sealing-public.json")]
    keys: PathBuf,
    /// Enroll: drop the subject's existing templates first.
    #[arg(long)]
    replace: bool,
    /// Enroll: the consent record id.
    #[arg(long, default_value = "consent-1")]
    consent_id: String,
    /// Enroll: version of the privacy notice shown.
    #[arg(long, default_value = "2026-11")]
    notice_version: String,
    /// Enroll: how consent was given.
    #[arg(long, value_enum, default_value = "separate-in-app")]
    method: Method,
    /// Enroll: the person separately consented to their face data leaving the
    /// device and being kept by the service. The service refuses an enrollment
    /// without it; it is never implied.
    #[arg(long)]
    off_device_storage: bool,
    /// Enroll: the person is under 14 (needs `--method guardian`).
    #[arg(long)]
    subject_under_14: bool,
}

pub fn run(args: SealArgs) -> anyhow::Result<()> {
    let suite = match args.suite.as_str() {
        "x25519" => Suite::X25519Sha256Aes256Gcm,
        "xwing" => Suite::XWingSha256Aes256Gcm,
        other => Suite::parse(other).context("--suite must be x25519 or xwing")?,
    };
    let keys: PublicSealingKeys = serde_json::from_slice(
        &std::fs::read(&args.keys)
            .with_context(|| format!("cannot read {}", args.keys.display()))?,
    )
    .with_context(|| format!("{} is not a sealing key list", args.keys.display()))?;
    let key = keys
        .keys
        .iter()
        .find(|k| k.suite == suite.as_str())
        .with_context(|| format!("{} has no {} key", args.keys.display(), suite))?;
    let target = SealingTarget {
        key_id: key.key_id.clone(),
        suite,
        public_key: B64
            .decode(&key.public_key)
            .context("publicKey is not base64")?,
    };
    let text = if args.embedding == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(&args.embedding)
            .with_context(|| format!("cannot read {}", args.embedding))?
    };
    let values: Vec<f32> =
        serde_json::from_str(&text).context("the embedding must be a JSON array of numbers")?;
    let now = chrono::Utc::now();
    let op = match args.op {
        Op::Enroll => SealedFor::Enroll,
        Op::Verify => SealedFor::Verify,
    };
    let sealed = seal_embedding(
        &target,
        &PayloadSpec {
            op,
            tenant: &args.tenant,
            subject_id: &args.subject,
            model: &args.model,
            values: &values,
            sealed_at_unix_ms: now.timestamp_millis(),
        },
    )?;
    let envelope = json!({
        "suite": sealed.suite,
        "keyId": sealed.key_id,
        "enc": B64.encode(&sealed.enc),
        "ciphertext": B64.encode(&sealed.ciphertext),
    });
    let body = match args.op {
        Op::Enroll => json!({
            "subjectId": args.subject,
            "embedding": envelope,
            "consent": {
                "consentId": args.consent_id,
                "purposes": args.purposes,
                "grantedAt": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "method": args.method.proto_name(),
                "noticeVersion": args.notice_version,
                "offDeviceStorage": args.off_device_storage,
                "subjectUnder14": args.subject_under_14,
            },
            "replace": args.replace,
        }),
        Op::Verify => {
            if args.purposes.len() != 1 {
                bail!("verify takes exactly one --purpose");
            }
            json!({
                "subjectId": args.subject,
                "probe": envelope,
                "purpose": args.purposes[0],
            })
        }
    };
    super::print_line(&serde_json::to_string(&body)?)?;
    Ok(())
}
