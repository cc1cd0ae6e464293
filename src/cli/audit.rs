//! `facevault audit verify | export`: the operator's view of the audit log, read
//! straight from Redis with the service's own config and keys.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

use crate::audit::{AuditReader, EventQuery};
use crate::config::{Overrides, Settings};
use crate::crypto::live::LiveKeys;
use crate::domain::Tenant;
use crate::storage::Store;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check every tenant the signed registry names (or one) against its signed
    /// heads, trim statements and, with --anchors, the heads kept outside Redis;
    /// name every break and exit 1 if any.
    Verify {
        #[command(flatten)]
        config: super::ConfigPath,
        #[arg(long)]
        tenant: Option<String>,
        /// JSON Lines of signed tree heads kept outside Redis (the service's
        /// audit.anchor_file, or heads saved from GetSignedTreeHead): each must
        /// still be consistent with the log.
        #[arg(long)]
        anchors: Option<PathBuf>,
        /// Only what was appended since the last clean run (the default walks
        /// the whole log).
        #[arg(long)]
        incremental: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Write a tenant's events as JSON Lines (for a SIEM) to stdout.
    Export {
        #[command(flatten)]
        config: super::ConfigPath,
        #[arg(long)]
        tenant: String,
        /// Only events at or after this RFC 3339 instant.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        overrides: Overrides,
    },
}

/// The reader, its store, and the receipt public key that signs tree heads.
async fn reader(
    config: &std::path::Path,
    overrides: &Overrides,
) -> anyhow::Result<(AuditReader, Store, Vec<u8>)> {
    let settings = Settings::load(config, overrides)?;
    let keys = Arc::new(LiveKeys::load(settings.keys.paths())?);
    let public = keys.current().receipt_public_key();
    let store = Store::connect(
        &settings
            .redis
            .target(Duration::from_millis(settings.redis.timeout_ms.max(5000)))?,
    )?;
    let reader = AuditReader::new(
        store.clone(),
        keys,
        Duration::from_secs(settings.audit.checkpoint_interval_secs),
    );
    Ok((reader, store, public))
}

fn tenant(name: &str) -> anyhow::Result<Tenant> {
    Tenant::from_audit_stream(name).with_context(|| format!("{name:?} is not a tenant name"))
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify {
            config,
            tenant: only,
            anchors,
            incremental,
            overrides,
        } => {
            let (reader, store, public) = reader(&config.path, &overrides).await?;
            let mut broken = false;
            // The newest registry record of the anchor file: the registry may
            // not be older, nor name fewer chains.
            let mut anchored_registry: Option<crate::audit::anchors::RegistryAnchor> = None;
            let anchored = match &anchors {
                Some(path) => {
                    let file = crate::audit::anchors::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    for line in file.unreadable {
                        println!("{}:{line}: not a signed tree head", path.display());
                        broken = true;
                    }
                    anchored_registry = file
                        .registries
                        .into_iter()
                        .map(|(_, r)| r)
                        .max_by_key(|r| (r.registry_generation, r.registry_chains));
                    let mut valid = Vec::new();
                    for (line, head) in file.heads {
                        if head.verify(&public) {
                            valid.push(head);
                        } else {
                            println!(
                                "{}:{line}: the head's signature does not hold",
                                path.display()
                            );
                            broken = true;
                        }
                    }
                    valid
                }
                None => Vec::new(),
            };
            // Tenants come from signed statements only: the registry and the
            // anchors. An unsigned list could simply leave a tenant out.
            let mut tenants: std::collections::BTreeSet<String> =
                anchored.iter().map(|h| h.tenant.clone()).collect();
            match crate::audit::registry::load(&store, &public).await? {
                crate::audit::registry::Loaded::Found { registry, .. } => {
                    tenants.extend(registry.heads.iter().map(|h| h.tenant.clone()));
                    if let Some(anchor) = &anchored_registry {
                        if registry.generation < anchor.registry_generation {
                            println!(
                                "rolled-back: registry: generation {} is older than the anchored generation {}",
                                registry.generation, anchor.registry_generation
                            );
                            broken = true;
                        }
                        let chains = registry.heads.len() as u64;
                        let most = anchor.registry_chains;
                        if chains < most {
                            println!(
                                "missing: registry: it names {chains} chains; an anchored registry named {most}"
                            );
                            broken = true;
                        }
                    }
                }
                _ => {
                    // Fail closed: a deployment that audited anything has one.
                    println!(
                        "missing: registry: the signed audit registry is gone or unreadable (nothing was audited yet, or it was deleted)"
                    );
                    broken = true;
                }
            }
            if let Some(t) = only {
                tenants.retain(|name| *name == t);
                tenants.insert(t);
            }
            if tenants.is_empty() {
                println!("no tenant has a signed audit head yet");
            }
            for name in tenants {
                let report = reader
                    .verify(&tenant(&name)?, !incremental, &anchored)
                    .await?;
                if report.breaks.is_empty() {
                    println!(
                        "{name}: intact ({} events checked, {} anchored heads)",
                        report.events_checked,
                        anchored.iter().filter(|h| h.tenant == name).count()
                    );
                    continue;
                }
                broken = true;
                println!(
                    "{name}: BROKEN in {} places ({} events checked)",
                    report.breaks.len(),
                    report.events_checked
                );
                for b in &report.breaks {
                    let chain = if b.chain_id.is_empty() {
                        "registry".to_owned()
                    } else {
                        format!("chain {}", b.chain_id)
                    };
                    println!("  {}: {chain} seq {}: {}", b.kind.as_str(), b.seq, b.reason);
                }
            }
            if broken {
                bail!("the audit log has been tampered with or damaged");
            }
            Ok(())
        }
        AuditCommand::Export {
            config,
            tenant: name,
            since,
            overrides,
        } => {
            let (reader, _, _) = reader(&config.path, &overrides).await?;
            let since_ms = since
                .map(|s| chrono::DateTime::parse_from_rfc3339(&s).map(|t| t.timestamp_millis()))
                .transpose()
                .context("--since must be RFC 3339")?;
            let tenant = tenant(&name)?;
            let mut token = None;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            loop {
                let query = EventQuery {
                    since_ms,
                    until_ms: None,
                    subject_ref: None,
                    op: None,
                    page_size: 1000,
                    page_token: token.take(),
                };
                let (events, next) = reader.list(&tenant, &query).await?;
                for e in events {
                    let time = e
                        .time
                        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                    let line = json!({
                        "event_id": e.event_id, "time": time, "tenant": e.tenant, "caller": e.caller,
                        "caller_cert_sha256": e.caller_cert_sha256, "op": e.op, "subject_ref": e.subject_ref,
                        "purpose": e.purpose, "outcome": e.outcome, "code": e.code, "detail": e.detail,
                        "request_id": e.request_id, "trace_id": e.trace_id, "chain_id": e.chain_id,
                        "seq": e.seq, "prev_hash": B64.encode(&e.prev_hash), "hash": B64.encode(&e.hash),
                    });
                    writeln!(out, "{line}")?;
                }
                match next {
                    Some(n) => token = Some(n),
                    None => break,
                }
            }
            Ok(())
        }
    }
}
